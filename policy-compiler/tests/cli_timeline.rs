//! `policyc receipts timeline`, run as a reviewer would, on receipt logs sealed by the same code
//! the filter seals with (`ReceiptBody::for_action` + `seal`), and on the golden session.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bundle::action::{Action, AuthMethod, Identity, Kind, Principal, Target};
use bundle::keys::{format_verifying_key, signing_key_from_seed};
use bundle::receipt::{
    ApprovalRef, BundleRef, ChainHead, EventKind, ReceiptBody, SignPolicy, Signer, seal,
    session_end,
};
use bundle::verdict::{Decision, Effect, Mode, Modification, PathSegment, RuleMatch, Verdict};

fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .expect("policyc runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("policyc-tl-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// A tool name an agent chose to attack the reviewer's browser.
const HOSTILE_TOOL: &str = "</script><script>alert(1)</script>";
/// An argument name doing the same from an attribute.
const HOSTILE_ARG: &str = "\"><img src=x onerror=alert(2)>";

fn action(tool: &str, args: serde_json::Value, trace: Option<&str>) -> Action {
    Action {
        kind: Kind::Mcp,
        operation: "tools/call".into(),
        tool: Some(tool.into()),
        arguments: args,
        target: Target {
            host: "workbench".into(),
            port: 8000,
            path: "/mcp".into(),
            scheme: "http".into(),
            server: "workbench".into(),
            ..Target::default()
        },
        identity: Identity {
            agent: Principal {
                id: Some("spiffe://corp/agent/coder".into()),
                auth: AuthMethod::Mtls,
            },
            human: Principal {
                id: Some("alice@corp.example".into()),
                auth: AuthMethod::Jwt,
            },
            ..Identity::default()
        },
        session_id: Some("run-1".into()),
        trace_id: trace.map(str::to_owned),
        size: 120,
        ..Action::default()
    }
}

fn verdict(decision: Decision, rule: &str, reason: &str) -> Verdict {
    Verdict {
        decision,
        would_be: decision,
        matched: vec![RuleMatch {
            rule: rule.into(),
            decision,
            mode: Mode::Enforce,
            reason: reason.into(),
        }],
        deciding_rule: rule.into(),
        reason: reason.into(),
        intent: Some("code_review".into()),
        ..Verdict::default()
    }
}

/// A session as the filter records it: ALLOW, MODIFY with a taint, STEP_UP, the approved retry,
/// a redacted tool result, a stop condition, a DENY of a hostile tool name with a kill, and the
/// session end. Returns the log lines and the receipt public key.
fn session_log() -> (Vec<String>, String) {
    let signer = Signer::new(signing_key_from_seed([31; 32]));
    let policy = SignPolicy {
        checkpoint_every: 16,
        max_unsigned_ms: 60_000,
    };
    let bundle = BundleRef {
        hash: "ab".repeat(32),
        pack: "demo".into(),
        version: "1.2.0".into(),
    };
    let mut chain = ChainHead::default();
    let mut lines = Vec::new();
    let mut push = |mut body: ReceiptBody, drift: i64, now: u64, lines: &mut Vec<String>| {
        body.bundle = Some(bundle.clone());
        body.drift_milli = Some(drift);
        lines.push(seal(body, &mut chain, &signer, &policy, now, false).to_json());
    };
    let s = "run-1";
    // 1. ALLOW (unsigned: attested later).
    let a = action("read_file", serde_json::json!({"path": "/r"}), Some(TRACE));
    let v = verdict(Decision::Allow, "allow_reads", "reading the repo is fine");
    push(ReceiptBody::for_action(s, &a, &v), 0, 1_000, &mut lines);
    // 2. MODIFY: clamp, taint pii.
    let a = action(
        "query_db",
        serde_json::json!({"sql": "select", "limit": 500}),
        None,
    );
    let mut v = verdict(Decision::Modify, "clamp_rows", "at most 100 rows");
    v.modifications = vec![Modification::ClampArg {
        path: vec![PathSegment::Key("limit".into())],
        min: 0.0,
        max: 100.0,
    }];
    v.effects = vec![Effect::Taint("pii".into())];
    push(ReceiptBody::for_action(s, &a, &v), 125, 1_100, &mut lines);
    // 3. STEP_UP, then 4. the approved retry.
    let a = action("deploy", serde_json::json!({"env": "production"}), None);
    let v = verdict(
        Decision::StepUp,
        "prod_deploy",
        "a release manager approves",
    );
    push(ReceiptBody::for_action(s, &a, &v), 250, 1_200, &mut lines);
    let v = verdict(Decision::Allow, "prod_deploy", "approved");
    let mut body = ReceiptBody::for_action(s, &a, &v);
    body.approval = Some(ApprovalRef {
        group: "release-managers".into(),
        key_id: "ed25519:00112233aabbccdd".into(),
        token_id: "0f".repeat(16),
    });
    push(body, 250, 1_300, &mut lines);
    // 5. A tool result on the response path, redacted.
    let mut a = action("fetch_url", serde_json::json!({"text": "…"}), None);
    a.operation = "tools/result".into();
    let mut v = verdict(Decision::Modify, "redact_keys", "no keys reach the agent");
    v.effects = vec![Effect::Taint("instruction".into())];
    let mut body = ReceiptBody::for_action(s, &a, &v);
    body.event = EventKind::Result;
    body.modifications = vec!["redact_result /content/0/text".into()];
    push(body, 300, 1_400, &mut lines);
    // 6. A stop condition.
    let a = action("run_tests", serde_json::json!({}), None);
    let v = verdict(
        Decision::Deny,
        "stop:max_actions",
        "the intent's max actions was reached",
    );
    push(ReceiptBody::for_action(s, &a, &v), 300, 1_500, &mut lines);
    // 7. A hostile tool name and argument name: DENY and kill.
    let a = action(HOSTILE_TOOL, serde_json::json!({HOSTILE_ARG: 1}), None);
    let mut v = verdict(Decision::Deny, "default", "unknown tool");
    v.effects = vec![Effect::Kill];
    push(ReceiptBody::for_action(s, &a, &v), 900, 1_600, &mut lines);
    lines.push(session_end(s, &mut chain, &signer, 2_000).to_json());
    (lines, format_verifying_key(&signer.verifying_key()))
}

fn write_log(dir: &Path, lines: &[String]) -> (PathBuf, PathBuf) {
    let (_, key) = session_log();
    let log = dir.join("access.log");
    std::fs::write(&log, lines.join("\n")).unwrap();
    let pubkey = dir.join("receipt.pub");
    std::fs::write(&pubkey, key).unwrap();
    (log, pubkey)
}

fn timeline(log: &Path, key: &Path, which: &[&str], html: &Path) -> Output {
    let mut args = vec![
        "receipts",
        "timeline",
        s(log),
        "--pub",
        s(key),
        "--html",
        s(html),
    ];
    args.extend_from_slice(which);
    policyc(&args)
}

/// The `<li class="receipt ...">` elements of a page, in page order.
fn items(html: &str) -> Vec<&str> {
    html.split("<li class=\"receipt")
        .skip(1)
        .map(|rest| rest.split("</li>").next().unwrap())
        .collect()
}

#[test]
fn a_verified_session_becomes_one_page_in_chain_order() {
    let dir = scratch("page");
    let (lines, _) = session_log();
    let (log, key) = write_log(&dir, &lines);
    let html = dir.join("timeline.html");
    let o = timeline(&log, &key, &["--session", "run-1"], &html);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o).contains("8 receipt(s) of session `run-1`"),
        "{}",
        out(&o)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"verdict\">Verified"), "{page}");
    let rows = items(&page);
    assert_eq!(rows.len(), 8);
    let decisions: Vec<&str> = rows
        .iter()
        .map(|r| {
            r.split("data-decision=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        decisions,
        [
            "ALLOW", "MODIFY", "STEP_UP", "ALLOW", "MODIFY", "DENY", "DENY", "none"
        ]
    );
    assert!(rows.iter().all(|r| r.contains("data-verified=\"1\"")));
    // 1: unsigned ALLOW, attested by the next signature; the trace is recorded.
    assert!(rows[0].contains("attested by #2"), "{}", rows[0]);
    assert!(rows[0].contains(TRACE));
    // 2: rule and reason, identity, intent and drift, taint and modification.
    assert!(rows[1].contains("<code>clamp_rows</code>: at most 100 rows"));
    assert!(
        rows[1].contains("agent spiffe://corp/agent/coder (mtls), human alice@corp.example (jwt)")
    );
    assert!(rows[1].contains("<code>code_review</code> · drift 0.125"));
    assert!(rows[1].contains("taints added</dt><dd><span class=\"taint\"><code>pii</code>"));
    assert!(rows[1].contains("clamp_arg /limit to [0, 100]"));
    assert!(rows[1].contains("action digest"));
    // 4: the approval, with the approver's key and group.
    assert!(rows[3].contains(
        "by approver key <code>ed25519:00112233aabbccdd</code>, group <code>release-managers</code>"
    ));
    // 5: the result's digest and its redaction; the session's taints accumulate.
    assert!(rows[4].contains("result digest"));
    assert!(rows[4].contains(
        "redacted / rewritten result</dt><dd><code>redact_result /content/0/text</code>"
    ));
    assert!(rows[4].contains("tainted <code>instruction</code>, <code>pii</code>"));
    // 6: the stop condition is named as such.
    assert!(rows[5].contains("b-stop\">stop condition"), "{}", rows[5]);
    // 7: kill, and the session state after it.
    assert!(rows[6].contains("<b>killed</b>"));
    // 8: the session end, signed.
    assert!(rows[7].contains("session_end"));
    assert!(rows[7].contains("✓ signed ed25519:"));
    // Filters: one checkbox per decision present and per tool.
    for d in ["DENY", "STEP_UP", "MODIFY", "ALLOW", "none"] {
        assert!(
            page.contains(&format!("data-filter=\"decision\" value=\"{d}\" checked")),
            "{d}"
        );
    }
    assert!(
        !page.contains("value=\"DEFER\""),
        "no DEFER in this session"
    );
    assert!(page.contains("data-filter=\"tool\" value=\"query_db\" checked"));
    assert!(page.contains("showing <b id=\"shown\">8</b> of 8 receipts"));
}

#[test]
fn everything_from_the_log_is_escaped_and_nothing_is_loaded() {
    let dir = scratch("escape");
    let (lines, _) = session_log();
    let (log, key) = write_log(&dir, &lines);
    let html = dir.join("timeline.html");
    let o = timeline(&log, &key, &["--session", "run-1"], &html);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    // One script and one style element: the page's own.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert_eq!(page.matches("<style").count(), 1);
    assert!(!page.contains("<img"), "an argument name became markup");
    assert!(!page.contains("alert(1)</script>"));
    assert!(page.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    // The hostile name is a filter value too: as an escaped attribute.
    assert!(page.contains(
        "data-filter=\"tool\" value=\"&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""
    ));
    // Self-contained: nothing is fetched, and the CSP allows nothing but the inline style and
    // script by hash.
    for attr in ["src=\"", "href=\"", "url(", "@import"] {
        assert!(!page.contains(attr), "{attr}");
    }
    let csp = page
        .split("http-equiv=\"Content-Security-Policy\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        csp.starts_with("default-src &#39;none&#39;; style-src &#39;sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
}

#[test]
fn a_hostile_session_id_is_escaped_in_title_and_headings() {
    let signer = Signer::new(signing_key_from_seed([31; 32]));
    let mut chain = ChainHead::default();
    let sid = "x\"><svg onload=alert(3)>";
    let line = session_end(sid, &mut chain, &signer, 5).to_json();
    let dir = scratch("sid");
    let (log, key) = write_log(&dir, &[line]);
    let html = dir.join("t.html");
    let o = timeline(&log, &key, &["--session", sid], &html);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<svg"));
    assert!(page.contains(
        "<title>Portcullis timeline: session `x&quot;&gt;&lt;svg onload=alert(3)&gt;`</title>"
    ));
}

#[test]
fn a_tampered_or_truncated_log_says_which_receipts_fail() {
    let dir = scratch("tamper");
    let (mut lines, _) = session_log();
    // Receipt 6 (stop condition) rewritten to ALLOW; receipt 3 dropped; the session end cut off.
    lines[5] = lines[5].replace(r#""decision":"DENY""#, r#""decision":"ALLOW""#);
    lines.remove(2);
    lines.pop();
    let (log, key) = write_log(&dir, &lines);
    let html = dir.join("t.html");
    let o = timeline(&log, &key, &["--session", "run-1"], &html);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"verdict\">NOT VERIFIED"), "{page}");
    let rows = items(&page);
    assert_eq!(rows.len(), 6);
    let status = |seq: u64| {
        rows.iter()
            .find(|r| r.contains(&format!("<span class=\"seq\">#{seq}</span>")))
            .unwrap()
            .to_owned()
    };
    assert!(status(4).contains("✗ missing"), "{}", status(4));
    assert!(status(4).contains("receipt 3 is missing before receipt 4"));
    assert!(status(6).contains("✗ altered"), "{}", status(6));
    assert!(status(6).contains("data-verified=\"0\""));
    // Before the gap, a signature still attests receipts 1 and 2.
    assert!(status(1).contains("data-verified=\"1\""));
    assert!(status(2).contains("✓ signed"));
    // The session end was cut off: the chain is shown as open.
    assert!(page.contains("open (no session_end in these logs)"));
}

#[test]
fn an_untrusted_key_fails_every_signed_receipt() {
    let dir = scratch("wrongkey");
    let (lines, _) = session_log();
    let (log, _) = write_log(&dir, &lines);
    let other = dir.join("other.pub");
    std::fs::write(
        &other,
        format_verifying_key(&signing_key_from_seed([9; 32]).verifying_key()),
    )
    .unwrap();
    let html = dir.join("t.html");
    let o = timeline(&log, &other, &["--session", "run-1"], &html);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        items(&page)
            .iter()
            .all(|r| r.contains("data-verified=\"0\""))
    );
    assert!(page.contains("✗ unknown_key"));
}

#[test]
fn a_trace_shows_its_sessions_whole_with_its_receipts_marked() {
    let dir = scratch("trace");
    let (mut lines, _) = session_log();
    // Another session in the same log, not touched by the trace.
    let signer = Signer::new(signing_key_from_seed([31; 32]));
    let mut chain = ChainHead::default();
    lines.push(session_end("other", &mut chain, &signer, 3_000).to_json());
    let (log, key) = write_log(&dir, &lines);
    let html = dir.join("t.html");
    let o = timeline(&log, &key, &["--trace", TRACE], &html);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    let rows = items(&page);
    assert_eq!(
        rows.len(),
        8,
        "the whole of session run-1, nothing of `other`"
    );
    let traced: Vec<bool> = rows
        .iter()
        .map(|r| r.contains("data-trace=\"1\""))
        .collect();
    assert_eq!(
        traced,
        [true, false, false, false, false, false, false, false]
    );
    assert!(page.contains("only the 1 receipt(s) of trace"));
    assert!(page.contains("The logs hold 1 other session(s), not shown."));
}

#[test]
fn the_golden_session_and_log_order() {
    let receipts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/receipts");
    let text = std::fs::read_to_string(receipts.join("session.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(1, 2); // receipt 2 logged after receipt 3, as Envoy does for a long stream
    let dir = scratch("golden");
    let log = dir.join("access.log");
    std::fs::write(&log, lines.join("\n")).unwrap();
    let html = dir.join("t.html");
    let o = timeline(
        &log,
        &receipts.join("test.pub"),
        &["--session", "sess-1"],
        &html,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "a notice is not a failure: {}",
        out(&o)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    let rows = items(&page);
    assert!(
        rows[1].contains("<span class=\"seq\">#2</span>"),
        "chain order"
    );
    assert!(rows[1].contains("reordered: receipt 2 was logged after receipt 3"));
    assert!(rows[2].contains("b-kill\">kill"));
}

#[test]
fn usage_errors_and_unknown_sessions() {
    let dir = scratch("usage");
    let (lines, _) = session_log();
    let (log, key) = write_log(&dir, &lines);
    let html = dir.join("none.html");
    let o = timeline(&log, &key, &["--session", "nope"], &html);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("no receipts for session `nope`"));
    assert!(!html.exists(), "no page for nothing");
    let o = policyc(&[
        "receipts",
        "timeline",
        s(&log),
        "--session",
        "run-1",
        "--html",
        s(&html),
    ]);
    assert_eq!(o.status.code(), Some(2), "--pub is required");
    let o = policyc(&[
        "receipts",
        "timeline",
        s(&log),
        "--pub",
        s(&key),
        "--html",
        s(&html),
    ]);
    assert_eq!(o.status.code(), Some(2), "--session or --trace is required");
    let o = timeline(
        &log,
        &key,
        &["--session", "run-1"],
        Path::new("/nonexistent/dir/t.html"),
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_repeated_receipt_is_shown_twice_and_named_a_duplicate() {
    let dir = scratch("dup");
    let (mut lines, _) = session_log();
    let copy = lines[1].clone(); // receipt 2, signed
    lines.insert(3, copy);
    let (log, key) = write_log(&dir, &lines);
    let html = dir.join("t.html");
    let o = timeline(&log, &key, &["--session", "run-1"], &html);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    let rows = items(&page);
    assert_eq!(rows.len(), 9);
    let twos: Vec<&&str> = rows
        .iter()
        .filter(|r| r.contains("<span class=\"seq\">#2</span>"))
        .collect();
    assert_eq!(
        twos.len(),
        2,
        "both copies, next to each other in chain order"
    );
    assert!(twos[0].contains("data-verified=\"1\""), "{}", twos[0]);
    assert!(twos[1].contains("✗ duplicated"), "{}", twos[1]);
    // The copy is the same signed receipt: its signature still verifies; the problem is the copy.
    assert!(twos[1].contains("verifies"), "{}", twos[1]);
    assert!(
        twos[1].contains("already appeared on line 2"),
        "{}",
        twos[1]
    );
}
