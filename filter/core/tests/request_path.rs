//! The request path holds against a hostile agent (docs/filter-normalization.md, "Threat
//! table"): trailers end a body, MCP is found by content and under every reading of its path,
//! methods and bodies that do not belong are refused, paths with several readings are judged by
//! the strictest, and header copies of arguments follow a MODIFY. Each test drives `Stream` over
//! the mock host the way Envoy calls the filter.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::rc::Rc;

use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::{Value, json};

const START_MS: u64 = 1_800_000_000_000;

fn plugin(host: &MockHost, extra: Value) -> Rc<Plugin> {
    let mut cfg = json!({ "mcp": { "paths": ["/mcp"], "server_name": "workbench" } });
    for (k, v) in extra.as_object().unwrap() {
        cfg.as_object_mut().unwrap().insert(k.clone(), v.clone());
    }
    common::plugin(host, "request_path.pcl", cfg)
}

/// What the agent and the upstream saw of one stream.
#[derive(Debug)]
struct Seen {
    /// The request went upstream (the last callback continued and nothing was answered).
    forwarded: bool,
    status: Option<u16>,
    body: Value,
    decision: Option<String>,
    rule: Option<String>,
    /// The request body as it went upstream.
    upstream_body: Vec<u8>,
}

impl Seen {
    /// Assert the request was denied (403) by `rule` with a reason that contains `says`.
    fn assert_denied(&self, rule: &str, says: &str, why: &str) {
        assert_eq!(
            (self.forwarded, self.status, self.rule.as_deref()),
            (false, Some(403), Some(rule)),
            "{why} {self:?}"
        );
        let reason = self.body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(says), "{why}: {reason}");
    }

    /// The reason of a JSON-RPC refusal (`error.data.reason`, else `error.message`).
    fn reason(&self) -> &str {
        self.body["error"]["data"]["reason"]
            .as_str()
            .or_else(|| self.body["error"]["message"].as_str())
            .unwrap_or_default()
    }
}

enum End {
    /// END_STREAM on the last body chunk.
    Data,
    /// The body ends with trailers (HTTP/2 trailers frame, HTTP/1.1 chunked trailers).
    Trailers,
}

/// A new stream of `plugin` whose request headers are these (pseudo-headers, then `extra`).
fn open(
    host: &MockHost,
    plugin: &Rc<Plugin>,
    method: &str,
    path: &str,
    authority: &str,
    extra: &[(&str, &str)],
) -> Stream {
    let headers = [
        (":method", method),
        (":path", path),
        (":authority", authority),
        (":scheme", "http"),
    ]
    .iter()
    .chain(extra)
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    host.new_stream(headers);
    Stream::new(Rc::clone(plugin))
}

fn send(
    host: &MockHost,
    plugin: &Rc<Plugin>,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    end: End,
) -> Seen {
    let mut s = open(host, plugin, method, path, "workbench", extra);
    let no_body = body.is_empty() && matches!(end, End::Data);
    let mut a = s.on_request_headers(host, no_body);
    if host.state().local_response.is_none() && !no_body && a == FilterAction::Pause {
        host.state().request_body = body.to_vec();
        a = match end {
            End::Data => s.on_request_body(host, body.len(), true),
            End::Trailers => {
                let a = if body.is_empty() {
                    FilterAction::Pause
                } else {
                    s.on_request_body(host, body.len(), false)
                };
                assert_eq!(a, FilterAction::Pause, "the body is held until its end");
                s.on_request_trailers(host)
            }
        };
    }
    let st = host.state();
    let local = st.local_response.clone();
    Seen {
        forwarded: a == FilterAction::Continue && local.is_none(),
        status: local.as_ref().map(|l| l.status),
        body: local
            .as_ref()
            .and_then(|l| serde_json::from_slice(&l.body).ok())
            .unwrap_or(Value::Null),
        decision: st
            .filter_state
            .get("wasm.portcullis.decision")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        rule: st
            .filter_state
            .get("wasm.portcullis.rule")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        upstream_body: st.request_body.clone(),
    }
}

fn call(id: i64, name: &str, args: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": name, "arguments": args}}))
    .unwrap()
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn trailers_end_the_body_and_the_decision_comes_first() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let denied = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[JSON],
        &call(1, "delete_branch", json!({})),
        End::Trailers,
    );
    assert!(!denied.forwarded, "{denied:?}");
    assert_eq!(denied.rule.as_deref(), Some("no_branch_deletion"));
    assert_eq!(denied.body["error"]["code"], -32040);

    let allowed = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[JSON],
        &call(2, "read_file", json!({})),
        End::Trailers,
    );
    assert!(allowed.forwarded, "{allowed:?}");
    assert_eq!(allowed.decision.as_deref(), Some("ALLOW"));

    let clamped = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[JSON],
        &call(3, "query_rows", json!({"limit": 500})),
        End::Trailers,
    );
    assert!(clamped.forwarded);
    let up: Value = serde_json::from_slice(&clamped.upstream_body).unwrap();
    assert_eq!(up["params"]["arguments"]["limit"], 20);

    // Headers, then trailers, no data: an empty body, refused as a parse error.
    let empty = send(&host, &p, "POST", "/mcp", &[JSON], b"", End::Trailers);
    assert_eq!((empty.forwarded, empty.status), (false, Some(400)));
    assert_eq!(empty.body["error"]["code"], -32700);
}

#[test]
fn the_mcp_endpoint_is_found_under_every_reading_of_its_path() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    for path in [
        "/MCP", "/Mcp/", "/mcp;v=1", "/mcp.", "/%6Dcp", "/./mcp", "/mcp/",
    ] {
        for method in ["POST", "post", "Post"] {
            let s = send(
                &host,
                &p,
                method,
                path,
                &[JSON],
                &call(1, "delete_branch", json!({})),
                End::Data,
            );
            assert!(!s.forwarded, "{method} {path}");
            assert_eq!(
                s.rule.as_deref(),
                Some("no_branch_deletion"),
                "{method} {path}"
            );
        }
    }
    let merged = send(
        &host,
        &p,
        "POST",
        "//mcp",
        &[JSON],
        &call(1, "delete_branch", json!({})),
        End::Data,
    );
    assert_eq!(
        (merged.forwarded, merged.status),
        (false, Some(400)),
        "{merged:?}"
    );
}

#[test]
fn methods_and_bodies_that_do_not_belong_on_the_mcp_endpoint_are_refused() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let body = call(1, "delete_branch", json!({}));
    for method in ["PUT", "PATCH", "TRACE", "FOO"] {
        let s = send(&host, &p, method, "/mcp", &[JSON], &body, End::Data);
        assert_eq!((s.forwarded, s.status), (false, Some(405)), "{method}");
        let allow = host.state().local_response.clone().unwrap();
        assert!(
            allow
                .headers
                .iter()
                .any(|(n, v)| n == "allow" && v.contains("POST")),
            "{method}"
        );
    }
    for method in ["GET", "HEAD", "DELETE", "OPTIONS", "get"] {
        let s = send(&host, &p, method, "/mcp", &[JSON], &body, End::Data);
        assert_eq!(
            (s.forwarded, s.status),
            (false, Some(400)),
            "{method}: {s:?}"
        );
        assert!(
            s.body["reason"]
                .as_str()
                .unwrap()
                .contains("must not carry a body")
        );
        // The same over trailers.
        let s = send(&host, &p, method, "/mcp", &[JSON], &body, End::Trailers);
        assert_eq!(
            (s.forwarded, s.status),
            (false, Some(400)),
            "{method} trailers"
        );
    }
    // Without a body they are the header-only operations.
    let get = send(&host, &p, "GET", "/mcp", &[], b"", End::Data);
    assert!(get.forwarded, "{get:?}");
    let options = send(&host, &p, "OPTIONS", "/mcp", &[], b"", End::Data);
    assert!(options.forwarded, "{options:?}");
    // An HTTP/2 GET whose empty DATA frame carries END_STREAM is still body-less.
    let mut s = open(&host, &p, "GET", "/mcp", "workbench", &[]);
    assert_eq!(s.on_request_headers(&host, false), FilterAction::Pause);
    assert_eq!(s.on_request_body(&host, 0, true), FilterAction::Continue);
}

#[test]
fn a_jsonrpc_body_is_mcp_wherever_it_goes() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    for path in [
        "/api/rpc",
        "/x",
        "/messages?sessionId=abc",
        "/Messages/?session_id=abc",
    ] {
        let s = send(
            &host,
            &p,
            "POST",
            path,
            &[JSON],
            &call(1, "delete_branch", json!({})),
            End::Data,
        );
        assert!(!s.forwarded, "{path}");
        assert_eq!(s.rule.as_deref(), Some("no_branch_deletion"), "{path}");
        assert_eq!(
            s.body["error"]["code"], -32040,
            "answered as json-rpc: {path}"
        );
        // Whatever the content type says.
        let s = send(
            &host,
            &p,
            "PUT",
            path,
            &[("content-type", "text/plain")],
            &call(1, "delete_branch", json!({})),
            End::Data,
        );
        assert_eq!(s.rule.as_deref(), Some("no_branch_deletion"), "PUT {path}");
    }
    // A body that is not JSON-RPC stays plain HTTP.
    let s = send(
        &host,
        &p,
        "POST",
        "/api/rpc",
        &[JSON],
        br#"{"a":1}"#,
        End::Data,
    );
    assert!(s.forwarded);
    // The legacy message endpoint reads its body even without `http.inspect_bodies`.
    let q = plugin(&host, json!({}));
    let s = send(
        &host,
        &q,
        "POST",
        "/messages?sessionId=abc",
        &[JSON],
        &call(1, "delete_branch", json!({})),
        End::Data,
    );
    assert_eq!(s.rule.as_deref(), Some("no_branch_deletion"));
}

#[test]
fn compressed_request_bodies_are_refused_where_bodies_are_read() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    // Any bytes: the filter refuses on the encoding, it never guesses what they inflate to.
    for path in ["/mcp", "/upload"] {
        let s = send(
            &host,
            &p,
            "POST",
            path,
            &[JSON, ("content-encoding", "gzip")],
            b"\x1f\x8b\x08\x00junk",
            End::Data,
        );
        assert_eq!((s.forwarded, s.status), (false, Some(415)), "{path}: {s:?}");
    }
}

/// A server that honours a declared charset (Express's `json()` decodes UTF-7 through
/// iconv-lite) reads `{"name":"read+AF8-file"}` as a name the filter never judged; so does one
/// that takes the second of two content types. Refused (415) on every route bodies are read;
/// a form body in Latin-1 that is pure ASCII reads the same and passes.
#[test]
fn bodies_declared_in_another_charset_are_refused() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let body =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read+AF8-file"}}"#;
    for path in ["/mcp", "/upload"] {
        for ct in [
            "application/json; charset=utf-7",
            "application/json; charset=UTF7",
            "application/json; charset=\"utf-16\"",
            "application/json; charset=ucs2",
            "application/json; charset=cp037",
        ] {
            let s = send(
                &host,
                &p,
                "POST",
                path,
                &[("content-type", ct)],
                body,
                End::Data,
            );
            assert_eq!(
                (s.forwarded, s.status),
                (false, Some(415)),
                "{path} {ct}: {s:?}"
            );
        }
        let s = send(
            &host,
            &p,
            "POST",
            path,
            &[JSON, ("content-type", "application/json; charset=utf-7")],
            body,
            End::Data,
        );
        assert_eq!(
            (s.forwarded, s.status),
            (false, Some(415)),
            "{path}: two types"
        );
    }
    let form = send(
        &host,
        &p,
        "POST",
        "/upload",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
        )],
        b"q=caf%E9",
        End::Data,
    );
    assert!(form.forwarded, "{form:?}");
}

/// A header the filter reads one value of, sent twice with different values: the filter would
/// judge one (a fresh session, another protocol version, one of two approvals) while the server
/// takes another. Refused; the same value twice is one value.
#[test]
fn a_single_valued_header_with_two_values_is_refused() {
    let host = MockHost::new(START_MS);
    let p = plugin(
        &host,
        json!({ "session": { "key": { "source": "header", "name": "x-agent-run" } } }),
    );
    let body = call(1, "read_file", json!({"path": "/repo/a"}));
    for (name, a, b) in [
        ("mcp-session-id", "s-clean", "s-killed"),
        ("x-agent-run", "r1", "r2"),
        ("MCP-Protocol-Version", "2025-06-18", "2025-11-25"),
        ("x-portcullis-approval", "t1", "t2"),
        ("x-portcullis-intent", "triage", "deploy"),
    ] {
        let s = send(
            &host,
            &p,
            "POST",
            "/mcp",
            &[JSON, (name, a), (&name.to_ascii_uppercase(), b)],
            &body,
            End::Data,
        );
        assert_eq!((s.forwarded, s.status), (false, Some(400)), "{name}: {s:?}");
    }
    let s = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[JSON, ("x-agent-run", "r1"), ("x-agent-run", " r1 ")],
        &body,
        End::Data,
    );
    assert!(s.forwarded, "the same value twice: {s:?}");
}

#[test]
fn case_smuggled_members_never_reach_the_server() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let bodies = [
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"delete_branch"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","Name":"delete_branch"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_rows","arguments":{"limit":5,"LIMIT":500}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","Params":{"name":"delete_branch"}}"#,
    ];
    for b in bodies {
        let s = send(&host, &p, "POST", "/mcp", &[JSON], b.as_bytes(), End::Data);
        assert_eq!((s.forwarded, s.status), (false, Some(400)), "{b}");
        assert_eq!(s.body["error"]["code"], -32600, "{b}");
    }
}

#[test]
fn an_egress_path_is_judged_under_every_reading_servers_apply() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    for path in [
        "/ADMIN",
        "/Admin/users",
        "/admin;x=1",
        "/admin.",
        "/admin./x",
        "/ADMIN;JSESSIONID=1",
    ] {
        let s = send(&host, &p, "GET", path, &[], b"", End::Data);
        assert!(!s.forwarded, "{path}");
        assert_eq!(s.rule.as_deref(), Some("no_admin"), "{path}");
        if !path.starts_with("/admin") {
            // The reason says which reading the policy judged.
            let reason = s.body["reason"].as_str().unwrap();
            assert!(
                reason.contains("some servers read this request as"),
                "{path}: {reason}"
            );
        }
    }
    for path in ["/%2561dmin", "//admin", "/x/..//admin", "/%252e%252e/admin"] {
        let s = send(&host, &p, "GET", path, &[], b"", End::Data);
        assert_eq!((s.forwarded, s.status), (false, Some(400)), "{path}");
    }
    let fine = send(&host, &p, "GET", "/public/Readme.md", &[], b"", End::Data);
    assert!(fine.forwarded);
    // A host whose server reads paths literally keeps its empty segments.
    let lit = plugin(
        &host,
        json!({ "http": { "literal_path_hosts": ["workbench"] } }),
    );
    let s = send(&host, &lit, "GET", "/files//a", &[], b"", End::Data);
    assert!(s.forwarded, "{s:?}");
}

#[test]
fn a_request_that_switches_protocols_is_judged_as_the_tunnel_it_opens() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    // A websocket upgrade of an allowed GET opens a tunnel nothing after it is read in: judged
    // as CONNECT too, which this pack denies.
    for proto in ["websocket", "WebSocket", "foo/1.0"] {
        let s = send(
            &host,
            &p,
            "GET",
            "/public/feed",
            &[("connection", "Upgrade"), ("upgrade", proto)],
            b"",
            End::Data,
        );
        assert!(!s.forwarded, "{proto}");
        assert_eq!(s.rule.as_deref(), Some("no_tunnels"), "{proto}");
        let reason = s.body["reason"].as_str().unwrap();
        assert!(reason.contains("switches protocols"), "{reason}");
    }
    // The tunnel's stream never ends as a body does: the decision comes with the headers, also
    // where bodies are read.
    let inspecting = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let mut s = open(
        &host,
        &inspecting,
        "GET",
        "/public/feed",
        "workbench",
        &[("upgrade", "websocket")],
    );
    s.on_request_headers(&host, false);
    assert_eq!(
        host.state().local_response.as_ref().map(|r| r.status),
        Some(403),
        "decided on the headers, not held for a body"
    );
    // h2c is Envoy's to refuse or drop; the plain GET goes on.
    let s = send(
        &host,
        &p,
        "GET",
        "/public/feed",
        &[("upgrade", "h2c")],
        b"",
        End::Data,
    );
    assert!(s.forwarded, "{s:?}");
    let s = send(&host, &p, "GET", "/public/feed", &[], b"", End::Data);
    assert!(s.forwarded, "{s:?}");
    // An MCP endpoint never switches protocols: refused, whatever the method.
    let body = call(1, "read_file", json!({}));
    let s = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[JSON, ("upgrade", "websocket")],
        &body,
        End::Data,
    );
    assert_eq!((s.forwarded, s.status), (false, Some(400)), "{s:?}");
    let s = send(
        &host,
        &p,
        "GET",
        "/mcp",
        &[("accept", "text/event-stream"), ("upgrade", "websocket")],
        b"",
        End::Data,
    );
    assert_eq!((s.forwarded, s.status), (false, Some(400)), "{s:?}");
}

#[test]
fn a_request_that_switches_protocols_with_a_body_is_refused() {
    let host = MockHost::new(START_MS);
    // No tunnel rule here: the refusal comes before the policy, whatever it allows.
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let grant = br#"{"role":"admin"}"#;
    let length = grant.len().to_string();
    for (framing, value) in [
        ("content-length", length.as_str()),
        ("transfer-encoding", "chunked"),
    ] {
        let mut s = open(
            &host,
            &p,
            "POST",
            "/public/members",
            "workbench",
            &[JSON, ("upgrade", "websocket"), (framing, value)],
        );
        // Decided on the headers, as every upgrade is: the body is never waited for.
        assert_eq!(s.on_request_headers(&host, false), FilterAction::Pause);
        let answer = host
            .state()
            .local_response
            .clone()
            .expect("refused on the headers");
        assert_eq!(answer.status, 400, "{framing}");
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.contains("switches protocols") && reason.contains("body"),
            "{reason}"
        );
        assert_eq!(
            host.state()
                .filter_state
                .get("wasm.portcullis.rule")
                .map(Vec::as_slice),
            Some(&b"filter:refused"[..])
        );
    }
    // Without a body (a websocket handshake), or with `content-length: 0`, the upgrade is judged
    // as before: as the CONNECT it becomes, which this pack denies (403, not a refusal).
    for extra in [&[][..], &[("content-length", "0")][..]] {
        let headers: Vec<(&str, &str)> = [("upgrade", "websocket")]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let s = send(&host, &p, "GET", "/public/feed", &headers, b"", End::Data);
        assert_eq!(
            (s.status, s.rule.as_deref()),
            (Some(403), Some("no_tunnels")),
            "{s:?}"
        );
    }
}

#[test]
fn a_resource_is_judged_as_the_server_resolves_it() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let read = |uri: &str| {
        let body = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1,
            "method": "resources/read", "params": {"uri": uri}}))
        .unwrap();
        send(&host, &p, "POST", "/mcp", &[JSON], &body, End::Data)
    };
    for uri in [
        "file:///workspace/notes.md",
        "file:///workspace/dir/./notes.md",
        "file:///workspace/caf\u{e9} menu.md",
        "file:///workspace/%6Eotes.md",
    ] {
        assert!(read(uri).forwarded, "{uri}");
    }
    // Inside the allowed prefix as sent, outside it as resolved: the resolution decides.
    for uri in [
        "file:///workspace/../etc/passwd",
        "file:///workspace/%2E%2E/etc/passwd",
        "file:///workspace/./../../etc/shadow",
        "file:///workspace//../etc/passwd",
    ] {
        let s = read(uri);
        assert!(!s.forwarded, "{uri}");
        assert_eq!(s.rule.as_deref(), Some("workspace_only"), "{uri}");
        assert!(
            s.reason().contains("resolves resource"),
            "{uri}: {}",
            s.body
        );
    }
    // Read two ways by servers: refused.
    for uri in [
        "file:///workspace/..%2Fetc/passwd",
        "file:///workspace/%252E%252E/etc/passwd",
        "file:///workspace\\..\\etc\\passwd",
        "file:///workspace/%zz",
    ] {
        let s = read(uri);
        assert_eq!((s.forwarded, s.status), (false, Some(400)), "{uri}: {s:?}");
        assert_eq!(s.body["error"]["code"], -32602, "{uri}");
    }
}

#[test]
fn paths_and_urls_in_the_arguments_are_judged_as_the_tool_reads_them() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let tool = |name: &str, args: Value| {
        send(
            &host,
            &p,
            "POST",
            "/mcp",
            &[JSON],
            &call(1, name, args),
            End::Data,
        )
    };
    for path in [
        "/workspace/notes.md",
        "/workspace/dir/./notes.md",
        "/workspace/a/../notes.md",
        "/workspace/..notes.md",
    ] {
        assert!(tool("open_file", json!({"path": path})).forwarded, "{path}");
    }
    // Inside the allowed prefix as sent, outside it as the file system reads it.
    for (name, args) in [
        ("open_file", json!({"path": "/workspace/../etc/passwd"})),
        (
            "open_file",
            json!({"path": "/workspace/./a/../../etc/shadow"}),
        ),
        (
            "open_file",
            json!({"path": "/workspace/..\\..\\etc\\passwd"}),
        ),
        ("open_file", json!({"path": "/workspace/.."})),
        (
            "fetch",
            json!({"url": "https://api.example/v1/../admin/users"}),
        ),
        (
            "fetch",
            json!({"url": "https://api.example/v1/%2E%2e/admin"}),
        ),
        ("fetch", json!({"url": "https://api.example/./admin"})),
    ] {
        let s = tool(name, args.clone());
        assert!(!s.forwarded, "{args}");
        assert!(
            s.reason().contains("the tool reads `"),
            "{args}: {}",
            s.body
        );
    }
    // A URL, in every spelling its client reads as the address the rule names.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "HTTP://169.254.169.254/latest/meta-data/",
        "http://0xA9FEA9FE/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://me@169.254.169.254./latest/meta-data/",
        "http://169.254.169.254:80\\latest",
        "http://good.example\\@169.254.169.254/",
    ] {
        let s = tool("fetch", json!({"url": url}));
        assert!(!s.forwarded, "{url}");
        assert_eq!(s.rule.as_deref(), Some("no_metadata_fetch"), "{url}");
    }
    assert!(tool("fetch", json!({"url": "http://169.254.169.254.example/"})).forwarded);
    // A host alone, in every spelling a resolver reads as that address.
    for host_arg in [
        "169.254.169.254",
        "0xA9FEA9FE",
        "2852039166",
        "169.254.43518",
        "0251.0376.0251.0376",
        "169.254.169.254.",
        "::ffff:a9fe:a9fe",
        "[::ffff:169.254.169.254]",
        "0xa9fea9fe:080",
    ] {
        let s = tool("connect", json!({"host": host_arg}));
        assert!(!s.forwarded, "{host_arg}");
        assert_eq!(s.rule.as_deref(), Some("no_metadata_connect"), "{host_arg}");
    }
    assert!(tool("connect", json!({"host": "db.internal.example"})).forwarded);
    assert!(tool("connect", json!({"host": "169.254.169.253"})).forwarded);
}

#[test]
fn ipv4_mapped_hosts_meet_the_ipv4_rule() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    for authority in [
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]:80",
        "[64:ff9b::a9fe:a9fe]",
    ] {
        let mut s = open(&host, &p, "GET", "/latest/meta-data", authority, &[]);
        assert_eq!(
            s.on_request_headers(&host, true),
            FilterAction::Pause,
            "{authority}"
        );
        assert_eq!(
            host.filter_state_str("wasm.portcullis.rule").as_deref(),
            Some("no_metadata")
        );
    }
}

#[test]
fn param_headers_are_checked_and_follow_a_modify() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let body = call(1, "query_rows", json!({"limit": 500, "table": "payroll"}));
    let lying = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[JSON, ("mcp-param-limit", "5")],
        &body,
        End::Data,
    );
    assert_eq!(
        (lying.forwarded, lying.status),
        (false, Some(400)),
        "{lying:?}"
    );
    let s = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[
            JSON,
            ("mcp-param-limit", "500"),
            ("mcp-param-table", "payroll"),
        ],
        &body,
        End::Data,
    );
    assert!(s.forwarded);
    assert_eq!(
        host.request_header("mcp-param-limit").as_deref(),
        Some("20")
    );
    assert_eq!(
        host.request_header("mcp-param-table").as_deref(),
        Some("payroll")
    );
}

#[test]
fn undeclared_lengths_are_counted_where_the_pack_counts_bytes() {
    // `request_path.pcl` reads `request.size`: a PUT whose length is not declared (chunked,
    // HTTP/2 without content-length) is read to count it, so 100 KiB is not "0 bytes".
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let big = vec![b'x'; 100 * 1024];
    let s = send(&host, &p, "PUT", "/upload", &[], &big, End::Data);
    assert!(!s.forwarded, "{s:?}");
    assert_eq!(s.rule.as_deref(), Some("small_uploads"));
    let s = send(&host, &p, "PUT", "/upload", &[], &big, End::Trailers);
    assert_eq!(s.rule.as_deref(), Some("small_uploads"));
    let small = send(&host, &p, "PUT", "/upload", &[], b"ok", End::Data);
    assert!(small.forwarded);
    // In header-only mode the body cannot be read: refused with 411 instead of counted as 0.
    let header_only = plugin(&host, json!({ "mcp": { "paths": [] } }));
    let mut st = open(&host, &header_only, "PUT", "/upload", "workbench", &[]);
    assert_eq!(st.on_request_headers(&host, false), FilterAction::Pause);
    assert_eq!(
        host.state().local_response.as_ref().map(|l| l.status),
        Some(411)
    );
    // With a declared length nothing is held, in either mode.
    let mut st = open(
        &host,
        &header_only,
        "PUT",
        "/upload",
        "workbench",
        &[("content-length", "2")],
    );
    assert_eq!(st.on_request_headers(&host, false), FilterAction::Continue);
}

#[test]
fn an_argument_the_policy_reads_is_refused_in_another_case() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    for args in [
        json!({"LIMIT": 500}),
        json!({"Limit": 500}),
        json!({"nested": [{"lImit": 1}]}),
        json!({"l\u{130}mit": 2}),
    ] {
        let s = send(
            &host,
            &p,
            "POST",
            "/mcp",
            &[JSON],
            &call(1, "query_rows", args.clone()),
            End::Data,
        );
        assert_eq!((s.forwarded, s.status), (false, Some(400)), "{args}");
        assert_eq!(s.body["error"]["code"], -32602, "{args}");
    }
    // The same in a plain HTTP JSON body.
    let s = send(
        &host,
        &p,
        "POST",
        "/upload",
        &[JSON],
        br#"{"LIMIT":1}"#,
        End::Data,
    );
    assert_eq!((s.forwarded, s.status), (false, Some(400)));
    // Names the policy does not read are the server's business.
    let s = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[JSON],
        &call(1, "query_rows", json!({"limit": 5, "Table": "t"})),
        End::Data,
    );
    assert!(s.forwarded, "{s:?}");
}

#[test]
fn method_and_path_overrides_are_readings_too() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let s = send(
            &host,
            &p,
            "POST",
            "/api/items/1",
            &[(h, "delete")],
            b"",
            End::Data,
        );
        assert!(!s.forwarded, "{h}");
        assert_eq!(s.rule.as_deref(), Some("no_http_delete"), "{h}");
    }
    let s = send(
        &host,
        &p,
        "POST",
        "/api/items/1?_method=DELETE",
        &[],
        b"",
        End::Data,
    );
    assert_eq!(s.rule.as_deref(), Some("no_http_delete"));
    for h in ["x-original-url", "x-rewrite-url"] {
        let s = send(
            &host,
            &p,
            "GET",
            "/public",
            &[(h, "/admin/users")],
            b"",
            End::Data,
        );
        assert_eq!(s.rule.as_deref(), Some("no_admin"), "{h}");
    }
    let s = send(
        &host,
        &p,
        "GET",
        "/users",
        &[("x-forwarded-prefix", "/admin")],
        b"",
        End::Data,
    );
    assert_eq!(s.rule.as_deref(), Some("no_admin"));
    // A forwarding header names the host a server behind a trusting proxy serves.
    for (h, v) in [
        ("x-forwarded-host", "169.254.169.254"),
        ("x-forwarded-host", "docs.example, 0xA9FEA9FE"),
        ("forwarded", "for=192.0.2.1;host=\"169.254.169.254:80\""),
        ("x-host", "[::ffff:a9fe:a9fe]"),
        ("x-original-host", "169.254.169.254."),
    ] {
        let s = send(&host, &p, "GET", "/public", &[(h, v)], b"", End::Data);
        assert_eq!(s.rule.as_deref(), Some("no_metadata"), "{h}: {v}");
        assert!(
            s.body.to_string().contains("GET 169.254.169.254/public"),
            "{h}: {v}: {}",
            s.body
        );
    }
    let s = send(&host, &p, "GET", "/;x=1/admin", &[], b"", End::Data);
    assert_eq!((s.forwarded, s.status), (false, Some(400)));
    let fine = send(
        &host,
        &p,
        "POST",
        "/api/items",
        &[("x-http-method-override", "PUT")],
        b"",
        End::Data,
    );
    assert!(fine.forwarded);
}

#[test]
fn what_the_request_carries_outside_its_arguments_is_scanned() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let bodies = [
        json!({"jsonrpc": "2.0", "id": secret, "method": "tools/call", "params": {"name": "read_file"}}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "_meta": {"k": secret}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"note": secret}}),
    ];
    for b in bodies {
        let s = send(
            &host,
            &p,
            "POST",
            "/mcp",
            &[JSON],
            &serde_json::to_vec(&b).unwrap(),
            End::Data,
        );
        assert_eq!(s.rule.as_deref(), Some("no_secrets"), "{b}");
    }
    for (path, headers) in [
        (format!("/x?k={secret}"), vec![]),
        ("/x".to_owned(), vec![("x-data", secret)]),
        ("/x".to_owned(), vec![("mcp-param-k", secret)]),
    ] {
        let s = send(&host, &p, "GET", &path, &headers, b"", End::Data);
        assert_eq!(s.rule.as_deref(), Some("no_secrets"), "{path} {headers:?}");
    }
}

#[test]
fn bodies_in_other_charsets_and_unnamed_jsonrpc_are_not_missed() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let s = send(
        &host,
        &p,
        "POST",
        "/api/rpc",
        &[("content-type", "text/plain; charset=utf-16")],
        b"\xFF\xFE{\x00",
        End::Data,
    );
    assert_eq!((s.forwarded, s.status), (false, Some(415)));
    // JSON-RPC 1.0 names no version: still a call, and refused as one (MCP is 2.0).
    let s = send(
        &host,
        &p,
        "POST",
        "/api/rpc",
        &[JSON],
        br#"{"method":"tools/call","params":{"name":"delete_branch"},"id":1}"#,
        End::Data,
    );
    assert_eq!((s.forwarded, s.status), (false, Some(400)));
    assert_eq!(s.body["error"]["code"], -32600);
}

#[test]
fn a_session_key_named_like_a_workers_chain_is_refused() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    let body =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).unwrap();
    for key in ["anon/1800000000000-1", "anon/x"] {
        let ct = [
            ("content-type", "application/json"),
            ("mcp-session-id", key),
        ];
        let seen = send(&host, &p, "POST", "/mcp", &ct, &body, End::Data);
        assert!(!seen.forwarded, "{key}");
        assert_eq!(seen.status, Some(400), "{key}: {seen:?}");
        assert_eq!(seen.rule.as_deref(), Some("filter:refused"), "{key}");
    }
    // The same prefix elsewhere in a key is an ordinary key.
    let ct = [
        ("content-type", "application/json"),
        ("mcp-session-id", "x-anon/1"),
    ];
    assert!(send(&host, &p, "POST", "/mcp", &ct, &body, End::Data).forwarded);
}

#[test]
fn query_parameters_are_arguments_too() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let form = ("content-type", "application/x-www-form-urlencoded");
    // The query carries the grant, alone or beside a body that does not: PHP's `$_REQUEST`,
    // Flask's `request.values`, Rails' `params` read it.
    for (path, body) in [
        ("/members?role=admin", &b""[..]),
        ("/members?role=admin", &b"role=viewer&user=bob"[..]),
        ("/members?user=bob&role=viewer&role=admin", &b""[..]),
        ("/members?user=bob;role=admin", &b""[..]),
        ("/members?%72ole=admi%6E", &b""[..]),
        ("/members?role=admin", &br#"["bob"]"#[..]),
    ] {
        let s = send(&host, &p, "POST", path, &[form], body, End::Data);
        assert_eq!(
            (s.forwarded, s.status, s.rule.as_deref()),
            (false, Some(403), Some("no_admin_grants")),
            "{path} {}",
            String::from_utf8_lossy(body)
        );
        assert!(
            s.body["reason"]
                .as_str()
                .unwrap()
                .contains("read the query's parameters as arguments"),
            "{:?}",
            s.body
        );
    }
    // The body's grant is denied as before, whatever the query says.
    let s = send(
        &host,
        &p,
        "POST",
        "/members?role=viewer",
        &[form],
        b"role=admin",
        End::Data,
    );
    assert_eq!(s.rule.as_deref(), Some("no_admin_grants"));
    // Nothing to deny: forwarded unchanged.
    for path in ["/members?role=viewer&page=2", "/members", "/members?"] {
        let s = send(&host, &p, "GET", path, &[], b"", End::Data);
        assert!(s.forwarded, "{path} {s:?}");
    }
    // A name the pack reads, spelled in another case, is refused as in a body (servers that
    // bind parameters without case would act on it).
    let s = send(&host, &p, "GET", "/members?ROLE=admin", &[], b"", End::Data);
    assert_eq!((s.forwarded, s.status), (false, Some(400)), "{s:?}");
}

#[test]
fn field_names_are_read_as_servers_nest_them() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let form = ("content-type", "application/x-www-form-urlencoded");
    // Each grants admin to qs / Rack (`[role]`, `member[role]`, `roles[]`), to PHP (` role`,
    // `grant.role`, `grant role`, `grant[role`) or to ASP.NET / Spring (`member.role`), in the body
    // or the query; the filter reads none of these names as written.
    let fields = [
        "[role]=admin",
        "member[role]=admin",
        "roles[]=viewer&roles[]=admin",
        "roles[0]=viewer&roles[1]=admin",
        "+role=admin",
        "grant.role=admin",
        "grant+role=admin",
        "grant[role=admin",
        "member.role=admin",
        "%5Brole%5D=admin",
        "member%5Brole%5D=admin",
    ];
    for f in fields {
        for (path, body) in [
            ("/members".to_owned(), f.as_bytes().to_vec()),
            (format!("/members?{f}"), Vec::new()),
            (format!("/members?{f}"), b"user=bob".to_vec()),
        ] {
            let s = send(&host, &p, "POST", &path, &[form], &body, End::Data);
            let why = format!("{path} {}", String::from_utf8_lossy(&body));
            s.assert_denied("no_admin_grants", "servers read the field name", &why);
        }
    }
    // A form that starts like JSON but is none is read as the form it is declared.
    let s = send(
        &host,
        &p,
        "POST",
        "/members",
        &[form],
        b"{x}=1&role=admin",
        End::Data,
    );
    assert_eq!(s.rule.as_deref(), Some("no_admin_grants"), "{s:?}");
    // Multipart fields nest too.
    let multipart = ("content-type", "multipart/form-data; boundary=b0undary");
    let body = b"--b0undary\r\ncontent-disposition: form-data; name=\"member[role]\"\r\n\r\nadmin\r\n--b0undary--\r\n";
    let s = send(&host, &p, "POST", "/members", &[multipart], body, End::Data);
    assert_eq!(s.rule.as_deref(), Some("no_admin_grants"), "{s:?}");
    // A JSON body's member names are not parsed so by any server: as written.
    let json_body = ("content-type", "application/json");
    let s = send(
        &host,
        &p,
        "POST",
        "/members",
        &[json_body],
        br#"{"member[role]":"admin"}"#,
        End::Data,
    );
    assert!(s.forwarded, "{s:?}");
    // Nested names that grant nothing pass unchanged.
    for (method, path, body) in [
        (
            "POST",
            "/members",
            &b"member[role]=viewer&roles[]=viewer"[..],
        ),
        (
            "GET",
            "/members?filter[status]=open&page[size]=10&sort=name.asc",
            &b""[..],
        ),
    ] {
        let s = send(&host, &p, method, path, &[form], body, End::Data);
        assert!(s.forwarded, "{path} {s:?}");
        assert_eq!(s.upstream_body, body);
    }
    // A name the pack reads, in another case once nested, is refused: ASP.NET binds
    // `Member[Role]` to `member.role`.
    let s = send(
        &host,
        &p,
        "POST",
        "/members",
        &[form],
        b"Member[Role]=admin",
        End::Data,
    );
    assert_eq!((s.forwarded, s.status), (false, Some(400)), "{s:?}");
}

#[test]
fn header_names_with_underscores_are_refused_or_dropped() {
    // Each is read by Django, PHP, WSGI and Rack servers as the header with `-`: a host, a
    // method, a path, the MCP session, the filter's own identity header.
    let spoofs = [
        ("x_forwarded_host", "169.254.169.254"),
        ("x_http_method_override", "DELETE"),
        ("x_original_url", "/admin/users"),
        ("x_portcullis_agent", "admin-bot"),
        ("X_Custom", "1"),
    ];
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({}));
    for (name, value) in spoofs {
        let s = send(
            &host,
            &p,
            "POST",
            "/public",
            &[(name, value)],
            b"",
            End::Data,
        );
        assert_eq!((s.forwarded, s.status), (false, Some(400)), "{name} {s:?}");
        let reason = s.body["reason"].as_str().unwrap_or_default();
        let dashed = name.replace('_', "-").to_ascii_lowercase();
        assert!(reason.contains(&format!("as `{dashed}`")), "{reason}");
    }
    // On the MCP endpoint, a JSON-RPC error.
    let s = send(
        &host,
        &p,
        "POST",
        "/mcp",
        &[
            ("content-type", "application/json"),
            ("mcp_session_id", "other"),
        ],
        &call(1, "read_file", json!({})),
        End::Data,
    );
    assert_eq!(s.status, Some(400), "{s:?}");
    assert!(s.reason().contains("`mcp-session-id`"), "{s:?}");
    // `drop`: removed before anything reads them; the request is judged without them.
    let p = plugin(&host, json!({ "http": { "underscore_headers": "drop" } }));
    let s = send(
        &host,
        &p,
        "POST",
        "/public",
        &[("x_forwarded_host", "169.254.169.254"), ("x-run", "1")],
        b"",
        End::Data,
    );
    assert!(s.forwarded, "{s:?}");
    let sent = host.state().request_headers.clone();
    assert!(sent.iter().all(|(n, _)| !n.contains('_')), "{sent:?}");
    assert!(sent.iter().any(|(n, _)| n == "x-run"), "{sent:?}");
    // `allow`: passed on as sent.
    let p = plugin(&host, json!({ "http": { "underscore_headers": "allow" } }));
    let s = send(
        &host,
        &p,
        "POST",
        "/public",
        &[("x_custom", "1")],
        b"",
        End::Data,
    );
    assert!(s.forwarded, "{s:?}");
    assert!(
        host.state()
            .request_headers
            .iter()
            .any(|(n, _)| n == "x_custom")
    );
}

#[test]
fn parameter_values_are_judged_as_frameworks_that_trim_them() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let form = ("content-type", "application/x-www-form-urlencoded");
    let json_body = ("content-type", "application/json");
    // Laravel's `TrimStrings` and Django's form fields read each as `admin`.
    for (path, ct, body) in [
        ("/members", form, &b"role=+admin"[..]),
        ("/members", form, b"role=admin%00"),
        ("/members", form, b"role=%09admin%0D%0A"),
        ("/members", form, b"role=%E2%80%8Badmin"),
        ("/members?role=admin%20", form, b"user=bob"),
        ("/members", json_body, br#"{"role":" admin"}"#),
        ("/members", json_body, br#"{"role":"admin\u0000"}"#),
        (
            "/members",
            json_body,
            br#"{"member":{"role":"\ufeffadmin"}}"#,
        ),
    ] {
        let s = send(&host, &p, "POST", path, &[ct], body, End::Data);
        let why = format!("{path} {}", String::from_utf8_lossy(body));
        s.assert_denied(
            "no_admin_grants",
            "frameworks that trim parameter values",
            &why,
        );
    }
    // PHP ends a field name at a NUL: `role%00x` is `role` to it.
    let s = send(
        &host,
        &p,
        "POST",
        "/members",
        &[form],
        b"role%00x=admin",
        End::Data,
    );
    assert_eq!(s.rule.as_deref(), Some("no_admin_grants"), "{s:?}");
    // A value with spaces inside, or that trims to something else, passes as sent.
    for body in [&b"role=+viewer+&note=a+b"[..], b"role=admin+viewer"] {
        let s = send(&host, &p, "POST", "/members", &[form], body, End::Data);
        assert!(s.forwarded, "{s:?}");
        assert_eq!(s.upstream_body, body);
    }
    // MCP servers take arguments as sent: an MCP call is not trimmed (a resolved path is judged
    // on its own terms, above).
}

/// The session and sequence number of the receipt the last request wrote.
fn receipt_session(host: &MockHost) -> (String, u64) {
    let st = host.state();
    let raw = st
        .filter_state
        .get("wasm.portcullis.receipt")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let r: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let r = if r.is_array() { r[0].clone() } else { r };
    (
        r["body"]["session"].as_str().unwrap_or_default().to_owned(),
        r["body"]["seq"].as_u64().unwrap_or_default(),
    )
}

#[test]
fn a_legacy_message_is_decided_in_the_session_its_query_names() {
    let host = MockHost::new(START_MS);
    // `require_initialize` holds for `mcp-session-id`; a legacy session id comes from the SSE
    // stream's `endpoint` event, never an `initialize` answer's header.
    let p = plugin(&host, json!({ "session": { "require_initialize": true } }));
    let json_body = ("content-type", "application/json");
    let body = call(1, "read_file", json!({"path": "/workspace/a"}));
    let mut seqs = Vec::new();
    for path in [
        "/messages?sessionId=legacy-1",
        "/messages/?session_id=legacy-1",
        "/messages?sessionId=legacy-1&x=1",
    ] {
        let s = send(&host, &p, "POST", path, &[json_body], &body, End::Data);
        assert!(s.forwarded, "{path} {s:?}");
        let (session, seq) = receipt_session(&host);
        assert_eq!(session, "legacy-1", "{path}");
        seqs.push(seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one chain: {seqs:?}"
    );
    // Two sessions named at once: each server acts in the one it reads.
    for (path, extra) in [
        ("/messages?sessionId=a&session_id=b", None),
        ("/messages?sessionId=a&sessionId=b", None),
        ("/messages?sessionId=a", Some(("mcp-session-id", "b"))),
    ] {
        let headers: Vec<(&str, &str)> = std::iter::once(json_body).chain(extra).collect();
        let s = send(&host, &p, "POST", path, &headers, &body, End::Data);
        assert_eq!((s.forwarded, s.status), (false, Some(400)), "{path} {s:?}");
        // Refused at the headers, before the body says it is JSON-RPC: a plain HTTP answer.
        let reason = s.body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("more than one session"), "{s:?}");
    }
}

#[test]
fn a_modify_of_an_argument_the_query_carries_is_refused() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    let json_body = ("content-type", "application/json");
    // The body's author is dropped as before.
    let s = send(
        &host,
        &p,
        "POST",
        "/notes?draft=1",
        &[json_body],
        br#"{"text":"hi","author":"ann"}"#,
        End::Data,
    );
    assert!(s.forwarded, "{s:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&s.upstream_body).unwrap(),
        json!({"text": "hi"})
    );
    // In the query, the filter cannot drop it: the request is denied, not forwarded unmade.
    for (path, body) in [
        ("/notes?author=ann", &br#"{"text":"hi","author":"ann"}"#[..]),
        ("/notes?author=ann", &br#"{"text":"hi"}"#[..]),
        ("/notes?author=ann", &b""[..]),
    ] {
        let s = send(&host, &p, "POST", path, &[json_body], body, End::Data);
        assert_eq!(
            (s.forwarded, s.status, s.rule.as_deref()),
            (false, Some(403), Some("filter:modify")),
            "{path} {s:?}"
        );
        assert!(
            s.body["reason"]
                .as_str()
                .unwrap()
                .contains("which the query also carries"),
            "{:?}",
            s.body
        );
    }
}

#[test]
fn query_parameters_are_read_under_every_method_the_request_may_be_read_as() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, json!({ "http": { "inspect_bodies": true } }));
    // A server that takes `_method` from the query (Rails, Laravel) takes `role` from it too: to
    // it this PUT is a POST granting admin, which `no_admin_grants` (POST only) denies. Neither
    // the method reading alone (a POST without `role`) nor the query reading alone (a PUT) is.
    let s = send(
        &host,
        &p,
        "PUT",
        "/members?_method=POST&role=admin",
        &[],
        b"",
        End::Data,
    );
    assert_eq!(
        (s.forwarded, s.rule.as_deref()),
        (false, Some("no_admin_grants")),
        "{s:?}"
    );
    // A request with more readings than the filter judges is denied, not judged in part.
    let query: Vec<String> = (0..70).map(|i| format!("_method=M{i}")).collect();
    let path = format!("/public?{}", query.join("&"));
    let s = send(&host, &p, "GET", &path, &[], b"", End::Data);
    assert_eq!(
        (s.forwarded, s.rule.as_deref()),
        (false, Some("filter:refused")),
        "{s:?}"
    );
    assert!(
        s.body["reason"].as_str().unwrap().contains("ways"),
        "{:?}",
        s.body
    );
}
