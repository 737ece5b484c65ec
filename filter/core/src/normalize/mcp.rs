//! MCP JSON-RPC (Streamable HTTP) normalization: one action per JSON-RPC message.
//!
//! Covers every MCP version the filter knows (2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28):
//! the method is the operation, whatever it is (unknown methods are normalized too; the policy's
//! default denies them). Per method:
//!
//! | method | read from `params` | action fields |
//! |---|---|---|
//! | `tools/call` | `name` (string, required), `arguments` (object, optional) | `tool`, `arguments` |
//! | `prompts/get` | `name` (string, required), `arguments` (object, optional) | `prompt`, `arguments` |
//! | `resources/read`, `resources/subscribe`, `resources/unsubscribe` | `uri` (string, required) | `resource` |
//! | `completion/complete` | `ref` (`ref/prompt` name or `ref/resource` uri), `argument` | `prompt` or `resource`, `arguments` |
//! | anything else | nothing | `arguments` is `null` |
//! | a response (no `method`) | `result` or `error` | operation `response`, `arguments` = the result (or error) |

use base64::Engine as _;
use bundle::action::{Action, IntentSource, Kind};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{
    JsonRpcId, McpMessage, McpMessageKind, McpRequest, Method, NOTIFICATION_PREFIX,
    NormalizeConfig, Refusal, RequestHead, Route, http, json, policy_headers, risk,
};

/// The `_meta` key carrying the protocol version in 2026-07-28 requests.
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key carrying the client's capabilities in 2026-07-28 requests (required).
const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// Normalize a complete MCP POST body (one JSON-RPC message, or a batch when the config allows
/// it). Every bad input gets a [`Refusal`]; see `docs/filter-normalization.md` for the table.
pub fn normalize_mcp(
    head: &RequestHead,
    body: &[u8],
    cfg: &NormalizeConfig,
) -> Result<McpRequest, Refusal> {
    normalize_mcp_at(head, body, cfg, false)
}

/// Normalize a JSON-RPC body found on a request that is not addressed to a configured MCP path
/// (egress, a legacy message endpoint, any path): the same rules as [`normalize_mcp`]; the server
/// is the host it goes to.
pub fn normalize_mcp_found(
    head: &RequestHead,
    body: &[u8],
    cfg: &NormalizeConfig,
) -> Result<McpRequest, Refusal> {
    normalize_mcp_at(head, body, cfg, true)
}

fn normalize_mcp_at(
    head: &RequestHead,
    body: &[u8],
    cfg: &NormalizeConfig,
    found: bool,
) -> Result<McpRequest, Refusal> {
    if body.len() > cfg.max_body_bytes {
        return Err(Refusal::too_large(cfg.max_body_bytes));
    }
    let mut parsed = json::parse(body, cfg.max_json_depth).map_err(|e| match e {
        e if e.is_ambiguous() => Refusal::invalid_request(e.reason(), None),
        _ => Refusal::parse_error(e.reason()),
    })?;
    let mut base = base_action(head, cfg)?;
    if found {
        base.target.server = base.target.host.clone();
    }
    let scan = super::head_scan(head);
    let header_version = head.header("mcp-protocol-version").map(str::to_owned);
    let members = std::mem::take(&mut parsed.members);
    // Each message's arguments (or result) are moved out of the parsed value into its action,
    // not copied; what is checked after `message` (routing headers, protocol version) never
    // reads them.
    match &mut parsed.value {
        Value::Array(items) => {
            if !cfg.allow_batches {
                return Err(Refusal::invalid_request(
                    "json-rpc batches are not supported",
                    None,
                ));
            }
            if items.is_empty() {
                return Err(Refusal::invalid_request("empty json-rpc batch", None));
            }
            if items.len() > cfg.max_batch_len {
                return Err(Refusal::invalid_request(
                    format!(
                        "json-rpc batch has more than {} messages",
                        cfg.max_batch_len
                    ),
                    None,
                ));
            }
            if head.headers.iter().any(|(n, _)| {
                let n = n.to_ascii_lowercase();
                n == "mcp-method" || n == "mcp-name" || n.starts_with("mcp-param-")
            }) {
                return Err(Refusal::header_mismatch(
                    "mcp-method / mcp-name / mcp-param-* headers cannot describe a batch",
                    None,
                ));
            }
            let mut messages = Vec::with_capacity(items.len());
            for (i, item) in items.iter_mut().enumerate() {
                let size = parsed.element_spans.get(i).map_or(0, |r| r.len());
                let texts = Texts::of(&members, body, i);
                messages.push(message(item, size, &base, scan, &texts)?);
            }
            let protocol_version = protocol_version(header_version, &messages, items)?;
            if protocol_version.as_deref().is_some_and(is_modern) {
                return Err(Refusal::invalid_request(
                    "json-rpc batches are not part of mcp 2026-07-28",
                    None,
                ));
            }
            Ok(McpRequest {
                batch: true,
                messages,
                protocol_version,
            })
        }
        v => {
            let texts = Texts::of(&members, body, 0);
            let msg = message(v, body.len(), &base, scan, &texts)?;
            check_routing_headers(head, v, &msg)?;
            let messages = vec![msg];
            let protocol_version =
                protocol_version(header_version, &messages, std::slice::from_ref(v))?;
            if let (Some(version), Some(msg)) = (protocol_version.as_deref(), messages.first())
                && is_modern(version)
            {
                check_modern_request(head, v, msg)?;
            }
            Ok(McpRequest {
                batch: false,
                messages,
                protocol_version,
            })
        }
    }
}

/// Normalize a body-less MCP request: GET or HEAD (operation `stream/open`, the client opens its
/// SSE stream), DELETE (`session/delete`) or OPTIONS (`http/options`). Any other route is an
/// internal error (500).
pub fn normalize_mcp_headers_only(
    head: &RequestHead,
    route: Route,
    cfg: &NormalizeConfig,
) -> Result<Action, Refusal> {
    let Some(operation) = route.header_only_operation() else {
        return Err(Refusal {
            http_status: 500,
            jsonrpc_code: Some(-32603),
            reason: "internal error: route needs a body normalizer".to_owned(),
            id: None,
        });
    };
    let mut action = base_action(head, cfg)?;
    action.operation = operation.to_owned();
    action.risk = super::head_scan(head).risk();
    Ok(action)
}

/// Fields every message of this request shares: target, headers, session, trace, intent.
fn base_action(head: &RequestHead, cfg: &NormalizeConfig) -> Result<Action, Refusal> {
    Ok(Action {
        kind: Kind::Mcp,
        target: http::mcp_target(head, cfg)?,
        headers: policy_headers(head).into(),
        session_id: super::session_id(head),
        trace_id: super::trace_id(head),
        declared_intent: head.header("x-portcullis-intent").map(str::to_owned),
        intent_source: if head.header("x-portcullis-intent").is_some() {
            IntentSource::Header
        } else {
            IntentSource::None
        },
        ..Action::default()
    })
}

fn read_id(obj: &Map<String, Value>) -> Result<Option<JsonRpcId>, Refusal> {
    match obj.get("id") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(JsonRpcId::Str(s.clone()))),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(JsonRpcId::Num(i))),
            None => Err(Refusal::invalid_request(
                "json-rpc id must be a string or an integer",
                None,
            )),
        },
        Some(_) => Err(Refusal::invalid_request(
            "json-rpc id must be a string or an integer",
            None,
        )),
    }
}

/// Members of a JSON-RPC message the filter reads.
const ENVELOPE_KEYS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
/// Members of `params` the filter reads (for some method).
const PARAMS_KEYS: &[&str] = &[
    "name",
    "arguments",
    "uri",
    "ref",
    "argument",
    "_meta",
    "protocolVersion",
    "requestState",
    "inputResponses",
    "taskId",
];

/// Refuse a member spelled in another case than one the filter reads (`Params`, `NAME`,
/// `paramſ`): the filter would not see it, and a server that matches members without case
/// would act on it. (Two members of one object that differ only in case are already refused by
/// the parser.)
fn check_spelling(
    obj: &Map<String, Value>,
    known: &[&str],
    where_: &str,
    id: &Option<JsonRpcId>,
) -> Result<(), Refusal> {
    for k in obj.keys() {
        if known.contains(&k.as_str()) {
            continue;
        }
        let folded = json::fold_key(k);
        if let Some(canonical) = known.iter().find(|c| json::fold_key(c) == folded) {
            return Err(Refusal::invalid_request(
                // A server that ignores case reads it as the member the filter reads.
                format!(
                    "{where_} member `{}` must be spelled `{canonical}`",
                    super::printable(k)
                ),
                id.clone(),
            ));
        }
    }
    Ok(())
}

/// The received text of the members of one message that can become its action's arguments.
struct Texts<'b> {
    arguments: Option<&'b [u8]>,
    argument: Option<&'b [u8]>,
    result: Option<&'b [u8]>,
    error: Option<&'b [u8]>,
}

impl<'b> Texts<'b> {
    fn of(spans: &[json::MemberSpan], body: &'b [u8], message: usize) -> Self {
        let t = |m| json::member_text(spans, body, message, m);
        Texts {
            arguments: t(json::Member::Arguments),
            argument: t(json::Member::Argument),
            result: t(json::Member::Result),
            error: t(json::Member::Error),
        }
    }
}

fn message(
    v: &mut Value,
    size: usize,
    base: &Action,
    mut scan: risk::Scan,
    texts: &Texts<'_>,
) -> Result<McpMessage, Refusal> {
    let Value::Object(obj) = v else {
        return Err(Refusal::invalid_request(
            "json-rpc message must be an object",
            None,
        ));
    };
    let id = read_id(obj)?;
    check_spelling(obj, ENVELOPE_KEYS, "json-rpc", &id)?;
    if let Some(Value::Object(params)) = obj.get("params") {
        check_spelling(params, PARAMS_KEYS, "`params`", &id)?;
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Refusal::invalid_request(
            "json-rpc message must have `jsonrpc: \"2.0\"`",
            id,
        ));
    }
    if obj.get("params").is_some_and(|p| !p.is_object()) {
        return Err(Refusal::invalid_request(
            "json-rpc `params` must be an object",
            id,
        ));
    }
    let mut action = base.clone();
    action.size = u64::try_from(size).unwrap_or(u64::MAX);
    let kind = match obj.get("method") {
        Some(Value::String(method)) => {
            if method.is_empty() {
                return Err(Refusal::invalid_request("json-rpc `method` is empty", id));
            }
            if obj.contains_key("result") || obj.contains_key("error") {
                return Err(Refusal::invalid_request(
                    "json-rpc message has both `method` and `result`/`error`",
                    id,
                ));
            }
            let kind = if id.is_some() {
                McpMessageKind::Request
            } else if method.starts_with(NOTIFICATION_PREFIX) {
                McpMessageKind::Notification
            } else {
                return Err(Refusal::invalid_request(
                    format!("json-rpc request `{}` has no id", super::printable(method)),
                    None,
                ));
            };
            action.operation = method.clone();
            let params = obj.get_mut("params").and_then(Value::as_object_mut);
            method_fields(params, &mut action, &id)?;
            // The text the arguments were moved out of (see `method_fields`), for the digest.
            let text = match Method::from_name(&action.operation) {
                Some(Method::ToolsCall | Method::PromptsGet) => texts.arguments,
                Some(Method::CompletionComplete) if action.arguments.is_object() => texts.argument,
                _ => None,
            };
            action.arguments_sha256 = text.map(|t| Sha256::digest(t).into());
            kind
        }
        Some(_) => {
            return Err(Refusal::invalid_request(
                "json-rpc `method` must be a string",
                id,
            ));
        }
        None => {
            if id.is_none() {
                return Err(Refusal::invalid_request(
                    "json-rpc message has neither `method` nor `id`",
                    None,
                ));
            }
            let payload = match (obj.get("result"), obj.get("error")) {
                (Some(r), None) => {
                    action.arguments_sha256 = texts.result.map(|t| Sha256::digest(t).into());
                    r.clone()
                }
                (None, Some(e @ Value::Object(_))) => {
                    action.arguments_sha256 = texts.error.map(|t| Sha256::digest(t).into());
                    e.clone()
                }
                (None, Some(_)) => {
                    return Err(Refusal::invalid_request(
                        "json-rpc `error` must be an object",
                        id,
                    ));
                }
                _ => {
                    return Err(Refusal::invalid_request(
                        "json-rpc response must have exactly one of `result` and `error`",
                        id,
                    ));
                }
            };
            action.operation = "response".to_owned();
            action.arguments = payload;
            McpMessageKind::Response
        }
    };
    // Everything the message carries is scanned: the arguments (or the result a client posts
    // back), and every other param (`_meta`, notification params), on top of what the request
    // carries outside its body.
    scan.value(&action.arguments);
    for (k, v) in obj.iter() {
        // `result` / `error` were copied into the arguments: scanned above.
        if k != "result" && k != "error" {
            scan.text(k);
            scan.value(v);
        }
    }
    action.risk = scan.risk();
    let request_state = match obj.get("params").and_then(|p| p.get("requestState")) {
        None => None,
        Some(Value::String(s)) if kind == McpMessageKind::Request => Some(s.clone()),
        Some(_) => {
            return Err(Refusal::invalid_params(
                "`params.requestState` must be a string, on a request",
                id,
            ));
        }
    };
    let task_id = match Method::from_name(&action.operation) {
        Some(m) if m.is_task() && kind == McpMessageKind::Request => {
            let params = obj.get("params").and_then(Value::as_object);
            Some(required_str(params, "taskId", &action.operation, &id)?.to_owned())
        }
        _ => None,
    };
    Ok(McpMessage {
        id,
        action,
        kind,
        request_state,
        task_id,
    })
}

/// A resource URI servers resolve one way only (`http::resource_reading`): refused (-32602)
/// when its path reads two ways.
fn readable_uri(uri: &str, id: &Option<JsonRpcId>) -> Result<(), Refusal> {
    super::http::resource_reading(uri)
        .map(|_| ())
        .map_err(|why| {
            Refusal::invalid_params(
                format!("resource uri `{}`: {why}", super::printable(uri)),
                id.clone(),
            )
        })
}

fn required_str<'a>(
    params: Option<&'a Map<String, Value>>,
    key: &str,
    method: &str,
    id: &Option<JsonRpcId>,
) -> Result<&'a str, Refusal> {
    match params.and_then(|p| p.get(key)) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(Refusal::invalid_params(
            format!("`{method}` needs `params.{key}` as a string"),
            id.clone(),
        )),
    }
}

/// `params.<key>` as an object (or null), moved out of `params`.
fn optional_object(
    params: Option<&mut Map<String, Value>>,
    key: &str,
    method: &str,
    id: &Option<JsonRpcId>,
) -> Result<Value, Refusal> {
    match params.and_then(|p| p.get_mut(key)) {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(v @ Value::Object(_)) => Ok(std::mem::take(v)),
        Some(_) => Err(Refusal::invalid_params(
            format!("`{method}` `params.{key}` must be an object"),
            id.clone(),
        )),
    }
}

/// The fields of `action` its method (`action.operation`) reads from `params`; arguments are
/// moved out of `params`.
fn method_fields(
    params: Option<&mut Map<String, Value>>,
    action: &mut Action,
    id: &Option<JsonRpcId>,
) -> Result<(), Refusal> {
    let method = action.operation.as_str();
    match Method::from_name(method) {
        Some(Method::ToolsCall) => {
            action.tool = Some(required_str(params.as_deref(), "name", method, id)?.to_owned());
            action.arguments = optional_object(params, "arguments", method, id)?;
        }
        Some(Method::PromptsGet) => {
            action.prompt = Some(required_str(params.as_deref(), "name", method, id)?.to_owned());
            action.arguments = optional_object(params, "arguments", method, id)?;
        }
        Some(Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe) => {
            let uri = required_str(params.as_deref(), "uri", method, id)?;
            readable_uri(uri, id)?;
            action.resource = Some(uri.to_owned());
        }
        Some(Method::CompletionComplete) => {
            if let Some(Value::Object(r)) = params.as_deref().and_then(|p| p.get("ref")) {
                match (
                    r.get("type").and_then(Value::as_str),
                    r.get("name"),
                    r.get("uri"),
                ) {
                    (Some("ref/prompt"), Some(Value::String(n)), _) => {
                        action.prompt = Some(n.clone());
                    }
                    (Some("ref/resource"), _, Some(Value::String(u))) => {
                        readable_uri(u, id)?;
                        action.resource = Some(u.clone());
                    }
                    _ => {}
                }
            }
            if let Some(a @ Value::Object(_)) = params.and_then(|p| p.get_mut("argument")) {
                action.arguments = std::mem::take(a);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The protocol versions that open a session with the `initialize` handshake; any other version
/// (2026-07-28, and any later or unknown one) is held to the 2026-07-28 rules: required `_meta`
/// fields, required routing headers, no batches.
const HANDSHAKE_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// Whether a request of this protocol version is held to the 2026-07-28 rules (an unknown
/// version is: the stricter reading).
pub(crate) fn is_modern(version: &str) -> bool {
    !HANDSHAKE_VERSIONS.contains(&version.trim())
}

/// The routing headers of 2026-07-28 the filter compares with the body (lowercase names).
fn is_routing_header(lower: &str) -> bool {
    lower == "mcp-method"
        || lower == "mcp-name"
        || lower == "mcp-protocol-version"
        || lower.starts_with("mcp-param-")
}

/// The sentinel that marks a base64 header value (2026-07-28, "Value Encoding"); exact and
/// lowercase.
const SENTINEL_PREFIX: &str = "=?base64?";
const SENTINEL_SUFFIX: &str = "?=";

/// Decode an `Mcp-Name` / `Mcp-Param-*` header value: plain, or `=?base64?<standard base64 of
/// UTF-8>?=`. Refused (the reason): a sentinel that does not decode to UTF-8, the sentinel
/// spelled in another case (a server that matches it without case would decode what the filter
/// read as plain text), and a plain value with characters a header value cannot carry verbatim
/// (anything outside visible ASCII, space and tab).
fn decode_header_value(v: &str) -> Result<String, &'static str> {
    if let Some(b64) = v
        .strip_prefix(SENTINEL_PREFIX)
        .and_then(|r| r.strip_suffix(SENTINEL_SUFFIX))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "has an invalid base64 value")?;
        return String::from_utf8(bytes).map_err(|_| "has an invalid base64 value (not utf-8)");
    }
    let head = v.get(..SENTINEL_PREFIX.len()).unwrap_or("");
    if head.eq_ignore_ascii_case(SENTINEL_PREFIX) {
        return Err("spells the base64 sentinel in another case (it must be `=?base64?`)");
    }
    if !v.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
        return Err("has characters a plain header value cannot carry (use the base64 form)");
    }
    Ok(v.to_owned())
}

/// 2026-07-28 routing headers must agree with the body (the body is the truth; a disagreement is
/// the spec's `HeaderMismatchError`, -32020 with 400): `Mcp-Method` with `method`; `Mcp-Name`
/// with `params.name` (tools/call, prompts/get, others with a name) or `params.uri`
/// (resources); each `Mcp-Param-*` with the argument it mirrors ([`mirrors_argument`]). A routing
/// header sent twice is refused (a proxy or server may join the copies, or read either one).
fn check_routing_headers(
    head: &RequestHead,
    body: &Value,
    msg: &McpMessage,
) -> Result<(), Refusal> {
    let id = msg.id.clone();
    let body_method = body.get("method").and_then(Value::as_str);
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in &head.headers {
        let name = name.to_ascii_lowercase();
        if !is_routing_header(&name) {
            continue;
        }
        if seen.contains(&name) {
            return Err(Refusal::header_mismatch(
                format!(
                    "`{}` header appears more than once",
                    super::printable(&name)
                ),
                id,
            ));
        }
        seen.push(name.clone());
        if name == "mcp-method" {
            if body_method != Some(value.trim()) {
                return Err(Refusal::header_mismatch(
                    "`mcp-method` header does not match the json-rpc method",
                    id,
                ));
            }
        } else if name == "mcp-name" {
            let decoded = decode_header_value(value.trim()).map_err(|why| {
                Refusal::header_mismatch(format!("`mcp-name` header {why}"), id.clone())
            })?;
            let params = body.get("params");
            let by_name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
            let by_uri = params.and_then(|p| p.get("uri")).and_then(Value::as_str);
            let by_task = params.and_then(|p| p.get("taskId")).and_then(Value::as_str);
            let expected = match body_method {
                Some(m) if m.starts_with("resources/") => by_uri,
                Some(m) => match Method::from_name(m) {
                    Some(Method::ToolsCall | Method::PromptsGet) => by_name,
                    Some(t) if t.is_task() => by_task,
                    _ => by_name.or(by_uri),
                },
                None => None,
            };
            if expected != Some(decoded.as_str()) {
                return Err(Refusal::header_mismatch(
                    "`mcp-name` header does not match the name or uri in the body",
                    id,
                ));
            }
        } else if let Some(param) = name.strip_prefix("mcp-param-") {
            let shown = super::printable(&name);
            if param.is_empty() {
                return Err(Refusal::header_mismatch(
                    "an `mcp-param-` header must name a parameter",
                    id,
                ));
            }
            let decoded = decode_header_value(value.trim()).map_err(|why| {
                Refusal::header_mismatch(format!("`{shown}` header {why}"), id.clone())
            })?;
            if !mirrors_argument(&msg.action.arguments, param, &decoded) {
                return Err(Refusal::header_mismatch(
                    format!("`{shown}` header does not match the argument it mirrors in the body"),
                    id,
                ));
            }
        }
    }
    Ok(())
}

/// A 2026-07-28 request (not a notification or a response) carries what the spec requires:
/// `params._meta` with `io.modelcontextprotocol/protocolVersion` (a string) and
/// `io.modelcontextprotocol/clientCapabilities` (an object), else -32602 with 400 (the spec's
/// answer to a malformed request); and the `Mcp-Protocol-Version` and `Mcp-Method` headers, with
/// `Mcp-Name` on `tools/call`, `resources/read`, `prompts/get` and the `tasks/*` methods (the
/// task id), else -32020 with 400 (a
/// required header missing). Their values were compared with the body before.
fn check_modern_request(head: &RequestHead, body: &Value, msg: &McpMessage) -> Result<(), Refusal> {
    if msg.kind != McpMessageKind::Request {
        return Ok(());
    }
    let meta = body.get("params").and_then(|p| p.get("_meta"));
    let version = meta.and_then(|m| m.get(META_PROTOCOL_VERSION));
    let caps = meta.and_then(|m| m.get(META_CLIENT_CAPABILITIES));
    if !version.is_some_and(Value::is_string) || !caps.is_some_and(Value::is_object) {
        return Err(Refusal::invalid_params(
            format!(
                "an mcp 2026-07-28 request needs `params._meta` with `{META_PROTOCOL_VERSION}` \
                 (a string) and `{META_CLIENT_CAPABILITIES}` (an object)"
            ),
            msg.id.clone(),
        ));
    }
    let mut required = vec!["mcp-protocol-version", "mcp-method"];
    if Method::from_name(&msg.action.operation).is_some_and(|m| {
        m.is_task()
            || matches!(
                m,
                Method::ToolsCall | Method::ResourcesRead | Method::PromptsGet
            )
    }) {
        required.push("mcp-name");
    }
    for name in required {
        if head.header(name).is_none() {
            return Err(Refusal::header_mismatch(
                format!("an mcp 2026-07-28 request needs the `{name}` header"),
                msg.id.clone(),
            ));
        }
    }
    Ok(())
}

/// A primitive argument value as an `Mcp-Param-*` header carries it (decoded): strings as they
/// are, integers in decimal (`1.0` is `1`), booleans as `true` / `false`. `None` for null,
/// arrays, objects and non-integer numbers (2026-07-28 mirrors only strings, integers and
/// booleans).
fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                return Some(n.to_string());
            }
            let f = n.as_f64()?;
            // Integral and exactly representable (the spec's safe integer range).
            let exact = f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0;
            #[expect(
                clippy::cast_possible_truncation,
                reason = "checked above: integral and within +-2^53"
            )]
            exact.then(|| (f as i64).to_string())
        }
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The header value equals the body value's canonical text exactly: `042`, `+42`, `42.0` or
/// `TRUE` are not `42` or `true` (a router reading the header text would read something else
/// than the server executing the body).
fn same_header_value(v: &Value, header: &str) -> bool {
    header_text(v).is_some_and(|t| t == header)
}

/// The argument an `Mcp-Param-<param>` header mirrors: the top-level argument of that name
/// (case ignored), when there is one. Its name is declared by `x-mcp-header` in the tool's
/// schema, which the filter does not read; a header named otherwise must still carry the value
/// of some argument.
fn mirrored<'a>(args: &'a Value, param: &str) -> Option<(&'a String, &'a Value)> {
    let folded = json::fold_key(param);
    args.as_object()?
        .iter()
        .find(|(k, _)| json::fold_key(k) == folded)
}

/// Some value reachable from `v` through object members only (the only paths `x-mcp-header`
/// may annotate: never through an array) equals `header`.
fn any_value(v: &Value, header: &str) -> bool {
    match v {
        Value::Object(m) => m.values().any(|x| any_value(x, header)),
        Value::Array(_) => false,
        _ => same_header_value(v, header),
    }
}

/// Whether an `Mcp-Param-<param>` header value agrees with the body: equal to the argument of
/// its name, or, without one, to some primitive argument value reachable through object members.
/// A header the body does not back is refused (the server, or a router before it, may act on
/// the header).
fn mirrors_argument(args: &Value, param: &str, header: &str) -> bool {
    match mirrored(args, param) {
        Some((_, v)) => same_header_value(v, header),
        None => any_value(args, header),
    }
}

/// Write a header value for an argument: plain when it is visible ASCII without surrounding
/// spaces, else the `=?base64?...?=` form of SEP-2243.
fn encode_header_value(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.starts_with("=?");
    if plain {
        s.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
        )
    }
}

/// After a MODIFY rewrote a single-message body: every `Mcp-Param-*` header that no longer
/// mirrors the (new) arguments is set to the new value of its argument, or removed when the
/// argument is gone or was not found by name. So a redacted or clamped argument never reaches the
/// server in its header copy.
pub fn param_header_edits(head: &RequestHead, new_body: &[u8]) -> Vec<(String, Option<String>)> {
    let params = head
        .headers
        .iter()
        .filter_map(|(n, v)| {
            let lower = n.to_ascii_lowercase();
            lower
                .strip_prefix("mcp-param-")
                .map(|p| (lower.clone(), p.to_owned(), v.clone()))
        })
        .collect::<Vec<_>>();
    if params.is_empty() {
        return Vec::new();
    }
    let body: Value = serde_json::from_slice(new_body).unwrap_or(Value::Null);
    let args = body
        .get("params")
        .and_then(|p| p.get("arguments"))
        .unwrap_or(&Value::Null);
    let mut edits = Vec::new();
    for (name, param, value) in params {
        let decoded = decode_header_value(value.trim()).unwrap_or_default();
        if mirrors_argument(args, &param, &decoded) {
            continue;
        }
        let new = mirrored(args, &param)
            .and_then(|(_, v)| header_text(v))
            .map(|t| encode_header_value(&t));
        edits.push((name, new));
    }
    edits
}

fn meta_version(v: &Value) -> Option<&str> {
    v.get("params")?
        .get("_meta")?
        .get(META_PROTOCOL_VERSION)?
        .as_str()
}

/// The request's protocol version; a header that disagrees with a 2026-07-28 `_meta` version in
/// the body is refused (-32020).
fn protocol_version(
    header: Option<String>,
    messages: &[McpMessage],
    values: &[Value],
) -> Result<Option<String>, Refusal> {
    for (m, v) in messages.iter().zip(values) {
        if let (Some(h), Some(meta)) = (header.as_deref(), meta_version(v))
            && h.trim() != meta
        {
            return Err(Refusal::header_mismatch(
                "`mcp-protocol-version` header does not match `_meta` in the body",
                m.id.clone(),
            ));
        }
    }
    if header.is_some() {
        return Ok(header);
    }
    for v in values {
        if v.get("method")
            .and_then(Value::as_str)
            .is_some_and(|m| Method::Initialize.is(m))
            && let Some(pv) = v
                .get("params")
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
        {
            return Ok(Some(pv.to_owned()));
        }
        if let Some(meta) = meta_version(v) {
            return Ok(Some(meta.to_owned()));
        }
    }
    Ok(None)
}
