//! MODIFY rewrites: what the upstream receives after `apply_modifications`, and what the receipt
//! says changed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use bundle::verdict::{Modification, PathSegment};
use filter_core::normalize::{
    NormalizeConfig, RequestHead, apply_http_modifications, apply_modifications, normalize_mcp,
};
use serde_json::{Value, json};

fn key(k: &str) -> PathSegment {
    PathSegment::Key(k.to_owned())
}

fn redact(path: &[&str]) -> Modification {
    Modification::RedactArg {
        path: path.iter().map(|k| key(k)).collect(),
    }
}

fn head() -> RequestHead {
    RequestHead {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "workbench.local".into(),
        path: "/mcp".into(),
        headers: vec![],
    }
}

const QUERY: &str = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"query_db","arguments":{"sql":"select * from payroll","limit":5000,"opts":{"token":"sk-live-abcdefghijklmnopqrstuvwx","tags":["a","ghp_abcdefghijklmnopqrstuvwxyz0123456789"]},"note":"keep"},"_meta":{"progressToken":"sk-live-abcdefghijklmnopqrstuvwx"}}}"#;

fn body_of(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn redact_drop_clamp_and_report() {
    let mods = vec![
        redact(&["sql"]),
        Modification::DropArg {
            path: vec![key("note")],
        },
        Modification::ClampArg {
            path: vec![key("limit")],
            min: 1.0,
            max: 100.0,
        },
        Modification::DropArg {
            path: vec![key("opts"), key("tags"), PathSegment::Index(0)],
        },
        Modification::DropArg {
            path: vec![key("absent")],
        },
    ];
    let (out, changes) = apply_modifications(QUERY.as_bytes(), 0, &mods).unwrap();
    assert_eq!(
        changes,
        vec![
            "redacted arguments.sql",
            "dropped arguments.note",
            "clamped arguments.limit from 5000 to 100",
            "dropped arguments.opts.tags[0]",
        ]
    );
    let v = body_of(&out);
    assert_eq!(
        v["params"]["arguments"],
        json!({"sql": "[REDACTED]", "limit": 100, "opts": {"token": "sk-live-abcdefghijklmnopqrstuvwx", "tags": ["ghp_abcdefghijklmnopqrstuvwxyz0123456789"]}})
    );
    // Everything outside the arguments is untouched, member order kept, compact output.
    assert_eq!(v["id"], 4);
    assert_eq!(v["params"]["name"], "query_db");
    assert!(out.starts_with(br#"{"jsonrpc":"2.0","id":4,"method":"tools/call""#));
    assert!(!out.contains(&b' '), "compact serialization");
    // The rewritten body normalizes to the rewritten action.
    let n = normalize_mcp(&head(), &out, &NormalizeConfig::default()).unwrap();
    assert_eq!(n.messages[0].action.tool.as_deref(), Some("query_db"));
    assert_eq!(n.messages[0].action.arguments["limit"], 100);
}

#[test]
fn redact_secrets_covers_the_arguments_only() {
    let (out, changes) =
        apply_modifications(QUERY.as_bytes(), 0, &[Modification::RedactSecrets]).unwrap();
    assert_eq!(
        changes,
        vec![
            "redacted secret at arguments.opts.token",
            "redacted secret at arguments.opts.tags[1]",
        ]
    );
    let v = body_of(&out);
    assert_eq!(v["params"]["arguments"]["opts"]["token"], "[REDACTED]");
    assert_eq!(v["params"]["arguments"]["opts"]["tags"][1], "[REDACTED]");
    assert_eq!(
        v["params"]["_meta"]["progressToken"],
        "sk-live-abcdefghijklmnopqrstuvwx"
    );
    // Risk flags cover everything the message carries: the secret left in `_meta` still counts.
    let n = normalize_mcp(&head(), &out, &NormalizeConfig::default()).unwrap();
    assert!(n.messages[0].action.risk.secrets);
    let mut v = body_of(&out);
    v["params"]["_meta"]["progressToken"] = serde_json::json!("p1");
    let clean = serde_json::to_vec(&v).unwrap();
    let n = normalize_mcp(&head(), &clean, &NormalizeConfig::default()).unwrap();
    assert!(!n.messages[0].action.risk.secrets);
}

#[test]
fn nothing_to_change_returns_the_original_bytes() {
    let spaced = r#"{ "jsonrpc" : "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "arguments": {"path": "/repo/a", "n": 1E2}} }"#;
    let mods = vec![
        redact(&["missing"]),
        Modification::ClampArg {
            path: vec![key("n")],
            min: 0.0,
            max: 1000.0,
        },
        Modification::StripHeader {
            name: "authorization".into(),
        },
        Modification::SetHeader {
            name: "x-a".into(),
            value: "b".into(),
        },
        Modification::RemoveTools {
            patterns: vec!["*".into()],
        },
        Modification::RedactArg { path: vec![] },
    ];
    let (out, changes) = apply_modifications(spaced.as_bytes(), 0, &mods).unwrap();
    assert_eq!(out, spaced.as_bytes());
    assert!(changes.is_empty());
}

#[test]
fn clamp_details() {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","arguments":{"a":-7,"b":"9000","c":2.75,"d":true,"e":[500]}}}"#;
    let clamp = |k: &str| Modification::ClampArg {
        path: vec![key(k)],
        min: 0.0,
        max: 10.5,
    };
    let mods = vec![
        clamp("a"),
        clamp("b"),
        clamp("c"),
        clamp("d"),
        Modification::ClampArg {
            path: vec![key("e"), PathSegment::Index(0)],
            min: 0.0,
            max: 10.0,
        },
    ];
    let (out, changes) = apply_modifications(body.as_bytes(), 0, &mods).unwrap();
    assert_eq!(
        changes,
        vec![
            "clamped arguments.a from -7 to 0",
            "clamped arguments.b from 9000 to 10.5",
            "clamped arguments.e[0] from 500 to 10",
        ]
    );
    let v = body_of(&out);
    assert_eq!(
        v["params"]["arguments"],
        json!({"a": 0, "b": "10.5", "c": 2.75, "d": true, "e": [10]})
    );
}

#[test]
fn batches_rewrite_only_the_named_message() {
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":"1"}}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b","arguments":{"x":"2"}}}]"#;
    let (out, changes) = apply_modifications(body.as_bytes(), 1, &[redact(&["x"])]).unwrap();
    assert_eq!(changes, vec!["redacted arguments.x"]);
    let v = body_of(&out);
    assert_eq!(v[0]["params"]["arguments"]["x"], "1");
    assert_eq!(v[1]["params"]["arguments"]["x"], "[REDACTED]");
    let e = apply_modifications(body.as_bytes(), 2, &[redact(&["x"])]).unwrap_err();
    assert_eq!((e.http_status, e.jsonrpc_code), (500, Some(-32603)));
}

#[test]
fn impossible_rewrites_fail_closed() {
    let e = apply_modifications(b"{", 0, &[]).unwrap_err();
    assert_eq!(e.http_status, 500);
    let e = apply_modifications(QUERY.as_bytes(), 1, &[]).unwrap_err();
    assert_eq!(e.http_status, 500);
    for (min, max) in [(5.0, 1.0), (f64::NAN, 1.0), (0.0, f64::INFINITY)] {
        let e = apply_modifications(
            QUERY.as_bytes(),
            0,
            &[Modification::ClampArg {
                path: vec![key("limit")],
                min,
                max,
            }],
        )
        .unwrap_err();
        assert_eq!(e.http_status, 500, "{min} {max}");
    }
}

#[test]
fn http_json_bodies() {
    let body = br#"{"text":"deploy key AKIAIOSFODNN7EXAMPLE","channel":"ops"}"#;
    let (out, changes) = apply_http_modifications(
        body,
        &[
            Modification::RedactSecrets,
            Modification::DropArg {
                path: vec![key("channel")],
            },
        ],
    )
    .unwrap();
    assert_eq!(
        changes,
        vec!["redacted secret at body.text", "dropped body.channel"]
    );
    assert_eq!(body_of(&out), json!({"text": "[REDACTED]"}));
    // Header-only modifications leave any body alone, JSON or not.
    let (out, changes) = apply_http_modifications(
        b"plain text",
        &[Modification::StripHeader {
            name: "cookie".into(),
        }],
    )
    .unwrap();
    assert_eq!((out.as_slice(), changes.len()), (&b"plain text"[..], 0));
    // A body rewrite on a body that is not JSON cannot be made: refuse, never forward as is.
    let e = apply_http_modifications(b"key=AKIAIOSFODNN7EXAMPLE", &[Modification::RedactSecrets])
        .unwrap_err();
    assert_eq!(e.http_status, 500);
}
