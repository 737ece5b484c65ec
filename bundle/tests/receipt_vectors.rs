//! Golden vectors for receipts, action digests and approval tokens, and a small intact session
//! log other layers and the CLI tests use.
//!
//! - Format 2 (what this build writes): `testdata/receipts/vectors-v2.json` and
//!   `testdata/receipts/session-v2.jsonl`, built here from fixed inputs. Regenerate only on
//!   purpose: `BLESS=1 cargo test -p portcullis-bundle --test receipt_vectors`.
//! - Format 1: `testdata/receipts/vectors.json` and `testdata/receipts/session.jsonl`, written by
//!   the last format 1 build and frozen: never regenerated, they must keep verifying (old logs).
//!
//! The vectors pin the canonical form, the hash and the signature bytes, so a change to any of
//! them is a deliberate format change.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::PathBuf;

use bundle::action::{Action, AuthMethod, Identity, Kind, Principal, Risk, Target};
use bundle::approval;
use bundle::keys::{format_verifying_key, key_id, signing_key_from_seed};
use bundle::receipt::{
    ApprovalRef, BundleRef, ChainHead, Receipt, ReceiptBody, SignPolicy, Signer, action_digest,
    action_digest_v1, checkpoint, drift_milli, seal, session_end, verify_log,
};
use bundle::verdict::{Decision, Effect, Mode, Modification, PathSegment, RuleMatch, Verdict};
use serde_json::{Value, json};
use sha2::Digest as _;

const SEED: [u8; 32] = [0x42; 32];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/receipts")
}

/// Each action's arguments as the agent sent them (the text the filter hashes), when it sent any.
fn argument_texts() -> Vec<Option<&'static str>> {
    vec![
        // What the MCP SDKs send: compact, in the agent's member order.
        Some(r#"{"path":"/repo/src/main.rs"}"#),
        // Another spelling of the same value (spaces, order, an escaped `/`): its own digest.
        Some(
            r#"{"sql": "select * from \"pay\"\nwhere \u00e9='ü'", "ratio": 0.5, "limit": 10, "x": "a\/b"}"#,
        ),
        None,
    ]
}

/// [`actions`] as the filter reads them off the wire (format 2 digests hash the received text).
fn received_actions() -> Vec<(&'static str, Action)> {
    actions()
        .into_iter()
        .zip(argument_texts())
        .map(|((name, mut a), text)| {
            if let Some(t) = text {
                assert_eq!(serde_json::from_str::<Value>(t).unwrap(), a.arguments);
                a.arguments_sha256 = Some(sha2::Sha256::digest(t.as_bytes()).into());
            }
            (name, a)
        })
        .collect()
}

fn actions() -> Vec<(&'static str, Action)> {
    let ident = Identity {
        agent: Principal {
            id: Some("spiffe://corp/agent/coder".into()),
            auth: AuthMethod::Mtls,
        },
        human: Principal {
            id: Some("alice@corp.example".into()),
            auth: AuthMethod::Jwt,
        },
        workload: Principal::default(),
    };
    vec![
        (
            "mcp_read_file",
            Action {
                kind: Kind::Mcp,
                operation: "tools/call".into(),
                tool: Some("read_file".into()),
                arguments: json!({"path": "/repo/src/main.rs"}),
                target: Target {
                    host: "workbench".into(),
                    port: 8000,
                    path: "/mcp".into(),
                    scheme: "http".into(),
                    server: "workbench".into(),
                    ..Target::default()
                },
                identity: ident.clone(),
                session_id: Some("sess-1".into()),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                size: 143,
                ..Action::default()
            },
        ),
        (
            "mcp_query_db_with_float_and_unicode",
            Action {
                kind: Kind::Mcp,
                operation: "tools/call".into(),
                tool: Some("query_db".into()),
                arguments: json!({"sql": "select * from \"pay\"\nwhere é='ü'", "limit": 10, "ratio": 0.5, "x": "a/b"}),
                identity: ident.clone(),
                session_id: Some("sess-1".into()),
                risk: Risk {
                    secrets: false,
                    data_classes: vec!["pii".into()],
                },
                ..Action::default()
            },
        ),
        (
            "http_post_egress",
            Action {
                kind: Kind::Http,
                operation: "POST".into(),
                arguments: Value::Null,
                target: Target {
                    host: "exfil.example".into(),
                    port: 443,
                    path: "/upload".into(),
                    query: "k=v".into(),
                    scheme: "https".into(),
                    server: String::new(),
                },
                identity: ident,
                session_id: None,
                size: 2048,
                risk: Risk {
                    secrets: true,
                    data_classes: vec!["credential".into()],
                },
                ..Action::default()
            },
        ),
    ]
}

fn verdicts() -> Vec<Verdict> {
    vec![
        Verdict {
            decision: Decision::Allow,
            would_be: Decision::Allow,
            matched: vec![RuleMatch {
                rule: "allow_reads".into(),
                decision: Decision::Allow,
                mode: Mode::Enforce,
                reason: "reading the repo is fine".into(),
            }],
            deciding_rule: "allow_reads".into(),
            reason: "reading the repo is fine".into(),
            intent: Some("code_review".into()),
            ..Verdict::default()
        },
        Verdict {
            decision: Decision::Modify,
            would_be: Decision::Modify,
            matched: vec![RuleMatch {
                rule: "clamp_rows".into(),
                decision: Decision::Modify,
                mode: Mode::Enforce,
                reason: "at most 100 rows".into(),
            }],
            deciding_rule: "clamp_rows".into(),
            reason: "at most 100 rows".into(),
            modifications: vec![Modification::ClampArg {
                path: vec![PathSegment::Key("limit".into())],
                min: 0.0,
                max: 100.0,
            }],
            effects: vec![Effect::Taint("pii".into())],
            warnings: vec!["audit_pii: payroll data".into()],
            intent: Some("code_review".into()),
            ..Verdict::default()
        },
        Verdict {
            decision: Decision::Deny,
            would_be: Decision::Deny,
            matched: vec![
                RuleMatch {
                    rule: "no_exfil".into(),
                    decision: Decision::Deny,
                    mode: Mode::Enforce,
                    reason: "secrets never leave".into(),
                },
                RuleMatch {
                    rule: "watch_egress".into(),
                    decision: Decision::StepUp,
                    mode: Mode::Audit,
                    reason: "egress needs approval".into(),
                },
            ],
            deciding_rule: "no_exfil".into(),
            reason: "secrets never leave".into(),
            effects: vec![Effect::Kill],
            ..Verdict::default()
        },
    ]
}

/// Build the vectors file and the session log from fixed inputs.
fn build() -> (Value, String) {
    let sk = signing_key_from_seed(SEED);
    let signer = Signer::new(sk.clone());
    let mut chain = ChainHead::default();
    let policy = SignPolicy::default();
    let mut receipts = Vec::new();
    let mut log = String::new();
    let mut digests = Vec::new();
    for (i, (((name, a), v), text)) in received_actions()
        .into_iter()
        .zip(verdicts())
        .zip(argument_texts())
        .enumerate()
    {
        let d = action_digest(&a);
        digests.push(json!({
            "name": name,
            "action": serde_json::to_value(&a).unwrap(),
            "arguments_text": text,
            "arguments_sha256": hex::encode(bundle::receipt::arguments_sha256(&a)),
            "digest": hex::encode(d),
        }));
        let mut body = ReceiptBody::for_action("sess-1", &a, &v);
        body.bundle = Some(BundleRef {
            pack: "demo".into(),
            version: "1.2.0".into(),
            hash: "5e".repeat(32),
        });
        body.drift_milli = Some(drift_milli(0.125 * i as f32));
        if i == 1 {
            body.approval = Some(ApprovalRef {
                token_id: "0f".repeat(16),
                group: "release".into(),
                key_id: key_id(&sk.verifying_key()),
            });
        }
        let r = seal(
            body,
            &mut chain,
            &signer,
            &policy,
            1_763_700_000_000 + i as u64 * 250,
            false,
        );
        receipts.push(vector(name, &r));
        log.push_str(&r.to_json());
        log.push('\n');
    }
    let c = checkpoint("sess-1", &mut chain, &signer, 1_763_700_005_000);
    receipts.push(vector("checkpoint", &c));
    log.push_str(&c.to_json());
    log.push('\n');
    let e = session_end("sess-1", &mut chain, &signer, 1_763_700_009_000);
    receipts.push(vector("session_end", &e));
    log.push_str(&e.to_json());
    log.push('\n');

    let tokens = vec![json!({
        "digest": digests[0]["digest"],
        "group": "release",
        "issued_s": 1_763_700_000u64,
        "ttl_s": 900,
        "nonce": hex::encode([0xa5u8; 16]),
        "token": approval::mint(&action_digest(&received_actions()[0].1), "release", &sk, 1_763_700_000, 900, [0xa5; 16]),
    })];
    let file = json!({
        "about": "Portcullis receipt / approval golden vectors, receipt format 2 (docs/receipts.md). \
                  Key: seed 0x42 x 32 (tests only). Action digests: arguments_text is the \
                  arguments as received (null: none received, the canonical form is hashed). \
                  Regenerate with BLESS=1 cargo test -p portcullis-bundle --test receipt_vectors.",
        "format": 2,
        "signing_seed_hex": hex::encode(SEED),
        "public_key": format_verifying_key(&sk.verifying_key()),
        "key_id": key_id(&sk.verifying_key()),
        "receipt_domain": "portcullis/receipt/v1\\0",
        "approval_domain": "portcullis/approval/v1\\0",
        "receipts": receipts,
        "action_digests": digests,
        "approval_tokens": tokens,
    });
    (file, log)
}

fn vector(name: &str, r: &Receipt) -> Value {
    json!({
        "name": name,
        "canonical_body": r.body.canonical_json().unwrap(),
        "hash": hex::encode(r.hash),
        "signed": r.sig.is_some(),
        "line": r.to_json(),
    })
}

#[test]
fn golden_vectors_match() {
    let (file, log) = build();
    let text = serde_json::to_string_pretty(&file).unwrap() + "\n";
    let vpath = dir().join("vectors-v2.json");
    let lpath = dir().join("session-v2.jsonl");
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&vpath, &text).unwrap();
        std::fs::write(&lpath, &log).unwrap();
        std::fs::write(
            dir().join("test.pub"),
            format!("{}\n", file["public_key"].as_str().unwrap()),
        )
        .unwrap();
    }
    let want = std::fs::read_to_string(&vpath).expect("vectors-v2.json missing: run with BLESS=1");
    assert_eq!(
        text, want,
        "receipt vectors changed; if on purpose, re-run with BLESS=1"
    );
    assert_eq!(std::fs::read_to_string(&lpath).unwrap(), log);
    let public = std::fs::read_to_string(dir().join("test.pub")).unwrap();
    assert_eq!(public.trim(), file["public_key"].as_str().unwrap());
}

/// The committed vectors of both formats are self-consistent, checked the way an outside verifier
/// would: hash the canonical body bytes, check the Ed25519 signature over the domain-separated
/// hash; and each format's digests are its own digest function's.
#[test]
fn committed_vectors_verify_independently() {
    committed_vectors_verify("vectors.json", "session.jsonl", 1);
    committed_vectors_verify("vectors-v2.json", "session-v2.jsonl", 2);
}

/// Format 1 logs keep verifying, and a format 1 receipt read back re-serializes to its own bytes
/// (every member present), so tools built on `Receipt` still print and export it faithfully.
#[test]
fn frozen_version_1_log_reads_back_byte_for_byte() {
    let log = std::fs::read_to_string(dir().join("session.jsonl")).unwrap();
    for line in log.lines() {
        let r = Receipt::from_json(line).unwrap();
        assert_eq!(r.body.v, 1);
        assert!(r.hash_matches());
        assert_eq!(r.to_json(), line);
    }
    let log2 = std::fs::read_to_string(dir().join("session-v2.jsonl")).unwrap();
    for line in log2.lines() {
        let r = Receipt::from_json(line).unwrap();
        assert_eq!(r.body.v, 2);
        assert_eq!(r.to_json(), line);
        assert!(!line.contains("null,") && !line.contains("[]"), "{line}");
    }
    // Read as one stream (an access log spanning the upgrade), both verify; the mixed chain
    // (format 2 after format 1 in one session) is `version_1_bodies_still_read_and_hash_by_their_own_rules`.
    let pk = bundle::keys::parse_verifying_key(
        std::fs::read_to_string(dir().join("test.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    for text in [&log, &log2] {
        let prefixed: Vec<String> = text
            .lines()
            .map(|l| format!("[info] portcullis receipt {l}"))
            .collect();
        let report = verify_log(
            prefixed
                .iter()
                .enumerate()
                .map(|(i, l)| (i + 1, l.as_str())),
            &[pk],
        );
        assert!(report.ok, "{:?}", report.findings);
        assert_eq!(report.receipts, text.lines().count());
    }
}

fn committed_vectors_verify(vectors: &str, session: &str, format: u32) {
    use ed25519_dalek::Verifier;
    use sha2::Digest;
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join(vectors)).unwrap()).unwrap();
    let pk = bundle::keys::parse_verifying_key(v["public_key"].as_str().unwrap()).unwrap();
    let mut prev = "0".repeat(64);
    for r in v["receipts"].as_array().unwrap() {
        let canon = r["canonical_body"].as_str().unwrap();
        let hash: [u8; 32] = sha2::Sha256::digest(canon.as_bytes()).into();
        assert_eq!(hex::encode(hash), r["hash"].as_str().unwrap());
        let line: Value = serde_json::from_str(r["line"].as_str().unwrap()).unwrap();
        assert_eq!(line["body"]["prev"].as_str().unwrap(), prev);
        prev = hex::encode(hash);
        // The body inside the line re-serializes to exactly the canonical bytes.
        assert_eq!(
            bundle::canonical::to_canonical(&line["body"]).unwrap(),
            canon
        );
        if r["signed"].as_bool().unwrap() {
            use base64::Engine;
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(line["sig"]["sig"].as_str().unwrap())
                .unwrap();
            let mut msg = b"portcullis/receipt/v1\0".to_vec();
            msg.extend_from_slice(&hash);
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            pk.verify(&msg, &sig).unwrap();
        } else {
            assert!(line["sig"].is_null());
        }
    }
    for d in v["action_digests"].as_array().unwrap() {
        let mut a: Action = serde_json::from_value(d["action"].clone()).unwrap();
        let digest = if format == 1 {
            action_digest_v1(&a)
        } else {
            // The text the agent sent, hashed as received.
            if let Some(t) = d["arguments_text"].as_str() {
                a.arguments_sha256 = Some(sha2::Sha256::digest(t.as_bytes()).into());
            }
            assert_eq!(
                hex::encode(bundle::receipt::arguments_sha256(&a)),
                d["arguments_sha256"].as_str().unwrap()
            );
            action_digest(&a)
        };
        assert_eq!(hex::encode(digest), d["digest"].as_str().unwrap());
    }
    for t in v["approval_tokens"].as_array().unwrap() {
        let digest: [u8; 32] = hex::decode(t["digest"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let ok = approval::verify(
            t["token"].as_str().unwrap(),
            &digest,
            "release",
            &[("release".into(), pk)],
            t["issued_s"].as_u64().unwrap() + 1,
        )
        .unwrap();
        assert_eq!(ok.token_id, t["nonce"].as_str().unwrap());
    }
    let log = std::fs::read_to_string(dir().join(session)).unwrap();
    let report = verify_log(log.lines().enumerate().map(|(i, l)| (i + 1, l)), &[pk]);
    assert!(report.ok, "{:?}", report.findings);
    for line in log.lines() {
        let body: Value = serde_json::from_str::<Value>(line).unwrap()["body"].clone();
        assert_eq!(body["v"], json!(format));
    }
}
