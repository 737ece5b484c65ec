//! Property tests: the session codec round-trips every valid record and refuses (never panics on)
//! arbitrary bytes; the receipt verifier and the approval-token reader never panic on any input,
//! and an untouched chain always verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use bundle::action::Action;
use bundle::approval;
use bundle::keys::signing_key_from_seed;
use bundle::receipt::{ChainHead, Receipt, ReceiptBody, SignPolicy, Signer, seal, verify_log};
use bundle::session::{
    CLASS_TABLE_CAP, HISTORY_CAP, HistoryEntry, SET_CAP, SessionState, SessionStatus,
};
use bundle::session_codec::{SessionExtra, USED_TOKENS_CAP, decode, encode};
use bundle::verdict::{Decision, Verdict};
use proptest::prelude::*;

fn status() -> impl Strategy<Value = SessionStatus> {
    prop_oneof![
        Just(SessionStatus::New),
        Just(SessionStatus::Active),
        Just(SessionStatus::Missing)
    ]
}

prop_compose! {
    fn session()(
        status in status(),
        intent in proptest::option::of("[a-z_é]{0,40}"),
        started_ms in any::<u64>(),
        actions in any::<u32>(),
        egress_bytes in any::<u64>(),
        approvals in any::<u32>(),
        taints in proptest::collection::vec(any::<u64>(), 0..=SET_CAP),
        revoked_tools in proptest::collection::vec(any::<u64>(), 0..=SET_CAP),
        revoked_classes in proptest::collection::vec(any::<u64>(), 0..=SET_CAP),
        read_only in any::<bool>(),
        killed in any::<bool>(),
        class_table in proptest::collection::vec(any::<u64>(), 0..=CLASS_TABLE_CAP),
        history in proptest::collection::vec(
            (any::<u32>(), prop_oneof![any::<u64>(), 0u64..4], any::<u16>()), 0..=HISTORY_CAP),
        drift in -10.0f32..10.0,
    ) -> SessionState {
        let intent_source = if intent.is_some() {
            bundle::action::IntentSource::Claim
        } else {
            bundle::action::IntentSource::None
        };
        SessionState {
            intent_source,
            status, intent, started_ms, actions, egress_bytes, approvals, taints, revoked_tools,
            revoked_classes, read_only, killed, class_table,
            history: history.into_iter().map(|(at_ms, subject, classes)| HistoryEntry { at_ms, subject, classes }).collect(),
            drift,
            // Not part of the record: the codec never writes it.
            principal: bundle::session::PrincipalView::default(),
        }
    }
}

prop_compose! {
    fn chain()(seq in any::<u64>(), prev in any::<[u8; 32]>(), unsigned in any::<u32>(), oldest in any::<u64>()) -> ChainHead {
        ChainHead { seq, prev, unsigned, oldest_unsigned_ms: oldest }
    }
}

prop_compose! {
    fn extra()(used in proptest::collection::vec(any::<[u8; 16]>(), 0..=USED_TOKENS_CAP), last in any::<u64>(), owner in proptest::option::of(any::<u64>())) -> SessionExtra {
        SessionExtra { used_tokens: used, last_seen_ms: last, owner }
    }
}

proptest! {
    #[test]
    fn codec_round_trips(s in session(), c in chain(), e in extra()) {
        let bytes = encode(&s, &c, &e);
        let (s2, c2, e2) = decode(&bytes).unwrap();
        prop_assert_eq!(s2, s);
        prop_assert_eq!(c2, c);
        prop_assert_eq!(e2, e);
    }

    #[test]
    fn codec_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn codec_refuses_or_reads_mutations(s in session(), c in chain(), e in extra(), at in any::<usize>(), bit in 0u8..8) {
        let mut bytes = encode(&s, &c, &e);
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        // Either refused, or read back into something that re-encodes to the same bytes.
        if let Ok((s2, c2, e2)) = decode(&bytes) {
            let again = encode(&s2, &c2, &e2);
            prop_assert!(decode(&again).is_ok());
        }
    }

    #[test]
    fn verify_log_never_panics(lines in proptest::collection::vec(any::<String>(), 0..20)) {
        let _ = verify_log(lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())), &[]);
    }

    #[test]
    fn verify_log_never_panics_on_json_ish_lines(lines in proptest::collection::vec(
        r#"\{"(receipt|body|hash|sig)":("[-a-zA-Z0-9{}\[\]:,"]*"|\{.{0,40}|\[.{0,40}|null|1)\}?"#, 0..20)) {
        let _ = verify_log(lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())), &[]);
    }

    #[test]
    fn mutated_receipt_lines_never_panic_and_never_pass(
        n in 1usize..6,
        victim in any::<usize>(),
        pos in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let signer = Signer::new(signing_key_from_seed([5; 32]));
        let mut chain = ChainHead::default();
        let mut lines: Vec<String> = (0..n).map(|i| {
            let d = if i % 2 == 0 { Decision::Deny } else { Decision::Allow };
            let v = Verdict { decision: d, would_be: d, ..Verdict::default() };
            seal(ReceiptBody::for_action("s", &Action::default(), &v), &mut chain, &signer, &SignPolicy::default(), i as u64, true).to_json()
        }).collect();
        let keys = [signer.verifying_key()];
        let ok = verify_log(lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())), &keys);
        prop_assert!(ok.ok, "{:?}", ok.findings);
        let v = victim % n;
        let mut b = lines[v].clone().into_bytes();
        let p = pos % b.len();
        if b[p] != byte {
            b[p] = byte;
            lines[v] = String::from_utf8_lossy(&b).into_owned();
            let r = verify_log(lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())), &keys);
            // Every line is canonical, so any changed byte changes the meaning and is caught.
            prop_assert!(!r.ok, "undetected change at byte {} of line {}: {}", p, v + 1, lines[v]);
            prop_assert!(Receipt::from_json(&lines[v]).map(|r| r.hash_matches()).unwrap_or(true) || !r.findings.is_empty());
        }
    }

    #[test]
    fn body_fast_path_is_canonical(
        session in ".{0,12}", tool in proptest::option::of(".{0,12}"), reason in ".{0,20}",
        keys in proptest::collection::vec(".{0,6}", 0..4), drift in any::<f32>(), seq in any::<u64>(),
    ) {
        let mut a = Action { tool, ..Action::default() };
        a.arguments = serde_json::Value::Object(keys.iter().map(|k| (k.clone(), serde_json::Value::Null)).collect());
        let v = Verdict { reason, ..Verdict::default() };
        let mut body = ReceiptBody::for_action(&session, &a, &v);
        body.drift_milli = Some(bundle::receipt::drift_milli(drift));
        body.seq = seq;
        prop_assert_eq!(body.canonical_json().unwrap(), body.canonical_json_generic().unwrap());
    }

    #[test]
    fn approval_verify_never_panics(token in ".{0,300}", dot in "[A-Za-z0-9_-]{0,120}\\.[A-Za-z0-9_-]{0,100}") {
        let k = signing_key_from_seed([1; 32]).verifying_key();
        let approvers = [("g".to_owned(), k)];
        prop_assert!(approval::verify(&token, &[0; 32], "g", &approvers, 0).is_err());
        prop_assert!(approval::verify(&dot, &[0; 32], "g", &approvers, 0).is_err());
    }
}
