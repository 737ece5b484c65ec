//! Intent drift (docs/filter.md "Intent drift"): the value every receipt carries, action by action.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::rc::Rc;

use bundle::keys::{format_verifying_key, signing_key_from_seed};
use filter_core::Plugin;
use filter_core::mock::MockHost;
use serde_json::{Value, json};

fn plugin(host: &MockHost) -> Rc<Plugin> {
    common::plugin(
        host,
        "drift.pcl",
        json!({
            "approvers": { "release-managers": [format_verifying_key(&signing_key_from_seed([3; 32]).verifying_key())] },
        }),
    )
}

/// Send one MCP message in session `s1`; return the receipt's `drift_milli`.
fn drift_after(host: &MockHost, p: &Rc<Plugin>, body: Value, intent: Option<&str>) -> i64 {
    let mut extra = vec![("mcp-session-id", "s1")];
    if let Some(i) = intent {
        extra.push(("x-portcullis-intent", i));
    }
    common::send_mcp(host, p, &extra, &body);
    let st = host.state();
    let r = st.filter_state.get("wasm.portcullis.receipt").unwrap();
    let r: Value = serde_json::from_slice(r).unwrap();
    r["body"]["drift_milli"]
        .as_i64()
        .unwrap_or_else(|| panic!("{r}"))
}

fn call(id: i64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {"path": "/repo/x"}}})
}

#[test]
fn drift_is_a_moving_average_of_off_intent_actions_and_is_in_every_receipt() {
    let host = MockHost::new(1_800_000_000_000);
    let p = plugin(&host);
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    assert_eq!(drift_after(&host, &p, init, Some("triage")), 0);
    // In scope (class repo_read), but only `read` is among the intent's tokens (`triage`,
    // `repo`, `read`): score 0.4 * 0.5 = 0.2; drift += 0.3 * (score - drift).
    assert_eq!(drift_after(&host, &p, call(1, "read_file"), None), 60);
    // Protocol messages do not count.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    assert_eq!(drift_after(&host, &p, list, None), 60);
    // Off intent, no shared token: score 0.8.
    assert_eq!(drift_after(&host, &p, call(3, "send_email"), None), 282);
    assert_eq!(drift_after(&host, &p, call(4, "write_file"), None), 437);
    assert_eq!(drift_after(&host, &p, call(5, "send_email"), None), 546);
    // Back on intent: drift decays toward the in-scope score.
    assert_eq!(drift_after(&host, &p, call(6, "read_file"), None), 442);
}
