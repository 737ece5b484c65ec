//! Drives N whole requests through the filter, for instruction counting under callgrind
//! (`benches/cost/run`): instruction counts do not depend on what else the machine is doing, so
//! they compare two builds of the filter closely, where wall-clock timings on this shared box do
//! not.
//!
//! ```text
//! cost <native|wasm> <case> <iterations>
//! cost dump <case> <dir>
//! ```
//!
//! - `native`: `filter_core` under its mock host (Rust symbols, so callgrind attributes the cost
//!   to functions: parse, risk scan, evaluation, digest, receipt, session codec ...).
//! - `wasm`: the built `portcullis.wasm` under the test harness's wasmtime host (the code Envoy
//!   runs, compiled by Cranelift instead of V8; JIT code has no symbols, so only totals). With
//!   `COST_HOSTCALLS=1` it prints the hostcalls per request, by name.
//! - `dump`: writes the inputs of the `wasm` path into `dir`, for another host to replay exactly
//!   (`benches/cost/v8.mjs`): `config.json` (the plugin configuration of `COST_VARIANT`),
//!   `request_headers.json` and `response_headers.json` (arrays of `[name, value]`),
//!   `request_body` and `response_body` (raw bytes), `expect.json` (`{"forwarded": bool}`).
//!
//! Cases: `call256`, `call1k`, `call16k` (allowed `tools/call` of `read_file`, the response passes
//! back through the result inspection), `text1k` / `text16k` (as `call1k` / `call16k`, with an
//! argument of realistic text: `portcullis_benches::REALISTIC_TEXT`), `deny1k` (unknown tool,
//! JSON-RPC error), `init` (an `initialize`), `get` (egress GET, no body), `getq` (the load
//! benchmark's egress GET, whose query `?state=open` is also read as arguments). Every request carries
//! the same `mcp-session-id`, so sessions, the receipt chain and its signing cadence (every 16th
//! ALLOW receipt signed) are in the steady state.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark code: a failed setup aborts the run, and the harness macros write undocumented items"
)]

use std::hint::black_box;
use std::rc::Rc;

use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use portcullis_benches::{
    BASIC_POLICY, LOAD_POLICY, RESPONSE_HEADERS, TOOL_RESULT, mcp_headers, plugin_config,
    tools_call_body, tools_call_text_body, wasm_stream,
};

struct Case {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    allowed: bool,
}

fn case(name: &str) -> Case {
    let call = |tool: &str, size: usize, allowed: bool| {
        let body = tools_call_body(tool, size);
        Case {
            headers: mcp_headers(Some("cost-session"), body.len()),
            body,
            allowed,
        }
    };
    match name {
        "call256" => call("read_file", 256, true),
        "call1k" => call("read_file", 1024, true),
        "call16k" => call("read_file", 16 * 1024, true),
        "deny1k" => call("format_disk", 1024, false),
        "text1k" | "text16k" => {
            let size = if name == "text1k" { 1024 } else { 16 * 1024 };
            let body = tools_call_text_body("read_file", size).unwrap();
            assert_eq!(body.len(), size);
            Case {
                headers: mcp_headers(Some("cost-session"), body.len()),
                body,
                allowed: true,
            }
        }
        "init" => {
            let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#.to_vec();
            Case {
                headers: mcp_headers(Some("cost-session"), body.len()),
                body,
                allowed: true,
            }
        }
        "get" | "getq" => Case {
            headers: [
                (":method", "GET"),
                (
                    ":path",
                    if name == "get" {
                        "/repos/acme/widgets"
                    } else {
                        "/repos/acme/widgets/pulls?state=open"
                    },
                ),
                (":authority", "api.github.com"),
                (":scheme", "https"),
                ("accept", "application/json"),
            ]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect(),
            body: Vec::new(),
            allowed: true,
        },
        other => panic!("unknown case {other}"),
    }
}

/// The plugin configuration of `COST_VARIANT`: `e` (default: the scenario pack with sessions on
/// `mcp-session-id`, tool results inspected) or `d` (the load benchmark's variant d: its
/// allowlist, no session key, so nothing is kept between requests and results are not held).
fn config() -> String {
    match std::env::var("COST_VARIANT").as_deref() {
        Ok("d") => plugin_config(
            LOAD_POLICY,
            &serde_json::json!({"session": {"key": {"source": "header", "name": "x-bench-no-session"}}}),
        )
        .unwrap(),
        Ok("e") | Err(_) => plugin_config(BASIC_POLICY, &serde_json::json!({})).unwrap(),
        Ok(other) => panic!("COST_VARIANT: d or e, not {other}"),
    }
}

fn native(c: &Case, n: u64) {
    let config = config();
    let host = MockHost::new(1_800_000_000_000);
    let plugin = Rc::new(Plugin::configure(&host, config.as_bytes()));
    assert!(plugin.error().is_none(), "{:?}", plugin.error());
    let one = || {
        host.new_stream(c.headers.clone());
        let mut s = Stream::new(Rc::clone(&plugin));
        let mut a = s.on_request_headers(&host, c.body.is_empty());
        if a == FilterAction::Pause && !c.body.is_empty() {
            host.state().request_body.clone_from(&c.body);
            a = s.on_request_body(&host, c.body.len(), true);
        }
        let forwarded = a == FilterAction::Continue && host.state().local_response.is_none();
        if forwarded {
            host.state().response_headers = vec![
                (":status".to_owned(), "200".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ];
            s.on_response_headers(&host);
            host.state().response_body = TOOL_RESULT.to_vec();
            s.on_response_body(&host, TOOL_RESULT.len(), true);
        }
        host.state().logs.clear();
        host.advance(1);
        forwarded
    };
    assert_eq!(one(), c.allowed, "the policy's answer changed");
    for _ in 0..n {
        black_box(one());
    }
}

fn wasm(c: &Case, n: u64) {
    use harness::{FilterModule, Host, HostConfig};
    let bytes = std::fs::read(harness::build::filter_wasm().unwrap()).unwrap();
    let config = config();
    let module = FilterModule::from_bytes_unmetered(&bytes).unwrap();
    let mut host = Host::start(&module, HostConfig::new(config)).unwrap();
    let one = |host: &mut Host| wasm_stream(host, &c.headers, &c.body, TOOL_RESULT).unwrap();
    assert_eq!(one(&mut host), c.allowed, "the policy's answer changed");
    let before = host.hostcall_counts().clone();
    for _ in 0..n {
        black_box(one(&mut host));
    }
    if std::env::var_os("COST_HOSTCALLS").is_some() && n > 0 {
        // Hostcalls per request, steady state: each is a crossing out of the VM in Envoy.
        for (name, after) in host.hostcall_counts() {
            let per = after.saturating_sub(before.get(name).copied().unwrap_or(0));
            if per > 0 {
                println!("{name} {:.2}", per as f64 / n as f64);
            }
        }
    }
}

/// Writes what [`wasm`] feeds the module for case `c` into `dir` (see the module docs).
fn dump(c: &Case, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    let response_headers: Vec<[&str; 2]> = RESPONSE_HEADERS.iter().map(|(k, v)| [*k, *v]).collect();
    write("config.json", config().as_bytes());
    write(
        "request_headers.json",
        &serde_json::to_vec(&c.headers).unwrap(),
    );
    write("request_body", &c.body);
    write(
        "response_headers.json",
        &serde_json::to_vec(&response_headers).unwrap(),
    );
    write("response_body", TOOL_RESULT);
    write(
        "expect.json",
        &serde_json::to_vec(&serde_json::json!({"forwarded": c.allowed})).unwrap(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(target), Some(name), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!(
            "usage: cost <native|wasm> <call256|call1k|call16k|text1k|text16k|deny1k|init|get> <iterations>\n       cost dump <case> <dir>"
        );
        std::process::exit(2);
    };
    let c = case(name);
    if target == "dump" {
        dump(&c, std::path::Path::new(n));
        return;
    }
    let n: u64 = n.parse().expect("iterations: a number");
    match target.as_str() {
        "native" => native(&c, n),
        "wasm" => wasm(&c, n),
        other => panic!("unknown target {other}"),
    }
}
