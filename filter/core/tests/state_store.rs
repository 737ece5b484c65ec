//! The shared state store (`state.backend: etcd`, docs/state.md) through the whole filter on the
//! mock host, with etcd's answers written as etcd writes them (protobuf): what waits for etcd,
//! what is denied while the cache is out of sync, and what a watch event changes. The real
//! cluster runs in test-harness/e2e/test_replicated.py.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::rc::Rc;

use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::{Value, json};

const START_MS: u64 = 1_800_000_000_000;
const PAYROLL_BOT: &str = "spiffe://corp/ns/finance/sa/payroll-bot";
const OTHER_BOT: &str = "spiffe://corp/ns/eng/sa/coder";

// -- protobuf, as etcd writes it ---------------------------------------------------------------

use common::etcd_wire::{bytes_field, header, int_field};

fn key_value(key: &[u8], rev: u64, value: &[u8]) -> Vec<u8> {
    [
        bytes_field(1, key),
        int_field(3, rev),
        bytes_field(5, value),
    ]
    .concat()
}

// -- the filter --------------------------------------------------------------------------------

fn plugin(host: &MockHost) -> Rc<Plugin> {
    common::plugin(
        host,
        "../../../examples/policies/containment/policy.pcl",
        json!({ "state": { "backend": "etcd", "etcd": { "cluster": "etcd" } } }),
    )
}

/// The last gRPC call or stream the filter opened: (token, method).
fn last_call(host: &MockHost) -> (u32, String) {
    let st = host.state();
    let c = st.grpc_calls.last().unwrap();
    (c.token, c.method.clone())
}

/// Deliver `message` as the answer of unary call `token` to the root context.
fn answer_root(host: &MockHost, p: &Plugin, token: u32, status: u32, message: Vec<u8>) {
    let n = message.len();
    host.state().grpc_message = Some(message);
    p.on_grpc_call_response(host, token, status, n);
    host.state().grpc_message = None;
}

/// Etcd answers the first read (no records, revision 5) and confirms the watch.
fn sync(host: &MockHost, p: &Plugin) -> u32 {
    let (read, method) = last_call(host);
    assert_eq!(method, "etcdserverpb.KV/Range");
    answer_root(host, p, read, 0, header(5));
    let (watch, method) = last_call(host);
    assert_eq!(method, "etcdserverpb.Watch/Watch");
    watch_message(host, p, watch, [header(5), int_field(3, 1)].concat());
    watch
}

fn watch_message(host: &MockHost, p: &Plugin, watch: u32, message: Vec<u8>) {
    let n = message.len();
    host.state().grpc_message = Some(message);
    p.on_grpc_stream_message(host, watch, n);
    host.state().grpc_message = None;
}

/// A watch message with one put of containment `value` at revision `rev`.
fn watch_put(host: &MockHost, p: &Plugin, watch: u32, rev: u64, value: &Value) {
    let kv = key_value(b"/portcullis/p/x", rev, value.to_string().as_bytes());
    let event = bytes_field(2, &kv);
    watch_message(
        host,
        p,
        watch,
        [header(rev), bytes_field(11, &event)].concat(),
    );
}

fn call(tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

/// An MCP request of agent `who` in session `key`; the stream and what the filter did first.
fn send(
    host: &MockHost,
    p: &Rc<Plugin>,
    who: &str,
    key: &str,
    body: &Value,
) -> (Stream, FilterAction) {
    host.set_property(&["connection", "uri_san_peer_certificate"], who);
    host.state().local_response = None;
    common::send_mcp(host, p, &[("mcp-session-id", key)], body)
}

/// Agent `who` reads a file in session `key` (allowed by the pack).
fn read(host: &MockHost, p: &Rc<Plugin>, who: &str, key: &str) -> (Stream, FilterAction) {
    send(host, p, who, key, &call("read_file", json!({"path": "/a"})))
}

/// Agent `who` asks for a secret in session `key` (denied, and the agent killed).
fn secret(host: &MockHost, p: &Rc<Plugin>, who: &str, key: &str) -> (Stream, FilterAction) {
    send(
        host,
        p,
        who,
        key,
        &call("get_secret", json!({"name": "db"})),
    )
}

fn rule(host: &MockHost) -> String {
    host.state()
        .filter_state
        .get("wasm.portcullis.rule")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[test]
fn an_unknown_principal_is_denied_until_the_watch_is_in_sync() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let (_, a) = read(&host, &p, PAYROLL_BOT, "s1");
    assert_eq!(a, FilterAction::Pause);
    assert_eq!(rule(&host), "filter:state_store");
    sync(&host, &p);
    let (_, a) = read(&host, &p, PAYROLL_BOT, "s1");
    assert_eq!(a, FilterAction::Continue, "{}", rule(&host));
    // The ALLOW of an uncontained principal made no call-out.
    assert_eq!(last_call(&host).1, "etcdserverpb.Watch/Watch");
}

#[test]
fn a_kill_is_answered_only_once_etcd_has_it() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    sync(&host, &p);
    let (_, a) = read(&host, &p, PAYROLL_BOT, "s1");
    assert_eq!(a, FilterAction::Continue);
    let (mut s, a) = secret(&host, &p, PAYROLL_BOT, "s1");
    assert_eq!(a, FilterAction::Pause);
    assert!(
        host.state().local_response.is_none(),
        "not answered before etcd has it"
    );
    let (txn, method) = last_call(&host);
    assert_eq!(method, "etcdserverpb.KV/Txn");
    let sent = host.state().grpc_calls.last().unwrap().messages[0].clone();
    assert!(
        String::from_utf8_lossy(&sent).contains("\"quarantine\":\"full\""),
        "the write carries the quarantine"
    );
    // TxnResponse { header { revision 7 }, succeeded: true }
    let ok = [header(7), int_field(2, 1)].concat();
    host.state().grpc_message = Some(ok.clone());
    s.on_grpc_call_response(&host, txn, 0, ok.len());
    assert_eq!(rule(&host), "secrets");
    assert!(host.state().local_response.is_some(), "denied once written");
}

#[test]
fn a_failed_write_keeps_the_kill_and_the_timer_writes_it_later() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    sync(&host, &p);
    let (mut s, a) = secret(&host, &p, PAYROLL_BOT, "s1");
    assert_eq!(a, FilterAction::Pause);
    let (txn, _) = last_call(&host);
    // etcd is unavailable (gRPC 14): the DENY stands, the quarantine is local.
    s.on_grpc_call_response(&host, txn, 14, 0);
    assert_eq!(rule(&host), "secrets");
    let (_, _) = read(&host, &p, PAYROLL_BOT, "s2");
    assert_eq!(rule(&host), "principal:quarantined");
    // The timer writes it again.
    let before = host.state().grpc_calls.len();
    p.on_tick(&host);
    let (_, method) = last_call(&host);
    assert!(host.state().grpc_calls.len() > before && method == "etcdserverpb.KV/Txn");
}

#[test]
fn a_quarantine_from_another_replica_arrives_by_the_watch() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let watch = sync(&host, &p);
    let (_, a) = read(&host, &p, OTHER_BOT, "s9");
    assert_eq!(a, FilterAction::Continue);
    let value = json!({"id": OTHER_BOT, "quarantine": "full", "quarantined_ms": START_MS});
    watch_put(&host, &p, watch, 9, &value);
    let (_, _) = read(&host, &p, OTHER_BOT, "s9");
    assert_eq!(rule(&host), "principal:quarantined");
    // A garbled watch message is not trusted: the watch is closed and the cache is out of sync.
    watch_message(&host, &p, watch, vec![0x0a, 0x05, 0x01]);
    let (_, _) = read(&host, &p, "spiffe://corp/ns/eng/sa/new", "s10");
    assert_eq!(rule(&host), "filter:state_store");
}

/// The `start_revision` of a watch-create message (WatchRequest.create_request field 3).
fn start_revision(create: &[u8]) -> u64 {
    // WatchRequest { 1: WatchCreateRequest { 1: key, 2: range_end, 3: start_revision } }
    let inner = &create[2..];
    let mut i = 0;
    while i < inner.len() {
        let tag = inner[i];
        i += 1;
        if tag & 7 == 2 {
            let len = inner[i] as usize;
            i += 1 + len;
        } else {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let b = inner[i];
                i += 1;
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            if tag >> 3 == 3 {
                return v;
            }
        }
    }
    0
}

#[test]
fn a_dropped_watch_resumes_from_the_last_revision_and_a_compaction_reads_everything_again() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let watch = sync(&host, &p);
    assert_eq!(
        start_revision(&host.state().grpc_calls.last().unwrap().messages[0]),
        6
    );
    // An event at revision 9, then the stream drops (etcd went away).
    watch_put(&host, &p, watch, 9, &json!({"id": OTHER_BOT, "taints": []}));
    p.on_grpc_stream_close(&host, watch, 14);
    // Out of sync until it is back: an unknown principal is denied.
    let (_, _) = read(&host, &p, "spiffe://corp/new", "s1");
    assert_eq!(rule(&host), "filter:state_store");
    // Not before the retry delay; then from revision 10, without reading everything again.
    p.on_tick(&host);
    assert_eq!(
        last_call(&host).0,
        watch,
        "no new call before the retry delay"
    );
    host.advance(1_500);
    p.on_tick(&host);
    let (again, method) = last_call(&host);
    assert_eq!(method, "etcdserverpb.Watch/Watch");
    assert_eq!(
        start_revision(&host.state().grpc_calls.last().unwrap().messages[0]),
        10
    );
    // etcd compacted revision 10 away: the watch is canceled, and everything is read again.
    watch_message(
        &host,
        &p,
        again,
        [header(20), int_field(4, 1), int_field(5, 15)].concat(),
    );
    host.advance(1_500);
    p.on_tick(&host);
    assert_eq!(last_call(&host).1, "etcdserverpb.KV/Range");
}

/// A kill decided on a request that ended with trailers (HTTP/2, or chunked with trailers), its
/// body in two pieces: it waits for etcd exactly as one ended by its last data does, and nothing
/// goes upstream before the write is answered.
#[test]
fn a_kill_on_a_request_ended_by_trailers_waits_for_etcd_too() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    sync(&host, &p);
    host.set_property(&["connection", "uri_san_peer_certificate"], PAYROLL_BOT);
    host.state().local_response = None;
    let headers = [
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "workbench"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("mcp-session-id", "s1"),
    ];
    host.new_stream(
        headers
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect(),
    );
    let bytes = serde_json::to_vec(&call("get_secret", json!({"name": "db"}))).unwrap();
    let mut s = Stream::new(Rc::clone(&p));
    assert_eq!(s.on_request_headers(&host, false), FilterAction::Pause);
    host.state().request_body = bytes[..10].to_vec();
    assert_eq!(s.on_request_body(&host, 10, false), FilterAction::Pause);
    host.state().request_body = bytes.clone();
    assert_eq!(
        s.on_request_body(&host, bytes.len(), false),
        FilterAction::Pause
    );
    assert_eq!(s.on_request_trailers(&host), FilterAction::Pause);
    assert!(host.state().local_response.is_none(), "not before etcd");
    let (txn, method) = last_call(&host);
    assert_eq!(method, "etcdserverpb.KV/Txn");
    let ok = [header(7), int_field(2, 1)].concat();
    host.state().grpc_message = Some(ok.clone());
    s.on_grpc_call_response(&host, txn, 0, ok.len());
    assert_eq!(rule(&host), "secrets");
    assert!(host.state().local_response.is_some(), "denied once written");
    assert_eq!(host.state().resumed, 0, "never resumed upstream");
}
