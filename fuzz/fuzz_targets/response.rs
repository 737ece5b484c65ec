//! Fuzz the response path (`filter_core` through `Stream`, under the mock host): a forwarded
//! `tools/call`, then an arbitrary answer from the server, as SSE or JSON, cut into chunks. It
//! must never panic nor misuse the host, and what reaches the agent must stay readable: every
//! event it gets from an SSE answer that a client reads as a message (no `event:` type, or
//! `message`) carries JSON data (or none), however the answer was cut. Events of another type
//! (the legacy transport's `endpoint`) are no message to any client and may carry any text.
//!
//! Input layout: byte 0 picks the framing (bit 0: SSE, else JSON; bit 1: end with trailers),
//! byte 1 is the chunk stride; the rest is the response body.
#![no_main]

use std::rc::Rc;

use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use libfuzzer_sys::fuzz_target;

/// A pack that reads results (so they are judged) and allows the call.
const PACK: &str = r#"
pack "fuzz" {
  version "1.0.0"
  mode enforce
  default deny "no"
  unknown_session allow "fine"
}
rule calls { when kind == mcp and operation == "tools/call" allow "in scope" }
rule secrets { when operation == "tools/result" and risk.secrets == true modify "redacted" { redact_secrets } }
rule injected { when operation == "tools/result" and args.injection == true allow "tainted" then taint "x" }
rule leaky { when operation == "tools/result" and args.text contains "deny-me" deny "denied" }
rule no_elicit { when operation == "elicitation/create" deny "no questions" }
"#;

fn config() -> Vec<u8> {
    let ast = policy::syntax::parse(PACK).unwrap_or_else(|e| panic!("{e:?}"));
    let unsigned = policy::codegen::compile(&ast).unwrap_or_else(|e| panic!("{e:?}"));
    let key = signing_key_from_seed([1; 32]);
    let signed = bundle::sign(&unsigned, &key).unwrap_or_else(|e| panic!("{e:?}"));
    let b64 = {
        use base64_like::encode;
        encode(&signed)
    };
    serde_json::to_vec(&serde_json::json!({
        "bundle": { "inline_base64": b64 },
        "trusted_bundle_keys": [format_verifying_key(&key.verifying_key())],
        "signing_key": { "inline": format_signing_key(&signing_key_from_seed([2; 32])) },
        "session": { "key": { "source": "header", "name": "x-run" } },
        "limits": { "max_body_bytes": 4096 },
    }))
    .unwrap_or_default()
}

/// Standard base64 with padding (the fuzz crate keeps its dependencies few).
mod base64_like {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(b: &[u8]) -> String {
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

thread_local! {
    static CONFIG: Vec<u8> = config();
}

/// What the agent gets for `body` cut in `stride`-byte chunks.
fn run(body: &[u8], sse: bool, trailers: bool, stride: usize) -> Vec<u8> {
    let host = MockHost::new(1_800_000_000_000);
    let plugin = Rc::new(CONFIG.with(|c| Plugin::configure(&host, c)));
    assert_eq!(plugin.error(), None);
    let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
    host.new_stream(
        [
            (":method", "POST"),
            (":path", "/mcp"),
            (":authority", "w"),
            (":scheme", "http"),
            ("content-type", "application/json"),
            ("x-run", "r"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect(),
    );
    let mut s = Stream::new(Rc::clone(&plugin));
    s.on_request_headers(&host, false);
    host.state().request_body = call.to_vec();
    assert_eq!(s.on_request_body(&host, call.len(), true), FilterAction::Continue);
    let ct = if sse { "text/event-stream" } else { "application/json" };
    host.state().response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), ct.into()),
    ];
    s.on_response_headers(&host);
    let mut agent = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    let chunks: Vec<&[u8]> = body.chunks(stride.max(1)).collect();
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len() && !trailers;
        held.extend_from_slice(c);
        host.state().response_body = held.clone();
        if s.on_response_body(&host, held.len(), last) == FilterAction::Continue {
            agent.extend_from_slice(&host.state().response_body);
            held.clear();
        }
    }
    if trailers {
        host.state().response_body_released = held.is_empty();
        host.state().response_body = held.clone();
        s.on_response_trailers(&host);
        if !held.is_empty() {
            agent.extend_from_slice(&host.state().response_body);
        }
    }
    assert!(host.state().violations.is_empty(), "{:?}", host.state().violations);
    agent
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&stride, body)) = rest.split_first() else {
        return;
    };
    let sse = flags & 1 != 0;
    let trailers = flags & 2 != 0;
    let cut = run(body, sse, trailers, usize::from(stride));
    if sse {
        // Every event the agent reads as a message is JSON (or carries no data).
        for ev in cut.split(|b| *b == b'\n').collect::<Vec<_>>().split(|l| l.is_empty()) {
            let data: Vec<&[u8]> = ev
                .iter()
                .filter_map(|l| l.strip_prefix(b"data:"))
                .map(|d| d.strip_prefix(b" ").unwrap_or(d))
                .collect();
            // The last `event:` field names the type; an empty one is `message`.
            let kind = ev
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix(b"event:"))
                .map(|k| k.strip_prefix(b" ").unwrap_or(k));
            let a_message = kind.is_none_or(|k| k.is_empty() || k == b"message");
            if data.is_empty() || !a_message || ev.iter().any(|l| l.contains(&b'\r')) {
                continue;
            }
            let joined = data.join(&b'\n');
            let text = String::from_utf8_lossy(&joined);
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "an event the agent gets is not json: {text:?}"
            );
        }
    }
});
