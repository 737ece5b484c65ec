//! Fuzz what the STS answers a token exchange (`inject credential`, docs/credentials.md), through
//! the whole filter under the mock host: an arbitrary status and body. Nothing may panic or
//! misuse the host; the request goes upstream only on a 200 whose answer the filter accepted,
//! then with exactly one `authorization: Bearer <visible ASCII>`; the token is never in a log
//! line or the filter state.
//!
//! Input layout: byte 0 picks the status (0: 200, 1: 400, 2: 503, else no answer in time), the
//! rest is the answer's body.
#![no_main]

use std::rc::Rc;

use base64::Engine as _;
use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
use filter_core::mock::MockHost;
use filter_core::{Plugin, Stream};
use libfuzzer_sys::fuzz_target;

const PACK: &str = r#"
pack "fuzz" {
  version "1.0.0"
  mode enforce
  default deny "no"
}
rule tracker { when kind == mcp and operation == "tools/call" modify "minted" { inject credential "tracker" } }
"#;

const JWT_NS: &str = "envoy.filters.http.jwt_authn";

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// The agent's JWT: `{"sub":"agent-1"}` (the mock stands in for jwt_authn's verification).
fn agent_token() -> String {
    format!("{}.{}.{}", b64(b"{}"), b64(br#"{"sub":"agent-1"}"#), b64(b"s"))
}

fn config() -> Vec<u8> {
    let ast = policy::syntax::parse(PACK).unwrap_or_else(|e| panic!("{e:?}"));
    let unsigned = policy::codegen::compile(&ast).unwrap_or_else(|e| panic!("{e:?}"));
    let key = signing_key_from_seed([1; 32]);
    let signed = bundle::sign(&unsigned, &key).unwrap_or_else(|e| panic!("{e:?}"));
    serde_json::to_vec(&serde_json::json!({
        "bundle": { "inline_base64": base64::engine::general_purpose::STANDARD.encode(signed) },
        "trusted_bundle_keys": [format_verifying_key(&key.verifying_key())],
        "signing_key": { "inline": format_signing_key(&signing_key_from_seed([2; 32])) },
        "identity": { "jwt": { "provider": "idp", "agent_claim": "sub" } },
        "credentials": {
            "sts": { "cluster": "sts" },
            "definitions": { "tracker": { "scopes": { "read": "r", "write": "r w" } } }
        },
    }))
    .unwrap_or_default()
}

thread_local! {
    static CONFIG: Vec<u8> = config();
}

fuzz_target!(|data: &[u8]| {
    let [status, body @ ..] = data else {
        return;
    };
    let host = MockHost::new(1_800_000_000_000);
    let p = Rc::new(CONFIG.with(|c| Plugin::configure(&host, c)));
    assert_eq!(p.error(), None);
    host.set_property(&["metadata", "filter_metadata", JWT_NS, "idp", "sub"], "agent-1");
    let req = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
    let bearer = format!("Bearer {}", agent_token());
    host.new_stream(
        [
            (":method", "POST"),
            (":path", "/mcp"),
            (":authority", "w"),
            (":scheme", "http"),
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect(),
    );
    let mut s = Stream::new(Rc::clone(&p));
    s.on_request_headers(&host, false);
    host.state().request_body = req.to_vec();
    s.on_request_body(&host, req.len(), true);
    let Some(token) = host.state().http_calls.last().map(|c| c.token) else {
        panic!("no exchange was started");
    };
    let headers = match status {
        0 => vec![(":status".to_owned(), "200".to_owned())],
        1 => vec![(":status".to_owned(), "400".to_owned())],
        2 => vec![(":status".to_owned(), "503".to_owned())],
        _ => vec![],
    };
    host.state().call_response = Some((headers, body.to_vec()));
    let logged_before = host.state().logs.len();
    s.on_http_call_response(&host, token, body.len());
    host.state().call_response = None;
    let st = host.state();
    assert!(st.violations.is_empty(), "{:?}", st.violations);
    let forwarded = st.resumed > 0;
    assert_eq!(forwarded, st.local_response.is_none(), "neither forwarded nor answered");
    if forwarded {
        assert_eq!(*status, 0, "forwarded without a 200");
        let auth: Vec<&String> = st
            .request_headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(auth.len(), 1, "{auth:?}");
        let minted = auth[0].strip_prefix("Bearer ").unwrap_or_else(|| panic!("{auth:?}"));
        assert!(!minted.is_empty() && minted.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_ne!(minted, agent_token(), "the agent's own token went upstream");
        // Whether the token was written anywhere can only be told for a token that does not
        // occur in ordinary text by chance: a one-letter `access_token` ("a") is in every log
        // line. So the check reads tokens of at least 16 bytes (real ones are far longer), in
        // what was written after the STS answered (the lines before cannot hold the token).
        if minted.len() >= 16 {
            for (_, line) in st.logs.iter().skip(logged_before) {
                assert!(!line.contains(minted), "the token is in a log line: {line}");
            }
            for v in st.filter_state.values() {
                assert!(!String::from_utf8_lossy(v).contains(minted), "the token is in the filter state");
            }
        }
    }
});
