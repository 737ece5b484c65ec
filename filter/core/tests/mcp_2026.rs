//! MCP 2026-07-28 through the whole filter on the mock host (docs/filter.md, "MCP 2026-07-28"):
//! an MRTR `requestState` passes untouched and stays bound to the action it was handed out for;
//! `resultType` is read on every answer; an `InputRequiredResult`'s input requests are judged; a
//! task handle keeps its call's decision and its result is read when fetched; a
//! `subscriptions/listen` stream is read message by message.

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

use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::{Value, json};

const START_MS: u64 = 1_800_000_000_000;

fn plugin(host: &MockHost) -> Rc<Plugin> {
    common::plugin(
        host,
        "mcp_2026.pcl",
        json!({
            "mcp": { "paths": ["/mcp"], "server_name": "workbench" },
            "session": { "key": { "source": "header", "name": "x-agent-run" } },
        }),
    )
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    })
}

/// A 2026-07-28 request with its routing headers, in run `run`; `None` when forwarded, else the
/// local answer (status, body).
fn send(host: &MockHost, p: &Rc<Plugin>, run: &str, body: &Value) -> (Stream, Option<Value>) {
    let method = body["method"].as_str().unwrap();
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
        ("x-agent-run", run),
    ];
    let params = &body["params"];
    let name = params["name"]
        .as_str()
        .or_else(|| params["taskId"].as_str())
        .unwrap_or_default()
        .to_owned();
    if !name.is_empty() {
        headers.push(("mcp-name", &name));
    }
    let (s, _) = common::send_mcp(host, p, &headers, body);
    let local = host
        .state()
        .local_response
        .as_ref()
        .map(|r| serde_json::from_slice(&r.body).unwrap());
    (s, local)
}

fn call(id: i64, tool: &str, args: Value, extra: Value) -> Value {
    let mut params = json!({"name": tool, "arguments": args, "_meta": meta()});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// The JSON answer `body` to stream `s`: what the agent gets.
fn answer(host: &MockHost, s: &mut Stream, body: &Value) -> Value {
    host.state().response_headers = vec![
        (":status".to_owned(), "200".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    s.on_response_headers(host);
    let bytes = serde_json::to_vec(body).unwrap();
    host.state().response_body = bytes.clone();
    assert_eq!(
        s.on_response_body(host, bytes.len(), true),
        FilterAction::Continue
    );
    serde_json::from_slice(&host.state().response_body).unwrap()
}

fn rule(host: &MockHost) -> Option<String> {
    host.filter_state_str("wasm.portcullis.rule")
}

/// An `InputRequiredResult` asking for a sampling (the pack allows the server to ask it).
fn input_required(id: i64, state: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "resultType": "input_required",
        "inputRequests": {"summary": {"method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": "Summarize"}}],
            "maxTokens": 50}}},
        "requestState": state,
    }})
}

#[test]
fn a_retry_with_the_servers_request_state_must_repeat_the_action() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let args = json!({"path": "/repo/a"});
    let (mut s, local) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", args.clone(), json!({})),
    );
    assert_eq!(local, None);
    // The InputRequiredResult reaches the agent untouched: requestState is opaque.
    let ir = input_required(1, "opaque-state-1");
    assert_eq!(answer(&host, &mut s, &ir), ir);

    let retry = |id: i64, args: Value, state: &str| {
        call(
            id,
            "read_file",
            args,
            json!({"requestState": state, "inputResponses": {"summary": {"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"}}}),
        )
    };
    // The same action, with the state and the answers: decided as usual (allowed).
    let (_, local) = send(&host, &p, "r1", &retry(2, args.clone(), "opaque-state-1"));
    assert_eq!(local, None, "{:?}", rule(&host));
    assert_eq!(rule(&host).as_deref(), Some("tools"));
    // Another action under the same state: denied, though the pack allows it on its own.
    let (_, local) = send(
        &host,
        &p,
        "r1",
        &retry(3, json!({"path": "/etc/shadow"}), "opaque-state-1"),
    );
    assert!(local.is_some());
    assert_eq!(rule(&host).as_deref(), Some("mrtr:request_state_changed"));
    let (_, local) = send(
        &host,
        &p,
        "r1",
        &call(
            4,
            "query_db",
            args.clone(),
            json!({"requestState": "opaque-state-1"}),
        ),
    );
    assert!(local.is_some());
    assert_eq!(rule(&host).as_deref(), Some("mrtr:request_state_changed"));
    // A state never handed out, or handed to another session: unbound.
    let (_, local) = send(&host, &p, "r1", &retry(5, args.clone(), "forged"));
    let local = local.expect("refused");
    assert_eq!(rule(&host).as_deref(), Some("mrtr:request_state_unbound"));
    assert!(
        local.to_string().contains("requestState"),
        "the agent is told why: {local}"
    );
    let (_, local) = send(&host, &p, "r2", &retry(6, args.clone(), "opaque-state-1"));
    assert!(local.is_some());
    assert_eq!(rule(&host).as_deref(), Some("mrtr:request_state_unbound"));
}

#[test]
fn the_input_requests_of_an_input_required_result_are_judged_like_server_requests() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let (mut s, _) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", json!({"path": "/a"}), json!({})),
    );
    // The pack denies elicitation: the whole answer is the denial, and its state is not bound.
    let asked = json!({"jsonrpc": "2.0", "id": 1, "result": {
        "resultType": "input_required",
        "inputRequests": {"confirm": {"method": "elicitation/create", "params": {
            "mode": "form", "message": "Read this file?",
            "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}},
        "requestState": "st",
    }});
    let got = answer(&host, &mut s, &asked);
    assert_eq!(got["error"]["data"]["rule"], "no_elicitation", "{got}");
    assert_eq!(got["id"], 1);
    let (_, local) = send(
        &host,
        &p,
        "r1",
        &call(
            2,
            "read_file",
            json!({"path": "/a"}),
            json!({"requestState": "st"}),
        ),
    );
    assert!(local.is_some());
    assert_eq!(rule(&host).as_deref(), Some("mrtr:request_state_unbound"));
}

#[test]
fn a_request_state_expires_with_its_binding() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let args = json!({"path": "/repo/a"});
    let (mut s, _) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", args.clone(), json!({})),
    );
    answer(&host, &mut s, &input_required(1, "st"));
    host.advance(filter_core::limits::BINDING_TTL_MS + 1);
    let (_, local) = send(
        &host,
        &p,
        "r1",
        &call(2, "read_file", args, json!({"requestState": "st"})),
    );
    assert!(local.is_some());
    assert_eq!(rule(&host).as_deref(), Some("mrtr:request_state_unbound"));
}

#[test]
fn result_types_the_filter_cannot_read_as_awaited_are_replaced() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    // An unknown resultType on a tool result.
    let (mut s, _) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", json!({"path": "/a"}), json!({})),
    );
    let got = answer(
        &host,
        &mut s,
        &json!({"jsonrpc": "2.0", "id": 1, "result": {"resultType": "partial", "content": []}}),
    );
    assert_eq!(got["error"]["code"], -32044, "{got}");
    assert_eq!(got["id"], 1);
    // An InputRequiredResult on a list (the spec allows it on three requests only).
    let list =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta()}});
    let (mut s, local) = send(&host, &p, "r1", &list);
    assert_eq!(local, None);
    let got = answer(
        &host,
        &mut s,
        &json!({"jsonrpc": "2.0", "id": 2, "result": {"resultType": "input_required", "requestState": "x"}}),
    );
    assert_eq!(got["error"]["code"], -32044, "{got}");
    // A complete result is read as before (resultType kept).
    let (mut s, _) = send(
        &host,
        &p,
        "r1",
        &call(3, "read_file", json!({"path": "/a"}), json!({})),
    );
    let ok = json!({"jsonrpc": "2.0", "id": 3, "result": {"resultType": "complete",
        "content": [{"type": "text", "text": "hello"}]}});
    assert_eq!(answer(&host, &mut s, &ok), ok);
}

#[test]
fn a_request_state_of_the_wrong_type_is_refused() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let (_, local) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", json!({}), json!({"requestState": {"a": 1}})),
    );
    let local = local.expect("refused");
    assert_eq!(local["error"]["code"], -32602, "{local}");
    // Spelled in another case: a case-blind server would read it.
    let (_, local) = send(
        &host,
        &p,
        "r1",
        &call(2, "read_file", json!({}), json!({"RequestState": "x"})),
    );
    assert_eq!(local.expect("refused")["error"]["code"], -32600);
}

fn task_get(id: i64, task: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tasks/get", "params": {"taskId": task, "_meta": meta()}})
}

fn task_handle(id: i64, task: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"resultType": "task", "taskId": task,
        "status": "working", "createdAt": "2026-12-07T01:00:00Z",
        "lastUpdatedAt": "2026-12-07T01:00:00Z", "ttlMs": 60000, "pollIntervalMs": 500}})
}

#[test]
fn a_task_keeps_its_calls_decision_and_its_result_is_read_when_fetched() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let (mut s, _) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", json!({"path": "/a"}), json!({})),
    );
    let handle = task_handle(1, "task-1");
    assert_eq!(answer(&host, &mut s, &handle), handle);
    // The task is named by its call's tool: the pack's `tasks` rule allows it.
    let (mut s, local) = send(&host, &p, "r1", &task_get(2, "task-1"));
    assert_eq!(local, None, "{:?}", rule(&host));
    assert_eq!(rule(&host).as_deref(), Some("tasks"));
    // The completed task's result is read as the tools/call result: the secret is redacted.
    let done = json!({"jsonrpc": "2.0", "id": 2, "result": {"resultType": "complete",
        "taskId": "task-1", "status": "completed", "createdAt": "2026-12-07T01:00:00Z",
        "lastUpdatedAt": "2026-12-07T01:00:01Z", "ttlMs": 60000,
        "result": {"content": [{"type": "text", "text": "key AKIAIOSFODNN7EXAMPLE"}], "isError": false}}});
    let got = answer(&host, &mut s, &done);
    let text = got["result"]["result"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "{got}");
    assert_eq!(got["result"]["status"], "completed");
    // A task waiting for input: its input requests are judged (elicitation is denied here).
    let (mut s, _) = send(&host, &p, "r1", &task_get(3, "task-1"));
    let waiting = json!({"jsonrpc": "2.0", "id": 3, "result": {"resultType": "complete",
        "taskId": "task-1", "status": "input_required", "createdAt": "2026-12-07T01:00:00Z",
        "lastUpdatedAt": "2026-12-07T01:00:01Z", "ttlMs": 60000,
        "inputRequests": {"q": {"method": "elicitation/create", "params": {"mode": "form",
            "message": "ok?", "requestedSchema": {"type": "object", "properties": {}}}}}}});
    let got = answer(&host, &mut s, &waiting);
    assert_eq!(got["error"]["data"]["rule"], "no_elicitation", "{got}");
    // tasks/update and tasks/cancel of the task: allowed like tasks/get.
    let update = json!({"jsonrpc": "2.0", "id": 4, "method": "tasks/update", "params": {
        "taskId": "task-1", "inputResponses": {}, "_meta": meta()}});
    assert_eq!(send(&host, &p, "r1", &update).1, None);
    let cancel = json!({"jsonrpc": "2.0", "id": 5, "method": "tasks/cancel", "params": {
        "taskId": "task-1", "_meta": meta()}});
    assert_eq!(send(&host, &p, "r1", &cancel).1, None);
}

#[test]
fn a_task_of_another_session_or_never_handed_out_is_refused() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let (mut s, _) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", json!({"path": "/a"}), json!({})),
    );
    answer(&host, &mut s, &task_handle(1, "task-1"));
    for (run, task) in [("r2", "task-1"), ("r1", "task-2")] {
        for method in ["tasks/get", "tasks/update", "tasks/cancel"] {
            let body = json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": {
                "taskId": task, "inputResponses": {}, "_meta": meta()}});
            let (_, local) = send(&host, &p, run, &body);
            assert!(local.is_some(), "{run} {task} {method}");
            assert_eq!(
                rule(&host).as_deref(),
                Some("task:unbound"),
                "{run} {method}"
            );
        }
    }
    // The Mcp-Name of a task request is its task id: another value is a mismatch.
    let (_, _) = common::send_mcp(
        &host,
        &p,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tasks/get"),
            ("mcp-name", "task-2"),
            ("x-agent-run", "r1"),
        ],
        &task_get(10, "task-1"),
    );
    let local = host.state().local_response.clone().expect("refused");
    assert_eq!(local.status, 400);
    let body: Value = serde_json::from_slice(&local.body).unwrap();
    assert_eq!(body["error"]["code"], -32020);
    // A task handle on anything but a tools/call is not passed.
    let list =
        json!({"jsonrpc": "2.0", "id": 11, "method": "tools/list", "params": {"_meta": meta()}});
    let (mut s, _) = send(&host, &p, "r1", &list);
    let got = answer(&host, &mut s, &task_handle(11, "task-3"));
    assert_eq!(got["error"]["code"], -32044, "{got}");
}

/// The SSE answer `events` to stream `s` in one chunk: what the agent gets.
fn answer_sse(host: &MockHost, s: &mut Stream, events: &[Value]) -> String {
    host.state().response_headers = vec![
        (":status".to_owned(), "200".to_owned()),
        ("content-type".to_owned(), "text/event-stream".to_owned()),
    ];
    s.on_response_headers(host);
    let body: String = events
        .iter()
        .map(|e| format!("event: message\ndata: {e}\n\n"))
        .collect();
    host.state().response_body = body.clone().into_bytes();
    assert_eq!(
        s.on_response_body(host, body.len(), true),
        FilterAction::Continue
    );
    String::from_utf8(host.state().response_body.clone()).unwrap()
}

#[test]
fn a_listen_stream_is_read_message_by_message() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host);
    let (mut s, _) = send(
        &host,
        &p,
        "r1",
        &call(1, "read_file", json!({"path": "/a"}), json!({})),
    );
    answer(&host, &mut s, &task_handle(1, "task-1"));
    let listen = json!({"jsonrpc": "2.0", "id": 2, "method": "subscriptions/listen", "params": {
        "notifications": {"toolsListChanged": true}, "_meta": meta()}});
    let (mut s, local) = send(&host, &p, "r1", &listen);
    assert_eq!(local, None, "{:?}", rule(&host));
    let task_note = |task: &str| {
        json!({"jsonrpc": "2.0", "method": "notifications/tasks", "params": {"taskId": task,
            "status": "completed", "createdAt": "2026-12-07T01:00:00Z",
            "lastUpdatedAt": "2026-12-07T01:00:01Z", "ttlMs": 60000,
            "result": {"content": [{"type": "text", "text": "key AKIAIOSFODNN7EXAMPLE"}]}}})
    };
    let out = answer_sse(
        &host,
        &mut s,
        &[
            json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                "params": {"notifications": {"toolsListChanged": true}}}),
            // The task of this session: its result is read (the secret redacted).
            task_note("task-1"),
            // A task never handed to this session: removed.
            task_note("task-9"),
            // A server request on the stream: judged (elicitation is denied: removed).
            json!({"jsonrpc": "2.0", "id": 7, "method": "elicitation/create", "params": {
                "mode": "form", "message": "ok?", "requestedSchema": {"type": "object"}}}),
            json!({"jsonrpc": "2.0", "id": 2, "result": {"resultType": "complete", "_meta": {}}}),
        ],
    );
    assert!(
        out.contains("notifications/subscriptions/acknowledged"),
        "{out}"
    );
    assert!(out.contains("task-1"), "{out}");
    assert!(!out.contains("AKIAIOSFODNN7EXAMPLE"), "{out}");
    assert!(!out.contains("task-9"), "{out}");
    assert!(!out.contains("elicitation/create"), "{out}");
    assert!(out.contains(r#""id":2"#), "{out}");
}
