//! What the server sends the agent, judged (docs/filter.md, "The response path"): a tool result
//! as a `tools/result` pseudo-action, a server-to-client request as an action named by its
//! method. The effects of the rules it matches (`then taint "..."`, revocations, read-only, kill)
//! are applied to the session, a MODIFY rewrites the message, a DENY replaces or removes it, and
//! each of these is recorded by a `result` receipt in the session's chain.

use bundle::action::Action;
use bundle::receipt::{self, EventKind, Receipt, ReceiptBody};
use bundle::session::SessionState;
use bundle::verdict::{Decision, Verdict};
use serde_json::{Value, json};

use super::{Judge, inject};
use crate::host::LogLevel;
use crate::normalize::{self, Method, risk};
use crate::policy::Policy;
use crate::respond::Denial;
use crate::rules::FilterRule;
use crate::session::Write;

/// Longest `args.text` of a result action the policy reads, in bytes. The injection detector
/// reads the whole text.
const MAX_TEXT_BYTES: usize = 256 * 1024;

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

/// The text of a result: every string value (at any depth), joined by `\n`, all of it.
pub(super) fn result_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
        Value::Array(a) => a.iter().for_each(|x| result_text(x, out)),
        Value::Object(o) => o.values().for_each(|x| result_text(x, out)),
        _ => {}
    }
}

/// `text` cut to [`MAX_TEXT_BYTES`] at a character boundary: what the policy reads as
/// `args.text`.
fn policy_text(mut text: String) -> String {
    let mut cut = text.len().min(MAX_TEXT_BYTES);
    while !text.is_char_boundary(cut) {
        cut = cut.saturating_sub(1);
    }
    text.truncate(cut);
    text
}

/// `call` without its arguments and risk (a result action replaces both), so a large call is not
/// copied for the response path. Spelled out field by field so that a new `Action` field is a
/// compile error here, not a silent omission.
pub(crate) fn without_arguments(call: &Action) -> Action {
    let Action {
        kind,
        operation,
        tool,
        resource,
        prompt,
        arguments: _,
        arguments_sha256: _,
        target,
        identity,
        headers,
        session_id,
        trace_id,
        declared_intent,
        intent_source,
        size,
        body_sha256,
        risk: _,
        tool_state,
    } = call;
    Action {
        kind: *kind,
        operation: operation.clone(),
        tool: tool.clone(),
        resource: resource.clone(),
        prompt: prompt.clone(),
        arguments: Value::Null,
        arguments_sha256: None,
        target: target.clone(),
        identity: identity.clone(),
        headers: headers.clone(),
        session_id: session_id.clone(),
        trace_id: trace_id.clone(),
        declared_intent: declared_intent.clone(),
        intent_source: *intent_source,
        size: *size,
        body_sha256: body_sha256.clone(),
        risk: bundle::action::Risk::default(),
        tool_state: tool_state.clone(),
    }
}

/// The `tools/result` action for a call's JSON-RPC response `msg` (documented in docs/filter.md).
pub(crate) fn result_action(call: &Action, msg: &Value) -> Action {
    // An error answer is read like a result: its message and data are agent input too.
    let result = msg
        .get("result")
        .or_else(|| msg.get("error"))
        .unwrap_or(&Value::Null);
    let mut text = String::new();
    result_text(result, &mut text);
    let mut a = call.clone();
    a.operation = Method::ToolsResult.name().to_owned();
    a.risk = risk::scan_value(result);
    a.size = compact_json_len(result);
    let injection = inject::detect(&text);
    mark_instruction(&mut a, injection);
    a.set_arguments(json!({
        "text": policy_text(text),
        "injection": injection,
        "is_error": msg.get("error").is_some()
            || result.get("isError").and_then(Value::as_bool).unwrap_or(false),
    }));
    a
}

/// The data class set on an action whose text carries an instruction aimed at the agent.
pub const INSTRUCTION_CLASS: &str = "instruction";

fn mark_instruction(a: &mut Action, injection: bool) {
    if injection && !a.risk.data_classes.iter().any(|c| c == INSTRUCTION_CLASS) {
        a.risk.data_classes.push(INSTRUCTION_CLASS.to_owned());
        a.risk.data_classes.sort();
    }
}

/// The action for a request the server sends the agent (`sampling/createMessage`,
/// `elicitation/create`, `roots/list`, ...): the stream's action with the method as operation and
/// the request's `params` as arguments. Its text is agent input: secrets and data classes are
/// scanned, and an instruction aimed at the agent adds the data class `instruction`.
pub(crate) fn server_request_action(base: &Action, method: &str, msg: &Value) -> Action {
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let mut text = String::new();
    result_text(&params, &mut text);
    let mut a = base.clone();
    method.clone_into(&mut a.operation);
    a.tool = None;
    a.prompt = None;
    a.resource = None;
    a.risk = risk::scan_value(&params);
    a.size = compact_json_len(&params);
    mark_instruction(&mut a, inject::detect(&text));
    a.set_arguments(params);
    a
}

/// MODIFY on a message: the verdict's argument rewrites applied to its member `field` (`result`
/// for a tool result, `params` for a server request; paths `args.X` address `<field>.X`,
/// `redact_secrets` walks the whole member). Returns the new message (when something changed)
/// and the receipt lines. A rewrite that cannot be made (bad clamp bounds) replaces the message
/// by a JSON-RPC error -32044: fail closed.
fn modify_member(msg: &Value, field: &str, verdict: &Verdict) -> (Option<Value>, Vec<String>) {
    if verdict.decision != Decision::Modify {
        return (None, Vec::new());
    }
    let mut out = msg.clone();
    let Some(member) = out.get_mut(field) else {
        return (None, Vec::new());
    };
    match normalize::apply_to_value(member, field, &verdict.modifications) {
        Ok(changes) if changes.is_empty() => (None, changes),
        Ok(changes) => (Some(out), changes),
        Err(e) => {
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            (
                Some(super::unchecked_error(
                    &id,
                    &format!("it could not be rewritten: {}", e.reason),
                )),
                vec!["replaced the message by an error (rewrite failed)".to_owned()],
            )
        }
    }
}

/// What the policy does to one message.
pub(crate) enum Effect {
    /// Passes as it is.
    Keep,
    /// Passes rewritten (MODIFY).
    Rewrite(Value),
    /// Denied: an answer is replaced by this denial, a server request is removed.
    Deny(Denial),
}

/// One message judged, with the receipt that records it (when it did something).
pub(crate) struct Judged {
    pub outcome: Effect,
    pub receipt: Option<Receipt>,
}

/// Whether a DENY on a server-to-agent message is enforced: when a rule of the pack says so (or
/// the session was killed). The pack's default, an intent's outside decision and a missing
/// session are about the agent's actions: a pack written for those must not swallow every result
/// and server request it never mentions.
fn enforced_deny(l: &Policy, verdict: &Verdict) -> bool {
    verdict.decision == Decision::Deny
        && (l.pack.is_pack_rule(&verdict.deciding_rule)
            || verdict.deciding_rule == bundle::builtin::SESSION_KILLED)
}

/// How far a verdict acts on a result: an enforced DENY replaces it (2), a MODIFY rewrites it
/// (1); anything else lets it pass as it is (0): ALLOW, and what is recorded but not enforced (a
/// DENY by the pack's default or an intent's outside decision, STEP_UP, DEFER).
fn weight(l: &Policy, v: &Verdict) -> u8 {
    match v.decision {
        Decision::Deny if enforced_deny(l, v) => 2,
        Decision::Modify => 1,
        _ => 0,
    }
}

/// Fold the verdict `v` on one reading of an untied answer (as the result of `tool`), of weight
/// `w`, into `into` of weight `*into_w`: its effects always; its rewrites when both MODIFY; the
/// whole verdict, its reason naming the reading, when it acts more (so a DENY that is not
/// enforced never displaces a MODIFY that is).
fn merge_reading(into: &mut Verdict, into_w: &mut u8, v: Verdict, w: u8, tool: &str) {
    let mut effects = std::mem::take(&mut into.effects);
    for e in &v.effects {
        if !effects.contains(e) {
            effects.push(e.clone());
        }
    }
    if w > *into_w {
        let reason = format!(
            "no request of this stream awaits the answer, and as the result of `{}`: {}",
            normalize::printable(tool),
            v.reason
        );
        *into = Verdict { reason, ..v };
        *into_w = w;
    } else if w == 1 && *into_w == 1 {
        for m in v.modifications {
            if !into.modifications.contains(&m) {
                into.modifications.push(m);
            }
        }
    }
    into.effects = effects;
}

fn effect(
    deny: bool,
    verdict: &Verdict,
    rewritten: Option<Value>,
    receipt: Option<&Receipt>,
) -> Effect {
    if deny {
        return Effect::Deny(Denial::deny(
            &verdict.deciding_rule,
            &verdict.reason,
            receipt.map(|r| bundle::receipt::hash_hex(&r.hash)),
        ));
    }
    rewritten.map_or(Effect::Keep, Effect::Rewrite)
}

/// Judge one server-to-agent message (`action` is its result or server-request action; `field`
/// the member a MODIFY rewrites): evaluate against the session, apply the effects, and seal a
/// `result` receipt when it did anything (effects, a rewrite, a DENY). Without a session nothing
/// is recorded, but a rewrite or a DENY still holds; so does it when the session cannot be saved
/// (redaction must not depend on the store).
pub(crate) fn judge(cx: &Judge<'_>, action: &Action, msg: &Value, field: &str) -> Judged {
    judge_as(cx, action, &[], msg, field)
}

/// [`judge`] for an answer the filter cannot tie to its call (`action.tool` is `None`): judged
/// also as the result of each of `tools`. The strictest decision decides (its reason names the
/// tool), and the effects of every reading, and the rewrites of every MODIFY reading, apply.
pub(crate) fn judge_as(
    cx: &Judge<'_>,
    action: &Action,
    tools: &[String],
    msg: &Value,
    field: &str,
) -> Judged {
    let l = cx.l;
    let verdict_on = |state: &SessionState, now: u64| {
        let mut verdict = l.bundle.evaluate(action, state, now);
        if !tools.is_empty() {
            let mut w = weight(l, &verdict);
            let mut reading = action.clone();
            for t in tools {
                reading.tool = Some(t.clone());
                let v = l.bundle.evaluate(&reading, state, now);
                let vw = weight(l, &v);
                merge_reading(&mut verdict, &mut w, v, vw, t);
            }
        }
        let (rewritten, changes) = modify_member(msg, field, &verdict);
        let deny = enforced_deny(l, &verdict);
        (verdict, changes, deny, (rewritten, deny))
    };
    let (verdict, receipt, (rewritten, deny)) = record(cx, action, verdict_on);
    Judged {
        outcome: effect(deny, &verdict, rewritten, receipt.as_ref()),
        receipt,
    }
}

/// Record that the answer to `call` was replaced because the filter could not check it
/// (`why`): a DENY `result` receipt in the session's chain. `None` without a session.
pub(crate) fn refused(cx: &Judge<'_>, call: &Action, why: &str) -> Option<Receipt> {
    let action = result_action(call, &json!({"error": {"message": why}}));
    let verdict = Verdict {
        decision: Decision::Deny,
        would_be: Decision::Deny,
        deciding_rule: FilterRule::UncheckedResponse.as_str().to_owned(),
        reason: why.to_owned(),
        ..Verdict::default()
    };
    record(cx, &action, |_, _| (verdict.clone(), Vec::new(), true, ())).1
}

/// Record what the filter did to the entries of a list answer that carry instructions aimed at
/// the agent (`lines`, one per entry: removed, or kept by a rule): a `result` receipt in the
/// session's chain for the list request `list`, MODIFY when something was removed. `None` without
/// a session.
pub(crate) fn poisoned_entries(
    cx: &Judge<'_>,
    list: &Action,
    removed: usize,
    lines: Vec<String>,
) -> Option<Receipt> {
    flagged_entries(
        cx,
        list,
        removed,
        lines,
        FilterRule::PoisonedEntry,
        "list entries carry instructions aimed at the agent",
    )
}

/// The `result` receipt of a list answer some of whose entries were flagged (`rule`): MODIFY
/// when `removed` of them were removed, ALLOW when every one was kept; `lines` say what became
/// of each.
pub(crate) fn flagged_entries(
    cx: &Judge<'_>,
    list: &Action,
    removed: usize,
    lines: Vec<String>,
    rule: FilterRule,
    reason: &str,
) -> Option<Receipt> {
    let decision = if removed > 0 {
        Decision::Modify
    } else {
        Decision::Allow
    };
    let verdict = Verdict {
        decision,
        would_be: decision,
        deciding_rule: rule.as_str().to_owned(),
        reason: reason.to_owned(),
        ..Verdict::default()
    };
    record(cx, list, |_, _| (verdict.clone(), lines.clone(), true, ())).1
}

/// Evaluate with `verdict_on` against the session as stored and, when the verdict did anything
/// (effects, rewrites, or what `verdict_on` says must be recorded: an enforced DENY), apply its
/// effects and seal a `result` receipt into the session's chain, under compare-and-swap. Without a session, or when it cannot be saved, the verdict still
/// holds (redaction must not depend on the store) but nothing is recorded.
fn record<T>(
    cx: &Judge<'_>,
    action: &Action,
    verdict_on: impl Fn(&SessionState, u64) -> (Verdict, Vec<String>, bool, T),
) -> (Verdict, Option<Receipt>, T) {
    let host = cx.host;
    let l = cx.l;
    let unsaved = || {
        let now = host.now_ms();
        let (v, _, _, t) = verdict_on(&SessionState::new(now), now);
        (v, None, t)
    };
    let Some(session) = cx.session else {
        return unsaved();
    };
    if cx.sessions.on_etcd() {
        return record_beside(cx, action, session, verdict_on);
    }
    let owner = cx.principal.map(bundle::session::name_hash);
    let recorded = cx.sessions.update(host, session, owner, |rec, now| {
        let (verdict, changes, must_record, t) = verdict_on(&rec.state, now);
        if verdict.effects.is_empty() && changes.is_empty() && !must_record {
            // The message changed nothing: no receipt, the session record is not written.
            return Write::Skip((verdict, None, t));
        }
        if rec.state.status != bundle::session::SessionStatus::Missing {
            rec.state.apply_effects(&verdict.effects);
        }
        let mut body = ReceiptBody::for_action(session, action, &verdict);
        body.event = EventKind::Result;
        body.bundle = Some(l.bundle_ref.clone());
        body.drift_milli = Some(receipt::drift_milli(rec.state.drift));
        body.modifications = changes;
        let r = receipt::seal(body, &mut rec.chain, &l.signer, &l.sign_policy, now, true);
        rec.extra.last_seen_ms = now;
        Write::Active((verdict, Some(r), t))
    });
    match recorded {
        Ok((verdict, Some(r), t)) => {
            host.log(
                LogLevel::Info,
                &format!(
                    "portcullis: {} of `{}` session `{session}` rule `{}`: {} effect(s) applied; {}; {}",
                    action.operation,
                    action.subject(),
                    verdict.deciding_rule,
                    verdict.effects.len(),
                    verdict.decision.as_str(),
                    if r.body.modifications.is_empty() {
                        "unchanged".to_owned()
                    } else {
                        r.body.modifications.join(", ")
                    }
                ),
            );
            if let Some(p) = cx.principal
                && !verdict.effects.is_empty()
            {
                contain(cx, p, &verdict.effects);
            }
            // Not logged: the stream appends it to its access-log receipt (`stream/`).
            return (verdict, Some(r), t);
        }
        Ok(unrecorded) => return unrecorded,
        Err(_) => {}
    }
    host.log(
        LogLevel::Error,
        &format!("portcullis: a message to session `{session}` could not be recorded"),
    );
    unsaved()
}

/// [`record`] with sessions on etcd (`docs/state.md`): the session's chain is etcd's, and only a
/// decision writes it. So the message is judged on the cached record; its effects are applied
/// to the cached record (the session's next decision on this Envoy writes them to etcd, and a
/// record adopted from etcd keeps them) and to the principal's (shared through etcd); its
/// receipt goes to this worker's anonymous chain.
fn record_beside<T>(
    cx: &Judge<'_>,
    action: &Action,
    session: &str,
    verdict_on: impl Fn(&SessionState, u64) -> (Verdict, Vec<String>, bool, T),
) -> (Verdict, Option<Receipt>, T) {
    let (host, l) = (cx.host, cx.l);
    let now = host.now_ms();
    let owner = cx.principal.map(bundle::session::name_hash);
    let state = cx.sessions.read(host, session, owner, now).state;
    let (verdict, changes, must_record, t) = verdict_on(&state, now);
    if verdict.effects.is_empty() && changes.is_empty() && !must_record {
        return (verdict, None, t);
    }
    if !verdict.effects.is_empty()
        && let Err(e) = cx.sessions.contain_cached(host, session, &verdict.effects)
    {
        host.log(
            LogLevel::Error,
            &format!("portcullis: a result's effects could not reach session `{session}`: {e}"),
        );
    }
    let mut body = ReceiptBody::for_action(cx.sessions.anon_name(), action, &verdict);
    body.event = EventKind::Result;
    body.bundle = Some(l.bundle_ref.clone());
    body.drift_milli = Some(receipt::drift_milli(state.drift));
    body.modifications = changes;
    let r = cx
        .sessions
        .on_anon_chain(|chain| receipt::seal(body, chain, &l.signer, &l.sign_policy, now, true));
    host.log(
        LogLevel::Info,
        &format!(
            "portcullis: {} of `{}` session `{session}` rule `{}`: {} effect(s) applied; {} \
             (receipt on `{}`: the session's chain is etcd's)",
            action.operation,
            action.subject(),
            verdict.deciding_rule,
            verdict.effects.len(),
            verdict.decision.as_str(),
            cx.sessions.anon_name()
        ),
    );
    if let Some(p) = cx.principal
        && !verdict.effects.is_empty()
    {
        contain(cx, p, &verdict.effects);
    }
    (verdict, Some(r), t)
}

/// Carry a result's effects (taints, kills, quarantines) to the principal's record, so its other
/// sessions and its keyless requests see them (`principal.*`).
fn contain(cx: &Judge<'_>, principal: &str, effects: &[bundle::verdict::Effect]) {
    let written = cx.sessions.update_principal(cx.host, principal, |r, now| {
        let was = r.view.quarantine;
        let changed = r.view.apply_effects(effects);
        if r.view.quarantine != was {
            r.quarantined_ms = now;
        }
        changed
    });
    if let Err(e) = written {
        cx.host.log(
            LogLevel::Error,
            &format!("portcullis: a result's effects could not reach principal `{principal}`: {e}"),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use bundle::verdict::{Decision, Effect, Modification, Verdict};

    use super::{compact_json_len, merge_reading};

    fn verdict(decision: Decision, rule: &str) -> Verdict {
        Verdict {
            decision,
            deciding_rule: rule.to_owned(),
            reason: rule.to_owned(),
            ..Verdict::default()
        }
    }

    #[test]
    fn an_untied_answers_readings_merge_by_what_they_do_to_it() {
        // A redaction is not displaced by a DENY that is not enforced (the pack's default, an
        // intent's outside decision); the readings' effects all apply.
        let mut into = verdict(Decision::Modify, "secret_results");
        into.modifications.push(Modification::RedactSecrets);
        let mut w = 1;
        let mut default = verdict(Decision::Deny, "default");
        default.effects.push(Effect::Taint("x".into()));
        merge_reading(&mut into, &mut w, default, 0, "t");
        assert_eq!((into.decision, w), (Decision::Modify, 1));
        assert_eq!(into.modifications, [Modification::RedactSecrets]);
        assert_eq!(into.effects, [Effect::Taint("x".into())]);
        // Two rewrites both apply.
        let mut other = verdict(Decision::Modify, "drop_rows");
        other.modifications.push(Modification::DropArg {
            path: vec![bundle::verdict::PathSegment::Key("rows".into())],
        });
        merge_reading(&mut into, &mut w, other, 1, "t");
        assert_eq!(into.modifications.len(), 2);
        // An enforced DENY decides, its reason naming the reading.
        merge_reading(
            &mut into,
            &mut w,
            verdict(Decision::Deny, "withheld"),
            2,
            "dump_env",
        );
        assert_eq!((into.decision, w), (Decision::Deny, 2));
        assert_eq!(into.deciding_rule, "withheld");
        assert!(
            into.reason.contains("as the result of `dump_env`"),
            "{}",
            into.reason
        );
        assert_eq!(into.effects, [Effect::Taint("x".into())]);
    }

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
}
