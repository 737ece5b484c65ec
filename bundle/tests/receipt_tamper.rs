//! Tamper tests: a SOC verifying a receipt log must catch every kind of tampering, with the right
//! finding on the right line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use bundle::action::{Action, Kind};
use bundle::keys::signing_key_from_seed;
use bundle::receipt::{
    BundleRef, ChainHead, FindingKind, Receipt, ReceiptBody, SignPolicy, Signer, VerifyOptions,
    VerifyReport, checkpoint, seal, session_end, verify_log, verify_log_with,
};
use bundle::verdict::{Decision, Verdict};
use ed25519_dalek::VerifyingKey;

fn action(tool: &str) -> Action {
    Action {
        kind: Kind::Mcp,
        operation: "tools/call".into(),
        tool: Some(tool.into()),
        arguments: serde_json::json!({"path": "/repo/README.md"}),
        session_id: Some("s".into()),
        ..Action::default()
    }
}

fn verdict(d: Decision) -> Verdict {
    Verdict {
        decision: d,
        would_be: d,
        deciding_rule: "r".into(),
        reason: "why".into(),
        ..Verdict::default()
    }
}

/// A session log of `n` action receipts (every 3rd denied) and a final session_end, one JSON line
/// each. With checkpoint_every 4 some ALLOW receipts stay unsigned in the middle.
fn session_log(session: &str, signer: &Signer, n: usize, t0: u64) -> Vec<String> {
    let mut chain = ChainHead::default();
    let policy = SignPolicy {
        checkpoint_every: 4,
        max_unsigned_ms: 60_000,
    };
    let mut lines = Vec::new();
    for i in 0..n {
        let d = if i % 3 == 2 {
            Decision::Deny
        } else {
            Decision::Allow
        };
        let mut body = ReceiptBody::for_action(session, &action("read_file"), &verdict(d));
        body.bundle = Some(BundleRef {
            pack: "demo".into(),
            version: "1".into(),
            hash: "11".repeat(32),
        });
        let r = seal(body, &mut chain, signer, &policy, t0 + i as u64, false);
        lines.push(r.to_json());
    }
    lines.push(session_end(session, &mut chain, signer, t0 + n as u64).to_json());
    lines
}

fn verify(lines: &[String], keys: &[VerifyingKey]) -> VerifyReport {
    verify_log(
        lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        keys,
    )
}

fn kinds(r: &VerifyReport) -> Vec<(usize, FindingKind)> {
    r.findings.iter().map(|f| (f.line, f.kind)).collect()
}

fn setup() -> (Signer, Vec<VerifyingKey>, Vec<String>) {
    let signer = Signer::new(signing_key_from_seed([42; 32]));
    let keys = vec![signer.verifying_key()];
    let log = session_log("s", &signer, 8, 1_000);
    (signer, keys, log)
}

#[test]
fn intact_log_is_ok() {
    let (_, keys, log) = setup();
    let r = verify(&log, &keys);
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.receipts, 9);
    assert_eq!(r.sessions.len(), 1);
    assert_eq!(r.sessions[0].attested_through, Some(9));
    assert_eq!(r.sessions[0].last_seq, 9);
    assert!(r.sessions[0].ended);
    let timeline: Vec<(u64, Option<Decision>, bool)> = r.sessions[0]
        .actions
        .iter()
        .map(|a| (a.seq, a.decision, a.signed))
        .collect();
    assert_eq!(timeline.len(), 9);
    assert_eq!(timeline[2], (3, Some(Decision::Deny), true));
    assert_eq!(timeline[3], (4, Some(Decision::Allow), false));
    assert_eq!(timeline[8], (9, None, true));
    assert_eq!(
        r.sessions[0].actions[0].what.as_deref(),
        Some("tools/call read_file")
    );
}

#[test]
fn changed_decision_is_altered() {
    let (_, keys, mut log) = setup();
    // Line 3 is a signed DENY; line 2 an unsigned ALLOW. Both are caught.
    log[2] = log[2].replace(r#""decision":"DENY""#, r#""decision":"ALLOW""#);
    log[1] = log[1].replace(r#""reason":"why""#, r#""reason":"fine""#);
    let r = verify(&log, &keys);
    assert!(!r.ok);
    assert_eq!(
        kinds(&r),
        [(2, FindingKind::Altered), (3, FindingKind::Altered)]
    );
}

#[test]
fn changed_decision_with_recomputed_hash_breaks_signature_or_chain() {
    let (_, keys, mut log) = setup();
    // An attacker without the key rewrites receipt 3 (signed) and receipt 2 (unsigned), fixing
    // their hashes. The signature on 3 fails; receipt 3's prev no longer matches the new hash of 2.
    for i in [1usize, 2] {
        let mut rc = Receipt::from_json(&log[i]).unwrap();
        rc.body.decision = Some(Decision::Allow);
        rc.body.reason = Some("fine".into());
        rc.hash = bundle::canonical::to_canonical(&serde_json::to_value(&rc.body).unwrap())
            .map(|t| sha(&t))
            .unwrap();
        log[i] = rc.to_json();
    }
    let r = verify(&log, &keys);
    let k = kinds(&r);
    assert!(k.contains(&(3, FindingKind::BadSignature)), "{k:?}");
    assert!(k.contains(&(3, FindingKind::ChainBreak)), "{k:?}");
}

fn sha(t: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(t.as_bytes()).into()
}

#[test]
fn dropped_line_is_missing() {
    let (_, keys, mut log) = setup();
    log.remove(4); // receipt 5
    let r = verify(&log, &keys);
    assert_eq!(kinds(&r), [(5, FindingKind::Missing)]);
    assert!(r.findings[0].detail.contains("receipt 5 is missing"));
    assert_eq!(r.sessions[0].attested_through, Some(3));
}

#[test]
fn dropped_tail_is_not_attested() {
    let (_, keys, mut log) = setup();
    // Drop the signed session end and the signed DENY before it: receipts 7 and 8 were unsigned
    // ALLOWs. Nothing proves them; the verifier says so.
    log.truncate(8);
    let r = verify(&log, &keys);
    assert!(!r.ok);
    assert_eq!(kinds(&r), [(7, FindingKind::UnsignedTail)]);
    assert_eq!(r.sessions[0].attested_through, Some(6));
    assert!(!r.sessions[0].ended);
}

#[test]
fn swapped_lines_are_a_reordered_notice_not_a_failure() {
    let (_, keys, mut log) = setup();
    log.swap(3, 4); // receipts 4 and 5
    let r = verify(&log, &keys);
    // Envoy logs a stream when it ends: log order may differ from chain order. The chain decides.
    assert!(r.ok, "{:?}", r.findings);
    assert!(kinds(&r).is_empty());
    let notices: Vec<(usize, FindingKind)> = r.notices.iter().map(|f| (f.line, f.kind)).collect();
    assert_eq!(notices, [(5, FindingKind::Reordered)]);
    assert!(
        r.notices[0]
            .detail
            .contains("receipt 4 was logged after receipt 5 (line 4)")
    );
    assert_eq!(r.sessions[0].notices, 1);
    assert_eq!(r.sessions[0].findings, 0);
    assert_eq!(r.sessions[0].attested_through, Some(9));
    // The timeline is in chain order and marks the late one.
    let late: Vec<(u64, Option<(u64, usize)>)> = r.sessions[0]
        .actions
        .iter()
        .map(|a| (a.seq, a.logged_after))
        .filter(|(_, l)| l.is_some())
        .collect();
    assert_eq!(late, [(4, Some((5, 4)))]);
    let seqs: Vec<u64> = r.sessions[0].actions.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
}

#[test]
fn swapped_lines_fail_with_strict_order() {
    let (_, keys, mut log) = setup();
    log.swap(3, 4);
    let r = verify_log_with(
        log.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &keys,
        &VerifyOptions { strict_order: true },
    );
    assert!(!r.ok);
    assert_eq!(kinds(&r), [(5, FindingKind::Reordered)]);
    assert!(r.notices.is_empty());
}

#[test]
fn a_late_stream_does_not_hide_tampering() {
    // Receipt 2 (a long-lived stream) is logged last, and receipt 6 was changed: the late line
    // is a notice, the change is still a failure.
    let (_, keys, mut log) = setup();
    let late = log.remove(1);
    log.push(late);
    let changed = log[4].replace(r#""decision":"DENY""#, r#""decision":"ALLOW""#);
    assert_ne!(changed, log[4], "receipt 6 is a DENY");
    log[4] = changed;
    let r = verify(&log, &keys);
    assert!(!r.ok);
    assert_eq!(kinds(&r), [(5, FindingKind::Altered)]);
    assert_eq!(r.notices.len(), 1);
    assert_eq!(r.notices[0].seq, Some(2));
}

#[test]
fn repeated_line_is_duplicated() {
    let (_, keys, mut log) = setup();
    let l = log[2].clone();
    log.push(l);
    let r = verify(&log, &keys);
    assert_eq!(kinds(&r), [(10, FindingKind::Duplicated)]);
}

#[test]
fn receipt_from_another_chain_is_a_chain_break() {
    let (signer, keys, mut log) = setup();
    // Another replica kept its own chain for the same session id (no affinity), or an attacker
    // replays a validly signed receipt from elsewhere: same key, same session id, same seq.
    let other = session_log("s", &signer, 8, 9_000);
    log[2] = other[2].clone();
    let r = verify(&log, &keys);
    let k = kinds(&r);
    assert_eq!(
        k,
        [(3, FindingKind::ChainBreak), (4, FindingKind::ChainBreak)],
        "{:?}",
        r.findings
    );
}

#[test]
fn receipt_moved_from_another_session_is_caught() {
    let (signer, keys, mut log) = setup();
    let other = session_log("t", &signer, 8, 1_000);
    // Rename it into session "s": the body no longer matches its hash.
    log[2] = other[2].replace(r#""session":"t""#, r#""session":"s""#);
    let r = verify(&log, &keys);
    assert!(
        kinds(&r).contains(&(3, FindingKind::Altered)),
        "{:?}",
        r.findings
    );
    // Dropped in unchanged, it lands in session "t" whose chain has nothing else.
    let (_, _, mut log) = setup();
    log.insert(3, other[2].clone());
    let r = verify(&log, &keys);
    let t: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.session.as_deref() == Some("t"))
        .collect();
    assert_eq!(t[0].kind, FindingKind::Missing);
}

#[test]
fn changed_bundle_hash_is_altered() {
    let (_, keys, mut log) = setup();
    log[5] = log[5].replace(&"11".repeat(32), &"22".repeat(32));
    let r = verify(&log, &keys);
    assert_eq!(kinds(&r), [(6, FindingKind::Altered)]);
}

#[test]
fn foreign_key_and_bad_signature() {
    let (_, keys, log) = setup();
    let stranger = Signer::new(signing_key_from_seed([9; 32]));
    let r = verify(&log, &[stranger.verifying_key()]);
    assert!(kinds(&r).iter().any(|k| k.1 == FindingKind::UnknownKey));
    assert!(r.sessions[0].attested_through.is_none());
    // A signature copied onto another receipt does not verify.
    let sig_of = |l: &str| l[l.find(r#""sig":"#).unwrap()..].to_owned();
    let mut log2 = log.clone();
    let s3 = sig_of(&log[2]);
    let s6 = sig_of(&log[5]);
    log2[5] = log[5].replace(&s6, &s3);
    let r = verify(&log2, &keys);
    assert_eq!(kinds(&r), [(6, FindingKind::BadSignature)]);
}

#[test]
fn reads_envoy_access_log_lines_and_batches() {
    let (signer, keys, log) = setup();
    let mut lines = vec![
        "[2026-11-21T23:00:00Z] \"GET / HTTP/1.1\" 200".to_owned(),
        r#"{"status":200,"receipt":"-"}"#.to_owned(),
        r#"{"status":200,"receipt":null}"#.to_owned(),
    ];
    for (i, l) in log.iter().enumerate() {
        match i % 3 {
            0 => lines.push(serde_json::json!({"status": 200, "receipt": l}).to_string()),
            1 => lines.push(format!(r#"{{"status":403,"receipt":{l}}}"#)),
            _ => {
                let r = Receipt::from_json(l).unwrap();
                lines.push(serde_json::json!({"receipt": r.to_header()}).to_string());
            }
        }
    }
    // A JSON-RPC batch: two receipts of another session in one access-log line.
    let mut chain = ChainHead::default();
    let p = SignPolicy::default();
    let a = seal(
        ReceiptBody::for_action("b", &action("x"), &verdict(Decision::Allow)),
        &mut chain,
        &signer,
        &p,
        1,
        false,
    );
    let b = seal(
        ReceiptBody::for_action("b", &action("y"), &verdict(Decision::Deny)),
        &mut chain,
        &signer,
        &p,
        1,
        false,
    );
    lines.push(format!(
        r#"{{"receipt":[{},{}]}}"#,
        a.to_json(),
        b.to_json()
    ));
    let batch_as_string = serde_json::json!({"receipt": format!("[{}]", checkpoint("b", &mut chain, &signer, 2).to_json())});
    lines.push(batch_as_string.to_string());
    let r = verify(&lines, &keys);
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.receipts, 12);
    assert_eq!(r.sessions.len(), 2);
    // A text access log with the receipt line at the end of each line.
    let text: Vec<String> = log
        .iter()
        .map(|l| format!("[2026-11-21T23:00:00.000Z] \"POST /mcp HTTP/1.1\" 200 receipt={l}"))
        .collect();
    let r = verify(&text, &keys);
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.receipts, 9);
    // A broken receipt inside an access-log line is reported, not skipped.
    lines.push(r#"{"receipt":"{\"body\":{}}"}"#.to_owned());
    lines.push(r#"{"receipt": {"body""#.to_owned());
    let r = verify(&lines, &keys);
    assert_eq!(
        kinds(&r),
        [(15, FindingKind::Malformed), (16, FindingKind::Malformed)]
    );
}

/// A session id whose first session ended (signed `session_end`) and that came back as a new
/// session (its slot was reused) logs a second chain from seq 1: two intact chains, not a break.
/// A restart without the `session_end` before it, or a forged restart, still fails.
#[test]
fn a_session_id_reused_after_its_end_starts_a_second_chain() {
    let (signer, keys, mut log) = setup();
    let second = session_log("s", &signer, 5, 50_000);
    log.extend(second.iter().cloned());
    let r = verify(&log, &keys);
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.sessions.len(), 2);
    assert_eq!(
        (r.sessions[0].last_seq, r.sessions[1].last_seq),
        (9, 6),
        "each chain is attested on its own"
    );
    assert!(r.sessions.iter().all(|s| s.ended && s.session == "s"));

    // Without the first chain's session_end, a restart is a fork.
    let (_, _, first) = setup();
    let mut no_end = first[..8].to_vec();
    no_end.extend(second.iter().cloned());
    let r = verify(&no_end, &keys);
    assert!(!r.ok);
    assert!(
        kinds(&r).contains(&(9, FindingKind::ChainBreak)),
        "{:?}",
        r.findings
    );
    let restart = r.findings.iter().find(|f| f.line == 9).unwrap();
    assert!(
        restart.detail.contains("starts again at receipt 1")
            && restart.detail.contains("no session_end"),
        "a restart says what it most often is: {}",
        restart.detail
    );

    // Envoy writes the end to its own log and the new chain's actions to the access log, so the
    // verifier may read the new chain first: the receipts' times decide, not the log order.
    let (_, _, first) = setup();
    let (end, before_end) = first.split_last().expect("a session_end");
    let mut files = before_end.to_vec();
    files.extend(second.iter().cloned());
    files.push(end.clone());
    let r = verify(&files, &keys);
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.sessions.len(), 2);

    // A first receipt made in the same millisecond as the end still follows it.
    let same_ms = session_log("s", &signer, 3, 1_008);
    let mut tie = same_ms.clone();
    tie.extend(first.iter().cloned());
    let r = verify(&tie, &keys);
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.sessions.len(), 2);

    // A second chain by a key nobody trusts is caught like any other receipt.
    let stranger = Signer::new(signing_key_from_seed([7; 32]));
    let mut forged = first.clone();
    forged.extend(session_log("s", &stranger, 3, 60_000));
    let r = verify(&forged, &keys);
    assert!(!r.ok);
    assert!(r.findings.iter().any(|f| f.kind == FindingKind::UnknownKey));
}
