//! Key rotation: the filter's receipt signing key changes in the middle of a session (new key id
//! on later receipts, the chain continues). A verifier given the old and the new public key
//! verifies the whole log; a receipt signed by a key it was not given is reported.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use bundle::action::{Action, Kind};
use bundle::keys::{key_id, signing_key_from_seed};
use bundle::receipt::{
    ChainHead, FindingKind, Receipt, ReceiptBody, SignPolicy, Signer, VerifyReport, seal,
    session_end, verify_log,
};
use bundle::verdict::{Decision, Verdict};
use ed25519_dalek::VerifyingKey;

fn body(session: &str, d: Decision) -> ReceiptBody {
    let action = Action {
        kind: Kind::Mcp,
        operation: "tools/call".into(),
        tool: Some("read_file".into()),
        arguments: serde_json::json!({"path": "/repo/README.md"}),
        session_id: Some(session.into()),
        ..Action::default()
    };
    let verdict = Verdict {
        decision: d,
        would_be: d,
        deciding_rule: "r".into(),
        reason: "why".into(),
        ..Verdict::default()
    };
    ReceiptBody::for_action(session, &action, &verdict)
}

/// One session: receipts 1..=4 signed by `old` (every one: checkpoint_every 1), then the key
/// rotates; receipts 5..=8 and the session end are signed by `new`. The chain head carries over.
fn rotated_log(old: &Signer, new: &Signer) -> Vec<Receipt> {
    let mut chain = ChainHead::default();
    let policy = SignPolicy {
        checkpoint_every: 1,
        max_unsigned_ms: 60_000,
    };
    let mut out = Vec::new();
    for i in 0..8u64 {
        let signer = if i < 4 { old } else { new };
        let d = if i == 6 {
            Decision::Deny
        } else {
            Decision::Allow
        };
        out.push(seal(
            body("s", d),
            &mut chain,
            signer,
            &policy,
            1_000 + i,
            false,
        ));
    }
    out.push(session_end("s", &mut chain, new, 2_000));
    out
}

fn verify(log: &[Receipt], keys: &[VerifyingKey]) -> VerifyReport {
    let lines: Vec<String> = log.iter().map(Receipt::to_json).collect();
    verify_log(
        lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        keys,
    )
}

fn signers() -> (Signer, Signer) {
    (
        Signer::new(signing_key_from_seed([1; 32])),
        Signer::new(signing_key_from_seed([2; 32])),
    )
}

#[test]
fn receipts_name_the_key_that_signed_them() {
    let (old, new) = signers();
    let log = rotated_log(&old, &new);
    let kids: Vec<String> = log
        .iter()
        .map(|r| r.sig.as_ref().unwrap().key_id.clone())
        .collect();
    let old_id = key_id(&old.verifying_key());
    let new_id = key_id(&new.verifying_key());
    assert_ne!(old_id, new_id);
    assert!(kids[..4].iter().all(|k| *k == old_id), "{kids:?}");
    assert!(kids[4..].iter().all(|k| *k == new_id), "{kids:?}");
    // The chain continues across the rotation.
    assert_eq!(log[4].body.prev, hex::encode(log[3].hash));
    assert_eq!(log[4].body.seq, 5);
}

#[test]
fn old_and_new_keys_verify_a_log_spanning_a_rotation() {
    let (old, new) = signers();
    let log = rotated_log(&old, &new);
    // Key order does not matter: the key id picks the key.
    for keys in [
        vec![old.verifying_key(), new.verifying_key()],
        vec![new.verifying_key(), old.verifying_key()],
    ] {
        let r = verify(&log, &keys);
        assert!(r.ok, "{:?}", r.findings);
        assert_eq!(r.sessions[0].signed, 9);
        assert_eq!(r.sessions[0].attested_through, Some(9));
        assert!(r.sessions[0].ended);
    }
}

#[test]
fn only_the_new_key_reports_the_old_receipts_as_unknown_key() {
    let (old, new) = signers();
    let log = rotated_log(&old, &new);
    let r = verify(&log, &[new.verifying_key()]);
    assert!(!r.ok);
    let kinds: Vec<(usize, FindingKind)> = r.findings.iter().map(|f| (f.line, f.kind)).collect();
    assert_eq!(
        kinds,
        (1..=4)
            .map(|l| (l, FindingKind::UnknownKey))
            .collect::<Vec<_>>()
    );
    assert!(r.findings[0].detail.contains(&key_id(&old.verifying_key())));
    assert_eq!(r.sessions[0].signed, 5);
    // Only the old key: the receipts after the rotation are the unknown ones, and nothing after
    // receipt 4 is attested.
    let r = verify(&log, &[old.verifying_key()]);
    let kinds: Vec<(usize, FindingKind)> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::UnknownKey)
        .map(|f| (f.line, f.kind))
        .collect();
    assert_eq!(
        kinds,
        (5..=9)
            .map(|l| (l, FindingKind::UnknownKey))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.sessions[0].attested_through, Some(4));
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::UnsignedTail && f.seq == Some(5))
    );
}

#[test]
fn a_receipt_resigned_by_a_stranger_is_reported_even_with_both_keys() {
    let (old, new) = signers();
    let stranger = Signer::new(signing_key_from_seed([3; 32]));
    let mut log = rotated_log(&old, &new);
    // An attacker rewrites receipt 7 (the DENY) as ALLOW with their own key, keeping the chain
    // position: the hash changes, so receipt 8 no longer follows, and the key is unknown.
    let mut forged = log[6].body.clone();
    forged.decision = Some(Decision::Allow);
    forged.would_be = Some(Decision::Allow);
    let mut head = ChainHead {
        seq: 6,
        prev: log[5].hash,
        ..ChainHead::default()
    };
    let policy = SignPolicy::default();
    log[6] = seal(forged, &mut head, &stranger, &policy, 1_006, true);
    assert_eq!(log[6].body.seq, 7);
    let r = verify(&log, &[old.verifying_key(), new.verifying_key()]);
    assert!(!r.ok);
    let kinds: Vec<(usize, FindingKind)> = r.findings.iter().map(|f| (f.line, f.kind)).collect();
    assert!(kinds.contains(&(7, FindingKind::UnknownKey)), "{kinds:?}");
    assert!(kinds.contains(&(8, FindingKind::ChainBreak)), "{kinds:?}");
    assert_eq!(r.sessions[0].attested_through, Some(6));
}
