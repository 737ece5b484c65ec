//! Tool results on the response path (docs/filter.md, "Tool results"): the JSON-RPC response to
//! each forwarded `tools/call` is inspected, evaluated as a `tools/result` pseudo-action, and the
//! effects of the rules it matches (`then taint "..."`, revocations, read-only, kill) are applied
//! to the session, with a `result` receipt in the session's chain.
//!
//! Nothing is stalled: SSE events pass as soon as they are complete (notifications, server
//! requests, the result itself once checked, which is synchronous); only an incomplete trailing
//! event is carried over to the next chunk. A JSON body is held to its end (it is one message).

use bundle::action::Action;
use bundle::receipt::{self, EventKind, Receipt, ReceiptBody};
use bundle::session::SessionState;
use bundle::verdict::{Decision, Verdict};
use serde_json::{Value, json};

use super::{Framing, inject, sse};
use crate::host::{Host, LogLevel, SharedDataError};
use crate::normalize::{self, JsonRpcId, risk};
use crate::plugin::{Loaded, Plugin};
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
    /// `result` receipts sealed and not yet handed to the stream (for the access log).
    sealed: Vec<Receipt>,
}

/// The length in bytes of `v` serialized as compact JSON, counted without building the text.
fn compact_json_len(v: &Value) -> u64 {
    /// A writer that only counts what it is given.
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .saturating_add(u64::try_from(buf.len()).unwrap_or(u64::MAX));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    // Serializing a `Value` into a writer that never fails cannot fail.
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => c.0,
        Err(_) => u64::MAX,
    }
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

/// Whether the pack can say anything about a tool result. A result only matters through a rule
/// that matches its `tools/result` action (effects such as `taint`, or a MODIFY) or a MODIFY from
/// the default, unknown-session or intent-outside decision. A rule whose condition pins the
/// operation to others, or pins the kind to `http`, never matches a result (the compiler
/// guarantees pins are sound). When nothing can match, every inspection would end with "no effect,
/// nothing changed", so the filter does not hold tool results at all (no buffering, no session
/// read on the response path).
pub(crate) fn pack_reads_results(p: &bundle::format::Program) -> bool {
    use bundle::action::Kind;
    let modifies = |d: &bundle::format::DecisionDef| d.decision == Decision::Modify;
    p.rules.iter().any(|r| {
        r.pins.kind != Some(Kind::Http)
            && (r.pins.operations.is_empty()
                || r.pins.operations.iter().any(|o| o == RESULT_OPERATION))
    }) || modifies(&p.default)
        || modifies(&p.unknown_session)
        || p.intents.iter().any(|i| modifies(&i.outside))
}

/// `call` without its arguments and risk (a result action replaces both), so a large call is not
/// copied for the response path. Spelled out field by field so that a new `Action` field is a
/// compile error here, not a silent omission.
fn without_arguments(call: &Action) -> Action {
    let Action {
        kind,
        operation,
        tool,
        resource,
        prompt,
        arguments: _,
        target,
        identity,
        headers,
        session_id,
        trace_id,
        declared_intent,
        size,
        risk: _,
    } = call;
    Action {
        kind: *kind,
        operation: operation.clone(),
        tool: tool.clone(),
        resource: resource.clone(),
        prompt: prompt.clone(),
        arguments: Value::Null,
        target: target.clone(),
        identity: identity.clone(),
        headers: headers.clone(),
        session_id: session_id.clone(),
        trace_id: trace_id.clone(),
        declared_intent: declared_intent.clone(),
        size: *size,
        risk: bundle::action::Risk::default(),
    }
}

/// The `tools/result` action for a call's JSON-RPC response `msg` (documented in docs/filter.md).
pub(crate) fn result_action(call: &Action, msg: &Value) -> Action {
    let result = msg.get("result").unwrap_or(&Value::Null);
    let mut text = String::new();
    result_text(result, &mut text);
    let mut a = call.clone();
    a.operation = RESULT_OPERATION.to_owned();
    a.risk = risk::scan_value(result);
    a.size = compact_json_len(result);
    a.arguments = json!({
        "text": text,
        "injection": inject::detect(&text),
        "is_error": msg.get("error").is_some()
            || result.get("isError").and_then(Value::as_bool).unwrap_or(false),
    });
    a
}

/// MODIFY on a result: the verdict's argument rewrites applied to the message's `result` (paths
/// `args.X` address `result.X`; `redact_secrets` walks the whole result). Returns the new message
/// (when something changed) and the receipt lines. A rewrite that cannot be made (bad clamp
/// bounds) replaces the result by a JSON-RPC error -32044: fail closed.
fn modify_result(msg: &Value, verdict: &Verdict) -> (Option<Value>, Vec<String>) {
    if verdict.decision != Decision::Modify {
        return (None, Vec::new());
    }
    let mut out = msg.clone();
    let Some(result) = out.get_mut("result") else {
        return (None, Vec::new());
    };
    match normalize::apply_to_value(result, "result", &verdict.modifications) {
        Ok(changes) if changes.is_empty() => (None, changes),
        Ok(changes) => (Some(out), changes),
        Err(e) => {
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            let err = json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": super::UNCHECKED_RESPONSE_CODE,
                "message": format!("portcullis: the tool result could not be rewritten: {}", e.reason),
            }});
            (
                Some(err),
                vec!["replaced the result by an error (rewrite failed)".to_owned()],
            )
        }
    }
}

impl ResultWatch {
    /// Remember the forwarded `tools/call` requests among `(id, action)`.
    pub(crate) fn new<'a>(
        msgs: impl Iterator<Item = (Option<&'a JsonRpcId>, &'a Action)>,
    ) -> Option<Self> {
        let pending: Vec<_> = msgs
            .filter(|(_, a)| a.operation == "tools/call")
            .filter_map(|(id, a)| Some((id?.clone(), without_arguments(a))))
            .collect();
        (!pending.is_empty()).then(|| ResultWatch {
            pending,
            ..ResultWatch::default()
        })
    }

    /// The `result` receipts sealed since the last call.
    pub(crate) fn take_receipts(&mut self) -> Vec<Receipt> {
        std::mem::take(&mut self.sealed)
    }

    /// Response headers: JSON or SSE are inspected (`content-length` dropped); anything else
    /// passes untouched.
    pub(crate) fn on_headers(&mut self, host: &dyn Host) -> bool {
        self.framing = super::framing(host);
        if self.framing.is_some() {
            // A MODIFY on the result may change its length; Envoy re-frames the body.
            host.set_response_header("content-length", None);
        }
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
                    Ok(Value::Array(mut items)) => {
                        let mut changed = false;
                        for m in &mut items {
                            if let Some(new) = self.inspect(host, plugin, l, session, m) {
                                *m = new;
                                changed = true;
                            }
                        }
                        if changed {
                            let out = serde_json::to_vec(&items).unwrap_or_default();
                            host.replace_response_body(&out);
                        }
                    }
                    Ok(m) => {
                        if let Some(new) = self.inspect(host, plugin, l, session, &m) {
                            host.replace_response_body(&serde_json::to_vec(&new).unwrap_or_default());
                        }
                    }
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
                let mut rewritten: Option<Vec<u8>> = None;
                let mut copied = 0usize;
                for ev in &events {
                    if let Ok(m) = serde_json::from_str::<Value>(&ev.data)
                        && let Some(new) = self.inspect(host, plugin, l, session, &m)
                    {
                        let out = rewritten.get_or_insert_with(Vec::new);
                        out.extend_from_slice(data.get(copied..ev.start).unwrap_or_default());
                        out.extend_from_slice(&sse::rewrite(&data, ev, &new.to_string()));
                        copied = ev.end;
                    }
                }
                if let Some(mut out) = rewritten {
                    out.extend_from_slice(data.get(copied..).unwrap_or_default());
                    let done = out.len().saturating_sub(data.len().saturating_sub(done));
                    data = out;
                    return self.release(host, data, done, end_of_stream, l, true);
                }
                self.release(host, data, done, end_of_stream, l, carried)
            }
        }
    }

    /// SSE: send `data[..done]` (complete events) now and carry the rest, or send everything at
    /// the end of the stream or when the tail outgrows the body limit (an unterminated event is
    /// never dispatched by an SSE client; an over-long one is not held forever). `changed`: the
    /// buffer differs from the chunk the host holds.
    fn release(
        &mut self,
        host: &dyn Host,
        data: Vec<u8>,
        done: usize,
        end_of_stream: bool,
        l: &Loaded,
        changed: bool,
    ) -> FilterAction {
        if end_of_stream || data.len().saturating_sub(done) > l.cfg.max_body_bytes {
            if changed {
                host.replace_response_body(&data);
            }
            return FilterAction::Continue;
        }
        let (out, tail) = data.split_at(done.min(data.len()));
        self.carry = tail.to_vec();
        if changed || !self.carry.is_empty() {
            host.replace_response_body(out);
        }
        FilterAction::Continue
    }

    /// Inspect one JSON-RPC message if it answers a pending call. Returns the message to send
    /// instead when the policy's verdict on the result is MODIFY and something was rewritten.
    fn inspect(
        &mut self,
        host: &dyn Host,
        plugin: &Plugin,
        l: &Loaded,
        session: Option<&str>,
        msg: &Value,
    ) -> Option<Value> {
        if msg.get("result").is_none() && msg.get("error").is_none() {
            return None;
        }
        let i = self
            .pending
            .iter()
            .position(|(id, _)| msg.get("id") == Some(&id.to_json()))?;
        let (_, call) = self.pending.swap_remove(i);
        let action = result_action(&call, msg);
        let Some(session) = session else {
            // No session: nothing to taint or chain into; a MODIFY still rewrites the result.
            let now = host.now_ms();
            return modify_result(
                msg,
                &l.bundle.evaluate(&action, &SessionState::new(now), now),
            )
            .0;
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let now = host.now_ms();
            let mut rec = l.load_session(host, session, now);
            let verdict = l.bundle.evaluate(&action, &rec.state, now);
            let (rewritten, changes) = modify_result(msg, &verdict);
            if verdict.effects.is_empty() && changes.is_empty() {
                // The result changed nothing: no receipt, the session record is not written.
                return rewritten;
            }
            if rec.state.status != bundle::session::SessionStatus::Missing {
                rec.state.apply_effects(&verdict.effects);
            }
            let mut body = ReceiptBody::for_action(session, &action, &verdict);
            body.event = EventKind::Result;
            body.bundle = Some(l.bundle_ref.clone());
            body.drift_milli = Some(receipt::drift_milli(rec.state.drift));
            body.modifications = changes;
            let r = receipt::seal(body, &mut rec.chain, &l.signer, &l.sign_policy, now, true);
            rec.extra.last_seen_ms = now;
            match session_store::store(host, session, &rec) {
                Ok(()) => {
                    plugin.touched(host, l, session, &rec, now);
                    {
                        host.log(
                            LogLevel::Info,
                            &format!(
                                "portcullis: tool result of `{}` session `{session}` rule `{}`: {} effect(s) applied; {}",
                                call.subject(),
                                verdict.deciding_rule,
                                verdict.effects.len(),
                                if r.body.modifications.is_empty() {
                                    "result unchanged".to_owned()
                                } else {
                                    r.body.modifications.join(", ")
                                }
                            ),
                        );
                    }
                    // Not logged: the stream appends it to its access-log receipt (request.rs).
                    self.sealed.push(r);
                    return rewritten;
                }
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Other(_)) => break,
            }
        }
        host.log(
            LogLevel::Error,
            &format!("portcullis: the tool result of session `{session}` could not be recorded"),
        );
        // Still apply a rewrite the policy asks for: redaction must not depend on the store.
        modify_result(
            msg,
            &l.bundle
                .evaluate(&action, &SessionState::new(host.now_ms()), host.now_ms()),
        )
        .0
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::{compact_json_len, pack_reads_results};

    #[test]
    fn a_results_size_is_its_compact_json_length() {
        for v in [
            serde_json::json!(null),
            serde_json::json!({"content": [{"type": "text", "text": "h\u{e9} \"q\"\n\u{1}"}], "isError": false}),
            serde_json::json!([1, 2.5, -3, "\u{1F600}", {"a": {}}]),
        ] {
            assert_eq!(compact_json_len(&v), v.to_string().len() as u64, "{v}");
        }
    }

    fn reads(rules: &str) -> bool {
        let src = format!(
            "pack \"p\" {{\n  version \"1.0.0\"\n  mode enforce\n  default deny \"no\"\n}}\n{rules}\n"
        );
        let ast = policy::syntax::parse(&src).unwrap();
        let unsigned = policy::codegen::compile(&ast).unwrap();
        let key = bundle::keys::signing_key_from_seed([1; 32]);
        let signed = bundle::sign(&unsigned, &key).unwrap();
        let trust = bundle::Trust::Keys(vec![key.verifying_key()]);
        let b = bundle::Bundle::from_bytes(&signed, &trust).unwrap();
        pack_reads_results(b.program())
    }

    #[test]
    fn only_a_rule_or_decision_that_can_see_a_result_makes_results_worth_holding() {
        // Pinned to other operations or to HTTP: a result can never match.
        assert!(!reads(
            "rule t { when kind == mcp and operation == \"tools/call\" and tool == \"a\" allow \"ok\" }\n\
             rule h { when kind == http and target.host == \"x.example\" allow \"ok\" }"
        ));
        // A tool pinned without an operation matches the tool's results too.
        assert!(reads(
            "rule t { when tool == \"fetch_url\" and args.injection == true deny \"no\" }"
        ));
        // The result operation itself.
        assert!(reads(
            "rule r { when operation == \"tools/result\" deny \"no\" then taint \"x\" }"
        ));
        // A rule that pins nothing (here: only an argument) is visited for every action.
        assert!(reads("rule w { when args.limit > 5 deny \"no\" }"));
    }
}
