//! The per-request state machine (HTTP context): request headers -> (buffer body) -> normalize ->
//! decide -> enforce on the stream; call-out callbacks for DEFER; response headers.
//!
//! Every path ends in exactly one of: the request continues upstream (ALLOW, MODIFY, approved
//! STEP_UP, DEFER resolved to allow, audit/warn), or the filter answers locally and upstream is
//! never contacted (DENY, STEP_UP without approval, DEFER denied, bad input, bad configuration).

use std::rc::Rc;

use bundle::action::{Action, Identity};
use bundle::receipt::{Receipt, ReceiptAction};
use bundle::verdict::{Decision, Verdict};

use crate::config::{BenchCut, ReceiptHeader, SessionKeySource};
use crate::decide::{self, Input, MsgResult, Plan, Shape};
use crate::host::{Host, LogLevel};
use crate::identity;
use crate::normalize::{self, JsonRpcId, McpMessageKind, Refusal, RequestHead, Route};
use crate::plugin::{Loaded, Metric, Plugin};
use crate::respond::{Denial, DenialKind};
use crate::response::{Inspector, Judge};

/// Header carrying receipts (base64url of the receipt JSON; comma-separated for batches).
pub const RECEIPT_HEADER: &str = "x-portcullis-receipt";
/// Header carrying the enforced decision.
pub const DECISION_HEADER: &str = "x-portcullis-decision";
/// Header carrying warn-mode warnings (`rule: reason`, joined by `; `).
pub const WARNING_HEADER: &str = "x-portcullis-warning";
/// Header an agent retries a STEP_UP with.
pub const APPROVAL_HEADER: &str = "x-portcullis-approval";

/// Longest warning header value written.
const MAX_WARNING_BYTES: usize = 2048;

/// What the proxy should do with the stream after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterAction {
    /// Go on (forward headers / body).
    Continue,
    /// Hold the stream (buffering, waiting for a call-out, or answered locally).
    Pause,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Headers,
    Body,
    Waiting,
    /// The request went (or goes) upstream.
    Forwarded,
    /// The filter answered locally.
    Answered,
}

/// A DEFER waiting for its call-out.
#[derive(Debug)]
struct Pending {
    token: u32,
    action: Action,
    verdict: Verdict,
    id: Option<JsonRpcId>,
    answer_with_jsonrpc: bool,
    chain_name: String,
    first_receipt: Option<Receipt>,
}

/// One HTTP stream.
#[derive(Debug)]
pub struct Stream {
    plugin: Rc<Plugin>,
    phase: Phase,
    head: RequestHead,
    route: Route,
    body_expected: bool,
    identity: Identity,
    session: Option<String>,
    approval_token: Option<String>,
    add_to_response: Vec<(String, String)>,
    pending: Option<Pending>,
    /// The response side of an MCP stream: every server-to-agent message is read before the agent
    /// gets it (response.rs).
    inspector: Option<Inspector>,
    /// The receipt JSON written to the filter state (a `result` receipt is appended to it).
    receipt_json: Option<String>,
    /// An allowed legacy `initialize`: the session whose id the server returns in
    /// `mcp-session-id` begins then (the request itself had no session yet), with the intent it
    /// declared pinned. `Some(None)`: no intent, but `session.require_initialize` wants the record.
    begin_session: Option<Option<String>>,
    /// Request body bytes Envoy holds for the filter (the `body_size` of the last body callback,
    /// which paused): what trailers complete.
    request_held: usize,
    /// Response body bytes Envoy holds for the filter: the `body_size` of the last response body
    /// callback when it paused, 0 when it let the data go.
    response_held: usize,
}

fn pseudo(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn head_from(headers: Vec<(String, String)>) -> RequestHead {
    let mut authority = pseudo(&headers, ":authority");
    if authority.is_empty() {
        authority = pseudo(&headers, "host");
    }
    RequestHead {
        method: pseudo(&headers, ":method"),
        scheme: pseudo(&headers, ":scheme"),
        authority,
        path: pseudo(&headers, ":path"),
        headers,
    }
}

/// Longest `x-portcullis-receipt` value; beyond it (large batches) the header carries the receipt
/// ids (hex hashes) instead, and the full receipts are only in the access log.
const MAX_RECEIPT_HEADER_BYTES: usize = 16 * 1024;

/// The receipts as filter state (one JSON line, or a JSON array of them) and as the
/// `x-portcullis-receipt` value `mode` asks for: base64url of each JSON line, comma-separated (the
/// receipt ids instead when that is too long), the receipt ids (hex hashes), or nothing (empty).
fn receipts_out(rs: &[(&Receipt, &str)], mode: ReceiptHeader) -> (Option<String>, String) {
    use base64::Engine as _;
    let json = match rs {
        [] => None,
        [(_, one)] => Some((*one).to_owned()),
        many => Some(format!(
            "[{}]",
            many.iter().map(|(_, l)| *l).collect::<Vec<_>>().join(",")
        )),
    };
    let ids = || {
        rs.iter()
            .map(|(r, _)| bundle::receipt::hash_hex(&r.hash))
            .collect::<Vec<_>>()
            .join(",")
    };
    let header = match mode {
        ReceiptHeader::None => String::new(),
        ReceiptHeader::Id => ids(),
        ReceiptHeader::Full => {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let full = rs
                .iter()
                .map(|(_, l)| b64.encode(l))
                .collect::<Vec<_>>()
                .join(",");
            if full.len() <= MAX_RECEIPT_HEADER_BYTES {
                full
            } else {
                ids()
            }
        }
    };
    (json, header)
}

fn is_mcp_route(route: Route) -> bool {
    matches!(route, Route::Mcp)
}

impl Stream {
    /// A new stream of `plugin`.
    pub fn new(plugin: Rc<Plugin>) -> Self {
        Stream {
            plugin,
            phase: Phase::Headers,
            head: RequestHead::default(),
            route: Route::Http,
            body_expected: false,
            identity: Identity::default(),
            session: None,
            approval_token: None,
            add_to_response: Vec::new(),
            pending: None,
            inspector: None,
            begin_session: None,
            receipt_json: None,
            request_held: 0,
            response_held: 0,
        }
    }

    /// Request headers arrived.
    pub fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> FilterAction {
        if self.phase != Phase::Headers {
            return FilterAction::Continue;
        }
        let plugin = Rc::clone(&self.plugin);
        let headers = host.request_headers();
        self.head = head_from(headers);
        self.body_expected = !end_of_stream;
        let l = match &plugin.loaded {
            Ok(l) => l,
            Err(e) => {
                let route = normalize::route(&self.head, &normalize::NormalizeConfig::default());
                self.route = route;
                let d = Denial::deny("filter:config", e, None);
                self.answer(host, &d, None, is_mcp_route(route), &[]);
                set_state(host, "DENY", "filter:config", "", None);
                plugin.count(host, Metric::Deny);
                return FilterAction::Pause;
            }
        };
        self.approval_token = self
            .head
            .header(APPROVAL_HEADER)
            .map(|t| t.trim().to_owned());
        identity::strip_spoofed_headers(host, &l.cfg.identity, &self.head.headers);
        self.route = normalize::route(&self.head, &l.norm);
        self.identity = identity::identify(host, &l.cfg.identity, &self.head.headers);
        let trace = normalize::trace_id(&self.head);
        self.session =
            identity::session_key(&l.cfg.session.key, &self.head.headers, trace.as_deref());
        if self.route == Route::McpMethodNotAllowed {
            let refusal = Refusal::method_not_allowed(&self.head.method);
            self.refuse(host, &refusal);
            return FilterAction::Pause;
        }
        let mut needs_body = normalize::needs_body(&self.head, self.route, &l.norm);
        if l.counts_bytes && !end_of_stream && self.head.header("content-length").is_none() {
            // A byte budget needs the count: a body of undeclared length is read to count it,
            // or refused where bodies are never read.
            if l.norm.header_only() {
                self.refuse(host, &Refusal::length_required());
                return FilterAction::Pause;
            }
            needs_body = true;
        }
        if needs_body && !end_of_stream {
            self.phase = Phase::Body;
            return FilterAction::Pause;
        }
        let body = matches!(self.route, Route::Mcp).then(Vec::new);
        self.evaluate(host, l, body)
    }

    /// Request body data arrived; `body_size` is everything buffered so far.
    pub fn on_request_body(
        &mut self,
        host: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> FilterAction {
        match self.phase {
            Phase::Body => {}
            Phase::Waiting | Phase::Answered => return FilterAction::Pause,
            Phase::Headers | Phase::Forwarded => return FilterAction::Continue,
        }
        let plugin = Rc::clone(&self.plugin);
        let Ok(l) = &plugin.loaded else {
            return FilterAction::Pause;
        };
        if body_size > l.cfg.max_body_bytes {
            let refusal = Refusal::too_large(l.cfg.max_body_bytes);
            self.refuse(host, &refusal);
            return FilterAction::Pause;
        }
        self.request_held = body_size;
        if !end_of_stream {
            return FilterAction::Pause;
        }
        self.request_complete(host, l)
    }

    /// Request trailers arrived (HTTP/2, or HTTP/1.1 chunked trailers Envoy forwards). They end
    /// the body exactly as END_STREAM on the last data would: a stream still waiting for its body
    /// is decided now, with everything Envoy buffered, and nothing continues before the decision.
    /// Trailers themselves are not part of the action (no MCP server reads them).
    pub fn on_request_trailers(&mut self, host: &dyn Host) -> FilterAction {
        self.on_request_body(host, self.request_held, true)
    }

    /// The whole request body is buffered (`request_held` bytes): normalize and decide.
    fn request_complete(&mut self, host: &dyn Host, l: &Loaded) -> FilterAction {
        let body = if self.request_held == 0 {
            Vec::new()
        } else {
            host.request_body(0, self.request_held).unwrap_or_default()
        };
        self.evaluate(host, l, Some(body))
    }

    /// Response headers arrived: add the receipt and decision headers for the agent.
    pub fn on_response_headers(&mut self, host: &dyn Host) -> FilterAction {
        for (n, v) in &self.add_to_response {
            host.set_response_header(n, Some(v));
        }
        if self.phase == Phase::Forwarded && self.route == Route::McpDelete {
            self.end_deleted_session(host);
        }
        if let Some(intent) = self.begin_session.take() {
            let plugin = Rc::clone(&self.plugin);
            let session = host
                .response_headers()
                .into_iter()
                .find(|(n, v)| {
                    n.eq_ignore_ascii_case("mcp-session-id") && normalize::valid_session_id(v)
                })
                .map(|(_, v)| v);
            if let (Ok(l), Some(session)) = (&plugin.loaded, session) {
                plugin.begin_session(host, l, &session, intent.as_deref());
            }
        }
        if let Some(i) = &mut self.inspector
            && !i.on_headers(host)
        {
            self.inspector = None;
        }
        FilterAction::Continue
    }

    /// Response body data arrived; `body_size` is everything buffered so far. Only list results
    /// are held (until their JSON-RPC response is complete) and rewritten; see `response.rs`.
    pub fn on_response_body(
        &mut self,
        host: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> FilterAction {
        let a = self.response_data(host, body_size, end_of_stream, true);
        self.response_held = if a == FilterAction::Pause {
            body_size
        } else {
            0
        };
        a
    }

    /// Response trailers arrived: they end the response body as END_STREAM does, so a held list
    /// or tool result is checked (and rewritten or replaced) before anything is released.
    pub fn on_response_trailers(&mut self, host: &dyn Host) -> FilterAction {
        let held = self.response_held;
        // Only a body the filter held is still Envoy's to rewrite.
        let a = self.response_data(host, held, true, held > 0);
        self.response_held = 0;
        a
    }

    fn response_data(
        &mut self,
        host: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
        writable: bool,
    ) -> FilterAction {
        let plugin = Rc::clone(&self.plugin);
        let Ok(l) = &plugin.loaded else {
            return FilterAction::Continue;
        };
        let Some(i) = &mut self.inspector else {
            return FilterAction::Continue;
        };
        let cx = Judge {
            host,
            plugin: &plugin,
            l,
            session: self.session.as_deref(),
        };
        let a = i.on_body(&cx, body_size, end_of_stream, writable);
        let sealed = i.take_receipts();
        if !sealed.is_empty() {
            // The access log line of this stream carries the action's receipt and the result's,
            // as an array (the same shape as a batch), so the chain is complete in the log.
            let mut lines: Vec<String> = match self.receipt_json.take() {
                Some(j) if j.starts_with('[') => j
                    .strip_prefix('[')
                    .and_then(|j| j.strip_suffix(']'))
                    .map(|inner| vec![inner.to_owned()])
                    .unwrap_or_default(),
                Some(j) => vec![j],
                None => Vec::new(),
            };
            lines.extend(sealed.iter().map(|r| r.to_json()));
            let json = format!("[{}]", lines.join(","));
            host.set_filter_state("portcullis.receipt", json.as_bytes());
            self.receipt_json = Some(json);
        }
        a
    }

    fn refuse(&mut self, host: &dyn Host, refusal: &Refusal) {
        let mcp = is_mcp_route(self.route);
        let body = refusal.to_json_body(mcp);
        let mut headers = vec![
            ("content-type", "application/json"),
            (DECISION_HEADER, "DENY"),
        ];
        if refusal.http_status == 405 {
            headers.push(("allow", normalize::MCP_METHODS));
        }
        host.send_local_response(refusal.http_status, &headers, &body);
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: refused {} {}: {}",
                self.head.method, self.head.path, refusal.reason
            ),
        );
        set_state(
            host,
            "DENY",
            "filter:refused",
            self.session.as_deref().unwrap_or(""),
            None,
        );
        self.plugin.count(host, Metric::Refused);
        self.phase = Phase::Answered;
    }

    fn evaluate(&mut self, host: &dyn Host, l: &Loaded, body: Option<Vec<u8>>) -> FilterAction {
        if l.bench_cut(BenchCut::AfterBody) {
            self.phase = Phase::Forwarded;
            return FilterAction::Continue;
        }
        let (shape, mut actions) = match self.normalize(l, body.as_deref()) {
            Ok(n) => n,
            Err(r) => {
                self.refuse(host, &r);
                return FilterAction::Pause;
            }
        };
        for a in &mut actions {
            a.identity = self.identity.clone();
            a.session_id = self.session.clone();
        }
        if l.bench_cut(BenchCut::AfterNormalize) {
            self.phase = Phase::Forwarded;
            return FilterAction::Continue;
        }
        let input = Input {
            shape: &shape,
            actions: &actions,
            body: body.as_deref(),
            session: self.session.as_deref(),
            approval_token: self.approval_token.as_deref(),
        };
        let plan = decide::decide(host, &self.plugin, l, &input);
        if self
            .session
            .as_deref()
            .is_some_and(|s| s != plan.chain_name)
        {
            // Decided without a record (an unknown id under `session.require_initialize`): the
            // rest of the stream (DEFER resolution, tool results, DELETE) writes none either.
            self.session = None;
        }
        self.enforce(host, l, &shape, &actions, plan)
    }

    /// Turn the request into its actions. The body (when read) decides as much as the route: a
    /// JSON-RPC body is MCP wherever it goes, a body the filter cannot read (compressed) is
    /// refused, and a body on a body-less MCP request is refused.
    fn normalize(
        &mut self,
        l: &Loaded,
        body: Option<&[u8]>,
    ) -> Result<(Shape, Vec<Action>), Refusal> {
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            normalize::check_body_encoding(&self.head, b)?;
        }
        let found_mcp = match (self.route, body) {
            (Route::Http | Route::McpLegacy | Route::Connect, Some(b)) => {
                normalize::is_jsonrpc_body(b, &l.norm)?
            }
            _ => false,
        };
        if found_mcp {
            // Answered as JSON-RPC from here on, like any MCP POST.
            self.route = Route::Mcp;
        }
        match self.route {
            Route::Mcp => {
                let bytes = body.unwrap_or_default();
                let req = if found_mcp {
                    normalize::normalize_mcp_found(&self.head, bytes, &l.norm)?
                } else {
                    normalize::normalize_mcp(&self.head, bytes, &l.norm)?
                };
                for m in &req.messages {
                    normalize::check_argument_spelling(
                        &m.action.arguments,
                        &l.arg_names,
                        m.id.as_ref(),
                    )?;
                }
                let msgs = req
                    .messages
                    .iter()
                    .map(|m| (m.id.clone(), m.kind))
                    .collect();
                let actions = req.messages.into_iter().map(|m| m.action).collect();
                Ok((
                    Shape::Mcp {
                        batch: req.batch,
                        msgs,
                    },
                    actions,
                ))
            }
            Route::McpStream | Route::McpDelete | Route::McpOptions => {
                if body.is_some_and(|b| !b.is_empty()) {
                    return Err(Refusal::bad_http(format!(
                        "a `{}` request to the mcp endpoint must not carry a body (only POST does)",
                        normalize::printable(&self.head.method)
                    )));
                }
                let a = normalize::normalize_mcp_headers_only(&self.head, self.route, &l.norm)?;
                Ok((Shape::McpHeaders, vec![a]))
            }
            Route::McpMethodNotAllowed => Err(Refusal::method_not_allowed(&self.head.method)),
            Route::Http | Route::McpLegacy | Route::Connect => {
                let a = normalize::normalize_http(&self.head, body, &l.norm)?;
                normalize::check_argument_spelling(&a.arguments, &l.arg_names, None)?;
                let has_body = self.body_expected || body.is_some_and(|b| !b.is_empty());
                Ok((
                    Shape::Http {
                        body_buffered: body.is_some(),
                        has_body,
                    },
                    vec![a],
                ))
            }
        }
    }

    /// The inspector of a forwarded MCP stream (POST and GET): the server is asked to answer
    /// uncompressed (`accept-encoding: identity`), and every message it sends is read.
    fn inspect_response(
        &self,
        host: &dyn Host,
        l: &Loaded,
        shape: &Shape,
        plan: &Plan,
        actions: &[Action],
    ) -> Option<Inspector> {
        let base = actions.first()?;
        let inspector = match shape {
            Shape::Mcp { msgs, .. } => Inspector::new(
                plan.msgs
                    .iter()
                    .zip(actions)
                    .zip(msgs)
                    .filter(|(_, (_, kind))| *kind == McpMessageKind::Request)
                    .map(|((m, a), (id, _))| (id.as_ref(), a, m.verdict.modifications.as_slice())),
                base,
                l.inspect_results,
            ),
            Shape::McpHeaders if self.route == Route::McpStream => {
                Inspector::new(std::iter::empty(), base, l.inspect_results)
            }
            Shape::McpHeaders | Shape::Http { .. } => return None,
        };
        host.set_request_header("accept-encoding", Some("identity"));
        Some(inspector)
    }

    /// An allowed MCP `DELETE` was answered: when the server accepted it (2xx) and sessions are
    /// keyed by `mcp-session-id`, the client's session ends for good (docs/filter.md, Sessions).
    fn end_deleted_session(&self, host: &dyn Host) {
        let (Ok(l), Some(session)) = (&self.plugin.loaded, &self.session) else {
            return;
        };
        if l.cfg.session.key != SessionKeySource::McpSessionId {
            return;
        }
        let accepted = host
            .response_headers()
            .iter()
            .find(|(n, _)| n == ":status")
            .is_some_and(|(_, v)| v.starts_with('2') && v.len() == 3);
        if accepted {
            self.plugin.end_and_forget(host, l, session, "deleted");
        }
    }

    /// The session to begin when the server answers, with its intent: only for a single allowed
    /// `initialize` that had no session key, when sessions are keyed by `mcp-session-id`, and
    /// only when it declared an intent or `session.require_initialize` is on.
    fn session_to_begin(
        &self,
        l: &Loaded,
        shape: &Shape,
        plan: &Plan,
        actions: &[Action],
    ) -> Option<Option<String>> {
        if self.session.is_some()
            || l.cfg.session.key != SessionKeySource::McpSessionId
            || !matches!(shape, Shape::Mcp { batch: false, .. })
        {
            return None;
        }
        let (m, a) = plan.msgs.iter().zip(actions).next()?;
        if a.operation != "initialize" {
            return None;
        }
        let intent = m.verdict.intent.clone();
        (intent.is_some() || l.cfg.session.require_initialize).then_some(intent)
    }

    fn enforce(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        shape: &Shape,
        actions: &[Action],
        plan: Plan,
    ) -> FilterAction {
        let receipts: Vec<(&Receipt, &str)> = plan
            .msgs
            .iter()
            .filter_map(|m| Some((m.receipt.as_ref()?, m.receipt_line.as_deref()?)))
            .collect();
        let deciding = deciding_msg(&plan);
        let rule = deciding.map_or("none", |m| m.rule.as_str());
        for (m, a) in plan.msgs.iter().zip(actions) {
            let level = if m.enforced == Decision::Allow {
                LogLevel::Debug
            } else {
                LogLevel::Info
            };
            if !host.log_enabled(level) {
                continue;
            }
            host.log(
                level,
                &format!(
                    "portcullis: {} {} `{}` session `{}` rule `{}`: {}",
                    m.enforced.as_str(),
                    a.operation,
                    a.subject(),
                    plan.chain_name,
                    m.rule,
                    m.reason
                ),
            );
        }
        let (json, header) = receipts_out(&receipts, l.cfg.receipts.header);
        match plan.overall {
            Decision::Deny | Decision::StepUp => {
                let told = if plan.overall == Decision::StepUp {
                    "STEP_UP"
                } else {
                    "DENY"
                };
                set_state(host, told, rule, &plan.chain_name, json.as_deref());
                self.plugin.count(
                    host,
                    if plan.overall == Decision::StepUp {
                        Metric::StepUp
                    } else {
                        Metric::Deny
                    },
                );
                self.answer_plan(host, shape, &plan, &header);
                self.phase = Phase::Answered;
                FilterAction::Pause
            }
            Decision::Defer => {
                let Some((m, action)) = plan
                    .msgs
                    .iter()
                    .zip(actions)
                    .find(|(m, _)| m.defer.is_some())
                else {
                    return FilterAction::Pause;
                };
                self.plugin.count(host, Metric::Defer);
                set_state(host, "DEFER", rule, &plan.chain_name, json.as_deref());
                self.start_defer(host, l, shape, m, action, &plan.chain_name)
            }
            Decision::Allow | Decision::Modify if l.bench_cut(BenchCut::NoWrites) => {
                self.phase = Phase::Forwarded;
                FilterAction::Continue
            }
            Decision::Allow | Decision::Modify => {
                for (name, value) in &plan.header_edits {
                    host.set_request_header(name, value.as_deref());
                }
                if let Some(b) = &plan.new_body {
                    if matches!(shape, Shape::Mcp { batch: false, .. }) {
                        // The header copies of rewritten arguments follow the body.
                        for (name, value) in normalize::param_header_edits(&self.head, b) {
                            host.set_request_header(&name, value.as_deref());
                        }
                    }
                    host.replace_request_body(b);
                    if self.head.header("content-length").is_some() {
                        host.set_request_header("content-length", Some(&b.len().to_string()));
                    }
                }
                let decision = plan.overall.as_str();
                let mut add = vec![(DECISION_HEADER.to_owned(), decision.to_owned())];
                if !header.is_empty() {
                    add.push((RECEIPT_HEADER.to_owned(), header));
                }
                if !plan.warnings.is_empty() {
                    let mut w = plan.warnings.join("; ");
                    w.retain(|c| !c.is_control());
                    if w.len() > MAX_WARNING_BYTES {
                        let mut cut = MAX_WARNING_BYTES;
                        while !w.is_char_boundary(cut) {
                            cut = cut.saturating_sub(1);
                        }
                        w.truncate(cut);
                    }
                    add.push((WARNING_HEADER.to_owned(), w));
                }
                for (n, v) in &add {
                    host.set_request_header(n, Some(v));
                }
                self.add_to_response = add;
                self.receipt_json.clone_from(&json);
                self.begin_session = self.session_to_begin(l, shape, &plan, actions);
                self.inspector = self.inspect_response(host, l, shape, &plan, actions);
                set_state(host, decision, rule, &plan.chain_name, json.as_deref());
                self.plugin.count(
                    host,
                    if plan.overall == Decision::Modify {
                        Metric::Modify
                    } else {
                        Metric::Allow
                    },
                );
                self.phase = Phase::Forwarded;
                FilterAction::Continue
            }
        }
    }

    /// Send a local answer built from a plan where the request as a whole is refused.
    fn answer_plan(&mut self, host: &dyn Host, shape: &Shape, plan: &Plan, receipt_header: &str) {
        let denial_of = |m: &MsgResult| Denial {
            kind: m.denial.clone().unwrap_or(DenialKind::Denied {
                approval_error: None,
            }),
            rule: m.rule.clone(),
            reason: m.reason.clone(),
            receipt_id: m
                .receipt
                .as_ref()
                .map(|r| bundle::receipt::hash_hex(&r.hash)),
        };
        let Some(first) = deciding_msg(plan) else {
            return;
        };
        let first = denial_of(first);
        let extra = [(RECEIPT_HEADER, receipt_header)];
        let extra: &[(&str, &str)] = if receipt_header.is_empty() {
            &[]
        } else {
            &extra
        };
        match shape {
            Shape::Mcp { batch: true, msgs } => {
                let errors: Vec<serde_json::Value> = plan
                    .msgs
                    .iter()
                    .zip(msgs)
                    .filter(|(_, (id, kind))| *kind == McpMessageKind::Request && id.is_some())
                    .map(|(m, (id, _))| denial_of(m).jsonrpc_error(id.as_ref()))
                    .collect();
                if errors.is_empty() {
                    self.answer(host, &first, None, false, extra);
                } else {
                    let body = serde_json::to_vec(&errors).unwrap_or_default();
                    send_json(host, 200, first.decision(), &body, extra);
                }
            }
            Shape::Mcp { batch: false, msgs } => match msgs.first() {
                Some((id, McpMessageKind::Request)) => {
                    let body =
                        serde_json::to_vec(&first.jsonrpc_error(id.as_ref())).unwrap_or_default();
                    send_json(host, 200, first.decision(), &body, extra);
                }
                _ => self.answer(host, &first, None, false, extra),
            },
            Shape::McpHeaders | Shape::Http { .. } => self.answer(host, &first, None, false, extra),
        }
    }

    /// Answer with one denial: a JSON-RPC error (200) when `jsonrpc`, else the HTTP form.
    fn answer(
        &mut self,
        host: &dyn Host,
        d: &Denial,
        id: Option<&JsonRpcId>,
        jsonrpc: bool,
        extra: &[(&str, &str)],
    ) {
        if jsonrpc {
            let body = serde_json::to_vec(&d.jsonrpc_error(id)).unwrap_or_default();
            send_json(host, 200, d.decision(), &body, extra);
        } else {
            let (status, body) = d.http();
            send_json(host, status, d.decision(), &body, extra);
        }
        self.phase = Phase::Answered;
    }

    fn start_defer(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        shape: &Shape,
        m: &MsgResult,
        action: &Action,
        chain_name: &str,
    ) -> FilterAction {
        let Some(defer) = &m.defer else {
            return FilterAction::Pause;
        };
        let (id, answer_with_jsonrpc) = match shape {
            Shape::Mcp { msgs, .. } => match msgs.first() {
                Some((id, McpMessageKind::Request)) => (id.clone(), true),
                _ => (None, false),
            },
            _ => (None, false),
        };
        let digest = bundle::receipt::action_digest(action);
        let payload = serde_json::json!({
            "action": ReceiptAction::from_action(action),
            "digest": hex::encode(digest),
            "session": chain_name,
            "identity": action.identity,
            "intent": m.verdict.intent,
            "rule": m.rule,
            "reason": m.reason,
        });
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let headers = [
            (":method", "POST"),
            (":path", defer.service.path.as_str()),
            (":authority", defer.service.authority.as_str()),
            ("content-type", "application/json"),
        ];
        let mut pending = Pending {
            token: 0,
            action: action.clone(),
            verdict: m.verdict.clone(),
            id,
            answer_with_jsonrpc,
            chain_name: chain_name.to_owned(),
            first_receipt: m.receipt.clone(),
        };
        match host.dispatch_http_call(
            &defer.service.cluster,
            &headers,
            &body,
            u64::from(defer.timeout_ms),
        ) {
            Ok(token) => {
                pending.token = token;
                self.pending = Some(pending);
                self.phase = Phase::Waiting;
                FilterAction::Pause
            }
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "portcullis: cannot call context service `{}`: {}",
                        defer.service.cluster, e.0
                    ),
                );
                self.plugin.count(host, Metric::Errors);
                self.pending = Some(pending);
                self.finish_defer(
                    host,
                    l,
                    Decision::Deny,
                    "the context service could not be called".into(),
                );
                FilterAction::Pause
            }
        }
    }

    /// A call-out answered (or failed: no headers).
    pub fn on_http_call_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        if self.phase != Phase::Waiting || self.pending.as_ref().map(|p| p.token) != Some(token) {
            return;
        }
        let plugin = Rc::clone(&self.plugin);
        let Ok(l) = &plugin.loaded else { return };
        let headers = host.http_call_response_headers();
        let status = pseudo(&headers, ":status");
        let body = if body_size > 0 {
            host.http_call_response_body(body_size.min(64 * 1024))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let (outcome, reason) = interpret_answer(&headers, &status, &body);
        self.finish_defer(host, l, outcome, reason);
    }

    fn finish_defer(&mut self, host: &dyn Host, l: &Loaded, outcome: Decision, reason: String) {
        let Some(p) = self.pending.take() else { return };
        let d = decide::Deferred {
            chain_name: &p.chain_name,
            session: self.session.as_deref(),
            action: &p.action,
            verdict: &p.verdict,
        };
        let resolved = decide::resolve_defer(host, &self.plugin, l, &d, outcome, &reason);
        let store_failed =
            resolved.is_none() && l.cfg.failure_mode == crate::config::FailureMode::Closed;
        let outcome = if store_failed {
            Decision::Deny
        } else {
            outcome
        };
        // A DEFER is rare: these two are serialized here, not when sealed.
        let lines: Vec<(&Receipt, String)> = p
            .first_receipt
            .iter()
            .chain(resolved.iter())
            .map(|r| (r, r.to_json()))
            .collect();
        let receipts: Vec<(&Receipt, &str)> = lines.iter().map(|(r, l)| (*r, l.as_str())).collect();
        let (json, header) = receipts_out(&receipts, l.cfg.receipts.header);
        let json = json.unwrap_or_default();
        let rule = p.verdict.deciding_rule.clone();
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: DEFER resolved to {} for `{}` session `{}`: {}",
                outcome.as_str(),
                p.action.subject(),
                p.chain_name,
                reason
            ),
        );
        if outcome == Decision::Allow {
            let mut add = vec![(DECISION_HEADER.to_owned(), "ALLOW".to_owned())];
            if !header.is_empty() {
                add.push((RECEIPT_HEADER.to_owned(), header));
            }
            for (n, v) in &add {
                host.set_request_header(n, Some(v));
            }
            self.add_to_response = add;
            // A deferred request is a single message: its answer is read like an allowed one's.
            let one = std::iter::once((p.id.as_ref(), &p.action, &[][..]));
            if self.route == Route::Mcp {
                host.set_request_header("accept-encoding", Some("identity"));
                self.inspector = Some(Inspector::new(one, &p.action, l.inspect_results));
            }
            set_state(host, "ALLOW", &rule, &p.chain_name, Some(&json));
            self.receipt_json = Some(json.clone());
            self.plugin.count(host, Metric::Allow);
            self.phase = Phase::Forwarded;
            host.resume_request();
        } else {
            let d = Denial {
                kind: DenialKind::DeferDenied,
                rule: rule.clone(),
                reason,
                receipt_id: resolved
                    .as_ref()
                    .map(|r| bundle::receipt::hash_hex(&r.hash)),
            };
            set_state(host, "DENY", &rule, &p.chain_name, Some(&json));
            self.plugin.count(host, Metric::Deny);
            let extra = [(RECEIPT_HEADER, header.as_str())];
            let extra: &[(&str, &str)] = if header.is_empty() { &[] } else { &extra };
            self.answer(host, &d, p.id.as_ref(), p.answer_with_jsonrpc, extra);
        }
    }
}

/// The message whose decision the request reports: the first with the request's overall decision.
fn deciding_msg(plan: &Plan) -> Option<&MsgResult> {
    plan.msgs
        .iter()
        .find(|m| m.enforced == plan.overall && !m.rule.starts_with("filter:batch"))
        .or_else(|| plan.msgs.iter().find(|m| m.enforced == plan.overall))
        .or_else(|| plan.msgs.first())
}

/// Read a context service's answer: HTTP 200 with `{"decision": "allow" | "deny", "reason": ...}`.
/// Anything else (no answer: timeout or reset; another status; another body) denies.
fn interpret_answer(headers: &[(String, String)], status: &str, body: &[u8]) -> (Decision, String) {
    if headers.is_empty() {
        return (
            Decision::Deny,
            "the context service did not answer in time".into(),
        );
    }
    if status != "200" {
        return (
            Decision::Deny,
            format!("the context service answered with status {status}"),
        );
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (
            Decision::Deny,
            "the context service's answer is not JSON".into(),
        );
    };
    let reason = v
        .get("reason")
        .and_then(serde_json::Value::as_str)
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect::<String>()
        });
    match v.get("decision").and_then(serde_json::Value::as_str) {
        Some("allow") => (
            Decision::Allow,
            reason.unwrap_or_else(|| "allowed by the context service".into()),
        ),
        Some("deny") => (
            Decision::Deny,
            reason.unwrap_or_else(|| "denied by the context service".into()),
        ),
        _ => (
            Decision::Deny,
            "the context service's answer has no decision".into(),
        ),
    }
}

fn send_json(host: &dyn Host, status: u16, decision: &str, body: &[u8], extra: &[(&str, &str)]) {
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        (DECISION_HEADER, decision),
    ];
    headers.extend_from_slice(extra);
    host.send_local_response(status, &headers, body);
}

/// Filter state for the access log.
fn set_state(host: &dyn Host, decision: &str, rule: &str, session: &str, receipt: Option<&str>) {
    host.set_filter_state("portcullis.decision", decision.as_bytes());
    host.set_filter_state("portcullis.rule", rule.as_bytes());
    host.set_filter_state("portcullis.session", session.as_bytes());
    if let Some(r) = receipt {
        host.set_filter_state("portcullis.receipt", r.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_service_answers() {
        let h = vec![(":status".to_owned(), "200".to_owned())];
        assert_eq!(
            interpret_answer(&h, "200", br#"{"decision":"allow","reason":"ok"}"#),
            (Decision::Allow, "ok".into())
        );
        assert_eq!(
            interpret_answer(&h, "200", br#"{"decision":"deny"}"#).0,
            Decision::Deny
        );
        assert_eq!(
            interpret_answer(&h, "200", br#"{"decision":"maybe"}"#).0,
            Decision::Deny
        );
        assert_eq!(interpret_answer(&h, "200", b"not json").0, Decision::Deny);
        assert_eq!(interpret_answer(&h, "503", b"").0, Decision::Deny);
        let (d, why) = interpret_answer(&[], "", b"");
        assert_eq!(d, Decision::Deny);
        assert!(why.contains("in time"));
    }
}
