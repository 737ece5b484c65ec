//! The `policyc` command line. Each subcommand lives in its own module; `run` parses arguments and
//! returns the process exit code (0 ok, 1 the checked thing failed, 2 usage or I/O error).

use clap::{Parser, Subcommand, ValueEnum};

mod check;
mod fmt;
mod test;
// Other subcommands' modules (brief B: build, inspect, keys, eval; brief E: approve, receipts)
// go here, one `mod` line each.

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the checked thing failed (errors in a policy, failing tests, unformatted files).
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad usage or an I/O error (unreadable file, bad arguments).
pub const EXIT_USAGE: i32 = 2;

/// Output format shared by every subcommand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text (default).
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// `policyc`: check, format, test, build, sign, inspect and evaluate Portcullis policies.
#[derive(Debug, Parser)]
#[command(name = "policyc", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `policyc` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check policy files; print every error and warning.
    Check(check::CheckArgs),
    /// Rewrite policy files in canonical form (or, with --check, report which are not).
    Fmt(fmt::FmtArgs),
    /// Run the tabletop tests (`tests.toml` next to `policy.pcl`) of policy packs.
    Test(test::TestArgs),
    // ---- brief B's subcommands (build, inspect, keygen, sign, verify, eval) go below ----
    // ---- brief E's subcommands (approve, receipts) go below ----
}

/// Parse the process arguments, run the subcommand, and return the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Fmt(args) => fmt::run(&args),
        Command::Test(args) => test::run(&args),
    }
}
