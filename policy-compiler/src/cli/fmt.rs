//! `policyc fmt` (work in progress: not implemented yet).

use std::path::PathBuf;

/// Arguments of `policyc fmt`.
#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Files or directories.
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

/// Run `policyc fmt` (not implemented yet: exits 2).
pub(crate) fn run(_args: &FmtArgs) -> i32 {
    eprintln!("error: `policyc fmt` is not implemented yet");
    super::EXIT_USAGE
}
