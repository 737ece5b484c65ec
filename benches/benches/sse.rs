//! The response path over an SSE stream, natively under the mock host: 1 MiB of server events
//! (progress notifications, then the tool result) through `Stream::on_response_body`, cut into
//! chunks of 64 KiB, 1 KiB and 1 byte; and one event of 1 MiB (a large result) arriving in
//! 64 KiB and 1-byte chunks. The pack (`testdata/scenarios/policies/taint.pcl`) reads results,
//! so the result is judged too. Each byte must be scanned a bounded number of times: the time
//! per MiB may not grow with the number of chunks beyond the per-call cost.
//!
//! Run: `cargo bench -p portcullis-benches --bench sse`. `PORTCULLIS_SSE_KIB=64` scales the
//! streams down (to time a build that is not linear).

use std::rc::Rc;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use portcullis_benches::{mcp_headers, plugin_config};
use serde_json::json;

/// The stream size: 1 MiB, or `PORTCULLIS_SSE_KIB` KiB.
fn size() -> usize {
    std::env::var("PORTCULLIS_SSE_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024)
        * 1024
}

/// About 1 MiB of progress notifications, then the result of call 42.
fn notifications() -> Vec<u8> {
    let mut out = Vec::with_capacity(size() + 4096);
    let mut n = 0u64;
    while out.len() < size() {
        let ev = json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "t", "progress": n, "message": "still working on it"}});
        out.extend_from_slice(format!("event: message\ndata: {ev}\n\n").as_bytes());
        n += 1;
    }
    let result = json!({"jsonrpc": "2.0", "id": 42, "result": {"content": [{"type": "text", "text": "done"}]}});
    out.extend_from_slice(format!("event: message\ndata: {result}\n\n").as_bytes());
    out
}

/// One event of about 1 MiB: the result of call 42 with a large text.
fn one_big_event() -> Vec<u8> {
    let result = json!({"jsonrpc": "2.0", "id": 42,
        "result": {"content": [{"type": "text", "text": "r".repeat(size() - 200)}]}});
    format!("event: message\ndata: {result}\n\n").into_bytes()
}

/// A forwarded `tools/call` of `query_db`, then the response `body` in `chunk`-byte pieces.
fn stream(host: &MockHost, plugin: &Rc<Plugin>, body: &[u8], chunk: usize) -> usize {
    let call = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "query_db", "arguments": {"sql": "select 1", "limit": 5}}}))
    .unwrap_or_default();
    host.new_stream(mcp_headers(Some("bench-session"), call.len()));
    let mut s = Stream::new(Rc::clone(plugin));
    s.on_request_headers(host, false);
    host.state().request_body = call.clone();
    assert_eq!(
        s.on_request_body(host, call.len(), true),
        FilterAction::Continue
    );
    host.state().response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/event-stream".into()),
    ];
    s.on_response_headers(host);
    let mut out = 0usize;
    let n = body.len().div_ceil(chunk);
    for (i, c) in body.chunks(chunk).enumerate() {
        host.state().response_body = c.to_vec();
        s.on_response_body(host, c.len(), i + 1 == n);
        out += host.state().response_body.len();
    }
    host.state().logs.clear();
    out
}

fn bench(c: &mut Criterion) {
    let host = MockHost::new(1_800_000_000_000);
    let cfg =
        plugin_config("testdata/scenarios/policies/taint.pcl", &json!({})).unwrap_or_default();
    let plugin = Rc::new(Plugin::configure(&host, cfg.as_bytes()));
    assert!(plugin.error().is_none(), "{:?}", plugin.error());
    let many = notifications();
    let big = one_big_event();
    let mut g = c.benchmark_group("sse_1mib");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(many.len() as u64));
    for chunk in [64 * 1024, 1024, 1] {
        g.bench_function(format!("notifications_chunks_of_{chunk}"), |b| {
            b.iter(|| black_box(stream(&host, &plugin, black_box(&many), chunk)))
        });
    }
    g.throughput(Throughput::Bytes(big.len() as u64));
    for chunk in [64 * 1024, 1] {
        g.bench_function(format!("one_event_chunks_of_{chunk}"), |b| {
            b.iter(|| black_box(stream(&host, &plugin, black_box(&big), chunk)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
