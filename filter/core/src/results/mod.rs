//! The response path: every server-to-agent message of an inspected stream is read before the
//! agent gets it (docs/filter.md, "The response path"):
//! - results of `tools/list`, `prompts/list` and `resources/list` are filtered so the agent never
//!   sees what no call could use ([`Cx::keeps`]);
//! - an entry of those lists whose definition carries an instruction aimed at the agent is removed
//!   unless a rule of the pack keeps it (`poison.rs`), and a `result` receipt says why;
//! - tool results are evaluated as `tools/result` pseudo-actions (`result.rs`): taints and other
//!   effects, MODIFY (redaction), DENY (an error in place of the result);
//! - server-to-client requests (`sampling/createMessage`, `elicitation/create`, `roots/list`, ...)
//!   are evaluated as actions of their own: a DENY removes them from the stream;
//! - responses the stream did not ask for (the standalone GET stream, a resumed stream replaying
//!   results of other requests) are inspected as results of an unknown call.
//!
//! A response the filter must read is readable to it or replaced: the request's
//! `accept-encoding` is set to `identity` (`stream/`); a response that comes compressed anyway,
//! or in another content type, is replaced by JSON-RPC errors (-32044) for the requests it
//! answers, with headers that say so; a result over `limits.max_body_bytes` is replaced by an
//! error, never passed unread. JSON bodies are held to their end; SSE events pass as soon as they
//! are complete and checked, each byte scanned once ([`sse::Reader`]).

mod egress;
mod ids;
mod inject;
mod pinned;
mod poison;
mod result;
mod sse;

use std::rc::Rc;

use bundle::action::{Action, Risk};
use bundle::matchers::glob_match;
use bundle::receipt::Receipt;
use bundle::session::SessionState;
use bundle::verdict::{Decision, Modification};
use serde_json::{Value, json};

use crate::host::FilterAction;
use crate::host::{Host, LogLevel};
use crate::normalize::JsonRpcId;
use crate::normalize::Method;
use crate::policy::Policy;
use crate::session::Sessions;
use crate::session::bindings::{self, Bound};

/// JSON-RPC error code of a list response the filter could not check.
pub const UNCHECKED_RESPONSE_CODE: i64 = -32044;

/// What a request handed over to another stream awaits ([`Bound::decision`] of an `Awaited`
/// binding is its index here): a list, an `initialize` answer's instructions, a result.
const HANDED_OVER: [Method; 8] = [
    Method::ToolsList,
    Method::PromptsList,
    Method::ResourcesList,
    Method::ResourcesTemplatesList,
    Method::Initialize,
    Method::ToolsCall,
    Method::PromptsGet,
    Method::ResourcesRead,
];

/// Whose handed-over requests a stream's answers may answer: its session, as its principal (when
/// one is known) runs it. `None` without a session.
fn handover_owner(cx: &Judge<'_>) -> Option<String> {
    let session = cx.session?;
    Some(format!("{}\n{session}", cx.principal.unwrap_or_default()))
}

/// Every spelling of a request id a client ties an answer to (`ids.rs`), as JSON text: the id as
/// sent, then each integer a client reads it as.
fn id_spellings(id: &Value) -> Vec<String> {
    let mut out = vec![id.to_string()];
    for n in ids::readings(id) {
        let s = n.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The `remove_tools` patterns of a list request's MODIFY.
fn removed_tools(mods: &[Modification]) -> Vec<String> {
    mods.iter()
        .filter_map(|m| match m {
            Modification::RemoveTools { patterns } => Some(patterns.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Which list a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// `tools/list`
    Tools,
    /// `prompts/list`
    Prompts,
    /// `resources/list`
    Resources,
    /// `resources/templates/list`: scanned for instructions only (a template names no resource
    /// a hypothetical call could be judged on, so none is hidden by policy).
    Templates,
}

impl ListKind {
    const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::Templates,
    ];

    /// The method that asks for this list.
    fn method(self) -> Method {
        match self {
            ListKind::Tools => Method::ToolsList,
            ListKind::Prompts => Method::PromptsList,
            ListKind::Resources => Method::ResourcesList,
            ListKind::Templates => Method::ResourcesTemplatesList,
        }
    }

    fn of(operation: &str) -> Option<Self> {
        match Method::from_name(operation)? {
            Method::ToolsList => Some(ListKind::Tools),
            Method::PromptsList => Some(ListKind::Prompts),
            Method::ResourcesList => Some(ListKind::Resources),
            Method::ResourcesTemplatesList => Some(ListKind::Templates),
            _ => None,
        }
    }

    fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    fn name_key(self) -> &'static str {
        match self {
            ListKind::Resources => "uri",
            ListKind::Templates => "uriTemplate",
            _ => "name",
        }
    }

    /// The hypothetical action for one entry.
    fn call(self, base: &Action, name: &str) -> Action {
        let mut a = base.clone();
        a.tool = None;
        a.prompt = None;
        a.resource = None;
        match self {
            ListKind::Tools => {
                a.operation = Method::ToolsCall.name().into();
                a.tool = Some(name.to_owned());
            }
            ListKind::Prompts => {
                a.operation = Method::PromptsGet.name().into();
                a.prompt = Some(name.to_owned());
            }
            ListKind::Resources | ListKind::Templates => {
                a.operation = Method::ResourcesRead.name().into();
                a.resource = Some(name.to_owned());
            }
        }
        a.set_arguments(json!({}));
        a.risk = Risk::default();
        a.size = 0;
        a
    }
}

/// What a request of this stream waits for.
#[derive(Clone, Debug)]
enum Awaits {
    /// A list, filtered before the agent sees it.
    List(ListPending),
    /// Content the agent's model reads, inspected: a tool result (`tools/call`), a resource's
    /// contents (`resources/read`), a prompt's messages (`prompts/get`); the request without its
    /// arguments (shared with [`Inspector::base`] when it is the stream's first request).
    Result(Rc<Action>),
    /// The server's `instructions` (`initialize`, `server/discover`): read like a list entry's
    /// description, since clients hand them to the model.
    Instructions(Rc<Action>),
    /// A `tasks/get` of a task handed out for a call (the call, without its arguments): the
    /// task's result, error or input requests are read as the call's would have been.
    Task(Action),
    /// Any other answer: passes as it is.
    Answer,
}

/// One request of the stream awaiting its response.
#[derive(Clone, Debug)]
struct Pending {
    id: JsonRpcId,
    awaits: Awaits,
    /// A 2026-07-28 `tools/call`, `prompts/get` or `resources/read`: the action decided, which
    /// a `requestState` or a task id in its answer is bound to (`session/bindings.rs`).
    bind: Option<Bound>,
}

/// The `resultType` values of 2026-07-28 results (and of the tasks extension).
const RESULT_COMPLETE: &str = "complete";
const RESULT_INPUT_REQUIRED: &str = "input_required";
const RESULT_TASK: &str = "task";

/// How the response body is handled.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    /// Not read: an error status, or nothing on the stream to check.
    Pass,
    /// One JSON document, held to its end.
    Json,
    /// An event stream, released event by event.
    Sse,
    /// The body cannot be read (compressed, another content type, too large): the agent gets
    /// `body` instead, and nothing of the original.
    Replace { body: Vec<u8>, sent: bool },
    /// The answer to a plain HTTP egress request, held to its end and judged as one result
    /// (`egress.rs`).
    Egress,
    /// An egress answer labelled binary, held until its first bytes say whether it is
    /// (`egress.rs`): then `Pass` or `Egress`.
    Sniff,
}

/// Set `key` of an object (nothing on anything else: the callers only pass objects they read
/// the member from).
fn set_member(v: &mut Value, key: &str, member: Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.insert(key.to_owned(), member);
    }
}

/// The notification that carries a task's whole state (tasks extension).
const TASK_NOTIFICATION: &str = "notifications/tasks";

/// What becomes of a task's state.
enum TaskOutcome {
    Keep,
    /// The task, rewritten (MODIFY of its result).
    Task(Value),
    /// An answer in place of the whole message (a denial, an error).
    Answer(Value),
}

/// What becomes of one message.
enum Outcome {
    Keep,
    Replace(Value),
    Drop,
}

/// The response side of one MCP stream (`None` in `Stream` for plain HTTP).
#[derive(Clone, Debug)]
pub(crate) struct Inspector {
    pending: Vec<Pending>,
    /// The stream's request, without arguments: the base of the actions for what the server
    /// sends unasked (server requests, results replayed on a GET stream).
    base: Rc<Action>,
    /// The pack can act on tool results (`PackReads::results`).
    results: bool,
    mode: Mode,
    reader: sse::Reader,
    /// Receipts sealed and not yet handed to the stream (for the access log).
    sealed: Vec<Receipt>,
    /// Lists and results replaced by errors whose receipts are not sealed yet: `(request, why)`.
    unrecorded: Vec<(Action, String)>,
    /// The answer to a plain HTTP egress request (`egress.rs`), not an MCP stream.
    egress: bool,
    /// Whose server-held state the stream's answers hand out (`None`: not a 2026-07-28 stream).
    bind_owner: Option<String>,
    /// The session a stream opened without one names in its first `endpoint` event (the legacy
    /// HTTP+SSE transport's `GET /sse`): the session its answers are judged in.
    named_session: Option<Rc<str>>,
    /// The server accepted the stream's requests without answering them here (`202`): their
    /// answers come on another stream ([`Self::hand_over`]).
    answered_elsewhere: bool,
}

impl Inspector {
    /// The inspector of a forwarded MCP stream: `msgs` are its allowed messages `(id, action,
    /// modifications)` (none for a GET stream); `base` the action the stream's unasked messages
    /// are judged on; `bind_owner` whose `requestState` the answers of a 2026-07-28 stream hand
    /// out (`None` for other streams).
    pub(crate) fn new<'a>(
        msgs: impl Iterator<Item = (Option<&'a JsonRpcId>, &'a Action, &'a [Modification])>,
        base: &Action,
        results: bool,
        bind_owner: Option<String>,
    ) -> Self {
        // The stream's first request is most often its only one: its argumentless copy is made
        // once, for both the base and what the request awaits.
        let bare_base = Rc::new(result::without_arguments(base));
        let without_arguments = |action: &Action| {
            if std::ptr::eq(action, base) {
                Rc::clone(&bare_base)
            } else {
                Rc::new(result::without_arguments(action))
            }
        };
        let mut pending = Vec::new();
        for (id, action, mods) in msgs {
            let Some(id) = id else { continue };
            let awaits = if let Some(kind) = ListKind::of(&action.operation) {
                Awaits::List(ListPending {
                    kind,
                    action: action.clone(),
                    remove: removed_tools(mods),
                })
            } else if [Method::ToolsCall, Method::ResourcesRead, Method::PromptsGet]
                .iter()
                .any(|m| m.is(&action.operation))
            {
                Awaits::Result(without_arguments(action))
            } else if Method::Initialize.is(&action.operation) || action.operation == DISCOVER {
                Awaits::Instructions(without_arguments(action))
            } else if Method::TasksGet.is(&action.operation) && bind_owner.is_some() {
                // The task's call: a tools/call of the tool the binding named (`stream/`).
                let mut call = result::without_arguments(action);
                Method::ToolsCall.name().clone_into(&mut call.operation);
                Awaits::Task(call)
            } else {
                Awaits::Answer
            };
            let binds = matches!(
                Method::from_name(&action.operation),
                Some(Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead)
            );
            let bind = (binds && bind_owner.is_some()).then(|| Bound {
                digest: bindings::action_digest(action),
                decision: if mods.is_empty() {
                    bindings::FORWARDED_ALLOW
                } else {
                    bindings::FORWARDED_MODIFY
                },
                name: action.tool.clone().unwrap_or_default(),
            });
            pending.push(Pending {
                id: id.clone(),
                awaits,
                bind,
            });
        }
        Inspector {
            pending,
            base: bare_base,
            results,
            mode: Mode::Pass,
            reader: sse::Reader::default(),
            sealed: Vec::new(),
            unrecorded: Vec::new(),
            egress: false,
            bind_owner,
            named_session: None,
            answered_elsewhere: false,
        }
    }

    /// The pending request an answer with `id` answers: the one with exactly that id, else the
    /// first one a client would tie it to (`ids.rs`: `"1"`, `1.0` or `"0x1"` answer request 1).
    fn pending_index(&self, id: &Value) -> Option<usize> {
        if let Some(i) = self.pending.iter().position(|p| p.id.to_json() == *id) {
            return Some(i);
        }
        let read = ids::readings(id);
        if read.is_empty() {
            return None;
        }
        self.pending.iter().position(|p| {
            ids::readings(&p.id.to_json())
                .iter()
                .any(|n| read.contains(n))
        })
    }

    /// Whether the server accepted the stream's requests without answering them on it (`202`):
    /// the stream then hands them over ([`Self::hand_over`]) and is not read further.
    pub(crate) fn answered_elsewhere(&self) -> bool {
        self.answered_elsewhere
    }

    /// The receipts sealed since the last call.
    pub(crate) fn take_receipts(&mut self) -> Vec<Receipt> {
        std::mem::take(&mut self.sealed)
    }

    /// Response headers: choose how the body is read. A 2xx response the filter cannot read
    /// (a `content-encoding`, or neither JSON nor SSE while requests await answers) is replaced:
    /// its headers say what the replacement is. Returns false when there is nothing to do.
    pub(crate) fn on_headers(&mut self, host: &dyn Host) -> bool {
        if self.egress {
            return self.egress_headers(host);
        }
        let headers = host.response_headers();
        let Legibility {
            compressed,
            types,
            illegible,
        } = Legibility::of(&headers);
        let ct = types.first().cloned().unwrap_or_default();
        let is_json = |t: &String| t.starts_with("application/json");
        let is_sse = |t: &String| t.starts_with("text/event-stream");
        let answered = !self.pending.is_empty();
        let all = |n: &'static str| {
            headers
                .iter()
                .filter(move |(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let status = all(":status").next().unwrap_or_default();
        if status == "202" && !types.iter().any(|t| is_json(t) || is_sse(t)) {
            // Accepted, answered elsewhere: the legacy transport answers every message on its
            // event stream, and Streamable HTTP clients then await the answer on the GET stream.
            self.answered_elsewhere = answered;
            return false;
        }
        if !status.starts_with('2') {
            // An error answer in JSON may still carry messages (a result, an error payload):
            // read like any; one the filter cannot read answers nothing that is awaited.
            // Anything else (Envoy's own error pages) passes as it is.
            if !types.iter().any(is_json) || (illegible.is_some() && !answered) {
                return false;
            }
            if illegible.is_none() {
                self.mode = Mode::Json;
                host.set_response_header("content-length", None);
                return true;
            }
        }
        let unreadable = if compressed {
            illegible
        } else if illegible.is_some() {
            // Read only when the client would read it: it answers a request, or it is JSON or
            // an event stream.
            if !(answered || types.iter().any(|t| is_json(t) || is_sse(t))) {
                return false;
            }
            illegible
        } else if is_json(&ct) {
            // One JSON document answers this stream's requests: there is something to read only
            // when a list or a result the pack can see is awaited.
            let to_check = self.pending.iter().any(|p| match p.awaits {
                Awaits::List(_) | Awaits::Instructions(_) | Awaits::Task(_) => true,
                Awaits::Result(_) => self.results || p.bind.is_some(),
                Awaits::Answer => p.bind.is_some(),
            });
            if !to_check {
                return false;
            }
            self.mode = Mode::Json;
            None
        } else if is_sse(&ct) {
            self.mode = Mode::Sse;
            None
        } else if answered {
            Some("the response is neither json nor an event stream".to_owned())
        } else {
            return false;
        };
        // The body may change length: Envoy re-frames it.
        host.set_response_header("content-length", None);
        if let Some(why) = unreadable {
            host.set_response_header("content-encoding", None);
            host.set_response_header("content-type", Some("application/json"));
            let body = if self.pending.is_empty() {
                // A GET stream answers nothing: the agent gets a plain HTTP error.
                host.set_response_header(":status", Some("502"));
                unreadable_body(&why)
            } else {
                self.errors(&why)
            };
            host.log(
                LogLevel::Warn,
                &format!("portcullis: response replaced: {why}"),
            );
            self.mode = Mode::Replace { body, sent: false };
        }
        true
    }

    /// JSON-RPC errors (-32044) in place of the answers to every request still awaiting one
    /// (all of them, or only lists and results with `checked_only`); each replaced list or result
    /// is recorded by a receipt at the next chance (`record_refusals`).
    fn refuse_pending(&mut self, why: &str, checked_only: bool) -> Vec<Value> {
        let mut errs = Vec::new();
        for p in self.pending.drain(..) {
            let action = match p.awaits {
                Awaits::Answer if checked_only => continue,
                Awaits::Answer => None,
                Awaits::List(ListPending { action, .. }) | Awaits::Task(action) => Some(action),
                Awaits::Result(action) | Awaits::Instructions(action) => {
                    Some(Rc::unwrap_or_clone(action))
                }
            };
            errs.push(unchecked_error(&p.id.to_json(), why));
            if let Some(a) = action {
                self.unrecorded.push((a, why.to_owned()));
            }
        }
        errs
    }

    /// [`Self::refuse_pending`] as one JSON body.
    fn errors(&mut self, why: &str) -> Vec<u8> {
        match self.refuse_pending(why, false).as_slice() {
            [one] => one.to_string().into_bytes(),
            errs => Value::Array(errs.to_vec()).to_string().into_bytes(),
        }
    }

    /// [`Self::refuse_pending`] as SSE events.
    fn error_events(&mut self, why: &str, checked_only: bool, out: &mut Vec<u8>) {
        for e in self.refuse_pending(why, checked_only) {
            out.extend_from_slice(format!("event: message\ndata: {e}\n\n").as_bytes());
        }
    }

    /// Seal a DENY `result` receipt for every answer replaced by an error since the last call.
    fn record_refusals(&mut self, cx: &Judge<'_>) {
        for (call, why) in std::mem::take(&mut self.unrecorded) {
            if let Some(r) = result::refused(cx, &call, &why) {
                self.sealed.push(r);
            }
        }
    }

    /// Response body data; see [`Self::body`]. Answers replaced by errors get their receipts.
    pub(crate) fn on_body(
        &mut self,
        cx: &Judge<'_>,
        body_size: usize,
        end_of_stream: bool,
        writable: bool,
    ) -> FilterAction {
        let a = self.body(cx, body_size, end_of_stream, writable);
        let named = self.named_session.clone();
        self.record_refusals(&cx.in_session(named.as_deref()));
        a
    }

    /// Response body data; `body_size` is everything Envoy holds for the filter (JSON: the whole
    /// body so far; SSE: this chunk, every chunk being released).
    /// `writable`: Envoy holds a body buffer the filter may replace (a body callback, or trailers
    /// after a body the filter held); not so for trailers after the body went.
    fn body(
        &mut self,
        cx: &Judge<'_>,
        body_size: usize,
        end_of_stream: bool,
        writable: bool,
    ) -> FilterAction {
        let limit = cx.l.cfg.max_body_bytes;
        match &mut self.mode {
            Mode::Pass => FilterAction::Continue,
            // Trailers after the body went: Envoy holds no body to write into.
            _ if !writable => FilterAction::Continue,
            // The end, with no data in a held JSON body or a replaced one: nothing to write over.
            Mode::Json | Mode::Egress | Mode::Sniff | Mode::Replace { .. }
                if body_size == 0 && end_of_stream =>
            {
                FilterAction::Continue
            }
            Mode::Replace { body, sent } => {
                if *sent {
                    cx.host.replace_response_body(b"");
                } else {
                    cx.host.replace_response_body(body);
                    *sent = true;
                }
                FilterAction::Continue
            }
            Mode::Egress => self.egress_body(cx, body_size, end_of_stream),
            Mode::Sniff => self.egress_sniff(cx, body_size, end_of_stream),
            Mode::Json => {
                if body_size > limit {
                    let body = self.errors(&format!(
                        "the response is larger than {limit} bytes, the inspection limit"
                    ));
                    cx.host.replace_response_body(&body);
                    self.mode = Mode::Replace { body, sent: true };
                    return FilterAction::Continue;
                }
                if !end_of_stream {
                    return FilterAction::Pause;
                }
                let buf = cx.host.response_body(0, body_size).unwrap_or_default();
                if let Some(out) = self.json_body(cx, &buf) {
                    cx.host.replace_response_body(&out);
                }
                self.mode = Mode::Pass;
                FilterAction::Continue
            }
            Mode::Sse => {
                let chunk = if body_size == 0 {
                    Vec::new()
                } else {
                    cx.host.response_body(0, body_size).unwrap_or_default()
                };
                let mut items = Vec::new();
                self.reader.feed(&chunk, limit, &mut items);
                let mut out = Vec::with_capacity(chunk.len());
                for item in items {
                    match item {
                        sse::Item::Event {
                            raw,
                            data,
                            has_data,
                        } => {
                            if !has_data {
                                out.extend_from_slice(&raw);
                                continue;
                            }
                            match self.event(cx, &data, sse::event_type(&raw)) {
                                Ok(Outcome::Keep) => out.extend_from_slice(&raw),
                                Ok(Outcome::Replace(v)) => {
                                    out.extend_from_slice(&sse::rewrite(&raw, &v.to_string()));
                                }
                                Ok(Outcome::Drop) => {
                                    out.extend_from_slice(
                                        b": portcullis: a message was removed\n\n",
                                    );
                                }
                                Err(why) => self.error_events(&why, false, &mut out),
                            }
                        }
                        sse::Item::Oversize => {
                            // Whatever it answered is answered with an error instead.
                            let why = format!(
                                "an event is larger than {limit} bytes, the inspection limit"
                            );
                            self.error_events(&why, false, &mut out);
                            cx.host
                                .log(LogLevel::Warn, &format!("portcullis: {why}; removed"));
                        }
                    }
                }
                if end_of_stream {
                    let mut last = Vec::new();
                    let cut = self.reader.finish(limit, &mut last);
                    for item in last {
                        if let sse::Item::Event {
                            raw,
                            data,
                            has_data: true,
                        } = item
                        {
                            match self.event(cx, &data, sse::event_type(&raw)) {
                                Ok(Outcome::Keep) => out.extend_from_slice(&raw),
                                Ok(Outcome::Replace(v)) => {
                                    out.extend_from_slice(&sse::rewrite(&raw, &v.to_string()));
                                }
                                Ok(Outcome::Drop) => {}
                                Err(why) => self.error_events(&why, false, &mut out),
                            }
                        }
                    }
                    // An event cut off mid-way is never dispatched by an SSE client: what it may
                    // have answered is answered with an error instead of silence.
                    if cut {
                        self.error_events("the stream ended inside an event", true, &mut out);
                    } else {
                        self.hand_over(cx);
                    }
                }
                if out != chunk {
                    cx.host.replace_response_body(&out);
                }
                FilterAction::Continue
            }
        }
    }

    /// A whole JSON body: the new body when something changed. A body that is not JSON (after
    /// an optional byte-order mark, which lenient clients skip) is replaced by errors.
    fn json_body(&mut self, cx: &Judge<'_>, buf: &[u8]) -> Option<Vec<u8>> {
        let text = buf.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(buf);
        let v = match read_json(text) {
            Ok(v) => v,
            Err(why) => {
                if self.pending.is_empty() {
                    return None;
                }
                return Some(self.errors(&why));
            }
        };
        match self.messages(cx, v) {
            (_, false) if text.len() == buf.len() => None,
            (v, _) => Some(v.to_string().into_bytes()),
        }
    }

    /// One event's data: a message, or an array of them.
    /// `Err` (why) when the data is JSON that clients read in different ways: what it may answer
    /// is answered with errors instead.
    fn event(
        &mut self,
        cx: &Judge<'_>,
        data: &str,
        kind: Option<&[u8]>,
    ) -> Result<Outcome, String> {
        if kind == Some(b"endpoint".as_slice())
            && cx.session.is_none()
            && self.named_session.is_none()
        {
            self.named_session = endpoint_session(data);
        }
        let named = self.named_session.clone();
        let cx = &cx.in_session(named.as_deref());
        let text = data.strip_prefix('\u{feff}').unwrap_or(data);
        let v = match crate::normalize::json::parse(text.as_bytes(), RESPONSE_JSON_DEPTH) {
            Ok(p) => p.value,
            Err(e) if e.is_ambiguous() => return Err(ambiguous(&e)),
            // Not JSON, in an event of a type other than `message` (the legacy transport's
            // `endpoint`, which names where to post): no client reads it as a message; it passes.
            // (An empty `event:` is `message` to clients.)
            Err(_) if kind.is_some_and(|k| !k.is_empty() && k != b"message") => {
                return Ok(Outcome::Keep);
            }
            // Not JSON: no client can read it as a message either; nothing to pass.
            Err(_) => return Ok(Outcome::Drop),
        };
        Ok(match self.messages(cx, v) {
            (_, false) if text.len() == data.len() => Outcome::Keep,
            (Value::Array(a), _) if a.is_empty() => Outcome::Drop,
            (v, _) => Outcome::Replace(v),
        })
    }

    /// A message or an array of them (a batch): the value after inspection, and whether it
    /// changed.
    fn messages(&mut self, cx: &Judge<'_>, v: Value) -> (Value, bool) {
        match v {
            Value::Array(items) => {
                let mut changed = false;
                let mut out = Vec::with_capacity(items.len());
                for m in items {
                    match self.message(cx, &m) {
                        Outcome::Keep => out.push(m),
                        Outcome::Replace(n) => {
                            out.push(n);
                            changed = true;
                        }
                        Outcome::Drop => changed = true,
                    }
                }
                (Value::Array(out), changed)
            }
            m => match self.message(cx, &m) {
                Outcome::Keep => (m, false),
                Outcome::Replace(n) => (n, true),
                // A lone message removed: an empty batch says "nothing" to a client.
                Outcome::Drop => (Value::Array(Vec::new()), true),
            },
        }
    }

    /// One server-to-agent message.
    fn message(&mut self, cx: &Judge<'_>, msg: &Value) -> Outcome {
        let id = msg.get("id");
        if let Some(method) = msg.get("method").and_then(Value::as_str) {
            if id.is_none() {
                // A notification: progress, logs and list changes act on nothing, but a changed
                // tool list makes the tools' pins re-checked (`pinned.rs`).
                if method == "notifications/tools/list_changed" {
                    pinned::list_changed(cx, &self.base);
                }
                if method == TASK_NOTIFICATION && self.bind_owner.is_some() {
                    return self.task_notification(cx, msg);
                }
                return Outcome::Keep;
            }
            let action = result::server_request_action(&self.base, method, msg);
            return self.judged(cx, &action, msg, "params");
        }
        let Some(id) = id else {
            return Outcome::Keep;
        };
        let (awaits, bind, untied) = match self.pending_index(id) {
            Some(i) => {
                let p = self.pending.swap_remove(i);
                (p.awaits, p.bind, false)
            }
            // An answer to a request of another stream (the GET stream, a resumed stream,
            // another POST's, the legacy transport's): clients tie it by its id all the same.
            // A request whose stream ended before its answer was handed over; any other answer
            // is judged as every answer it could be.
            None => match self.handed_over(cx, id) {
                Some(awaits) => (awaits, None, false),
                None => (
                    Awaits::Result(Rc::new(self.base_as(Method::ToolsCall))),
                    None,
                    true,
                ),
            },
        };
        if msg.get("result").is_some() && msg.get("error").is_some() {
            // Clients read one or the other (the TypeScript SDK the result, pydantic's union
            // either): checking one would pass the other unread.
            return self.unchecked(
                &awaits,
                id,
                "the answer has both `result` and `error`; clients read one or the other",
            );
        }
        match msg.get("result").and_then(|r| r.get("resultType")) {
            // Absent (an earlier protocol version), or a complete result: read as it is below.
            None => {}
            Some(Value::String(t)) if t == RESULT_COMPLETE => {}
            Some(Value::String(t)) if t == RESULT_TASK => {
                return match bind.filter(|_| matches!(awaits, Awaits::Result(_))) {
                    Some(call) => self.task_created(cx, msg, &call),
                    None => self.unchecked(
                        &awaits,
                        id,
                        "a task handle answers only a 2026-07-28 tools/call",
                    ),
                };
            }
            Some(Value::String(t)) if t == RESULT_INPUT_REQUIRED => {
                return match bind {
                    Some(call) => self.input_required(cx, msg, call.digest),
                    None => self.unchecked(
                        &awaits,
                        id,
                        "an `InputRequiredResult` answers only a 2026-07-28 tools/call, \
                         prompts/get or resources/read",
                    ),
                };
            }
            Some(_) => {
                return self.unchecked(
                    &awaits,
                    id,
                    "the result's `resultType` is not one the filter knows",
                );
            }
        }
        match awaits {
            Awaits::Answer => Outcome::Keep,
            Awaits::Instructions(request) => {
                let mut m = msg.clone();
                if poison::strip_instructions(cx, &request, &mut m, &mut self.sealed) {
                    Outcome::Replace(m)
                } else {
                    Outcome::Keep
                }
            }
            Awaits::Task(call) => {
                let Some(task) = msg.get("result") else {
                    // An error answer to tasks/get: read like the call's error.
                    let action = result::result_action(&call, msg);
                    return self.judged(cx, &action, msg, "error");
                };
                match self.task_state(cx, &call, task, id) {
                    TaskOutcome::Keep => Outcome::Keep,
                    TaskOutcome::Task(t) => {
                        let mut m = msg.clone();
                        set_member(&mut m, "result", t);
                        Outcome::Replace(m)
                    }
                    TaskOutcome::Answer(e) => Outcome::Replace(e),
                }
            }
            Awaits::List(p) => {
                let mut m = msg.clone();
                if list_filter(cx, &p, &mut m, &mut self.sealed) > 0 {
                    Outcome::Replace(m)
                } else {
                    Outcome::Keep
                }
            }
            Awaits::Result(call) if untied => self.untied(cx, &call, msg),
            Awaits::Result(call) => {
                if !self.results {
                    return Outcome::Keep;
                }
                let action = result::result_action(&call, msg);
                let field = if msg.get("result").is_some() {
                    "result"
                } else {
                    "error"
                };
                self.judged(cx, &action, msg, field)
            }
        }
    }

    /// An answer the filter cannot read as what it awaited: an error (-32044) in its place, and
    /// the request recorded as refused.
    fn unchecked(&mut self, awaits: &Awaits, id: &Value, why: &str) -> Outcome {
        let action = match awaits {
            Awaits::List(ListPending { action, .. }) | Awaits::Task(action) => Some(action),
            Awaits::Result(action) => Some(&**action),
            Awaits::Instructions(_) | Awaits::Answer => None,
        };
        if let Some(action) = action {
            self.unrecorded.push((action.clone(), why.to_owned()));
        }
        Outcome::Replace(unchecked_error(id, why))
    }

    /// An `InputRequiredResult` (MRTR): its `requestState` passes untouched and is bound to the
    /// action decided (`digest`), so the retry that carries it must be the same action; each of
    /// its `inputRequests` is a server-to-client request the agent will answer, judged like one
    /// (a denied one refuses the whole answer).
    fn input_required(&mut self, cx: &Judge<'_>, msg: &Value, digest: [u8; 32]) -> Outcome {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let result = msg.get("result").unwrap_or(&Value::Null);
        if let Some(e) = self.input_requests(cx, result, &id) {
            return Outcome::Replace(e);
        }
        match result.get("requestState") {
            None => Outcome::Keep,
            Some(Value::String(state)) => {
                let owner = self.bind_owner.as_deref().unwrap_or("anyone");
                let key = bindings::key_of(bindings::BindKind::RequestState, owner, state);
                let bound = Bound {
                    digest,
                    decision: bindings::FORWARDED_ALLOW,
                    name: String::new(),
                };
                match bindings::bind(cx.host, key, &bound, cx.host.now_ms()) {
                    Ok(()) => Outcome::Keep,
                    Err(e) => {
                        cx.host.log(
                            LogLevel::Warn,
                            &format!("portcullis: a requestState cannot be bound: {}", e.0),
                        );
                        Outcome::Replace(unchecked_error(
                            &id,
                            "the server's `requestState` cannot be bound to its decision",
                        ))
                    }
                }
            }
            Some(_) => Outcome::Replace(unchecked_error(&id, "`requestState` is not a string")),
        }
    }

    /// Judge each of the `inputRequests` in `holder` (an `InputRequiredResult`, or a task waiting
    /// for input) as the server-to-client request it is: the answer that replaces the message
    /// when one is denied or unreadable (`id` is the message's).
    fn input_requests(&mut self, cx: &Judge<'_>, holder: &Value, id: &Value) -> Option<Value> {
        let requests = holder.get("inputRequests")?;
        let Some(requests) = requests.as_object() else {
            return Some(unchecked_error(id, "`inputRequests` is not an object"));
        };
        for (key, request) in requests {
            let Some(method) = request.get("method").and_then(Value::as_str) else {
                return Some(unchecked_error(
                    id,
                    "an entry of `inputRequests` has no method",
                ));
            };
            let asked = json!({"jsonrpc": "2.0", "id": key, "method": method,
                "params": request.get("params").cloned().unwrap_or(Value::Null)});
            let action = result::server_request_action(&self.base, method, &asked);
            let j = result::judge(cx, &action, &asked, "params");
            if let Some(r) = j.receipt {
                self.sealed.push(r);
            }
            if let result::Effect::Deny(d) = j.outcome {
                let mut e = d.jsonrpc_error(None);
                if let Some(obj) = e.as_object_mut() {
                    obj.insert("id".into(), id.clone());
                }
                return Some(e);
            }
        }
        None
    }

    /// A task handle (`resultType: "task"`) answering a 2026-07-28 `tools/call`: its task id is
    /// bound to the call (`session/bindings.rs`), so a `tasks/*` of another principal or
    /// session is refused and the task's result is read as the call's when fetched. A handle
    /// that cannot be bound is replaced by an error (the agent could not fetch its result).
    fn task_created(&mut self, cx: &Judge<'_>, msg: &Value, call: &Bound) -> Outcome {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let result = msg.get("result").unwrap_or(&Value::Null);
        let Some(task) = result.get("taskId").and_then(Value::as_str) else {
            return Outcome::Replace(unchecked_error(&id, "a task handle without a `taskId`"));
        };
        let owner = self.bind_owner.as_deref().unwrap_or("anyone");
        let key = bindings::key_of(bindings::BindKind::Task, owner, task);
        if let Err(e) = bindings::bind(cx.host, key, call, cx.host.now_ms()) {
            cx.host.log(
                LogLevel::Warn,
                &format!("portcullis: a task cannot be bound to its call: {}", e.0),
            );
            return Outcome::Replace(unchecked_error(
                &id,
                "the task cannot be bound to the call it continues",
            ));
        }
        // The handle itself carries no result; what it says (`statusMessage`) is read when the
        // task is fetched.
        Outcome::Keep
    }

    /// A task's state (a `tasks/get` answer or a `notifications/tasks`' params) of the call
    /// `call`: its result or error read as the call's, its input requests as server requests.
    fn task_state(
        &mut self,
        cx: &Judge<'_>,
        call: &Action,
        task: &Value,
        id: &Value,
    ) -> TaskOutcome {
        if let Some(e) = self.input_requests(cx, task, id) {
            return TaskOutcome::Answer(e);
        }
        if !self.results {
            return TaskOutcome::Keep;
        }
        for field in ["result", "error"] {
            let Some(inner) = task.get(field) else {
                continue;
            };
            // The task's payload as the answer the call would have had.
            let as_answer = json!({"jsonrpc": "2.0", "id": id, field: inner});
            let action = result::result_action(call, &as_answer);
            match self.judged(cx, &action, &as_answer, field) {
                Outcome::Keep => {}
                Outcome::Replace(v) if v.get(field).is_some() => {
                    let mut t = task.clone();
                    set_member(&mut t, field, v.get(field).cloned().unwrap_or(Value::Null));
                    return TaskOutcome::Task(t);
                }
                // Denied: the denial in place of the task's answer.
                Outcome::Replace(v) => return TaskOutcome::Answer(v),
                Outcome::Drop => {
                    return TaskOutcome::Answer(unchecked_error(
                        id,
                        "the task's result was removed",
                    ));
                }
            }
        }
        TaskOutcome::Keep
    }

    /// A `notifications/tasks` carries a whole task, result included: read as the `tasks/get`
    /// answer it stands for when the task was handed to this stream's owner; removed when not
    /// (nothing the filter cannot place reaches the agent).
    fn task_notification(&mut self, cx: &Judge<'_>, msg: &Value) -> Outcome {
        let params = msg.get("params").unwrap_or(&Value::Null);
        let Some(task) = params.get("taskId").and_then(Value::as_str) else {
            return Outcome::Drop;
        };
        let owner = self.bind_owner.as_deref().unwrap_or("anyone");
        let key = bindings::key_of(bindings::BindKind::Task, owner, task);
        let bound = match bindings::lookup(cx.host, key, cx.host.now_ms()) {
            Ok(Some(b)) => b,
            Ok(None) | Err(_) => {
                cx.host.log(
                    LogLevel::Warn,
                    "portcullis: a task notification for a task not handed to this stream's \
                     owner was removed",
                );
                return Outcome::Drop;
            }
        };
        let mut call = self.base_as(Method::ToolsCall);
        call.tool = (!bound.name.is_empty()).then_some(bound.name);
        match self.task_state(cx, &call, params, &Value::Null) {
            TaskOutcome::Keep => Outcome::Keep,
            TaskOutcome::Task(t) => {
                let mut m = msg.clone();
                set_member(&mut m, "params", t);
                Outcome::Replace(m)
            }
            TaskOutcome::Answer(_) => Outcome::Drop,
        }
    }

    /// An answer no request of this stream awaits. Its client ties it by id to a request the
    /// filter cannot see from here (sent on another stream of the session), so it is judged as
    /// every answer it could be: a list of each kind whose member it carries (filtered, pinned
    /// and scanned as list answers are), the `instructions` of an `initialize` answer, and the
    /// result of an unknown call, and, when it carries a call's output, of any tool a result rule
    /// of the pack names that the session could have called (`result::judge_as`: the strictest
    /// decision decides).
    fn untied(&mut self, cx: &Judge<'_>, call: &Action, msg: &Value) -> Outcome {
        let (state, now) = cx.state_now();
        let mut m = msg.clone();
        let mut changed = false;
        for kind in ListKind::ALL {
            let listed = m
                .get("result")
                .and_then(|r| r.get(kind.field()))
                .is_some_and(Value::is_array);
            if listed {
                let p = self.list_request(cx, &state, now, kind);
                changed |= list_filter(cx, &p, &mut m, &mut self.sealed) > 0;
            }
        }
        if m.get("result")
            .is_some_and(|r| r.get("instructions").is_some())
        {
            let request = self.base_as(Method::Initialize);
            changed |= poison::strip_instructions(cx, &request, &mut m, &mut self.sealed);
        }
        let judged = if self.results {
            // Read as a tool's result only where a `tools/call` client hands the model something
            // of it: content, structured content, an error.
            let output = m.get("error").is_some()
                || m.get("result").is_some_and(|r| {
                    r.get("content").is_some() || r.get("structuredContent").is_some()
                });
            let tools = if output {
                self.callable_result_tools(cx, &state, now)
            } else {
                Vec::new()
            };
            let action = result::result_action(call, &m);
            let field = if m.get("result").is_some() {
                "result"
            } else {
                "error"
            };
            let j = result::judge_as(cx, &action, &tools, &m, field);
            self.enforced(j, &m)
        } else {
            Outcome::Keep
        };
        match judged {
            Outcome::Keep if changed => Outcome::Replace(m),
            other => other,
        }
    }

    /// At the clean end of an event stream, the requests it still awaits. A server may close a
    /// stream before answering (MCP 2025-11-25 polling, or a dropped connection) and send the
    /// answer on the GET stream the client resumes with `Last-Event-ID`. What each awaits is
    /// remembered for the session (`bindings`, kind `Awaited`, under every spelling of its id a
    /// client ties), so that answer is checked as what it answers wherever it comes.
    pub(crate) fn hand_over(&mut self, cx: &Judge<'_>) {
        if self.pending.is_empty() {
            return;
        }
        let Some(owner) = handover_owner(cx) else {
            return;
        };
        let now = cx.host.now_ms();
        for p in std::mem::take(&mut self.pending) {
            let (method, name) = match &p.awaits {
                Awaits::List(l) => (l.kind.method(), None),
                Awaits::Instructions(_) => (Method::Initialize, None),
                Awaits::Result(a) => match Method::from_name(&a.operation) {
                    Some(m) => (
                        m,
                        a.tool
                            .as_ref()
                            .or(a.prompt.as_ref())
                            .or(a.resource.as_ref()),
                    ),
                    None => continue,
                },
                Awaits::Task(_) | Awaits::Answer => continue,
            };
            let Some(code) = HANDED_OVER.iter().position(|m| *m == method) else {
                continue;
            };
            let bound = Bound {
                digest: [0; 32],
                decision: u8::try_from(code).unwrap_or(u8::MAX),
                name: name.cloned().unwrap_or_default(),
            };
            for spelling in id_spellings(&p.id.to_json()) {
                let key = bindings::key_of(bindings::BindKind::Awaited, &owner, &spelling);
                if let Err(e) = bindings::bind(cx.host, key, &bound, now) {
                    // Its answer, if it comes elsewhere, is judged as every answer it could be.
                    cx.host.log(
                        LogLevel::Warn,
                        &format!(
                            "portcullis: a request left unanswered cannot be handed over: {}",
                            e.0
                        ),
                    );
                    break;
                }
            }
        }
    }

    /// What the request an answer with `id` answers awaits, when its stream ended before the
    /// answer and handed it over ([`Self::hand_over`]).
    fn handed_over(&self, cx: &Judge<'_>, id: &Value) -> Option<Awaits> {
        let owner = handover_owner(cx)?;
        let now = cx.host.now_ms();
        let bound = id_spellings(id).iter().find_map(|spelling| {
            let key = bindings::key_of(bindings::BindKind::Awaited, &owner, spelling);
            bindings::lookup(cx.host, key, now).ok().flatten()
        })?;
        let method = *HANDED_OVER.get(usize::from(bound.decision))?;
        if let Some(kind) = ListKind::of(method.name()) {
            let (state, now) = cx.state_now();
            return Some(Awaits::List(self.list_request(cx, &state, now, kind)));
        }
        let mut request = self.base_as(method);
        let name = (!bound.name.is_empty()).then_some(bound.name);
        match method {
            Method::Initialize => return Some(Awaits::Instructions(Rc::new(request))),
            Method::PromptsGet => request.prompt = name,
            Method::ResourcesRead => request.resource = name,
            _ => request.tool = name,
        }
        Some(Awaits::Result(Rc::new(request)))
    }

    /// The list request of `kind` as this stream's session would send it: its `remove_tools`
    /// (a MODIFY of the list request) found by judging it again.
    fn list_request(
        &self,
        cx: &Judge<'_>,
        state: &SessionState,
        now: u64,
        kind: ListKind,
    ) -> ListPending {
        let action = self.base_as(kind.method());
        let verdict = cx.l.bundle.evaluate(&action, state, now);
        let remove = if verdict.decision == Decision::Modify {
            removed_tools(&verdict.modifications)
        } else {
            Vec::new()
        };
        ListPending {
            kind,
            action,
            remove,
        }
    }

    /// The tools a result rule of the pack names that some call of, in this session, could be
    /// forwarded (a list would show them: `Cx::keeps`).
    fn callable_result_tools(&self, cx: &Judge<'_>, state: &SessionState, now: u64) -> Vec<String> {
        let named = &cx.l.pack.result_tools;
        if named.is_empty() {
            return Vec::new();
        }
        let c = Cx {
            l: cx.l,
            state,
            now,
        };
        let list = ListPending {
            kind: ListKind::Tools,
            action: self.base_as(Method::ToolsList),
            remove: Vec::new(),
        };
        named
            .iter()
            .filter(|t| c.keeps(&list, t))
            .cloned()
            .collect()
    }

    /// The stream's base action as a request of `method`, naming nothing (a result of an unknown
    /// request is judged as the answer to `base_as(Method::ToolsCall)`).
    fn base_as(&self, method: Method) -> Action {
        let mut a = Action::clone(&self.base);
        method.name().clone_into(&mut a.operation);
        a.tool = None;
        a.prompt = None;
        a.resource = None;
        a
    }

    fn judged(&mut self, cx: &Judge<'_>, action: &Action, msg: &Value, field: &str) -> Outcome {
        let j = result::judge(cx, action, msg, field);
        self.enforced(j, msg)
    }

    /// What a judgment does to `msg`; its receipt goes with the stream's.
    fn enforced(&mut self, j: result::Judged, msg: &Value) -> Outcome {
        if let Some(r) = j.receipt {
            self.sealed.push(r);
        }
        match j.outcome {
            result::Effect::Keep => Outcome::Keep,
            result::Effect::Rewrite(v) => Outcome::Replace(v),
            // A denied server request never reaches the agent.
            result::Effect::Deny(_) if msg.get("method").is_some() => Outcome::Drop,
            // A denied answer: the agent gets the denial in its place.
            result::Effect::Deny(d) => {
                let mut e = d.jsonrpc_error(None);
                if let Some(obj) = e.as_object_mut() {
                    obj.insert("id".into(), msg.get("id").cloned().unwrap_or(Value::Null));
                }
                Outcome::Replace(e)
            }
        }
    }
}

/// A JSON-RPC error (-32044) in place of an answer the filter could not check.
fn unchecked_error(id: &Value, why: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": UNCHECKED_RESPONSE_CODE,
        "message": format!("portcullis: the response could not be checked: {why}"),
    }})
}

/// Everything judging a server-to-agent message needs.
pub(crate) struct Judge<'a> {
    pub host: &'a dyn Host,
    pub l: &'a Policy,
    pub sessions: &'a Sessions,
    pub session: Option<&'a str>,
    /// The principal of the stream, when one is known: a result's taints and quarantines reach
    /// it too.
    pub principal: Option<&'a str>,
}

impl<'a> Judge<'a> {
    /// The session's state as stored (a new session's without one), and the time it was read.
    fn state_now(&self) -> (SessionState, u64) {
        let now = self.host.now_ms();
        let state = match self.session {
            Some(s) => self.sessions.read(self.host, s, None, now).state,
            None => SessionState::new(now),
        };
        (state, now)
    }

    /// This judge, in `named` when it has no session of its own.
    fn in_session(&self, named: Option<&'a str>) -> Judge<'a> {
        Judge {
            session: self.session.or(named),
            ..*self
        }
    }
}

/// The session a legacy event stream's `endpoint` event names in the URL it gives
/// (`/messages/?session_id=...`, `sessionId` for the TypeScript SDK), read as a message's query
/// is (`normalize::legacy_session_in_query`); `None` when it names none, or two.
fn endpoint_session(data: &str) -> Option<Rc<str>> {
    let (_, query) = data.trim().split_once('?')?;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let id = crate::normalize::legacy_session_in_query(query, None).ok()??;
    crate::identity::usable_key(&id).map(Rc::from)
}

/// The body of an answer that awaits no JSON-RPC reply and cannot be read (a GET stream's, an
/// egress answer's): `{"error":"unreadable_response","reason":...}`, with HTTP 502 when the
/// headers have not gone yet.
pub(super) fn unreadable_body(why: &str) -> Vec<u8> {
    json!({"error": "unreadable_response", "reason": format!("portcullis: {why}")})
        .to_string()
        .into_bytes()
}

/// What a response's headers say about reading its body as its client reads it.
pub(super) struct Legibility {
    /// Some coding (of every `content-encoding` line: a client applies them all) other than `identity`.
    pub compressed: bool,
    /// The distinct `content-type` values (lowercase, trimmed).
    pub types: Vec<String>,
    /// Why the body cannot be read as the client reads it: compressed, under several content
    /// types, or in a charset that does not read it as UTF-8 does (`normalize/charset.rs`).
    pub illegible: Option<String>,
}

impl Legibility {
    pub(super) fn of(headers: &[(String, String)]) -> Self {
        let all = |n: &'static str| {
            headers
                .iter()
                .filter(move |(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let encoding = all("content-encoding")
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        let compressed = encoding
            .split(',')
            .any(|c| !c.trim().is_empty() && c.trim() != "identity");
        let mut types = all("content-type").collect::<Vec<_>>();
        types.dedup();
        let foreign = types
            .iter()
            .find_map(|t| crate::normalize::foreign_charset(t, None));
        let illegible = if compressed {
            Some(format!(
                "the response is compressed (content-encoding `{encoding}`)"
            ))
        } else if types.len() > 1 {
            Some("the response declares several content types".to_owned())
        } else {
            foreign.map(|cs| format!("the response is in another charset (`{cs}`)"))
        };
        Legibility {
            compressed,
            types,
            illegible,
        }
    }
}

/// The 2026-07-28 discovery request, whose result carries the server's `instructions` too.
const DISCOVER: &str = "server/discover";

/// How deep a response's JSON may nest (serde_json's own limit, which the response path had).
const RESPONSE_JSON_DEPTH: usize = 128;

/// Why a JSON response is refused when clients read it in different ways.
fn ambiguous(e: &crate::normalize::json::JsonError) -> String {
    format!(
        "clients read the response in different ways: {}",
        e.reason()
    )
}

/// A response body as one JSON value, read as strictly as requests are (`normalize/json.rs`): a
/// member named twice, exactly or up to case, is a message one client reads one way and another
/// (Go's case-blind decoder, a first-wins parser) the other way, and a prototype member is read
/// as data by some and merged into the object by JavaScript; the filter would judge one of them.
/// `Err` says why it cannot be read.
fn read_json(text: &[u8]) -> Result<Value, String> {
    match crate::normalize::json::parse(text, RESPONSE_JSON_DEPTH) {
        Ok(p) => Ok(p.value),
        Err(e) if e.is_ambiguous() => Err(ambiguous(&e)),
        Err(_) => Err("the response is not json".to_owned()),
    }
}

/// A list request awaiting its answer.
#[derive(Clone, Debug)]
struct ListPending {
    kind: ListKind,
    action: Action,
    remove: Vec<String>,
}

/// The members of a cacheable result (MCP 2026-07-28 `CacheableResult`).
const CACHE_MEMBERS: [&str; 3] = ["cacheScope", "ttlMs", "resultType"];

/// Filter one list answer in place; how many entries were removed. An entry no call could use
/// is hidden ([`Cx::keeps`]); one whose text carries an instruction aimed at the agent is removed
/// unless a rule keeps it (`poison.rs`), and the receipt recording that goes to `sealed`. A
/// cacheable answer it changed says `cacheScope: private`.
fn list_filter(
    cx: &Judge<'_>,
    p: &ListPending,
    msg: &mut Value,
    sealed: &mut Vec<Receipt>,
) -> usize {
    let (state, now) = cx.state_now();
    let c = Cx {
        l: cx.l,
        state: &state,
        now,
    };
    let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
        return 0;
    };
    let Some(list) = result.get_mut(p.kind.field()).and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = list.len();
    list.retain(|entry| {
        p.kind == ListKind::Templates
            || entry
                .get(p.kind.name_key())
                .and_then(Value::as_str)
                .is_some_and(|name| c.keeps(p, name))
    });
    let hidden = before.saturating_sub(list.len());
    // The tools the agent may use, against their pins (before the scan for instructions, so a
    // changed definition is recorded even when it is removed for what it says).
    let unpinned = if p.kind == ListKind::Tools {
        pinned::filter(cx, &c, &p.action, list, sealed)
    } else {
        0
    };
    // What the agent would read of the entries it may use: scanned for instructions.
    let mut lines = Vec::new();
    list.retain(|entry| {
        let Some(flag) = poison::flagged(p.kind, entry) else {
            return true;
        };
        let name = entry
            .get(p.kind.name_key())
            .and_then(Value::as_str)
            .unwrap_or_default();
        let j = poison::judge(c.l, c.state, now, p.kind, &p.action, name, flag);
        lines.push(j.line);
        j.keep
    });
    let removed = before.saturating_sub(list.len());
    let poisoned = removed.saturating_sub(hidden).saturating_sub(unpinned);
    if removed > 0 && CACHE_MEMBERS.iter().any(|k| result.contains_key(*k)) {
        // A cacheable result (2026-07-28) the filter changed is this agent's view, decided with
        // its session: no cache may serve it in another authorization context.
        result.insert("cacheScope".to_owned(), Value::from("private"));
    }
    if hidden > 0 {
        cx.host.log(
            LogLevel::Debug,
            &format!("portcullis: list result: {hidden} entries hidden by policy"),
        );
    }
    if !lines.is_empty() {
        cx.host.log(
            LogLevel::Warn,
            &format!("portcullis: list result: {}", lines.join("; ")),
        );
        if let Some(r) = result::poisoned_entries(cx, &p.action, poisoned, lines) {
            sealed.push(r);
        }
    }
    removed
}

struct Cx<'a> {
    l: &'a Policy,
    state: &'a SessionState,
    now: u64,
}

impl Cx<'_> {
    /// Whether a list keeps the entry `name`: the agent sees every tool some call could use.
    /// An entry is hidden when a hypothetical call of it (no arguments) is denied, unless the
    /// denial is only the pack's default (or an intent's) and a rule that reads arguments could
    /// allow a call of it (`PackReads::arg_allows`): a tool allowed for some arguments stays listed,
    /// its calls are still decided one by one.
    fn keeps(&self, p: &ListPending, name: &str) -> bool {
        if p.kind == ListKind::Tools && p.remove.iter().any(|g| glob_match(g, name)) {
            return false;
        }
        let a = p.kind.call(&p.action, name);
        let v = self.l.bundle.evaluate(&a, self.state, self.now);
        if v.decision != Decision::Deny {
            return true;
        }
        !self.l.pack.is_pack_rule(&v.deciding_rule) && self.l.pack.arg_allows.covers(&a)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::panic,
        reason = "test code: a failed expectation aborts the test"
    )]

    use super::*;

    fn call(tool: &str) -> Action {
        Action {
            operation: Method::ToolsCall.name().to_owned(),
            tool: Some(tool.to_owned()),
            arguments: json!({"path": "/etc/hosts"}),
            ..Action::default()
        }
    }

    fn awaited(i: &Inspector, n: usize) -> &Rc<Action> {
        match i.pending.get(n).map(|p| &p.awaits) {
            Some(Awaits::Result(a)) => a,
            other => panic!("request {n} awaits {other:?}"),
        }
    }

    #[test]
    fn the_first_request_and_the_base_share_one_argumentless_copy() {
        let (first, second) = (call("read_file"), call("list_dir"));
        let (a, b) = (JsonRpcId::Num(1), JsonRpcId::Num(2));
        let msgs = [(Some(&a), &first, &[][..]), (Some(&b), &second, &[][..])];
        let i = Inspector::new(msgs.into_iter(), &first, true, None);
        assert!(Rc::ptr_eq(awaited(&i, 0), &i.base));
        assert_eq!(i.base.tool.as_deref(), Some("read_file"));
        assert_eq!(
            i.base.arguments,
            Value::Null,
            "the copy carries no arguments"
        );
        // Another request of the batch awaits its own copy, not the base.
        assert!(!Rc::ptr_eq(awaited(&i, 1), &i.base));
        assert_eq!(awaited(&i, 1).tool.as_deref(), Some("list_dir"));
        assert_eq!(awaited(&i, 1).arguments, Value::Null);
    }
}
