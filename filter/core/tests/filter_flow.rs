//! Filter behaviour the scenario format cannot express: receipts verified as one chain, CAS
//! contention and store failures with both failure modes, the anonymous chain, call-out dispatch
//! failure, and the session record size.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::rc::Rc;

use bundle::keys::signing_key_from_seed;
use bundle::receipt::verify_log;
use filter_core::mock::MockHost;
use filter_core::slot_key_of;
use filter_core::{FilterAction, Plugin};
use serde_json::{Value, json};

const START_MS: u64 = 1_800_000_000_000;

fn config(extra: Value) -> Vec<u8> {
    let mut all = json!({ "context_services": { "risk": { "cluster": "context-risk" } } });
    for (k, v) in extra.as_object().unwrap() {
        all.as_object_mut().unwrap().insert(k.clone(), v.clone());
    }
    common::config("basic.pcl", all)
}

fn setup(extra: Value) -> (MockHost, Rc<Plugin>) {
    let host = MockHost::new(START_MS);
    let plugin = Rc::new(Plugin::configure(&host, &config(extra)));
    assert_eq!(plugin.error(), None);
    (host, plugin)
}

struct Outcome {
    forwarded: bool,
    status: Option<u16>,
    body: Value,
    receipt: Option<String>,
    rule: String,
    session: String,
}

fn call(host: &MockHost, plugin: &Rc<Plugin>, session: Option<&str>, body: Value) -> Outcome {
    let extra: Vec<(&str, &str)> = session.map(|s| ("mcp-session-id", s)).into_iter().collect();
    let (_, a) = common::send_mcp(host, plugin, &extra, &body);
    let st = host.state();
    let local = st.local_response.clone();
    Outcome {
        forwarded: a == FilterAction::Continue && local.is_none(),
        status: local.as_ref().map(|l| l.status),
        body: local
            .as_ref()
            .and_then(|l| serde_json::from_slice(&l.body).ok())
            .unwrap_or(Value::Null),
        receipt: st
            .filter_state
            .get("wasm.portcullis.receipt")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        rule: st
            .filter_state
            .get("wasm.portcullis.rule")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
        session: st
            .filter_state
            .get("wasm.portcullis.session")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
    }
}

fn tool(id: i64, name: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}})
}

/// The access log the way Envoy would write it: one JSON object per request with the receipt
/// filter state, plus the receipts the filter logged on its own (checkpoints, session ends).
fn access_log(lines: &mut Vec<String>, o: &Outcome) {
    if let Some(r) = &o.receipt {
        lines.push(json!({ "receipt": r, "rule": o.rule }).to_string());
    }
}

#[test]
fn a_sessions_receipts_verify_as_one_chain_and_tampering_is_caught() {
    let (host, plugin) = setup(json!({}));
    let mut log = Vec::new();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
    for body in [
        init,
        tool(1, "read_file", json!({"path": "/repo/a"})),
        tool(2, "read_file", json!({"path": "/repo/b"})),
        tool(3, "deploy", json!({"env": "production", "version": "1"})),
        tool(4, "get_secret", json!({"name": "db"})),
        tool(5, "read_file", json!({"path": "/repo/c"})),
    ] {
        let o = call(&host, &plugin, Some("chain-1"), body);
        access_log(&mut log, &o);
    }
    assert_eq!(log.len(), 6);
    let key = signing_key_from_seed([2; 32]).verifying_key();
    let report = verify_log(
        log.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &[key],
    );
    assert!(report.ok, "{:#?}", report.findings);
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(report.sessions[0].last_seq, 6);

    // Dropping a line is caught.
    let mut dropped = log.clone();
    dropped.remove(2);
    let report = verify_log(
        dropped.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &[key],
    );
    assert!(!report.ok);
}

#[test]
fn the_timer_attests_an_idle_sessions_unsigned_receipts() {
    let (host, plugin) = setup(json!({}));
    let mut log = Vec::new();
    let o = call(
        &host,
        &plugin,
        Some("idle"),
        tool(1, "read_file", json!({"path": "/a"})),
    );
    access_log(&mut log, &o);
    let key = signing_key_from_seed([2; 32]).verifying_key();
    let report = verify_log(
        log.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &[key],
    );
    assert!(
        !report.ok,
        "an unsigned ALLOW receipt is reported as not yet attested"
    );
    host.advance(6_000);
    plugin.on_tick(&host);
    for (_, line) in host.state().logs.iter() {
        if let Some(r) = line.strip_prefix("portcullis receipt ") {
            log.push(r.to_owned());
        }
    }
    let report = verify_log(
        log.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &[key],
    );
    assert!(report.ok, "{:#?}", report.findings);
    assert_eq!(report.sessions[0].attested_through, Some(2));
}

#[test]
fn stopping_the_plugin_signs_every_unsigned_tail_at_once() {
    let (host, plugin) = setup(json!({}));
    let mut log = Vec::new();
    for (i, session) in [Some("a"), Some("b"), None].into_iter().enumerate() {
        host.advance(10);
        let o = call(
            &host,
            &plugin,
            session,
            tool(i as i64, "read_file", json!({"path": "/a"})),
        );
        access_log(&mut log, &o);
    }
    // Envoy stops the plugin a moment later, long before `max_unsigned_ms` (5 s).
    host.advance(10);
    plugin.on_done(&host);
    let checkpoints = common::logged_receipts(&host);
    assert_eq!(checkpoints.len(), 3, "a, b and the anonymous chain");
    log.extend(checkpoints);
    let key = signing_key_from_seed([2; 32]).verifying_key();
    let report = verify_log(
        log.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &[key],
    );
    assert!(report.ok, "{:#?}", report.findings);
    assert!(
        report
            .sessions
            .iter()
            .all(|s| s.attested_through == Some(s.last_seq))
    );
    // Nothing is left to sign: a second stop signs nothing.
    plugin.on_done(&host);
    assert_eq!(common::logged_receipts(&host).len(), 3);
}

/// The bytes of a session's record (the keyed frame removed).
fn session_record(host: &MockHost, session: &str) -> Vec<u8> {
    let key = slot_key_of(host, session).unwrap();
    let bytes = host.state().shared.get(&key).unwrap().0.clone();
    let (owner, record) = bundle::session_codec::split_keyed(&bytes).unwrap();
    assert_eq!(owner, session.as_bytes());
    record.to_vec()
}

fn session_actions(host: &MockHost, session: &str) -> u32 {
    bundle::session_codec::decode(&session_record(host, session))
        .unwrap()
        .0
        .actions
}

#[test]
fn cas_contention_is_retried_and_the_action_recorded_once() {
    let (host, plugin) = setup(json!({}));
    call(
        &host,
        &plugin,
        Some("c"),
        tool(1, "read_file", json!({"path": "/a"})),
    );
    host.state().inject_cas_conflicts = 3;
    let o = call(
        &host,
        &plugin,
        Some("c"),
        tool(2, "read_file", json!({"path": "/a"})),
    );
    assert!(o.forwarded);
    assert_eq!(host.state().inject_cas_conflicts, 0);
    assert_eq!(session_actions(&host, "c"), 2);
}

#[test]
fn endless_contention_fails_closed_by_default() {
    let (host, plugin) = setup(json!({}));
    call(
        &host,
        &plugin,
        Some("c"),
        tool(1, "read_file", json!({"path": "/a"})),
    );
    host.state().inject_cas_conflicts = 1000;
    let o = call(
        &host,
        &plugin,
        Some("c"),
        tool(2, "read_file", json!({"path": "/a"})),
    );
    assert!(!o.forwarded);
    assert_eq!(o.body["error"]["code"], -32040);
    assert_eq!(o.body["error"]["data"]["rule"], "filter:session_store");
    assert_eq!(session_actions(&host, "c"), 1);
}

#[test]
fn endless_contention_keeps_the_policy_decision_in_open_mode() {
    let (host, plugin) = setup(json!({"failure_mode": "open"}));
    call(
        &host,
        &plugin,
        Some("c"),
        tool(1, "read_file", json!({"path": "/a"})),
    );
    host.state().inject_cas_conflicts = 1000;
    let o = call(
        &host,
        &plugin,
        Some("c"),
        tool(2, "read_file", json!({"path": "/a"})),
    );
    assert!(o.forwarded);
    // ... but never turns a deny into an allow
    let o = call(
        &host,
        &plugin,
        Some("c"),
        tool(3, "get_secret", json!({"name": "x"})),
    );
    assert!(!o.forwarded);
    assert_eq!(o.rule, "no_secrets");
}

#[test]
fn a_refused_store_write_fails_closed() {
    let (host, plugin) = setup(json!({}));
    host.state().fail_shared_writes = true;
    let o = call(
        &host,
        &plugin,
        Some("w"),
        tool(1, "read_file", json!({"path": "/a"})),
    );
    assert!(!o.forwarded);
    assert_eq!(o.rule, "filter:session_store");
    assert!(
        host.state()
            .logs
            .iter()
            .any(|(_, l)| l.contains("could not be saved"))
    );
}

#[test]
fn requests_without_a_session_key_chain_per_worker() {
    let (host, plugin) = setup(json!({}));
    let a = call(
        &host,
        &plugin,
        None,
        tool(1, "read_file", json!({"path": "/a"})),
    );
    let b = call(
        &host,
        &plugin,
        None,
        tool(2, "read_file", json!({"path": "/b"})),
    );
    assert!(a.forwarded && b.forwarded);
    assert_eq!(a.session, format!("anon/{START_MS}-1"));
    assert_eq!(a.session, b.session);
    let r: Value = serde_json::from_str(b.receipt.as_deref().unwrap()).unwrap();
    assert_eq!(r["body"]["seq"], 2);
    // a second worker (another plugin instance) gets another chain name
    let other = Rc::new(Plugin::configure(&host, &config(json!({}))));
    let c = call(
        &host,
        &other,
        None,
        tool(3, "read_file", json!({"path": "/c"})),
    );
    assert_eq!(c.session, format!("anon/{START_MS}-2"));
    // Envoy restarted a minute later (shared data gone): new chains, not the old names from seq 1
    // again, so one log spanning the restart verifies
    let restarted = MockHost::new(START_MS + 60_000);
    let plugin = Rc::new(Plugin::configure(&restarted, &config(json!({}))));
    let d = call(
        &restarted,
        &plugin,
        None,
        tool(4, "read_file", json!({"path": "/d"})),
    );
    assert_eq!(d.session, format!("anon/{}-1", START_MS + 60_000));
    let key = signing_key_from_seed([common::RECEIPT_KEY_SEED; 32]).verifying_key();
    let log = [&a, &b, &c, &d].map(|o| o.receipt.clone().unwrap());
    let report = verify_log(
        log.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
        &[key],
    );
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.kind == bundle::receipt::FindingKind::UnsignedTail),
        "{:#?}",
        report.findings
    );
}

#[test]
fn a_context_service_that_cannot_be_called_denies() {
    let (host, plugin) = setup(json!({}));
    host.state().fail_http_calls = true;
    let o = call(
        &host,
        &plugin,
        Some("d"),
        tool(1, "deploy", json!({"env": "staging", "version": "1"})),
    );
    assert!(!o.forwarded);
    assert_eq!(o.status, Some(200));
    assert_eq!(o.body["error"]["code"], -32045);
    assert_eq!(o.body["error"]["data"]["rule"], "staging_deploy");
}

#[test]
fn an_unconfigured_approver_group_or_context_service_denies() {
    let (host, plugin) = setup(json!({"context_services": {}}));
    let o = call(
        &host,
        &plugin,
        Some("n"),
        tool(1, "deploy", json!({"env": "production", "version": "1"})),
    );
    assert_eq!(o.body["error"]["data"]["rule"], "filter:no_approvers");
    let o = call(
        &host,
        &plugin,
        Some("n"),
        tool(2, "deploy", json!({"env": "staging", "version": "1"})),
    );
    assert_eq!(o.body["error"]["data"]["rule"], "filter:no_context_service");
}

#[test]
fn a_long_session_record_stays_small() {
    let (host, plugin) = setup(json!({}));
    for i in 0..40 {
        let path = format!("/repo/file-{i}");
        call(
            &host,
            &plugin,
            Some("long"),
            tool(i, "read_file", json!({"path": path})),
        );
    }
    let len = session_record(&host, "long").len();
    assert!(len < 512, "session record is {len} bytes");
    assert_eq!(session_actions(&host, "long"), 40);
}

#[test]
fn metrics_count_decisions() {
    let (host, plugin) = setup(json!({}));
    call(
        &host,
        &plugin,
        Some("m"),
        tool(1, "read_file", json!({"path": "/a"})),
    );
    call(&host, &plugin, Some("m"), tool(2, "nope", json!({})));
    assert_eq!(host.metric("portcullis_decisions_allow"), Some(1));
    assert_eq!(host.metric("portcullis_decisions_deny"), Some(1));
    assert_eq!(host.metric("portcullis_sessions_tracked"), Some(1));
}

#[test]
fn actions_without_session_state_are_counted_and_said_at_most_once_a_minute() {
    let (host, plugin) = setup(json!({}));
    let warnings = |host: &MockHost| {
        host.state()
            .logs
            .iter()
            .filter(|(_, l)| l.contains("decided without session state"))
            .count()
    };
    call(
        &host,
        &plugin,
        Some("keyed"),
        tool(1, "read_file", json!({"path": "/a"})),
    );
    assert_eq!(host.metric("portcullis_actions_untracked"), Some(0));
    assert_eq!(warnings(&host), 0, "a keyed request is tracked");
    for id in 2..5 {
        call(
            &host,
            &plugin,
            None,
            tool(id, "read_file", json!({"path": "/a"})),
        );
    }
    // Counted on the worker, added to the metric on the timer tick (no host call per request).
    assert_eq!(host.metric("portcullis_actions_untracked"), Some(0));
    plugin.on_tick(&host);
    assert_eq!(host.metric("portcullis_actions_untracked"), Some(3));
    assert_eq!(warnings(&host), 1, "one warning, then quiet for a minute");
    host.advance(60_000);
    call(
        &host,
        &plugin,
        None,
        tool(9, "read_file", json!({"path": "/a"})),
    );
    assert_eq!(warnings(&host), 2);
    let logs = host.state().logs.clone();
    let last = logs
        .iter()
        .rev()
        .find(|(_, l)| l.contains("decided without session state"))
        .unwrap();
    // The two quiet ones and this one; and where the key was looked for.
    assert!(
        last.1.contains("3 action(s)") && last.1.contains("mcp-session-id"),
        "{last:?}"
    );
}

#[test]
fn a_large_batch_carries_receipt_ids_in_the_header() {
    let (host, plugin) = setup(json!({"mcp": {"allow_batches": true}}));
    let batch: Vec<Value> = (0..32)
        .map(|i| tool(i, "read_file", json!({"path": format!("/repo/{i}")})))
        .collect();
    let o = call(&host, &plugin, Some("big"), Value::Array(batch));
    assert!(o.forwarded);
    let header = host.request_header("x-portcullis-receipt").unwrap();
    let ids: Vec<&str> = header.split(',').collect();
    assert_eq!(ids.len(), 32);
    assert!(
        ids.iter()
            .all(|id| id.len() == 64 && hex::decode(id).is_ok())
    );
    // the access log still has every receipt
    let all: Value = serde_json::from_str(o.receipt.as_deref().unwrap()).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 32);
    // a small batch carries the receipts themselves
    let small = Value::Array(vec![tool(40, "read_file", json!({"path": "/a"}))]);
    call(&host, &plugin, Some("big"), small);
    let header = host.request_header("x-portcullis-receipt").unwrap();
    assert!(header.len() > 64 && !header.contains(','));
}

#[test]
fn a_workers_timer_does_not_expire_a_session_another_worker_is_serving() {
    let (host, worker_a) = setup(json!({"session": {"idle_ttl_s": 60}}));
    let worker_b = Rc::new(Plugin::configure(
        &host,
        &config(json!({"session": {"idle_ttl_s": 60}})),
    ));
    assert!(
        call(
            &host,
            &worker_a,
            Some("shared"),
            tool(1, "read_file", json!({"path": "/a"}))
        )
        .forwarded
    );
    host.advance(50_000);
    assert!(
        call(
            &host,
            &worker_b,
            Some("shared"),
            tool(2, "read_file", json!({"path": "/a"}))
        )
        .forwarded
    );
    host.advance(20_000);
    worker_a.on_tick(&host);
    assert!(
        !host
            .state()
            .logs
            .iter()
            .any(|(_, l)| l.contains("ended (expired)")),
        "worker A expired a session worker B served 20 s ago"
    );
    assert!(
        call(
            &host,
            &worker_b,
            Some("shared"),
            tool(3, "read_file", json!({"path": "/a"}))
        )
        .forwarded
    );
    // once it really is idle, any worker's timer ends it and the next action is unknown
    host.advance(61_000);
    worker_a.on_tick(&host);
    worker_b.on_tick(&host);
    assert!(
        host.state()
            .logs
            .iter()
            .any(|(_, l)| l.contains("session `shared` ended (expired)"))
    );
    let o = call(
        &host,
        &worker_a,
        Some("shared"),
        tool(4, "read_file", json!({"path": "/a"})),
    );
    assert_eq!(o.rule, "session:unknown");
}

/// `receipts.header`: `full` (default) carries the receipt, `id` its hash, `none` nothing; the
/// access log has the whole receipt in every mode, and its hash is the id.
#[test]
fn the_receipt_header_carries_what_the_operator_chose() {
    for mode in ["full", "id", "none"] {
        let (host, plugin) = setup(json!({"receipts": {"header": mode}}));
        let o = call(
            &host,
            &plugin,
            Some("h"),
            tool(1, "read_file", json!({"path": "/a"})),
        );
        assert!(o.forwarded, "{mode}");
        let logged = bundle::receipt::Receipt::from_json(o.receipt.as_deref().unwrap()).unwrap();
        assert!(logged.hash_matches(), "{mode}");
        let header = host.request_header("x-portcullis-receipt");
        assert_eq!(
            host.request_header("x-portcullis-decision").as_deref(),
            Some("ALLOW")
        );
        match mode {
            "full" => {
                let decoded = bundle::receipt::Receipt::from_json(&header.unwrap()).unwrap();
                assert_eq!(decoded, logged);
            }
            "id" => assert_eq!(header, Some(hex::encode(logged.hash))),
            _ => assert_eq!(header, None),
        }
        // A refusal carries the same choice.
        let o = call(&host, &plugin, Some("h"), tool(2, "format_disk", json!({})));
        assert!(!o.forwarded);
        let local = host.state().local_response.clone().unwrap();
        let header = local
            .headers
            .iter()
            .find(|(n, _)| n == "x-portcullis-receipt")
            .map(|(_, v)| v.clone());
        assert_eq!(header.is_some(), mode != "none", "{mode}");
    }
    let bad = Plugin::configure(
        &MockHost::new(START_MS),
        &config(json!({"receipts": {"header": "some"}})),
    );
    assert!(bad.error().is_some());
}

/// One tick signs at most `MAX_SIGNATURES_PER_TICK` checkpoints (the longest waiting first), so a
/// worker with many idle sessions is not stalled; the next ticks attest the rest.
#[test]
fn a_tick_signs_a_bounded_number_of_checkpoints_oldest_first() {
    use filter_core::limits::MAX_SIGNATURES_PER_TICK as BUDGET;
    let (host, plugin) = setup(json!({}));
    let n = BUDGET + 8;
    for i in 0..n {
        call(
            &host,
            &plugin,
            Some(&format!("s{i:03}")),
            tool(1, "read_file", json!({"path": "/a"})),
        );
        host.advance(10);
    }
    let checkpoints = |host: &MockHost| -> Vec<String> {
        let logs = std::mem::take(&mut host.state().logs);
        logs.iter()
            .filter_map(|(_, l)| l.strip_prefix("portcullis receipt "))
            .map(|r| bundle::receipt::Receipt::from_json(r).unwrap())
            .filter(|r| r.body.event == bundle::receipt::EventKind::Checkpoint)
            .map(|r| r.body.session)
            .collect()
    };
    host.state().logs.clear();
    host.advance(6_000);
    plugin.on_tick(&host);
    let first = checkpoints(&host);
    assert_eq!(first.len(), BUDGET);
    let oldest: Vec<String> = (0..BUDGET).map(|i| format!("s{i:03}")).collect();
    assert_eq!(first, oldest, "the longest waiting sessions first");
    host.advance(1_000);
    plugin.on_tick(&host);
    let second = checkpoints(&host);
    assert_eq!(second.len(), 8);
    host.advance(1_000);
    plugin.on_tick(&host);
    assert!(checkpoints(&host).is_empty(), "every session is attested");
}
