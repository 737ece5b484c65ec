//! `policyc check` (work in progress: not implemented yet).

use std::path::PathBuf;

/// Arguments of `policyc check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Files or directories.
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

/// Run `policyc check` (not implemented yet: exits 2).
pub(crate) fn run(_args: &CheckArgs) -> i32 {
    eprintln!("error: `policyc check` is not implemented yet");
    super::EXIT_USAGE
}
