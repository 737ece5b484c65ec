//! Tool results on the response path (docs/filter.md, "Tool results"): the JSON-RPC response to
//! each forwarded `tools/call` is inspected, evaluated as a `tools/result` pseudo-action, and the
//! effects of the rules it matches (`then taint "..."`, revocations, read-only, kill) are applied
//! to the session, with a `result` receipt in the session's chain.
//!
//! Nothing is stalled: SSE events pass as soon as they are complete (notifications, server
//! requests, the result itself once checked, which is synchronous); only an incomplete trailing
//! event is carried over to the next chunk. A JSON body is held to its end (it is one message).

use bundle::action::Action;
use bundle::receipt::{self, EventKind, ReceiptBody};
use serde_json::{Value, json};

use super::{Framing, inject, sse};
use crate::host::{Host, LogLevel, SharedDataError};
use crate::normalize::{JsonRpcId, risk};
use crate::plugin::{Loaded, Plugin, log_receipt};
use crate::request::FilterAction;
use crate::session_store::{self, MAX_CAS_ATTEMPTS};

/// The pseudo-operation a tool result is evaluated as.
pub const RESULT_OPERATION: &str = "tools/result";
/// Longest `args.text` of a result action, in bytes (the detector reads the same prefix).
const MAX_TEXT_BYTES: usize = inject::MAX_SCAN_BYTES;

/// Tool calls of one stream awaiting their results.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResultWatch {
    pending: Vec<(JsonRpcId, Action)>,
    framing: Option<Framing>,
    carry: Vec<u8>,
}

/// The text of a result: every string value (at any depth), joined by `\n`, bounded.
fn result_text(v: &Value, out: &mut String) {
    if out.len() >= MAX_TEXT_BYTES {
        return;
    }
    match v {
        Value::String(s) => {
            if !out.is_empty() {
                out.push('\n');
            }
            let room = MAX_TEXT_BYTES.saturating_sub(out.len());
            let mut cut = s.len().min(room);
            while !s.is_char_boundary(cut) {
                cut = cut.saturating_sub(1);
            }
            out.push_str(s.get(..cut).unwrap_or_default());
        }
        Value::Array(a) => a.iter().for_each(|x| result_text(x, out)),
        Value::Object(o) => o.values().for_each(|x| result_text(x, out)),
        _ => {}
    }
}

/// The `tools/result` action for a call's JSON-RPC response `msg` (documented in docs/filter.md).
pub(crate) fn result_action(call: &Action, msg: &Value) -> Action {
    let result = msg.get("result").cloned().unwrap_or(Value::Null);
    let mut text = String::new();
    result_text(&result, &mut text);
    let mut a = call.clone();
    a.operation = RESULT_OPERATION.to_owned();
    a.risk = risk::scan_value(&result);
    a.size = u64::try_from(result.to_string().len()).unwrap_or(u64::MAX);
    a.arguments = json!({
        "text": text,
        "injection": inject::detect(&text),
        "is_error": msg.get("error").is_some()
            || result.get("isError").and_then(Value::as_bool).unwrap_or(false),
    });
    a
}

impl ResultWatch {
    /// Remember the forwarded `tools/call` requests among `(id, action)`.
    pub(crate) fn new<'a>(
        msgs: impl Iterator<Item = (Option<&'a JsonRpcId>, &'a Action)>,
    ) -> Option<Self> {
        let pending: Vec<_> = msgs
            .filter(|(_, a)| a.operation == "tools/call")
            .filter_map(|(id, a)| Some((id?.clone(), a.clone())))
            .collect();
        (!pending.is_empty()).then(|| ResultWatch {
            pending,
            ..ResultWatch::default()
        })
    }

    /// Response headers: JSON or SSE are inspected; anything else passes untouched.
    pub(crate) fn on_headers(&mut self, host: &dyn Host) -> bool {
        self.framing = super::framing(host);
        self.framing.is_some()
    }

    /// Response body data. JSON: `body_size` is everything buffered (paused until the end).
    /// SSE: `body_size` is this chunk (every chunk is released).
    pub(crate) fn on_body(
        &mut self,
        host: &dyn Host,
        plugin: &Plugin,
        l: &Loaded,
        session: Option<&str>,
        body_size: usize,
        end_of_stream: bool,
    ) -> FilterAction {
        match self.framing {
            None => FilterAction::Continue,
            Some(Framing::Json) => {
                if !end_of_stream && body_size <= l.cfg.max_body_bytes {
                    return FilterAction::Pause;
                }
                let buf = host.response_body(0, body_size).unwrap_or_default();
                match serde_json::from_slice::<Value>(&buf) {
                    Ok(Value::Array(items)) => {
                        for m in &items {
                            self.inspect(host, plugin, l, session, m);
                        }
                    }
                    Ok(m) => self.inspect(host, plugin, l, session, &m),
                    Err(_) => host.log(
                        LogLevel::Warn,
                        "portcullis: a tool result is not JSON (or over the body limit); not inspected",
                    ),
                }
                self.framing = None;
                FilterAction::Continue
            }
            Some(Framing::Sse) => {
                let chunk = host.response_body(0, body_size).unwrap_or_default();
                let carried = !self.carry.is_empty();
                let mut data = std::mem::take(&mut self.carry);
                data.extend_from_slice(&chunk);
                let events = sse::events(&data);
                let done = events.last().map_or(0, |e| e.end);
                for ev in &events {
                    if let Ok(m) = serde_json::from_str::<Value>(&ev.data) {
                        self.inspect(host, plugin, l, session, &m);
                    }
                }
                if end_of_stream || data.len().saturating_sub(done) > l.cfg.max_body_bytes {
                    // The tail is released as is: an unterminated event is never dispatched by
                    // an SSE client; an over-long one is not held forever.
                    if carried {
                        host.replace_response_body(&data);
                    }
                    return FilterAction::Continue;
                }
                let (out, tail) = data.split_at(done.min(data.len()));
                self.carry = tail.to_vec();
                if carried || !self.carry.is_empty() {
                    host.replace_response_body(out);
                }
                FilterAction::Continue
            }
        }
    }

    /// Inspect one JSON-RPC message if it answers a pending call.
    fn inspect(
        &mut self,
        host: &dyn Host,
        plugin: &Plugin,
        l: &Loaded,
        session: Option<&str>,
        msg: &Value,
    ) {
        if msg.get("result").is_none() && msg.get("error").is_none() {
            return;
        }
        let Some(i) = self
            .pending
            .iter()
            .position(|(id, _)| msg.get("id") == Some(&id.to_json()))
        else {
            return;
        };
        let (_, call) = self.pending.swap_remove(i);
        let action = result_action(&call, msg);
        let Some(session) = session else {
            host.log(
                LogLevel::Debug,
                "portcullis: tool result of a request without a session key: nothing to taint",
            );
            return;
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let now = host.now_ms();
            let mut rec = session_store::load(host, session, now, l.cfg.session.idle_ttl_ms);
            let verdict = l.bundle.evaluate(&action, &rec.state, now);
            if rec.state.status != bundle::session::SessionStatus::Missing {
                rec.state.apply_effects(&verdict.effects);
            }
            let mut body = ReceiptBody::for_action(session, &action, &verdict);
            body.event = EventKind::Result;
            body.bundle = Some(l.bundle_ref.clone());
            body.drift_milli = Some(receipt::drift_milli(rec.state.drift));
            let force = !verdict.effects.is_empty();
            let r = receipt::seal(body, &mut rec.chain, &l.signer, &l.sign_policy, now, force);
            rec.extra.last_seen_ms = now;
            match session_store::store(host, session, &rec) {
                Ok(()) => {
                    plugin.touched(host, l, session, &rec, now);
                    if !verdict.effects.is_empty() {
                        host.log(
                            LogLevel::Info,
                            &format!(
                                "portcullis: tool result of `{}` session `{session}` rule `{}`: {} effect(s) applied",
                                call.subject(),
                                verdict.deciding_rule,
                                verdict.effects.len()
                            ),
                        );
                    }
                    log_receipt(host, &r);
                    return;
                }
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Other(_)) => break,
            }
        }
        host.log(
            LogLevel::Error,
            &format!("portcullis: the tool result of session `{session}` could not be recorded"),
        );
    }
}
