//! STEP_UP approval tokens as the filter enforces them (docs/approvals.md): the token's own
//! checks, then the filter's (the rule's timeout from `iat`, single use in the session).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::rc::Rc;

use bundle::keys::{format_verifying_key, signing_key_from_seed};
use filter_core::Plugin;
use filter_core::mock::MockHost;
use serde_json::{Value, json};

const APPROVER_SEED: u8 = 3;
/// `production_deploy` in `basic.pcl` steps up with `timeout 15m`.
const RULE_TIMEOUT_S: u64 = 15 * 60;

fn deploy(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "deploy", "arguments": {"env": "production", "version": "1.2.3"}}})
}

/// The local answer's JSON-RPC error (`None`: the request was forwarded).
fn answer(host: &MockHost) -> Option<Value> {
    let local = host.state().local_response.clone()?;
    let v: Value = serde_json::from_slice(&local.body).unwrap();
    Some(v["error"].clone())
}

/// A token for `digest`, issued `age_s` ago, valid for `ttl_s`, with nonce byte `n`.
fn token(host: &MockHost, digest: &str, age_s: u64, ttl_s: u32, n: u8) -> String {
    let now_s = host.state().now_ms / 1000;
    bundle::approval::mint(
        &hex::decode(digest).unwrap().try_into().unwrap(),
        "release-managers",
        &signing_key_from_seed([APPROVER_SEED; 32]),
        now_s.checked_sub(age_s).unwrap(),
        ttl_s,
        [n; 16],
    )
}

/// A plugin of `basic.pcl` with the test approver in `release-managers`.
fn plugin(host: &MockHost) -> Rc<Plugin> {
    let approver =
        format_verifying_key(&signing_key_from_seed([APPROVER_SEED; 32]).verifying_key());
    common::plugin(
        host,
        "basic.pcl",
        json!({"approvers": {"release-managers": [approver]}}),
    )
}

/// Send the production deploy with `headers`: it asks for approval; the digest to approve.
fn ask(host: &MockHost, plugin: &Rc<Plugin>, headers: &[(&str, &str)]) -> String {
    common::send_mcp(host, plugin, headers, &deploy(1));
    let asked = answer(host).unwrap();
    assert_eq!(asked["code"], -32041, "{asked}");
    asked["data"]["approval_request"]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_rules_timeout_bounds_a_token_however_long_it_lives() {
    let host = MockHost::new(1_800_000_000_000);
    let plugin = plugin(&host);
    let digest = ask(&host, &plugin, &[("mcp-session-id", "s1")]);

    // A day-long token issued just past the rule's 15 minutes: its own `exp` is hours away.
    let old = token(&host, &digest, RULE_TIMEOUT_S + 1, 86_400, 1);
    let headers = [
        ("mcp-session-id", "s1"),
        ("x-portcullis-approval", old.as_str()),
    ];
    common::send_mcp(&host, &plugin, &headers, &deploy(2));
    let refused = answer(&host).unwrap();
    assert_eq!(refused["code"], -32040, "{refused}");
    assert_eq!(refused["data"]["approval_error"], "expired", "{refused}");

    // The same lifetime, issued within the rule's timeout: approved, once.
    let fresh = token(&host, &digest, RULE_TIMEOUT_S - 60, 86_400, 2);
    let headers = [
        ("mcp-session-id", "s1"),
        ("x-portcullis-approval", fresh.as_str()),
    ];
    common::send_mcp(&host, &plugin, &headers, &deploy(3));
    assert!(answer(&host).is_none(), "a fresh token approves");
    common::send_mcp(&host, &plugin, &headers, &deploy(4));
    assert_eq!(answer(&host).unwrap()["data"]["approval_error"], "replayed");
}

#[test]
fn without_a_session_key_a_token_still_approves_only_once() {
    let host = MockHost::new(1_800_000_000_000);
    let plugin = plugin(&host);
    let digest = ask(&host, &plugin, &[]);
    let t = token(&host, &digest, 0, 300, 7);
    let headers = [("x-portcullis-approval", t.as_str())];
    common::send_mcp(&host, &plugin, &headers, &deploy(2));
    assert!(answer(&host).is_none(), "the first use approves");
    // The identical retry: same action, same digest, same token. Another worker of the process
    // shares the set (a second plugin on the same shared data).
    let other_worker = self::plugin(&host);
    for p in [&plugin, &other_worker] {
        common::send_mcp(&host, p, &headers, &deploy(3));
        let refused = answer(&host).unwrap();
        assert_eq!(refused["data"]["approval_error"], "replayed", "{refused}");
    }
}

/// An HTTP POST of `body` to the upload host (no body inspection configured), with `headers`.
fn upload(host: &MockHost, plugin: &Rc<Plugin>, body: &[u8], headers: &[(&str, &str)]) {
    let len = body.len().to_string();
    let mut h: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/files"),
        (":authority", "uploads.example"),
        (":scheme", "https"),
        ("content-type", "application/octet-stream"),
        ("content-length", len.as_str()),
    ]
    .iter()
    .chain(headers)
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    h.push(("x-agent-run".to_owned(), "r1".to_owned()));
    host.new_stream(h);
    let mut s = filter_core::Stream::new(Rc::clone(plugin));
    let a = s.on_request_headers(host, false);
    assert_eq!(
        a,
        filter_core::FilterAction::Pause,
        "the body is read to bind the approval"
    );
    if host.state().local_response.is_none() {
        host.state().request_body = body.to_vec();
        s.on_request_body(host, body.len(), true);
    }
}

/// The approval request of the last answer (`None`: forwarded), and the error code of a refusal.
fn http_answer(host: &MockHost) -> Option<Value> {
    let local = host.state().local_response.clone()?;
    Some(serde_json::from_slice(&local.body).unwrap())
}

/// For plain HTTP the digest covers the body (hashed even though `http.inspect_bodies` is off)
/// and the method- and host-override headers: a token for one body approves no other body of the
/// same length, nor the same body under another method or host.
#[test]
fn an_http_approval_binds_the_body_and_the_method_overrides() {
    let host = MockHost::new(1_800_000_000_000);
    let approver =
        format_verifying_key(&signing_key_from_seed([APPROVER_SEED; 32]).verifying_key());
    let plugin = common::plugin(
        &host,
        "http_approval.pcl",
        json!({"approvers": {"release-managers": [approver]},
               "session": {"key": {"source": "header", "name": "x-agent-run"}}}),
    );
    upload(&host, &plugin, b"report-2026-11.csv", &[]);
    let asked = http_answer(&host).unwrap();
    let digest = asked["approval_request"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("{asked}"))
        .to_owned();
    let t = token(&host, &digest, 0, 600, 9);
    let with = [("x-portcullis-approval", t.as_str())];

    upload(&host, &plugin, b"payroll-2026-11.csv", &with);
    let refused = http_answer(&host).unwrap();
    assert_eq!(refused["approval_error"], "digest_mismatch", "{refused}");
    assert_eq!(
        b"payroll-2026-11.csv".len(),
        b"report-2026-11.csv".len() + 1
    );
    upload(&host, &plugin, b"eport-2026-11.csv!", &with);
    assert_eq!(
        http_answer(&host).unwrap()["approval_error"],
        "digest_mismatch",
        "same length"
    );

    // An override header the token did not see (here one naming the same method: another
    // method is another reading, which the default denies before any approval counts).
    let overridden = [
        ("x-portcullis-approval", t.as_str()),
        ("x-http-method-override", "POST"),
    ];
    upload(&host, &plugin, b"report-2026-11.csv", &overridden);
    assert_eq!(
        http_answer(&host).unwrap()["approval_error"],
        "digest_mismatch"
    );
    // Nor a forwarding header naming a host, which servers behind a trusting proxy serve.
    for (name, value) in [
        ("x-forwarded-host", "uploads.example"),
        ("forwarded", "host=uploads.example"),
    ] {
        let forwarded = [("x-portcullis-approval", t.as_str()), (name, value)];
        upload(&host, &plugin, b"report-2026-11.csv", &forwarded);
        assert_eq!(
            http_answer(&host).unwrap()["approval_error"],
            "digest_mismatch",
            "{name}"
        );
    }

    upload(&host, &plugin, b"report-2026-11.csv", &with);
    assert!(http_answer(&host).is_none(), "the approved body passes");
}
