//! `policyc receipts verify` and `policyc receipts show`: offline receipt verification and session
//! timelines for a SOC, from Envoy access logs or raw receipt lines.
//!
//! ```text
//! policyc receipts verify LOG... --pub KEYFILE... [--strict-order] [--format json]   # exit 0 intact, 1 findings, 2 usage/IO
//! policyc receipts show LOG... (--session S | --trace T) [--format json]
//! policyc receipts export LOG... --format ocsf [--session S]   # one OCSF JSON per receipt
//! policyc receipts timeline LOG... (--session S | --trace T) --pub KEYFILE... --html OUT
//! ```
//!
//! `LOG` may be `-` for standard input. Several logs are read as one stream, in the order given
//! (rotated logs: oldest first), so a chain may continue across files.

mod ocsf;
mod timeline;

use std::io::Read as _;
use std::path::PathBuf;

use bundle::receipt::{
    EventKind, Finding, Receipt, VerifyOptions, VerifyReport, collect_receipts, verify_log_with,
};
use ed25519_dalek::VerifyingKey;

/// Arguments of `policyc receipts`.
#[derive(Debug, clap::Args)]
pub struct ReceiptsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ReceiptsCommand,
}

/// `policyc receipts` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ReceiptsCommand {
    /// Verify every receipt chain in the logs: hashes, signatures, order, gaps, splices.
    Verify(VerifyArgs),
    /// Print the timeline of one session (or of one trace).
    Show(ShowArgs),
    /// Convert receipts to SIEM events: one JSON object per receipt and line (see docs/siem.md).
    Export(ExportArgs),
    /// Write one session's (or trace's) verified timeline as a self-contained HTML page.
    Timeline(timeline::TimelineArgs),
}

/// Export formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// OCSF API Activity (class_uid 6003) events.
    #[default]
    Ocsf,
}

/// Arguments of `policyc receipts export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Log files; `-` reads standard input.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Event format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ExportFormat,
    /// Only this session's receipts.
    #[arg(long)]
    pub session: Option<String>,
}

/// Arguments of `policyc receipts verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Log files (Envoy JSON access logs or receipt lines); `-` reads standard input.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Trusted receipt signing public key files (`policyc keygen`'s `.pub`).
    #[arg(long = "pub", required = true)]
    pub keys: Vec<PathBuf>,
    /// Fail (instead of noting) when log order differs from chain order. Envoy access logs are
    /// written when a stream ends, so they legitimately differ; use this for logs written in
    /// chain order.
    #[arg(long)]
    pub strict_order: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

/// Arguments of `policyc receipts show`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["session", "trace"]))]
pub struct ShowArgs {
    /// Log files; `-` reads standard input.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// The session id to show.
    #[arg(long)]
    pub session: Option<String>,
    /// A W3C trace id: show the receipts of that trace.
    #[arg(long)]
    pub trace: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::Format,
}

/// Run `policyc receipts ...`.
pub(crate) fn run(args: &ReceiptsArgs) -> i32 {
    match &args.command {
        ReceiptsCommand::Verify(a) => verify(a),
        ReceiptsCommand::Show(a) => show(a),
        ReceiptsCommand::Export(a) => export(a),
        ReceiptsCommand::Timeline(a) => timeline::run(a),
    }
}

/// Every input line, with a global number, and where each came from.
struct Input {
    lines: Vec<String>,
    /// `origin[i]` = (file name, line number in that file) of global line `i + 1`.
    origin: Vec<(String, usize)>,
}

impl Input {
    fn read(paths: &[PathBuf]) -> Result<Input, String> {
        let mut input = Input {
            lines: Vec::new(),
            origin: Vec::new(),
        };
        for p in paths {
            let name = p.display().to_string();
            let text = if name == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                s
            } else {
                let bytes = std::fs::read(p).map_err(|e| format!("cannot read `{name}`: {e}"))?;
                String::from_utf8_lossy(&bytes).into_owned()
            };
            for (i, l) in text.lines().enumerate() {
                input.lines.push(l.to_owned());
                input.origin.push((name.clone(), i.saturating_add(1)));
            }
        }
        Ok(input)
    }

    fn numbered(&self) -> impl Iterator<Item = (usize, &str)> {
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i.saturating_add(1), l.as_str()))
    }

    fn place(&self, line: usize) -> String {
        match self.origin.get(line.saturating_sub(1)) {
            Some((f, n)) => format!("{f}:{n}"),
            None => format!("line {line}"),
        }
    }
}

/// One OCSF event per receipt, in log order, one per line. Unreadable receipts are reported on
/// standard error and make the exit code 1 (the readable ones are still exported). Export does
/// not verify: run `policyc receipts verify` on the same logs.
fn export(args: &ExportArgs) -> i32 {
    let input = match Input::read(&args.logs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_USAGE;
        }
    };
    let (found, bad) = collect_receipts(input.numbered());
    for f in &bad {
        eprintln!("warning: {}", finding_text(f, &input));
    }
    let mut out = String::new();
    for (line, r) in &found {
        if args.session.as_deref().is_some_and(|s| s != r.body.session) {
            continue;
        }
        let ExportFormat::Ocsf = args.format;
        let place = input
            .origin
            .get(line.saturating_sub(1))
            .map_or(*line, |o| o.1);
        out.push_str(&ocsf::event(r, place).to_string());
        out.push('\n');
    }
    print!("{out}");
    if bad.is_empty() {
        super::EXIT_OK
    } else {
        super::EXIT_FAILED
    }
}

fn read_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>, String> {
    let mut keys = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read key file `{}`: {e}", p.display()))?;
        let k = bundle::keys::parse_verifying_key(&text)
            .map_err(|e| format!("`{}`: {e}", p.display()))?;
        keys.push(k);
    }
    Ok(keys)
}

fn verify(args: &VerifyArgs) -> i32 {
    let keys = match read_keys(&args.keys) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_USAGE;
        }
    };
    let input = match Input::read(&args.logs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_USAGE;
        }
    };
    let options = VerifyOptions {
        strict_order: args.strict_order,
    };
    let report = verify_log_with(input.numbered(), &keys, &options);
    match args.format {
        super::Format::Json => println!("{}", report_json(&report, &input)),
        super::Format::Text => print!("{}", report_text(&report, &input)),
    }
    if report.ok {
        super::EXIT_OK
    } else {
        super::EXIT_FAILED
    }
}

fn findings_json(list: &[Finding], input: &Input) -> Vec<serde_json::Value> {
    list.iter()
        .map(|f| {
            let (file, line) = input
                .origin
                .get(f.line.saturating_sub(1))
                .cloned()
                .unwrap_or_default();
            serde_json::json!({
                "file": file, "line": line, "kind": f.kind.as_str(),
                "session": f.session, "seq": f.seq, "detail": f.detail,
            })
        })
        .collect()
}

fn report_json(report: &VerifyReport, input: &Input) -> serde_json::Value {
    serde_json::json!({
        "ok": report.ok,
        "lines": report.lines,
        "receipts": report.receipts,
        "sessions": report.sessions,
        "findings": findings_json(&report.findings, input),
        "notices": findings_json(&report.notices, input),
    })
}

fn finding_text(f: &Finding, input: &Input) -> String {
    let mut s = format!("{}: {}", input.place(f.line), f.kind.as_str());
    match (&f.session, f.seq) {
        (Some(sess), Some(seq)) => s.push_str(&format!(" (session `{sess}`, receipt {seq})")),
        (Some(sess), None) => s.push_str(&format!(" (session `{sess}`)")),
        _ => {}
    }
    s.push_str(": ");
    s.push_str(&f.detail);
    s
}

fn report_text(report: &VerifyReport, input: &Input) -> String {
    let mut out = format!(
        "read {} line(s): {} receipt(s) in {} session(s)\n",
        report.lines,
        report.receipts,
        report.sessions.len()
    );
    for s in &report.sessions {
        let attested = match s.attested_through {
            Some(n) => format!("attested through {n}"),
            None => "not attested".to_owned(),
        };
        out.push_str(&format!(
            "session `{}`: receipts {}..={} ({} read, {} signed), {attested}{}{}\n",
            s.session,
            s.first_seq,
            s.last_seq,
            s.receipts,
            s.signed,
            if s.ended { ", ended" } else { ", open" },
            if s.findings == 0 {
                String::new()
            } else {
                format!(", {} finding(s)", s.findings)
            },
        ));
        for a in s.actions.iter().filter(|a| a.logged_after.is_some()) {
            if let Some((after, line)) = a.logged_after {
                out.push_str(&format!(
                    "  receipt {} ({}) logged at {} after receipt {after} at {}\n",
                    a.seq,
                    a.what.as_deref().unwrap_or(a.event.as_str()),
                    input.place(a.line),
                    input.place(line),
                ));
            }
        }
    }
    for f in &report.findings {
        out.push_str(&finding_text(f, input));
        out.push('\n');
    }
    for f in &report.notices {
        out.push_str("notice: ");
        out.push_str(&finding_text(f, input));
        out.push('\n');
    }
    if report.ok {
        out.push_str("ok: every receipt is intact and attested");
        if !report.notices.is_empty() {
            out.push_str(&format!(
                " ({} receipt(s) logged out of chain order; the chain fixes the order)",
                report.notices.len()
            ));
        }
        out.push('\n');
    } else {
        out.push_str(&format!("FAILED: {} finding(s)\n", report.findings.len()));
    }
    out
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Civil from days (proleptic Gregorian), after Howard Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

fn who(p: &bundle::receipt::ReceiptPrincipal) -> Option<String> {
    p.id.as_ref()
        .map(|id| format!("{id} ({})", p.auth.as_str()))
}

fn identity_text(id: &bundle::receipt::ReceiptIdentity) -> String {
    let mut parts = Vec::new();
    for (label, p) in [
        ("agent", &id.agent),
        ("human", &id.human),
        ("workload", &id.workload),
    ] {
        if let Some(w) = who(p) {
            parts.push(format!("{label} {w}"));
        }
    }
    if parts.is_empty() {
        "unauthenticated".to_owned()
    } else {
        parts.join(", ")
    }
}

fn timeline_line(line: &str, r: &Receipt) -> String {
    let b = &r.body;
    let signed = if r.sig.is_some() { " [signed]" } else { "" };
    let mut out = format!("#{:<4} {}  ", b.seq, utc(b.ts_ms));
    match b.event {
        EventKind::Action | EventKind::DeferResolved => {
            let decision = b.decision.map_or("-", |d| d.as_str());
            out.push_str(&format!("{decision:<8}"));
            if let Some(a) = &b.action {
                let what = a
                    .tool
                    .as_deref()
                    .or(a.prompt.as_deref())
                    .or(a.resource.as_deref())
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        format!(
                            "{}://{}:{}{}",
                            a.target.scheme, a.target.host, a.target.port, a.target.path
                        )
                    });
                out.push_str(&format!(" {} {what}", a.operation));
            }
            if b.event == EventKind::DeferResolved {
                out.push_str(" (defer resolved)");
            }
            out.push_str(signed);
            out.push('\n');
            if let (Some(rule), reason) = (&b.rule, b.reason.as_deref().unwrap_or("")) {
                out.push_str(&format!("        rule `{rule}`: {reason}\n"));
            }
            if b.would_be.is_some() && b.would_be != b.decision {
                out.push_str(&format!(
                    "        would be {} in enforce mode\n",
                    b.would_be.map_or("-", |d| d.as_str())
                ));
            }
            let matched: Vec<String> = b
                .matched
                .iter()
                .map(|m| {
                    format!(
                        "{} {} ({})",
                        m.rule,
                        m.decision.as_str(),
                        serde_json::to_value(m.mode)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    )
                })
                .collect();
            if matched.len() > 1 {
                out.push_str(&format!("        matched: {}\n", matched.join(", ")));
            }
            for m in &b.modifications {
                out.push_str(&format!("        modified: {m}\n"));
            }
            for e in &b.effects {
                out.push_str(&format!("        effect: {e}\n"));
            }
            for w in &b.warnings {
                out.push_str(&format!("        warning: {w}\n"));
            }
            if let Some(ap) = &b.approval {
                out.push_str(&format!(
                    "        approved: token {} by {} (group {})\n",
                    ap.token_id, ap.key_id, ap.group
                ));
            }
            if let Some(a) = &b.action
                && (a.secrets || !a.data_classes.is_empty())
            {
                out.push_str(&format!(
                    "        risk: {}{}\n",
                    if a.secrets { "secrets " } else { "" },
                    a.data_classes.join(",")
                ));
            }
        }
        other => {
            out.push_str(&format!("{}{signed}\n", other.as_str()));
        }
    }
    out.push_str(&format!("        at {line}\n"));
    out
}

fn show(args: &ShowArgs) -> i32 {
    let input = match Input::read(&args.logs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_USAGE;
        }
    };
    let (found, bad) = collect_receipts(input.numbered());
    for f in &bad {
        eprintln!("warning: {}", finding_text(f, &input));
    }
    let mut chosen: Vec<(usize, Receipt)> = found
        .into_iter()
        .filter(|(_, r)| match (&args.session, &args.trace) {
            (Some(s), _) => &r.body.session == s,
            (None, Some(t)) => r.body.trace.as_deref() == Some(t.as_str()),
            (None, None) => false,
        })
        .collect();
    // Log order vs chain order, before sorting: a receipt logged after a higher seq of its session
    // (Envoy logs a stream when it ends) is shown in chain order with a note.
    let mut late: std::collections::HashMap<(usize, String, u64), (u64, usize)> =
        std::collections::HashMap::new();
    let mut highest: std::collections::HashMap<&str, (u64, usize)> =
        std::collections::HashMap::new();
    for (line, r) in &chosen {
        let b = &r.body;
        match highest.get(b.session.as_str()) {
            Some(&(max, at)) if b.seq < max => {
                late.insert((*line, b.session.clone(), b.seq), (max, at));
            }
            _ => {
                highest.insert(b.session.as_str(), (b.seq, *line));
            }
        }
    }
    chosen.sort_by(|a, b| {
        (&a.1.body.session, a.1.body.seq, a.0).cmp(&(&b.1.body.session, b.1.body.seq, b.0))
    });
    let label = match (&args.session, &args.trace) {
        (Some(s), _) => format!("session `{s}`"),
        (None, Some(t)) => format!("trace `{t}`"),
        _ => String::new(),
    };
    if chosen.is_empty() {
        eprintln!("error: no receipts for {label}");
        return super::EXIT_FAILED;
    }
    match args.format {
        super::Format::Json => {
            let items: Vec<serde_json::Value> = chosen
                .iter()
                .map(|(line, r)| {
                    let (file, n) = input.origin.get(line.saturating_sub(1)).cloned().unwrap_or_default();
                    let after = late.get(&(*line, r.body.session.clone(), r.body.seq)).map(|(seq, l)| {
                        let (f, n) = input.origin.get(l.saturating_sub(1)).cloned().unwrap_or_default();
                        serde_json::json!({"seq": seq, "file": f, "line": n})
                    });
                    serde_json::json!({
                        "file": file, "line": n, "hash": hex::encode(r.hash), "logged_after": after,
                        "signed": r.sig.is_some(), "body": serde_json::to_value(&r.body).unwrap_or_default(),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"session": args.session, "trace": args.trace, "receipts": items})
            );
        }
        super::Format::Text => {
            let mut out = String::new();
            let mut last_session: Option<&str> = None;
            let mut last_identity: Option<&bundle::receipt::ReceiptIdentity> = None;
            for (line, r) in &chosen {
                let b = &r.body;
                if last_session != Some(b.session.as_str()) {
                    out.push_str(&format!(
                        "session `{}`{}\n",
                        b.session,
                        b.intent
                            .as_ref()
                            .map(|i| format!(", intent `{i}`"))
                            .unwrap_or_default()
                    ));
                    last_session = Some(b.session.as_str());
                    last_identity = None;
                }
                if let Some(id) = &b.identity
                    && last_identity != Some(id)
                {
                    out.push_str(&format!("  identity: {}\n", identity_text(id)));
                    last_identity = Some(id);
                }
                out.push_str(&timeline_line(&input.place(*line), r));
                if let Some((after, at)) = late.get(&(*line, b.session.clone(), b.seq)) {
                    out.push_str(&format!(
                        "        logged after receipt {after} (at {}): log order is not chain order\n",
                        input.place(*at)
                    ));
                }
            }
            out.push_str(
                "(not verified: run `policyc receipts verify` with the signing public key)\n",
            );
            print!("{out}");
        }
    }
    super::EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_763_700_000_000), "2025-11-21T04:40:00.000Z");
    }
}
