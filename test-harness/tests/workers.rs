//! The built filter on two Envoy workers of one VM: two hosts (separate module instances, as
//! Envoy runs one VM per worker thread) sharing one shared-data store. Session state, session
//! effects and the receipt chain must cross workers, and a concurrent write from the other
//! worker must not be lost (compare-and-swap). A worker Envoy stops signs its own sessions' tails.

use bundle::receipt::Receipt;
use harness::{FilterModule, Host, HostConfig, SharedData};
use serde_json::{Value, json};

fn module() -> &'static FilterModule {
    match harness::build::filter_module() {
        Ok(m) => m,
        Err(e) => panic!("cannot load the filter: {e:#}"),
    }
}

fn workers() -> (Host, Host) {
    let config = testkit::fixtures::scenario_config(
        &testkit::corpus::scenarios_dir().join("policies/basic.pcl"),
    )
    .unwrap();
    let shared = SharedData::new();
    let start = |name: &str| {
        let hc = HostConfig::new(config.clone())
            .with_start_ms(testkit::fixtures::START_MS)
            .with_clusters(["context-risk"])
            .with_shared_data(shared.clone());
        Host::start(module(), hc).unwrap_or_else(|e| panic!("worker {name}: {e:#}"))
    };
    (start("a"), start("b"))
}

const HEADERS: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/mcp"),
    (":authority", "workbench"),
    (":scheme", "http"),
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
];

struct Sent {
    forwarded: bool,
    reply: Option<String>,
    /// Every receipt the stream wrote to filter state, oldest first.
    receipts: Vec<Receipt>,
}

/// Starts one MCP request on `host`; returns the stream id (the request may stay paused).
fn start(host: &mut Host, session: &str, body: &Value) -> u32 {
    let mut headers = HEADERS.to_vec();
    headers.push(("mcp-session-id", session));
    let mut s = host.new_stream().unwrap();
    s.request_headers(&headers, false).unwrap();
    s.request_body(&serde_json::to_vec(body).unwrap(), true)
        .unwrap();
    s.id()
}

fn outcome(host: &Host, id: u32) -> Sent {
    let v = host.stream_view(id).unwrap();
    Sent {
        forwarded: v.request_forwarded(),
        reply: v.local_response().map(|r| r.body_text()),
        receipts: v
            .filter_state_history("wasm.portcullis.receipt")
            .into_iter()
            .map(|t| testkit::fixtures::parse_receipt(&String::from_utf8_lossy(t)).unwrap())
            .collect(),
    }
}

fn send(host: &mut Host, session: &str, body: Value) -> Sent {
    let id = start(host, session, &body);
    outcome(host, id)
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

/// The receipts of one session, whichever worker wrote them, must form one chain: distinct,
/// consecutive sequence numbers, each `prev` the hash of the one before.
fn assert_one_chain(mut receipts: Vec<Receipt>) {
    receipts.sort_by_key(|r| r.body.seq);
    for pair in receipts.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(
            b.body.seq,
            a.body.seq + 1,
            "sequence numbers must be consecutive: {:?}",
            receipts.iter().map(|r| r.body.seq).collect::<Vec<_>>()
        );
        assert_eq!(
            b.body.prev,
            hex::encode(a.hash),
            "receipt {} does not chain to receipt {}",
            b.body.seq,
            a.body.seq
        );
    }
}

#[test]
fn a_kill_on_one_worker_holds_on_the_other_and_the_chain_continues() {
    let (mut a, mut b) = workers();
    let init = send(&mut a, "s1", initialize());
    assert!(init.forwarded, "{:?}", init.reply);
    let read = send(
        &mut a,
        "s1",
        call(1, "read_file", json!({"path": "/repo/a"})),
    );
    assert!(read.forwarded, "{:?}", read.reply);
    let secret = send(
        &mut a,
        "s1",
        call(2, "get_secret", json!({"name": "prod-db"})),
    );
    assert!(!secret.forwarded);
    // The same session on the other worker is killed too.
    let after = send(
        &mut b,
        "s1",
        call(3, "read_file", json!({"path": "/repo/a"})),
    );
    assert!(!after.forwarded, "worker b let a killed session through");
    let text = after.reply.clone().unwrap_or_default();
    assert!(text.contains("session:killed"), "{text}");
    // Another session on worker b is not affected.
    let other = send(
        &mut b,
        "s2",
        call(4, "read_file", json!({"path": "/repo/a"})),
    );
    assert!(other.forwarded, "{:?}", other.reply);

    let sent = [init, read, secret, after];
    assert!(
        sent.iter().all(|s| !s.receipts.is_empty()),
        "every action has a receipt"
    );
    let chain: Vec<Receipt> = sent.into_iter().flat_map(|s| s.receipts).collect();
    assert!(
        chain
            .iter()
            .all(|r| r.body.session == chain[0].body.session)
    );
    assert_one_chain(chain);
}

#[test]
fn a_write_from_the_other_worker_while_a_request_waits_is_not_lost() {
    let (mut a, mut b) = workers();
    let init = send(&mut a, "s1", initialize());
    assert!(init.forwarded, "{:?}", init.reply);
    // Worker a: a staging deploy waits for the risk service.
    let deploy = start(
        &mut a,
        "s1",
        &call(1, "deploy", json!({"env": "staging", "version": "1.2.3"})),
    );
    let pending = a.pending_http_calls();
    assert_eq!(
        pending.len(),
        1,
        "the deploy must be deferred to the risk service"
    );
    let token = pending[0].token;
    assert!(a.stream_view(deploy).unwrap().request_paused());
    // Meanwhile worker b serves the same session.
    let read = send(
        &mut b,
        "s1",
        call(2, "read_file", json!({"path": "/repo/a"})),
    );
    assert!(read.forwarded, "{:?}", read.reply);
    // The risk service allows; worker a resumes and records its decision.
    a.respond_http_call(
        token,
        200,
        &[("content-type", "application/json")],
        br#"{"decision":"allow","reason":"staging is fine"}"#,
    )
    .unwrap();
    let deployed = outcome(&a, deploy);
    assert!(deployed.forwarded, "{:?}", deployed.reply);
    // One more action on worker b sees both earlier ones.
    let last = send(
        &mut b,
        "s1",
        call(3, "read_file", json!({"path": "/repo/b"})),
    );
    assert!(last.forwarded, "{:?}", last.reply);

    let sent = [init, read, deployed, last];
    assert!(
        sent.iter().all(|s| !s.receipts.is_empty()),
        "every action has a receipt"
    );
    let receipts: Vec<Receipt> = sent.into_iter().flat_map(|s| s.receipts).collect();
    assert_one_chain(receipts);
}

/// Receipts the filter wrote to the proxy log (checkpoints, session ends).
fn logged_receipts(host: &Host) -> Vec<Receipt> {
    host.logs()
        .iter()
        .filter_map(|l| l.message.split_once("portcullis receipt "))
        .map(|(_, r)| testkit::fixtures::parse_receipt(r).unwrap())
        .collect()
}

#[test]
fn a_worker_envoy_stops_signs_the_unsigned_tails_of_its_own_sessions() {
    let (mut a, mut b) = workers();
    let read = || call(1, "read_file", json!({"path": "/repo/README.md"}));
    let on_a = send(&mut a, "x", read());
    let on_b = send(&mut b, "y", read());
    assert!(on_a.forwarded && on_b.forwarded);
    assert!(
        on_a.receipts
            .iter()
            .chain(&on_b.receipts)
            .all(|r| r.sig.is_none()),
        "ALLOW receipts wait for a signature"
    );
    // Envoy stops worker a (shutdown, or a new configuration replaces it).
    a.shutdown().unwrap();
    let signed = logged_receipts(&a);
    assert_eq!(signed.len(), 1, "x's tail, and nothing for b's session y");
    let checkpoint = &signed[0];
    assert_eq!(
        (checkpoint.body.session.as_str(), checkpoint.body.seq),
        ("x", 2)
    );
    assert_eq!(
        checkpoint.body.event,
        bundle::receipt::EventKind::Checkpoint
    );
    assert!(checkpoint.sig.is_some(), "a checkpoint is signed");
    assert!(
        logged_receipts(&b).is_empty(),
        "worker b signs nothing until it stops"
    );
    assert!(a.violations().is_empty(), "{:?}", a.violations());
}
