//! Least-privilege credentials per action (docs/credentials.md), through the whole filter under
//! the mock host: the agent's own credential headers are stripped per destination; `inject
//! credential` waits for an RFC 8693 exchange at the STS (read or write scope by the action),
//! caches it, records it in a signed `credential` receipt without the secret, and denies by
//! `filter:credential` on any STS failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::rc::Rc;

use base64::Engine as _;
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::{Value, json};

const JWT_NS: &str = "envoy.filters.http.jwt_authn";

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn jwt(claims: Value) -> String {
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"EdDSA","typ":"JWT"}"#),
        b64(&serde_json::to_vec(&claims).unwrap()),
        b64(b"signature")
    )
}

/// The agent's token, as `jwt_authn` verified it.
fn agent_token() -> String {
    jwt(json!({"iss": "idp", "sub": "agent-1", "jti": "agent-token-1"}))
}

fn extra(creds: Value) -> Value {
    json!({
        "identity": {"jwt": {"provider": "idp", "agent_claim": "sub"}},
        "mcp": {"server_name": "tracker"},
        "credentials": creds,
    })
}

fn creds() -> Value {
    json!({
        "sts": {"cluster": "sts", "authority": "sts.internal", "path": "/token", "timeout_ms": 500},
        "definitions": {
            "tracker": {"scopes": {"read": "issues:read", "write": "issues:read issues:write"}},
            "tickets": {
                "header": "x-tickets-token",
                "format": "Token {token}",
                "scopes": {"read": "tickets.read", "write": "tickets.write"}
            }
        }
    })
}

fn setup(creds: Value) -> (MockHost, Rc<Plugin>) {
    let host = MockHost::new(1_800_000_000_000);
    let p = common::plugin(&host, "credentials.pcl", extra(creds));
    (host, p)
}

/// `jwt_authn` verified the agent's token: its claims are in the metadata.
fn verified(host: &MockHost) {
    for (c, v) in [("iss", "idp"), ("sub", "agent-1"), ("jti", "agent-token-1")] {
        host.set_property(&["metadata", "filter_metadata", JWT_NS, "idp", c], v);
    }
}

fn call(tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": tool, "arguments": {}}})
}

fn send_call(host: &MockHost, p: &Rc<Plugin>, tool: &str) -> (Stream, FilterAction) {
    let bearer = format!("Bearer {}", agent_token());
    common::send_mcp(
        host,
        p,
        &[("authorization", &bearer), ("cookie", "sid=agent-session")],
        &call(tool),
    )
}

/// The STS answers the last call-out with `status` and `body` (`None`: no answer in time).
fn sts_answers(host: &MockHost, s: &mut Stream, answer: Option<(u16, Value)>) {
    let token = host.state().http_calls.last().unwrap().token;
    let (headers, body) = match answer {
        None => (vec![], vec![]),
        Some((status, v)) => (
            vec![(":status".to_owned(), status.to_string())],
            serde_json::to_vec(&v).unwrap(),
        ),
    };
    let len = body.len();
    host.state().call_response = Some((headers, body));
    s.on_http_call_response(host, token, len);
    host.state().call_response = None;
}

fn minted(jti: &str, scope: &str) -> (String, Value) {
    let token =
        jwt(json!({"iss": "sts", "sub": "agent-1", "aud": "tracker", "scope": scope, "jti": jti}));
    let answer = json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": scope,
    });
    (token, answer)
}

/// The form fields of the last call-out.
fn form(host: &MockHost) -> Vec<(String, String)> {
    let body = host.state().http_calls.last().unwrap().body.clone();
    String::from_utf8(body)
        .unwrap()
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                let mut out = Vec::new();
                let b = s.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn field(f: &[(String, String)], k: &str) -> String {
    f.iter().find(|(n, _)| n == k).unwrap().1.clone()
}

/// The receipts of the stream, from the filter state.
fn receipts(host: &MockHost) -> Vec<Value> {
    let s = host.filter_state_str("wasm.portcullis.receipt").unwrap();
    let lines = match serde_json::from_str::<Value>(&s).unwrap() {
        Value::Array(a) => a,
        v => vec![v],
    };
    // Each line is `{"body": ..., "hash": ..., "sig": ...}`: the body, with its hash and signature.
    lines
        .into_iter()
        .map(|l| {
            let mut b = l["body"].clone();
            b["hash"] = l["hash"].clone();
            b["sig"] = l["sig"].clone();
            b
        })
        .collect()
}

fn everything_written(host: &MockHost) -> String {
    let st = host.state();
    let mut all = String::new();
    for (_, l) in &st.logs {
        all.push_str(l);
    }
    for v in st.filter_state.values() {
        all.push_str(&String::from_utf8_lossy(v));
    }
    if let Some(r) = &st.local_response {
        all.push_str(&String::from_utf8_lossy(&r.body));
        for (_, v) in &r.headers {
            all.push_str(v);
        }
    }
    all
}

#[test]
fn plain_egress_never_carries_the_agents_credentials_unless_passed() {
    let send = |host: &MockHost, p: &Rc<Plugin>| {
        host.new_stream(
            [
                (":method", "GET"),
                (":path", "/v1/things"),
                (":authority", "api.example.com"),
                (":scheme", "https"),
                ("authorization", "Bearer agent-wide"),
                ("Authorization", "Bearer second-copy"),
                ("proxy-authorization", "Basic cHJveHk6cHc="),
                ("cookie", "sid=1"),
                ("x-api-key", "k-123"),
                ("x-goog-api-key", "g-456"),
                ("accept", "application/json"),
            ]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect(),
        );
        let mut s = Stream::new(Rc::clone(p));
        s.on_request_headers(host, true)
    };
    let (host, p) = setup(json!({"strip": ["x-goog-api-key"]}));
    assert_eq!(send(&host, &p), FilterAction::Continue);
    for h in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-goog-api-key",
    ] {
        assert_eq!(host.request_header(h), None, "{h} reached the destination");
    }
    assert!(
        !host
            .state()
            .request_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization")),
        "no copy of the header is left, whatever its case"
    );
    assert_eq!(
        host.request_header("accept").as_deref(),
        Some("application/json")
    );
    // A pass for this host lets exactly the named header through.
    let (host, p) = setup(json!({"pass": [{"host": "api.example.com", "headers": ["x-api-key"]}]}));
    assert_eq!(send(&host, &p), FilterAction::Continue);
    assert_eq!(host.request_header("x-api-key").as_deref(), Some("k-123"));
    assert_eq!(host.request_header("authorization"), None);
    assert_eq!(host.request_header("cookie"), None);
}

#[test]
fn a_credential_never_rides_in_request_trailers() {
    // Even to a destination that may get the agent's token in a header.
    let (host, p) =
        setup(json!({"pass": [{"host": "api.example.com", "headers": ["authorization"]}]}));
    host.new_stream(
        [
            (":method", "GET"),
            (":path", "/v1/upload"),
            (":authority", "api.example.com"),
            (":scheme", "https"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect(),
    );
    let mut s = Stream::new(Rc::clone(&p));
    assert_eq!(s.on_request_headers(&host, false), FilterAction::Continue);
    host.state().request_trailers = vec![
        ("authorization".into(), "Bearer in-a-trailer".into()),
        ("x-api-key".into(), "k".into()),
        ("x-checksum".into(), "abc".into()),
    ];
    assert_eq!(s.on_request_trailers(&host), FilterAction::Continue);
    assert_eq!(
        host.state().request_trailers,
        vec![("x-checksum".to_owned(), "abc".to_owned())]
    );
}

#[test]
fn mcp_servers_get_the_agents_token_only_when_passed() {
    let (host, p) = setup(json!({}));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let (_, a) = common::send_mcp(&host, &p, &[("authorization", "Bearer agent-wide")], &init);
    assert_eq!(a, FilterAction::Continue);
    assert_eq!(host.request_header("authorization"), None);
    let (host, p) = setup(json!({"pass": [{"server": "tracker", "headers": ["authorization"]}]}));
    let (_, a) = common::send_mcp(&host, &p, &[("authorization", "Bearer agent-wide")], &init);
    assert_eq!(a, FilterAction::Continue);
    assert_eq!(
        host.request_header("authorization").as_deref(),
        Some("Bearer agent-wide")
    );
}

#[test]
fn a_read_gets_a_read_scoped_token_from_an_rfc8693_exchange_and_the_receipt_never_holds_it() {
    let (host, p) = setup(creds());
    verified(&host);
    let (mut s, a) = send_call(&host, &p, "get_issue");
    assert_eq!(a, FilterAction::Pause, "the request waits for the STS");
    assert_eq!(host.state().resumed, 0);
    let call = host.state().http_calls.last().unwrap().clone();
    assert_eq!(call.cluster, "sts");
    assert_eq!(call.timeout_ms, 500);
    let hdr = |n: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(hdr(":method").as_deref(), Some("POST"));
    assert_eq!(hdr(":path").as_deref(), Some("/token"));
    assert_eq!(hdr(":authority").as_deref(), Some("sts.internal"));
    assert_eq!(
        hdr("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let f = form(&host);
    assert_eq!(
        field(&f, "grant_type"),
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert_eq!(field(&f, "subject_token"), agent_token());
    assert_eq!(
        field(&f, "subject_token_type"),
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(field(&f, "audience"), "tracker");
    assert_eq!(field(&f, "scope"), "issues:read");

    let (token, answer) = minted("minted-1", "issues:read");
    sts_answers(&host, &mut s, Some((200, answer)));
    assert_eq!(host.state().resumed, 1, "the request goes on");
    assert!(host.state().local_response.is_none());
    assert_eq!(
        host.request_header("authorization"),
        Some(format!("Bearer {token}")),
        "the destination gets the minted credential, not the agent's"
    );
    assert_eq!(host.request_header("cookie"), None);
    let rs = receipts(&host);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!(rs[0]["event"], "action");
    assert_eq!(rs[0]["decision"], "MODIFY");
    assert!(
        rs[0]["modifications"]
            .as_array()
            .unwrap()
            .contains(&json!("inject_credential tracker"))
    );
    assert!(
        rs[0].get("credentials").is_none(),
        "member only when present"
    );
    assert_eq!(rs[1]["event"], "credential");
    assert_eq!(rs[1]["decision"], "MODIFY");
    assert!(rs[1]["sig"].is_object(), "a credential receipt is signed");
    assert_eq!(
        rs[1]["credentials"],
        json!([{"audience": "tracker", "cached": false, "id": "jti:minted-1",
                "name": "tracker", "scope": "issues:read"}])
    );
    assert_eq!(rs[1]["prev"], rs[0]["hash"], "the chain goes on");
    let all = everything_written(&host);
    assert!(
        !all.contains(&token),
        "the minted token was written somewhere"
    );
    assert!(
        !all.contains(&agent_token()),
        "the agent's token was written somewhere"
    );
}

#[test]
fn the_cache_saves_a_second_exchange_and_a_write_gets_the_write_scope() {
    let (host, p) = setup(creds());
    verified(&host);
    let (mut s, _) = send_call(&host, &p, "get_issue");
    let (token, answer) = minted("minted-1", "issues:read");
    sts_answers(&host, &mut s, Some((200, answer)));
    assert_eq!(host.state().http_calls.len(), 1);

    // Another read of the same principal for the same server and scope: from the cache.
    let (_, a) = send_call(&host, &p, "search_issues");
    assert_eq!(a, FilterAction::Continue, "no wait");
    assert_eq!(host.state().http_calls.len(), 1, "no second exchange");
    assert_eq!(
        host.request_header("authorization"),
        Some(format!("Bearer {token}"))
    );
    let rs = receipts(&host);
    assert_eq!(rs[1]["credentials"][0]["cached"], true);
    assert_eq!(rs[1]["credentials"][0]["id"], "jti:minted-1");

    // A write is not served the read credential: a new exchange, for the write scope.
    let (mut s, a) = send_call(&host, &p, "create_issue");
    assert_eq!(a, FilterAction::Pause);
    assert_eq!(host.state().http_calls.len(), 2);
    assert_eq!(field(&form(&host), "scope"), "issues:read issues:write");
    let (wtoken, answer) = minted("minted-2", "issues:read issues:write");
    sts_answers(&host, &mut s, Some((200, answer)));
    assert_eq!(
        host.request_header("authorization"),
        Some(format!("Bearer {wtoken}"))
    );

    // Past its expiry less the skew (300 - 30 s), the read credential is minted again.
    host.advance(270_000);
    let (_, a) = send_call(&host, &p, "get_issue");
    assert_eq!(a, FilterAction::Pause);
    assert_eq!(host.state().http_calls.len(), 3);

    // Two exchanges answered, one reuse; the third exchange is still in flight.
    assert_eq!(common::metric(&host, "portcullis_credentials_minted"), 2);
    assert_eq!(common::metric(&host, "portcullis_credentials_cached"), 1);
    assert_eq!(common::metric(&host, "portcullis_credentials_failed"), 0);
}

#[test]
fn http_egress_gets_its_credential_in_the_configured_header_with_the_method_scope() {
    let (host, p) = setup(creds());
    verified(&host);
    let bearer = format!("Bearer {}", agent_token());
    host.new_stream(
        [
            (":method", "POST"),
            (":path", "/v1/tickets"),
            (":authority", "tickets.example.com"),
            (":scheme", "https"),
            ("authorization", bearer.as_str()),
            ("content-length", "0"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect(),
    );
    let mut s = Stream::new(Rc::clone(&p));
    assert_eq!(s.on_request_headers(&host, true), FilterAction::Pause);
    let f = form(&host);
    assert_eq!(field(&f, "audience"), "tickets.example.com");
    assert_eq!(field(&f, "scope"), "tickets.write", "POST writes");
    let (token, mut answer) = minted("t-1", "tickets.write");
    answer.as_object_mut().unwrap().remove("scope");
    sts_answers(&host, &mut s, Some((200, answer)));
    assert_eq!(
        host.request_header("x-tickets-token"),
        Some(format!("Token {token}"))
    );
    assert_eq!(
        host.request_header("authorization"),
        None,
        "the agent's token is stripped"
    );
}

/// Deny by `filter:credential`, answered as JSON-RPC, with a signed receipt saying why.
fn assert_denied(host: &MockHost, why: &str) {
    let st = host.state();
    let r = st.local_response.as_ref().expect("answered locally");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["id"], 7);
    let text = body.to_string();
    assert!(text.contains("filter:credential"), "{text}");
    assert!(text.contains(why), "{why}: {text}");
    assert_eq!(st.resumed, 0, "nothing went upstream");
    drop(st);
    assert_eq!(
        host.filter_state_str("wasm.portcullis.rule").as_deref(),
        Some("filter:credential")
    );
    let rs = receipts(host);
    let last = rs.last().unwrap();
    assert_eq!(last["event"], "credential");
    assert_eq!(last["decision"], "DENY");
    assert_eq!(last["rule"], "filter:credential");
    assert!(last["reason"].as_str().unwrap().contains(why), "{last}");
    assert!(last["sig"].is_object());
    assert_eq!(common::metric(host, "portcullis_credentials_failed"), 1);
    assert_eq!(common::metric(host, "portcullis_credentials_minted"), 0);
}

#[test]
fn every_sts_failure_denies() {
    let bad_answers: Vec<(Option<(u16, Value)>, &str)> = vec![
        (None, "did not answer in time"),
        (Some((500, json!({"error": "boom"}))), "status 500"),
        (
            Some((400, json!({"error": "invalid_target"}))),
            "status 400",
        ),
        (
            Some((200, json!({"token_type": "Bearer"}))),
            "no `access_token`",
        ),
        (
            Some((200, minted("x", "issues:read issues:admin").1)),
            "not asked for",
        ),
    ];
    for (answer, why) in bad_answers {
        let (host, p) = setup(creds());
        verified(&host);
        let (mut s, _) = send_call(&host, &p, "get_issue");
        sts_answers(&host, &mut s, answer);
        assert_denied(&host, why);
    }
    // The STS cannot be called at all.
    let (host, p) = setup(creds());
    verified(&host);
    host.state().fail_http_calls = true;
    let (_, a) = send_call(&host, &p, "get_issue");
    assert_eq!(a, FilterAction::Pause);
    assert_denied(&host, "could not be called");
}

#[test]
fn no_verified_jwt_or_no_definition_denies_without_an_exchange() {
    // The agent sends a token, but `jwt_authn` verified nothing.
    let (host, p) = setup(creds());
    send_call(&host, &p, "get_issue");
    assert!(host.state().http_calls.is_empty());
    assert_denied(&host, "no JWT was verified");
    // Verified claims of another token than the one sent.
    let (host, p) = setup(creds());
    verified(&host);
    let other = jwt(json!({"iss": "idp", "sub": "agent-1", "jti": "stolen"}));
    common::send_mcp(
        &host,
        &p,
        &[("authorization", &format!("Bearer {other}"))],
        &call("get_issue"),
    );
    assert!(host.state().http_calls.is_empty());
    assert_denied(&host, "not the JWT `jwt_authn` verified");
    // A credential the configuration does not define: denied when decided.
    let (host, p) = setup(creds());
    verified(&host);
    send_call(&host, &p, "ghost");
    assert!(host.state().http_calls.is_empty());
    let body =
        String::from_utf8(host.state().local_response.as_ref().unwrap().body.clone()).unwrap();
    assert!(
        body.contains("credential `ghost` is not configured"),
        "{body}"
    );
}

#[test]
fn credential_definitions_need_a_verified_jwt() {
    let host = MockHost::new(0);
    let cfg = common::config("credentials.pcl", json!({"credentials": creds()}));
    let p = Plugin::configure(&host, &cfg);
    assert!(
        p.error()
            .unwrap()
            .to_string()
            .contains("needs `identity.jwt`"),
        "{:?}",
        p.error()
    );
}
