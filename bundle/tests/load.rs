//! Loading: envelope, hash, signatures, versions, goldens, limits, and hostile bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap, panic or index is a failed test"
)]

mod common;

use bundle::format::{FORMAT_VERSION, MAGIC, Program};
use bundle::keys::{key_id, signing_key_from_seed};
use bundle::{Bundle, Limits, LoadError, Trust, sign};
use common::*;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bundles")
}

/// Wrap a body with a correct header and hash (lets tests reach the body decoder).
fn wrap(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&Sha256::digest(body));
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn body_of(unsigned: &[u8]) -> &[u8] {
    &unsigned[45..]
}

#[test]
fn round_trip_preserves_the_program_and_is_deterministic() {
    let p = rich();
    let a = bundle::encode(&p);
    assert_eq!(a, bundle::encode(&p.clone()));
    let b = Bundle::from_bytes(&a, &Trust::AllowUnsigned).unwrap();
    assert_eq!(b.program(), &p);
    let info = b.info();
    assert_eq!(info.pack, "t");
    assert_eq!(info.version, "1.0.0");
    assert_eq!(info.rules, 7);
    assert_eq!(info.key_id, None);
    assert_eq!(
        info.content_hash.as_slice(),
        Sha256::digest(body_of(&a)).as_slice()
    );
}

#[test]
fn signatures() {
    let sk = signing_key_from_seed([9; 32]);
    let other = signing_key_from_seed([8; 32]);
    let unsigned = bundle::encode(&rich());
    let signed = sign(&unsigned, &sk).unwrap();
    let trust = Trust::Keys(vec![sk.verifying_key()]);
    let b = Bundle::from_bytes(&signed, &trust).unwrap();
    assert_eq!(
        b.info().key_id.as_deref(),
        Some(key_id(&sk.verifying_key()).as_str())
    );
    // unsigned refused when keys are configured
    assert_eq!(
        Bundle::from_bytes(&unsigned, &trust).unwrap_err(),
        LoadError::Unsigned
    );
    // signed by another key
    let foreign = sign(&unsigned, &other).unwrap();
    assert!(matches!(
        Bundle::from_bytes(&foreign, &trust).unwrap_err(),
        LoadError::UnknownKey { key_id } if key_id == bundle::keys::key_id(&other.verifying_key())
    ));
    // a signature that does not verify (flip one signature byte)
    let mut bad = signed.clone();
    let sig_at = 40 + 1 + 1 + key_id(&sk.verifying_key()).len();
    bad[sig_at + 3] ^= 1;
    assert_eq!(
        Bundle::from_bytes(&bad, &trust).unwrap_err(),
        LoadError::BadSignature
    );
    // the signature covers the header: a different reserved field breaks it before anything else
    // re-signing replaces the signature
    let resigned = sign(&foreign, &sk).unwrap();
    assert_eq!(resigned, signed);
    // AllowUnsigned accepts both
    assert!(Bundle::from_bytes(&signed, &Trust::AllowUnsigned).is_ok());
    // altering the body is a hash mismatch, whatever the trust
    let mut altered = signed.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x20;
    assert_eq!(
        Bundle::from_bytes(&altered, &trust).unwrap_err(),
        LoadError::HashMismatch
    );
    // a re-hashed altered body (attacker recomputes the hash) fails the signature
    let mut rehashed = signed.clone();
    rehashed[last] ^= 0x20;
    let body_start = rehashed.len() - body_of(&unsigned).len();
    let h = Sha256::digest(&rehashed[body_start..]);
    rehashed[8..40].copy_from_slice(&h);
    assert_eq!(
        Bundle::from_bytes(&rehashed, &trust).unwrap_err(),
        LoadError::BadSignature
    );
}

#[test]
fn header_errors_are_clear() {
    let good = bundle::encode(&rich());
    assert_eq!(
        Bundle::from_bytes(b"", &Trust::AllowUnsigned).unwrap_err(),
        LoadError::Truncated { what: "header" }
    );
    assert_eq!(
        Bundle::from_bytes(b"PK\x03\x04xxxxxx", &Trust::AllowUnsigned).unwrap_err(),
        LoadError::BadMagic
    );
    let mut future = good.clone();
    future[4..6].copy_from_slice(&6u16.to_le_bytes());
    let e = Bundle::from_bytes(&future, &Trust::AllowUnsigned).unwrap_err();
    assert_eq!(
        e,
        LoadError::UnsupportedVersion {
            found: 6,
            supported: 5
        }
    );
    assert_eq!(
        e.to_string(),
        "bundle format version 6 is not supported (this build reads versions 1 to 5); rebuild the bundle with a matching policyc"
    );
    let mut ancient = good.clone();
    ancient[4..6].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        Bundle::from_bytes(&ancient, &Trust::AllowUnsigned).unwrap_err(),
        LoadError::UnsupportedVersion { found: 0, .. }
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Bundle::from_bytes(&trailing, &Trust::AllowUnsigned).unwrap_err(),
        LoadError::Invalid { .. }
    ));
    let mut body_trailing = body_of(&good).to_vec();
    body_trailing.push(0);
    assert_eq!(
        Bundle::from_bytes(&wrap(&body_trailing), &Trust::AllowUnsigned)
            .unwrap_err()
            .to_string(),
        "the bundle is truncated: it ends inside the tool pins"
    );
    // After a pins section, nothing may follow.
    let mut body_trailing = body_of(&bundle::encode(&rich_v4())).to_vec();
    body_trailing.push(0);
    assert_eq!(
        Bundle::from_bytes(&wrap(&body_trailing), &Trust::AllowUnsigned)
            .unwrap_err()
            .to_string(),
        "the bundle is invalid: trailing bytes after the last tool pin"
    );
    // every strict prefix is refused without panicking
    for n in 0..good.len() {
        assert!(
            Bundle::from_bytes(&good[..n], &Trust::AllowUnsigned).is_err(),
            "prefix {n}"
        );
    }
    // every strict prefix of the body, re-hashed, is refused by the body decoder
    let body = body_of(&good);
    for n in 0..body.len() {
        assert!(
            Bundle::from_bytes(&wrap(&body[..n]), &Trust::AllowUnsigned).is_err(),
            "body prefix {n}"
        );
    }
}

#[test]
fn verifier_rejects_backward_jumps_and_bad_indices() {
    use bundle::format::{Instr, Jump, Pred};
    let mut p = prog();
    p.rules.push(rule(
        "loop",
        vec![
            Instr {
                pred: Pred::Const(true),
                negated: false,
                on_true: Jump::To(1),
                on_false: Jump::Reject,
            },
            Instr {
                pred: Pred::Const(true),
                negated: false,
                on_true: Jump::To(1),
                on_false: Jump::Reject,
            },
        ],
        dec(bundle::verdict::Decision::Allow, "x"),
    ));
    let e = Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the bundle is invalid: rules: instruction 1 jumps to 1, which is not a later instruction"
    );
    let mut p = prog();
    p.rules.push(rule(
        "m",
        when(Pred::Glob(bundle::format::FieldRef::Tool, 7)),
        dec(bundle::verdict::Decision::Allow, "x"),
    ));
    let e = Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).unwrap_err();
    assert!(e.to_string().contains("matcher 7 is out of range"), "{e}");
    let mut p = prog();
    p.rules.push(rule(
        "c",
        when(Pred::InClass(0)),
        dec(bundle::verdict::Decision::Allow, "x"),
    ));
    assert!(Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).is_err());
    // a set that is not sorted would break binary search: refused
    let mut p = prog();
    p.matchers.push(bundle::format::MatcherDef::Set {
        strs: vec!["b".into(), "a".into()],
        nums: vec![],
        bools: vec![],
    });
    assert!(Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).is_err());
    // an empty condition
    let mut p = prog();
    p.rules.push(rule(
        "e",
        vec![],
        dec(bundle::verdict::Decision::Allow, "x"),
    ));
    assert!(Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).is_err());
}

fn trips(limits: Limits, what: &str) {
    let bytes = bundle::encode(&rich());
    assert!(Bundle::from_bytes(&bytes, &Trust::AllowUnsigned).is_ok());
    match Bundle::from_bytes_with_limits(&bytes, &Trust::AllowUnsigned, &limits) {
        Err(LoadError::TooLarge { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected TooLarge({what}), got {other:?}"),
    }
}

#[test]
fn every_load_limit_trips() {
    let d = Limits::default;
    let len = bundle::encode(&rich()).len();
    trips(
        Limits {
            max_bundle_bytes: len - 1,
            ..d()
        },
        "the bundle size in bytes",
    );
    trips(
        Limits {
            max_strings: 3,
            ..d()
        },
        "the number of strings",
    );
    trips(
        Limits {
            max_string_bytes: 4,
            ..d()
        },
        "a string's length in bytes",
    );
    trips(
        Limits {
            max_rules: 5,
            ..d()
        },
        "the number of rules",
    );
    trips(
        Limits {
            max_classes: 1,
            ..d()
        },
        "the number of classes",
    );
    trips(
        Limits {
            max_intents: 0,
            ..d()
        },
        "the number of intents",
    );
    trips(
        Limits {
            max_instructions_per_rule: 1,
            ..d()
        },
        "the number of instructions in one condition",
    );
    trips(
        Limits {
            max_matchers: 3,
            ..d()
        },
        "the number of matchers",
    );
    trips(
        Limits {
            max_matcher_elements: 1,
            ..d()
        },
        "a set's size",
    );
    trips(
        Limits {
            max_regex_bytes: 16,
            ..d()
        },
        "a regex automaton's size in bytes",
    );
    trips(
        Limits {
            max_total_regex_bytes: 16,
            ..d()
        },
        "the total size of regex automata in bytes",
    );
    trips(
        Limits {
            max_path_depth: 1,
            ..d()
        },
        "an argument path's depth",
    );
    trips(
        Limits {
            max_list_items: 2,
            ..d()
        },
        "the number of modifications",
    );
    trips(
        Limits {
            max_tools: 0,
            ..d()
        },
        "the number of tool declarations",
    );
    trips(
        Limits {
            max_tool_args: 1,
            ..d()
        },
        "the number of arguments of one tool",
    );
    let bytes = bundle::encode(&rich_v4());
    let limits = Limits {
        max_tool_pins: 1,
        ..d()
    };
    match Bundle::from_bytes_with_limits(&bytes, &Trust::AllowUnsigned, &limits) {
        Err(LoadError::TooLarge { what, .. }) => assert_eq!(what, "the number of tool pins"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn verifier_rejects_ambiguous_tool_declarations_and_bad_coerced_values() {
    use bundle::format::{ArgDef, ToolDef, VType};
    let tool = |name: &str| ToolDef {
        name: name.into(),
        args: vec![ArgDef {
            path: vec!["a".into()],
            ty: VType::Number,
            coerce: false,
        }],
    };
    // Two declarations of one tool, or out of order, would make the lookup ambiguous.
    for tools in [vec![tool("b"), tool("a")], vec![tool("a"), tool("a")]] {
        let mut p = prog();
        p.tools = tools;
        assert_eq!(
            Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned)
                .unwrap_err()
                .to_string(),
            "the bundle is invalid: tools: the declarations are not sorted by tool name and unique"
        );
    }
    let mut p = prog();
    p.tools = vec![tool("a"), tool("b")];
    assert!(Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).is_ok());
    // A coerced value is a JSON scalar.
    let mut p = prog();
    p.default.decision = bundle::verdict::Decision::Modify;
    p.default.modifications = vec![bundle::verdict::Modification::CoerceArg {
        path: vec![],
        value: serde_json::json!([1]),
    }];
    assert!(
        Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned)
            .unwrap_err()
            .to_string()
            .contains("a coerced value is not a JSON string, number or boolean")
    );
}

fn golden(name: &str) -> (Vec<u8>, ed25519_dalek::VerifyingKey) {
    let dir = golden_dir();
    let bytes = std::fs::read(dir.join(format!("{name}.bundle")))
        .unwrap_or_else(|e| panic!("golden {name} missing ({e}): run with BLESS=1"));
    let pk = bundle::keys::parse_verifying_key(
        &std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap(),
    )
    .unwrap();
    (bytes, pk)
}

/// The version-1 golden was written by the version-1 encoder and is never re-blessed: it must keep
/// loading, decode to the version-1 program, and be evaluated with version-1 semantics.
#[test]
fn v1_golden_keeps_loading_with_v1_semantics() {
    let (golden, pk) = golden("v1-rich");
    let b = Bundle::from_bytes(&golden, &Trust::Keys(vec![pk])).unwrap();
    assert_eq!(b.info().format_version, 1);
    assert_eq!(b.program(), &rich_v1());
    // The same program as a bundle of the current version (2 and later read types the same way).
    let v2 = load(&rich_v1());
    assert_eq!(v2.info().format_version, FORMAT_VERSION);
    // `prod_deploy` (STEP_UP, warn mode) tests `args.env == "production"`. An array is a type
    // error: false in version 1 (the rule is skipped), unknown in version 2 (a rule stricter
    // than ALLOW matches).
    let deploy = call("deploy", serde_json::json!({"env": ["production"]}));
    let s = bundle::session::SessionState::new(1_800_000_000_000);
    let rules = |b: &Bundle| {
        b.evaluate(&deploy, &s, 1_800_000_000_000)
            .matched
            .into_iter()
            .map(|m| m.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(&b), ["default"]);
    assert_eq!(
        rules(&v2),
        ["prod_deploy"],
        "a warn match suppresses the default"
    );
}

/// The version-2 golden was written by the version-2 encoder and is never re-blessed.
#[test]
fn v2_golden_keeps_loading() {
    let (golden, pk) = golden("v2-rich");
    let b = Bundle::from_bytes(&golden, &Trust::Keys(vec![pk])).unwrap();
    assert_eq!(b.info().format_version, 2);
    assert_eq!(b.program(), &rich());
    // The version-3 sections cannot be read as version 2: a version-3 body under a version-2
    // header is refused, never read differently.
    let body = body_of(&bundle::encode(&rich_v3())).to_vec();
    let mut v2 = wrap(&body);
    v2[4..6].copy_from_slice(&2u16.to_le_bytes());
    assert!(Bundle::from_bytes(&v2, &Trust::AllowUnsigned).is_err());
}

/// The version-3 golden was written by the version-3 encoder and is never re-blessed.
#[test]
fn v3_golden_keeps_loading() {
    let (golden, pk) = golden("v3-rich");
    let b = Bundle::from_bytes(&golden, &Trust::Keys(vec![pk])).unwrap();
    assert_eq!(b.info().format_version, 3);
    assert_eq!(b.program(), &rich_v3());
    // The version-2 sections cannot be read as version 1: a version-2 body under a version-1
    // header is refused, never read differently.
    let body = body_of(&bundle::encode(&rich())).to_vec();
    let mut v1 = wrap(&body);
    v1[4..6].copy_from_slice(&1u16.to_le_bytes());
    assert!(Bundle::from_bytes(&v1, &Trust::AllowUnsigned).is_err());
    // What version 4 adds cannot be read as version 3: the `tool.*` fields and the pins
    // section under a version-3 header are refused.
    let body = body_of(&bundle::encode(&rich_v4())).to_vec();
    let mut v3 = wrap(&body);
    v3[4..6].copy_from_slice(&3u16.to_le_bytes());
    let err = Bundle::from_bytes(&v3, &Trust::AllowUnsigned).unwrap_err();
    assert!(err.to_string().contains("format version 4"), "{err}");
    let mut pins_only = rich_v3();
    pins_only.tool_pins = rich_v4().tool_pins;
    let body = body_of(&bundle::encode(&pins_only)).to_vec();
    let mut v3 = wrap(&body);
    v3[4..6].copy_from_slice(&3u16.to_le_bytes());
    let err = Bundle::from_bytes(&v3, &Trust::AllowUnsigned).unwrap_err();
    assert!(err.to_string().contains("trailing bytes"), "{err}");
}

/// The version-4 golden was written by the version-4 encoder and is never re-blessed.
#[test]
fn v4_golden_keeps_loading() {
    let (golden, pk) = golden("v4-rich");
    let b = Bundle::from_bytes(&golden, &Trust::Keys(vec![pk])).unwrap();
    assert_eq!(b.info().format_version, 4);
    assert_eq!(b.program(), &rich_v4());
    assert_eq!(b.tool_pin("fs", "read_file"), Some(&[7u8; 32]));
    assert_eq!(b.tool_pin("fs", "write_file"), None);
    assert_eq!(b.tool_pin("git", "read_file"), None);
    // `tool.changed` is the action's flag.
    let mut a = call("read_file", serde_json::json!({}));
    let s = bundle::session::SessionState::new(1_800_000_000_000);
    let rules = |a: &bundle::action::Action| {
        b.evaluate(a, &s, 1_800_000_000_000)
            .matched
            .into_iter()
            .map(|m| m.rule)
            .collect::<Vec<_>>()
    };
    assert!(!rules(&a).contains(&"changed_tool".to_owned()));
    a.tool_state.changed = true;
    assert!(rules(&a).contains(&"changed_tool".to_owned()));
    // What version 5 adds cannot be read as version 4: an injected credential under a version-4
    // header is refused with a clear error, never read as something else.
    let body = body_of(&bundle::encode(&rich_v5())).to_vec();
    let mut v4 = wrap(&body);
    v4[4..6].copy_from_slice(&4u16.to_le_bytes());
    let err = Bundle::from_bytes(&v4, &Trust::AllowUnsigned).unwrap_err();
    assert!(
        err.to_string()
            .contains("(`inject_credential`) needs bundle format version 5"),
        "{err}"
    );
}

#[test]
fn v5_golden_keeps_loading() {
    let sk = signing_key_from_seed([42; 32]);
    let signed = sign(&bundle::encode(&rich_v5()), &sk).unwrap();
    if std::env::var_os("BLESS").is_some() {
        let dir = golden_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("v5-rich.bundle"), &signed).unwrap();
        std::fs::write(
            dir.join("v5-rich.pub"),
            bundle::keys::format_verifying_key(&sk.verifying_key()) + "\n",
        )
        .unwrap();
    }
    let (golden, pk) = golden("v5-rich");
    let b = Bundle::from_bytes(&golden, &Trust::Keys(vec![pk])).unwrap();
    assert_eq!(b.info().format_version, 5);
    assert_eq!(b.program(), &rich_v5());
    assert!(
        golden == signed,
        "the encoder's output changed: bump FORMAT_VERSION and add a golden (BLESS=1)"
    );
    // The injected credential reaches the verdict by name, after the rule's other rewrites.
    let a = call("create_issue", serde_json::json!({}));
    let s = bundle::session::SessionState::new(1_800_000_000_000);
    let v = b.evaluate(&a, &s, 1_800_000_000_000);
    assert!(
        v.modifications
            .contains(&bundle::verdict::Modification::InjectCredential {
                name: "tracker".into()
            }),
        "{v:?}"
    );
    // a future version of the same bytes fails with a clear version error
    let mut future = golden.clone();
    future[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        Bundle::from_bytes(&future, &Trust::AllowUnsigned).unwrap_err(),
        LoadError::UnsupportedVersion { found, supported: 5 } if found == FORMAT_VERSION + 1
    ));
}

/// The pins section is sorted, unique, and never empty: anything else is refused.
#[test]
fn tool_pins_out_of_order_or_empty_are_refused() {
    let mut p = rich_v4();
    p.tool_pins.reverse();
    let err = Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).unwrap_err();
    assert!(err.to_string().contains("not sorted"), "{err}");
    let mut p = rich_v4();
    let dup = p.tool_pins[0].clone();
    p.tool_pins.insert(0, dup);
    let err = Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).unwrap_err();
    assert!(err.to_string().contains("not sorted"), "{err}");
    // An empty section written by hand (the encoder never does): a count of zero at the end.
    let mut body = body_of(&bundle::encode(&rich_v3())).to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    let err = Bundle::from_bytes(&wrap(&body), &Trust::AllowUnsigned).unwrap_err();
    assert!(err.to_string().contains("empty section"), "{err}");
}

#[test]
fn disassembly_shows_header_rules_and_code() {
    let b = load(&rich());
    let text = bundle::disasm::disassemble(&b);
    assert!(
        text.starts_with("bundle format v5\npack \"t\" version \"1.0.0\""),
        "{text}"
    );
    assert!(text.contains("mcp_protocol list v1"), "{text}");
    assert!(text.contains("(negated)"), "{text}");
    assert!(
        text.contains("tools (1):\n  \"query_db\"\n     args[\"limit\"]: number coerce\n"),
        "{text}"
    );
    assert!(
        text.contains("r0 bounded_push mode Enforce -> ALLOW \"pushing a deps branch\""),
        "{text}"
    );
    assert!(text.contains("CMP tool == \"git_push\""), "{text}");
    assert!(text.contains("GLOB args[\"branch\"] m1"), "{text}");
    assert!(text.contains("regex \"sk-[a-z]+\""), "{text}");
}

fn actions() -> Vec<bundle::action::Action> {
    use serde_json::json;
    vec![
        call("git_push", json!({"branch": "deps/x"})),
        call("send_email", json!({"body": "sk-abc", "limit": [1]})),
        http("POST", "exfil.example", 10),
    ]
}

fn smoke(bytes: &[u8]) {
    if let Ok(b) = Bundle::from_bytes(bytes, &Trust::AllowUnsigned) {
        let s = bundle::session::SessionState::default();
        for a in actions() {
            let _ = b.evaluate(&a, &s, 1_800_000_000_000);
        }
        let _ = bundle::disasm::disassemble(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        smoke(&bytes);
        smoke(&wrap(&bytes));
    }

    #[test]
    fn mutated_golden_bodies_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let unsigned = bundle::encode(&rich());
        let mut body = body_of(&unsigned).to_vec();
        for (at, v) in edits {
            let i = at.index(body.len());
            body[i] = v;
        }
        if truncate {
            body.truncate(cut.index(body.len()));
        }
        smoke(&wrap(&body));
    }
}

#[allow(dead_code, reason = "a compile-time check, never called")]
fn _program_is_send_sync(b: Bundle) -> impl Send + Sync {
    let _: &Program = b.program();
    b
}

#[test]
fn more_classes_than_the_vm_class_set_holds_is_refused_whatever_the_limits() {
    let mut p = prog();
    p.classes = (0..1025)
        .map(|i| bundle::format::ClassDef {
            name: format!("c{i}"),
            risk: bundle::verdict::RiskTier::Low,
            readonly: false,
            code: when(bundle::format::Pred::Const(true)),
        })
        .collect();
    let limits = Limits {
        max_classes: 5000,
        ..Limits::default()
    };
    let e = Bundle::from_bytes_with_limits(&bundle::encode(&p), &Trust::AllowUnsigned, &limits)
        .unwrap_err();
    assert_eq!(
        e,
        LoadError::TooLarge {
            what: "the number of classes",
            found: 1025,
            max: 1024
        }
    );
    p.classes.truncate(1024);
    let b = Bundle::from_bytes_with_limits(&bundle::encode(&p), &Trust::AllowUnsigned, &limits)
        .unwrap();
    let v = b.evaluate(
        &call("x", serde_json::json!({})),
        &bundle::session::SessionState::new(0),
        0,
    );
    assert_eq!(v.classes.len(), 1024, "the last class is still seen");
}
