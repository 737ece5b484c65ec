//! Policy evaluation cost per action for generated packs of 10 .. 10,000 rules, compile time,
//! and bundle bytes per rule (printed).
//!
//! Run: `cargo bench -p portcullis-benches --bench eval -- --warm-up-time 1 --measurement-time 3`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "benchmark code: a failed setup aborts the run"
)]

use std::fmt::Write as _;
use std::hint::black_box;

use bundle::action::Action;
use bundle::session::SessionState;
use bundle::{Bundle, Trust};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const NOW: u64 = 1_800_000_000_000;

/// A realistic mix: tool allowlists with argument constraints, numeric limits, branch globs,
/// HTTP host allowlists, a few regex checks; a fixed handful of wildcard rules and classes.
fn pack(rules: usize) -> String {
    let mut s = String::from(
        r#"pack "bench" {
  version "1.0.0"
  mode enforce
  default deny "not allowed"
}
let methods_read = ["GET", "HEAD"]
class reads risk low readonly { when kind == mcp and tool glob ["read_*", "list_*"] }
class egress risk medium { when kind == http and operation in ["POST", "PUT", "PATCH"] }
class secrets risk high { when tool glob "*secret*" }
rule no_secrets_out { when kind == http and risk.secrets == true deny "secrets never leave" }
rule secret_after_taint { when session.tainted("untrusted_instruction") and class secrets deny "no" then kill }
rule big_bodies { when request.size > 10000000 deny "too big" }
"#,
    );
    let patterns = [
        "sk-[a-z0-9]{20,}",
        "AKIA[0-9A-Z]{16}",
        "[0-9]{3}-[0-9]{2}-[0-9]{4}",
    ];
    for i in 0..rules.saturating_sub(3) {
        match i % 5 {
            0 => writeln!(
                s,
                r#"rule allow_tool_{i} {{ when tool == "tool_{i}" and args.path prefix "/repo" allow "in repo" }}"#
            ),
            1 => writeln!(
                s,
                r#"rule limit_{i} {{ when tool == "query_{i}" and args.limit > 100 deny "limit too high" }}"#
            ),
            2 => writeln!(
                s,
                r#"rule branch_{i} {{ when tool == "push_{i}" and args.branch glob ["deps/*", "fix/*"] allow "branch ok" }}"#
            ),
            3 => writeln!(
                s,
                r#"rule host_{i} {{ when kind == http and target.host == "api{i}.example.com" and operation in methods_read allow "read api" }}"#
            ),
            _ => writeln!(
                s,
                r#"rule dlp_{i} {{ when tool == "send_{i}" and args.body matches "{}" deny "secret in body" }}"#,
                patterns[(i / 5) % patterns.len()]
            ),
        }
        .unwrap();
    }
    s
}

fn compile(src: &str) -> Vec<u8> {
    let p = policy::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    policy::codegen::compile(&p).unwrap()
}

fn actions() -> Vec<(&'static str, Action)> {
    let call: Action = serde_json::from_value(serde_json::json!({
        "kind": "mcp", "operation": "tools/call", "tool": "tool_5",
        "arguments": {"path": "/repo/src/main.rs"}
    }))
    .unwrap();
    let dlp: Action = serde_json::from_value(serde_json::json!({
        "kind": "mcp", "operation": "tools/call", "tool": "send_9",
        "arguments": {"body": "here is sk-abcdefghijklmnopqrstuvwxyz0123"}
    }))
    .unwrap();
    let http: Action = serde_json::from_value(serde_json::json!({
        "kind": "http", "operation": "GET",
        "target": {"host": "api8.example.com", "port": 443, "path": "/v1", "scheme": "https"}
    }))
    .unwrap();
    let unknown: Action = serde_json::from_value(serde_json::json!({
        "kind": "mcp", "operation": "tools/call", "tool": "not_in_pack", "arguments": {}
    }))
    .unwrap();
    vec![
        ("allowed_call", call),
        ("regex_deny", dlp),
        ("http_get", http),
        ("default_deny", unknown),
    ]
}

fn bench_eval(c: &mut Criterion) {
    let session = SessionState::new(NOW);
    let mut g = c.benchmark_group("eval");
    for n in [10usize, 100, 1_000, 10_000] {
        let src = pack(n);
        let t = std::time::Instant::now();
        let bytes = compile(&src);
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let b = Bundle::from_bytes(&bytes, &Trust::AllowUnsigned).unwrap();
        println!(
            "pack {n} rules: bundle {} bytes ({:.1} bytes/rule), one compile {compile_ms:.1} ms",
            bytes.len(),
            bytes.len() as f64 / n as f64
        );
        for (name, a) in actions() {
            // sanity: the generated pack decides what it should
            let v = b.evaluate(&a, &session, NOW);
            assert!(!v.matched.is_empty());
            g.bench_with_input(BenchmarkId::new(name, n), &a, |bch, a| {
                bch.iter(|| black_box(b.evaluate(black_box(a), &session, NOW)))
            });
        }
    }
    g.finish();
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    for n in [100usize, 1_000] {
        let src = pack(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &src, |bch, src| {
            bch.iter(|| black_box(compile(black_box(src))))
        });
    }
    g.finish();
}

fn bench_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    for n in [100usize, 1_000] {
        let bytes = compile(&pack(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |bch, bytes| {
            bch.iter(|| {
                black_box(Bundle::from_bytes(black_box(bytes), &Trust::AllowUnsigned).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_eval, bench_compile, bench_load);
criterion_main!(benches);
