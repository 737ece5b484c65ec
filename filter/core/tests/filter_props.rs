//! Property tests: whatever a client sends (headers, body bytes, chunking), the filter never
//! panics, never leaves a request hanging, and either forwards it or answers it locally — and a
//! forwarded request always carries the filter's decision header, never the client's.

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
use std::sync::OnceLock;

use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use proptest::prelude::*;
use serde_json::json;

fn config() -> &'static [u8] {
    static C: OnceLock<Vec<u8>> = OnceLock::new();
    C.get_or_init(|| {
        common::config(
            "basic.pcl",
            json!({
                "limits": { "max_body_bytes": 4096 },
                "mcp": { "allow_batches": true },
                "http": { "inspect_bodies": true },
            }),
        )
    })
}

fn tool_body() -> impl Strategy<Value = Vec<u8>> {
    let tools = prop::sample::select(vec![
        "read_file",
        "get_secret",
        "send_email",
        "query_db",
        "git_push",
        "run_tests",
        "delete_branch",
        "deploy",
        "unknown",
    ]);
    (tools, any::<i64>(), ".{0,40}").prop_map(|(t, id, s)| {
        serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": t, "arguments": { "path": s, "body": s, "limit": id, "env": "production" } }
        }))
        .unwrap()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        tool_body(),
        prop::collection::vec(any::<u8>(), 0..300),
        // a valid message with bytes flipped
        (tool_body(), any::<usize>(), any::<u8>()).prop_map(|(mut b, i, x)| {
            let n = b.len();
            b[i % n] = x;
            b
        }),
        // batches
        prop::collection::vec(tool_body(), 0..4).prop_map(|items| {
            let mut out = b"[".to_vec();
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(it);
            }
            out.push(b']');
            out
        }),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let method = prop::sample::select(vec!["POST", "GET", "DELETE", "PUT", "CONNECT", "post"]);
    let path = prop::sample::select(vec![
        "/mcp",
        "/mcp/",
        "/mcpx",
        "/mcp?x=1",
        "/%2e%2e/mcp",
        "http://api.github.com/repos",
        "",
        "/a/../mcp",
    ]);
    let authority = prop::sample::select(vec![
        "workbench",
        "api.github.com:443",
        "",
        "[::1]:80",
        "EXFIL.example.",
    ]);
    let extra = prop::collection::vec(
        (
            prop::sample::select(vec![
                "x-portcullis-decision",
                "x-portcullis-receipt",
                "x-portcullis-approval",
                "x-portcullis-intent",
                "mcp-session-id",
                "content-type",
                "mcp-method",
                "mcp-name",
                "traceparent",
            ]),
            ".{0,20}",
        ),
        0..5,
    );
    (method, path, authority, extra).prop_map(|(m, p, a, extra)| {
        let mut h = vec![
            (":method".to_owned(), m.to_owned()),
            (":path".to_owned(), p.to_owned()),
            (":authority".to_owned(), a.to_owned()),
            (":scheme".to_owned(), "http".to_owned()),
        ];
        h.extend(extra.into_iter().map(|(n, v)| (n.to_owned(), v)));
        h
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_request_is_forwarded_or_answered(
        reqs in prop::collection::vec((headers(), prop::option::of(body()), 1usize..5), 1..4)
    ) {
        let host = MockHost::new(1_800_000_000_000);
        let plugin = Rc::new(Plugin::configure(&host, config()));
        prop_assert!(plugin.error().is_none());
        for (headers, body, chunks) in reqs {
            host.new_stream(headers);
            let mut s = Stream::new(Rc::clone(&plugin));
            let mut a = s.on_request_headers(&host, body.is_none());
            if let Some(b) = &body {
                let size = b.len().div_ceil(chunks).max(1);
                let parts: Vec<&[u8]> = if b.is_empty() { vec![&b[..]] } else { b.chunks(size).collect() };
                let last = parts.len() - 1;
                for (i, p) in parts.iter().enumerate() {
                    if host.state().local_response.is_some() {
                        break;
                    }
                    host.state().request_body.extend_from_slice(p);
                    let total = host.state().request_body.len();
                    a = s.on_request_body(&host, total, i == last);
                }
            }
            let st = host.state();
            let answered = st.local_response.is_some();
            let waiting = !st.http_calls.is_empty() && !answered && a == FilterAction::Pause;
            prop_assert!(st.violations.is_empty(), "{:?}", st.violations);
            prop_assert!(answered || a == FilterAction::Continue || waiting,
                "request neither forwarded nor answered");
            if !answered && a == FilterAction::Continue {
                let decision = st.request_headers.iter().find(|(n, _)| n == "x-portcullis-decision").map(|(_, v)| v.clone());
                prop_assert!(matches!(decision.as_deref(), Some("ALLOW") | Some("MODIFY")), "{decision:?}");
                prop_assert!(st.request_headers.iter().all(|(n, _)| n != "x-portcullis-approval" && n != "x-portcullis-intent"));
            }
            if let Some(l) = &st.local_response {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&l.body).is_ok(), "local answers are JSON");
            }
        }
    }
}
