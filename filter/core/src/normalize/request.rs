//! A whole request as its actions: the route and the body (when read) decide together what the
//! request is. A JSON-RPC body is MCP wherever it goes; a body the filter cannot read (compressed)
//! is refused; a body on a body-less MCP request is refused; every argument spelling the pack
//! could read differently is refused ([`check_argument_spelling`]).

use bundle::action::Action;

use super::{
    JsonRpcId, McpMessageKind, NormalizeConfig, Refusal, RequestHead, Route,
    check_argument_spelling, check_body_encoding, is_jsonrpc_body, is_modern, normalize_http,
    normalize_mcp, normalize_mcp_found, normalize_mcp_headers_only, printable,
};

/// What kind of request the actions came from.
#[derive(Clone, Debug)]
pub enum Shape {
    /// An MCP POST: one entry per JSON-RPC message.
    Mcp {
        /// Sent as a JSON-RPC batch.
        batch: bool,
        /// Each message's id and kind, in order.
        msgs: Vec<(Option<JsonRpcId>, McpMessageKind)>,
        /// Each message's MRTR `requestState`, in order.
        request_states: Vec<Option<String>>,
        /// Each message's `taskId` (`tasks/*`), in order.
        task_ids: Vec<Option<String>>,
        /// The request is of a 2026-07-28 (or later) protocol version.
        modern: bool,
    },
    /// An MCP GET stream / DELETE (headers only).
    McpHeaders,
    /// Plain HTTP.
    Http {
        /// The body was buffered (and is in `Input::body`).
        body_buffered: bool,
        /// The request carries a body at all.
        has_body: bool,
    },
}

/// The actions of a request, with its shape.
pub type Actions = (Shape, Vec<Action>);

/// Turn a request into its actions. `route` is what its head says, `body` what was read of it
/// (`None`: not read), `body_expected` whether one follows the headers, `arg_names` the argument
/// names the pack reads (`(folded, as written)`). Returns the route the request is answered on
/// ([`Route::Mcp`] once a JSON-RPC body was found elsewhere), with the actions or the refusal.
pub fn request(
    head: &RequestHead,
    route: Route,
    body: Option<&[u8]>,
    body_expected: bool,
    norm: &NormalizeConfig,
    arg_names: &[(String, String)],
) -> (Route, Result<Actions, Refusal>) {
    if let Some(b) = body.filter(|b| !b.is_empty())
        && let Err(r) = check_body_encoding(head, b)
    {
        return (route, Err(r));
    }
    if route != Route::Http
        && route != Route::Connect
        && let Some(proto) = super::tunnel_upgrade(head)
    {
        // An MCP endpoint speaks HTTP requests; after a protocol switch nothing the filter could
        // read would pass through it (docs/filter-normalization.md, "Tunnels").
        return (
            route,
            Err(Refusal::bad_http(format!(
                "an MCP endpoint does not switch protocols (`upgrade: {}`): the filter cannot \
                 read what would follow",
                super::printable(proto)
            ))),
        );
    }
    if let Some(proto) = super::tunnel_upgrade(head)
        && declares_body(head)
    {
        // A request that switches protocols is decided on its headers (its tunnel never ends as
        // a body does), so a body it carries is never read: a server that switches reads it as
        // tunnel data, one that ignores the upgrade (HTTP lets it) as the request's body, to
        // act on (docs/filter-normalization.md, "Tunnels"). No websocket handshake has one.
        return (
            route,
            Err(Refusal::bad_http(format!(
                "the request switches protocols (`upgrade: {}`) and carries a body, which a \
                 server that ignores the upgrade acts on and the filter cannot read",
                super::printable(proto)
            ))),
        );
    }
    let found_mcp = match (route, body) {
        (Route::Http | Route::McpLegacy | Route::Connect, Some(b)) => {
            match is_jsonrpc_body(b, norm) {
                Ok(found) => found,
                Err(r) => return (route, Err(r)),
            }
        }
        _ => false,
    };
    // Answered as JSON-RPC from here on, like any MCP POST. A legacy message endpoint fronts the
    // configured MCP server (as its event stream does); JSON-RPC found anywhere else goes to the
    // host it names.
    let elsewhere = found_mcp && route != Route::McpLegacy;
    let route = if found_mcp { Route::Mcp } else { route };
    (
        route,
        actions(head, route, elsewhere, body, body_expected, norm, arg_names),
    )
}

/// Whether the head announces a body: a `content-length` other than 0, or any
/// `transfer-encoding` (the body's length is then unknown, never none).
fn declares_body(head: &RequestHead) -> bool {
    head.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding")
            || (n.eq_ignore_ascii_case("content-length") && v.trim() != "0")
    })
}

/// [`request`] once the route is known.
fn actions(
    head: &RequestHead,
    route: Route,
    found_elsewhere: bool,
    body: Option<&[u8]>,
    body_expected: bool,
    norm: &NormalizeConfig,
    arg_names: &[(String, String)],
) -> Result<Actions, Refusal> {
    let (shape, actions) = match route {
        Route::Mcp => {
            let bytes = body.unwrap_or_default();
            let req = if found_elsewhere {
                normalize_mcp_found(head, bytes, norm)?
            } else {
                normalize_mcp(head, bytes, norm)?
            };
            for m in &req.messages {
                check_argument_spelling(&m.action.arguments, arg_names, m.id.as_ref())?;
            }
            let msgs = req
                .messages
                .iter()
                .map(|m| (m.id.clone(), m.kind))
                .collect();
            let request_states = req
                .messages
                .iter()
                .map(|m| m.request_state.clone())
                .collect();
            let task_ids = req.messages.iter().map(|m| m.task_id.clone()).collect();
            let modern = req.protocol_version.as_deref().is_some_and(is_modern);
            let actions = req.messages.into_iter().map(|m| m.action).collect();
            (
                Shape::Mcp {
                    batch: req.batch,
                    msgs,
                    request_states,
                    task_ids,
                    modern,
                },
                actions,
            )
        }
        Route::McpStream | Route::McpDelete | Route::McpOptions => {
            if body.is_some_and(|b| !b.is_empty()) {
                return Err(Refusal::bad_http(format!(
                    "a `{}` request to the mcp endpoint must not carry a body (only POST does)",
                    printable(&head.method)
                )));
            }
            let a = normalize_mcp_headers_only(head, route, norm)?;
            (Shape::McpHeaders, vec![a])
        }
        Route::McpMethodNotAllowed => return Err(Refusal::method_not_allowed(&head.method)),
        Route::Http | Route::McpLegacy | Route::Connect => {
            let a = normalize_http(head, body, norm)?;
            check_argument_spelling(&a.arguments, arg_names, None)?;
            if !arg_names.is_empty() {
                // The query's fields are arguments too (`query.rs`), and field names nest
                // (`nesting.rs`: `User[Role]`), bound without case by the same servers.
                for args in super::readings::parameter_readings(&a) {
                    check_argument_spelling(&args, arg_names, None)?;
                }
            }
            let has_body = body_expected || body.is_some_and(|b| !b.is_empty());
            (
                Shape::Http {
                    body_buffered: body.is_some(),
                    has_body,
                },
                vec![a],
            )
        }
    };
    Ok((shape, actions))
}
