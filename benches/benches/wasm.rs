//! One MCP `tools/call` of about 1 KiB through the BUILT `portcullis.wasm` under the wasmtime
//! proxy-wasm host (`test-harness`): a whole HTTP stream per iteration — request headers (pause),
//! body (normalize + evaluate + session read/CAS write + signed receipt + headers), upstream
//! response headers and body (receipt header on the way back), then the context ends.
//!
//! Two cases: `allowed_1k` (the policy allows it; the request goes upstream) and `denied_1k`
//! (no rule allows the tool; the filter answers with a JSON-RPC error through its own response
//! callbacks). The module is compiled without fuel metering; `allowed_1k_metered` shows what the
//! test harness's fuel metering costs.
//!
//! Run: `cargo bench -p portcullis-benches --bench wasm -- --warm-up-time 2 --measurement-time 5`
//! (builds `target/wasm32-wasip1/release/portcullis.wasm` first if it is stale; or set
//! `PORTCULLIS_WASM=<path>`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark code: a failed setup aborts the run, and the harness macros write undocumented items"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use harness::{FilterModule, Host, HostConfig};
use portcullis_benches::{
    BASIC_POLICY, TOOL_RESULT, mcp_headers, plugin_config, tools_call_body, wasm_stream,
};

/// One complete stream; returns whether the request went upstream.
fn one(host: &mut Host, body: &[u8]) -> bool {
    wasm_stream(
        host,
        &mcp_headers(Some("bench-session"), body.len()),
        body,
        TOOL_RESULT,
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let path = harness::build::filter_wasm().unwrap();
    let wasm = std::fs::read(&path).unwrap();
    let config = plugin_config(BASIC_POLICY, &serde_json::json!({})).unwrap();
    let allowed = tools_call_body("read_file", 1024);
    let denied = tools_call_body("format_disk", 1024);

    let unmetered = FilterModule::from_bytes_unmetered(&wasm).unwrap();
    let mut host = Host::start(&unmetered, HostConfig::new(config.clone())).unwrap();
    assert!(
        one(&mut host, &allowed),
        "read_file must be allowed by the bench policy"
    );
    assert!(!one(&mut host, &denied), "format_disk must be denied");

    let mut g = c.benchmark_group("wasm");
    g.bench_function("allowed_1k", |b| {
        b.iter(|| black_box(one(&mut host, black_box(&allowed))))
    });
    g.bench_function("denied_1k", |b| {
        b.iter(|| black_box(one(&mut host, black_box(&denied))))
    });
    let metered = FilterModule::from_bytes(&wasm).unwrap();
    let mut host = Host::start(&metered, HostConfig::new(config)).unwrap();
    g.bench_function("allowed_1k_metered", |b| {
        b.iter(|| black_box(one(&mut host, black_box(&allowed))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
