//! `policyc eval BUNDLE --action action.json [--session session.json] [--now-ms N]
//! [--pub KEY... | --allow-unsigned]`: evaluate one action and print the verdict as JSON.
//!
//! Exit codes: 0 the action was evaluated (whatever the decision); 1 the bundle was refused;
//! 2 usage, I/O, or a malformed action / session file.

use std::path::PathBuf;

use super::build::{read_bytes, read_text};
use super::keys::read_public_keys;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Format};

/// Arguments of `policyc eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The bundle.
    pub bundle: PathBuf,
    /// The action, as JSON (the `Action` shape in docs/bundle-format.md).
    #[arg(long, value_name = "FILE")]
    pub action: PathBuf,
    /// The session state, as JSON (omit for a new session starting now).
    #[arg(long, value_name = "FILE")]
    pub session: Option<PathBuf>,
    /// The evaluation time in ms since the Unix epoch (default: now).
    #[arg(long)]
    pub now_ms: Option<u64>,
    /// Trusted public key files; the bundle must be signed by one of them.
    #[arg(long = "pub", value_name = "KEYFILE", num_args = 1.., conflicts_with = "allow_unsigned")]
    pub keys: Vec<PathBuf>,
    /// Accept an unsigned bundle (signatures are not checked).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Output format (the verdict is JSON either way; text pretty-prints it).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn json_file(path: &std::path::Path) -> Result<serde_json::Value, i32> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| {
        eprintln!("error: `{}` is not valid JSON: {e}", path.display());
        EXIT_USAGE
    })
}

/// Run `policyc eval`.
pub(crate) fn run(args: &EvalArgs) -> i32 {
    match eval(args) {
        Ok(()) => EXIT_OK,
        Err(c) => c,
    }
}

fn eval(args: &EvalArgs) -> Result<(), i32> {
    let trust = if args.allow_unsigned {
        bundle::Trust::AllowUnsigned
    } else if args.keys.is_empty() {
        eprintln!("error: give `--pub KEYFILE` (trusted keys) or `--allow-unsigned`");
        return Err(EXIT_USAGE);
    } else {
        bundle::Trust::Keys(read_public_keys(&args.keys)?)
    };
    let bytes = read_bytes(&args.bundle)?;
    let action: bundle::action::Action =
        serde_json::from_value(json_file(&args.action)?).map_err(|e| {
            eprintln!("error: `{}` is not an action: {e}", args.action.display());
            EXIT_USAGE
        })?;
    let now_ms = args.now_ms.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    });
    let session = match &args.session {
        Some(p) => bundle::session_codec::session_from_json(&json_file(p)?).map_err(|e| {
            eprintln!("error: `{}` is not a session: {e}", p.display());
            EXIT_USAGE
        })?,
        None => bundle::session::SessionState::new(now_ms),
    };
    // A single-pack or a layered bundle (`policyc explain` shows each pack's verdict).
    let b = bundle::PackSet::from_bytes(&bytes, &trust).map_err(|e| {
        eprintln!("error: {}: {e}", args.bundle.display());
        EXIT_FAILED
    })?;
    let verdict = b.evaluate(&action, &session, now_ms);
    let out = match args.format {
        Format::Json => serde_json::to_string(&verdict),
        Format::Text => serde_json::to_string_pretty(&verdict),
    }
    .map_err(|e| {
        eprintln!("error: cannot print the verdict: {e}");
        EXIT_USAGE
    })?;
    println!("{out}");
    Ok(())
}
