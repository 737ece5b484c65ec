//! MCP normalization: the real wire captures in `../shared/mcp-wire`, every MCP method, and every
//! bad input with its exact refusal (the table in `docs/filter-normalization.md`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::PathBuf;

use bundle::action::Kind;
use filter_core::normalize::{
    JsonRpcId, McpMessageKind, NormalizeConfig, Route, normalize_mcp, normalize_mcp_headers_only,
    route,
};
use filter_core::normalize::{Refusal, RequestHead};
use serde_json::{Value, json};

fn mcp_head(extra: &[(&str, &str)]) -> RequestHead {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
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

fn cfg() -> NormalizeConfig {
    NormalizeConfig {
        server_name: "workbench".into(),
        ..NormalizeConfig::default()
    }
}

fn one(body: &str) -> filter_core::normalize::McpMessage {
    let r = normalize_mcp(&mcp_head(&[]), body.as_bytes(), &cfg())
        .unwrap_or_else(|e| panic!("{body}: {e:?}"));
    assert!(!r.batch);
    assert_eq!(r.messages.len(), 1);
    r.messages.into_iter().next().unwrap()
}

fn refused(head: &RequestHead, body: &str, c: &NormalizeConfig) -> Refusal {
    match normalize_mcp(head, body.as_bytes(), c) {
        Ok(r) => panic!("{body}: accepted as {r:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Wire captures

struct WireRequest {
    head: RequestHead,
    body: Vec<u8>,
}

/// Read the client->server bytes of a capture file and split them into HTTP/1.1 requests.
fn client_requests(path: &std::path::Path) -> Vec<WireRequest> {
    let data = std::fs::read(path).unwrap();
    let marker = b"===== ";
    let mut stream = Vec::new();
    let mut i = 0;
    while let Some(off) = find(&data[i..], marker) {
        let start = i + off;
        let line_end = start + find(&data[start..], b"\n").unwrap();
        let line = std::str::from_utf8(&data[start..line_end]).unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        // ===== DIR TS N bytes =====
        let dir = parts[1];
        let n: usize = parts[3].parse().unwrap();
        let payload = &data[line_end + 1..line_end + 1 + n];
        if dir == "C->S" {
            stream.extend_from_slice(payload);
        }
        i = line_end + 1 + n;
    }
    let mut out = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head_text = std::str::from_utf8(&rest[..head_end]).unwrap();
        let mut lines = head_text.split("\r\n");
        let request_line: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let mut headers = Vec::new();
        let mut authority = String::new();
        let mut len = 0usize;
        for l in lines {
            let (n, v) = l.split_once(':').unwrap();
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_owned());
            if n == "host" {
                authority = v.clone();
            }
            if n == "content-length" {
                len = v.parse().unwrap();
            }
            headers.push((n, v));
        }
        let body = rest[head_end + 4..head_end + 4 + len].to_vec();
        rest = &rest[head_end + 4 + len..];
        out.push(WireRequest {
            head: RequestHead {
                method: request_line[0].to_owned(),
                scheme: "http".into(),
                authority,
                path: request_line[1].to_owned(),
                headers,
            },
            body,
        });
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn wire_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/mcp-wire")
}

/// What each capture's client requests normalize to: `METHOD operation[:tool]`.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "legacy-2025-11-25-json/01-initialize+notifications-initialized.http.txt",
        &["POST initialize", "POST notifications/initialized"],
    ),
    (
        "legacy-2025-11-25-json/02-get-standalone-sse-stream.http.txt",
        &["GET stream/open"],
    ),
    (
        "legacy-2025-11-25-json/03-tools-list+tools-call+delete.http.txt",
        &[
            "POST tools/list",
            "POST tools/call:add",
            "DELETE session/delete",
        ],
    ),
    (
        "legacy-2025-11-25-sse-v1sdk/conn001.http.txt",
        &["POST initialize"],
    ),
    (
        "legacy-2025-11-25-sse-v1sdk/conn002.http.txt",
        &["POST notifications/initialized"],
    ),
    (
        "legacy-2025-11-25-sse-v1sdk/conn003.http.txt",
        &["GET stream/open"],
    ),
    (
        "legacy-2025-11-25-sse-v1sdk/conn004.http.txt",
        &["POST tools/list"],
    ),
    (
        "legacy-2025-11-25-sse-v1sdk/conn005.http.txt",
        &["POST tools/call:add"],
    ),
    (
        "legacy-2025-11-25-sse-v1sdk/conn006.http.txt",
        &["DELETE session/delete"],
    ),
    (
        "legacy-2025-11-25-sse/01-initialize.http.txt",
        &["POST initialize"],
    ),
    (
        "legacy-2025-11-25-sse/02-notifications-initialized.http.txt",
        &["POST notifications/initialized"],
    ),
    (
        "legacy-2025-11-25-sse/03-get-standalone-sse-stream.http.txt",
        &["GET stream/open"],
    ),
    (
        "legacy-2025-11-25-sse/04-tools-list.http.txt",
        &["POST tools/list"],
    ),
    (
        "legacy-2025-11-25-sse/05-tools-call.http.txt",
        &["POST tools/call:add"],
    ),
    (
        "legacy-2025-11-25-sse/06-delete-session.http.txt",
        &["DELETE session/delete"],
    ),
    (
        "modern-2026-07-28/01-server-discover+tools-list+tools-call.http.txt",
        &[
            "POST server/discover",
            "POST tools/list",
            "POST tools/call:add",
        ],
    ),
];

#[test]
fn every_capture_is_listed() {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(wire_dir()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let rel = f
                .strip_prefix(wire_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.push(rel);
        }
    }
    files.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn wire_captures_normalize_to_the_methods_and_tools_the_server_saw() {
    let c = cfg();
    for (file, expected) in EXPECTED {
        let reqs = client_requests(&wire_dir().join(file));
        let mut got = Vec::new();
        for req in &reqs {
            let r = route(&req.head, &c);
            let action = match r {
                Route::Mcp => {
                    let n = normalize_mcp(&req.head, &req.body, &c)
                        .unwrap_or_else(|e| panic!("{file}: {e:?}"));
                    assert!(!n.batch);
                    let msg = &n.messages[0];
                    // Cross-check against a plain reading of the body.
                    let v: Value = serde_json::from_slice(&req.body).unwrap();
                    assert_eq!(msg.action.operation, v["method"].as_str().unwrap());
                    let kind = if v.get("id").is_some() {
                        assert_eq!(msg.id, Some(JsonRpcId::Num(v["id"].as_i64().unwrap())));
                        McpMessageKind::Request
                    } else {
                        assert_eq!(msg.id, None);
                        McpMessageKind::Notification
                    };
                    assert_eq!(msg.kind, kind);
                    assert_eq!(msg.action.size, req.body.len() as u64);
                    let version = req
                        .head
                        .header("mcp-protocol-version")
                        .or_else(|| v["params"]["protocolVersion"].as_str());
                    assert_eq!(n.protocol_version.as_deref(), version, "{file}");
                    if msg.action.operation == "tools/call" {
                        assert_eq!(msg.action.arguments, json!({"a": 2, "b": 40}));
                    }
                    msg.action.clone()
                }
                Route::McpStream | Route::McpDelete => {
                    normalize_mcp_headers_only(&req.head, r, &c).unwrap()
                }
                other => panic!("{file}: unexpected route {other:?}"),
            };
            assert_eq!(action.kind, Kind::Mcp);
            assert_eq!(action.target.server, "workbench");
            assert_eq!(action.target.host, "127.0.0.1");
            assert_eq!(action.target.path, "/mcp");
            assert_eq!(
                action.session_id.as_deref(),
                req.head.header("mcp-session-id"),
                "{file}"
            );
            let mut desc = format!("{} {}", req.head.method, action.operation);
            if let Some(t) = &action.tool {
                desc = format!("{desc}:{t}");
            }
            got.push(desc);
        }
        assert_eq!(&got, expected, "{file}");
    }
}

// ---------------------------------------------------------------------------------------------
// Every method

#[test]
fn every_mcp_method_normalizes() {
    struct Case {
        body: Value,
        op: &'static str,
        tool: Option<&'static str>,
        prompt: Option<&'static str>,
        resource: Option<&'static str>,
        args: Value,
        kind: McpMessageKind,
    }
    let req = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let plain = |body: Value, op: &'static str| Case {
        body,
        op,
        tool: None,
        prompt: None,
        resource: None,
        args: Value::Null,
        kind: McpMessageKind::Request,
    };
    let cases = vec![
        plain(
            req(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}),
            ),
            "initialize",
        ),
        Case {
            kind: McpMessageKind::Notification,
            ..plain(
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                "notifications/initialized",
            )
        },
        Case {
            kind: McpMessageKind::Notification,
            ..plain(
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}),
                "notifications/cancelled",
            )
        },
        Case {
            kind: McpMessageKind::Notification,
            ..plain(
                json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
                "notifications/roots/list_changed",
            )
        },
        plain(
            json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}),
            "ping",
        ),
        plain(req("tools/list", json!({"cursor": "x"})), "tools/list"),
        Case {
            tool: Some("write_file"),
            args: json!({"path": "/repo/a", "content": "x", "branch": "main"}),
            ..plain(
                req(
                    "tools/call",
                    json!({"name": "write_file", "arguments": {"path": "/repo/a", "content": "x", "branch": "main"}}),
                ),
                "tools/call",
            )
        },
        Case {
            tool: Some("run_tests"),
            ..plain(
                req("tools/call", json!({"name": "run_tests"})),
                "tools/call",
            )
        },
        plain(req("resources/list", json!({})), "resources/list"),
        plain(
            req("resources/templates/list", json!({})),
            "resources/templates/list",
        ),
        Case {
            resource: Some("file:///repo/README.md"),
            ..plain(
                req("resources/read", json!({"uri": "file:///repo/README.md"})),
                "resources/read",
            )
        },
        Case {
            resource: Some("file:///repo/x"),
            ..plain(
                req("resources/subscribe", json!({"uri": "file:///repo/x"})),
                "resources/subscribe",
            )
        },
        Case {
            resource: Some("file:///repo/x"),
            ..plain(
                req("resources/unsubscribe", json!({"uri": "file:///repo/x"})),
                "resources/unsubscribe",
            )
        },
        plain(req("prompts/list", json!({})), "prompts/list"),
        Case {
            prompt: Some("review"),
            args: json!({"lang": "rust"}),
            ..plain(
                req(
                    "prompts/get",
                    json!({"name": "review", "arguments": {"lang": "rust"}}),
                ),
                "prompts/get",
            )
        },
        Case {
            prompt: Some("review"),
            args: json!({"name": "lang", "value": "ru"}),
            ..plain(
                req(
                    "completion/complete",
                    json!({"ref": {"type": "ref/prompt", "name": "review"}, "argument": {"name": "lang", "value": "ru"}}),
                ),
                "completion/complete",
            )
        },
        Case {
            resource: Some("file:///{path}"),
            args: json!({"name": "path", "value": "/r"}),
            ..plain(
                req(
                    "completion/complete",
                    json!({"ref": {"type": "ref/resource", "uri": "file:///{path}"}, "argument": {"name": "path", "value": "/r"}}),
                ),
                "completion/complete",
            )
        },
        plain(
            req("logging/setLevel", json!({"level": "debug"})),
            "logging/setLevel",
        ),
        plain(
            // Without `_meta` it is not a 2026-07-28 request; with it, see
            // `modern_requests_need_their_meta_fields_and_headers`.
            req("server/discover", json!({})),
            "server/discover",
        ),
        plain(
            req("subscriptions/listen", json!({})),
            "subscriptions/listen",
        ),
        plain(req("tasks/get", json!({"taskId": "t1"})), "tasks/get"),
        plain(
            req("vendor/unknownThing", json!({"x": 1})),
            "vendor/unknownThing",
        ),
        Case {
            kind: McpMessageKind::Response,
            args: json!({"roots": [{"uri": "file:///repo"}]}),
            ..plain(
                json!({"jsonrpc": "2.0", "id": 0, "result": {"roots": [{"uri": "file:///repo"}]}}),
                "response",
            )
        },
        Case {
            kind: McpMessageKind::Response,
            args: json!({"action": "accept", "content": {"ok": true}}),
            ..plain(
                json!({"jsonrpc": "2.0", "id": "e1", "result": {"action": "accept", "content": {"ok": true}}}),
                "response",
            )
        },
        Case {
            kind: McpMessageKind::Response,
            args: json!({"code": -1, "message": "user rejected"}),
            ..plain(
                json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "user rejected"}}),
                "response",
            )
        },
    ];
    for c in cases {
        let body = c.body.to_string();
        let m = one(&body);
        assert_eq!(m.action.operation, c.op, "{body}");
        assert_eq!(m.action.tool.as_deref(), c.tool, "{body}");
        assert_eq!(m.action.prompt.as_deref(), c.prompt, "{body}");
        assert_eq!(m.action.resource.as_deref(), c.resource, "{body}");
        assert_eq!(m.action.arguments, c.args, "{body}");
        assert_eq!(m.kind, c.kind, "{body}");
        assert_eq!(m.action.kind, Kind::Mcp);
        assert_eq!(m.action.size, body.len() as u64);
        assert_eq!(m.action.target.server, "workbench");
        assert_eq!(m.action.target.port, 8080);
    }
}

#[test]
fn ids_are_kept_exactly() {
    assert_eq!(
        one(r#"{"jsonrpc":"2.0","id":-9007199254740993,"method":"ping"}"#).id,
        Some(JsonRpcId::Num(-9007199254740993))
    );
    assert_eq!(
        one(r#"{"jsonrpc":"2.0","id":"a\u0062c","method":"ping"}"#).id,
        Some(JsonRpcId::Str("abc".into()))
    );
    assert_eq!(JsonRpcId::Str("x".into()).to_json(), json!("x"));
    assert_eq!(JsonRpcId::Num(3).to_json(), json!(3));
}

#[test]
fn escapes_decode_to_what_the_server_reads() {
    let m = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"git\u005fpush","arguments":{"branch":"main"}}}"#,
    );
    assert_eq!(m.action.operation, "tools/call");
    assert_eq!(m.action.tool.as_deref(), Some("git_push"));
}

#[test]
fn request_wide_fields() {
    let head = mcp_head(&[
        ("mcp-session-id", "abc123"),
        ("authorization", "Bearer secret-token-value-123456"),
        ("x-portcullis-intent", "fix-bug"),
        ("x-portcullis-receipt", "spoofed"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("connection", "keep-alive"),
        (":authority", "workbench.local"),
    ]);
    let r = normalize_mcp(
        &head,
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        &cfg(),
    )
    .unwrap();
    let a = &r.messages[0].action;
    assert_eq!(a.session_id.as_deref(), Some("abc123"));
    assert_eq!(a.declared_intent.as_deref(), Some("fix-bug"));
    assert_eq!(
        a.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(a.header("authorization"), Some("[REDACTED]"));
    assert_eq!(a.header("x-portcullis-receipt"), None);
    assert_eq!(a.header("x-portcullis-intent"), None);
    assert_eq!(a.header("connection"), None);
    assert_eq!(a.header(":authority"), None);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.target.host, "workbench.local");
    // Without a configured server name, the host names the server.
    let r = normalize_mcp(
        &head,
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        &NormalizeConfig::default(),
    )
    .unwrap();
    assert_eq!(r.messages[0].action.target.server, "workbench.local");
}

#[test]
fn risk_flags_come_from_the_arguments() {
    let m = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"bob@example.com","body":"key AKIAIOSFODNN7EXAMPLE"}}}"#,
    );
    assert!(m.action.risk.secrets);
    assert_eq!(m.action.risk.data_classes, vec!["credential", "pii"]);
    let m = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/repo/a"}}}"#,
    );
    assert!(!m.action.risk.secrets);
    assert!(m.action.risk.data_classes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Bad input: exact refusals

#[test]
fn every_bad_body_gets_its_documented_refusal() {
    let id1 = Some(JsonRpcId::Num(1));
    #[rustfmt::skip]
    let cases: Vec<(&str, u16, i64, Option<JsonRpcId>, &str)> = vec![
        ("", 400, -32700, None, "unexpected end"),
        ("not json", 400, -32700, None, "invalid json"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {}"#, 400, -32700, None, "data after"),
        ("\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", 400, -32700, None, "byte-order mark"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800x"}}"#, 400, -32700, None, "surrogate"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":1e400}}}"#, 400, -32700, None, "too large"),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"pi\nng\"}", 400, -32700, None, "control character"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","name":"deploy"}}"#, 400, -32600, None, "duplicate key `name`"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"}"#, 400, -32600, None, "duplicate key `method`"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":{"b":1,"b":1}}}}"#, 400, -32600, None, "duplicate key `b`"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"__proto__":{"admin":true}}}}"#, 400, -32600, None, "member `__proto__`"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":{"constructor":{"prototype":{"admin":true}}}}}}"#, 400, -32600, None, "member `constructor.prototype`"),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, 400, -32600, None, "batches are not supported"),
        (r#""ping""#, 400, -32600, None, "must be an object"),
        ("null", 400, -32600, None, "must be an object"),
        (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, 400, -32600, None, "id must be"),
        (r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, 400, -32600, None, "id must be"),
        (r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#, 400, -32600, None, "id must be"),
        (r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#, 400, -32600, None, "id must be"),
        (r#"{"id":1,"method":"ping"}"#, 400, -32600, id1.clone(), "jsonrpc"),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, 400, -32600, id1.clone(), "jsonrpc"),
        (r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#, 400, -32600, id1.clone(), "jsonrpc"),
        (r#"{"jsonrpc":"2.0","id":1,"method":7}"#, 400, -32600, id1.clone(), "`method` must be a string"),
        (r#"{"jsonrpc":"2.0","id":1,"method":""}"#, 400, -32600, id1.clone(), "empty"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["read_file"]}"#, 400, -32600, id1.clone(), "`params` must be an object"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#, 400, -32600, id1.clone(), "`params` must be an object"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#, 400, -32600, id1.clone(), "both"),
        (r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#, 400, -32600, None, "has no id"),
        (r#"{"jsonrpc":"2.0"}"#, 400, -32600, None, "neither"),
        (r#"{"jsonrpc":"2.0","id":1}"#, 400, -32600, id1.clone(), "exactly one"),
        (r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}"#, 400, -32600, id1.clone(), "exactly one"),
        (r#"{"jsonrpc":"2.0","id":1,"error":"bad"}"#, 400, -32600, id1.clone(), "`error` must be an object"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, 400, -32602, id1.clone(), "params.name"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#, 400, -32602, id1.clone(), "params.name"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":"a=1"}}"#, 400, -32602, id1.clone(), "params.arguments"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#, 400, -32602, id1.clone(), "params.arguments"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}"#, 400, -32602, id1.clone(), "params.name"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":1}}"#, 400, -32602, id1.clone(), "params.uri"),
        (r#"{"jsonrpc":"2.0","id":"s","method":"resources/subscribe"}"#, 400, -32602, Some(JsonRpcId::Str("s".into())), "params.uri"),
    ];
    for (body, status, code, id, reason) in cases {
        let r = refused(&mcp_head(&[]), body, &cfg());
        assert_eq!(r.http_status, status, "{body}");
        assert_eq!(r.jsonrpc_code, Some(code), "{body}: {}", r.reason);
        assert_eq!(r.id, id, "{body}");
        assert!(
            r.reason.contains(reason),
            "{body}: reason `{}` lacks `{reason}`",
            r.reason
        );
    }
}

#[test]
fn invalid_utf8_and_depth_are_parse_errors() {
    let mut body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"#.to_vec();
    body.push(0xff);
    body.extend_from_slice(br#""}}"#);
    let r = normalize_mcp(&mcp_head(&[]), &body, &cfg()).unwrap_err();
    assert_eq!((r.http_status, r.jsonrpc_code), (400, Some(-32700)));
    assert!(r.reason.contains("utf-8"));

    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{{"a":{}1{}}}}}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let r = refused(&mcp_head(&[]), &deep, &cfg());
    assert_eq!(r.jsonrpc_code, Some(-32700));
    assert!(r.reason.contains("deeper than 64"));
    // The limit is configurable.
    let c = NormalizeConfig {
        max_json_depth: 100,
        ..cfg()
    };
    assert!(normalize_mcp(&mcp_head(&[]), deep.as_bytes(), &c).is_ok());
}

#[test]
fn body_over_the_limit_is_413() {
    let c = NormalizeConfig {
        max_body_bytes: 32,
        ..cfg()
    };
    let r = refused(
        &mcp_head(&[]),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
        &c,
    );
    assert_eq!(r.http_status, 413);
    assert_eq!(r.jsonrpc_code, None);
}

#[test]
fn bad_authority_or_path_on_the_mcp_route_is_400() {
    let mut head = mcp_head(&[]);
    head.authority = "user@evil".into();
    let r = refused(&head, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, &cfg());
    assert_eq!((r.http_status, r.jsonrpc_code), (400, None));
}

#[test]
fn refusal_renders_a_json_rpc_error() {
    let r = refused(
        &mcp_head(&[]),
        r#"{"jsonrpc":"1.0","id":"q","method":"ping"}"#,
        &cfg(),
    );
    let v: Value = serde_json::from_slice(&r.to_json_body(true)).unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], "q");
    assert_eq!(v["error"]["code"], -32600);
    assert!(v["error"]["message"].as_str().unwrap().contains("jsonrpc"));
    let r = refused(&mcp_head(&[]), "{", &cfg());
    let v: Value = serde_json::from_slice(&r.to_json_body(true)).unwrap();
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["error"]["code"], -32700);
}

// ---------------------------------------------------------------------------------------------
// 2026-07-28 routing headers

const CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":40},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

#[test]
fn routing_headers_that_agree_are_accepted() {
    let head = mcp_head(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "add"),
        ("mcp-param-a", "2"),
        ("mcp-param-b", "=?base64?NDA=?="),
        // Declared under another name by `x-mcp-header`: it must still carry an argument's value.
        ("mcp-param-second", "40"),
    ]);
    let r = normalize_mcp(&head, CALL.as_bytes(), &cfg()).unwrap();
    assert_eq!(r.protocol_version.as_deref(), Some("2026-07-28"));
    // Base64 form of the name (SEP-2243 sentinel).
    let head = mcp_head(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "=?base64?YWRk?="),
    ]);
    assert!(normalize_mcp(&head, CALL.as_bytes(), &cfg()).is_ok());
    // Without headers, the protocol version comes from `_meta`, and the headers 2026-07-28
    // requires are missing.
    let r = refused(&mcp_head(&[]), CALL, &cfg());
    assert_eq!((r.http_status, r.jsonrpc_code), (400, Some(-32020)));
    assert!(r.reason.contains("mcp-protocol-version"), "{}", r.reason);
    // Resources: the uri.
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///r é"}}"#;
    let head = mcp_head(&[
        ("mcp-method", "resources/read"),
        ("mcp-name", "=?base64?ZmlsZTovLy9yIMOp?="),
    ]);
    assert!(normalize_mcp(&head, body.as_bytes(), &cfg()).is_ok());
}

#[test]
fn param_headers_follow_a_rewritten_argument() {
    let head = mcp_head(&[
        ("mcp-param-a", "2"),
        ("mcp-param-token", "s3cr3t"),
        ("mcp-param-gone", "40"),
        ("mcp-param-note", "keep"),
    ]);
    let new = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"token":"[REDACTED]","note":"keep"}}}"#;
    let mut edits = filter_core::normalize::param_header_edits(&head, new);
    edits.sort();
    assert_eq!(
        edits,
        vec![
            ("mcp-param-a".to_owned(), Some("1".to_owned())),
            ("mcp-param-gone".to_owned(), None),
            ("mcp-param-token".to_owned(), Some("[REDACTED]".to_owned())),
        ]
    );
    let unicode = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":"\u00e9"}}}"#;
    assert_eq!(
        filter_core::normalize::param_header_edits(&mcp_head(&[("mcp-param-a", "x")]), unicode),
        vec![("mcp-param-a".to_owned(), Some("=?base64?w6k=?=".to_owned()))]
    );
}

#[test]
fn members_spelled_in_another_case_are_refused() {
    let cases = [
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"PARAMS":{"name":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"token":"[REDACTED]","Token":"x"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"deep":[{"k":1,"K":2}]}}}"#,
        // Go folds U+017F to `s` and the Kelvin sign U+212A to `k`.
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"param\u{17f}\":{}, \"params\":{}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":{\"k\":1,\"\u{212a}\":2}}}",
        // A lone member in another case: the filter would not read it, a case-blind server would.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{"name":"a"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"a"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Arguments":{"x":1}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"METHOD":"tools/call","params":{"name":"a"}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"param\u{17f}\":{\"name\":\"a\"}}",
    ];
    for body in cases {
        let r = refused(&mcp_head(&[]), body, &cfg());
        assert_eq!(
            (r.http_status, r.jsonrpc_code),
            (400, Some(-32600)),
            "{body}"
        );
    }
}

#[test]
fn routing_headers_that_disagree_with_the_body_are_refused() {
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (vec![("mcp-method", "tools/list")], CALL, "mcp-method"),
        (vec![("mcp-method", "Tools/Call")], CALL, "mcp-method"),
        (vec![("mcp-method", "tools/call"), ("mcp-name", "read_file")], CALL, "mcp-name"),
        (vec![("mcp-name", "ADD")], CALL, "mcp-name"),
        (vec![("mcp-name", "=?base64?cmVhZF9maWxl?=")], CALL, "mcp-name"),
        (vec![("mcp-name", "=?base64?!!!?=")], CALL, "invalid base64"),
        (vec![("mcp-param-region", "=?base64?@@?=")], CALL, "invalid base64"),
        // An `Mcp-Param-*` header the body does not back (SEP-2243 mirrors arguments).
        (vec![("mcp-param-region", "us")], CALL, "mcp-param-region"),
        (vec![("mcp-param-a", "3")], CALL, "mcp-param-a"),
        (vec![("mcp-param-A", "40")], CALL, "mcp-param-a"),
        (vec![("mcp-method", "tools/call"), ("mcp-method", "ping")], CALL, "mcp-method"),
        (vec![("mcp-name", "x")], r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#, "mcp-name"),
        (vec![("mcp-method", "ping")], r#"{"jsonrpc":"2.0","id":3,"result":{}}"#, "mcp-method"),
        (vec![("mcp-protocol-version", "2025-11-25")], CALL, "mcp-protocol-version"),
    ];
    for (headers, body, what) in cases {
        let r = refused(&mcp_head(&headers), body, &cfg());
        // MCP 2026-07-28's HeaderMismatchError.
        assert_eq!(
            (r.http_status, r.jsonrpc_code),
            (400, Some(-32020)),
            "{headers:?}"
        );
        assert_eq!(r.id, Some(JsonRpcId::Num(3)), "{headers:?}");
        assert!(r.reason.contains(what), "{headers:?}: {}", r.reason);
    }
}

/// The headers a 2026-07-28 `tools/call` of `CALL` carries.
const MODERN: [(&str, &str); 3] = [
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "add"),
];

fn modern_head(extra: &[(&str, &str)]) -> RequestHead {
    let mut h = MODERN.to_vec();
    h.extend_from_slice(extra);
    mcp_head(&h)
}

type Headers<'a> = Vec<(&'a str, &'a str)>;

#[test]
fn param_header_encodings_that_could_read_otherwise_are_refused() {
    let call = |args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"add","arguments":{args},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        )
    };
    #[rustfmt::skip]
    let accepted: Vec<(&str, &str, &str)> = vec![
        (r#"{"region":"us-west1"}"#, "mcp-param-region", "us-west1"),
        // The spec's examples: non-ASCII, surrounding spaces, a newline, a literal sentinel.
        (r#"{"greeting":"Hello, 世界"}"#, "mcp-param-greeting", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (r#"{"text":" padded "}"#, "mcp-param-text", "=?base64?IHBhZGRlZCA=?="),
        (r#"{"text":"line1\nline2"}"#, "mcp-param-text", "=?base64?bGluZTEKbGluZTI=?="),
        (r#"{"val":"=?base64?literal?="}"#, "mcp-param-val", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
        (r#"{"n":42}"#, "mcp-param-n", "42"),
        (r#"{"n":-7}"#, "mcp-param-n", "-7"),
        (r#"{"n":42.0}"#, "mcp-param-n", "42"),
        (r#"{"flag":true}"#, "mcp-param-flag", "true"),
        // Declared on a nested property by `x-mcp-header` (a chain of `properties`).
        (r#"{"config":{"tenant":"acme"}}"#, "mcp-param-tenant-id", "acme"),
    ];
    for (args, name, value) in accepted {
        let body = call(args);
        assert!(
            normalize_mcp(&modern_head(&[(name, value)]), body.as_bytes(), &cfg()).is_ok(),
            "{name}: {value} for {args}"
        );
    }
    #[rustfmt::skip]
    let refused_cases: Vec<(&str, Headers, &str)> = vec![
        // A plain value that equals the sentinel form means something else to the server.
        (r#"{"val":"x"}"#, vec![("mcp-param-val", "=?BASE64?eA==?=")], "another case"),
        (r#"{"val":"=?Base64?eA==?="}"#, vec![("mcp-param-val", "=?Base64?eA==?=")], "another case"),
        // Not canonical text: a router reading the header reads another value.
        (r#"{"n":42}"#, vec![("mcp-param-n", "042")], "mcp-param-n"),
        (r#"{"n":42}"#, vec![("mcp-param-n", "+42")], "mcp-param-n"),
        (r#"{"n":42}"#, vec![("mcp-param-n", "42.0")], "mcp-param-n"),
        (r#"{"flag":true}"#, vec![("mcp-param-flag", "TRUE")], "mcp-param-flag"),
        (r#"{"flag":true}"#, vec![("mcp-param-flag", "1")], "mcp-param-flag"),
        // Non-integer numbers, nulls and values inside arrays are never mirrored.
        (r#"{"x":1.5}"#, vec![("mcp-param-x", "1.5")], "mcp-param-x"),
        (r#"{"x":null}"#, vec![("mcp-param-x", "null")], "mcp-param-x"),
        (r#"{"list":["eu"]}"#, vec![("mcp-param-region", "eu")], "mcp-param-region"),
        // Base64 of something else than the body's value, or of bytes that are not UTF-8.
        (r#"{"region":"us"}"#, vec![("mcp-param-region", "=?base64?ZXU=?=")], "mcp-param-region"),
        (r#"{"region":"us"}"#, vec![("mcp-param-region", "=?base64?/w==?=")], "utf-8"),
        (r#"{"region":"us"}"#, vec![("mcp-param-region", "=?base64?dXM?=")], "invalid base64"),
        // A value a header cannot carry verbatim.
        (r#"{"region":"é"}"#, vec![("mcp-param-region", "é")], "plain header value"),
        // Two copies: a proxy may join them, a server may read either.
        (r#"{"region":"us"}"#, vec![("mcp-param-region", "us"), ("Mcp-Param-Region", "us")], "more than once"),
        (r#"{"region":"us"}"#, vec![("MCP-Name", "add")], "more than once"),
        (r#"{"region":"us"}"#, vec![("mcp-param-", "us")], "must name a parameter"),
    ];
    for (args, extra, what) in refused_cases {
        let body = call(args);
        let r = refused(&modern_head(&extra), &body, &cfg());
        assert_eq!(
            (r.http_status, r.jsonrpc_code),
            (400, Some(-32020)),
            "{extra:?}"
        );
        assert!(r.reason.contains(what), "{extra:?}: {}", r.reason);
    }
}

#[test]
fn modern_requests_need_their_meta_fields_and_headers() {
    let discover = |meta: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{"_meta":{meta}}}}}"#
        )
    };
    let full = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
    let head = mcp_head(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "server/discover"),
    ]);
    let r = normalize_mcp(&head, discover(full).as_bytes(), &cfg()).unwrap();
    assert_eq!(r.messages[0].action.operation, "server/discover");
    assert_eq!(r.protocol_version.as_deref(), Some("2026-07-28"));
    // A required `_meta` field missing or of the wrong type: the spec's -32602 with 400.
    for meta in [
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":[]}"#,
        r#"{"io.modelcontextprotocol/clientCapabilities":{}}"#,
        r#"{}"#,
    ] {
        let r = refused(&head, &discover(meta), &cfg());
        assert_eq!(
            (r.http_status, r.jsonrpc_code),
            (400, Some(-32602)),
            "{meta}"
        );
        assert_eq!(r.id, Some(JsonRpcId::Num(1)));
        assert!(r.reason.contains("clientCapabilities"), "{}", r.reason);
    }
    // The header says 2026-07-28 and the body has no `_meta` at all: the same.
    let r = refused(
        &head,
        r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#,
        &cfg(),
    );
    assert_eq!(r.jsonrpc_code, Some(-32602));
    // A required header missing: -32020 with 400.
    for (drop, body) in [
        ("mcp-protocol-version", CALL.to_owned()),
        ("mcp-method", CALL.to_owned()),
        ("mcp-name", CALL.to_owned()),
    ] {
        let headers: Vec<(&str, &str)> =
            MODERN.iter().copied().filter(|(n, _)| *n != drop).collect();
        let r = refused(&mcp_head(&headers), &body, &cfg());
        assert_eq!(
            (r.http_status, r.jsonrpc_code),
            (400, Some(-32020)),
            "{drop}"
        );
        assert!(r.reason.contains(drop), "{drop}: {}", r.reason);
    }
    // Notifications need neither; a legacy-era request neither.
    let note = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    assert!(normalize_mcp(&mcp_head(&[]), note.as_bytes(), &cfg()).is_ok());
    let legacy = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#;
    let head = mcp_head(&[("mcp-protocol-version", "2025-11-25")]);
    assert!(normalize_mcp(&head, legacy.as_bytes(), &cfg()).is_ok());
    // An unknown version is held to the 2026-07-28 rules (the stricter reading).
    let head = mcp_head(&[("mcp-protocol-version", "2027-01-01")]);
    assert_eq!(refused(&head, legacy, &cfg()).jsonrpc_code, Some(-32602));
    // 2026-07-28 has no batches.
    let c = NormalizeConfig {
        allow_batches: true,
        ..cfg()
    };
    let batch = format!("[{}]", discover(full));
    let r = refused(
        &mcp_head(&[("mcp-protocol-version", "2026-07-28")]),
        &batch,
        &c,
    );
    assert!(r.reason.contains("batches"), "{}", r.reason);
}

// ---------------------------------------------------------------------------------------------
// Batches

#[test]
fn batches_when_enabled_normalize_every_element() {
    let c = NormalizeConfig {
        allow_batches: true,
        ..cfg()
    };
    let e1 = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/repo/a"}}}"#;
    let e2 = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
    let e3 = r#"{"jsonrpc":"2.0","id":"r","result":{}}"#;
    let body = format!("[{e1}, {e2},{e3}]");
    let r = normalize_mcp(&mcp_head(&[]), body.as_bytes(), &c).unwrap();
    assert!(r.batch);
    let ops: Vec<&str> = r
        .messages
        .iter()
        .map(|m| m.action.operation.as_str())
        .collect();
    assert_eq!(
        ops,
        vec!["tools/call", "notifications/progress", "response"]
    );
    let sizes: Vec<u64> = r.messages.iter().map(|m| m.action.size).collect();
    assert_eq!(
        sizes,
        vec![e1.len() as u64, e2.len() as u64, e3.len() as u64]
    );
    assert_eq!(r.messages[0].action.tool.as_deref(), Some("read_file"));
    assert_eq!(r.messages[1].kind, McpMessageKind::Notification);

    let r = refused(&mcp_head(&[]), "[]", &c);
    assert_eq!(r.jsonrpc_code, Some(-32600));
    assert!(r.reason.contains("empty"));

    // One bad element refuses the whole batch, echoing that element's id.
    let bad = format!(r#"[{e1},{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{}}}}]"#);
    let r = refused(&mcp_head(&[]), &bad, &c);
    assert_eq!(
        (r.jsonrpc_code, r.id),
        (Some(-32602), Some(JsonRpcId::Num(9)))
    );

    let r = refused(&mcp_head(&[]), "[1]", &c);
    assert_eq!(r.jsonrpc_code, Some(-32600));

    let many = format!("[{}]", vec![e2; 33].join(","));
    let r = refused(&mcp_head(&[]), &many, &c);
    assert!(r.reason.contains("more than 32"));

    let r = refused(&mcp_head(&[("mcp-method", "tools/call")]), &body, &c);
    assert!(r.reason.contains("batch"));
}

// ---------------------------------------------------------------------------------------------
// Header-only routes

#[test]
fn header_only_routes() {
    let mut head = mcp_head(&[("mcp-session-id", "s1")]);
    head.method = "GET".into();
    assert_eq!(route(&head, &cfg()), Route::McpStream);
    let a = normalize_mcp_headers_only(&head, Route::McpStream, &cfg()).unwrap();
    assert_eq!(a.operation, "stream/open");
    assert_eq!(a.session_id.as_deref(), Some("s1"));
    assert_eq!(a.arguments, Value::Null);
    head.method = "DELETE".into();
    let a = normalize_mcp_headers_only(&head, Route::McpDelete, &cfg()).unwrap();
    assert_eq!(a.operation, "session/delete");
    let r = normalize_mcp_headers_only(&head, Route::Mcp, &cfg()).unwrap_err();
    assert_eq!(r.http_status, 500);
}

#[test]
fn forward_proxied_mcp_posts_are_parsed_as_mcp() {
    let mut head = mcp_head(&[]);
    head.authority = String::new();
    head.path = "http://Tools.Example:9000/mcp?x=1".into();
    assert_eq!(route(&head, &cfg()), Route::Mcp);
    let r = normalize_mcp(
        &head,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy"}}"#,
        &cfg(),
    )
    .unwrap();
    let a = &r.messages[0].action;
    assert_eq!(a.tool.as_deref(), Some("deploy"));
    assert_eq!(
        (a.target.host.as_str(), a.target.port),
        ("tools.example", 9000)
    );
    assert_eq!(
        (a.target.path.as_str(), a.target.query.as_str()),
        ("/mcp", "x=1")
    );
    // Not the configured server name (`workbench`): the proxied request goes elsewhere.
    assert_eq!(a.target.server, "tools.example");
}

#[test]
fn refusal_reasons_never_echo_secrets() {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"AKIAIOSFODNN7EXAMPLE":1,"AKIAIOSFODNN7EXAMPLE":2}}}"#;
    let r = refused(&mcp_head(&[]), body, &cfg());
    assert_eq!(r.reason, "duplicate key `[REDACTED]` in a json object");
    let r = refused(
        &mcp_head(&[]),
        r#"{"jsonrpc":"2.0","method":"sk-live-abcdefghijklmnopqrstuvwx"}"#,
        &cfg(),
    );
    assert!(!r.reason.contains("sk-live"), "{}", r.reason);
    assert!(r.reason.contains("has no id"));
}
