//! The per-request state machine (HTTP context): request headers -> (buffer body) -> normalize ->
//! decide -> enforce on the stream; call-out callbacks for DEFER; response headers.
//!
//! Every path ends in exactly one of: the request continues upstream (ALLOW, MODIFY, approved
//! STEP_UP, DEFER resolved to allow, audit/warn), or the filter answers locally and upstream is
//! never contacted (DENY, STEP_UP without approval, DEFER denied, bad input, bad configuration).

mod answer;
mod approval;
mod commit;
mod credential;
mod defer;
mod outputs;
mod who;

use std::rc::Rc;

use sha2::{Digest, Sha256};

use bundle::action::{Action, Identity, IntentSource};
use bundle::receipt::Receipt;
use bundle::verdict::Decision;

pub use outputs::{APPROVAL_HEADER, DECISION_HEADER, RECEIPT_HEADER, WARNING_HEADER};

use crate::bench::Stage;
use crate::config::{SessionKeySource, UnderscoreHeaders};
use crate::decide::{self, Input, Plan, Shape};
use crate::host::{FilterAction, Host, LogLevel};
use crate::identity;
use crate::metrics::Metric;
use crate::normalize::{self, McpMessageKind, Refusal, RequestHead, Route};
use crate::results::{Inspector, Judge};
use crate::root::{Loaded, Plugin};
use crate::session::{self, EndReason};
use answer::deciding_msg;
use defer::Pending;
use outputs::{STATE_RECEIPT, receipts_out, set_state, warning_value};
use who::Who;

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

/// What a forwarded request leaves behind as it goes upstream: the one forward path of the stream
/// (ALLOW, MODIFY, an approved STEP_UP, a DEFER resolved to allow, and refused client responses
/// replaced by errors for the server).
struct Forward<'a> {
    decision: Decision,
    rule: &'a str,
    chain_name: &'a str,
    /// The receipts as filter state.
    json: Option<String>,
    /// The `x-portcullis-receipt` value (empty: none).
    receipt_header: String,
    warnings: &'a [String],
    /// The response side, when the answer is read.
    inspector: Option<Inspector>,
}

/// A read request, ready for the decision: what [`Stream::decide_and_enforce`] needs, owned, so
/// a request can wait for a call-out (in-band approval) before it is decided, and be decided
/// again (sessions on etcd, `commit.rs`).
#[derive(Clone, Debug)]
struct Prepared {
    shape: Shape,
    actions: Vec<Action>,
    body: Option<Vec<u8>>,
    record: Option<Result<crate::session::PrincipalRecord, crate::session::StoreFailed>>,
    grant: Option<bundle::grant::Grant>,
    state_store: Option<String>,
    tool_checks: Vec<Option<crate::policy::pins::ToolCheck>>,
    /// Per action, why the server-held state it carries is not bound to it (`binding_checks`).
    bound_state: Vec<Option<(crate::rules::FilterRule, String)>>,
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
    /// The verified agent identity state is kept for (`identity::principal_of`).
    principal: Option<String>,
    /// The session key the request carried (from `session.key`).
    key: Option<String>,
    /// `key` is a legacy HTTP+SSE message's `sessionId` (`normalize::legacy_session_id`), which
    /// no `initialize` answer names in a header: `session.require_initialize` does not apply.
    legacy_key: bool,
    /// The session the request is decided in: its key, or its principal's run; after the
    /// decision, the session it was saved in (`None`: none was).
    session: Option<String>,
    approval_token: Option<String>,
    /// The task grant the request carried (`x-portcullis-grant`), unverified.
    grant_token: Option<String>,
    add_to_response: Vec<(String, String)>,
    pending: Option<Pending>,
    /// In-band approval on this stream (`approval.rs`).
    inband: approval::Inband,
    /// A MODIFY waiting for the credential it injects (`credential.rs`).
    minting: Option<credential::Minting>,
    /// A decided request waiting for its writes to the shared state store (`commit.rs`).
    committing: Option<commit::Committing>,
    /// With sessions on etcd: how often this request was decided, and the approval tokens it
    /// claimed already (`commit.rs`).
    retry: commit::Retry,
    /// The response side of an MCP stream: every server-to-agent message is read before the agent
    /// gets it (`results/`).
    inspector: Option<Inspector>,
    /// The receipt JSON written to the filter state (a `result` receipt is appended to it).
    receipt_json: Option<String>,
    /// An allowed legacy `initialize`: the session whose id the server returns in
    /// `mcp-session-id` begins then (the request itself had no session yet), with the intent it
    /// declared pinned. `Some(None)`: no intent, but `session.require_initialize` wants the record.
    begin_session: Option<Option<(String, IntentSource)>>,
    /// The request is an `initialize`: its answer may name the session (see
    /// `on_response_headers`).
    answers_initialize: bool,
    /// Request body bytes Envoy holds for the filter (the `body_size` of the last body callback,
    /// which paused): what trailers complete.
    request_held: usize,
    /// Response body bytes Envoy holds for the filter: the `body_size` of the last response body
    /// callback when it paused, 0 when it let the data go.
    response_held: usize,
}

/// A pseudo-header's (or header's) value, exactly named; empty when absent.
fn pseudo(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The request head from its headers (`:authority`, else `host`).
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
            principal: None,
            key: None,
            legacy_key: false,
            session: None,
            approval_token: None,
            grant_token: None,
            add_to_response: Vec::new(),
            pending: None,
            inband: approval::Inband::default(),
            minting: None,
            committing: None,
            retry: commit::Retry::default(),
            inspector: None,
            begin_session: None,
            answers_initialize: false,
            receipt_json: None,
            request_held: 0,
            response_held: 0,
        }
    }

    /// Whether the filter's own answers on this stream are JSON-RPC (an MCP POST).
    fn answers_jsonrpc(&self) -> bool {
        self.route == Route::Mcp
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
                self.route = normalize::route(&self.head, &normalize::NormalizeConfig::default());
                self.deny_unconfigured(host, &e.to_string());
                return FilterAction::Pause;
            }
        };
        let policy = &l.policy;
        self.approval_token = self
            .head
            .header(APPROVAL_HEADER)
            .map(|t| t.trim().to_owned());
        self.grant_token = self
            .head
            .header(bundle::grant::GRANT_HEADER)
            .map(|t| t.trim().to_owned());
        identity::strip_spoofed_headers(host, &policy.cfg.identity, &self.head.headers);
        self.route = normalize::route(&self.head, &policy.norm);
        // Before anything reads a header: one named with `_` is read as its `-` spelling by some
        // servers and as another header by the rest (docs/filter-normalization.md).
        match policy.cfg.underscore_headers {
            UnderscoreHeaders::Reject => {
                if let Some(name) = normalize::underscore_header(&self.head) {
                    let refusal = normalize::underscore_refusal(name);
                    self.refuse(host, &refusal);
                    return FilterAction::Pause;
                }
            }
            UnderscoreHeaders::Drop => {
                self.head.headers.retain(|(name, _)| {
                    let keep = !name.contains('_');
                    if !keep {
                        host.set_request_header(name, None);
                    }
                    keep
                });
            }
            UnderscoreHeaders::Allow => {}
        }
        self.identity = identity::identify(host, &policy.cfg.identity, &self.head.headers);
        self.principal = identity::principal_of(&self.identity);
        let trace = normalize::trace_id(&self.head);
        self.key = identity::session_key(
            &policy.cfg.session.key,
            &self.head.headers,
            trace.as_deref(),
        );
        self.legacy_key = false;
        if self.route == Route::McpLegacy
            && policy.cfg.session.key == SessionKeySource::McpSessionId
        {
            // A legacy message names its session in the query (`?sessionId=`): that is the
            // session the server acts in, so it is the filter's too.
            match normalize::legacy_session_id(&self.head, self.key.as_deref()) {
                Ok(Some(id)) => {
                    self.legacy_key = self.key.is_none();
                    self.key = identity::usable_key(&id);
                }
                Ok(None) => {}
                Err(refusal) => {
                    self.key = None;
                    self.refuse(host, &refusal);
                    return FilterAction::Pause;
                }
            }
        }
        if let Some(key) = self
            .key
            .as_deref()
            .filter(|k| session::is_reserved_chain(k))
        {
            let refusal = Refusal::bad_http(format!(
                "session key `{}` uses a reserved chain prefix (`{}`, `{}`): only the filter \
                 names such chains",
                normalize::printable(key),
                session::ANON_PREFIX,
                session::RUN_PREFIX
            ));
            self.key = None;
            self.refuse(host, &refusal);
            return FilterAction::Pause;
        }
        self.session = self.key.clone();
        if let Some(name) = normalize::ambiguous_header(&self.head, &policy.single_valued) {
            let refusal = Refusal::bad_http(format!(
                "header `{name}` appears more than once with different values: servers differ \
                 on which one they read"
            ));
            self.refuse(host, &refusal);
            return FilterAction::Pause;
        }
        if self.route == Route::McpMethodNotAllowed {
            let refusal = Refusal::method_not_allowed(&self.head.method);
            self.refuse(host, &refusal);
            return FilterAction::Pause;
        }
        let mut needs_body = normalize::needs_body(&self.head, self.route, &policy.norm);
        if policy.pack.byte_counts && !end_of_stream && self.head.header("content-length").is_none()
        {
            // A byte budget needs the count: a body of undeclared length is read to count it,
            // or refused where bodies are never read.
            if policy.norm.header_only() {
                self.refuse(host, &Refusal::length_required());
                return FilterAction::Pause;
            }
            needs_body = true;
        }
        if self.route == Route::Http
            && (policy.pack.step_up || self.approval_token.is_some())
            && self.head.header("content-length").map(str::trim) != Some("0")
        {
            // An approval binds the body it approves (`body_sha256` in the action digest): a
            // pack that can step up reads HTTP request bodies, whatever `http.inspect_bodies`.
            needs_body = true;
        }
        if normalize::tunnel_upgrade(&self.head).is_some() {
            // What follows a protocol switch never ends as a body does: decided on the headers,
            // as the CONNECT it becomes (`normalize::action_readings`), like a CONNECT.
            needs_body = false;
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
        let max = l.policy.cfg.max_body_bytes;
        if body_size > max {
            self.refuse(host, &Refusal::too_large(max));
            return FilterAction::Pause;
        }
        self.request_held = body_size;
        if !end_of_stream {
            return FilterAction::Pause;
        }
        let body = if self.request_held == 0 {
            Vec::new()
        } else {
            host.request_body(0, self.request_held).unwrap_or_default()
        };
        self.evaluate(host, l, Some(body))
    }

    /// Request trailers arrived (HTTP/2, or HTTP/1.1 chunked trailers Envoy forwards). They end
    /// the body exactly as END_STREAM on the last data would: a stream still waiting for its body
    /// is decided now, with everything Envoy buffered, and nothing continues before the decision.
    /// Trailers themselves are not part of the action (no MCP server reads them).
    pub fn on_request_trailers(&mut self, host: &dyn Host) -> FilterAction {
        // A credential header never rides in trailers past the filter: the agent's credential
        // names are removed from them whatever is decided (`docs/credentials.md`); nothing the
        // filter forwards is ever in a trailer.
        if let Ok(l) = &self.plugin.loaded {
            for name in &l.policy.cfg.credentials.strip {
                host.remove_request_trailer(name);
            }
        }
        self.on_request_body(host, self.request_held, true)
    }

    /// A call-out answered (or failed: no headers).
    pub fn on_http_call_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        if self.phase == Phase::Waiting && self.inband.waits_for(token) {
            self.inband_answered(host, body_size);
            return;
        }
        if self.phase != Phase::Waiting {
            return;
        }
        let plugin = Rc::clone(&self.plugin);
        let Ok(l) = &plugin.loaded else { return };
        if self.pending.as_ref().is_some_and(|p| p.is(token)) {
            self.defer_answered(host, l, body_size);
        } else if self.minting.as_ref().is_some_and(|m| m.is(token)) {
            self.credential_answered(host, l, body_size);
        }
    }

    /// Response headers arrived: add the receipt and decision headers for the agent.
    pub fn on_response_headers(&mut self, host: &dyn Host) -> FilterAction {
        for (n, v) in &self.add_to_response {
            host.set_response_header(n, Some(v));
        }
        if self.phase == Phase::Forwarded && self.route == Route::McpDelete {
            self.end_deleted_session(host);
        }
        self.inband_session_begun(host);
        let begin = self.begin_session.take();
        if begin.is_some() || self.answers_initialize {
            let plugin = Rc::clone(&self.plugin);
            let mut ids: Vec<String> = host
                .response_headers()
                .into_iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"))
                .map(|(_, v)| v.trim().to_owned())
                .collect();
            ids.dedup();
            if ids.len() > 1 {
                // Two session ids: a client joins them (httpx, fetch) or takes either; the filter
                // would begin one the client never names. The agent gets none.
                host.log(
                    LogLevel::Warn,
                    "portcullis: the server named two session ids; both removed",
                );
                host.set_response_header("mcp-session-id", None);
                ids.clear();
            }
            let session = ids
                .into_iter()
                .find(|v| normalize::valid_session_id(v) && !session::is_reserved_chain(v));
            if let (Ok(l), Some(session), Some(intent)) = (&plugin.loaded, session, begin) {
                l.sessions
                    .begin(host, &session, self.principal.as_deref(), intent.as_ref());
            }
        }
        if self.inspector.as_mut().is_some_and(|i| !i.on_headers(host))
            && let Some(mut i) = self.inspector.take()
            && i.answered_elsewhere()
        {
            // Accepted (202): the answers come on another stream, maybe before this one is over.
            let plugin = Rc::clone(&self.plugin);
            if let Ok(l) = &plugin.loaded {
                i.hand_over(&self.judge(host, l));
            }
        }
        FilterAction::Continue
    }

    /// The stream is over, whatever ended it (Envoy logs it). Requests its answer still awaited
    /// (the server reset the stream, or its JSON body answered only some of a batch) are handed
    /// over: their answers, if they come on another stream, are checked as theirs.
    pub fn on_log(&mut self, host: &dyn Host) {
        let Some(mut i) = self.inspector.take() else {
            return;
        };
        let plugin = Rc::clone(&self.plugin);
        if let Ok(l) = &plugin.loaded {
            i.hand_over(&self.judge(host, l));
        }
    }

    /// What a server-to-agent message of this stream is judged with.
    fn judge<'a>(&'a self, host: &'a dyn Host, l: &'a Loaded) -> Judge<'a> {
        Judge {
            host,
            l: &l.policy,
            sessions: &l.sessions,
            session: self.session.as_deref(),
            principal: self.principal.as_deref(),
        }
    }

    /// Response body data arrived; `body_size` is everything buffered so far. What the inspector
    /// must read is held until it is complete and checked; see `results/`.
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
        let Some(mut i) = self.inspector.take() else {
            return FilterAction::Continue;
        };
        let a = i.on_body(&self.judge(host, l), body_size, end_of_stream, writable);
        let sealed = i.take_receipts();
        self.inspector = Some(i);
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
            host.set_filter_state(STATE_RECEIPT, json.as_bytes());
            self.receipt_json = Some(json);
        }
        a
    }

    /// The request is read: normalize, decide, enforce.
    fn evaluate(&mut self, host: &dyn Host, l: &Loaded, body: Option<Vec<u8>>) -> FilterAction {
        let policy = &l.policy;
        if policy.cut(Stage::Read) {
            self.phase = Phase::Forwarded;
            return FilterAction::Continue;
        }
        let (route, normalized) = normalize::request(
            &self.head,
            self.route,
            body.as_deref(),
            self.body_expected,
            &policy.norm,
            &policy.pack.arg_names,
        );
        self.route = route;
        let (shape, mut actions) = match normalized {
            Ok(n) => n,
            Err(r) => {
                self.refuse(host, &r);
                return FilterAction::Pause;
            }
        };
        let Who {
            record,
            grant,
            trusted,
        } = match self.who(host, l) {
            Ok(w) => w,
            Err(r) => {
                self.refuse(host, &r);
                return FilterAction::Pause;
            }
        };
        let hashed = body
            .as_deref()
            .filter(|b| !b.is_empty() && self.route == Route::Http);
        // The normalizer hashed the body already when its arguments were all of it.
        let mut body_sha256 = actions
            .iter()
            .find_map(|a| a.body_sha256.clone())
            .filter(|_| hashed.is_some());
        for a in &mut actions {
            a.identity = self.identity.clone();
            a.session_id = self.session.clone();
            if a.kind == bundle::action::Kind::Http {
                if body_sha256.is_none() {
                    body_sha256 = hashed.map(|b| hex::encode(Sha256::digest(b)));
                }
                a.body_sha256.clone_from(&body_sha256);
            }
            if let Some((intent, source)) = &trusted {
                who::trusted_intent(a, intent, *source);
            }
        }
        if policy.cut(Stage::Normalized) {
            self.phase = Phase::Forwarded;
            return FilterAction::Continue;
        }
        // With the etcd backend: a principal this Envoy's cache does not know may be contained on
        // another replica; while the cache is out of sync it is not decided with state.
        let state_store = match (&l.watcher, &record) {
            (Some(w), Some(Ok(r))) if r.seen_ms == 0 && !w.synced() => Some(format!(
                "the shared state store is out of sync and principal `{}` is not in this \
                 Envoy's cache",
                r.id
            )),
            _ => None,
        };
        let tool_checks = self.pin_checks(host, l, &mut actions);
        let bound_state = self.binding_checks(host, &shape, &mut actions);
        let prepared = Prepared {
            shape,
            actions,
            body,
            record,
            grant,
            state_store,
            tool_checks,
            bound_state,
        };
        if policy.cfg.approval_service.is_none() {
            return self.decide_and_enforce(host, l, prepared);
        }
        // In-band approval: the retry of an action an elicitation was sent for first asks the
        // approval service for its token (`approval.rs`).
        match self.inband_retry(host, l, Box::new(prepared)) {
            Ok(waiting) => waiting,
            Err(prepared) => self.decide_and_enforce(host, l, *prepared),
        }
    }

    /// Decide a read request and enforce the plan.
    fn decide_and_enforce(&mut self, host: &dyn Host, l: &Loaded, p: Prepared) -> FilterAction {
        let policy = &l.policy;
        // With sessions on etcd, a request whose session another replica wrote first is decided
        // again: what it needs for that is kept.
        let redo = l.sessions.on_etcd().then(|| commit::Redo {
            prepared: Box::new(p.clone()),
            session: self.session.clone(),
        });
        let Prepared {
            shape,
            actions,
            body,
            record,
            grant,
            state_store,
            tool_checks,
            bound_state,
        } = p;
        let approver_denial = self.inband_denial();
        let strip_state = self.inband_strips_state();
        let input = Input {
            shape: &shape,
            actions: &actions,
            body: body.as_deref(),
            session: self.session.as_deref(),
            keyed: self.key.is_some() && self.key == self.session && !self.legacy_key,
            principal: self
                .principal
                .as_deref()
                .zip(record.as_ref())
                .map(|(id, r)| decide::Who {
                    id,
                    record: r.as_ref(),
                }),
            approval_token: self.approval_token.as_deref(),
            approver_denial: approver_denial
                .as_ref()
                .map(|(why, code)| (why.as_str(), *code)),
            grant: grant.as_ref(),
            state_store: state_store.as_deref(),
            tool_checks: &tool_checks,
            bound_state: &bound_state,
        };
        // Containment changed before this decision (by tool results) is the outbox's to write.
        // With the local backend nothing is ever noted: no call on the request path.
        if l.watcher.is_some() {
            let _ = l.sessions.take_changed();
        }
        let mut plan = decide::decide(host, policy, &l.sessions, &input);
        if strip_state && matches!(plan.overall, Decision::Allow | Decision::Modify) {
            // The filter's own `requestState` and `inputResponses` are not the server's to read.
            let current = plan.new_body.as_deref().or(body.as_deref());
            if let Some(stripped) = current.and_then(crate::approve::state::strip) {
                plan.new_body = Some(stripped);
            }
        }
        // Decided without a saved session (no key, an unknown or refused one): the rest of the
        // stream (DEFER resolution, tool results, DELETE) writes none either.
        self.session.clone_from(&plan.session);
        if l.watcher.is_some() {
            let ops = commit::ops_of(l.sessions.take_changed(), &plan, &self.retry);
            let staged = l.sessions.take_staged();
            if !ops.is_empty() || staged.is_some() {
                return self.start_commit(host, l, (shape, actions, plan), ops, (staged, redo));
            }
        }
        self.enforce(host, l, &shape, &actions, plan)
    }

    /// Each `tools/call` judged against its tool's pin (`session/pins.rs`), its `tool.changed`
    /// and `tool.shadowed` set; `None` for other actions. Empty when no action is a call or
    /// the stream has no owner to pin for.
    fn pin_checks(
        &self,
        host: &dyn Host,
        l: &Loaded,
        actions: &mut [Action],
    ) -> Vec<Option<crate::policy::pins::ToolCheck>> {
        let is_call = |a: &Action| {
            a.kind == bundle::action::Kind::Mcp
                && normalize::Method::ToolsCall.is(&a.operation)
                && a.tool.is_some()
        };
        let Some(owner) = session::pin_owner(self.principal.as_deref(), self.session.as_deref())
            .filter(|_| actions.iter().any(is_call))
        else {
            return Vec::new();
        };
        actions
            .iter_mut()
            .map(|a| {
                let tool = a.tool.clone().filter(|_| is_call(a))?;
                // In a layered set, the baseline's reviewed pins apply (docs/layers.md).
                let check = l.sessions.check_tool_call(
                    host,
                    l.policy.bundle.baseline(),
                    &owner,
                    &a.target.server,
                    &tool,
                );
                crate::policy::pins::flag(a, &check);
                Some(check)
            })
            .collect()
    }

    /// Whose server-held state (an MRTR `requestState`, a task id) this stream may present and
    /// is handed: its principal, else the session key it carried, else anyone's (a
    /// `requestState` is still held to the action it was handed out for).
    pub(super) fn binding_owner(&self) -> String {
        match (&self.principal, &self.key) {
            (Some(p), _) => format!("principal:{p}"),
            (None, Some(k)) => format!("session:{k}"),
            (None, None) => "anyone".to_owned(),
        }
    }

    /// Per action, why it is refused for the server-held state it presents
    /// (`session/bindings.rs`): an MRTR `requestState` not handed to this owner (or that cannot
    /// be checked) or handed out for another action; on a 2026-07-28 stream, a `tasks/*` on a
    /// task not handed to this owner. A task that was is named by its call's tool
    /// (`action.tool`), so the pack and the receipt see whose task it is. Empty when no message
    /// presents either.
    fn binding_checks(
        &self,
        host: &dyn Host,
        shape: &Shape,
        actions: &mut [Action],
    ) -> Vec<Option<(crate::rules::FilterRule, String)>> {
        use crate::rules::FilterRule;
        use session::bindings::{BindKind, action_digest, key_of, lookup};
        let Shape::Mcp {
            request_states,
            task_ids,
            modern,
            ..
        } = shape
        else {
            return Vec::new();
        };
        let tasks = *modern && task_ids.iter().any(Option::is_some);
        if !tasks && request_states.iter().all(Option::is_none) {
            return Vec::new();
        }
        let owner = self.binding_owner();
        let now = host.now_ms();
        request_states
            .iter()
            .zip(task_ids)
            .zip(actions.iter_mut())
            .map(|((state, task), a)| {
                // The filter's own `requestState` (an in-band approval, `approve/state.rs`) is
                // verified by its own MAC, not bound here.
                if let Some(state) = state
                    .as_deref()
                    .filter(|s| !s.starts_with(crate::approve::state::STATE_PREFIX))
                {
                    return match lookup(host, key_of(BindKind::RequestState, &owner, state), now) {
                        Ok(Some(b)) if b.digest == action_digest(a) => None,
                        Ok(Some(_)) => Some((
                            FilterRule::RequestStateChanged,
                            "the retry carries the server's `requestState` for another action: \
                             a retry must repeat the action the server asked input for"
                                .to_owned(),
                        )),
                        Ok(None) => Some((
                            FilterRule::RequestStateUnbound,
                            "the retry carries a `requestState` the server did not hand to this \
                             principal or session through the filter (or it expired)"
                                .to_owned(),
                        )),
                        Err(e) => Some((
                            FilterRule::RequestStateUnbound,
                            format!("the retry's `requestState` cannot be checked: {}", e.0),
                        )),
                    };
                }
                let task = task.as_deref().filter(|_| *modern)?;
                match lookup(host, key_of(BindKind::Task, &owner, task), now) {
                    Ok(Some(b)) => {
                        if !b.name.is_empty() {
                            a.tool = Some(b.name);
                        }
                        None
                    }
                    Ok(None) => Some((
                        FilterRule::TaskUnbound,
                        "the task was not handed to this principal or session through the \
                         filter (or it expired)"
                            .to_owned(),
                    )),
                    Err(e) => Some((
                        FilterRule::TaskUnbound,
                        format!("the task cannot be checked: {}", e.0),
                    )),
                }
            })
            .collect()
    }

    /// The inspector of a forwarded MCP stream (POST and GET): every message the server sends is
    /// read ([`Stream::forward`] asks the server to answer uncompressed).
    fn inspect_response(
        &self,
        l: &Loaded,
        shape: &Shape,
        plan: &Plan,
        actions: &[Action],
    ) -> Option<Inspector> {
        let base = actions.first()?;
        let results = l.policy.pack.results;
        match shape {
            Shape::Mcp { msgs, modern, .. } => Some(Inspector::new(
                plan.msgs
                    .iter()
                    .zip(actions)
                    .zip(msgs)
                    .filter(|(_, (_, kind))| *kind == McpMessageKind::Request)
                    .map(|((m, a), (id, _))| (id.as_ref(), a, m.verdict.modifications.as_slice())),
                base,
                results,
                modern.then(|| self.binding_owner()),
            )),
            Shape::McpHeaders if self.route == Route::McpStream => {
                Some(Inspector::new(std::iter::empty(), base, results, None))
            }
            // A plain HTTP egress answer is agent input too, when the pack reads results
            // (`results/egress.rs`). A CONNECT tunnel carries bytes the filter cannot read.
            // A HEAD answer has no body (and its content-length is the GET's).
            Shape::Http { .. }
                if results && self.route == Route::Http && self.head.method != "HEAD" =>
            {
                Some(Inspector::egress(base))
            }
            Shape::McpHeaders | Shape::Http { .. } => None,
        }
    }

    /// An allowed MCP `DELETE` was answered: when the server accepted it (2xx) and sessions are
    /// keyed by `mcp-session-id`, the client's session ends for good (docs/filter.md, Sessions).
    fn end_deleted_session(&self, host: &dyn Host) {
        let (Ok(l), Some(session)) = (&self.plugin.loaded, &self.session) else {
            return;
        };
        // Only the MCP session the request named ends (not a principal's run it was decided in).
        if l.policy.cfg.session.key != SessionKeySource::McpSessionId
            || self.key.as_ref() != Some(session)
        {
            return;
        }
        let accepted = host
            .response_headers()
            .iter()
            .find(|(n, _)| n == ":status")
            .is_some_and(|(_, v)| v.starts_with('2') && v.len() == 3);
        if accepted {
            l.sessions.end_and_forget(host, session, EndReason::Deleted);
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
    ) -> Option<Option<(String, IntentSource)>> {
        let session_cfg = &l.policy.cfg.session;
        // The request named no session (it may still have been decided in its principal's run).
        if self.key.is_some()
            || session_cfg.key != SessionKeySource::McpSessionId
            || !matches!(shape, Shape::Mcp { batch: false, .. })
        {
            return None;
        }
        let (m, a) = plan.msgs.iter().zip(actions).next()?;
        if !normalize::Method::Initialize.is(&a.operation) {
            return None;
        }
        let intent = m.verdict.intent.clone().map(|i| (i, a.intent_source));
        (intent.is_some() || session_cfg.require_initialize).then_some(intent)
    }

    /// Apply a plan to the stream.
    fn enforce(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        shape: &Shape,
        actions: &[Action],
        plan: Plan,
    ) -> FilterAction {
        let policy = &l.policy;
        let receipts: Vec<(&Receipt, &str)> = plan
            .msgs
            .iter()
            .filter_map(|m| Some((m.receipt.as_ref()?, m.receipt_line.as_deref()?)))
            .chain(plan.followups.iter().map(|(r, line)| (r, line.as_str())))
            .collect();
        let rule = deciding_msg(&plan).map_or("none", |m| m.rule.as_str());
        log_decisions(host, &plan, actions);
        // The agent's own credential headers reach only the destinations configured to get
        // them, whatever is decided (`docs/credentials.md`); a `set_header` of the pack and an
        // injected credential are applied after this.
        for name in crate::credentials::ambient_to_strip(
            &policy.cfg.credentials,
            &self.head.headers,
            actions.first(),
        ) {
            host.set_request_header(&name, None);
        }
        let (json, header) = receipts_out(&receipts, policy.cfg.receipts.header);
        match plan.overall {
            Decision::Deny | Decision::StepUp
                if let Some(errors) = answer::refused_responses(shape, &plan) =>
            {
                // Only client responses to server requests, refused: the server gets errors in
                // their place, so its pending request fails now instead of waiting out its
                // timeout (docs/filter.md, "Client responses").
                host.replace_request_body(&errors);
                if self.head.header("content-length").is_some() {
                    host.set_request_header("content-length", Some(&errors.len().to_string()));
                }
                self.forward(
                    host,
                    Forward {
                        decision: Decision::Deny,
                        rule,
                        chain_name: &plan.chain_name,
                        json,
                        receipt_header: header,
                        warnings: &plan.warnings,
                        inspector: None,
                    },
                );
                FilterAction::Continue
            }
            Decision::Deny | Decision::StepUp => {
                set_state(
                    host,
                    plan.overall.as_str(),
                    rule,
                    &plan.chain_name,
                    json.as_deref(),
                );
                let metric = if plan.overall == Decision::StepUp {
                    Metric::StepUp
                } else {
                    Metric::Deny
                };
                self.plugin.metrics.count(host, metric);
                if plan.overall == Decision::StepUp
                    && self.inband_step_up(host, l, shape, &plan, actions, &header)
                {
                    return FilterAction::Pause;
                }
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
                self.plugin.metrics.count(host, Metric::Defer);
                set_state(
                    host,
                    plan.overall.as_str(),
                    rule,
                    &plan.chain_name,
                    json.as_deref(),
                );
                self.start_defer(host, l, shape, m, action, &plan.chain_name)
            }
            Decision::Allow | Decision::Modify if policy.cut(Stage::WriteBack) => {
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
                self.begin_session = self.session_to_begin(l, shape, &plan, actions);
                self.answers_initialize = matches!(shape, Shape::Mcp { .. })
                    && actions
                        .iter()
                        .any(|a| normalize::Method::Initialize.is(&a.operation));
                let inspector = self.inspect_response(l, shape, &plan, actions);
                if let Some((m, action)) = plan
                    .msgs
                    .iter()
                    .zip(actions)
                    .find(|(m, _)| m.credential.is_some())
                {
                    let held = credential::Held {
                        decision: plan.overall,
                        rule: rule.to_owned(),
                        chain_name: plan.chain_name.clone(),
                        receipts: receipts
                            .iter()
                            .map(|(r, line)| ((*r).clone(), (*line).to_owned()))
                            .collect(),
                        warnings: plan.warnings.clone(),
                        inspector,
                    };
                    // Until the credential is there, the access log says what was decided.
                    set_state(
                        host,
                        plan.overall.as_str(),
                        rule,
                        &plan.chain_name,
                        json.as_deref(),
                    );
                    return self.start_credential(host, l, shape, m, action, held);
                }
                self.forward(
                    host,
                    Forward {
                        decision: plan.overall,
                        rule,
                        chain_name: &plan.chain_name,
                        json,
                        receipt_header: header,
                        warnings: &plan.warnings,
                        inspector,
                    },
                );
                FilterAction::Continue
            }
        }
    }

    /// The allow path: the decision and receipt headers for the upstream (and, on the response,
    /// for the agent), the response inspector, the filter state, the metric.
    fn forward(&mut self, host: &dyn Host, f: Forward<'_>) {
        let mut add = vec![(DECISION_HEADER.to_owned(), f.decision.as_str().to_owned())];
        if !f.receipt_header.is_empty() {
            add.push((RECEIPT_HEADER.to_owned(), f.receipt_header));
        }
        if let Some(w) = warning_value(f.warnings) {
            add.push((WARNING_HEADER.to_owned(), w));
        }
        for (n, v) in &add {
            host.set_request_header(n, Some(v));
        }
        if f.inspector.is_some() {
            // What the filter must read, the server sends uncompressed.
            host.set_request_header("accept-encoding", Some("identity"));
        }
        self.add_to_response = add;
        self.inspector = f.inspector;
        set_state(
            host,
            f.decision.as_str(),
            f.rule,
            f.chain_name,
            f.json.as_deref(),
        );
        self.receipt_json = f.json;
        let metric = match f.decision {
            Decision::Modify => Metric::Modify,
            // Refused client responses, replaced by errors for the server.
            Decision::Deny | Decision::StepUp => Metric::Deny,
            Decision::Allow | Decision::Defer => Metric::Allow,
        };
        self.plugin.metrics.count(host, metric);
        self.phase = Phase::Forwarded;
    }
}

/// One log line per message: debug for an ALLOW, info for everything else.
fn log_decisions(host: &dyn Host, plan: &Plan, actions: &[Action]) {
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
}
