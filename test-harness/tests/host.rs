//! The host against small hand-written proxy-wasm modules (WebAssembly text): lifecycle, the
//! Envoy stream model (pause, buffering, continue, local replies through the response
//! callbacks), call-outs, timers, filter state, and every way a module can fail a test.

use harness::{Action, FilterModule, Host, HostConfig, HttpCallState};

/// A module with memory, a bump allocator, the ABI marker (unless `abi` is false), `imports`
/// and `body`.
fn module_with(abi: bool, imports: &str, body: &str) -> Vec<u8> {
    let marker = if abi {
        r#"(func (export "proxy_abi_version_0_2_1"))"#
    } else {
        ""
    };
    let text = format!(
        r#"(module
  {imports}
  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 131072))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  {marker}
  {body}
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test module: {e}\n{text}"))
}

fn module(imports: &str, body: &str) -> Vec<u8> {
    module_with(true, imports, body)
}

const LOG: &str = r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#;
const GET_BUFFER: &str = r#"(import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))"#;
const ADD_HEADER: &str = r#"(import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))"#;

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn configure_reads_the_plugin_configuration_and_bad_pointers_get_a_status() {
    let wasm = module(
        &format!("{LOG}{GET_BUFFER}"),
        r#"
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (if (i32.ne (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)) (i32.const 0))
      (then unreachable))
    (drop (call $log (i32.const 2) (i32.load (i32.const 16)) (i32.load (i32.const 20))))
    ;; a pointer past the end of memory is INVALID_MEMORY_ACCESS (6), not a crash
    (if (i32.ne (call $log (i32.const 2) (i32.const 0x7ffffff0) (i32.const 10)) (i32.const 6))
      (then unreachable))
    (i32.const 1))"#,
    );
    let h = Host::new(&wasm, HostConfig::new("hello-config")).unwrap();
    assert!(h.logs_contain("hello-config"), "logs: {:?}", h.logs());
    assert_eq!(h.logs().len(), 1);
}

#[test]
fn a_refused_configuration_fails_start() {
    let wasm = module(
        "",
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let e = err_text(Host::new(&wasm, HostConfig::new("{}")));
    assert!(e.contains("proxy_on_configure returned false"), "{e}");
}

/// Pauses headers; pauses the body until end of stream, logging what the buffer holds each
/// time; at the end adds `x-seen: yes` and continues.
fn buffering_module() -> Vec<u8> {
    module(
        &format!("{LOG}{GET_BUFFER}{ADD_HEADER}"),
        r#"
  (data (i32.const 1024) "x-seen")
  (data (i32.const 1040) "yes")
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.eq (call $get_buffer (i32.const 0) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)) (i32.const 0))
      (then (drop (call $log (i32.const 2) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))
    (if (result i32) (local.get $eos)
      (then
        (if (i32.ne (call $add (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 1040) (i32.const 3)) (i32.const 0))
          (then unreachable))
        (i32.const 0))
      (else (i32.const 1))))"#,
    )
}

#[test]
fn a_paused_body_is_buffered_then_forwarded_with_the_held_headers() {
    let mut h = Host::new(&buffering_module(), HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    let a = s
        .request_headers(
            &[(":method", "POST"), (":path", "/mcp"), ("X-Mixed", "v")],
            false,
        )
        .unwrap();
    assert_eq!(a, Action::Pause);
    assert!(
        s.view().forwarded_request_headers().is_none(),
        "headers held"
    );
    assert_eq!(s.request_body(b"abc", false).unwrap(), Action::Pause);
    assert_eq!(s.request_body(b"def", true).unwrap(), Action::Continue);
    let v = s.view();
    assert!(v.request_forwarded());
    assert_eq!(v.forwarded_request_body(), b"abcdef");
    assert_eq!(v.forwarded_request_header("x-seen"), Some("yes"));
    assert_eq!(
        v.forwarded_request_header("x-mixed"),
        Some("v"),
        "names lowercased"
    );
    let bodies: Vec<&str> = h.logs().iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        bodies,
        ["abc", "abcdef"],
        "body_size and the buffer grow while paused"
    );
}

#[test]
fn buffering_past_the_limit_is_answered_413_by_envoy() {
    let config = HostConfig {
        buffer_limit: 4,
        ..HostConfig::new("")
    };
    let mut h = Host::new(&buffering_module(), config).unwrap();
    let mut s = h.new_stream().unwrap();
    s.request_headers(&[(":method", "POST")], false).unwrap();
    s.request_body(b"abc", false).unwrap();
    s.request_body(b"def", true).unwrap();
    let v = s.view();
    let reply = v.local_response().expect("413");
    assert_eq!(reply.status, 413);
    assert!(!v.request_forwarded());
    assert!(v.finished());
}

#[test]
fn local_reply_runs_through_the_response_callbacks_and_ends_the_stream() {
    let wasm = module(
        &format!(
            r#"{LOG}{ADD_HEADER}
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#
        ),
        r#"
  (data (i32.const 1024) "x-added")
  (data (i32.const 1040) "1")
  (data (i32.const 1100) "{\"denied\":true}")
  (data (i32.const 1200) "on_log")
  (data (i32.const 1220) "on_delete")
  (data (i32.const 2048) "\01\00\00\00\0c\00\00\00\10\00\00\00content-type\00application/json\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 1100) (i32.const 15)
                  (i32.const 2048) (i32.const 42) (i32.const -1)) (i32.const 0))
      (then unreachable))
    ;; returning Continue after a local reply must not forward the request
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 1024) (i32.const 7) (i32.const 1040) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (drop (call $log (i32.const 2) (i32.const 1200) (i32.const 6))))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)
    (drop (call $log (i32.const 2) (i32.const 1220) (i32.const 9))))"#,
    );
    let mut h = Host::new(&wasm, HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    let raw = s.request_headers(&[(":method", "GET")], true).unwrap();
    assert_eq!(raw, Action::Continue);
    let v = s.view();
    assert!(!v.request_forwarded());
    assert!(v.forwarded_request_headers().is_none());
    let reply = v.local_response().expect("a local reply");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body_text(), r#"{"denied":true}"#);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("content-length"), Some("15"));
    assert_eq!(
        reply.header("x-added"),
        Some("1"),
        "added by on_response_headers"
    );
    assert!(v.finished());
    let lines: Vec<&str> = h.logs().iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines, ["on_log", "on_delete"]);
}

const HTTP_CALL_MODULE: &str = r#"
  (global $stream (mut i32) (i32.const 0))
  (data (i32.const 1024) "ctx")
  (data (i32.const 1100) "{}")
  (data (i32.const 2048) "\03\00\00\00\07\00\00\00\04\00\00\00\05\00\00\00\07\00\00\00\0a\00\00\00\04\00\00\00:method\00POST\00:path\00/decide\00:authority\00risk\00")
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $ctx))
    (if (i32.ne (call $call (i32.const 1024) (i32.const 3) (i32.const 2048) (i32.const 71)
                  (i32.const 1100) (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 500) (i32.const 16))
                (i32.const 0))
      (then unreachable))
    (i32.const 1))
  (func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $bs i32) (param $nt i32)
    (if (i32.ne (call $eff (global.get $stream)) (i32.const 0)) (then unreachable))
    (if (i32.gt_u (local.get $bs) (i32.const 0))
      (then
        (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $bs) (i32.const 16) (i32.const 20)))
        (drop (call $log (i32.const 2) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))
    (drop (call $cont (i32.const 0))))"#;

fn http_call_module() -> Vec<u8> {
    module(
        &format!(
            r#"{LOG}{GET_BUFFER}
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $eff (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $cont (param i32) (result i32)))"#
        ),
        HTTP_CALL_MODULE,
    )
}

#[test]
fn a_call_out_is_recorded_answered_and_the_stream_resumes() {
    let mut h = Host::new(
        &http_call_module(),
        HostConfig::new("").with_clusters(["ctx"]),
    )
    .unwrap();
    let id = {
        let mut s = h.new_stream().unwrap();
        assert_eq!(
            s.request_headers(&[(":method", "GET")], true).unwrap(),
            Action::Pause
        );
        assert!(s.view().request_paused());
        s.id()
    };
    let calls = h.pending_http_calls();
    assert_eq!(calls.len(), 1);
    let call = calls[0].clone();
    assert_eq!(call.cluster, "ctx");
    assert_eq!(call.header(":path"), Some("/decide"));
    assert_eq!(call.body, b"{}");
    assert_eq!(call.timeout_ms, 500);
    assert_eq!(call.context_id, id);
    h.respond_http_call(call.token, 200, &[("content-type", "text/plain")], b"allow")
        .unwrap();
    assert!(h.logs_contain("allow"));
    assert_eq!(h.http_calls()[0].state, HttpCallState::Answered);
    let mut s = h.stream(id).unwrap();
    assert!(s.view().request_forwarded());
    assert_eq!(
        s.response_headers(&[(":status", "200")], true).unwrap(),
        Action::Continue
    );
    assert!(s.view().finished());
    // A second answer to the same call-out is a test bug.
    assert!(h.respond_http_call(call.token, 200, &[], b"").is_err());
}

#[test]
fn a_failed_call_out_is_delivered_with_zero_headers() {
    let mut h = Host::new(&http_call_module(), HostConfig::new("")).unwrap();
    let id = {
        let mut s = h.new_stream().unwrap();
        s.request_headers(&[(":method", "GET")], true).unwrap();
        s.id()
    };
    let token = h.http_calls()[0].token;
    h.fail_http_call(token).unwrap();
    assert_eq!(h.http_calls()[0].state, HttpCallState::Failed);
    assert!(h.stream_view(id).unwrap().request_forwarded());
    assert!(h.logs().is_empty(), "no body was delivered");
}

#[test]
fn call_outs_expire_only_once_their_timeout_elapsed() {
    let mut h = Host::new(&http_call_module(), HostConfig::new("")).unwrap();
    let id = {
        let mut s = h.new_stream().unwrap();
        s.request_headers(&[(":method", "GET")], true).unwrap();
        s.id()
    };
    h.advance_time(499);
    assert!(h.expire_http_calls().unwrap().is_empty());
    assert!(h.stream_view(id).unwrap().request_paused());
    h.advance_time(1);
    assert_eq!(
        h.expire_http_calls().unwrap(),
        vec![h.http_calls()[0].token]
    );
    assert_eq!(h.http_calls()[0].state, HttpCallState::Failed);
    assert!(h.stream_view(id).unwrap().request_forwarded());
}

#[test]
fn a_call_out_to_an_unknown_cluster_is_bad_argument() {
    // The module traps on any status but OK, so BAD_ARGUMENT shows up as a crash.
    let mut h = Host::new(
        &http_call_module(),
        HostConfig::new("").with_clusters(["other"]),
    )
    .unwrap();
    let mut s = h.new_stream().unwrap();
    let e = err_text(s.request_headers(&[(":method", "GET")], true));
    assert!(e.contains("trapped"), "{e}");
}

#[test]
fn a_trap_fails_the_request_with_the_panic_message_and_poisons_the_vm() {
    let wasm = module(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#,
        r#"
  (data (i32.const 1024) "panicked at 'boom'\n")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 19))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    unreachable)"#,
    );
    let mut h = Host::new(&wasm, HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    let e = err_text(s.request_headers(&[(":method", "GET")], true));
    assert!(e.contains("proxy_on_request_headers"), "{e}");
    assert!(e.contains("panicked at 'boom'"), "{e}");
    let e = err_text(h.new_stream().map(|_| ()));
    assert!(e.contains("crashed earlier"), "{e}");
}

#[test]
fn imports_envoy_does_not_provide_fail_start() {
    let wasm = module(
        r#"(import "env" "proxy_get_configuration" (func (param i32 i32) (result i32)))"#,
        "",
    );
    let e = err_text(Host::new(&wasm, HostConfig::new("")));
    assert!(e.contains("env.proxy_get_configuration"), "{e}");
}

#[test]
fn a_module_without_the_abi_marker_is_refused() {
    let wasm = module_with(false, "", "");
    let e = err_text(Host::new(&wasm, HostConfig::new("")));
    assert!(e.contains("proxy_abi_version_0_2_1"), "{e}");
}

#[test]
fn calling_an_unimplemented_hostcall_fails_with_its_name() {
    let wasm = module(
        r#"(import "env" "proxy_grpc_call" (func $grpc (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $grpc (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 16)))
    (i32.const 0))"#,
    );
    let mut h = Host::new(&wasm, HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    let e = err_text(s.request_headers(&[(":method", "GET")], true));
    assert!(e.contains("unexpected hostcall env.proxy_grpc_call"), "{e}");
}

#[test]
fn an_endless_loop_runs_out_of_fuel_instead_of_hanging() {
    let wasm = module(
        "",
        r#"
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))"#,
    );
    let config = HostConfig {
        fuel_per_call: 1_000_000,
        ..HostConfig::new("")
    };
    let mut h = Host::new(&wasm, config).unwrap();
    let mut s = h.new_stream().unwrap();
    let e = err_text(s.request_headers(&[(":method", "GET")], true));
    assert!(e.contains("ran out of fuel"), "{e}");
}

#[test]
fn header_injection_by_the_filter_fails_the_request() {
    let wasm = module(
        ADD_HEADER,
        r#"
  (data (i32.const 1024) "x-evil")
  (data (i32.const 1040) "a\0d\0aset-cookie: s=1")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 1040) (i32.const 19)))
    (i32.const 0))"#,
    );
    let mut h = Host::new(&wasm, HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    let e = err_text(s.request_headers(&[(":method", "GET")], true));
    assert!(e.contains("CR, LF or NUL"), "{e}");
    assert_eq!(h.violations().len(), 1);
}

#[test]
fn filter_state_and_properties_as_envoy_stores_them() {
    let wasm = module(
        &format!(
            r#"{LOG}
  (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))"#
        ),
        r#"
  (data (i32.const 1024) "portcullis.decision")
  (data (i32.const 1060) "DENY")
  (data (i32.const 1100) "connection\00uri_san_peer_certificate")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $set (i32.const 1024) (i32.const 19) (i32.const 1060) (i32.const 4)) (i32.const 0))
      (then unreachable))
    (if (i32.eq (call $get (i32.const 1100) (i32.const 35) (i32.const 16) (i32.const 20)) (i32.const 0))
      (then (drop (call $log (i32.const 2) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))
    (i32.const 0))"#,
    );
    let config = HostConfig::new("").with_property(
        &["connection", "uri_san_peer_certificate"],
        "spiffe://cluster.local/ns/a/sa/agent",
    );
    let mut h = Host::new(&wasm, config).unwrap();
    let mut s = h.new_stream().unwrap();
    s.request_headers(&[(":method", "GET")], true).unwrap();
    assert_eq!(s.filter_state("wasm.portcullis.decision"), Some("DENY"));
    assert!(h.logs_contain("spiffe://cluster.local/ns/a/sa/agent"));
    // A stream-level property overrides the host's.
    let mut s = h.new_stream().unwrap();
    s.set_property(
        &["connection", "uri_san_peer_certificate"],
        "spiffe://other",
    );
    s.request_headers(&[(":method", "GET")], true).unwrap();
    assert!(h.logs_contain("spiffe://other"));
}

#[test]
fn the_timer_fires_only_when_a_period_is_set() {
    let wasm = module(
        &format!(
            r#"{LOG}
  (import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))"#
        ),
        r#"
  (data (i32.const 1024) "tick")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $period (i32.const 1000)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (drop (call $log (i32.const 2) (i32.const 1024) (i32.const 4))))"#,
    );
    let mut h = Host::new(&wasm, HostConfig::new("")).unwrap();
    assert_eq!(h.tick_period_ms(), 1000);
    let before = h.now_ms();
    h.advance_time(1500);
    assert_eq!(h.now_ms(), before + 1500);
    assert!(h.tick().unwrap());
    assert!(h.logs_contain("tick"));

    let quiet = module("", "");
    let mut h = Host::new(&quiet, HostConfig::new("")).unwrap();
    assert!(!h.tick().unwrap(), "no period, no tick");
}

#[test]
fn a_compiled_module_starts_many_independent_hosts() {
    let module = FilterModule::from_bytes(&buffering_module()).unwrap();
    let mut a = Host::start(&module, HostConfig::new("")).unwrap();
    let b = Host::start(&module, HostConfig::new("")).unwrap();
    let mut s = a.new_stream().unwrap();
    s.request_headers(&[(":method", "POST")], false).unwrap();
    s.request_body(b"only-in-a", true).unwrap();
    assert!(a.logs_contain("only-in-a"));
    assert!(b.logs().is_empty());
}

#[test]
fn continuing_before_refusing_in_one_callback_is_reported() {
    let wasm = module(
        r#"(import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $cont (param i32) (result i32)))"#,
        r#"
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $cont (i32.const 0)))
    (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))"#,
    );
    let mut h = Host::new(&wasm, HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    let e = err_text(s.request_headers(&[(":method", "GET")], true));
    assert!(e.contains("reach upstream before the refusal"), "{e}");
    let v = s.view();
    assert_eq!(v.local_response().map(|r| r.status), Some(403));
    assert!(!v.request_forwarded());
}

/// Request: pauses headers and every body chunk. Request trailers: logs the trailer count, the
/// body buffer (or `no body`) and trailer `x-t` (or the status digit), rewrites `x-t` to `v2`,
/// then continues, unless trailer `x-hold` is present: then it holds the stream until a call-out
/// answers. Response: lets headers and body go (Continue); response trailers log the same
/// things. `proxy_on_log` logs trailer `x-t` of both directions (or the status digit).
fn trailers_module() -> Vec<u8> {
    module(
        &format!(
            r#"{LOG}{GET_BUFFER}
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $eff (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $cont (param i32) (result i32)))"#
        ),
        r#"
  (global $stream (mut i32) (i32.const 0))
  (data (i32.const 1024) "x-hold")
  (data (i32.const 1040) "x-t")
  (data (i32.const 1050) "v2")
  (data (i32.const 1060) "no body")
  (data (i32.const 1200) "ctx")
  (data (i32.const 1210) "{}")
  (data (i32.const 2048) "\03\00\00\00\07\00\00\00\04\00\00\00\05\00\00\00\07\00\00\00\0a\00\00\00\04\00\00\00:method\00POST\00:path\00/decide\00:authority\00risk\00")
  (func $say (param $p i32) (param $n i32)
    (drop (call $log (i32.const 2) (local.get $p) (local.get $n))))
  (func $digit (param $n i32)
    (i32.store8 (i32.const 1080) (i32.add (i32.const 48) (local.get $n)))
    (call $say (i32.const 1080) (i32.const 1)))
  (func $log_body (param $kind i32)
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 0))
    (if (i32.ne (call $get_buffer (local.get $kind) (i32.const 0) (i32.const 1048576) (i32.const 16) (i32.const 20)) (i32.const 0))
      (then unreachable))
    (if (i32.eqz (i32.load (i32.const 20)))
      (then (call $say (i32.const 1060) (i32.const 7)))
      (else (call $say (i32.load (i32.const 16)) (i32.load (i32.const 20))))))
  (func $log_trailer (param $map i32)
    (local $st i32)
    (local.set $st (call $get_value (local.get $map) (i32.const 1040) (i32.const 3) (i32.const 16) (i32.const 20)))
    (if (i32.eqz (local.get $st))
      (then (call $say (i32.load (i32.const 16)) (i32.load (i32.const 20))))
      (else (call $digit (local.get $st)))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $digit (local.get $n))
    (call $log_body (i32.const 0))
    (call $log_trailer (i32.const 1))
    (if (i32.ne (call $replace (i32.const 1) (i32.const 1040) (i32.const 3) (i32.const 1050) (i32.const 2)) (i32.const 0))
      (then unreachable))
    (if (result i32) (i32.eqz (call $get_value (i32.const 1) (i32.const 1024) (i32.const 6) (i32.const 16) (i32.const 20)))
      (then
        (global.set $stream (local.get $ctx))
        (if (i32.ne (call $call (i32.const 1200) (i32.const 3) (i32.const 2048) (i32.const 71)
                      (i32.const 1210) (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 500) (i32.const 24))
                    (i32.const 0))
          (then unreachable))
        (i32.const 1))
      (else (i32.const 0))))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (if (i32.ne (call $eff (global.get $stream)) (i32.const 0)) (then unreachable))
    (if (i32.ne (call $cont (i32.const 0)) (i32.const 0)) (then unreachable)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $digit (local.get $n))
    (call $log_body (i32.const 1))
    (call $log_trailer (i32.const 3))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (call $log_trailer (i32.const 1))
    (call $log_trailer (i32.const 3)))"#,
    )
}

fn lines(h: &Host) -> Vec<&str> {
    h.logs().iter().map(|l| l.message.as_str()).collect()
}

fn pairs(p: Option<&harness::Pairs>) -> Vec<(&str, &[u8])> {
    p.into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect()
}

#[test]
fn trailers_end_a_buffered_request_body_which_the_filter_reads_whole_before_anything_goes() {
    let mut h = Host::new(&trailers_module(), HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    assert_eq!(
        s.request_headers(&[(":method", "POST")], false).unwrap(),
        Action::Pause
    );
    assert_eq!(s.request_body(b"abc", false).unwrap(), Action::Pause);
    assert_eq!(s.request_body(b"def", false).unwrap(), Action::Pause);
    assert!(s.view().request_paused());
    assert_eq!(
        s.request_trailers(&[("X-T", "v1")]).unwrap(),
        Action::Continue
    );
    let v = s.view();
    assert!(v.request_forwarded(), "headers, body and trailers went on");
    assert_eq!(v.forwarded_request_body(), b"abcdef");
    assert_eq!(
        pairs(v.forwarded_request_trailers()),
        [("x-t", &b"v2"[..])],
        "names lowercased; the filter's edit went upstream"
    );
    assert!(v.forwarded_request_headers().is_some());
    assert_eq!(
        lines(&h),
        ["1", "abcdef", "v1"],
        "one trailer; the whole buffered body; the trailer value"
    );
}

#[test]
fn paused_trailers_hold_headers_body_and_trailers_until_the_filter_continues() {
    let config = HostConfig::new("").with_clusters(["ctx"]);
    let mut h = Host::new(&trailers_module(), config).unwrap();
    let id = {
        let mut s = h.new_stream().unwrap();
        s.request_headers(&[(":method", "POST")], false).unwrap();
        s.request_body(b"abc", false).unwrap();
        assert_eq!(
            s.request_trailers(&[("x-t", "v1"), ("x-hold", "1")])
                .unwrap(),
            Action::Pause
        );
        let v = s.view();
        assert!(v.request_paused());
        assert!(v.forwarded_request_headers().is_none());
        assert!(v.forwarded_request_body().is_empty());
        assert!(v.forwarded_request_trailers().is_none());
        // Nothing more can arrive on a request that ended.
        assert!(s.request_body(b"x", true).is_err());
        assert!(s.request_trailers(&[("x-t", "again")]).is_err());
        s.id()
    };
    let token = h.pending_http_calls()[0].token;
    h.respond_http_call(token, 200, &[], b"").unwrap();
    let v = h.stream_view(id).unwrap();
    assert!(v.request_forwarded());
    assert_eq!(v.forwarded_request_body(), b"abc");
    assert_eq!(
        pairs(v.forwarded_request_trailers()),
        [("x-t", &b"v2"[..]), ("x-hold", &b"1"[..])]
    );
}

#[test]
fn trailers_right_after_the_headers_end_an_empty_request() {
    let mut h = Host::new(&trailers_module(), HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    s.request_headers(&[(":method", "POST")], false).unwrap();
    assert_eq!(
        s.request_trailers(&[("x-t", "v1")]).unwrap(),
        Action::Continue
    );
    let v = s.view();
    assert!(v.request_forwarded());
    assert!(v.forwarded_request_body().is_empty());
    assert_eq!(lines(&h), ["1", "no body", "v1"]);
}

#[test]
fn response_trailers_after_a_body_the_filter_let_go_find_no_body_and_end_the_stream() {
    let mut h = Host::new(&trailers_module(), HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    s.request_headers(&[(":method", "POST")], false).unwrap();
    s.request_trailers(&[("x-t", "v1")]).unwrap();
    assert!(
        s.response_trailers(&[("x-t", "r1")]).is_err(),
        "no response headers yet"
    );
    s.response_headers(&[(":status", "200")], false).unwrap();
    assert_eq!(s.response_body(b"xyz", false).unwrap(), Action::Continue);
    assert_eq!(s.view().forwarded_response_body(), b"xyz");
    assert!(!s.view().finished());
    assert_eq!(
        s.response_trailers(&[("x-t", "r1"), ("grpc-status", "0")])
            .unwrap(),
        Action::Continue
    );
    let v = s.view();
    assert!(v.finished());
    assert_eq!(
        pairs(v.forwarded_response_trailers()),
        [("x-t", &b"r1"[..]), ("grpc-status", &b"0"[..])]
    );
    assert!(s.response_body(b"more", true).is_err());
    assert_eq!(
        lines(&h)[3..],
        ["2", "no body", "r1", "1", "r1"],
        "two trailers; the body went on before them; in on_log the request trailers are \
         NOT_FOUND (1), the response trailers readable"
    );
}

#[test]
fn trailers_before_headers_or_after_end_of_stream_are_test_bugs() {
    let mut h = Host::new(&trailers_module(), HostConfig::new("")).unwrap();
    let mut s = h.new_stream().unwrap();
    assert!(s.request_trailers(&[("x-t", "v1")]).is_err());
    s.request_headers(&[(":method", "POST")], false).unwrap();
    s.request_body(b"abc", true).unwrap();
    let e = err_text(s.request_trailers(&[("x-t", "v1")]));
    assert!(e.contains("after end of stream"), "{e}");
}

#[test]
fn a_hidden_trailers_callback_is_never_called_and_envoy_continues() {
    // A filter built without `proxy_on_request_trailers` (the Rust SDK's default answer is
    // Continue too): the buffered body goes upstream although the filter never decided.
    let config = HostConfig::new("").without_export("proxy_on_request_trailers");
    let mut h = Host::new(&trailers_module(), config).unwrap();
    let mut s = h.new_stream().unwrap();
    s.request_headers(&[(":method", "POST")], false).unwrap();
    s.request_body(b"abc", false).unwrap();
    assert_eq!(
        s.request_trailers(&[("x-t", "v1")]).unwrap(),
        Action::Continue
    );
    assert!(s.view().request_forwarded());
    assert_eq!(s.view().forwarded_request_body(), b"abc");
    assert!(lines(&h).is_empty(), "the callback did not run");

    let e = err_text(Host::new(
        &trailers_module(),
        HostConfig::new("").without_export("proxy_on_configure"),
    ));
    assert!(e.contains("only stream callbacks"), "{e}");
}
