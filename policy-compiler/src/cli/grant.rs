//! `policyc grant`: mint a task grant, the orchestrator's signed "principal P runs under intent I".
//!
//! ```text
//! policyc grant --intent NAME --principal ID --expires 1h --key orchestrator.key
//!               [--run ID] [--tools a,b] [--hosts x,y] [--format json]
//! ```
//!
//! The printed token goes into the agent's requests as header `x-portcullis-grant`; the filter
//! verifies it against `task_grant_keys`. Format and checks: `docs/grants.md`.

use std::path::PathBuf;

use super::tokens::{fresh_nonce, issue_time, parse_duration_s};

/// The longest grant lifetime `policyc grant` mints.
pub const MAX_EXPIRES_S: u64 = 7 * 86_400;

/// Arguments of `policyc grant`.
#[derive(Debug, clap::Args)]
pub struct GrantArgs {
    /// The intent the principal runs under (an `intent` of the policy pack).
    #[arg(long)]
    pub intent: String,
    /// The principal (verified agent identity, e.g. a SPIFFE id), exactly as the filter names it.
    #[arg(long)]
    pub principal: String,
    /// How long the grant stays valid: `90s`, `15m`, `1h`, `2d` or plain seconds (at most 7d).
    #[arg(long)]
    pub expires: String,
    /// The orchestrator's secret key file (`policyc keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// Bind the grant to this run id (the principal's session under this grant).
    #[arg(long)]
    pub run: Option<String>,
    /// Narrow the intent to these tool name globs (comma-separated, `*` any run of characters).
    #[arg(long, value_name = "GLOBS")]
    pub tools: Option<String>,
    /// Narrow the intent to these host globs (comma-separated, case-insensitive).
    #[arg(long, value_name = "GLOBS")]
    pub hosts: Option<String>,
    /// Issue time in unix seconds (default: now). For reproducible tests.
    #[arg(long, hide = true)]
    pub issued_at: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

/// Split a comma-separated glob list; an empty entry is an error.
fn globs(flag: &str, text: &str) -> Result<Vec<String>, i32> {
    let items: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        eprintln!("error: `--{flag} {text}` has an empty entry");
        return Err(super::EXIT_USAGE);
    }
    Ok(items)
}

fn claims(args: &GrantArgs) -> Result<bundle::grant::GrantClaims, i32> {
    let ttl = match parse_duration_s(&args.expires) {
        Some(s) if (1..=MAX_EXPIRES_S).contains(&s) => s,
        _ => {
            eprintln!(
                "error: `--expires {}` is not a duration between 1s and 7d (e.g. `1h`)",
                args.expires
            );
            return Err(super::EXIT_USAGE);
        }
    };
    let issued_s = issue_time(args.issued_at);
    Ok(bundle::grant::GrantClaims {
        intent: args.intent.clone(),
        principal: args.principal.clone(),
        run: args.run.clone(),
        tools: args
            .tools
            .as_deref()
            .map(|t| globs("tools", t))
            .transpose()?,
        hosts: args
            .hosts
            .as_deref()
            .map(|t| globs("hosts", t))
            .transpose()?,
        issued_s,
        expires_s: issued_s.saturating_add(ttl),
        nonce: fresh_nonce()?,
    })
}

fn grant(args: &GrantArgs) -> Result<(), i32> {
    let c = claims(args)?;
    let key = super::build::read_signing_key(&args.key)?;
    c.check(&key).map_err(|e| {
        eprintln!("error: {e}");
        super::EXIT_USAGE
    })?;
    let token = bundle::grant::mint(&c, &key);
    match args.format {
        super::Format::Text => println!("{token}"),
        super::Format::Json => {
            let v = serde_json::json!({
                "token": token,
                "grant_id": hex::encode(c.nonce),
                "intent": c.intent,
                "principal": c.principal,
                "run": c.run,
                "tools": c.tools,
                "hosts": c.hosts,
                "key_id": bundle::keys::key_id(&key.verifying_key()),
                "issued_s": c.issued_s,
                "expires_s": c.expires_s,
                "header": bundle::grant::GRANT_HEADER,
            });
            println!("{v}");
        }
    }
    Ok(())
}

/// Run `policyc grant`.
pub(crate) fn run(args: &GrantArgs) -> i32 {
    match grant(args) {
        Ok(()) => super::EXIT_OK,
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_lists() {
        assert_eq!(
            globs("tools", "read_*, query_db"),
            Ok(vec!["read_*".to_owned(), "query_db".to_owned()])
        );
        assert_eq!(
            globs("hosts", "a.example"),
            Ok(vec!["a.example".to_owned()])
        );
        assert_eq!(globs("tools", "a,,b"), Err(super::super::EXIT_USAGE));
        assert_eq!(globs("tools", ""), Err(super::super::EXIT_USAGE));
    }
}
