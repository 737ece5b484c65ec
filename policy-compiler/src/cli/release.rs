//! `policyc release`: mint a release, the operator's signed lifting of a principal's quarantine.
//!
//! ```text
//! policyc release --principal ID --key operator.key [--reason TEXT] [--format json]
//! ```
//!
//! The printed token is pushed to the filter in its plugin configuration (list `releases`,
//! verified against `release_keys`); it lifts the quarantines imposed before it was issued.
//! Format: `docs/containment.md`.

use std::path::PathBuf;

use super::tokens::{fresh_nonce, issue_time};

/// Arguments of `policyc release`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The quarantined principal, exactly as the filter names it (e.g. a SPIFFE id).
    #[arg(long)]
    pub principal: String,
    /// The operator's secret key file (`policyc keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// Why the quarantine is lifted (recorded in receipts; at most 256 bytes).
    #[arg(long)]
    pub reason: Option<String>,
    /// Issue time in unix seconds (default: now). For reproducible tests.
    #[arg(long, hide = true)]
    pub issued_at: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

fn release(args: &ReleaseArgs) -> Result<(), i32> {
    let c = bundle::release::ReleaseClaims {
        principal: args.principal.clone(),
        reason: args.reason.clone(),
        issued_s: issue_time(args.issued_at),
        nonce: fresh_nonce()?,
    };
    let key = super::build::read_signing_key(&args.key)?;
    c.check(&key).map_err(|e| {
        eprintln!("error: {e}");
        super::EXIT_USAGE
    })?;
    let token = bundle::release::mint(&c, &key);
    match args.format {
        super::Format::Text => println!("{token}"),
        super::Format::Json => {
            let v = serde_json::json!({
                "token": token,
                "release_id": hex::encode(c.nonce),
                "principal": c.principal,
                "reason": c.reason,
                "key_id": bundle::keys::key_id(&key.verifying_key()),
                "issued_s": c.issued_s,
                "config": "releases",
            });
            println!("{v}");
        }
    }
    Ok(())
}

/// Run `policyc release`.
pub(crate) fn run(args: &ReleaseArgs) -> i32 {
    match release(args) {
        Ok(()) => super::EXIT_OK,
        Err(code) => code,
    }
}
