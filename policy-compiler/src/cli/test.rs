//! `policyc test` (work in progress: not implemented yet).

use std::path::PathBuf;

/// Arguments of `policyc test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Files or directories.
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

/// Run `policyc test` (not implemented yet: exits 2).
pub(crate) fn run(_args: &TestArgs) -> i32 {
    eprintln!("error: `policyc test` is not implemented yet");
    super::EXIT_USAGE
}
