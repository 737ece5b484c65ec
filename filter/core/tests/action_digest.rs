//! The version 2 action digest off the wire (`docs/receipts.md`, "The action digest"): the filter
//! hashes each message's arguments as received, once, while it parses the request; the digest
//! binds that text. Two requests a server could execute differently never share a digest; the
//! same arguments spelled otherwise get another one (binding, not equivalence); what a retry
//! changes outside the arguments (the JSON-RPC id, whitespace around them) does not change it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use bundle::action::Action;
use bundle::receipt::{action_digest, action_digest_v1};
use filter_core::normalize::{NormalizeConfig, RequestHead, normalize_http, normalize_mcp};
use sha2::{Digest as _, Sha256};

fn head(content_type: &str, path: &str) -> RequestHead {
    RequestHead {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "workbench.local:8080".into(),
        path: path.into(),
        headers: vec![
            ("content-type".to_owned(), content_type.to_owned()),
            (
                "accept".to_owned(),
                "application/json, text/event-stream".to_owned(),
            ),
        ],
    }
}

fn actions(body: &str) -> Vec<Action> {
    let cfg = NormalizeConfig {
        server_name: "workbench".into(),
        ..NormalizeConfig::default()
    };
    normalize_mcp(&head("application/json", "/mcp"), body.as_bytes(), &cfg)
        .unwrap_or_else(|e| panic!("{body}: {e:?}"))
        .messages
        .into_iter()
        .map(|m| m.action)
        .collect()
}

fn call(id: u32, args: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"q","arguments":{args}}}}}"#
    )
}

fn digest_of(body: &str) -> [u8; 32] {
    action_digest(&actions(body)[0])
}

fn sha(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[test]
fn arguments_are_hashed_as_received() {
    let args = r#"{"b": [1, 2.50, "\u00e9\/"], "a" : {"z":null}}"#;
    let a = &actions(&call(1, args))[0];
    assert_eq!(a.arguments_sha256, Some(sha(args)));
    // The digest names them by that hash, not by a canonical form of the parsed value.
    let mut built = a.clone();
    built.arguments_sha256 = None;
    assert_ne!(action_digest(a), action_digest(&built));
}

#[test]
fn a_retry_that_repeats_the_arguments_has_the_same_digest() {
    let args = r#"{"path":"/repo/README.md","n":3}"#;
    let first = digest_of(&call(1, args));
    // Another JSON-RPC id, whitespace and member order outside the arguments.
    let retry = format!(
        r#" {{ "params" : {{ "arguments" : {args} , "name":"q" }}, "method":"tools/call", "id": 99, "jsonrpc":"2.0" }} "#
    );
    assert_eq!(digest_of(&retry), first);
}

#[test]
fn other_text_for_the_same_value_is_another_digest() {
    let compact = digest_of(&call(1, r#"{"a":1,"b":"A"}"#));
    for other in [
        r#"{"b":"A","a":1}"#,
        r#"{"a": 1, "b": "A"}"#,
        r#"{"a":1,"b":"\u0041"}"#,
    ] {
        let a = &actions(&call(1, other))[0];
        assert_eq!(
            a.arguments,
            serde_json::json!({"a": 1, "b": "A"}),
            "{other}"
        );
        assert_ne!(action_digest(a), compact, "{other}");
    }
}

/// Version 1 hashed the parsed value, and integers beyond 64 bits parse to the nearest double:
/// two calls a Python server executes with different numbers shared a digest. Version 2 hashes the
/// text the server parses.
#[test]
fn numbers_a_server_reads_differently_have_different_digests() {
    let one = &actions(&call(1, r#"{"n":18446744073709551617}"#))[0];
    let two = &actions(&call(1, r#"{"n":18446744073709551616}"#))[0];
    assert_eq!(
        one.arguments, two.arguments,
        "the filter reads both as 2^64"
    );
    assert_eq!(
        action_digest_v1(one),
        action_digest_v1(two),
        "the version 1 gap"
    );
    assert_ne!(action_digest(one), action_digest(two));
    let long_a = &actions(&call(1, r#"{"x":0.1000000000000000055511151231257827}"#))[0];
    let long_b = &actions(&call(1, r#"{"x":0.1}"#))[0];
    assert_ne!(action_digest(long_a), action_digest(long_b));
}

#[test]
fn each_message_of_a_batch_hashes_its_own_arguments() {
    let body = format!(
        "[{},{}]",
        call(1, r#"{"k":"one"}"#),
        call(2, r#"{ "k" : "two" }"#)
    );
    let cfg = NormalizeConfig {
        server_name: "workbench".into(),
        allow_batches: true,
        ..NormalizeConfig::default()
    };
    let r = normalize_mcp(&head("application/json", "/mcp"), body.as_bytes(), &cfg).unwrap();
    let hashes: Vec<_> = r
        .messages
        .iter()
        .map(|m| m.action.arguments_sha256)
        .collect();
    assert_eq!(
        hashes,
        [Some(sha(r#"{"k":"one"}"#)), Some(sha(r#"{ "k" : "two" }"#))]
    );
}

#[test]
fn a_member_name_written_with_escapes_is_still_the_arguments() {
    // The server decodes `\u0061rguments` to `arguments`: so does the parser, and the text of that
    // member is what is hashed.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","\u0061rguments":{"x":1}}}"#;
    assert_eq!(actions(body)[0].arguments_sha256, Some(sha(r#"{"x":1}"#)));
}

#[test]
fn absent_and_null_arguments_read_alike() {
    let absent = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q"}}"#;
    let null = call(1, "null");
    assert_eq!(digest_of(absent), digest_of(&null));
    assert_ne!(digest_of(absent), digest_of(&call(1, "{}")));
}

#[test]
fn other_members_and_messages_use_their_own_text() {
    // A response the client posts: its `result` text.
    let result = r#"{"jsonrpc":"2.0","id":"s1","result":{"content": [ ]}}"#;
    assert_eq!(
        actions(result)[0].arguments_sha256,
        Some(sha(r#"{"content": [ ]}"#))
    );
    // completion/complete: `params.argument`.
    let complete = r#"{"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a", "value":"b"}}}"#;
    assert_eq!(
        actions(complete)[0].arguments_sha256,
        Some(sha(r#"{"name":"a", "value":"b"}"#))
    );
    // A method without arguments: nothing received, the canonical `null` is hashed.
    let ping = r#"{"jsonrpc":"2.0","id":3,"method":"ping","params":{"arguments":{"x":1}}}"#;
    assert_eq!(actions(ping)[0].arguments_sha256, None);
}

#[test]
fn an_inspected_http_json_body_is_hashed_as_received() {
    let cfg = NormalizeConfig {
        inspect_http_bodies: true,
        ..NormalizeConfig::default()
    };
    let body = "  {\"to\": \"a@b\"}\n";
    let mut h = head("application/json", "/send");
    h.authority = "api.example".into();
    let a = normalize_http(&h, Some(body.as_bytes()), &cfg).unwrap();
    assert_eq!(a.arguments_sha256, Some(sha("{\"to\": \"a@b\"}")));
}
