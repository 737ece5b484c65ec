//! Fuzz in-band approval (docs/approvals.md, "In-band approval") through the whole filter under
//! the mock host: what the approval service answers (to the notice and to the fetch of a token),
//! and what a 2026-07-28 client sends back (`requestState`, `inputResponses`). Nothing may panic
//! or misuse the host, and whatever the service or the client says, the stepped-up action never
//! goes upstream: no one here holds the approver key, so no token can verify.
//!
//! Input layout: byte 0 picks the path (0: a 2025-11-25 retry and the service's answer to the
//! fetch, 1: the service's answer to the notice, 2: a 2026-07-28 retry whose `requestState` is
//! the rest, 3: the same with a real state and the rest as `inputResponses`), byte 1 the status;
//! the rest is the body.
#![no_main]

use std::rc::Rc;

use base64::Engine as _;
use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const PACK: &str = r#"
pack "fuzz" {
  version "1.0.0"
  mode enforce
  default deny "no"
  unknown_session allow "fine"
}
rule hello { when kind == mcp and operation == "initialize" allow "hello" }
rule deploy { when kind == mcp and tool == "deploy" step_up "needs a human" { group "g" timeout 15m } }
"#;

fn config() -> Vec<u8> {
    let ast = policy::syntax::parse(PACK).unwrap_or_else(|e| panic!("{e:?}"));
    let unsigned = policy::codegen::compile(&ast).unwrap_or_else(|e| panic!("{e:?}"));
    let key = signing_key_from_seed([1; 32]);
    let signed = bundle::sign(&unsigned, &key).unwrap_or_else(|e| panic!("{e:?}"));
    serde_json::to_vec(&json!({
        "bundle": { "inline_base64": base64::engine::general_purpose::STANDARD.encode(signed) },
        "trusted_bundle_keys": [format_verifying_key(&key.verifying_key())],
        "signing_key": { "inline": format_signing_key(&signing_key_from_seed([2; 32])) },
        // Nobody in this target holds the key of seed [3; 32].
        "approvers": { "g": [format_verifying_key(&signing_key_from_seed([3; 32]).verifying_key())] },
        "approval_service": { "cluster": "approver", "public_url": "https://approve.example" },
    }))
    .unwrap_or_default()
}

thread_local! {
    static CONFIG: Vec<u8> = config();
}

fn post(host: &MockHost, p: &Rc<Plugin>, sid: Option<&str>, body: &Value) -> (Stream, FilterAction) {
    let mut headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "w"),
        (":scheme", "http"),
        ("content-type", "application/json"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    if let Some(s) = sid {
        headers.push(("mcp-session-id".into(), s.into()));
    }
    host.new_stream(headers);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut s = Stream::new(Rc::clone(p));
    s.on_request_headers(host, false);
    host.state().request_body = bytes.clone();
    let a = s.on_request_body(host, bytes.len(), true);
    (s, a)
}

fn deploy(params: Value) -> Value {
    let mut p = json!({"name": "deploy", "arguments": {"env": "prod"}});
    if let (Some(o), Some(extra)) = (p.as_object_mut(), params.as_object()) {
        o.extend(extra.clone());
    }
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": p})
}

fn last_call(host: &MockHost) -> u32 {
    host.state().http_calls.last().map_or(0, |c| c.token)
}

fn answer(host: &MockHost, s: &mut Stream, token: u32, status: u8, body: &[u8]) {
    let headers = if status % 5 == 4 {
        Vec::new() // no answer in time
    } else {
        let code = [200, 201, 404, 500][usize::from(status % 4)];
        vec![(":status".to_owned(), code.to_string())]
    };
    host.state().call_response = Some((headers, body.to_vec()));
    s.on_http_call_response(host, token, body.len());
    host.state().call_response = None;
}

fn went_upstream(host: &MockHost, a: FilterAction) -> bool {
    let st = host.state();
    st.resumed > 0 || (a == FilterAction::Continue && st.local_response.is_none())
}

fuzz_target!(|data: &[u8]| {
    let [mode, status, rest @ ..] = data else {
        return;
    };
    let host = MockHost::new(1_800_000_000_000);
    let p = Rc::new(CONFIG.with(|c| Plugin::configure(&host, c)));
    assert_eq!(p.error(), None);
    let modern = json!({"_meta": {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}}});
    match mode % 4 {
        0 | 1 => {
            // A 2025-11-25 session whose client declared URL elicitation.
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"url": {}}},
                "clientInfo": {"name": "f", "version": "1"}}});
            let (mut s, _) = post(&host, &p, None, &init);
            host.state().response_headers = vec![(":status".into(), "200".into()), ("mcp-session-id".into(), "s1".into())];
            s.on_response_headers(&host);
            let (mut s, a) = post(&host, &p, Some("s1"), &deploy(json!({})));
            assert!(!went_upstream(&host, a));
            let notice_status = if mode % 4 == 1 { *status } else { 1 };
            let notice_body = if mode % 4 == 1 { rest } else { b"{}" };
            answer(&host, &mut s, last_call(&host), notice_status, notice_body);
            assert!(!went_upstream(&host, a), "the step-up went upstream after the notice");
            if mode % 4 == 0 {
                host.state().local_response = None;
                let calls = host.state().http_calls.len();
                let (mut s, a) = post(&host, &p, Some("s1"), &deploy(json!({})));
                if host.state().http_calls.len() > calls {
                    answer(&host, &mut s, last_call(&host), *status, rest);
                }
                assert!(!went_upstream(&host, a), "a fetched answer let the step-up through");
            }
        }
        2 => {
            let mut params = modern;
            params["requestState"] = Value::from(String::from_utf8_lossy(rest).into_owned());
            params["inputResponses"] = json!({"portcullis-approval": {"action": "accept"}});
            let (mut s, a) = post(&host, &p, None, &deploy(params));
            if host.state().local_response.is_none() {
                answer(&host, &mut s, last_call(&host), *status, b"{\"status\":\"approved\",\"token\":\"x.y\"}");
            }
            assert!(!went_upstream(&host, a), "a client-made requestState let the step-up through");
        }
        _ => {
            let (mut s, _) = post(&host, &p, None, &deploy(modern.clone()));
            answer(&host, &mut s, last_call(&host), 1, b"{}");
            let state = host.state().local_response.as_ref().and_then(|r| {
                let v: Value = serde_json::from_slice(&r.body).ok()?;
                Some(v["result"]["requestState"].as_str()?.to_owned())
            });
            let Some(state) = state else { return };
            host.state().local_response = None;
            let mut params = modern;
            params["requestState"] = Value::from(state);
            params["inputResponses"] = serde_json::from_slice(rest).unwrap_or(Value::Null);
            let (mut s, a) = post(&host, &p, None, &deploy(params));
            if host.state().local_response.is_none() {
                answer(&host, &mut s, last_call(&host), *status, rest);
            }
            assert!(!went_upstream(&host, a), "a retry with the filter's state went through unapproved");
        }
    }
    assert!(host.state().violations.is_empty(), "{:?}", host.state().violations);
});
