//! Receipt costs on the request path (seal without / with a signature, the action digest, the
//! session record codec, approval token checks) and offline (log verification).
//!
//! Run: `cargo bench -p portcullis-benches --bench receipts`.
//!
//! The action is one the filter read off the wire: its arguments arrive as text, and the filter
//! hashes that text once while it parses the request (receipt format 2). Each iteration of the
//! digest and seal benches pays that hash pass too, so they compare with format 1's rows, which
//! canonicalized the parsed arguments instead (`receipt/action_digest_v1_1KiB` keeps that path).

use bundle::action::{Action, Kind, Target};
use bundle::keys::signing_key_from_seed;
use bundle::receipt::{
    ChainHead, ReceiptBody, SignPolicy, Signer, action_digest, action_digest_v1, seal, verify_log,
};
use bundle::session::{HISTORY_CAP, HistoryEntry, SessionState, name_hash};
use bundle::session_codec::{SessionExtra, decode, encode};
use bundle::verdict::{Decision, Verdict};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use sha2::{Digest as _, Sha256};

fn action() -> Action {
    Action {
        kind: Kind::Mcp,
        operation: "tools/call".into(),
        tool: Some("write_file".into()),
        arguments: serde_json::json!({
            "path": "/repo/src/lib.rs",
            "content": "x".repeat(900),
            "branch": "feature/receipts"
        }),
        target: Target {
            host: "workbench".into(),
            port: 8000,
            path: "/mcp".into(),
            scheme: "http".into(),
            server: "workbench".into(),
            ..Target::default()
        },
        session_id: Some("sess-1".into()),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        size: 1024,
        ..Action::default()
    }
}

fn verdict(d: Decision) -> Verdict {
    Verdict {
        decision: d,
        would_be: d,
        deciding_rule: "rule".into(),
        reason: "reason".into(),
        ..Verdict::default()
    }
}

fn bench(c: &mut Criterion) {
    let signer = Signer::new(signing_key_from_seed([7; 32]));
    let mut a = action();
    // The arguments as the agent sent them (compact, as the MCP SDKs write them).
    let text = serde_json::to_string(&a.arguments).unwrap_or_default();
    let received = move |a: &mut Action| {
        a.arguments_sha256 = Some(Sha256::digest(black_box(text.as_bytes())).into());
    };
    let allow = verdict(Decision::Allow);
    let deny = verdict(Decision::Deny);
    let never = SignPolicy {
        checkpoint_every: u32::MAX,
        max_unsigned_ms: u64::MAX,
    };

    c.bench_function("receipt/action_digest_1KiB", |b| {
        b.iter(|| {
            received(&mut a);
            action_digest(black_box(&a))
        })
    });
    c.bench_function("receipt/action_digest_v1_1KiB", |b| {
        b.iter(|| action_digest_v1(black_box(&a)))
    });
    c.bench_function("receipt/seal_unsigned_allow", |b| {
        let mut chain = ChainHead::default();
        b.iter(|| {
            chain.unsigned = 0;
            received(&mut a);
            seal(
                ReceiptBody::for_action("sess-1", black_box(&a), &allow),
                &mut chain,
                &signer,
                &never,
                1,
                false,
            )
        })
    });
    c.bench_function("receipt/seal_signed_deny", |b| {
        let mut chain = ChainHead::default();
        b.iter(|| {
            received(&mut a);
            seal(
                ReceiptBody::for_action("sess-1", black_box(&a), &deny),
                &mut chain,
                &signer,
                &never,
                1,
                false,
            )
        })
    });
    c.bench_function("receipt/seal_and_header", |b| {
        let mut chain = ChainHead::default();
        b.iter(|| {
            chain.unsigned = 0;
            received(&mut a);
            seal(
                ReceiptBody::for_action("sess-1", black_box(&a), &allow),
                &mut chain,
                &signer,
                &never,
                1,
                false,
            )
            .to_header()
        })
    });

    // A 16-receipt session signed the default way (the 16th is signed) vs every receipt signed.
    for (name, policy) in [
        ("default_policy", SignPolicy::default()),
        (
            "all_signed",
            SignPolicy {
                checkpoint_every: 1,
                max_unsigned_ms: 0,
            },
        ),
    ] {
        let mut chain = ChainHead::default();
        let lines: Vec<String> = (0..16)
            .map(|i| {
                seal(
                    ReceiptBody::for_action("sess-1", &a, &allow),
                    &mut chain,
                    &signer,
                    &policy,
                    i,
                    false,
                )
                .to_json()
            })
            .collect();
        let keys = [signer.verifying_key()];
        c.bench_function(&format!("receipt/verify_log_16_{name}"), |b| {
            b.iter(|| {
                verify_log(
                    lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
                    &keys,
                )
            })
        });
    }

    let state = SessionState {
        intent: Some("code_review".into()),
        taints: vec![name_hash("untrusted_instruction")],
        class_table: vec![name_hash("read"), name_hash("write")],
        history: (0..HISTORY_CAP as u32)
            .map(|i| HistoryEntry {
                at_ms: i * 1500,
                subject: name_hash(["read_file", "write_file", "run_tests"][(i % 3) as usize]),
                classes: 1,
            })
            .collect(),
        ..SessionState::new(1_763_700_000_000)
    };
    let head = ChainHead {
        seq: 300,
        prev: [9; 32],
        unsigned: 3,
        oldest_unsigned_ms: 1_763_700_300_000,
    };
    let extra = SessionExtra {
        used_tokens: vec![[1; 16]],
        last_seen_ms: 1_763_700_300_000,
        owner: None,
    };
    let bytes = encode(&state, &head, &extra);
    c.bench_function("session_codec/encode_full_history", |b| {
        b.iter(|| encode(black_box(&state), &head, &extra))
    });
    c.bench_function("session_codec/decode_full_history", |b| {
        b.iter(|| decode(black_box(&bytes)))
    });

    let digest = action_digest(&a);
    let sk = signing_key_from_seed([3; 32]);
    let token = bundle::approval::mint(&digest, "release", &sk, 1_763_700_000, 900, [5; 16]);
    let approvers = [("release".to_owned(), sk.verifying_key())];
    c.bench_function("approval/verify", |b| {
        b.iter(|| {
            bundle::approval::verify(
                black_box(&token),
                &digest,
                "release",
                &approvers,
                1_763_700_001,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
