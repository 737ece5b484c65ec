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
