use super::*;
use crate::action::{Principal, Target};
use crate::evidence::keys::signing_key_from_seed;
use crate::verdict::RuleMatch;
use serde_json::json;

fn action() -> Action {
    Action {
        kind: Kind::Mcp,
        operation: "tools/call".into(),
        tool: Some("send_email".into()),
        arguments: json!({"to": "a@example.com", "body": "token sk-live-SECRET123", "n": 1.5}),
        target: Target {
            host: "workbench".into(),
            port: 8080,
            path: "/mcp".into(),
            query: "api_key=QUERYSECRET".into(),
            scheme: "http".into(),
            server: "workbench".into(),
        },
        identity: Identity {
            agent: Principal {
                id: Some("agent-7".into()),
                auth: crate::action::AuthMethod::Jwt,
            },
            ..Identity::default()
        },
        headers: vec![("authorization".into(), "Bearer HEADERSECRET".into())].into(),
        session_id: Some("s1".into()),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        size: 321,
        ..Action::default()
    }
}

fn verdict(d: Decision) -> Verdict {
    Verdict {
        decision: d,
        would_be: d,
        matched: vec![RuleMatch {
            rule: "r1".into(),
            decision: d,
            mode: Mode::Enforce,
            reason: "because".into(),
        }],
        deciding_rule: "r1".into(),
        reason: "because".into(),
        effects: vec![Effect::Taint("secret".into()), Effect::Kill],
        modifications: vec![Modification::RedactArg {
            path: vec![PathSegment::Key("body".into()), PathSegment::Index(2)],
        }],
        intent: Some("triage".into()),
        ..Verdict::default()
    }
}

fn signer() -> Signer {
    Signer::new(signing_key_from_seed([1; 32]))
}

#[test]
fn seal_chains_and_counts() {
    let s = signer();
    let mut chain = ChainHead::default();
    let p = SignPolicy::default();
    let r1 = seal(
        ReceiptBody::for_action("s1", &action(), &verdict(Decision::Allow)),
        &mut chain,
        &s,
        &p,
        1000,
        false,
    );
    assert_eq!(r1.body.seq, 1);
    assert_eq!(r1.body.prev, "0".repeat(64));
    assert_eq!(r1.body.ts_ms, 1000);
    assert!(r1.sig.is_none());
    assert!(r1.hash_matches());
    let r2 = seal(
        ReceiptBody::for_action("s1", &action(), &verdict(Decision::Allow)),
        &mut chain,
        &s,
        &p,
        1001,
        false,
    );
    assert_eq!(r2.body.seq, 2);
    assert_eq!(r2.body.prev, hex::encode(r1.hash));
    assert_eq!(
        chain,
        ChainHead {
            seq: 2,
            prev: r2.hash,
            unsigned: 2,
            oldest_unsigned_ms: 1000
        }
    );
}

#[test]
fn seal_line_is_the_receipt_json_and_advances_the_chain_like_seal() {
    let s = signer();
    let p = SignPolicy::default();
    let (mut a, mut b) = (ChainHead::default(), ChainHead::default());
    for (i, d) in [Decision::Allow, Decision::Deny, Decision::Allow]
        .into_iter()
        .enumerate()
    {
        let now = 1000 + i as u64;
        let body = ReceiptBody::for_action("s1", &action(), &verdict(d));
        let plain = seal(body.clone(), &mut a, &s, &p, now, false);
        let (r, line) = seal_line(body, &mut b, &s, &p, now, false);
        assert_eq!(r, plain);
        assert_eq!(line, plain.to_json());
        assert_eq!(Receipt::from_json(&line).unwrap(), plain);
        assert_eq!(a, b);
    }
}

#[test]
fn non_allow_is_always_signed_and_resets_the_count() {
    let s = signer();
    let mut chain = ChainHead::default();
    let p = SignPolicy::default();
    for d in [
        Decision::Deny,
        Decision::StepUp,
        Decision::Defer,
        Decision::Modify,
    ] {
        let r = seal(
            ReceiptBody::for_action("s1", &action(), &verdict(d)),
            &mut chain,
            &s,
            &p,
            5,
            false,
        );
        assert!(r.signature_valid(&s.verifying_key()), "{d:?}");
        assert_eq!(chain.unsigned, 0);
    }
    // An audit-mode match: allowed, but it would have been denied.
    let mut v = verdict(Decision::Allow);
    v.would_be = Decision::Deny;
    let r = seal(
        ReceiptBody::for_action("s1", &action(), &v),
        &mut chain,
        &s,
        &p,
        5,
        false,
    );
    assert!(r.sig.is_some());
}

#[test]
fn allow_is_signed_every_checkpoint_every_receipts() {
    let s = signer();
    let mut chain = ChainHead::default();
    let p = SignPolicy {
        checkpoint_every: 4,
        max_unsigned_ms: u64::MAX,
    };
    let signed: Vec<bool> = (0..9)
        .map(|i| {
            seal(
                ReceiptBody::for_action("s", &action(), &verdict(Decision::Allow)),
                &mut chain,
                &s,
                &p,
                i,
                false,
            )
            .sig
            .is_some()
        })
        .collect();
    assert_eq!(
        signed,
        [false, false, false, true, false, false, false, true, false]
    );
}

#[test]
fn allow_is_signed_when_the_oldest_unsigned_is_too_old() {
    let s = signer();
    let mut chain = ChainHead::default();
    let p = SignPolicy {
        checkpoint_every: 1000,
        max_unsigned_ms: 5000,
    };
    let body = || ReceiptBody::for_action("s", &action(), &verdict(Decision::Allow));
    assert!(
        seal(body(), &mut chain, &s, &p, 10_000, false)
            .sig
            .is_none()
    );
    assert!(
        seal(body(), &mut chain, &s, &p, 14_999, false)
            .sig
            .is_none()
    );
    assert!(
        seal(body(), &mut chain, &s, &p, 15_000, false)
            .sig
            .is_some()
    );
    assert_eq!(chain.unsigned, 0);
    assert!(
        seal(body(), &mut chain, &s, &p, 40_000, false)
            .sig
            .is_none()
    );
    assert_eq!(chain.oldest_unsigned_ms, 40_000);
    assert!(seal(body(), &mut chain, &s, &p, 40_001, true).sig.is_some());
}

#[test]
fn checkpoint_and_session_end_are_signed_events() {
    let s = signer();
    let mut chain = ChainHead::default();
    let p = SignPolicy::default();
    seal(
        ReceiptBody::for_action("s", &action(), &verdict(Decision::Allow)),
        &mut chain,
        &s,
        &p,
        1,
        false,
    );
    let c = checkpoint("s", &mut chain, &s, 9);
    assert_eq!(c.body.event, EventKind::Checkpoint);
    assert_eq!(c.body.seq, 2);
    assert!(c.signature_valid(&s.verifying_key()));
    assert!(c.body.action.is_none() && c.body.decision.is_none());
    let e = session_end("s", &mut chain, &s, 10);
    assert_eq!((e.body.event, e.body.seq), (EventKind::SessionEnd, 3));
    assert!(e.signature_valid(&s.verifying_key()));
}

#[test]
fn receipts_never_carry_argument_values_headers_or_query() {
    let mut chain = ChainHead::default();
    let r = seal(
        ReceiptBody::for_action("s1", &action(), &verdict(Decision::Deny)),
        &mut chain,
        &signer(),
        &SignPolicy::default(),
        1,
        false,
    );
    let text = r.to_json();
    for secret in ["SECRET123", "a@example.com", "HEADERSECRET", "QUERYSECRET"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let a = r.body.action.as_ref().unwrap();
    assert_eq!(a.arg_keys, ["body", "n", "to"]);
    assert_eq!(a.digest, hex::encode(action_digest(&action())));
    assert_eq!(r.body.effects, ["taint:secret", "kill"]);
    assert_eq!(r.body.modifications, ["redact_arg /body/2"]);
    assert_eq!(r.body.matched[0].rule, "r1");
    assert_eq!(r.body.intent.as_deref(), Some("triage"));
}

#[test]
fn json_and_header_round_trip() {
    let s = signer();
    let mut chain = ChainHead::default();
    let mut body = ReceiptBody::for_action("s1", &action(), &verdict(Decision::StepUp));
    body.bundle = Some(BundleRef {
        pack: "demo".into(),
        version: "1.0.0".into(),
        hash: "ab".repeat(32),
    });
    body.drift_milli = Some(drift_milli(0.25));
    body.approval = Some(ApprovalRef {
        token_id: "00".repeat(16),
        group: "release".into(),
        key_id: "ed25519:00".into(),
    });
    let r = seal(body, &mut chain, &s, &SignPolicy::default(), 77, false);
    let line = r.to_json();
    assert!(!line.contains('\n') && !line.contains(": "));
    assert!(
        line.starts_with(r#"{"body":{"action":{"arg_keys":"#),
        "{line}"
    );
    let back = Receipt::from_json(&line).unwrap();
    assert_eq!(back, r);
    assert!(back.hash_matches() && back.signature_valid(&s.verifying_key()));
    let h = r.to_header();
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(Receipt::from_json(&h).unwrap(), r);
    // Unsigned form.
    let u = seal(
        ReceiptBody::for_action("s1", &action(), &verdict(Decision::Allow)),
        &mut chain,
        &s,
        &SignPolicy::default(),
        78,
        false,
    );
    assert!(u.to_json().ends_with(r#","sig":null}"#));
    assert_eq!(Receipt::from_json(&u.to_json()).unwrap(), u);
}

#[test]
fn from_json_refuses_bad_shapes() {
    let mut chain = ChainHead::default();
    let r = seal(
        ReceiptBody::for_action("s1", &action(), &verdict(Decision::Deny)),
        &mut chain,
        &signer(),
        &SignPolicy::default(),
        1,
        false,
    );
    let line = r.to_json();
    assert!(Receipt::from_json("").is_err());
    assert!(Receipt::from_json("{}").is_err());
    assert!(
        Receipt::from_json(&line.replace(r#""v":2"#, r#""v":3"#)).unwrap_err()
            == ReceiptError::Version(3)
    );
    assert!(Receipt::from_json(&line.replace(r#""size":321"#, r#""size":321.5"#)).is_err());
    assert!(Receipt::from_json(&line.replace(r#""seq":1"#, r#""seq":1,"extra":0"#)).is_err());
    assert!(Receipt::from_json(&line.replace(r#""hash":""#, r#""hash":"zz"#)).is_err());
    assert_eq!(
        Receipt::from_json(&" ".repeat(MAX_RECEIPT_BYTES + 1)),
        Err(ReceiptError::TooLong)
    );
    // Changing a field keeps it readable, but the hash no longer matches.
    let altered =
        Receipt::from_json(&line.replace(r#""decision":"DENY""#, r#""decision":"ALLOW""#)).unwrap();
    assert!(!altered.hash_matches());
}

/// A version 1 line (every member present) as the filter wrote it before version 2.
fn v1_line(body: &ReceiptBody, prev: &str) -> String {
    let mut b = body.clone();
    b.v = 1;
    b.seq = 1;
    b.prev = prev.to_owned();
    b.ts_ms = 5;
    let canonical = b.canonical_json().unwrap();
    let hash = hash_canonical(&canonical);
    let line = Receipt {
        body: b,
        hash,
        sig: None,
    }
    .to_json();
    assert!(line.contains(&canonical));
    line
}

#[test]
fn version_2_bodies_have_no_empty_members_and_one_form() {
    let mut chain = ChainHead::default();
    let mut v = verdict(Decision::Allow);
    v.effects.clear();
    v.modifications.clear();
    v.intent = None;
    let mut a = action();
    a.trace_id = None;
    let r = seal(
        ReceiptBody::for_action("s1", &a, &v),
        &mut chain,
        &signer(),
        &SignPolicy::default(),
        1,
        false,
    );
    let line = r.to_json();
    let body = r.body.canonical_json().unwrap();
    assert!(body.contains(r#""v":2"#), "{body}");
    // Nothing empty is written: no null, no [] (the unsigned line's `"sig":null` is outside).
    assert!(!body.contains("null") && !body.contains("[]"), "{body}");
    for absent in [
        "\"approval\"",
        "\"trace\"",
        "\"effects\"",
        "\"intent\"",
        "\"warnings\"",
        "\"prompt\"",
    ] {
        assert!(!body.contains(absent), "{absent} in {body}");
    }
    assert_eq!(Receipt::from_json(&line).unwrap(), r);
    // The same receipt with an empty member spelled out is another form: refused, wherever it is.
    for (from, to) in [
        (
            r#""decision":"ALLOW""#,
            r#""approval":null,"decision":"ALLOW""#,
        ),
        (r#""event":"action""#, r#""effects":[],"event":"action""#),
        (r#""auth":"none"}"#, r#""auth":"none","id":null}"#),
        (r#""kind":"mcp""#, r#""data_classes":[],"kind":"mcp""#),
        (r#""seq":1"#, r#""seq":1,"warnings":[]"#),
    ] {
        let other = line.replacen(from, to, 1);
        assert_ne!(other, line, "{from}");
        assert!(
            matches!(Receipt::from_json(&other), Err(ReceiptError::Malformed(m)) if m.contains("empty member")),
            "{to} was read"
        );
    }
    // Unknown members are refused as in version 1.
    assert!(Receipt::from_json(&line.replace(r#""seq":1"#, r#""seq":1,"zzz":1"#)).is_err());
}

#[test]
fn version_1_bodies_still_read_and_hash_by_their_own_rules() {
    let body = ReceiptBody::for_action("s1", &action(), &verdict(Decision::Deny));
    let line = v1_line(&body, &"0".repeat(64));
    // Version 1 writes every member, empty ones as null / [].
    for member in [
        r#""approval":null"#,
        r#""bundle":null"#,
        r#""prompt":null"#,
        r#""warnings":[]"#,
        r#""data_classes":[]"#,
        r#""auth":"none","id":null"#,
    ] {
        assert!(line.contains(member), "{member} not in {line}");
    }
    let r = Receipt::from_json(&line).unwrap();
    assert_eq!(r.body.v, 1);
    assert!(r.hash_matches());
    assert_eq!(
        r.to_json(),
        line,
        "a version 1 receipt re-serializes to its own bytes"
    );
    let report = verify_log([(1, line.as_str())].into_iter(), &[]);
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.kind != FindingKind::UnsignedTail),
        "{:?}",
        report.findings
    );
    // A chain that spans the upgrade (a plugin reload keeps the chain head): a version 2
    // receipt after a version 1 one verifies, each by its own rules.
    let s = signer();
    let mut chain = ChainHead {
        seq: 1,
        prev: r.hash,
        unsigned: 1,
        oldest_unsigned_ms: 5,
    };
    let next = seal(
        ReceiptBody::for_action("s1", &action(), &verdict(Decision::Deny)),
        &mut chain,
        &s,
        &SignPolicy::default(),
        9,
        true,
    );
    assert_eq!(next.body.v, 2);
    let log = [line.clone(), next.to_json()];
    let report = verify_log(
        log.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &[s.verifying_key()],
    );
    assert!(report.ok, "{:?}", report.findings);
    // A version 1 body without one of its always-present members is not version 1.
    for member in [
        r#""approval":null,"#,
        r#""warnings":[],"#,
        r#""prompt":null,"#,
    ] {
        let other = line.replacen(member, "", 1);
        assert_ne!(other, line, "{member}");
        assert!(
            matches!(Receipt::from_json(&other), Err(ReceiptError::Malformed(m)) if m.contains("version 1")),
            "{member} missing was read"
        );
    }
}

#[test]
fn digest_binds_what_is_acted_on_not_per_request_noise() {
    let a = action();
    let d = action_digest(&a);
    let mut retry = a.clone();
    retry.trace_id = Some("ffff".into());
    retry.headers = [&retry.headers[..], &[("x-request-id".into(), "123".into())]]
        .concat()
        .into();
    retry.size = 330;
    retry.declared_intent = Some("x".into());
    assert_eq!(
        action_digest(&retry),
        d,
        "an identical retry must carry the same digest"
    );
    let mut changes: Vec<Action> = Vec::new();
    let mut x = a.clone();
    x.arguments["to"] = json!("evil@example.com");
    changes.push(x);
    let mut x = a.clone();
    x.tool = Some("deploy".into());
    changes.push(x);
    let mut x = a.clone();
    x.target.query = "api_key=OTHER".into();
    changes.push(x);
    let mut x = a.clone();
    x.session_id = Some("s2".into());
    changes.push(x);
    let mut x = a.clone();
    x.identity.human.id = Some("bob".into());
    changes.push(x);
    for c in changes {
        assert_ne!(action_digest(&c), d);
    }
    // For HTTP the size is bound (the body may not be inspected).
    let mut h = a.clone();
    h.kind = Kind::Http;
    let mut h2 = h.clone();
    h2.size += 1;
    assert_ne!(action_digest(&h), action_digest(&h2));
}

#[test]
fn drift_is_integer_millis() {
    assert_eq!(drift_milli(0.0), 0);
    assert_eq!(drift_milli(0.1234), 123);
    assert_eq!(drift_milli(-0.5), -500);
    assert_eq!(drift_milli(f32::NAN), 0);
    assert_eq!(drift_milli(f32::INFINITY), i64::MAX);
}

#[test]
fn signer_debug_hides_the_key() {
    let s = signer();
    let dbg = format!("{s:?}");
    assert!(dbg.contains(s.key_id()));
    assert!(!dbg.contains(&format!("{:?}", signing_key_from_seed([1; 32]).to_bytes())));
}

#[test]
fn argument_names_are_bounded() {
    let mut a = action();
    let mut m = serde_json::Map::new();
    for i in 0..40 {
        m.insert(format!("k{i:02}"), json!(i));
    }
    m.insert("é".repeat(40), json!(0));
    a.arguments = Value::Object(m);
    let r = ReceiptAction::from_action(&a);
    assert_eq!(r.arg_keys.len(), MAX_ARG_KEYS + 1);
    assert_eq!(r.arg_keys.last().unwrap(), "+9 more");
    assert_eq!(r.arg_keys[0], "k00");
    let mut b = action();
    b.arguments = json!({ "é".repeat(40): 1 });
    let long = &ReceiptAction::from_action(&b).arg_keys[0];
    assert_eq!(long, &format!("{}…", "é".repeat(32)));
}

/// The hand-written canonical form of `action_digest` equals the generic canonicalization of the
/// same object (sorted keys at every level), for MCP and HTTP actions and awkward strings.
#[test]
fn digest_matches_generic_canonical_form() {
    let generic = |a: &Action, version: u32| {
        let p = |p: &Principal| json!({"id": p.id, "auth": p.auth.as_str()});
        let t = &a.target;
        let canon = |v: &Value| {
            crate::evidence::canonical::to_canonical_with(
                v,
                crate::evidence::canonical::Numbers::AllowFloats,
            )
            .unwrap()
        };
        let args_sha = hex::encode(Sha256::digest(canon(&a.arguments).as_bytes()));
        let mut v = json!({
            "arguments": a.arguments,
            "identity": {"agent": p(&a.identity.agent), "human": p(&a.identity.human),
                         "workload": p(&a.identity.workload)},
            "kind": a.kind.as_str(), "operation": a.operation, "prompt": a.prompt,
            "resource": a.resource, "session_id": a.session_id,
            "target": {"host": t.host, "port": t.port, "path": t.path, "query": t.query,
                       "scheme": t.scheme, "server": t.server},
            "tool": a.tool,
        });
        if a.kind == Kind::Http {
            v["size"] = json!(a.size);
        }
        if version == 2 {
            let o = v.as_object_mut().unwrap();
            o.remove("arguments");
            o.insert("arguments_sha256".into(), json!(args_sha));
            o.insert("v".into(), json!(2));
        }
        let d: [u8; 32] = Sha256::digest(canon(&v).as_bytes()).into();
        d
    };
    let mut http = action();
    http.kind = Kind::Http;
    http.operation = "POST".into();
    http.tool = None;
    http.size = 4096;
    http.target.path = "/a\"b\\c\u{1}é".into();
    http.identity.workload = Principal {
        id: Some("spiffe://x/\u{2028}".into()),
        auth: crate::action::AuthMethod::Mtls,
    };
    let mut nested = action();
    nested.arguments = json!({"z": [1, {"b": null, "a": -2}], "A": "\t", "m": {"y": 1e300}});
    nested.resource = Some("file:///r".into());
    for a in [action(), http, nested, Action::default()] {
        assert_eq!(action_digest(&a), generic(&a, 2), "{a:?}");
        assert_eq!(action_digest_v1(&a), generic(&a, 1), "{a:?}");
        assert_ne!(action_digest(&a), action_digest_v1(&a));
        let mut keyless = a.clone();
        keyless.session_id = None;
        assert_eq!(action_digest_in(&a, None), action_digest(&keyless));
    }
}

/// Version 2 names the arguments by the SHA-256 of their received text: the canonical text gives
/// the digest of an action built without text; any other spelling of the same value gives
/// another digest (a digest binds what was sent, it is not an equivalence).
#[test]
fn digest_names_the_received_argument_text() {
    let built = action();
    let canonical = crate::evidence::canonical::to_canonical_with(
        &built.arguments,
        crate::evidence::canonical::Numbers::AllowFloats,
    )
    .unwrap();
    let with_text = |text: &str| {
        let mut a = action();
        a.arguments_sha256 = Some(Sha256::digest(text.as_bytes()).into());
        a
    };
    assert_eq!(action_digest(&with_text(&canonical)), action_digest(&built));
    assert_eq!(
        hex::encode(arguments_sha256(&with_text(&canonical))),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let spaced = canonical.replace(':', ": ");
    assert_ne!(action_digest(&with_text(&spaced)), action_digest(&built));
    // Replacing the arguments forgets the received text.
    let mut a = with_text("{\"x\":1}");
    a.set_arguments(built.arguments.clone());
    assert_eq!(action_digest(&a), action_digest(&built));
}

#[test]
fn hash_hex_is_lowercase_hex() {
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::try_from(i * 8 + 3).unwrap();
    }
    assert_eq!(hash_hex(&h), hex::encode(h));
    assert_eq!(hash_hex(&[0xab; 32]), "ab".repeat(32));
}

#[test]
fn null_arguments_hash() {
    // The constant an action without arguments is named by is the hash of their canonical text.
    let expected: [u8; 32] = Sha256::digest(b"null").into();
    assert_eq!(NULL_SHA256, expected);
    let action = Action::default();
    assert!(action.arguments.is_null() && action.arguments_sha256.is_none());
    assert_eq!(arguments_sha256(&action), expected);
}

/// A body with every member set, strings that need escapes included.
fn full_body() -> ReceiptBody {
    let mut body = ReceiptBody::for_action("s\u{1}\"é\n", &action(), &verdict(Decision::StepUp));
    body.seq = 7;
    body.prev = "cd".repeat(32);
    body.ts_ms = u64::MAX;
    body.bundle = Some(BundleRef {
        pack: "p\\".into(),
        version: "v".into(),
        hash: "00".repeat(32),
    });
    body.approval = Some(ApprovalRef {
        token_id: "t".into(),
        group: "g\u{1f}".into(),
        key_id: "k".into(),
    });
    body.credentials = Some(vec![CredentialRecord {
        audience: "https://api.example/".into(),
        cached: true,
        id: "jti:1".into(),
        name: "gh".into(),
        scope: "repo read".into(),
    }]);
    body.drift_milli = Some(i64::MIN);
    body.intent_source = Some("grant".into());
    body.warnings = vec!["w\t\u{7f}/".into(), String::new()];
    body.layers = Some(vec![crate::receipt::LayerRecord {
        assigned: "agent:spiffe://x/*".into(),
        decision: Decision::Deny,
        hash: "ab".repeat(32),
        mode: crate::verdict::Mode::Audit,
        pack: "team\"é".into(),
        rule: "r".into(),
        version: "1".into(),
        winner: false,
    }]);
    if let Some(a) = body.action.as_mut() {
        a.prompt = Some("pr".into());
        a.resource = Some("file:///x".into());
        a.data_classes = vec!["pii".into()];
        a.secrets = true;
    }
    if let Some(i) = body.identity.as_mut() {
        i.human.id = Some("ann".into());
    }
    body
}

#[test]
fn hand_writer_matches_generic_canonical_form() {
    let same = |body: &ReceiptBody, what: &str| {
        assert_eq!(
            body.canonical_json().unwrap(),
            body.canonical_json_generic().unwrap(),
            "{what}"
        );
    };
    let full = full_body();
    same(&full, "every member set");
    let sealed = seal(
        full.clone(),
        &mut ChainHead::default(),
        &signer(),
        &SignPolicy::default(),
        1,
        false,
    );
    same(&sealed.body, "every member set, sealed");
    same(&ReceiptBody::event(EventKind::Release, ""), "no member set");
    // Lists that are present but empty are left out, as absent ones are.
    let mut empty_lists = ReceiptBody::event(EventKind::Credential, "s");
    empty_lists.credentials = Some(Vec::new());
    empty_lists.layers = Some(Vec::new());
    empty_lists.action = Some(ReceiptAction::default());
    empty_lists.identity = Some(ReceiptIdentity::default());
    same(&empty_lists, "empty lists and an empty action");
    // Each optional member alone, on top of the members every body has.
    let Value::Object(members) = serde_json::to_value(&full).unwrap() else {
        panic!("a body is an object");
    };
    let required = ["event", "prev", "seq", "session", "ts_ms", "v"];
    for (name, value) in members
        .iter()
        .filter(|(k, _)| !required.contains(&k.as_str()))
    {
        let mut one: serde_json::Map<String, Value> = required
            .iter()
            .map(|k| ((*k).to_owned(), members[*k].clone()))
            .collect();
        one.insert(name.clone(), value.clone());
        let body: ReceiptBody = serde_json::from_value(Value::Object(one)).unwrap();
        same(&body, name);
    }
}

#[test]
fn receipt_lines_are_the_canonical_form_of_the_whole_receipt() {
    let s = signer();
    let mut chain = ChainHead::default();
    for (body, force) in [(full_body(), true), (full_body(), false)] {
        let r = seal(body, &mut chain, &s, &SignPolicy::default(), 1, force);
        let body: Value = serde_json::from_str(&r.body.canonical_json().unwrap()).unwrap();
        let sig = match &r.sig {
            Some(sig) => json!({"kid": sig.key_id, "sig": URL_SAFE_NO_PAD.encode(sig.bytes)}),
            None => Value::Null,
        };
        let whole = json!({"body": body, "hash": hash_hex(&r.hash), "sig": sig});
        assert_eq!(r.to_json(), canonical::to_canonical(&whole).unwrap());
    }
}
