//! The whole filter path for one request, natively under the mock host: request headers (strip,
//! identity, route), body, normalize, evaluate, session read + CAS write, receipt sealed, headers
//! set. A 1 KiB `tools/call` that the scenario pack allows; once more from a verified agent (the
//! principal record's read on every request, `docs/containment.md`).
//!
//! Run: `cargo bench -p portcullis-benches --bench filter`.

use std::rc::Rc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use portcullis_benches::{BASIC_POLICY, mcp_headers, plugin_config};
use serde_json::json;

fn config(checkpoint_every: u32, etcd: bool) -> Vec<u8> {
    let mut extra = json!({ "receipts": { "checkpoint_every": checkpoint_every } });
    if etcd {
        extra["state"] = json!({ "backend": "etcd", "etcd": { "cluster": "etcd" } });
    }
    plugin_config(BASIC_POLICY, &extra)
        .map(String::into_bytes)
        .unwrap_or_default()
}

fn headers() -> Vec<(String, String)> {
    mcp_headers(Some("bench-session"), 1024)
}

/// A 1 KiB `tools/call` of `query_db` (allowed by the `queries` rule).
fn body() -> Vec<u8> {
    let mut sql = String::from("select id, name, team from employees where team = 'platform'");
    let mut b = Vec::new();
    while b.len() < 1024 {
        sql.push_str(" and id > 0");
        b = serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "id": 42, "method": "tools/call",
            "params": { "name": "query_db", "arguments": { "sql": sql, "limit": 50 } }
        }))
        .unwrap_or_default();
    }
    b
}

fn one_request(host: &MockHost, plugin: &Rc<Plugin>, body: &[u8]) -> FilterAction {
    host.new_stream(headers());
    let mut stream = Stream::new(Rc::clone(plugin));
    let a = stream.on_request_headers(host, false);
    if a != FilterAction::Pause {
        return a;
    }
    host.state().request_body = body.to_vec();
    stream.on_request_body(host, body.len(), true)
}

/// Answer the watcher's first read (no records, revision 5) and confirm its watch, as etcd would.
fn sync_watch(host: &MockHost, plugin: &Plugin) {
    let read = host.state().grpc_calls.last().map(|c| c.token).unwrap_or(0);
    // RangeResponse { header { revision: 5 } }
    host.state().grpc_message = Some(vec![0x0a, 0x02, 0x18, 0x05]);
    plugin.on_grpc_call_response(host, read, 0, 4);
    let watch = host.state().grpc_calls.last().map(|c| c.token).unwrap_or(0);
    // WatchResponse { header { revision: 5 }, created: true }
    host.state().grpc_message = Some(vec![0x0a, 0x02, 0x18, 0x05, 0x18, 0x01]);
    plugin.on_grpc_stream_message(host, watch, 6);
    host.state().grpc_message = None;
    host.state().grpc_calls.clear();
}

fn bench(c: &mut Criterion) {
    let body = body();
    let mut g = c.benchmark_group("filter_request_1kib_tools_call");
    for (name, every, principal, etcd) in [
        ("every_receipt_signed", 1u32, None, false),
        ("allow_receipts_batched_16", 16, None, false),
        // The same request from a verified agent (its mTLS SPIFFE id): the principal's record is
        // read on every request (and, an uncontained agent in its current run, never written).
        (
            "allow_receipts_batched_16_known_principal",
            16,
            Some("spiffe://corp.example/ns/agents/sa/coder"),
            false,
        ),
        // The same with `state.backend: etcd`, its watch in sync: an uncontained principal's
        // ALLOW reads the local cache and makes no call-out (docs/state.md).
        (
            "allow_receipts_batched_16_known_principal_etcd",
            16,
            Some("spiffe://corp.example/ns/agents/sa/coder"),
            true,
        ),
    ] {
        let host = MockHost::new(1_800_000_000_000);
        if let Some(p) = principal {
            host.set_property(&["connection", "uri_san_peer_certificate"], p);
        }
        let plugin = Rc::new(Plugin::configure(&host, &config(every, etcd)));
        assert!(plugin.error().is_none(), "{:?}", plugin.error());
        if etcd {
            sync_watch(&host, &plugin);
        }
        assert_eq!(one_request(&host, &plugin, &body), FilterAction::Continue);
        if etcd {
            assert!(
                host.state().grpc_calls.is_empty(),
                "an ALLOW made a call-out"
            );
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                // Keep the mock's log from growing without bound.
                host.state().logs.clear();
                black_box(one_request(&host, &plugin, black_box(&body)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
