//! `policyc receipts timeline`: one session (or the sessions one trace touched) as a
//! self-contained HTML page a reviewer opens in a browser, with every receipt verified.
//!
//! ```text
//! policyc receipts timeline LOG... (--session S | --trace T) --pub KEYFILE... --html OUT
//! ```
//!
//! The logs are read and verified exactly as `policyc receipts verify` reads them (the same
//! [`Input`] and [`verify_log_with`]), over the whole input, so a receipt's chain status is the
//! status of its session's whole chain. The page is built here as a [`Page`] (what a reviewer
//! sees, per receipt: decision, rule, identity, intent, taints, drift, approval, digests,
//! modifications and redactions, stop conditions, and its chain and signature status) and
//! written by [`page::render`].
//!
//! With `--trace`, the page shows every session the trace touched, whole (the context of the
//! traced actions is the rest of their session), and marks the receipts of the trace.
//!
//! Exit status: 0 the page was written and every shown receipt verifies (log order notices do
//! not count); 1 the page was written and shows findings (or no receipt matched, and no page
//! was written); 2 usage or I/O error.

mod page;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use bundle::receipt::{
    EventKind, Finding, FindingKind, Receipt, SessionSummary, VerifyOptions, VerifyReport,
    collect_receipts, verify_log_with,
};
use ed25519_dalek::VerifyingKey;

use super::{Input, finding_text, read_keys};

/// Arguments of `policyc receipts timeline`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["session", "trace"]))]
pub struct TimelineArgs {
    /// Log files (Envoy JSON access logs, Envoy's own log, receipt lines); `-` reads standard
    /// input. Rotated logs: oldest first.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// The session to show.
    #[arg(long)]
    pub session: Option<String>,
    /// A W3C trace id: show the sessions this trace touched, with its receipts marked.
    #[arg(long)]
    pub trace: Option<String>,
    /// Trusted receipt signing public key files (`policyc keygen`'s `.pub`).
    #[arg(long = "pub", required = true)]
    pub keys: Vec<PathBuf>,
    /// Where to write the HTML page.
    #[arg(long, required = true)]
    pub html: PathBuf,
}

/// What the page is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selector {
    /// One session id.
    Session(String),
    /// One trace id.
    Trace(String),
}

impl Selector {
    pub(crate) fn label(&self) -> String {
        match self {
            Selector::Session(s) => format!("session `{s}`"),
            Selector::Trace(t) => format!("trace `{t}`"),
        }
    }
}

/// The signature status of one receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sig {
    /// Signed by a trusted key, and the signature verifies.
    Valid {
        /// The signer's key id.
        kid: String,
    },
    /// Not signed itself; a valid signature on a later receipt of an intact chain attests it.
    Covered {
        /// The sequence number of that receipt.
        by: u64,
    },
    /// Not signed and not attested by any later signature (yet).
    Unattested,
    /// Signed, but the signature does not verify or the key is not trusted.
    Invalid {
        /// The key id the receipt names.
        kid: String,
    },
}

/// One verification problem of one receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Its kind (`altered`, `chain_break`, ...).
    pub(crate) kind: FindingKind,
    /// The verifier's sentence.
    pub(crate) detail: String,
}

/// The session's state after a receipt, as the receipts' effects built it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StateAfter {
    /// Data-class taints.
    pub(crate) taints: BTreeSet<String>,
    /// Revoked tools and classes (`revoke_tool:x`, `revoke_class:y`).
    pub(crate) revoked: BTreeSet<String>,
    /// Dropped to read-only.
    pub(crate) read_only: bool,
    /// Killed.
    pub(crate) killed: bool,
}

impl StateAfter {
    fn apply(&mut self, effects: &[String]) {
        for e in effects {
            if let Some(t) = e.strip_prefix("taint:") {
                self.taints.insert(t.to_owned());
            } else if e.starts_with("revoke_") {
                self.revoked.insert(e.clone());
            } else if e == "read_only" {
                self.read_only = true;
            } else if e == "kill" {
                self.killed = true;
            }
        }
    }

    pub(crate) fn is_clean(&self) -> bool {
        self.taints.is_empty() && self.revoked.is_empty() && !self.read_only && !self.killed
    }
}

/// One receipt on the page.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// The receipt as read.
    pub(crate) receipt: Receipt,
    /// `file:line` it was read from.
    pub(crate) place: String,
    /// It carries the trace id the page is about.
    pub(crate) in_trace: bool,
    /// Signature status.
    pub(crate) sig: Sig,
    /// Verification failures of this receipt (unattested tails are in `sig`).
    pub(crate) problems: Vec<Problem>,
    /// Notices (logged out of chain order).
    pub(crate) notices: Vec<String>,
    /// The session's state after this receipt.
    pub(crate) state: StateAfter,
}

impl Row {
    /// `true` when nothing is wrong with this receipt and a signature attests it.
    pub(crate) fn verified(&self) -> bool {
        self.problems.is_empty() && matches!(self.sig, Sig::Valid { .. } | Sig::Covered { .. })
    }
}

/// One chain of a session (a session id whose chain ended and started again has two).
#[derive(Clone, Debug)]
pub(crate) struct Chain {
    /// The verifier's summary of the chain.
    pub(crate) summary: SessionSummary,
    /// Its receipts in chain order.
    pub(crate) rows: Vec<Row>,
}

/// Everything the page shows.
#[derive(Clone, Debug)]
pub(crate) struct Page {
    /// What the page is about.
    pub(crate) selector: Selector,
    /// The chains shown.
    pub(crate) chains: Vec<Chain>,
    /// Lines of the logs that mention a receipt that cannot be read (with their place).
    pub(crate) unreadable: Vec<String>,
    /// Sessions in the logs that are not shown.
    pub(crate) other_sessions: usize,
    /// The log files read.
    pub(crate) files: Vec<String>,
    /// The trusted key ids.
    pub(crate) key_ids: Vec<String>,
}

impl Page {
    /// Every receipt shown verifies and no line of the logs was unreadable.
    pub(crate) fn ok(&self) -> bool {
        self.unreadable.is_empty() && self.chains.iter().all(|c| c.rows.iter().all(Row::verified))
    }

    /// Receipts shown.
    pub(crate) fn receipts(&self) -> usize {
        self.chains.iter().map(|c| c.rows.len()).sum()
    }
}

fn of_receipt<'a>(
    list: &'a [Finding],
    line: usize,
    session: &'a str,
    seq: u64,
) -> impl Iterator<Item = &'a Finding> {
    list.iter().filter(move |f| {
        f.line == line && f.session.as_deref() == Some(session) && f.seq == Some(seq)
    })
}

/// Build the page from the verified logs; `None` when no receipt matches `selector`.
pub(crate) fn build(
    input: &Input,
    report: &VerifyReport,
    found: Vec<(usize, Receipt)>,
    selector: Selector,
    keys: &[VerifyingKey],
    files: Vec<String>,
) -> Option<Page> {
    let sessions: HashSet<String> = found
        .iter()
        .filter(|(_, r)| match &selector {
            Selector::Session(s) => &r.body.session == s,
            Selector::Trace(t) => r.body.trace.as_deref() == Some(t.as_str()),
        })
        .map(|(_, r)| r.body.session.clone())
        .collect();
    if sessions.is_empty() {
        return None;
    }
    let trace = match &selector {
        Selector::Trace(t) => Some(t.as_str()),
        Selector::Session(_) => None,
    };
    // The chains of the chosen sessions, in the verifier's order (by session id, then time).
    let mut chains: Vec<Chain> = report
        .sessions
        .iter()
        .filter(|s| sessions.contains(&s.session))
        .map(|s| Chain {
            summary: s.clone(),
            rows: Vec::new(),
        })
        .collect();
    // (session, seq, line) -> chain index, from the verifier's own timeline entries.
    let mut placed: HashMap<(&str, u64, usize), usize> = HashMap::new();
    for (i, c) in chains.iter().enumerate() {
        for a in &c.summary.actions {
            placed.insert((c.summary.session.as_str(), a.seq, a.line), i);
        }
    }
    let mut assigned: Vec<(usize, usize, Receipt)> = Vec::new();
    for (line, r) in found {
        if !sessions.contains(&r.body.session) {
            continue;
        }
        let b = &r.body;
        let chain = placed
            .get(&(b.session.as_str(), b.seq, line))
            .copied()
            // A second copy of a receipt (or a receipt the verifier did not place): the chain
            // that holds its sequence number, else the session's first chain.
            .or_else(|| {
                chains.iter().position(|c| {
                    c.summary.session == b.session
                        && c.summary.actions.iter().any(|a| a.seq == b.seq)
                })
            })
            .or_else(|| chains.iter().position(|c| c.summary.session == b.session));
        if let Some(i) = chain {
            assigned.push((i, line, r));
        }
    }
    for (i, line, r) in assigned {
        let Some(chain) = chains.get_mut(i) else {
            continue;
        };
        let row = row_for(input, report, &chain.summary, keys, line, r, trace);
        chain.rows.push(row);
    }
    for c in &mut chains {
        c.rows
            .sort_by_key(|r| (r.receipt.body.seq, line_of(&r.place)));
        let mut state = StateAfter::default();
        for r in &mut c.rows {
            state.apply(&r.receipt.body.effects);
            r.state = state.clone();
        }
    }
    let other_sessions = report
        .sessions
        .iter()
        .map(|s| s.session.as_str())
        .filter(|s| !sessions.contains(*s))
        .collect::<HashSet<_>>()
        .len();
    let unreadable = report
        .findings
        .iter()
        .filter(|f| f.session.is_none())
        .map(|f| finding_text(f, input))
        .collect();
    Some(Page {
        selector,
        chains,
        unreadable,
        other_sessions,
        files,
        key_ids: keys.iter().map(bundle::keys::key_id).collect(),
    })
}

/// The line number at the end of a `file:line` place, for a stable order of copies.
fn line_of(place: &str) -> usize {
    place
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn row_for(
    input: &Input,
    report: &VerifyReport,
    summary: &SessionSummary,
    keys: &[VerifyingKey],
    line: usize,
    receipt: Receipt,
    trace: Option<&str>,
) -> Row {
    let b = &receipt.body;
    let mut problems = Vec::new();
    let mut unattested = false;
    for f in of_receipt(&report.findings, line, &b.session, b.seq) {
        if f.kind == FindingKind::UnsignedTail {
            unattested = true;
        } else {
            problems.push(Problem {
                kind: f.kind,
                detail: f.detail.clone(),
            });
        }
    }
    let notices = of_receipt(&report.notices, line, &b.session, b.seq)
        .map(|f| f.detail.clone())
        .collect();
    // A signature is checked on its own (also on a second copy the chain summary leaves out).
    let sig = match &receipt.sig {
        Some(s) if keys.iter().any(|k| receipt.signature_valid(k)) => Sig::Valid {
            kid: s.key_id.clone(),
        },
        Some(s) => Sig::Invalid {
            kid: s.key_id.clone(),
        },
        None => {
            let attested = summary.attested_through.is_some_and(|a| a >= b.seq);
            let by = summary
                .actions
                .iter()
                .filter(|a| a.signed && a.seq >= b.seq)
                .map(|a| a.seq)
                .min();
            match by {
                Some(by) if attested && !unattested => Sig::Covered { by },
                _ => Sig::Unattested,
            }
        }
    };
    // A signature by an untrusted key, or one that does not verify, is a problem of its own
    // (`unknown_key`, `bad_signature`); a valid signature on a receipt whose chain is broken
    // before it attests nothing, which the chain problems of the earlier receipts say.
    Row {
        place: input.place(line),
        in_trace: trace.is_some_and(|t| b.trace.as_deref() == Some(t)),
        sig,
        problems,
        notices,
        state: StateAfter::default(),
        receipt,
    }
}

/// What a receipt is about, for the tool filter: the tool, prompt or resource name, the method of
/// another MCP message, the host of an HTTP action, or `session event` for checkpoints and
/// session ends.
pub(crate) fn subject(r: &Receipt) -> String {
    match &r.body.action {
        Some(a) => a
            .tool
            .clone()
            .or_else(|| a.prompt.clone())
            .or_else(|| a.resource.clone())
            .unwrap_or_else(|| match a.kind {
                // An MCP message that names nothing (`tools/list`, `initialize`): its method.
                bundle::action::Kind::Mcp => a.operation.clone(),
                bundle::action::Kind::Http if a.target.host.is_empty() => a.operation.clone(),
                bundle::action::Kind::Http => a.target.host.clone(),
            }),
        None => "session event".to_owned(),
    }
}

/// The decision for the decision filter: the enforced decision, or `none` (session events).
pub(crate) fn decision_key(r: &Receipt) -> &'static str {
    r.body.decision.map_or("none", |d| d.as_str())
}

/// Whether `rule` is a stop condition of the intent (`stop:*`).
pub(crate) fn is_stop(rule: &str) -> bool {
    bundle::builtin::Builtin::from_name(rule).is_some_and(bundle::builtin::Builtin::is_stop)
}

/// Whether this receipt records a server-to-agent message judged on the response path.
pub(crate) fn is_result(r: &Receipt) -> bool {
    r.body.event == EventKind::Result
}

/// Run `policyc receipts timeline`.
pub(crate) fn run(args: &TimelineArgs) -> i32 {
    let keys = match read_keys(&args.keys) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    let input = match Input::read(&args.logs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    let report = verify_log_with(input.numbered(), &keys, &VerifyOptions::default());
    let (found, _) = collect_receipts(input.numbered());
    let selector = match (&args.session, &args.trace) {
        (Some(s), _) => Selector::Session(s.clone()),
        (None, Some(t)) => Selector::Trace(t.clone()),
        (None, None) => {
            eprintln!("error: give --session or --trace");
            return crate::cli::EXIT_USAGE;
        }
    };
    let label = selector.label();
    let files = args.logs.iter().map(|p| p.display().to_string()).collect();
    let Some(page) = build(&input, &report, found, selector, &keys, files) else {
        eprintln!("error: no receipts for {label}");
        return crate::cli::EXIT_FAILED;
    };
    let html = page::render(&page);
    if let Err(e) = std::fs::write(&args.html, html) {
        eprintln!("error: cannot write `{}`: {e}", args.html.display());
        return crate::cli::EXIT_USAGE;
    }
    let bad: usize = page
        .chains
        .iter()
        .flat_map(|c| &c.rows)
        .filter(|r| !r.verified())
        .count();
    println!(
        "wrote {}: {} receipt(s) of {label} in {} chain(s); {}",
        args.html.display(),
        page.receipts(),
        page.chains.len(),
        if page.ok() {
            "every receipt verifies".to_owned()
        } else {
            format!(
                "{bad} receipt(s) do not verify, {} unreadable line(s)",
                page.unreadable.len()
            )
        }
    );
    if page.ok() {
        crate::cli::EXIT_OK
    } else {
        crate::cli::EXIT_FAILED
    }
}
