//! `policyc approve`: mint an approval token for one STEP_UP action.
//!
//! ```text
//! policyc approve --digest HEX --group G --key KEYFILE [--ttl 15m] [--format json]
//! ```
//!
//! The digest comes from the filter's approval request (`data.approval_request.digest`); the
//! printed token goes into the agent's retry as header `x-portcullis-approval`. Token format:
//! `docs/approvals.md`.

use std::path::PathBuf;

use super::tokens::{fresh_nonce, issue_time, parse_duration_s};

/// The longest approval lifetime `policyc approve` mints (approvals are meant to be short-lived).
pub const MAX_TTL_S: u64 = 24 * 3600;

/// Arguments of `policyc approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The action digest to approve: 64 hex digits, as printed in the approval request.
    #[arg(long)]
    pub digest: String,
    /// The approver group the policy requires (e.g. `release`).
    #[arg(long)]
    pub group: String,
    /// The approver's secret key file (`policyc keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// How long the approval stays valid: `90s`, `15m`, `1h` or plain seconds (at most 24h).
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// Issue time in unix seconds (default: now). For reproducible tests.
    #[arg(long, hide = true)]
    pub issued_at: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_prefix("sha256:").unwrap_or(&t);
    let v = hex::decode(t).ok()?;
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

/// Run `policyc approve`.
pub(crate) fn run(args: &ApproveArgs) -> i32 {
    let Some(digest) = parse_digest(&args.digest) else {
        eprintln!("error: `--digest {}` is not 64 hex digits", args.digest);
        return super::EXIT_USAGE;
    };
    if args.group.trim().is_empty() {
        eprintln!("error: `--group` must not be empty");
        return super::EXIT_USAGE;
    }
    let ttl = match parse_duration_s(&args.ttl) {
        Some(s) if (1..=MAX_TTL_S).contains(&s) => s,
        _ => {
            eprintln!(
                "error: `--ttl {}` is not a duration between 1s and 24h (e.g. `15m`)",
                args.ttl
            );
            return super::EXIT_USAGE;
        }
    };
    let text = match std::fs::read_to_string(&args.key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read key file `{}`: {e}", args.key.display());
            return super::EXIT_USAGE;
        }
    };
    let key = match bundle::keys::parse_signing_key(&text) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: `{}`: {e}", args.key.display());
            return super::EXIT_USAGE;
        }
    };
    let issued = issue_time(args.issued_at);
    let nonce = match fresh_nonce() {
        Ok(n) => n,
        Err(code) => return code,
    };
    let ttl32 = u32::try_from(ttl).unwrap_or(u32::MAX);
    let token = bundle::approval::mint(&digest, &args.group, &key, issued, ttl32, nonce);
    match args.format {
        super::Format::Text => println!("{token}"),
        super::Format::Json => {
            let v = serde_json::json!({
                "token": token,
                "token_id": hex::encode(nonce),
                "digest": hex::encode(digest),
                "group": args.group,
                "key_id": bundle::keys::key_id(&key.verifying_key()),
                "issued_s": issued,
                "expires_s": issued.saturating_add(ttl),
                "header": "x-portcullis-approval",
            });
            println!("{v}");
        }
    }
    super::EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(parse_digest(&"AB".repeat(32)), Some([0xab; 32]));
        assert_eq!(
            parse_digest(&format!("sha256:{}", "0".repeat(64))),
            Some([0; 32])
        );
        assert_eq!(parse_digest("abc"), None);
    }
}
