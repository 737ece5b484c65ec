//! The `policyc` command line. Each subcommand lives in its own module; `run` parses arguments and
//! returns the process exit code (0 ok, 1 the checked thing failed, 2 usage or I/O error).

use clap::{Parser, Subcommand, ValueEnum};

// One module per subcommand (or family of subcommands).
mod approve;
mod build;
mod check;
mod eval;
mod fmt;
mod grant;
mod inspect;
mod keys;
mod layers;
mod pin;
mod receipts;
mod release;
mod render;
mod test;
mod tokens;

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
    /// Compile a policy file to a bundle (optionally signed).
    Build(build::BuildArgs),
    /// Show a bundle's header, hashes, rule table and bytecode.
    Inspect(inspect::InspectArgs),
    /// Create an Ed25519 signing key pair (NAME.key, NAME.pub) and print its key id.
    Keygen(keys::KeygenArgs),
    /// Sign (or re-sign) a bundle.
    Sign(keys::SignArgs),
    /// Check a bundle's integrity and signature against trusted public keys (exit 0/1).
    Verify(keys::VerifyArgs),
    /// Evaluate one action (JSON) against a bundle and print the verdict as JSON.
    Eval(eval::EvalArgs),
    /// Show, for one action, every applicable pack's verdict and why the winner won.
    Explain(layers::ExplainArgs),
    // ---- brief E's subcommands (approve, receipts) go below ----
    /// Mint an approval token for a STEP_UP action (prints the token).
    Approve(approve::ApproveArgs),
    /// Verify receipt logs offline, or show one session's timeline.
    Receipts(receipts::ReceiptsArgs),
    /// Render a signed bundle as an ECDS resource or an Istio EnvoyFilter / WasmPlugin (YAML).
    Render(render::RenderArgs),
    /// Mint a task grant: a principal's intent, signed by the orchestrator (prints the token).
    Grant(grant::GrantArgs),
    /// Mint a release lifting a principal's quarantine, signed by an operator (prints the token).
    Release(release::ReleaseArgs),
    /// Pin a reviewed catalogue of tool definitions (for `policyc build --pins`).
    Pin(pin::PinArgs),
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
        Command::Build(args) => build::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Keygen(args) => keys::keygen(&args),
        Command::Sign(args) => keys::sign(&args),
        Command::Verify(args) => keys::verify(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Explain(args) => layers::explain(&args),
        Command::Approve(args) => approve::run(&args),
        Command::Receipts(args) => receipts::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Grant(args) => grant::run(&args),
        Command::Release(args) => release::run(&args),
        Command::Pin(args) => pin::run(&args),
    }
}
