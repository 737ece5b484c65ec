//! Property tests: the normalized result does not depend on how the proxy split the body into
//! chunks; the limit trips at the same total whatever the split; the strict parser reads exactly
//! what serde_json writes; and no input panics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use filter_core::normalize::{
    BodyBuffer, NormalizeConfig, RequestHead, apply_modifications, normalize_http, normalize_mcp,
    parse_json,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn head() -> RequestHead {
    RequestHead {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "workbench.local".into(),
        path: "/mcp".into(),
        headers: vec![("mcp-session-id".into(), "s".into())],
    }
}

fn cfg() -> NormalizeConfig {
    NormalizeConfig {
        allow_batches: true,
        ..NormalizeConfig::default()
    }
}

/// Bodies that exercise accept and every kind of refusal.
const BODIES: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/repo/é/a","content":"x\u00e9\ud83d\ude00","branch":"main"}}}"#,
    r#"{"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp","version":"0.1.0"}},"jsonrpc":"2.0","id":0}"#,
    r#"{"method":"notifications/initialized","jsonrpc":"2.0"}"#,
    r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":"x","result":{"roots":[]}}]"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"n":1e400}}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}"#,
    r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"a@b.co","body":"AKIAIOSFODNN7EXAMPLE 4111-1111-1111-1111"}}}"#,
];

fn split_at_points(body: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
    points.iter_mut().for_each(|p| *p %= body.len() + 1);
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for p in points {
        chunks.push(&body[last..p]);
        last = p;
    }
    chunks.push(&body[last..]);
    chunks
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn result_is_independent_of_chunk_boundaries(
        which in 0..BODIES.len(),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let body = BODIES[which].as_bytes();
        let whole = normalize_mcp(&head(), body, &cfg());
        let mut buf = BodyBuffer::new(cfg().max_body_bytes);
        for chunk in split_at_points(body, points) {
            buf.push(chunk).unwrap();
        }
        prop_assert_eq!(buf.as_bytes(), body);
        let chunked = normalize_mcp(&head(), buf.as_bytes(), &cfg());
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn limit_trips_at_the_same_total_whatever_the_split(
        len in 0usize..300,
        limit in 0usize..300,
        points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let body = vec![b'x'; len];
        let mut buf = BodyBuffer::new(limit);
        let mut refused = None;
        for chunk in split_at_points(&body, points) {
            if let Err(e) = buf.push(chunk) {
                refused = Some(e);
                break;
            }
        }
        prop_assert_eq!(refused.is_some(), len > limit);
        if let Some(e) = refused {
            prop_assert_eq!(e.http_status, 413);
        }
        prop_assert!(buf.len() <= limit);
    }

    #[test]
    fn strict_parser_reads_what_serde_json_writes(args in arb_json()) {
        let text = serde_json::to_string(&args).unwrap();
        let parsed = parse_json(text.as_bytes(), 64);
        // Keys that differ only in case are refused by design (docs/filter-normalization.md):
        // such a generated object is not a case of this property.
        prop_assume!(!parsed
            .as_ref()
            .is_err_and(|e| e.reason.contains("differ only in case")));
        prop_assert_eq!(parsed.unwrap(), args.clone());
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "t", "arguments": {"v": args.clone()}}});
        let bytes = serde_json::to_vec(&body).unwrap();
        let r = normalize_mcp(&head(), &bytes, &cfg()).unwrap();
        prop_assert_eq!(&r.messages[0].action.arguments["v"], &args);
        // A no-op rewrite returns the body untouched.
        let (out, changes) = apply_modifications(&bytes, 0, &[]).unwrap();
        prop_assert_eq!(out, bytes);
        prop_assert!(changes.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = normalize_mcp(&head(), &bytes, &cfg());
        let _ = parse_json(&bytes, 8);
        let _ = apply_modifications(&bytes, 0, &[bundle::verdict::Modification::RedactSecrets]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let h = RequestHead {
            method: "GET".into(),
            scheme: "http".into(),
            authority: text.clone(),
            path: text,
            headers: vec![],
        };
        let _ = normalize_http(&h, Some(&bytes), &NormalizeConfig { inspect_http_bodies: true, ..NormalizeConfig::default() });
    }

    #[test]
    fn mutated_valid_bodies_never_panic(
        which in 0..BODIES.len(),
        pos in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let mut body = BODIES[which].as_bytes().to_vec();
        let p = pos % body.len();
        body[p] = byte;
        let _ = normalize_mcp(&head(), &body, &cfg());
    }
}
