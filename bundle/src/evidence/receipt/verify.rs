//! Offline verification of receipt logs: what `policyc receipts verify` runs.
//!
//! Input lines may be a receipt's JSON, its header form (base64url of the JSON), or an Envoy JSON
//! access-log object with a member `receipt` holding a receipt (as a JSON string, the header form,
//! an object, or an array of those for a JSON-RPC batch), or a text line that carries a receipt
//! line after some prefix. Lines without a receipt are ignored
//! (`"receipt": "-"` or `null` is Envoy's "no value").
//!
//! Per session, receipts are checked one by one (hash, signature) and as a chain (order, gaps,
//! duplicates, links). A signature on receipt `n` attests receipts `1..=n` when the chain up to it
//! is intact; receipts after the last valid signature are reported as not yet attested.
//!
//! Log order is not chain order: Envoy writes an access-log line when a stream *ends*, so a
//! long-lived stream (an SSE `stream/open`) or a slow tool call is logged after later actions. The
//! chain (`seq` and `prev`, inside the hashed body) is authoritative, so a receipt logged after a
//! higher `seq` is a *notice* (`reordered`, in [`VerifyReport::notices`]), not a failure, unless
//! [`VerifyOptions::strict_order`] asks for log order to match chain order.
//!
//! A session id can start a second chain: the filter keeps sessions in a bounded number of slots,
//! and once a session has ended (a signed `session_end`, the last receipt of its chain) and its
//! slot was reused, the same id seen again is a new session whose chain starts again at 1. So,
//! per session id, a receipt with `seq` 1 and a zero `prev` made after a `session_end` (by the
//! receipts' signed timestamps: the end and the new start are often in different log files)
//! starts a new chain, checked on its own (a second summary with the same session id). A chain
//! restart anywhere else is still a `chain_break`.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use serde_json::Value;

use super::{Receipt, ReceiptError, decode_hex32, parse_text, parse_value, sig_ok};

/// The longest log line read, in bytes; longer lines that mention a receipt are reported.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A receipt could not be read.
    Malformed,
    /// The body does not hash to the stated hash: it was changed after sealing.
    Altered,
    /// A signature does not verify under the named key.
    BadSignature,
    /// The signing key is not among the trusted keys.
    UnknownKey,
    /// Sequence numbers are missing (dropped receipts).
    Missing,
    /// A receipt appears after one with a higher sequence number. A notice, not a failure, unless
    /// [`VerifyOptions::strict_order`] is set.
    Reordered,
    /// The same receipt appears twice.
    Duplicated,
    /// `prev` does not match the previous receipt's hash (spliced, forked or rewritten chain).
    ChainBreak,
    /// Receipts after the last valid signature: not yet attested.
    UnsignedTail,
}

impl FindingKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Malformed => "malformed",
            FindingKind::Altered => "altered",
            FindingKind::BadSignature => "bad_signature",
            FindingKind::UnknownKey => "unknown_key",
            FindingKind::Missing => "missing",
            FindingKind::Reordered => "reordered",
            FindingKind::Duplicated => "duplicated",
            FindingKind::ChainBreak => "chain_break",
            FindingKind::UnsignedTail => "unsigned_tail",
        }
    }

    /// Whether this kind is only a notice under `options` (reported, but the log still verifies).
    pub fn is_notice(self, options: &VerifyOptions) -> bool {
        self == FindingKind::Reordered && !options.strict_order
    }
}

/// How strict verification is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Treat `reordered` (log order differs from chain order) as a failure instead of a notice.
    /// Only meaningful for logs written in chain order (e.g. raw receipt lines from one writer);
    /// an Envoy access log legitimately differs, see the module documentation.
    pub strict_order: bool,
}

/// One problem, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Line number (as given by the caller, 1-based by convention).
    pub line: usize,
    /// The session, when known.
    pub session: Option<String>,
    /// The receipt's sequence number, when known.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: FindingKind,
    /// A sentence for humans.
    pub detail: String,
}

/// Per-session summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// Session id.
    pub session: String,
    /// Receipts read (duplicates included).
    pub receipts: usize,
    /// Receipts carrying a valid signature by a trusted key.
    pub signed: usize,
    /// Lowest sequence number seen.
    pub first_seq: u64,
    /// Highest sequence number seen.
    pub last_seq: u64,
    /// Highest sequence number covered by a valid signature, if any.
    pub attested_through: Option<u64>,
    /// A `session_end` receipt was seen: the chain is complete. Without it, a log cut after a
    /// signed receipt looks exactly like a session that is still running.
    pub ended: bool,
    /// Number of findings (failures) for this session.
    pub findings: usize,
    /// Number of notices (receipts logged out of chain order) for this session.
    pub notices: usize,
    /// The session's receipts in sequence order (first copy of each sequence number).
    pub actions: Vec<TimelineEntry>,
}

/// One receipt of a session, as the verification report lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// Sequence number.
    pub seq: u64,
    /// Line it was read from.
    pub line: usize,
    /// `action`, `checkpoint`, `session_end`, `defer_resolved`.
    pub event: super::EventKind,
    /// Enforced decision (actions only).
    pub decision: Option<crate::verdict::Decision>,
    /// Deciding rule (actions only).
    pub rule: Option<String>,
    /// Operation and subject, e.g. `tools/call read_file` or `POST exfil.example/upload`.
    pub what: Option<String>,
    /// Carries a valid signature by a trusted key.
    pub signed: bool,
    /// Logged after a receipt with a higher sequence number: `(that seq, its line)`.
    pub logged_after: Option<(u64, usize)>,
}

/// The result of verifying a log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Lines read.
    pub lines: usize,
    /// Receipts found.
    pub receipts: usize,
    /// Sessions, sorted by id.
    pub sessions: Vec<SessionSummary>,
    /// Every finding (failure), sorted by line.
    pub findings: Vec<Finding>,
    /// Every notice (reported, not a failure), sorted by line: `reordered` unless
    /// [`VerifyOptions::strict_order`].
    pub notices: Vec<Finding>,
    /// `true` only when there are no findings at all (notices do not count).
    pub ok: bool,
}

/// One receipt found in a log, with where it was and what its body really hashes to.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub(crate) line: usize,
    pub(crate) receipt: Receipt,
    pub(crate) computed: [u8; 32],
}

fn finding(line: usize, kind: FindingKind, detail: String) -> Finding {
    Finding {
        line,
        session: None,
        seq: None,
        kind,
        detail,
    }
}

fn push_parsed(
    out: &mut Vec<Found>,
    bad: &mut Vec<Finding>,
    line: usize,
    r: Result<(Receipt, [u8; 32]), ReceiptError>,
) {
    match r {
        Ok((receipt, computed)) => out.push(Found {
            line,
            receipt,
            computed,
        }),
        Err(e) => bad.push(finding(line, FindingKind::Malformed, e.to_string())),
    }
}

fn from_field(out: &mut Vec<Found>, bad: &mut Vec<Finding>, line: usize, v: &Value) {
    match v {
        Value::Null => {}
        Value::String(s) if s.trim().is_empty() || s.trim() == "-" => {}
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('[') {
                match serde_json::from_str::<Value>(t) {
                    Ok(arr @ Value::Array(_)) => from_field(out, bad, line, &arr),
                    _ => bad.push(finding(
                        line,
                        FindingKind::Malformed,
                        "receipt array is not JSON".into(),
                    )),
                }
            } else {
                push_parsed(out, bad, line, parse_text(t));
            }
        }
        Value::Object(_) => push_parsed(out, bad, line, parse_value(v)),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Array(_) => bad.push(finding(
                        line,
                        FindingKind::Malformed,
                        "nested receipt arrays are not allowed".into(),
                    )),
                    _ => from_field(out, bad, line, item),
                }
            }
        }
        _ => bad.push(finding(
            line,
            FindingKind::Malformed,
            "`receipt` is neither a string, an object nor an array".into(),
        )),
    }
}

/// Every canonical receipt line starts with this: `body` is its first member, and a body is an
/// object with at least one member (format 1: `action` first; format 2: whichever member comes
/// first, `action`, `bundle`, `event`, ...). It lets a text log line carry a receipt after some
/// prefix.
const EMBEDDED_MARKER: &str = "{\"body\":{\"";

/// A non-JSON line (e.g. a text access log) may embed a receipt line: read the first JSON value
/// that starts at `{"body":{"` and is a receipt-shaped object (it has a `hash`).
fn embedded(out: &mut Vec<Found>, bad: &mut Vec<Finding>, line: usize, t: &str) {
    let mut first_bad = None;
    for (at, _) in t.match_indices(EMBEDDED_MARKER) {
        let rest = t.get(at..).unwrap_or_default();
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) if v.get("hash").is_some() => {
                push_parsed(out, bad, line, parse_value(&v));
                return;
            }
            _ => {
                first_bad.get_or_insert("the receipt in this line is not valid JSON");
            }
        }
    }
    if let Some(why) = first_bad {
        bad.push(finding(line, FindingKind::Malformed, why.into()));
    } else if mentions_receipt(t) && t.contains("\"sig\":") {
        bad.push(finding(
            line,
            FindingKind::Malformed,
            "a line that mentions a receipt has none that can be read".into(),
        ));
    }
}

fn mentions_receipt(line: &str) -> bool {
    ["\"receipt\"", "\"body\"", "\"hash\""]
        .iter()
        .any(|m| line.contains(m))
}

/// Find every receipt in the lines. Returns them in log order, and a `malformed` finding for each
/// line that carries an unreadable receipt.
pub(crate) fn collect_found<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
) -> (Vec<Found>, Vec<Finding>, usize) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let mut count = 0usize;
    for (no, text) in lines {
        count = count.saturating_add(1);
        let t = text.trim();
        if t.is_empty() {
            continue;
        }
        if t.len() > MAX_LINE_BYTES {
            if mentions_receipt(t) {
                bad.push(finding(
                    no,
                    FindingKind::Malformed,
                    format!("line is longer than {MAX_LINE_BYTES} bytes"),
                ));
            }
            continue;
        }
        if !t.starts_with('{') {
            embedded(&mut out, &mut bad, no, t);
            continue;
        }
        let v: Value = match serde_json::from_str(t) {
            Ok(v) => v,
            Err(e) => {
                if mentions_receipt(t) {
                    bad.push(finding(
                        no,
                        FindingKind::Malformed,
                        format!("not JSON: {e}"),
                    ));
                }
                continue;
            }
        };
        if ["body", "hash", "sig"].iter().any(|k| v.get(k).is_some()) {
            push_parsed(&mut out, &mut bad, no, parse_value(&v));
        } else if let Some(field) = v.get("receipt") {
            from_field(&mut out, &mut bad, no, field);
        }
    }
    (out, bad, count)
}

/// Every receipt in the lines, in log order, with its line number; and the `malformed` findings.
pub fn collect_receipts<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
) -> (Vec<(usize, Receipt)>, Vec<Finding>) {
    let (found, bad, _) = collect_found(lines);
    (
        found.into_iter().map(|f| (f.line, f.receipt)).collect(),
        bad,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SigState {
    None,
    Valid,
    Bad,
    Unknown,
}

/// Verify every session chain found in `lines` (pairs of line number and text) against the
/// trusted `keys`, with default options (`reordered` is a notice). See the module documentation
/// for what is checked.
pub fn verify_log<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
    keys: &[VerifyingKey],
) -> VerifyReport {
    verify_log_with(lines, keys, &VerifyOptions::default())
}

/// [`verify_log`] with explicit [`VerifyOptions`].
pub fn verify_log_with<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
    keys: &[VerifyingKey],
    options: &VerifyOptions,
) -> VerifyReport {
    let (found, mut findings, line_count) = collect_found(lines);
    let mut notices = Vec::new();
    let by_id: HashMap<String, &VerifyingKey> = keys
        .iter()
        .map(|k| (crate::evidence::keys::key_id(k), k))
        .collect();
    let mut sessions: BTreeMap<String, Vec<&Found>> = BTreeMap::new();
    for f in &found {
        sessions
            .entry(f.receipt.body.session.clone())
            .or_default()
            .push(f);
    }
    let mut summaries = Vec::new();
    for (session, entries) in sessions
        .iter()
        .flat_map(|(s, e)| chains(e).into_iter().map(move |c| (s, c)))
    {
        let mut own = Vec::new();
        let summary = verify_session(session, &entries, &by_id, &mut own);
        let (notes, fails): (Vec<Finding>, Vec<Finding>) =
            own.into_iter().partition(|f| f.kind.is_notice(options));
        summaries.push(SessionSummary {
            findings: fails.len(),
            notices: notes.len(),
            ..summary
        });
        findings.extend(fails);
        notices.extend(notes);
    }
    findings.sort_by_key(|f| (f.line, f.kind));
    notices.sort_by_key(|f| (f.line, f.kind));
    VerifyReport {
        lines: line_count,
        receipts: found.len(),
        sessions: summaries,
        ok: findings.is_empty(),
        findings,
        notices,
    }
}

/// A session's receipts (log order) split into chains, each returned in log order.
///
/// A new chain starts at a first receipt (`seq` 1, zero `prev`) made after a `session_end` of the
/// same id. "After" is by the receipts' own timestamps (`ts_ms`, inside the hashed body), not by
/// log position: the filter logs `session_end` to Envoy's own log and actions to the access log, so
/// a new chain's first action can come before the old chain's end in the input. At the same
/// millisecond a first receipt sorts after every other receipt, so the end it follows counts.
fn chains<'a>(entries: &[&'a Found]) -> Vec<Vec<&'a Found>> {
    let zero = "0".repeat(64);
    let is_first = |f: &Found| f.receipt.body.seq == 1 && f.receipt.body.prev == zero;
    let mut by_time: Vec<&'a Found> = entries.to_vec();
    by_time.sort_by_key(|f| (f.receipt.body.ts_ms, is_first(f), f.line));
    let mut out: Vec<Vec<&'a Found>> = vec![Vec::new()];
    let mut ended = false;
    for f in by_time {
        if ended && is_first(f) {
            out.push(Vec::new());
            ended = false;
        }
        if f.receipt.body.event == super::EventKind::SessionEnd {
            ended = true;
        }
        if let Some(chain) = out.last_mut() {
            chain.push(f);
        }
    }
    for chain in &mut out {
        chain.sort_by_key(|f| f.line);
    }
    out
}

fn verify_session(
    session: &str,
    entries: &[&Found],
    keys: &HashMap<String, &VerifyingKey>,
    findings: &mut Vec<Finding>,
) -> SessionSummary {
    let mut add = |line: usize, seq: u64, kind: FindingKind, detail: String| {
        findings.push(Finding {
            line,
            session: Some(session.to_owned()),
            seq: Some(seq),
            kind,
            detail,
        });
    };
    // 1. Each receipt on its own.
    let mut sig_states = Vec::with_capacity(entries.len());
    for f in entries {
        let r = &f.receipt;
        let seq = r.body.seq;
        if f.computed != r.hash {
            add(
                f.line,
                seq,
                FindingKind::Altered,
                format!(
                    "receipt {seq} was changed after it was sealed (its body does not match its hash)"
                ),
            );
        }
        let state = match &r.sig {
            None => SigState::None,
            Some(s) => match keys.get(&s.key_id) {
                None => {
                    add(
                        f.line,
                        seq,
                        FindingKind::UnknownKey,
                        format!(
                            "receipt {seq} is signed by `{}`, which is not a trusted key",
                            s.key_id
                        ),
                    );
                    SigState::Unknown
                }
                Some(k) if sig_ok(k, &r.hash, &s.bytes) => SigState::Valid,
                Some(_) => {
                    add(
                        f.line,
                        seq,
                        FindingKind::BadSignature,
                        format!(
                            "receipt {seq}: the signature by `{}` does not verify",
                            s.key_id
                        ),
                    );
                    SigState::Bad
                }
            },
        };
        sig_states.push(state);
    }
    // 2. Order, duplicates and forks, in log order.
    let mut chain: BTreeMap<u64, (&Found, SigState)> = BTreeMap::new();
    let mut late: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut max_seq = 0u64;
    let mut max_line = 0usize;
    for (f, state) in entries.iter().zip(sig_states.iter().copied()) {
        let seq = f.receipt.body.seq;
        if seq == 0 {
            add(
                f.line,
                seq,
                FindingKind::Malformed,
                "sequence numbers start at 1".into(),
            );
            continue;
        }
        if let Some((first, _)) = chain.get(&seq) {
            if first.receipt.hash == f.receipt.hash && first.computed == f.computed {
                add(
                    f.line,
                    seq,
                    FindingKind::Duplicated,
                    format!("receipt {seq} already appeared on line {}", first.line),
                );
            } else if seq == 1 && f.receipt.body.prev.bytes().all(|b| b == b'0') {
                // A chain started again: no `session_end` came before it (else it would be a
                // second chain). Say what that most often is, so it can be told from tampering.
                add(
                    f.line,
                    seq,
                    FindingKind::ChainBreak,
                    format!(
                        "the chain starts again at receipt 1 (the first one is on line {}) with \
                         no session_end before it: the filter lost this session's state (an \
                         Envoy restart, see session.require_initialize), two Envoys served the \
                         session, or the chain was forked",
                        first.line
                    ),
                );
            } else {
                add(
                    f.line,
                    seq,
                    FindingKind::ChainBreak,
                    format!(
                        "a different receipt {seq} already appeared on line {}: the chain was forked or spliced",
                        first.line
                    ),
                );
            }
            continue;
        }
        if seq < max_seq {
            add(
                f.line,
                seq,
                FindingKind::Reordered,
                format!(
                    "receipt {seq} was logged after receipt {max_seq} (line {max_line}); the chain fixes the order"
                ),
            );
            late.insert(seq, (max_seq, max_line));
        } else {
            max_seq = seq;
            max_line = f.line;
        }
        chain.insert(seq, (f, state));
    }
    // 3. Gaps and links, in sequence order. A signature attests its prefix only while the chain
    // from seq 1 is unbroken.
    let mut expected = 1u64;
    let mut prev = [0u8; 32];
    let mut intact = true;
    let mut attested: Option<u64> = None;
    let mut last_signed: Option<u64> = None;
    let mut signed = 0usize;
    for (&seq, (f, state)) in &chain {
        if seq > expected {
            let last = seq.saturating_sub(1);
            let what = if last == expected {
                format!("receipt {expected} is")
            } else {
                format!("receipts {expected}..={last} are")
            };
            add(
                f.line,
                seq,
                FindingKind::Missing,
                format!("{what} missing before receipt {seq}"),
            );
            intact = false;
        } else {
            let stated = decode_hex32(&f.receipt.body.prev).unwrap_or([0xff; 32]);
            if stated != prev {
                let what = if seq == 1 {
                    "the first receipt does not start a chain (prev is not zero)".to_owned()
                } else {
                    format!(
                        "receipt {seq} does not follow receipt {} (prev hash mismatch)",
                        seq.saturating_sub(1)
                    )
                };
                add(f.line, seq, FindingKind::ChainBreak, what);
                intact = false;
            }
        }
        if f.computed != f.receipt.hash {
            intact = false;
        }
        if *state == SigState::Valid {
            signed = signed.saturating_add(1);
            last_signed = Some(seq);
            if intact {
                attested = Some(seq);
            }
        }
        prev = f.receipt.hash;
        expected = seq.saturating_add(1);
    }
    // 4. The tail after the last valid signature.
    let from = last_signed.map_or(0, |a| a.saturating_add(1));
    let tail: Vec<(&u64, &(&Found, SigState))> = chain.range(from..).collect();
    if let (Some((first_seq, (first, _))), Some((last_seq, _))) = (tail.first(), tail.last()) {
        add(
            first.line,
            **first_seq,
            FindingKind::UnsignedTail,
            format!(
                "receipts {first_seq}..={last_seq} are not yet attested by a signature ({} receipt(s))",
                tail.len()
            ),
        );
    }
    SessionSummary {
        session: session.to_owned(),
        receipts: entries.len(),
        signed,
        first_seq: chain.keys().next().copied().unwrap_or(0),
        last_seq: chain.keys().next_back().copied().unwrap_or(0),
        attested_through: attested,
        ended: entries
            .iter()
            .any(|f| f.receipt.body.event == super::EventKind::SessionEnd),
        findings: 0,
        notices: 0,
        actions: chain
            .iter()
            .map(|(&seq, (f, state))| {
                let b = &f.receipt.body;
                TimelineEntry {
                    seq,
                    line: f.line,
                    event: b.event,
                    decision: b.decision,
                    rule: b.rule.clone(),
                    what: b.action.as_ref().map(|a| {
                        let subject = a
                            .tool
                            .as_deref()
                            .or(a.prompt.as_deref())
                            .or(a.resource.as_deref())
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("{}{}", a.target.host, a.target.path));
                        format!("{} {subject}", a.operation)
                    }),
                    signed: *state == SigState::Valid,
                    logged_after: late.get(&seq).copied(),
                }
            })
            .collect(),
    }
}
