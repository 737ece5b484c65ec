//! STEP_UP answered in-band (docs/approvals.md, "In-band approval"), with the mock host playing
//! Envoy and the approval service: the capability remembered from `initialize`, the notice
//! call-out and the URL-mode elicitation, the token fetched on retry and verified like the
//! header, a recorded denial, a pending answer, a failing service, and clients without the
//! capability answered exactly as before.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap, index or overflow is a failed test"
)]

mod common;

use std::rc::Rc;

use bundle::keys::{format_verifying_key, signing_key_from_seed};
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::{Value, json};

const APPROVER_SEED: u8 = 3;
const NOW_MS: u64 = 1_800_000_000_000;

fn deploy(id: i64, version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "deploy", "arguments": {"env": "production", "version": version}}})
}

fn extra(service: bool) -> Value {
    let approver =
        format_verifying_key(&signing_key_from_seed([APPROVER_SEED; 32]).verifying_key());
    let mut v = json!({"approvers": {"release-managers": [approver]}});
    if service {
        v["approval_service"] = json!({
            "cluster": "approver", "authority": "approver.internal",
            "public_url": "https://approve.example.com/"
        });
    }
    v
}

fn plugin(host: &MockHost, service: bool) -> Rc<Plugin> {
    common::plugin(host, "basic.pcl", extra(service))
}

/// `initialize` (declaring URL elicitation or not), answered by the server with session `sid`.
fn initialize(host: &MockHost, plugin: &Rc<Plugin>, sid: &str, url: bool) {
    let caps = if url {
        json!({"elicitation": {"form": {}, "url": {}}})
    } else {
        json!({})
    };
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": caps,
                   "clientInfo": {"name": "t", "version": "1"}}});
    let (mut s, a) = common::send_mcp(host, plugin, &[], &body);
    assert_eq!(
        a,
        FilterAction::Continue,
        "{:?}",
        host.state().local_response
    );
    host.state().response_headers = vec![
        (":status".into(), "200".into()),
        ("mcp-session-id".into(), sid.into()),
    ];
    s.on_response_headers(host);
}

fn local(host: &MockHost) -> Option<Value> {
    let r = host.state().local_response.clone()?;
    Some(serde_json::from_slice(&r.body).unwrap())
}

/// The last call-out: (method, path, body as JSON or Null).
fn last_call(host: &MockHost) -> (u32, String, String, Value) {
    let c = host.state().http_calls.last().cloned().unwrap();
    let h = |n: &str| {
        c.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(c.cluster, "approver");
    assert_eq!(h(":authority"), "approver.internal");
    let body = serde_json::from_slice(&c.body).unwrap_or(Value::Null);
    (c.token, h(":method"), h(":path"), body)
}

fn deliver(host: &MockHost, s: &mut Stream, token: u32, status: u16, body: &Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let len = bytes.len();
    host.state().call_response = Some((vec![(":status".into(), status.to_string())], bytes));
    s.on_http_call_response(host, token, len);
    host.state().call_response = None;
}

/// Send the deploy in session `sid`; the stream and its action.
fn send(host: &MockHost, plugin: &Rc<Plugin>, sid: &str, version: &str) -> (Stream, FilterAction) {
    common::send_mcp(
        host,
        plugin,
        &[("mcp-session-id", sid)],
        &deploy(7, version),
    )
}

/// Ask in a capable session: the notice goes out, the service takes it, the client gets the
/// elicitation. Returns (elicitation id, url, digest, notice).
fn ask(
    host: &MockHost,
    plugin: &Rc<Plugin>,
    sid: &str,
    version: &str,
) -> (String, String, String, Value) {
    let (mut s, a) = send(host, plugin, sid, version);
    assert_eq!(a, FilterAction::Pause);
    assert!(
        local(host).is_none(),
        "the client is answered only after the service took it"
    );
    let (token, method, path, notice) = last_call(host);
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/api/elicitations")
    );
    deliver(host, &mut s, token, 201, &json!({}));
    let v = local(host).unwrap();
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["code"], -32042, "{v}");
    let e = &v["error"]["data"]["elicitations"][0];
    assert_eq!(e["mode"], "url");
    let id = e["elicitationId"].as_str().unwrap().to_owned();
    let url = e["url"].as_str().unwrap().to_owned();
    let digest = v["error"]["data"]["approval_request"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(notice["elicitation_id"], id.as_str());
    assert_eq!(notice["digest"], digest.as_str());
    (id, url, digest, notice)
}

fn mint(host: &MockHost, digest: &str, nonce: u8) -> String {
    let now_s = host.state().now_ms / 1000;
    bundle::approval::mint(
        &hex::decode(digest).unwrap().try_into().unwrap(),
        "release-managers",
        &signing_key_from_seed([APPROVER_SEED; 32]),
        now_s,
        600,
        [nonce; 16],
    )
}

/// Retry in `sid`: the filter asks the service for the elicitation's outcome first.
fn retry(host: &MockHost, plugin: &Rc<Plugin>, sid: &str, version: &str, id: &str) -> Stream {
    let calls = host.state().http_calls.len();
    let (s, a) = send(host, plugin, sid, version);
    assert_eq!(a, FilterAction::Pause);
    assert_eq!(host.state().http_calls.len(), calls + 1, "one call-out");
    let (_, method, path, _) = last_call(host);
    assert_eq!(method, "GET");
    assert_eq!(path, format!("/api/elicitations/{id}"));
    s
}

#[test]
fn elicitation_then_token_fetched_on_retry_allows_once() {
    let host = MockHost::new(NOW_MS);
    let plugin = plugin(&host, true);
    initialize(&host, &plugin, "s1", true);
    let (id, url, digest, notice) = ask(&host, &plugin, "s1", "1.2.3");
    assert_eq!(url, format!("https://approve.example.com/approve/{id}"));
    // What the approver is shown.
    assert_eq!(notice["action"]["tool"], "deploy");
    assert_eq!(notice["action"]["arguments"]["version"], "1.2.3");
    assert_eq!(notice["group"], "release-managers");
    assert_eq!(notice["session"], "s1");
    assert!(notice["session_state"]["recent_actions"].is_array());
    assert!(
        notice["expected_effect"]["summary"]
            .as_str()
            .unwrap()
            .contains("deploy")
    );

    // Still pending: the same elicitation again, without a second notice.
    let mut s = retry(&host, &plugin, "s1", "1.2.3", &id);
    let token = host.state().http_calls.last().unwrap().token;
    deliver(&host, &mut s, token, 200, &json!({"status": "pending"}));
    let v = local(&host).unwrap();
    assert_eq!(v["error"]["code"], -32042);
    assert_eq!(
        v["error"]["data"]["elicitations"][0]["elicitationId"],
        id.as_str()
    );

    // Approved: the token is verified as the header's would be, and the request goes on.
    let mut s = retry(&host, &plugin, "s1", "1.2.3", &id);
    let token = host.state().http_calls.last().unwrap().token;
    let t = mint(&host, &digest, 1);
    deliver(
        &host,
        &mut s,
        token,
        200,
        &json!({"status": "approved", "token": t}),
    );
    assert!(local(&host).is_none(), "{:?}", local(&host));
    assert_eq!(host.state().resumed, 1);
    assert_eq!(
        host.request_header("x-portcullis-decision").as_deref(),
        Some("ALLOW")
    );

    // The same call again asks anew (the elicitation was used), not with the old token.
    let calls = host.state().http_calls.len();
    let (_, a) = send(&host, &plugin, "s1", "1.2.3");
    assert_eq!(a, FilterAction::Pause);
    let (_, method, _, _) = last_call(&host);
    assert_eq!(method, "POST", "a fresh notice");
    assert_eq!(host.state().http_calls.len(), calls + 1);

    // The used token presented again is refused as a replay.
    let headers = [
        ("mcp-session-id", "s1"),
        ("x-portcullis-approval", t.as_str()),
    ];
    common::send_mcp(&host, &plugin, &headers, &deploy(8, "1.2.3"));
    let v = local(&host).unwrap();
    assert_eq!(v["error"]["data"]["approval_error"], "replayed", "{v}");
}

#[test]
fn a_token_for_another_action_or_key_is_refused() {
    let host = MockHost::new(NOW_MS);
    let plugin = plugin(&host, true);
    initialize(&host, &plugin, "s1", true);
    let (id, _, _, _) = ask(&host, &plugin, "s1", "1.2.3");
    let mut s = retry(&host, &plugin, "s1", "1.2.3", &id);
    let token = host.state().http_calls.last().unwrap().token;
    // The service hands back a token for another digest: it proves nothing for this action.
    let wrong = mint(&host, &"ab".repeat(32), 2);
    deliver(
        &host,
        &mut s,
        token,
        200,
        &json!({"status": "approved", "token": wrong}),
    );
    let v = local(&host).unwrap();
    assert_eq!(v["error"]["code"], -32040);
    assert_eq!(
        v["error"]["data"]["approval_error"], "digest_mismatch",
        "{v}"
    );
}

#[test]
fn a_denial_recorded_by_the_service_denies_with_who() {
    let host = MockHost::new(NOW_MS);
    let plugin = plugin(&host, true);
    initialize(&host, &plugin, "s1", true);
    let (id, _, _, _) = ask(&host, &plugin, "s1", "2.0.0");
    let mut s = retry(&host, &plugin, "s1", "2.0.0", &id);
    let token = host.state().http_calls.last().unwrap().token;
    deliver(
        &host,
        &mut s,
        token,
        200,
        &json!({"status": "denied", "by": "alice", "at": "2027-01-15T08:00:00Z", "reason": "freeze"}),
    );
    let v = local(&host).unwrap();
    assert_eq!(v["error"]["code"], -32040);
    assert_eq!(v["error"]["data"]["decision"], "DENY");
    assert_eq!(v["error"]["data"]["rule"], "production_deploy");
    assert_eq!(v["error"]["data"]["approval_error"], "denied_by_approver");
    let reason = v["error"]["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`alice`") && reason.contains("freeze"),
        "{reason}"
    );
}

#[test]
fn an_unknown_elicitation_or_a_failing_service_never_allows() {
    let host = MockHost::new(NOW_MS);
    let plugin = plugin(&host, true);
    initialize(&host, &plugin, "s1", true);
    let (id, _, _, _) = ask(&host, &plugin, "s1", "3.0.0");
    // The service forgot it: a new elicitation is sent (a fresh notice), nothing is allowed.
    let mut s = retry(&host, &plugin, "s1", "3.0.0", &id);
    let token = host.state().http_calls.last().unwrap().token;
    deliver(&host, &mut s, token, 404, &json!({"status": "unknown"}));
    assert!(local(&host).is_none(), "waits for the new notice");
    let (token, method, _, notice) = last_call(&host);
    assert_eq!(method, "POST");
    assert_ne!(notice["elicitation_id"], id.as_str());
    // The service refuses the notice: today's -32041 answer.
    deliver(&host, &mut s, token, 500, &json!({}));
    let v = local(&host).unwrap();
    assert_eq!(v["error"]["code"], -32041, "{v}");
    assert_eq!(host.state().resumed, 0);
    // No answer in time (no headers): also -32041.
    let (mut s, _) = send(&host, &plugin, "s1", "3.0.1");
    let (token, _, _, _) = last_call(&host);
    host.state().call_response = Some((vec![], vec![]));
    s.on_http_call_response(&host, token, 0);
    assert_eq!(local(&host).unwrap()["error"]["code"], -32041);
    // The call-out cannot even be dispatched: -32041.
    host.state().fail_http_calls = true;
    send(&host, &plugin, "s1", "3.0.2");
    assert_eq!(local(&host).unwrap()["error"]["code"], -32041);
}

#[test]
fn clients_without_the_capability_get_the_same_bytes_as_before() {
    let answer = |service: bool, url: bool| {
        let host = MockHost::new(NOW_MS);
        let plugin = plugin(&host, service);
        initialize(&host, &plugin, "s9", url);
        send(&host, &plugin, "s9", "1.2.3");
        let calls = host.state().http_calls.len();
        (host.state().local_response.clone().unwrap(), calls)
    };
    let (before, _) = answer(false, false);
    let (with_service, calls) = answer(true, false);
    assert_eq!(
        calls, 0,
        "no call-out for a client that cannot take an elicitation"
    );
    assert_eq!(before, with_service, "byte for byte");
    // A capable client of a filter without an approval service: also unchanged.
    let (no_service_capable, _) = answer(false, true);
    assert_eq!(before, no_service_capable);
    let v: Value = serde_json::from_slice(&before.body).unwrap();
    assert_eq!(v["error"]["code"], -32041);
}

#[test]
fn capability_belongs_to_the_session_that_declared_it() {
    let host = MockHost::new(NOW_MS);
    let plugin = plugin(&host, true);
    initialize(&host, &plugin, "s1", true);
    initialize(&host, &plugin, "s2", false);
    send(&host, &plugin, "s2", "1.2.3");
    assert_eq!(local(&host).unwrap()["error"]["code"], -32041);
    assert!(host.state().http_calls.is_empty());
    // A bad approval_service configuration is refused like any other.
    let mut bad = extra(true);
    bad["approval_service"]["public_url"] = json!("javascript:alert(1)");
    let cfg = common::config("basic.pcl", bad);
    let p = Plugin::configure(&host, &cfg);
    assert!(
        p.error()
            .unwrap()
            .to_string()
            .contains("approval_service.public_url")
    );
}

// -- MCP 2026-07-28: InputRequiredResult and requestState ----------------------------------------

fn modern_deploy(
    id: i64,
    version: &str,
    url: bool,
    state: Option<&str>,
    response: Option<&str>,
) -> Value {
    let caps = if url {
        json!({"elicitation": {"url": {}}})
    } else {
        json!({})
    };
    let mut params = json!({"name": "deploy", "arguments": {"env": "production", "version": version},
        "_meta": {"io.modelcontextprotocol/clientCapabilities": caps,
                  "io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
    if let Some(s) = state {
        params["requestState"] = json!(s);
    }
    if let Some(r) = response {
        params["inputResponses"] = json!({"portcullis-approval": {"action": r}});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// A 2026-07-28 request carries the routing headers that era requires (`docs/filter.md`).
fn send_modern(host: &MockHost, plugin: &Rc<Plugin>, body: &Value) -> (Stream, FilterAction) {
    let method = body["method"].as_str().unwrap_or_default().to_owned();
    let name = body["params"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    common::send_mcp(
        host,
        plugin,
        &[
            ("x-run", "r1"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", &method),
            ("mcp-name", &name),
        ],
        body,
    )
}

fn modern_plugin(host: &MockHost) -> Rc<Plugin> {
    let mut e = extra(true);
    e["session"] = json!({"key": {"source": "header", "name": "x-run"}});
    common::plugin(host, "basic.pcl", e)
}

/// The first call: notice, then the InputRequiredResult. (state, url, digest)
fn ask_modern(host: &MockHost, plugin: &Rc<Plugin>, version: &str) -> (String, String, String) {
    let (mut s, a) = send_modern(host, plugin, &modern_deploy(5, version, true, None, None));
    assert_eq!(a, FilterAction::Pause);
    let (token, method, _, notice) = last_call(host);
    assert_eq!(method, "POST");
    deliver(host, &mut s, token, 201, &json!({}));
    let v = local(host).unwrap();
    assert!(v.get("error").is_none(), "{v}");
    let r = &v["result"];
    assert_eq!(r["resultType"], "input_required");
    let req = &r["inputRequests"]["portcullis-approval"];
    assert_eq!(req["method"], "elicitation/create");
    assert_eq!(req["params"]["mode"], "url");
    let url = req["params"]["url"].as_str().unwrap().to_owned();
    assert!(url.ends_with(notice["elicitation_id"].as_str().unwrap()));
    let state = r["requestState"].as_str().unwrap().to_owned();
    assert!(state.starts_with("pcl1."));
    let digest = notice["digest"].as_str().unwrap().to_owned();
    (state, url, digest)
}

#[test]
fn modern_input_required_then_state_bound_retry_allows_and_strips_the_state() {
    let host = MockHost::new(NOW_MS);
    let plugin = modern_plugin(&host);
    let (state, _, digest) = ask_modern(&host, &plugin, "4.0.0");

    // Pending: the state again, without asking the user again.
    let (mut s, _) = send_modern(
        &host,
        &plugin,
        &modern_deploy(6, "4.0.0", true, Some(&state), Some("accept")),
    );
    let (token, method, path, _) = last_call(&host);
    assert_eq!(method, "GET");
    assert!(path.starts_with("/api/elicitations/"));
    deliver(&host, &mut s, token, 200, &json!({"status": "pending"}));
    let v = local(&host).unwrap();
    assert_eq!(v["result"]["requestState"], state.as_str());
    assert!(v["result"].get("inputRequests").is_none(), "{v}");

    // Approved: allowed, and the server never sees the filter's state or the responses.
    let (mut s, _) = send_modern(
        &host,
        &plugin,
        &modern_deploy(7, "4.0.0", true, Some(&state), Some("accept")),
    );
    let (token, _, _, _) = last_call(&host);
    let t = mint(&host, &digest, 9);
    deliver(
        &host,
        &mut s,
        token,
        200,
        &json!({"status": "approved", "token": t}),
    );
    assert!(local(&host).is_none(), "{:?}", local(&host));
    assert_eq!(
        host.request_header("x-portcullis-decision").as_deref(),
        Some("ALLOW")
    );
    let sent: Value = serde_json::from_slice(&host.state().request_body).unwrap();
    assert!(sent["params"].get("requestState").is_none(), "{sent}");
    assert!(sent["params"].get("inputResponses").is_none(), "{sent}");
    assert_eq!(sent["params"]["arguments"]["version"], "4.0.0");
}

#[test]
fn modern_state_cannot_change_the_action_nor_be_forged() {
    let host = MockHost::new(NOW_MS);
    let plugin = modern_plugin(&host);
    let (state, _, _) = ask_modern(&host, &plugin, "5.0.0");
    let calls = host.state().http_calls.len();
    // The same state on another action: refused before anything is asked.
    send_modern(
        &host,
        &plugin,
        &modern_deploy(8, "5.0.1", true, Some(&state), Some("accept")),
    );
    let v = local(&host).unwrap();
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another action")
    );
    // A state that looks like the filter's but was altered.
    let mut forged = state.clone();
    forged.pop();
    forged.push(if state.ends_with('A') { 'B' } else { 'A' });
    send_modern(
        &host,
        &plugin,
        &modern_deploy(9, "5.0.0", true, Some(&forged), None),
    );
    assert_eq!(local(&host).unwrap()["error"]["code"], -32602);
    assert_eq!(
        host.state().http_calls.len(),
        calls,
        "no call-out for either"
    );
    // The user declined: DENY, named.
    send_modern(
        &host,
        &plugin,
        &modern_deploy(10, "5.0.0", true, Some(&state), Some("decline")),
    );
    let v = local(&host).unwrap();
    assert_eq!(v["error"]["code"], -32040);
    assert_eq!(v["error"]["data"]["approval_error"], "declined");
}

#[test]
fn modern_state_expires_into_a_new_elicitation_and_no_capability_keeps_32041() {
    let host = MockHost::new(NOW_MS);
    let plugin = modern_plugin(&host);
    let (state, _, _) = ask_modern(&host, &plugin, "6.0.0");
    host.advance(16 * 60 * 1000);
    let (_, a) = send_modern(
        &host,
        &plugin,
        &modern_deploy(11, "6.0.0", true, Some(&state), Some("accept")),
    );
    assert_eq!(a, FilterAction::Pause);
    let (_, method, _, _) = last_call(&host);
    assert_eq!(method, "POST", "expired: a new notice, not a fetch");
    // Without the capability in this request: -32041, whatever earlier requests declared.
    let calls = host.state().http_calls.len();
    send_modern(
        &host,
        &plugin,
        &modern_deploy(12, "6.0.0", false, None, None),
    );
    assert_eq!(local(&host).unwrap()["error"]["code"], -32041);
    assert_eq!(host.state().http_calls.len(), calls);
}
