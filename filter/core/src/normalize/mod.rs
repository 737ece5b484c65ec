//! Request normalization: MCP JSON-RPC (Streamable HTTP) and plain HTTP egress -> one
//! [`bundle::action::Action`], plus the body rewrites a MODIFY verdict asks for.
//!
//! The rules and the answer to every bad input are written down in `docs/filter-normalization.md`.
//! In short: the filter parses exactly as strictly as the strictest MCP server would, and refuses
//! (a [`Refusal`], never forwarded) everything two implementations could read differently, so the
//! policy never decides on a method, tool or argument the server does not act on.
//!
//! Entry points, in the order the filter calls them:
//! 1. [`route`] on the request headers, then [`needs_body`];
//! 2. [`BodyBuffer::push`] per body chunk (413 over the limit);
//! 3. [`normalize_mcp`], [`normalize_mcp_headers_only`] or [`normalize_http`];
//! 4. after a MODIFY verdict: [`apply_modifications`] (MCP) or [`apply_http_modifications`].

use std::borrow::Cow;

mod charset;
mod dots;
mod form;
mod http;
pub(crate) mod json;
mod multipart;
mod nesting;
mod query;
mod urls;

pub(crate) use json::fold_key;
mod mcp;
mod methods;
mod modify;
mod readings;
mod request;
pub mod risk;
mod trim;
pub(crate) mod unescape;

pub(crate) use charset::foreign as foreign_charset;
pub(crate) use dots::{argument_readings as path_argument_readings, first_difference};
pub use http::normalize_http;
pub(crate) use mcp::is_modern;
pub use mcp::{normalize_mcp, normalize_mcp_found, normalize_mcp_headers_only, param_header_edits};
pub(crate) use methods::{Method, NOTIFICATION_PREFIX};
pub use modify::{apply_http_modifications, apply_modifications, apply_to_value, rewrites_body};
pub(crate) use query::unrewritable as query_unrewritable;
pub(crate) use readings::parameter_reading_reason;
pub use readings::{
    MAX_READINGS, TooManyReadings, action_readings, check_argument_spelling, path_readings,
};
pub use request::{Actions, Shape, request};

/// What the filter knows about a request when its headers arrive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method as sent (`:method`), e.g. `POST`.
    pub method: String,
    /// `:scheme` (`http` / `https`); may be empty (then `http` is assumed, CONNECT keeps it empty).
    pub scheme: String,
    /// `:authority` (or `Host`), raw: `host[:port]`.
    pub authority: String,
    /// The raw `:path`: origin-form (`/mcp?x=1`), absolute-form (`http://h/p`, forward proxy), or
    /// empty for CONNECT.
    pub path: String,
    /// Request headers, lowercase names, in arrival order (pseudo-headers may be included; they
    /// are ignored).
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header with this name (`name` must be lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Normalization settings (part of the plugin configuration, parsed by `config/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizeConfig {
    /// Paths served by the MCP server (Streamable HTTP endpoint). A request path matches when it
    /// equals an entry or continues it with `/` or `?` (`/mcp` matches `/mcp`, `/mcp/x`,
    /// `/mcp?a`, not `/mcpx`), under every reading servers apply ([`endpoint_key`]: case,
    /// repeated slashes, `;` parameters, trailing dots).
    pub mcp_paths: Vec<String>,
    /// Message endpoints of the legacy HTTP+SSE transport (`POST /messages?sessionId=..`): their
    /// bodies are always read, and judged as MCP when they are JSON-RPC.
    pub mcp_legacy_paths: Vec<String>,
    /// Hosts (normalized) whose servers read paths literally: a double-encoded escape or an
    /// empty segment in their paths is not refused.
    pub literal_path_hosts: Vec<String>,
    /// The configured name of the MCP server behind the MCP paths (`target.server`); when empty,
    /// the request's host is used.
    pub server_name: String,
    /// Largest request body the filter buffers and parses; more is refused with HTTP 413.
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted (arrays and objects both count); capped at 512.
    pub max_json_depth: usize,
    /// Whether plain HTTP (egress) request bodies are buffered, parsed (JSON) and risk-scanned.
    pub inspect_http_bodies: bool,
    /// Whether JSON-RPC batches (a top-level array, MCP 2025-03-26 only) are accepted. When
    /// false every batch is refused with -32600; when true every element is normalized.
    pub allow_batches: bool,
    /// Most elements a batch may have (when batches are allowed).
    pub max_batch_len: usize,
}

impl NormalizeConfig {
    /// Header-only mode: no MCP path and no HTTP body inspection, so the filter never pauses a
    /// request at its headers (Istio's WasmPlugin cannot allow that). Bodies are then never
    /// read: not on legacy message endpoints, not to find JSON-RPC, not to count bytes
    /// (docs/filter-normalization.md, "Header-only mode").
    pub fn header_only(&self) -> bool {
        self.mcp_paths.is_empty() && !self.inspect_http_bodies
    }
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            mcp_paths: vec!["/mcp".to_owned()],
            mcp_legacy_paths: vec!["/messages".to_owned(), "/sse".to_owned()],
            literal_path_hosts: Vec::new(),
            server_name: String::new(),
            max_body_bytes: 1024 * 1024,
            max_json_depth: 64,
            inspect_http_bodies: false,
            allow_batches: false,
            max_batch_len: 32,
        }
    }
}

/// Which normalizer a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// POST to an MCP path: JSON-RPC message(s) in the body.
    Mcp,
    /// GET or HEAD on an MCP path: the client opens an SSE stream (operation `stream/open`).
    McpStream,
    /// DELETE on an MCP path: the client ends its session (operation `session/delete`).
    McpDelete,
    /// OPTIONS on an MCP path (a CORS preflight; operation `http/options`).
    McpOptions,
    /// Any other method on an MCP path: refused with 405 (no MCP server acts on it, and it must
    /// not be judged as plain HTTP either).
    McpMethodNotAllowed,
    /// A message endpoint of the legacy HTTP+SSE transport: the body is read, and judged as MCP
    /// when it is JSON-RPC, else as plain HTTP.
    McpLegacy,
    /// Any other request (egress or a non-MCP path). Where its body is read, a JSON-RPC body
    /// makes it MCP all the same.
    Http,
    /// A CONNECT tunnel (egress to `host:port`).
    Connect,
}

impl Route {
    /// The operation of a body-less MCP request on this route.
    pub fn header_only_operation(self) -> Option<&'static str> {
        match self {
            Route::McpStream => Some(Method::StreamOpen.name()),
            Route::McpDelete => Some(Method::SessionDelete.name()),
            Route::McpOptions => Some(Method::HttpOptions.name()),
            _ => None,
        }
    }
}

/// JSON-RPC error code of MCP 2026-07-28's `HeaderMismatchError`: HTTP headers that disagree
/// with the body, or required ones missing or malformed.
pub const HEADER_MISMATCH_CODE: i64 = -32020;

/// The methods an MCP endpoint serves (the `allow` header of a 405).
pub const MCP_METHODS: &str = "POST, GET, HEAD, DELETE, OPTIONS";

/// Decide which normalizer handles this request (origin-form and absolute-form targets alike,
/// so a forward-proxied MCP POST is parsed as MCP, not passed as plain HTTP). Never fails: a
/// request whose path cannot be normalized goes to [`Route::Http`], where [`normalize_http`]
/// refuses it. The method is compared without case (`post` is POST to servers that accept it).
pub fn route(head: &RequestHead, cfg: &NormalizeConfig) -> Route {
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return Route::Connect;
    }
    let Ok(norm) = http::normalize_target_path(&head.path, literal_paths(head, cfg)) else {
        return Route::Http;
    };
    let key = endpoint_key(&norm.path);
    let on = |paths: &[String]| paths.iter().any(|p| path_matches(&key, &endpoint_key(p)));
    if !on(&cfg.mcp_paths) {
        if !on(&cfg.mcp_legacy_paths) {
            return Route::Http;
        }
        // The legacy transport's event stream (`GET /sse`) carries every answer and server
        // request: read as an MCP stream (except in header-only mode, where nothing is MCP).
        // Anything else there is a message, or plain HTTP.
        return match head.method.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" if !cfg.header_only() => Route::McpStream,
            _ => Route::McpLegacy,
        };
    }
    match head.method.to_ascii_uppercase().as_str() {
        "POST" => Route::Mcp,
        "GET" | "HEAD" => Route::McpStream,
        "DELETE" => Route::McpDelete,
        "OPTIONS" => Route::McpOptions,
        _ => Route::McpMethodNotAllowed,
    }
}

/// Whether this request's host is one whose server reads paths literally
/// (`http.literal_path_hosts`).
pub(crate) fn literal_paths(head: &RequestHead, cfg: &NormalizeConfig) -> bool {
    if cfg.literal_path_hosts.is_empty() {
        return false;
    }
    let authority = if head.path.starts_with('/') || head.authority.is_empty() {
        head.authority.as_str()
    } else {
        head.path.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or("")
        })
    };
    http::parse_authority(authority).is_ok_and(|a| cfg.literal_path_hosts.contains(&a.host))
}

/// The normalized host of a configured host name or address, `None` when it is not one.
pub(crate) fn host_of(raw: &str) -> Option<String> {
    http::parse_authority(raw)
        .ok()
        .filter(|a| a.port.is_none())
        .map(|a| a.host)
}

/// A path as the most lenient servers route it: ASCII case folded (ASP.NET Core, IIS), `;`
/// parameters dropped from every segment (Servlet containers), trailing dots dropped from every
/// segment (IIS, some frameworks), empty segments merged (nginx `merge_slashes`, many routers);
/// a trailing `/` is kept.
pub(crate) fn endpoint_key(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/') {
        let seg = seg.split(';').next().unwrap_or_default();
        let seg = seg.trim_end_matches('.');
        if seg.is_empty() {
            continue;
        }
        out.push('/');
        out.extend(seg.chars().map(|c| c.to_ascii_lowercase()));
    }
    if out.is_empty() || path.ends_with('/') {
        out.push('/');
    }
    out
}

fn path_matches(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => prefix.len() > 1 && path == prefix.trim_end_matches('/'),
    }
}

/// Whether the filter must buffer the request body before it can decide. MCP POSTs and legacy
/// message endpoints always; the body-less MCP routes when a body follows the headers (to refuse
/// it unless it is empty); plain HTTP only when `inspect_http_bodies` is set and the request does
/// not declare an empty body (`content-length: 0`). When Envoy reports end of stream with the
/// headers, the caller treats the body as empty.
pub fn needs_body(head: &RequestHead, route: Route, cfg: &NormalizeConfig) -> bool {
    if cfg.header_only() {
        return false;
    }
    match route {
        Route::Mcp | Route::McpLegacy => true,
        Route::McpStream | Route::McpDelete | Route::McpOptions => true,
        Route::McpMethodNotAllowed | Route::Connect => false,
        Route::Http => {
            cfg.inspect_http_bodies && head.header("content-length").map(str::trim) != Some("0")
        }
    }
}

/// Whether a body is a JSON-RPC message (an object with a `jsonrpc` member, in any case, or an
/// array holding one), wherever it goes: then it is judged as MCP. A body that looks like
/// JSON-RPC but is not strict JSON (a byte-order mark, a syntax error some parser forgives) is
/// refused, since a lenient server may still read it as a call.
pub fn is_jsonrpc_body(body: &[u8], cfg: &NormalizeConfig) -> Result<bool, Refusal> {
    let text = body.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(body);
    let Some(first) = text.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(false);
    };
    // A JSON-RPC message names `jsonrpc` (2.0) or `method` (1.0), literally or through a `\u`
    // escape: a body that does neither is not one, and is not parsed twice on the egress path.
    if !matches!(first, b'{' | b'[') || !mentions_jsonrpc(text) {
        return Ok(false);
    }
    // JSON-RPC 2.0 names itself; a 1.0 request does not, but has `method`, `params` and `id`.
    let is_rpc = |v: &serde_json::Value| {
        v.as_object().is_some_and(|o| {
            let has = |name: &str| o.keys().any(|k| json::fold_key(k) == name);
            has("jsonrpc") || (has("method") && has("params") && has("id"))
        })
    };
    match json::parse(body, cfg.max_json_depth) {
        Ok(p) => Ok(match &p.value {
            serde_json::Value::Array(items) => items.iter().any(is_rpc),
            v => is_rpc(v),
        }),
        Err(e) if mentions_jsonrpc(text) => Err(if e.is_ambiguous() {
            Refusal::invalid_request(e.reason(), None)
        } else {
            Refusal::parse_error(format!(
                "body looks like json-rpc but is not strict json: {}",
                e.reason()
            ))
        }),
        Err(_) => Ok(false),
    }
}

/// Whether `jsonrpc` or `method` appears in the text, in any ASCII case (or anything is written
/// with a `\u` escape).
fn mentions_jsonrpc(text: &[u8]) -> bool {
    text.windows(7).any(|w| w.eq_ignore_ascii_case(b"jsonrpc"))
        || text.windows(6).any(|w| w.eq_ignore_ascii_case(b"method"))
        || text.windows(2).any(|w| w == b"\\u")
}

/// A JSON-RPC request id, kept exactly so an error answer echoes it back. MCP allows strings and
/// integers; any other id is refused with -32600.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JsonRpcId {
    /// An integer id.
    Num(i64),
    /// A string id.
    Str(String),
}

impl JsonRpcId {
    /// The id as a JSON value, for building a JSON-RPC error response.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            JsonRpcId::Num(n) => serde_json::Value::from(*n),
            JsonRpcId::Str(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// What kind of JSON-RPC message a body element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum McpMessageKind {
    /// A request: has `method` and `id`; the server answers it.
    Request,
    /// A notification: has `method`, no `id`; nobody answers it.
    Notification,
    /// A response the client posts back to a server request (sampling, elicitation, roots):
    /// `result` or `error` with the server's `id`; operation `response`.
    Response,
}

/// One normalized JSON-RPC message.
#[derive(Clone, Debug, PartialEq)]
pub struct McpMessage {
    /// The message id (requests and responses); `None` for notifications.
    pub id: Option<JsonRpcId>,
    /// The normalized action the policy evaluates.
    pub action: bundle::action::Action,
    /// Request, notification or response.
    pub kind: McpMessageKind,
    /// `params.requestState` of a 2026-07-28 retry (MRTR): the server's opaque state, passed
    /// untouched and held to the decision it was handed out under (`session/bindings.rs`).
    pub request_state: Option<String>,
    /// `params.taskId` of a `tasks/get`, `tasks/update` or `tasks/cancel` (tasks extension).
    pub task_id: Option<String>,
}

/// A normalized MCP POST body.
#[derive(Clone, Debug, PartialEq)]
pub struct McpRequest {
    /// The body was a JSON-RPC batch (array), even of one element.
    pub batch: bool,
    /// The messages, in body order (one unless `batch`).
    pub messages: Vec<McpMessage>,
    /// The MCP protocol version: the `mcp-protocol-version` header, else `params.protocolVersion`
    /// of an `initialize`, else the 2026-07-28 `_meta` protocol version of the first message.
    pub protocol_version: Option<String>,
}

/// A request refused during normalization: never forwarded, answered with this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status to answer with (400, 405, 413, 500).
    pub http_status: u16,
    /// The JSON-RPC error code, when the refusal is about a JSON-RPC message (-32700 parse error,
    /// -32600 invalid request, -32602 invalid params, -32603 internal error). `None` for refusals
    /// at the HTTP level (body too large, bad path or authority).
    pub jsonrpc_code: Option<i64>,
    /// Lowercase human-readable reason (safe to show the agent; never contains secrets).
    pub reason: String,
    /// The id of the offending message when it could be read (echo it in the error).
    pub id: Option<JsonRpcId>,
}

impl Refusal {
    pub(crate) fn parse_error(reason: String) -> Self {
        Refusal {
            http_status: 400,
            jsonrpc_code: Some(-32700),
            reason,
            id: None,
        }
    }

    pub(crate) fn invalid_request(reason: impl Into<String>, id: Option<JsonRpcId>) -> Self {
        Refusal {
            http_status: 400,
            jsonrpc_code: Some(-32600),
            reason: reason.into(),
            id,
        }
    }

    /// An MCP routing header (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`, `Mcp-Protocol-Version`)
    /// that disagrees with the body or does not decode: MCP 2026-07-28's `HeaderMismatchError`,
    /// -32020 with HTTP 400.
    pub(crate) fn header_mismatch(reason: impl Into<String>, id: Option<JsonRpcId>) -> Self {
        Refusal {
            http_status: 400,
            jsonrpc_code: Some(HEADER_MISMATCH_CODE),
            reason: reason.into(),
            id,
        }
    }

    pub(crate) fn invalid_params(reason: impl Into<String>, id: Option<JsonRpcId>) -> Self {
        Refusal {
            http_status: 400,
            jsonrpc_code: Some(-32602),
            reason: reason.into(),
            id,
        }
    }

    pub(crate) fn forbidden(reason: impl Into<String>) -> Self {
        Refusal {
            http_status: 403,
            jsonrpc_code: None,
            reason: reason.into(),
            id: None,
        }
    }

    pub(crate) fn bad_http(reason: impl Into<String>) -> Self {
        Refusal {
            http_status: 400,
            jsonrpc_code: None,
            reason: reason.into(),
            id: None,
        }
    }

    /// A method no MCP endpoint serves (405, with `allow: MCP_METHODS`).
    pub(crate) fn method_not_allowed(method: &str) -> Self {
        Refusal {
            http_status: 405,
            jsonrpc_code: None,
            reason: format!(
                "method `{}` is not served by the mcp endpoint (allowed: {MCP_METHODS})",
                printable(method)
            ),
            id: None,
        }
    }

    /// A body of undeclared length where the policy counts bytes and the body cannot be read
    /// (header-only mode): 411.
    pub(crate) fn length_required() -> Self {
        Refusal {
            http_status: 411,
            jsonrpc_code: None,
            reason: "the policy counts request bytes: send `content-length` (this filter does \
                     not read bodies)"
                .to_owned(),
            id: None,
        }
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Refusal {
            http_status: 413,
            jsonrpc_code: None,
            reason: format!(
                "request body larger than {limit} bytes (the filter's limits.max_body_bytes; an \
                 operator raises it in the plugin configuration, with Envoy's buffer limit above it)"
            ),
            id: None,
        }
    }

    /// A JSON error body for refusals the filter answers itself: for MCP a JSON-RPC error
    /// response (`{"jsonrpc":"2.0","id":<id|null>,"error":{"code":..,"message":..}}`; code -32600
    /// when the refusal has none), for plain HTTP `{"error":"bad_request","reason":..}`.
    pub fn to_json_body(&self, mcp: bool) -> Vec<u8> {
        let v = if mcp {
            serde_json::json!({
                "jsonrpc": "2.0",
                "id": self.id.as_ref().map_or(serde_json::Value::Null, JsonRpcId::to_json),
                "error": {"code": self.jsonrpc_code.unwrap_or(-32600), "message": self.reason},
            })
        } else {
            let error = match self.http_status {
                411 => "length_required",
                413 => "payload_too_large",
                415 => "unsupported_media_type",
                405 => "method_not_allowed",
                500 => "internal_error",
                _ => "bad_request",
            };
            serde_json::json!({"error": error, "reason": self.reason})
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// Parse untrusted JSON with the filter's strict rules (see `docs/filter-normalization.md`):
/// anything two JSON readers could read differently is refused. Duplicate keys give -32600,
/// every other problem -32700 (HTTP 400). `max_depth` is capped at 512. Use it for any JSON the
/// filter must trust (e.g. a context service's answer).
pub fn parse_json(bytes: &[u8], max_depth: usize) -> Result<serde_json::Value, Refusal> {
    json::parse(bytes, max_depth)
        .map(|p| p.value)
        .map_err(|e| match e {
            e if e.is_ambiguous() => Refusal::invalid_request(e.reason(), None),
            _ => Refusal::parse_error(e.reason()),
        })
}

/// Accumulates body chunks up to a limit. Normalization runs on the complete body, so the result
/// does not depend on how the proxy split it.
#[derive(Clone, Debug, Default)]
pub struct BodyBuffer {
    buf: Vec<u8>,
    limit: usize,
}

impl BodyBuffer {
    /// An empty buffer that accepts at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BodyBuffer {
            buf: Vec::new(),
            limit,
        }
    }

    /// Append a chunk. Over the limit: HTTP 413 refusal, and the buffer keeps only what it had.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let total = self.buf.len().saturating_add(chunk.len());
        if total > self.limit {
            return Err(Refusal::too_large(self.limit));
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The bytes buffered so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Take the buffered bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A name from the request for a refusal reason: at most 64 characters, control characters
/// escaped, and `[REDACTED]` when it looks like a secret (reasons reach logs and receipts).
pub(crate) fn printable(s: &str) -> String {
    if risk::is_secret_like(s) {
        return risk::REDACTED.to_owned();
    }
    let mut out = String::new();
    for c in s.chars().take(64) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The protocol a request asks to switch its connection to (`upgrade: websocket`), which turns
/// it into a tunnel once the server agrees; `None` without one, and for `h2c`, which Envoy
/// never passes on as a tunnel.
pub(crate) fn tunnel_upgrade(head: &RequestHead) -> Option<&str> {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("upgrade"))
        .map(|(_, v)| v.trim())
        .find(|v| !v.is_empty() && !v.eq_ignore_ascii_case("h2c"))
}

/// The headers the policy may read: lowercase names, arrival order; pseudo-headers, hop-by-hop
/// headers (but `upgrade`, which says the request opens a tunnel) and Portcullis' own
/// `x-portcullis-*` headers left out; credential headers kept with
/// the value `[REDACTED]` (the policy can test for their presence; receipts never carry them).
pub(crate) fn policy_headers(head: &RequestHead) -> Vec<(String, String)> {
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
    ];
    const CREDENTIAL: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
    ];
    head.headers
        .iter()
        .filter_map(|(n, v)| {
            let name = n.to_ascii_lowercase();
            if name.starts_with(':') || name.starts_with("x-portcullis-") {
                return None;
            }
            if HOP.contains(&name.as_str()) {
                return None;
            }
            if CREDENTIAL.contains(&name.as_str()) {
                return Some((name, "[REDACTED]".to_owned()));
            }
            Some((name, v.clone()))
        })
        .collect()
}

/// Headers that are never scanned for secrets: credentials meant for the server (the policy sees
/// them as `[REDACTED]`), Portcullis' own (an approval token is high-entropy by design), and
/// identifiers and validators that are random by design.
const UNSCANNED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
    "mcp-session-id",
    "traceparent",
    "tracestate",
    "baggage",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "if-match",
    "if-none-match",
    "etag",
    "sec-websocket-key",
];

/// Risk findings of what a request carries outside its body: the path and the query (percent-
/// decoded, `+` as a space, so an escape cannot hide a key) and every header value but those
/// in [`UNSCANNED_HEADERS`] (`Mcp-Param-*` included). Each action of the request adds its body
/// part to these.
pub(crate) fn head_scan(head: &RequestHead) -> risk::Scan {
    let mut scan = risk::Scan::default();
    let (path, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    scan.text(&percent_decode_lossy(path, false));
    if !query.is_empty() {
        scan.text(&percent_decode_lossy(query, true));
    }
    for (name, value) in &head.headers {
        let prefixed = |p: &str| {
            name.get(..p.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(p))
        };
        if prefixed(":")
            || prefixed("x-portcullis-")
            || UNSCANNED_HEADERS
                .iter()
                .any(|u| name.eq_ignore_ascii_case(u))
        {
            continue;
        }
        scan.text(value);
    }
    scan
}

/// Percent-decode (every escape; malformed ones kept), as UTF-8 with replacement characters; `s`
/// itself when it holds nothing to decode.
fn percent_decode_lossy(s: &str, plus_is_space: bool) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+')) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(String::from_utf8_lossy(&percent_decode(s.as_bytes(), plus_is_space)).into_owned())
}

/// Percent-decode `b` (every escape; malformed ones kept), `+` as a space when asked: the bytes.
pub(crate) fn percent_decode(b: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0usize;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|x| char::from(*x).to_digit(16));
        match (c, hex(i.saturating_add(1)), hex(i.saturating_add(2))) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from((h << 4) | l).unwrap_or(b'%'));
                i = i.saturating_add(3);
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i = i.saturating_add(1);
            }
            _ => {
                out.push(c);
                i = i.saturating_add(1);
            }
        }
    }
    out
}

/// The first of `names` that the request carries more than once with different values (trimmed,
/// compared exactly), if any. The filter reads one value of each (a session key, a protocol
/// version, an approval token); servers differ on which line they take (the first, the last, or
/// all joined with commas), so a request that gives two answers is refused, never judged by one.
pub(crate) fn ambiguous_header<'a>(head: &RequestHead, names: &'a [String]) -> Option<&'a str> {
    names.iter().map(String::as_str).find(|name| {
        let mut values = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim());
        values
            .next()
            .is_some_and(|first| values.any(|v| v != first))
    })
}

/// The session a legacy HTTP+SSE message names in its query (`POST /messages?sessionId=...`):
/// the TypeScript SDK's server reads `sessionId`, the Python SDK's `session_id`; `None` without
/// one. Refused when the request names two different sessions (the query's names or repeats
/// disagree, or the query and `mcp-session-id`, `header`, disagree): each server would act in
/// the one it reads.
pub(crate) fn legacy_session_id(
    head: &RequestHead,
    header: Option<&str>,
) -> Result<Option<String>, Refusal> {
    match head.path.split_once('?') {
        Some((_, q)) => legacy_session_in_query(q, header),
        None => Ok(header.map(str::to_owned)),
    }
}

/// [`legacy_session_id`] of a query (the part after `?`): also the session a legacy event
/// stream's `endpoint` event names (`/messages/?session_id=...`).
pub(crate) fn legacy_session_in_query(
    q: &str,
    header: Option<&str>,
) -> Result<Option<String>, Refusal> {
    let query = query::Query::parse(q);
    let mut named: Vec<&str> = Vec::new();
    for name in ["sessionId", "session_id"] {
        for v in query.values(name, 2) {
            if !named.contains(&v) {
                named.push(v);
            }
        }
    }
    if let Some(h) = header
        && !named.contains(&h)
        && !named.is_empty()
    {
        named.push(h);
    }
    match named.as_slice() {
        [] => Ok(header.map(str::to_owned)),
        [one] => Ok(Some((*one).to_owned())),
        _ => Err(Refusal::bad_http(
            "the message names more than one session (`sessionId`, `session_id`, \
             `mcp-session-id`): servers differ on which one they act in"
                .to_owned(),
        )),
    }
}

/// The first request header whose name has an `_` (docs/filter-normalization.md, "Header names
/// with `_`"): servers that map header names to CGI variables (Django, PHP, Rack servers, WSGI)
/// read `x_forwarded_host` as `x-forwarded-host`, others as a header of its own, so no reading of
/// it is the server's for sure.
pub(crate) fn underscore_header(head: &RequestHead) -> Option<&str> {
    head.headers
        .iter()
        .map(|(n, _)| n.as_str())
        .find(|n| n.contains('_'))
}

/// The refusal of a request that carries the header `name`, named with an `_`.
pub(crate) fn underscore_refusal(name: &str) -> Refusal {
    let dashed = name.replace('_', "-").to_ascii_lowercase();
    Refusal::bad_http(format!(
        "header `{}` has an `_` in its name: servers that read `_` as `-` (CGI, PHP, WSGI, \
         Django, Rack) read it as `{}`, others as another header (`http.underscore_headers`)",
        printable(name),
        printable(&dashed)
    ))
}

/// A body the filter reads must be in a form it can read: any `content-encoding` other than
/// `identity` (gzip, deflate, br, ...) is refused with 415, since a server that inflates request
/// bodies (`express.json()` does) would act on what the filter never saw.
pub fn check_body_encoding(head: &RequestHead, body: &[u8]) -> Result<(), Refusal> {
    let refuse = |what: &str| Refusal {
        http_status: 415,
        jsonrpc_code: None,
        reason: format!("request body is {what}; the filter reads uncompressed utf-8 bodies only"),
        id: None,
    };
    // A body is read as its recipient reads it (`charset.rs`): one content type, whose charset
    // (if it declares one) reads these bytes as UTF-8 does; and no UTF-16 or UTF-32 byte-order
    // mark, by which a server that sniffs reads text the filter never saw.
    let mut types = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim());
    if let Some(first) = types.next() {
        if types.any(|v| !v.eq_ignore_ascii_case(first)) {
            return Err(refuse("declared with several content types"));
        }
        if let Some(cs) = charset::foreign(first, Some(body)) {
            return Err(refuse(&format!(
                "in another charset (`{}`)",
                printable(&cs)
            )));
        }
    }
    if [&[0xFF, 0xFE][..], &[0xFE, 0xFF], &[0, 0, 0xFE, 0xFF]]
        .iter()
        .any(|bom| body.starts_with(bom))
    {
        return Err(refuse("utf-16 or utf-32"));
    }
    for (n, v) in &head.headers {
        if n.eq_ignore_ascii_case("content-encoding")
            && v.split(',')
                .any(|c| !c.trim().eq_ignore_ascii_case("identity") && !c.trim().is_empty())
        {
            return Err(refuse(&format!(
                "compressed (content-encoding `{}`)",
                printable(v.trim())
            )));
        }
    }
    Ok(())
}

/// The W3C trace id of a valid `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), lowercase;
/// `None` when absent or malformed, or when the trace id is all zeros.
pub(crate) fn trace_id(head: &RequestHead) -> Option<String> {
    let tp = head.header("traceparent")?.trim();
    let mut parts = tp.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2)
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace.to_owned())
}

/// The session id from `mcp-session-id` (visible ASCII only, at most 256 bytes), else `None`.
pub(crate) fn session_id(head: &RequestHead) -> Option<String> {
    let v = head.header("mcp-session-id")?;
    valid_session_id(v).then(|| v.to_owned())
}

/// Whether a `mcp-session-id` value is acceptable as a session key: 1 to 256 visible ASCII bytes.
pub(crate) fn valid_session_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            scheme: "http".into(),
            authority: "mcp.local".into(),
            path: path.into(),
            headers: vec![],
        }
    }

    #[test]
    fn routes() {
        let cfg = NormalizeConfig::default();
        assert_eq!(route(&head("POST", "/mcp"), &cfg), Route::Mcp);
        assert_eq!(route(&head("POST", "/mcp/"), &cfg), Route::Mcp);
        assert_eq!(route(&head("POST", "/mcp?x=1"), &cfg), Route::Mcp);
        assert_eq!(route(&head("POST", "/%6Dcp"), &cfg), Route::Mcp);
        assert_eq!(route(&head("POST", "/a/../mcp"), &cfg), Route::Mcp);
        assert_eq!(route(&head("POST", "/mcpx"), &cfg), Route::Http);
        assert_eq!(route(&head("GET", "/mcp"), &cfg), Route::McpStream);
        assert_eq!(route(&head("DELETE", "/mcp"), &cfg), Route::McpDelete);
        assert_eq!(
            route(&head("PUT", "/mcp"), &cfg),
            Route::McpMethodNotAllowed
        );
        assert_eq!(
            route(&head("PATCH", "/mcp"), &cfg),
            Route::McpMethodNotAllowed
        );
        assert_eq!(route(&head("HEAD", "/mcp"), &cfg), Route::McpStream);
        assert_eq!(route(&head("OPTIONS", "/mcp"), &cfg), Route::McpOptions);
        assert_eq!(route(&head("CONNECT", ""), &cfg), Route::Connect);
        // Every reading servers apply to the endpoint's path, and the method's case.
        for p in [
            "/MCP",
            "/Mcp/",
            "/mcp;v=1",
            "/mcp.",
            "/mcp..",
            "/MCP;JSESSIONID=1/",
            "/mcp/.",
            "/./mcp",
        ] {
            assert_eq!(route(&head("POST", p), &cfg), Route::Mcp, "{p}");
        }
        assert_eq!(route(&head("post", "/mcp"), &cfg), Route::Mcp);
        assert_eq!(route(&head("Get", "/mcp"), &cfg), Route::McpStream);
        // `//mcp` has two readings: refused by the HTTP normalizer (400), never judged as HTTP.
        assert_eq!(route(&head("POST", "//mcp"), &cfg), Route::Http);
        assert!(http::normalize_target_path("//mcp", false).is_err());
        let literal = NormalizeConfig {
            literal_path_hosts: vec!["mcp.local".into()],
            ..NormalizeConfig::default()
        };
        assert_eq!(route(&head("POST", "//mcp"), &literal), Route::Mcp);
        // The legacy HTTP+SSE message endpoint.
        assert_eq!(
            route(&head("POST", "/messages?sessionId=abc"), &cfg),
            Route::McpLegacy
        );
        assert_eq!(
            route(&head("POST", "/Messages/?session_id=abc"), &cfg),
            Route::McpLegacy
        );
        // Its event stream is an MCP stream, except in header-only mode.
        assert_eq!(route(&head("GET", "/sse"), &cfg), Route::McpStream);
        assert_eq!(route(&head("HEAD", "/SSE/"), &cfg), Route::McpStream);
        assert_eq!(route(&head("POST", "/sse"), &cfg), Route::McpLegacy);
        let header_only = NormalizeConfig {
            mcp_paths: Vec::new(),
            ..NormalizeConfig::default()
        };
        assert_eq!(route(&head("GET", "/sse"), &header_only), Route::McpLegacy);
        assert_eq!(route(&head("POST", "/m%2fcp"), &cfg), Route::Http);
        // A forward proxy's absolute-form target reaches the MCP normalizer too.
        assert_eq!(
            route(&head("POST", "http://mcp.example/mcp"), &cfg),
            Route::Mcp
        );
        assert_eq!(
            route(&head("POST", "https://mcp.example:8443/x"), &cfg),
            Route::Http
        );
    }

    #[test]
    fn configured_mcp_paths() {
        let cfg = NormalizeConfig {
            mcp_paths: vec!["/v2/mcp".into(), "/tools/".into()],
            ..NormalizeConfig::default()
        };
        assert_eq!(route(&head("POST", "/v2/mcp"), &cfg), Route::Mcp);
        assert_eq!(route(&head("POST", "/mcp"), &cfg), Route::Http);
        assert_eq!(route(&head("POST", "/tools/x"), &cfg), Route::Mcp);
        // Routers that ignore a trailing slash (Starlette redirects, ASP.NET Core) serve `/tools`
        // at `/tools/`.
        assert_eq!(route(&head("POST", "/tools"), &cfg), Route::Mcp);
        assert_eq!(route(&head("POST", "/toolsx"), &cfg), Route::Http);
        let none = NormalizeConfig {
            mcp_paths: vec![],
            ..NormalizeConfig::default()
        };
        assert_eq!(route(&head("POST", "/mcp"), &none), Route::Http);
    }

    #[test]
    fn path_readings_cover_case_parameters_and_dots() {
        assert!(path_readings("/admin/x").is_empty());
        assert_eq!(path_readings("/ADMIN"), vec!["/admin".to_owned()]);
        assert_eq!(path_readings("/admin;x=1"), vec!["/admin".to_owned()]);
        assert_eq!(path_readings("/admin./x"), vec!["/admin/x".to_owned()]);
        let all = path_readings("/Admin.;a=b/X");
        for want in [
            "/admin.;a=b/x",
            "/Admin./X",
            "/admin./x",
            "/Admin/X",
            "/admin/x",
        ] {
            assert!(all.contains(&want.to_owned()), "{want} in {all:?}");
        }
    }

    #[test]
    fn jsonrpc_bodies_are_found_anywhere() {
        let cfg = NormalizeConfig::default();
        let yes: &[&[u8]] = &[
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
            br#"  [{"a":1},{"JSONRPC":"2.0","method":"ping","id":2}]"#,
            br#"{"json\u0072pc":"2.0"}"#,
            // JSON-RPC 1.0 does not name itself.
            br#"{"method":"tools/call","params":{"name":"x"},"id":1}"#,
        ];
        for b in yes {
            assert_eq!(
                is_jsonrpc_body(b, &cfg),
                Ok(true),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        let no: &[&[u8]] = &[
            b"",
            b"hello",
            // A payment API's `method` is not a call.
            br#"{"method":"card","amount":5}"#,
            br#"{"a":1}"#,
            b"[1,2]",
            br#"{"a":"jsonrpc"}"#,
        ];
        for b in no {
            assert_eq!(
                is_jsonrpc_body(b, &cfg),
                Ok(false),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        // Looks like JSON-RPC but is not strict JSON: refused, a lenient server may read it.
        for b in [
            &b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#,
            br#"{"jsonrpc":"2.0","jsonrpc":"2.0"}"#,
            br#"{"jsonrpc":"2.0","Method":"a","method":"b"}"#,
        ] {
            let r = is_jsonrpc_body(b, &cfg).unwrap_err();
            assert_eq!(r.http_status, 400, "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn body_encodings_other_than_identity_are_refused() {
        let mut h = head("POST", "/mcp");
        assert!(check_body_encoding(&h, b"{}").is_ok());
        h.headers
            .push(("content-encoding".into(), "identity".into()));
        assert!(check_body_encoding(&h, b"{}").is_ok());
        for enc in [
            "gzip",
            "deflate",
            "br",
            "identity, gzip",
            "GZIP",
            "x-custom",
        ] {
            h.headers[0].1 = enc.into();
            assert_eq!(
                check_body_encoding(&h, b"{}").unwrap_err().http_status,
                415,
                "{enc}"
            );
        }
        let mut h = head("POST", "/x");
        h.headers
            .push(("content-type".into(), "text/plain; charset=UTF-16LE".into()));
        assert_eq!(check_body_encoding(&h, b"{}").unwrap_err().http_status, 415);
        for foreign in ["utf-7", "utf16", "ucs2", "cp037", "\"utf-8;x\""] {
            h.headers[0].1 = format!("application/json; charset={foreign}");
            assert_eq!(
                check_body_encoding(&h, b"{}").unwrap_err().http_status,
                415,
                "{foreign}"
            );
        }
        h.headers[0].1 = "application/json; charset=utf-8".into();
        assert!(check_body_encoding(&h, b"{}").is_ok());
        // Two content types: the server may take either.
        h.headers.push((
            "Content-Type".into(),
            "application/json; charset=utf-7".into(),
        ));
        assert_eq!(check_body_encoding(&h, b"{}").unwrap_err().http_status, 415);
        h.headers[1].1 = "APPLICATION/JSON; charset=utf-8".into();
        assert!(check_body_encoding(&h, b"{}").is_ok(), "the same one twice");
        h.headers.truncate(1);
        assert_eq!(
            check_body_encoding(&h, b"\xFF\xFE{\x00")
                .unwrap_err()
                .http_status,
            415
        );
    }

    #[test]
    fn head_scan_reads_path_query_and_headers() {
        let mut h = head("GET", "/x?key=AKIA%49OSFODNN7EXAMPLE");
        assert!(
            head_scan(&h).risk().secrets,
            "percent-escaped key in the query"
        );
        h.path = "/AKIAIOSFODNN7EXAMPLE/x".into();
        assert!(head_scan(&h).risk().secrets, "key in the path");
        h.path = "/x".into();
        h.headers.push((
            "x-data".into(),
            "ghp_0123456789abcdefghijABCDEFGHIJ0123456789".into(),
        ));
        assert!(head_scan(&h).risk().secrets, "key in a header");
        h.headers[0] = (
            "authorization".into(),
            "Bearer abcdefghijklmnopqrstuvwxyz".into(),
        );
        h.headers
            .push(("mcp-param-email".into(), "jane@example.com".into()));
        let r = head_scan(&h).risk();
        assert!(!r.secrets, "credential headers are meant for the server");
        assert_eq!(r.data_classes, vec!["pii".to_owned()]);
    }

    #[test]
    fn session_ids_must_be_visible_ascii() {
        let mut h = head("POST", "/mcp");
        h.headers.push(("mcp-session-id".into(), "abc-123".into()));
        assert_eq!(session_id(&h).as_deref(), Some("abc-123"));
        for bad in ["", "a b", "caf\u{e9}", &"x".repeat(257)] {
            h.headers[0].1 = bad.to_owned();
            assert_eq!(session_id(&h), None, "{bad}");
        }
    }

    #[test]
    fn body_buffer_limit() {
        let mut b = BodyBuffer::new(4);
        assert!(b.push(b"ab").is_ok());
        assert!(b.push(b"cd").is_ok());
        let e = b.push(b"e").unwrap_err();
        assert_eq!(e.http_status, 413);
        assert_eq!(b.as_bytes(), b"abcd");
    }

    #[test]
    fn traceparent() {
        let mut h = head("GET", "/");
        h.headers.push((
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ));
        assert_eq!(
            trace_id(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.headers[0].1 = "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into();
        assert_eq!(trace_id(&h), None);
        h.headers[0].1 = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".into();
        assert_eq!(trace_id(&h), None);
    }
}
