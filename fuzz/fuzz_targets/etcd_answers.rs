//! Fuzz what etcd answers (`state.backend: etcd`, docs/state.md), through the whole filter under
//! the mock host: the first read of every containment record, a watch message, and the answer to
//! the write a kill waits for, each arbitrary bytes with an arbitrary gRPC status. Nothing may
//! panic or misuse the host, and whatever etcd says, a killed agent's request never goes upstream
//! and an agent is never let through while the cache is out of sync and does not know it.
//!
//! Input layout: byte 0 picks where the bytes go (0: the read's answer, 1: a watch message,
//! 2: the kill's write answer), byte 1 is the gRPC status; the rest is the message.
#![no_main]

use std::rc::Rc;

use base64::Engine as _;
use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use libfuzzer_sys::fuzz_target;

const PACK: &str = r#"
pack "fuzz" {
  version "1.0.0"
  mode enforce
  default deny "no"
  unknown_session allow "fine"
}
rule reads { when kind == mcp and operation == "tools/call" and tool == "read" allow "reads" }
rule secrets { when kind == mcp and tool == "secret" deny "never" then kill }
"#;

fn config() -> Vec<u8> {
    let ast = policy::syntax::parse(PACK).unwrap_or_else(|e| panic!("{e:?}"));
    let unsigned = policy::codegen::compile(&ast).unwrap_or_else(|e| panic!("{e:?}"));
    let key = signing_key_from_seed([1; 32]);
    let signed = bundle::sign(&unsigned, &key).unwrap_or_else(|e| panic!("{e:?}"));
    serde_json::to_vec(&serde_json::json!({
        "bundle": { "inline_base64": base64::engine::general_purpose::STANDARD.encode(signed) },
        "trusted_bundle_keys": [format_verifying_key(&key.verifying_key())],
        "signing_key": { "inline": format_signing_key(&signing_key_from_seed([2; 32])) },
        "session": { "key": { "source": "header", "name": "x-run" } },
        "identity": { "headers": { "agent": "x-agent" } },
        "state": { "backend": "etcd", "etcd": { "cluster": "etcd" } },
    }))
    .unwrap_or_default()
}

thread_local! {
    static CONFIG: Vec<u8> = config();
}

fn last_token(host: &MockHost) -> u32 {
    host.state().grpc_calls.last().map_or(0, |c| c.token)
}

/// One `tools/call` of `tool` by agent `agent`: (the stream, forwarded?).
fn call(host: &MockHost, p: &Rc<Plugin>, agent: &str, tool: &str) -> (Stream, bool) {
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#);
    host.new_stream(
        [
            (":method", "POST"),
            (":path", "/mcp"),
            (":authority", "w"),
            (":scheme", "http"),
            ("content-type", "application/json"),
            ("x-run", "r"),
            ("x-agent", agent),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect(),
    );
    let mut s = Stream::new(Rc::clone(p));
    s.on_request_headers(host, false);
    host.state().request_body = body.clone().into_bytes();
    let a = s.on_request_body(host, body.len(), true);
    let forwarded = a == FilterAction::Continue && host.state().local_response.is_none();
    (s, forwarded)
}

fn deliver(host: &MockHost, msg: &[u8], f: impl FnOnce(usize)) {
    host.state().grpc_message = Some(msg.to_vec());
    f(msg.len());
    host.state().grpc_message = None;
}

fuzz_target!(|data: &[u8]| {
    let [mode, status, msg @ ..] = data else {
        return;
    };
    let status = u32::from(*status % 17);
    let host = MockHost::new(1_800_000_000_000);
    let p = Rc::new(CONFIG.with(|c| Plugin::configure(&host, c)));
    assert_eq!(p.error(), None);
    let read = last_token(&host);
    if mode % 3 == 0 {
        deliver(&host, msg, |n| p.on_grpc_call_response(&host, read, status, n));
    } else {
        // RangeResponse { header { revision 5 } }, then the watch confirmed.
        deliver(&host, &[0x0a, 0x02, 0x18, 0x05], |n| p.on_grpc_call_response(&host, read, 0, n));
        let watch = last_token(&host);
        deliver(&host, &[0x0a, 0x02, 0x18, 0x05, 0x18, 0x01], |n| {
            p.on_grpc_stream_message(&host, watch, n);
        });
        if mode % 3 == 1 {
            deliver(&host, msg, |n| p.on_grpc_stream_message(&host, watch, n));
        }
    }
    let (_, forwarded) = call(&host, &p, "a", "read");
    let synced = host.state().grpc_calls.iter().any(|c| c.method.ends_with("/Watch"));
    if !synced {
        assert!(!forwarded, "an unknown agent went through while the cache was not in sync");
    }
    host.state().local_response = None;
    let (mut s, forwarded) = call(&host, &p, "a", "secret");
    assert!(!forwarded, "a killed agent's request went upstream");
    if mode % 3 == 2 && host.state().local_response.is_none() {
        let write = last_token(&host);
        deliver(&host, msg, |n| s.on_grpc_call_response(&host, write, status, n));
        assert!(host.state().resumed == 0, "a kill was resumed upstream");
    }
    p.on_tick(&host);
    assert!(host.state().violations.is_empty(), "{:?}", host.state().violations);
});
