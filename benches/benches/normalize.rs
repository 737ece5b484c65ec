//! Request normalization cost: a 1 KiB MCP `tools/call` (strict parse, JSON-RPC checks, risk
//! scan; the parse and the scan also alone), the same with 2026-07-28 routing headers, an HTTP egress request with a JSON body,
//! and a MODIFY rewrite of the 1 KiB body.
//!
//! Run: `cargo bench -p portcullis-benches --bench normalize -- --warm-up-time 1 --measurement-time 3`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "benchmark code: a failed setup aborts the run"
)]

use std::hint::black_box;

use bundle::verdict::{Modification, PathSegment};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filter_core::normalize::{
    BodyBuffer, NormalizeConfig, RequestHead, apply_modifications, normalize_http, normalize_mcp,
};

/// A `write_file` call padded to exactly 1024 bytes with realistic content.
fn tools_call_1k() -> Vec<u8> {
    let prefix = r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/repo/src/lib.rs","branch":"feature/normalize","content":""#;
    let suffix = r#""},"_meta":{"progressToken":"p-42"}}}"#;
    let line = "fn add(a: i64, b: i64) -> i64 { a + b }\\n";
    let mut content = String::new();
    while prefix.len() + content.len() + suffix.len() < 1024 {
        content.push_str(line);
    }
    let mut body = format!("{prefix}{content}{suffix}");
    while body.len() > 1024 {
        content.pop();
        if content.ends_with('\\') {
            content.pop();
        }
        body = format!("{prefix}{content}{suffix}");
    }
    while body.len() < 1024 {
        content.push(' ');
        body = format!("{prefix}{content}{suffix}");
    }
    body.into_bytes()
}

fn head(extra: &[(&str, &str)]) -> RequestHead {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
        (
            "mcp-session-id".to_owned(),
            "878b6cb053da4fbf822fb5acd1356778".to_owned(),
        ),
        ("mcp-protocol-version".to_owned(), "2025-11-25".to_owned()),
        ("user-agent".to_owned(), "python-httpx/0.28.1".to_owned()),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    RequestHead {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "workbench.local:8080".into(),
        path: "/mcp".into(),
        headers,
    }
}

fn bench(c: &mut Criterion) {
    let body = tools_call_1k();
    assert_eq!(body.len(), 1024);
    let cfg = NormalizeConfig::default();
    let h = head(&[]);
    assert_eq!(
        normalize_mcp(&h, &body, &cfg).unwrap().messages[0]
            .action
            .tool
            .as_deref(),
        Some("write_file")
    );

    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Bytes(1024));
    g.bench_function("mcp_tools_call_1k", |b| {
        b.iter(|| normalize_mcp(black_box(&h), black_box(&body), &cfg).unwrap())
    });
    let value = filter_core::normalize::parse_json(&body, 64).unwrap();
    g.bench_function("strict_parse_1k", |b| {
        b.iter(|| filter_core::normalize::parse_json(black_box(&body), 64).unwrap())
    });
    g.bench_function("serde_json_from_slice_1k_reference", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    g.bench_function("risk_scan_1k", |b| {
        b.iter(|| filter_core::normalize::risk::scan_value(black_box(&value)))
    });
    g.bench_function("mcp_tools_call_1k_chunked_16x64", |b| {
        b.iter(|| {
            let mut buf = BodyBuffer::new(cfg.max_body_bytes);
            for chunk in body.chunks(64) {
                buf.push(chunk).unwrap();
            }
            normalize_mcp(black_box(&h), buf.as_bytes(), &cfg).unwrap()
        })
    });
    let h2026 = head(&[("mcp-method", "tools/call"), ("mcp-name", "write_file")]);
    g.bench_function("mcp_tools_call_1k_2026_headers", |b| {
        b.iter(|| normalize_mcp(black_box(&h2026), black_box(&body), &cfg).unwrap())
    });
    let inspect = NormalizeConfig {
        inspect_http_bodies: true,
        ..NormalizeConfig::default()
    };
    let egress = RequestHead {
        method: "POST".into(),
        scheme: "https".into(),
        authority: "api.github.com".into(),
        path: "/repos/o/r/issues?x=1".into(),
        headers: vec![("content-type".into(), "application/json".into())],
    };
    g.bench_function("http_post_json_1k", |b| {
        b.iter(|| normalize_http(black_box(&egress), Some(black_box(&body)), &inspect).unwrap())
    });
    let mods = [
        Modification::RedactArg {
            path: vec![PathSegment::Key("branch".into())],
        },
        Modification::RedactSecrets,
    ];
    g.bench_function("modify_redact_1k", |b| {
        b.iter(|| apply_modifications(black_box(&body), 0, &mods).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
