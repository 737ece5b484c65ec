//! The response path: results of `tools/list`, `prompts/list` and `resources/list` are filtered
//! so the agent never sees what it could not use (docs/filter.md, "List filtering").
//!
//! An entry is kept iff evaluating a hypothetical call of it — the list request's action with the
//! operation `tools/call` / `prompts/get` / `resources/read`, the entry's `name` (tools, prompts) or
//! `uri` (resources) as subject, empty arguments, no risk, size 0, the same identity, session and
//! declared intent, against the session state as stored when the response arrives — is not
//! enforced as DENY (so audit/warn packs hide nothing), and, for tools, its name matches no
//! `remove_tools` glob of a MODIFY on the list request. Entries without a string name are dropped.
//!
//! JSON responses are buffered to the end; SSE responses are held until the event carrying the
//! list's JSON-RPC response is complete, then released with that event rewritten (other events
//! byte for byte). `content-length` is removed at response headers (Envoy re-frames the body). A
//! response that cannot be checked (not JSON, over the body limit) is replaced by a JSON-RPC
//! error, code -32044: fail closed.

mod inject;
mod result;
mod sse;

pub(crate) use result::{ResultWatch, pack_reads_results};

use bundle::action::{Action, Risk};
use bundle::matchers::glob_match;
use bundle::session::SessionState;
use bundle::verdict::{Decision, Modification};
use serde_json::{Value, json};

use crate::host::{Host, LogLevel};
use crate::normalize::JsonRpcId;
use crate::plugin::Loaded;
use crate::request::FilterAction;

/// JSON-RPC error code of a list response the filter could not check.
pub const UNCHECKED_RESPONSE_CODE: i64 = -32044;

/// Which list a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// `tools/list`
    Tools,
    /// `prompts/list`
    Prompts,
    /// `resources/list`
    Resources,
}

impl ListKind {
    fn of(operation: &str) -> Option<Self> {
        match operation {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            _ => None,
        }
    }

    fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
        }
    }

    fn name_key(self) -> &'static str {
        match self {
            ListKind::Resources => "uri",
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
                a.operation = "tools/call".into();
                a.tool = Some(name.to_owned());
            }
            ListKind::Prompts => {
                a.operation = "prompts/get".into();
                a.prompt = Some(name.to_owned());
            }
            ListKind::Resources => {
                a.operation = "resources/read".into();
                a.resource = Some(name.to_owned());
            }
        }
        a.arguments = json!({});
        a.risk = Risk::default();
        a.size = 0;
        a
    }
}

/// One list request of the stream awaiting its response.
#[derive(Clone, Debug)]
struct Pending {
    kind: ListKind,
    id: JsonRpcId,
    action: Action,
    remove: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Json,
    Sse,
}

/// The framing of a response from its `content-type` (`None`: neither JSON nor SSE, or an HTTP
/// status other than 2xx).
fn framing(host: &dyn Host) -> Option<Framing> {
    let headers = host.response_headers();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    if !get(":status").starts_with('2') {
        return None;
    }
    let ct = get("content-type");
    if ct.starts_with("application/json") {
        Some(Framing::Json)
    } else if ct.starts_with("text/event-stream") {
        Some(Framing::Sse)
    } else {
        None
    }
}

/// The list filter of one stream (`None` in `Stream` when the request listed nothing).
#[derive(Clone, Debug, Default)]
pub(crate) struct ListFilter {
    pending: Vec<Pending>,
    framing: Option<Framing>,
}

impl ListFilter {
    /// Remember the list requests among the allowed messages `(id, action, modifications)`.
    pub(crate) fn new<'a>(
        msgs: impl Iterator<Item = (Option<&'a JsonRpcId>, &'a Action, &'a [Modification])>,
    ) -> Option<Self> {
        let mut pending = Vec::new();
        for (id, action, mods) in msgs {
            let (Some(kind), Some(id)) = (ListKind::of(&action.operation), id) else {
                continue;
            };
            let remove = mods
                .iter()
                .filter_map(|m| match m {
                    Modification::RemoveTools { patterns } => Some(patterns.iter().cloned()),
                    _ => None,
                })
                .flatten()
                .collect();
            pending.push(Pending {
                kind,
                id: id.clone(),
                action: action.clone(),
                remove,
            });
        }
        (!pending.is_empty()).then_some(ListFilter {
            pending,
            framing: None,
        })
    }

    /// Response headers: pick the framing from `content-type` and drop `content-length` (the body
    /// may change). Returns false when there is nothing to do (error status, other content type).
    pub(crate) fn on_headers(&mut self, host: &dyn Host) -> bool {
        self.framing = framing(host);
        if self.framing.is_some() {
            host.set_response_header("content-length", None);
        }
        self.framing.is_some()
    }

    /// Response body data; `body_size` is everything buffered so far (the filter pauses until
    /// it is done). Returns Continue once the list result is rewritten (or the body ended).
    pub(crate) fn on_body(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        session: Option<&str>,
        body_size: usize,
        end_of_stream: bool,
    ) -> FilterAction {
        let Some(framing) = self.framing else {
            return FilterAction::Continue;
        };
        let limit = l.cfg.max_body_bytes;
        if body_size > limit {
            self.refuse(host, framing, "the response is larger than the body limit");
            return FilterAction::Continue;
        }
        if framing == Framing::Json && !end_of_stream {
            return FilterAction::Pause;
        }
        let buf = host.response_body(0, body_size).unwrap_or_default();
        let now = host.now_ms();
        let state = match session {
            Some(s) => l.load_session(host, s, now).state,
            None => SessionState::new(now),
        };
        let cx = Cx {
            l,
            state: &state,
            now,
        };
        match framing {
            Framing::Json => {
                let Ok(mut v) = serde_json::from_slice::<Value>(&buf) else {
                    self.refuse(host, framing, "the response is not JSON");
                    return FilterAction::Continue;
                };
                let removed = match &mut v {
                    Value::Array(items) => items.iter_mut().map(|m| self.apply(&cx, m)).sum(),
                    m => self.apply(&cx, m),
                };
                if removed > 0 {
                    host.replace_response_body(&serde_json::to_vec(&v).unwrap_or_default());
                }
                log_removed(host, removed);
                self.framing = None;
                FilterAction::Continue
            }
            Framing::Sse => {
                let mut out = Vec::with_capacity(buf.len());
                let mut copied = 0usize;
                let mut removed = 0usize;
                for ev in sse::events(&buf) {
                    let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
                        continue;
                    };
                    let before = self.pending.len();
                    let n = self.apply(&cx, &mut v);
                    if self.pending.len() == before {
                        continue;
                    }
                    removed = removed.saturating_add(n);
                    out.extend_from_slice(buf.get(copied..ev.start).unwrap_or_default());
                    if n > 0 {
                        let data = serde_json::to_string(&v).unwrap_or_default();
                        out.extend_from_slice(&sse::rewrite(&buf, &ev, &data));
                    } else {
                        out.extend_from_slice(buf.get(ev.start..ev.end).unwrap_or_default());
                    }
                    copied = ev.end;
                }
                if removed > 0 {
                    out.extend_from_slice(buf.get(copied..).unwrap_or_default());
                    host.replace_response_body(&out);
                }
                log_removed(host, removed);
                if self.pending.is_empty() || end_of_stream {
                    self.framing = None;
                    FilterAction::Continue
                } else {
                    FilterAction::Pause
                }
            }
        }
    }

    /// Filter one JSON-RPC message if it answers a pending list request (which is then done).
    /// Returns how many entries were removed.
    fn apply(&mut self, cx: &Cx<'_>, msg: &mut Value) -> usize {
        let Some(i) = self
            .pending
            .iter()
            .position(|p| msg.get("id") == Some(&p.id.to_json()))
        else {
            return 0;
        };
        let p = self.pending.swap_remove(i);
        let Some(list) = msg
            .get_mut("result")
            .and_then(|r| r.get_mut(p.kind.field()))
            .and_then(Value::as_array_mut)
        else {
            return 0;
        };
        let before = list.len();
        list.retain(|entry| {
            entry
                .get(p.kind.name_key())
                .and_then(Value::as_str)
                .is_some_and(|name| cx.keeps(&p, name))
        });
        before.saturating_sub(list.len())
    }

    /// Replace the whole body by a JSON-RPC error for the first pending list request.
    fn refuse(&mut self, host: &dyn Host, framing: Framing, why: &str) {
        let id = self.pending.first().map_or(Value::Null, |p| p.id.to_json());
        let err = json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": UNCHECKED_RESPONSE_CODE,
            "message": format!("portcullis: the list result could not be checked: {why}"),
        }});
        let text = err.to_string();
        let body = match framing {
            Framing::Json => text.into_bytes(),
            Framing::Sse => format!("event: message\ndata: {text}\n\n").into_bytes(),
        };
        host.replace_response_body(&body);
        host.log(
            LogLevel::Warn,
            &format!("portcullis: list result refused: {why}"),
        );
        self.pending.clear();
        self.framing = None;
    }
}

fn log_removed(host: &dyn Host, removed: usize) {
    if removed > 0 {
        host.log(
            LogLevel::Debug,
            &format!("portcullis: list result: {removed} entries hidden by policy"),
        );
    }
}

struct Cx<'a> {
    l: &'a Loaded,
    state: &'a SessionState,
    now: u64,
}

impl Cx<'_> {
    fn keeps(&self, p: &Pending, name: &str) -> bool {
        if p.kind == ListKind::Tools && p.remove.iter().any(|g| glob_match(g, name)) {
            return false;
        }
        let a = p.kind.call(&p.action, name);
        self.l.bundle.evaluate(&a, self.state, self.now).decision != Decision::Deny
    }
}
