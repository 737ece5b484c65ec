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

fn config(checkpoint_every: u32) -> Vec<u8> {
    plugin_config(
        BASIC_POLICY,
        &json!({ "receipts": { "checkpoint_every": checkpoint_every } }),
    )
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

fn bench(c: &mut Criterion) {
    let body = body();
    let mut g = c.benchmark_group("filter_request_1kib_tools_call");
    for (name, every, principal) in [
        ("every_receipt_signed", 1u32, None),
        ("allow_receipts_batched_16", 16, None),
        // The same request from a verified agent (its mTLS SPIFFE id): the principal's record is
        // read on every request (and, an uncontained agent in its current run, never written).
        (
            "allow_receipts_batched_16_known_principal",
            16,
            Some("spiffe://corp.example/ns/agents/sa/coder"),
        ),
    ] {
        let host = MockHost::new(1_800_000_000_000);
        if let Some(p) = principal {
            host.set_property(&["connection", "uri_san_peer_certificate"], p);
        }
        let plugin = Rc::new(Plugin::configure(&host, &config(every)));
        assert!(plugin.error().is_none(), "{:?}", plugin.error());
        assert_eq!(one_request(&host, &plugin, &body), FilterAction::Continue);
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
