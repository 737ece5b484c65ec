//! `policyc approve` and `policyc receipts verify|show`, run as a user would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bundle::keys::{format_signing_key, signing_key_from_seed};

fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .expect("policyc runs")
}

fn receipts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/receipts")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("policyc-e-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn verify_intact_log_exits_0() {
    let log = receipts_dir().join("session.jsonl");
    let key = receipts_dir().join("test.pub");
    let o = policyc(&["receipts", "verify", s(&log), "--pub", s(&key)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("attested through 5, ended"));
}

#[test]
fn verify_tampered_log_exits_1_and_names_the_line() {
    let text = std::fs::read_to_string(receipts_dir().join("session.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(1); // drop receipt 2
    let tampered = lines
        .join("\n")
        .replace(r#""decision":"DENY""#, r#""decision":"ALLOW""#);
    let dir = scratch("tamper");
    let log = dir.join("access.log");
    std::fs::write(&log, tampered).unwrap();
    let key = receipts_dir().join("test.pub");
    let o = policyc(&[
        "receipts",
        "verify",
        s(&log),
        "--pub",
        s(&key),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let kinds: Vec<(u64, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [(2, "altered"), (2, "missing")]);
}

#[test]
fn verify_with_the_wrong_key_or_no_file_fails() {
    let log = receipts_dir().join("session.jsonl");
    let dir = scratch("wrongkey");
    let other = dir.join("other.pub");
    std::fs::write(
        &other,
        bundle::keys::format_verifying_key(&signing_key_from_seed([8; 32]).verifying_key()),
    )
    .unwrap();
    let o = policyc(&["receipts", "verify", s(&log), "--pub", s(&other)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("unknown_key"));
    let o = policyc(&["receipts", "verify", "/nonexistent/log", "--pub", s(&other)]);
    assert_eq!(o.status.code(), Some(2));
    let o = policyc(&["receipts", "verify", s(&log)]);
    assert_eq!(o.status.code(), Some(2), "--pub is required");
}

#[test]
fn show_prints_the_session_timeline_in_order() {
    let log = receipts_dir().join("session.jsonl");
    let o = policyc(&["receipts", "show", s(&log), "--session", "sess-1"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let order: Vec<usize> = [
        "intent `code_review`",
        "ALLOW",
        "MODIFY",
        "DENY",
        "checkpoint",
        "session_end",
    ]
    .iter()
    .map(|w| {
        out.find(w)
            .unwrap_or_else(|| panic!("`{w}` missing in:\n{out}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(out.contains("rule `no_exfil`: secrets never leave"));
    assert!(out.contains("approved: token 0f0f"));
    assert!(out.contains("modified: clamp_arg /limit"));
    assert!(out.contains("human alice@corp.example (jwt)"));
    let o = policyc(&["receipts", "show", s(&log), "--session", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let o = policyc(&[
        "receipts",
        "show",
        s(&log),
        "--trace",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["receipts"].as_array().unwrap().len(), 1);
    assert_eq!(v["receipts"][0]["body"]["action"]["tool"], "read_file");
}

#[test]
fn approve_mints_a_token_the_filter_accepts() {
    let dir = scratch("approve");
    let sk = signing_key_from_seed([11; 32]);
    let key = dir.join("approver.key");
    std::fs::write(&key, format_signing_key(&sk)).unwrap();
    let digest = [0x3c_u8; 32];
    let o = policyc(&[
        "approve",
        "--digest",
        &hex::encode(digest),
        "--group",
        "release",
        "--key",
        s(&key),
        "--ttl",
        "10m",
        "--format",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let issued = v["issued_s"].as_u64().unwrap();
    assert_eq!(v["expires_s"].as_u64().unwrap(), issued + 600);
    let approvers = [("release".to_owned(), sk.verifying_key())];
    let token = v["token"].as_str().unwrap();
    let a = bundle::approval::verify(token, &digest, "release", &approvers, issued + 1).unwrap();
    assert_eq!(a.token_id, v["token_id"].as_str().unwrap());
    assert_eq!(
        bundle::approval::verify(token, &digest, "release", &approvers, issued + 600),
        Err(bundle::approval::ApprovalError::Expired)
    );
    // Two tokens for the same action have different ids (fresh nonce each time).
    let o2 = policyc(&[
        "approve",
        "--digest",
        &hex::encode(digest),
        "--group",
        "release",
        "--key",
        s(&key),
    ]);
    assert_eq!(o2.status.code(), Some(0));
    let t2 = stdout(&o2);
    assert_ne!(t2.trim(), token);
    assert_ne!(
        bundle::approval::verify(t2.trim(), &digest, "release", &approvers, issued + 1)
            .unwrap()
            .token_id,
        a.token_id
    );
}

#[test]
fn approve_refuses_bad_input() {
    let dir = scratch("approve-bad");
    let key = dir.join("approver.key");
    std::fs::write(&key, format_signing_key(&signing_key_from_seed([11; 32]))).unwrap();
    let d = "ab".repeat(32);
    for args in [
        vec![
            "approve",
            "--digest",
            "xyz",
            "--group",
            "g",
            "--key",
            s(&key),
        ],
        vec![
            "approve",
            "--digest",
            &d,
            "--group",
            "g",
            "--key",
            s(&key),
            "--ttl",
            "3d",
        ],
        vec![
            "approve",
            "--digest",
            &d,
            "--group",
            "g",
            "--key",
            s(&key),
            "--ttl",
            "soon",
        ],
        vec![
            "approve",
            "--digest",
            &d,
            "--group",
            "g",
            "--key",
            "/nonexistent.key",
        ],
        vec![
            "approve",
            "--digest",
            &d,
            "--group",
            "g",
            "--key",
            s(&receipts_dir().join("test.pub")),
        ],
    ] {
        let o = policyc(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty());
    }
}

/// Envoy logs a stream when it ends, so an access log may list receipt 2 after receipt 3. The
/// chain decides the order: a notice, exit 0; `--strict-order` makes it a failure.
#[test]
fn verify_notes_log_order_and_fails_only_with_strict_order() {
    let text = std::fs::read_to_string(receipts_dir().join("session.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(1, 2); // receipt 2 now logged after receipt 3
    let dir = scratch("reorder");
    let log = dir.join("access.log");
    std::fs::write(&log, lines.join("\n")).unwrap();
    let key = receipts_dir().join("test.pub");
    let o = policyc(&["receipts", "verify", s(&log), "--pub", s(&key)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("notice: "), "{out}");
    assert!(out.contains(":3: reordered"), "{out}");
    assert!(out.contains("logged out of chain order"), "{out}");
    let o = policyc(&[
        "receipts",
        "verify",
        s(&log),
        "--pub",
        s(&key),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    assert_eq!(v["notices"][0]["kind"], "reordered");
    assert_eq!(v["notices"][0]["line"], 3);
    assert_eq!(
        v["sessions"][0]["actions"][1]["logged_after"],
        serde_json::json!([3, 2])
    );
    let o = policyc(&[
        "receipts",
        "verify",
        s(&log),
        "--pub",
        s(&key),
        "--strict-order",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(":3: reordered") && out.contains("FAILED"),
        "{out}"
    );
    // The timeline is in chain order and says which receipt was logged late.
    let o = policyc(&["receipts", "show", s(&log), "--session", "sess-1"]);
    let out = stdout(&o);
    assert!(out.contains("logged after receipt 3"), "{out}");
    let two = out.find("#2 ").unwrap();
    let three = out.find("#3 ").unwrap();
    assert!(two < three, "{out}");
}

/// A log that spans a receipt signing key rotation verifies with both public keys; with only the
/// new one, the receipts signed by the old key are `unknown_key`.
#[test]
fn verify_a_log_spanning_a_key_rotation() {
    use bundle::receipt::{ChainHead, ReceiptBody, SignPolicy, Signer, seal, session_end};
    let old = Signer::new(signing_key_from_seed([21; 32]));
    let new = Signer::new(signing_key_from_seed([22; 32]));
    let mut chain = ChainHead::default();
    let every = SignPolicy {
        checkpoint_every: 1,
        max_unsigned_ms: 60_000,
    };
    let mut lines = Vec::new();
    for i in 0..6u64 {
        let signer = if i < 3 { &old } else { &new };
        let body = ReceiptBody::event(bundle::receipt::EventKind::Checkpoint, "rot");
        lines.push(seal(body, &mut chain, signer, &every, 1_000 + i, false).to_json());
    }
    lines.push(session_end("rot", &mut chain, &new, 2_000).to_json());
    let dir = scratch("rotation");
    let log = dir.join("access.log");
    std::fs::write(&log, lines.join("\n")).unwrap();
    let old_pub = dir.join("old.pub");
    let new_pub = dir.join("new.pub");
    std::fs::write(
        &old_pub,
        bundle::keys::format_verifying_key(&old.verifying_key()),
    )
    .unwrap();
    std::fs::write(
        &new_pub,
        bundle::keys::format_verifying_key(&new.verifying_key()),
    )
    .unwrap();
    let o = policyc(&[
        "receipts",
        "verify",
        s(&log),
        "--pub",
        s(&old_pub),
        "--pub",
        s(&new_pub),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("7 signed), attested through 7, ended"),
        "{out}"
    );
    let o = policyc(&[
        "receipts",
        "verify",
        s(&log),
        "--pub",
        s(&new_pub),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let unknown: Vec<u64> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "unknown_key")
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    assert_eq!(unknown, [1, 2, 3]);
}

/// `policyc receipts export --format ocsf`: one OCSF API Activity event per receipt, with the
/// fields SIEMs index in their standard places (docs/siem.md).
#[test]
fn export_ocsf_emits_one_api_activity_event_per_receipt() {
    let log = receipts_dir().join("session.jsonl");
    let o = policyc(&["receipts", "export", s(&log), "--format", "ocsf"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let receipts: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), receipts.len());
    for (e, r) in events.iter().zip(&receipts) {
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["category_uid"], 6);
        assert_eq!(
            e["type_uid"].as_u64().unwrap(),
            600_300 + e["activity_id"].as_u64().unwrap()
        );
        assert_eq!(
            e["metadata"]["uid"], r["hash"],
            "the receipt hash identifies the event"
        );
        assert_eq!(e["metadata"]["correlation_uid"], r["body"]["session"]);
        assert_eq!(e["metadata"]["sequence"], r["body"]["seq"]);
        assert_eq!(e["time"], r["body"]["ts_ms"]);
        assert_eq!(e["actor"]["session"]["uid"], r["body"]["session"]);
    }
    // The MODIFY of query_db: agent, human, rule, bundle, digest, modifications.
    let m = &events[1];
    assert_eq!(m["activity_name"], "tools/call");
    assert_eq!(m["disposition"], "Corrected");
    assert_eq!(m["status"], "Success");
    assert_eq!(m["actor"]["user"]["uid"], "spiffe://corp/agent/coder");
    assert_eq!(m["actor"]["invoked_by"], "alice@corp.example");
    assert_eq!(m["actor"]["authorizations"][0]["decision"], "MODIFY");
    assert_eq!(
        m["actor"]["authorizations"][0]["policy"]["name"],
        "clamp_rows"
    );
    assert_eq!(
        m["actor"]["authorizations"][0]["policy"]["version"],
        "1.2.0"
    );
    assert_eq!(m["resources"][0]["name"], "query_db");
    assert_eq!(m["resources"][0]["type"], "mcp_tool");
    assert_eq!(
        m["api"]["request"]["uid"],
        receipts[1]["body"]["action"]["digest"]
    );
    assert_eq!(
        m["unmapped"]["portcullis"]["identity"]["agent_auth"],
        "mtls"
    );
    assert_eq!(m["unmapped"]["portcullis"]["identity"]["human_auth"], "jwt");
    assert_eq!(
        m["unmapped"]["portcullis"]["modifications"][0],
        "clamp_arg /limit to [0, 100]"
    );
    assert_eq!(
        m["unmapped"]["portcullis"]["approval"]["token_id"],
        "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
    );
    // The denied HTTP POST: blocked, a failure, with the HTTP request fields.
    let d = events
        .iter()
        .find(|e| e["unmapped"]["portcullis"]["decision"] == "DENY")
        .unwrap();
    assert_eq!(d["disposition_id"], 2);
    assert_eq!(d["status"], "Failure");
    assert_eq!(d["activity_id"], 1, "POST is Create");
    assert_eq!(d["http_request"]["http_method"], "POST");
    assert_eq!(d["http_request"]["url"]["hostname"], "exfil.example");
    assert_eq!(d["dst_endpoint"]["hostname"], "exfil.example");
    assert_eq!(d["status_detail"], "secrets never leave");
    // Session events are exported too.
    assert_eq!(events.last().unwrap()["activity_name"], "session_end");
    // --session filters; a non-receipt line is skipped.
    let o = policyc(&["receipts", "export", s(&log), "--session", "nope"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    let o = policyc(&["receipts", "export", s(&log), "--format", "splunk"]);
    assert_eq!(o.status.code(), Some(2), "unknown format is a usage error");
}
