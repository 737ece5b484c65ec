//! The decision phase of a request: evaluate every action against the session, resolve what the
//! filter enforces (approval tokens, modifications, context services, batches), update the session
//! and seal the receipts — all inside one compare-and-swap cycle, with no effect on the stream.
//! `request.rs` then applies the resulting [`Plan`] to the stream.

use bundle::action::Action;
use bundle::approval;
use bundle::receipt::{self, ApprovalRef, ChainHead, EventKind, Receipt, ReceiptBody};
use bundle::session::{SessionState, SessionStatus};
use bundle::verdict::{Decision, Modification, Verdict};

use crate::config::{BenchCut, ContextService, FailureMode};
use crate::host::{Host, LogLevel, SharedDataError};
use crate::normalize::{self, JsonRpcId, McpMessageKind};
use crate::plugin::{Loaded, Plugin, log_receipt};
use crate::respond::{ApprovalRequest, DenialKind};
use crate::session_store::{self, MAX_CAS_ATTEMPTS, Record};

mod drift;

/// What kind of request the actions came from.
#[derive(Clone, Debug)]
pub(crate) enum Shape {
    /// An MCP POST: one entry per JSON-RPC message.
    Mcp {
        batch: bool,
        msgs: Vec<(Option<JsonRpcId>, McpMessageKind)>,
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

/// The inputs of one decision.
pub(crate) struct Input<'a> {
    pub shape: &'a Shape,
    pub actions: &'a [Action],
    pub body: Option<&'a [u8]>,
    pub session: Option<&'a str>,
    pub approval_token: Option<&'a str>,
}

/// A deferral to carry out: ask `service`, wait `timeout_ms`.
#[derive(Clone, Debug)]
pub(crate) struct PendingDefer {
    pub service: ContextService,
    pub timeout_ms: u32,
}

/// What happens to one message.
#[derive(Clone, Debug)]
pub(crate) struct MsgResult {
    pub verdict: Verdict,
    /// The decision the filter enforces for this message (after approvals, batch rules, failures).
    pub enforced: Decision,
    pub rule: String,
    pub reason: String,
    /// Set when the message is answered locally.
    pub denial: Option<DenialKind>,
    pub defer: Option<PendingDefer>,
    /// Human-readable changes made (MODIFY).
    pub changes: Vec<String>,
    pub approval: Option<ApprovalRef>,
    pub receipt: Option<Receipt>,
    /// `receipt` as its JSON line (serialized once, when sealed).
    pub receipt_line: Option<String>,
}

/// The outcome of the decision phase.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub msgs: Vec<MsgResult>,
    /// The strictest enforced decision: decides the whole request.
    pub overall: Decision,
    /// The rewritten body (MODIFY), when it changed.
    pub new_body: Option<Vec<u8>>,
    /// Request header edits from MODIFY (`None` value removes).
    pub header_edits: Vec<(String, Option<String>)>,
    /// Warnings for the agent (warn-mode rules).
    pub warnings: Vec<String>,
    /// The receipt chain the receipts belong to (session key, or this worker's anonymous chain).
    pub chain_name: String,
}

fn is_body_mod(m: &Modification) -> bool {
    matches!(
        m,
        Modification::RedactArg { .. }
            | Modification::DropArg { .. }
            | Modification::ClampArg { .. }
            | Modification::RedactSecrets
            | Modification::CoerceArg { .. }
    )
}

/// Per-request scratch while evaluating one message.
struct Work<'a> {
    l: &'a Loaded,
    now_ms: u64,
    /// The request body as received.
    original: Option<&'a [u8]>,
    /// The body after the MODIFY rewrites so far (`None`: unchanged).
    rewritten: Option<Vec<u8>>,
    header_edits: Vec<(String, Option<String>)>,
}

fn result(verdict: Verdict, enforced: Decision) -> MsgResult {
    MsgResult {
        rule: verdict.deciding_rule.clone(),
        reason: verdict.reason.clone(),
        verdict,
        enforced,
        denial: None,
        defer: None,
        changes: Vec::new(),
        approval: None,
        receipt: None,
        receipt_line: None,
    }
}

fn deny(
    mut r: MsgResult,
    rule: &str,
    reason: String,
    approval_error: Option<&'static str>,
) -> MsgResult {
    r.enforced = Decision::Deny;
    r.rule = rule.to_owned();
    r.reason = reason;
    r.denial = Some(DenialKind::Denied { approval_error });
    r.defer = None;
    r
}

/// Resolve what the filter does with one verdict.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are unrelated"
)]
fn enforce_one(
    w: &mut Work<'_>,
    shape: &Shape,
    index: usize,
    action: &Action,
    verdict: Verdict,
    state: &mut SessionState,
    extra: &mut bundle::session_codec::SessionExtra,
    token: Option<&str>,
) -> MsgResult {
    let batch = matches!(shape, Shape::Mcp { batch: true, .. });
    match verdict.decision {
        Decision::Allow => result(verdict, Decision::Allow),
        Decision::Deny => {
            let rule = verdict.deciding_rule.clone();
            let reason = verdict.reason.clone();
            let mut r = result(verdict, Decision::Deny);
            r.denial = Some(if rule.starts_with("stop:") {
                DenialKind::Stop
            } else {
                DenialKind::Denied {
                    approval_error: None,
                }
            });
            r.rule = rule;
            r.reason = reason;
            r
        }
        Decision::Modify => modify(w, shape, index, verdict),
        Decision::StepUp => {
            let r = result(verdict, Decision::StepUp);
            if batch {
                return deny(
                    r,
                    "filter:batch",
                    "an action that needs approval cannot be part of a batch; send it alone".into(),
                    None,
                );
            }
            let Some(step) = r.verdict.step_up.clone() else {
                return deny(
                    r,
                    "filter:step_up",
                    "the step-up decision names no approver group".into(),
                    None,
                );
            };
            if !w.l.cfg.approvers.contains_key(&step.group) {
                return deny(
                    r,
                    "filter:no_approvers",
                    format!("no approvers are configured for group `{}`", step.group),
                    None,
                );
            }
            let digest = receipt::action_digest(action);
            let now_s = w.now_ms / 1000;
            match token {
                None => {
                    let mut r = r;
                    r.denial = Some(DenialKind::ApprovalRequired(ApprovalRequest {
                        digest: hex::encode(digest),
                        reason: r.reason.clone(),
                        group: step.group.clone(),
                        expires_at: now_s.saturating_add(u64::from(step.timeout_s)),
                    }));
                    r
                }
                Some(t) => {
                    let checked = approval::verify(t, &digest, &step.group, &w.l.approvers, now_s)
                        .and_then(|a| {
                            if extra.token_used(&a.nonce) {
                                Err(approval::ApprovalError::Replayed)
                            } else {
                                Ok(a)
                            }
                        });
                    match checked {
                        Ok(a) => {
                            extra.remember_token(a.nonce);
                            state.approvals = state.approvals.saturating_add(1);
                            let mut r = r;
                            r.enforced = Decision::Allow;
                            r.reason = format!("approved by {} ({})", a.key_id, r.reason);
                            r.approval = Some(ApprovalRef {
                                token_id: a.token_id,
                                group: a.group,
                                key_id: a.key_id,
                            });
                            r
                        }
                        Err(e) => {
                            let rule = r.rule.clone();
                            deny(r, &rule, e.to_string(), Some(e.as_str()))
                        }
                    }
                }
            }
        }
        Decision::Defer => {
            let r = result(verdict, Decision::Defer);
            if batch {
                return deny(
                    r,
                    "filter:batch",
                    "a deferred action cannot be part of a batch; send it alone".into(),
                    None,
                );
            }
            let Some(d) = r.verdict.defer.clone() else {
                return deny(
                    r,
                    "filter:defer",
                    "the defer decision names no context service".into(),
                    None,
                );
            };
            match w.l.cfg.context_services.get(&d.service) {
                Some(service) => {
                    let mut r = r;
                    r.defer = Some(PendingDefer {
                        service: service.clone(),
                        timeout_ms: d.timeout_ms,
                    });
                    r
                }
                None => deny(
                    r,
                    "filter:no_context_service",
                    format!("context service `{}` is not configured", d.service),
                    None,
                ),
            }
        }
    }
}

fn modify(w: &mut Work<'_>, shape: &Shape, index: usize, verdict: Verdict) -> MsgResult {
    let mods = verdict.modifications.clone();
    let mut r = result(verdict, Decision::Modify);
    let body_mods: Vec<Modification> = mods.iter().filter(|m| is_body_mod(m)).cloned().collect();
    if !body_mods.is_empty() {
        let current = w.rewritten.as_deref().or(w.original);
        let rewritten = match (shape, current) {
            (Shape::Mcp { .. }, Some(body)) => {
                normalize::apply_modifications(body, index, &body_mods)
            }
            (
                Shape::Http {
                    body_buffered: true,
                    ..
                },
                Some(body),
            ) => normalize::apply_http_modifications(body, &body_mods),
            (
                Shape::Http {
                    has_body: false, ..
                },
                _,
            ) => Ok((Vec::new(), Vec::new())),
            _ => {
                return deny(
                    r,
                    "filter:modify",
                    "the policy rewrites the request body, but this body is not inspected (set `http.inspect_bodies`)".into(),
                    None,
                );
            }
        };
        match rewritten {
            Ok((new_body, changes)) => {
                if !changes.is_empty() {
                    w.rewritten = Some(new_body);
                }
                r.changes.extend(changes);
            }
            Err(refusal) => {
                return deny(
                    r,
                    "filter:modify",
                    format!("the rewrite failed: {}", refusal.reason),
                    None,
                );
            }
        }
    }
    for m in &mods {
        match m {
            Modification::StripHeader { name } => {
                w.header_edits.push((name.to_ascii_lowercase(), None));
                r.changes.push(receipt::describe_modification(m));
            }
            Modification::SetHeader { name, value } => {
                w.header_edits
                    .push((name.to_ascii_lowercase(), Some(value.clone())));
                r.changes.push(receipt::describe_modification(m));
            }
            // Response-side rewrite (response.rs): recorded here, applied to the list result.
            Modification::RemoveTools { .. } => {
                r.changes.push(receipt::describe_modification(m));
            }
            _ => {}
        }
    }
    r
}

/// Seal the receipt of one message with what the filter enforced.
fn seal_one(
    l: &Loaded,
    chain_name: &str,
    action: &Action,
    r: &MsgResult,
    drift: f32,
    chain: &mut ChainHead,
    now_ms: u64,
) -> (Receipt, String) {
    let mut body = ReceiptBody::for_action(chain_name, action, &r.verdict);
    body.decision = Some(r.enforced);
    body.rule = Some(r.rule.clone());
    body.reason = Some(r.reason.clone());
    if r.enforced == Decision::Modify {
        body.modifications = r.changes.clone();
    }
    body.bundle = Some(l.bundle_ref.clone());
    body.drift_milli = Some(receipt::drift_milli(drift));
    body.approval = r.approval.clone();
    let force = r.enforced != Decision::Allow;
    receipt::seal_line(body, chain, &l.signer, &l.sign_policy, now_ms, force)
}

/// The policy's verdict on `action` as the strictest server would read it: the request as sent,
/// and every other reading of it some server applies (`normalize::action_readings`: the path's
/// case, `;` parameters, trailing dots; method- and path-override headers). When a reading is
/// judged more strictly, its verdict decides, with a reason that says which reading it was: the
/// filter never judges a request as something looser than what a server may execute.
fn strictest_reading(l: &Loaded, action: &Action, state: &SessionState, now_ms: u64) -> Verdict {
    let verdict = l.bundle.evaluate(action, state, now_ms);
    if verdict.decision == Decision::Deny {
        return verdict;
    }
    let mut strictest: Option<(Verdict, Action)> = None;
    for alt in normalize::action_readings(action) {
        let v = l.bundle.evaluate(&alt, state, now_ms);
        let current = strictest
            .as_ref()
            .map_or(verdict.decision, |(s, _)| s.decision);
        if v.decision > current {
            strictest = Some((v, alt));
        }
    }
    match strictest {
        None => verdict,
        Some((mut v, alt)) => {
            // The reading, as servers would execute it (the request as sent is in the receipt).
            v.reason = format!(
                "some servers read this request as `{} {}`: {}",
                alt.operation,
                normalize::printable(&alt.target.path),
                v.reason
            );
            v
        }
    }
}

/// Evaluate and enforce every action of the request against `rec` (mutated), sealing receipts
/// into `rec.chain`. Pure apart from reading the clock.
fn plan_on(l: &Loaded, input: &Input<'_>, chain_name: &str, rec: &mut Record, now_ms: u64) -> Plan {
    let mut w = Work {
        l,
        now_ms,
        original: input.body,
        rewritten: None,
        header_edits: Vec::new(),
    };
    let mut msgs = Vec::with_capacity(input.actions.len());
    for (i, action) in input.actions.iter().enumerate() {
        let verdict = strictest_reading(l, action, &rec.state, now_ms);
        let intent = verdict.intent.clone();
        // Drift: the policy saw the value before this action; the receipt carries it after.
        let score = drift::action_score(&l.bundle, action, &verdict);
        let r = enforce_one(
            &mut w,
            input.shape,
            i,
            action,
            verdict,
            &mut rec.state,
            &mut rec.extra,
            input.approval_token,
        );
        if rec.state.status != SessionStatus::Missing {
            let mut v = r.verdict.clone();
            v.decision = r.enforced;
            rec.state.record(action, &v, intent.as_deref(), now_ms);
            if let Some(score) = score {
                rec.state.drift = drift::next(rec.state.drift, score);
            }
        }
        msgs.push(r);
    }
    let mut overall = msgs
        .iter()
        .map(|m| m.enforced)
        .max()
        .unwrap_or(Decision::Deny);
    if msgs.is_empty() {
        overall = Decision::Deny;
    }
    if matches!(overall, Decision::Deny | Decision::StepUp) {
        // The strictest decision decides the whole request: messages that would have passed are
        // refused too, and say why.
        for m in &mut msgs {
            if m.denial.is_none() {
                m.enforced = Decision::Deny;
                m.rule = "filter:batch".to_owned();
                m.reason = "another message in this batch was refused".to_owned();
                m.denial = Some(DenialKind::Denied {
                    approval_error: None,
                });
                m.defer = None;
            }
        }
    }
    let seal = !l.bench_cut(BenchCut::NoReceipts) && !l.bench_cut(BenchCut::NoWrites);
    for (m, action) in msgs.iter_mut().zip(input.actions).filter(|_| seal) {
        let (r, line) = seal_one(
            l,
            chain_name,
            action,
            m,
            rec.state.drift,
            &mut rec.chain,
            now_ms,
        );
        m.receipt = Some(r);
        m.receipt_line = Some(line);
    }
    rec.extra.last_seen_ms = now_ms;
    let warnings = msgs
        .iter()
        .flat_map(|m| m.verdict.warnings.iter().cloned())
        .collect();
    let new_body = if overall == Decision::Modify {
        w.rewritten.filter(|b| Some(b.as_slice()) != input.body)
    } else {
        None
    };
    Plan {
        msgs,
        overall,
        new_body,
        header_edits: if overall == Decision::Modify {
            w.header_edits
        } else {
            Vec::new()
        },
        warnings,
        chain_name: chain_name.to_owned(),
    }
}

/// Replace a plan by "deny everything" because the session store failed (failure mode closed).
fn store_failed(mut plan: Plan, why: &str) -> Plan {
    for m in &mut plan.msgs {
        m.enforced = Decision::Deny;
        m.rule = "filter:session_store".to_owned();
        m.reason = format!("session state could not be saved ({why})");
        m.denial = Some(DenialKind::Denied {
            approval_error: None,
        });
        m.defer = None;
        // The chain head was not saved, so this receipt is not part of the chain: drop it.
        m.receipt = None;
        m.receipt_line = None;
    }
    plan.overall = Decision::Deny;
    plan.new_body = None;
    plan.header_edits.clear();
    plan
}

/// Decide with a session `state` that is not saved; receipts go to the worker's anonymous chain.
fn unsaved(plugin: &Plugin, l: &Loaded, input: &Input<'_>, state: SessionState, now: u64) -> Plan {
    let mut rec = Record {
        state,
        chain: plugin.anon_chain.borrow().clone(),
        ..Record::default()
    };
    let plan = plan_on(l, input, &plugin.anon_name, &mut rec, now);
    *plugin.anon_chain.borrow_mut() = rec.chain;
    plan
}

/// Decide a request: evaluate, enforce, record and seal under compare-and-swap.
pub(crate) fn decide(host: &dyn Host, plugin: &Plugin, l: &Loaded, input: &Input<'_>) -> Plan {
    let Some(session) = input.session else {
        // No session key: a new, unsaved session; receipts go to this worker's anonymous chain.
        let now = host.now_ms();
        return unsaved(plugin, l, input, SessionState::new(now), now);
    };
    let mut last_error = String::from("compare-and-swap contention");
    for _ in 0..MAX_CAS_ATTEMPTS {
        let now = host.now_ms();
        let mut rec = l.load_session(host, session, now);
        if rec.state.status == SessionStatus::New && l.cfg.session.require_initialize {
            // An id whose `initialize` answer never passed here: missing, and nothing is saved
            // (made-up ids must not take slots from real sessions).
            if host.log_enabled(LogLevel::Debug) {
                host.log(
                    LogLevel::Debug,
                    &format!(
                        "portcullis: session `{session}` is unknown (session.require_initialize); \
                         deciding it as missing on the anonymous chain"
                    ),
                );
            }
            return unsaved(plugin, l, input, session_store::tombstone(now), now);
        }
        let ended = rec.ended.map(|why| {
            (
                why,
                receipt::session_end(session, &mut rec.chain, &l.signer, now),
            )
        });
        let plan = plan_on(l, input, session, &mut rec, now);
        match session_store::store(host, session, &rec) {
            Ok(()) => {
                if let Some((why, r)) = ended {
                    host.log(
                        LogLevel::Info,
                        &format!("portcullis: session `{session}` ended ({why})"),
                    );
                    log_receipt(host, &r);
                }
                plugin.touched(host, l, session, &rec, now);
                return plan;
            }
            Err(SharedDataError::CasMismatch) => continue,
            Err(SharedDataError::Other(e)) => {
                last_error = e;
                break;
            }
        }
    }
    host.log(
        LogLevel::Error,
        &format!("portcullis: session `{session}` could not be saved: {last_error}"),
    );
    plugin.count(host, crate::plugin::Metric::Errors);
    // Evaluate once more without saving, to know what the policy said.
    let now = host.now_ms();
    let mut rec = l.load_session(host, session, now);
    let plan = plan_on(l, input, session, &mut rec, now);
    match l.cfg.failure_mode {
        FailureMode::Closed => store_failed(plan, &last_error),
        FailureMode::Open => plan,
    }
}

/// A DEFER waiting for (or just given) its resolution.
pub(crate) struct Deferred<'a> {
    pub chain_name: &'a str,
    pub session: Option<&'a str>,
    pub action: &'a Action,
    pub verdict: &'a Verdict,
}

/// Record how a DEFER was resolved: a signed `defer_resolved` receipt in the session's chain.
/// `None` when the session could not be saved.
pub(crate) fn resolve_defer(
    host: &dyn Host,
    plugin: &Plugin,
    l: &Loaded,
    d: &Deferred<'_>,
    outcome: Decision,
    reason: &str,
) -> Option<Receipt> {
    let body = |drift: f32| {
        let mut b = ReceiptBody::for_action(d.chain_name, d.action, d.verdict);
        b.event = EventKind::DeferResolved;
        b.decision = Some(outcome);
        b.reason = Some(reason.to_owned());
        b.bundle = Some(l.bundle_ref.clone());
        b.drift_milli = Some(receipt::drift_milli(drift));
        b
    };
    let Some(session) = d.session else {
        let now = host.now_ms();
        let mut chain = plugin.anon_chain.borrow_mut();
        return Some(receipt::seal(
            body(0.0),
            &mut chain,
            &l.signer,
            &l.sign_policy,
            now,
            true,
        ));
    };
    for _ in 0..MAX_CAS_ATTEMPTS {
        let now = host.now_ms();
        let mut rec = l.load_session(host, session, now);
        let r = receipt::seal(
            body(rec.state.drift),
            &mut rec.chain,
            &l.signer,
            &l.sign_policy,
            now,
            true,
        );
        rec.extra.last_seen_ms = now;
        match session_store::store(host, session, &rec) {
            Ok(()) => {
                plugin.touched(host, l, session, &rec, now);
                return Some(r);
            }
            Err(SharedDataError::CasMismatch) => continue,
            Err(SharedDataError::Other(_)) => break,
        }
    }
    host.log(
        LogLevel::Error,
        &format!("portcullis: the defer resolution of session `{session}` could not be saved"),
    );
    None
}
