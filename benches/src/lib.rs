//! Shared fixtures for the criterion benches and the `cost` profiling driver: one plugin
//! configuration (a pack compiled and signed in process), the MCP request headers and
//! `tools/call` bodies of an exact size, so every bench measures the same request.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The pack most filter benches evaluate (`testdata/scenarios/policies/basic.pcl`).
pub const BASIC_POLICY: &str = "testdata/scenarios/policies/basic.pcl";

/// The pack of the Envoy load benchmark, variant d (`benches/load/policy.pcl`).
pub const LOAD_POLICY: &str = "benches/load/policy.pcl";

/// A path relative to the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Why a fixture could not be built.
#[derive(Debug)]
pub struct FixtureError(pub String);

impl std::fmt::Display for FixtureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FixtureError {}

/// The plugin configuration JSON for `policy` (a repo-relative `.pcl`), compiled and signed with
/// a fixed bundle key, receipts signed with a fixed receipt key; `extra` members are merged in at
/// the top level (e.g. `{"receipts": {"checkpoint_every": 1}}`).
pub fn plugin_config(policy: &str, extra: &Value) -> Result<String, FixtureError> {
    let mut members = json!({ "mcp": { "paths": ["/mcp"], "server_name": "workbench" } });
    if let (Some(m), Some(e)) = (members.as_object_mut(), extra.as_object()) {
        m.extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    testkit::fixtures::plugin_config(&repo_path(policy), &members).map_err(FixtureError)
}

/// Request headers of an MCP POST (legacy protocol, session `session` when given).
pub fn mcp_headers(session: Option<&str>, content_length: usize) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "workbench"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-11-25"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    if let Some(s) = session {
        h.push(("mcp-session-id".to_owned(), s.to_owned()));
    }
    h.push(("content-length".to_owned(), content_length.to_string()));
    h
}

/// A `tools/call` of `tool` of exactly `size` bytes (or the smallest possible when `size` is
/// smaller): the padding goes into a `path` argument.
pub fn tools_call_body(tool: &str, size: usize) -> Vec<u8> {
    let make = |pad: usize| {
        serde_json::to_vec(&json!({
            "jsonrpc": "2.0",
            "id": 42,
            "method": "tools/call",
            "params": { "name": tool, "arguments": { "path": format!("/repo/{}", "d".repeat(pad)) } }
        }))
        .unwrap_or_default()
    };
    let base = make(0).len();
    make(size.saturating_sub(base))
}

/// Realistic text for a tool argument, read in place from `../shared`: the official MCP
/// 2025-11-25 JSON schema (English descriptions, JSON punctuation, quotes and newlines to escape).
/// Fixed content, so instruction counts of two builds compare; unlike the `d`s of
/// [`tools_call_body`] (a best case for the risk scan) it has the letters that start secret
/// prefixes at their natural rate.
pub const REALISTIC_TEXT: &str = "../shared/schemas/mcp/2025-11-25/schema.json";

/// A `tools/call` of `tool` of exactly `size` bytes (or the smallest possible) whose `content`
/// argument is the start of [`REALISTIC_TEXT`], cut between two characters and topped up with
/// spaces (at most one escape's worth).
pub fn tools_call_text_body(tool: &str, size: usize) -> Result<Vec<u8>, FixtureError> {
    let path = repo_path(REALISTIC_TEXT);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| FixtureError(format!("{}: {e}", path.display())))?;
    let make = |content: &str| {
        serde_json::to_vec(&json!({
            "jsonrpc": "2.0",
            "id": 42,
            "method": "tools/call",
            "params": { "name": tool, "arguments": { "path": "/repo/schema.json", "content": content } }
        }))
        .unwrap_or_default()
    };
    // The bytes a character takes inside a JSON string: serde_json's own escaping, quotes off.
    let escaped_len = |c: char| serde_json::to_string(&c).map_or(6, |s| s.len().saturating_sub(2));
    let mut len = make("").len();
    let mut content = String::new();
    for c in text.chars() {
        len = len.saturating_add(escaped_len(c));
        if len > size {
            break;
        }
        content.push(c);
    }
    let short = size.saturating_sub(make(&content).len());
    content.extend(std::iter::repeat_n(' ', short));
    Ok(make(&content))
}

/// A small JSON-RPC result, as an upstream MCP server answers a tool call.
pub const TOOL_RESULT: &[u8] =
    br#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"ok"}]}}"#;

/// The upstream's response headers in [`wasm_stream`]: a `200` with a JSON body.
pub const RESPONSE_HEADERS: &[(&str, &str)] =
    &[(":status", "200"), ("content-type", "application/json")];

/// One whole HTTP stream through the built `.wasm` under the test harness's proxy-wasm host:
/// request headers, the body (when there is one and the filter waits for it), and for a request
/// that went upstream the answer [`RESPONSE_HEADERS`] with body `response`. Returns whether the
/// request went upstream.
pub fn wasm_stream(
    host: &mut harness::Host,
    headers: &[(String, String)],
    body: &[u8],
    response: &[u8],
) -> Result<bool, FixtureError> {
    fn fail(e: impl std::fmt::Display) -> FixtureError {
        FixtureError(format!("{e:#}"))
    }
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut s = host.new_stream().map_err(fail)?;
    s.request_headers(&headers, body.is_empty()).map_err(fail)?;
    if !body.is_empty() && !s.view().finished() && !s.view().request_forwarded() {
        s.request_body(body, true).map_err(fail)?;
    }
    let forwarded = s.view().request_forwarded();
    if forwarded {
        s.response_headers(RESPONSE_HEADERS, false).map_err(fail)?;
        s.response_body(response, true).map_err(fail)?;
    }
    if !s.view().finished() {
        return Err(FixtureError("the stream did not end".to_owned()));
    }
    let id = s.id();
    host.forget_stream(id);
    host.clear_logs();
    Ok(forwarded)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    #[test]
    fn bodies_have_the_size_asked_for() {
        let text = std::fs::read_to_string(repo_path(REALISTIC_TEXT)).unwrap();
        for size in [300, 1024, 1025, 4096, 16 * 1024] {
            assert_eq!(tools_call_body("read_file", size).len(), size);
            let body = tools_call_text_body("read_file", size).unwrap();
            assert_eq!(body.len(), size, "text body of {size} bytes");
            let v: Value = serde_json::from_slice(&body).unwrap();
            let content = v["params"]["arguments"]["content"].as_str().unwrap();
            // the text itself: only the last few bytes (one escape's worth at most) are padding
            let kept = content.get(..content.len().saturating_sub(5)).unwrap();
            assert!(text.starts_with(kept), "{size}: {kept:?}");
        }
    }
}
