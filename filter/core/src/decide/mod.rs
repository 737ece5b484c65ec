//! The decision phase of a request: evaluate every action against the session, resolve what the
//! filter enforces (approval tokens, modifications, context services, batches), update the session
//! and seal the receipts — all inside one compare-and-swap cycle, with no effect on the stream.
//! The stream (`stream/`) then applies the resulting [`Plan`].
//!
//! It receives the policy in force and a session handle, nothing else of the plugin:
//! `resolve.rs` resolves one verdict, `readings.rs` judges a request as the strictest server
//! reads it, `drift.rs` scores intent drift.

use bundle::action::{Action, IntentSource};
use bundle::approval::Approval;
use bundle::layers::LayerOutcome;
use bundle::receipt::{self, ApprovalRef, ChainHead, EventKind, Receipt, ReceiptBody};
use bundle::session::{PrincipalView, SessionState, SessionStatus, name_hash};
use bundle::verdict::{Decision, Verdict};

use crate::bench::Stage;
use crate::config::{ContextService, FailureMode};
use crate::host::{Host, LogLevel};
pub(crate) use crate::normalize::Shape;
use crate::policy::Policy;
use crate::respond::DenialKind;
use crate::rules::FilterRule;
use crate::session::{
    Acted, EndReason, PrincipalRecord, Record, Sessions, StoreFailed, Write, log_receipt, tombstone,
};

mod drift;
mod readings;
mod resolve;

use readings::strictest_reading;
use resolve::{Claim, Work, enforce_one};

/// The inputs of one decision.
pub(crate) struct Input<'a> {
    pub shape: &'a Shape,
    pub actions: &'a [Action],
    pub body: Option<&'a [u8]>,
    /// The session the request is decided in (its key, or its principal's run).
    pub session: Option<&'a str>,
    /// `session` is the key the request carried (not a run the filter named): only such a key
    /// is subject to `session.require_initialize`.
    pub keyed: bool,
    /// The principal acting, when one is known.
    pub principal: Option<Who<'a>>,
    pub approval_token: Option<&'a str>,
    /// In-band approval refused this action (`stream/approval.rs`): the approval service
    /// recorded a denial, or the user declined the elicitation. A STEP_UP without a token is
    /// denied with this reason and `approval_error`.
    pub approver_denial: Option<(&'a str, &'static str)>,
    /// The verified task grant in force: acting actions outside its tools or hosts are denied.
    pub grant: Option<&'a bundle::grant::Grant>,
    /// Why the shared state store cannot answer for this request's principal (its cache does
    /// not know the principal and is out of sync): nothing is decided with state.
    pub state_store: Option<&'a str>,
    /// Per action (same order), the `tools/call`'s tool against its pin (`pins.rs`); empty
    /// when no action is a call.
    pub tool_checks: &'a [Option<crate::policy::pins::ToolCheck>],
    /// Per action (same order), why it is refused for the server-held state it presents (an
    /// MRTR `requestState`, a task id: `session/bindings.rs`); empty when no message presents
    /// any.
    pub bound_state: &'a [Option<(FilterRule, String)>],
}

/// The principal of a request and its record as read (or why it could not be).
#[derive(Clone, Copy)]
pub(crate) struct Who<'a> {
    pub id: &'a str,
    pub record: Result<&'a PrincipalRecord, &'a StoreFailed>,
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
    /// The approval token honoured (its nonce and expiry): with the etcd backend its id is
    /// created there before the approval takes effect.
    pub used_token: Option<([u8; 16], u64)>,
    pub receipt: Option<Receipt>,
    /// The credential this MODIFY injects (`inject credential`; configured, and never in a batch).
    pub credential: Option<String>,
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
    /// The session the decision was saved in (`None`: decided without a saved session).
    pub session: Option<String>,
    /// Receipts sealed after the decision's own (a write to the shared state store that failed
    /// and changed what is enforced: [`refuse_uncommitted`]).
    pub followups: Vec<(Receipt, String)>,
}

/// Why `action` is outside what task grant `g` narrows the run to (`None`: inside). A grant
/// narrows tool calls (its `tools`) and HTTP requests (its `hosts`); it never widens what the
/// policy allows.
fn outside_grant(g: &bundle::grant::Grant, action: &Action) -> Option<String> {
    match action.kind {
        bundle::action::Kind::Mcp if action.operation == "tools/call" => {
            let tool = action.tool.as_deref().unwrap_or("");
            (!g.allows_tool(tool)).then(|| {
                format!(
                    "tool `{}` is outside the task grant `{}`",
                    crate::normalize::printable(tool),
                    g.grant_id
                )
            })
        }
        bundle::action::Kind::Http => (!g.allows_host(&action.target.host)).then(|| {
            format!(
                "host `{}` is outside the task grant `{}`",
                action.target.host, g.grant_id
            )
        }),
        bundle::action::Kind::Mcp => None,
    }
}

/// Seal the receipt of one message with what the filter enforced.
fn seal_one(
    l: &Policy,
    chain_name: &str,
    // The action, and what each pack of a layered bundle decided about it.
    (action, layers): (&Action, &[LayerOutcome]),
    r: &MsgResult,
    (drift, source): (f32, IntentSource),
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
    if l.bundle.is_layered() {
        body.layers = Some(l.bundle.records(layers));
    }
    body.drift_milli = Some(receipt::drift_milli(drift));
    body.approval = r.approval.clone();
    if body.intent.is_some() {
        body.intent_source = Some(source.as_str().to_owned());
    }
    let force = r.enforced != Decision::Allow;
    receipt::seal_line(body, chain, &l.signer, &l.sign_policy, now_ms, force)
}

/// Evaluate and enforce every action of the request against `rec` (mutated), sealing receipts
/// into `rec.chain`. Pure apart from reading the clock.
fn plan_on(
    l: &Policy,
    input: &Input<'_>,
    chain_name: &str,
    rec: &mut Record,
    now_ms: u64,
    claim: Option<Claim<'_>>,
) -> Plan {
    let mut w = Work {
        claim,
        approver_denial: input.approver_denial,
        l,
        now_ms,
        original: input.body,
        rewritten: None,
        header_edits: Vec::new(),
    };
    let mut msgs = Vec::with_capacity(input.actions.len());
    // What each pack of a layered bundle decided, per message (nothing is allocated for a
    // single pack: its outcomes are empty and not kept).
    let mut layer_outcomes: Vec<Vec<LayerOutcome>> = Vec::new();
    for (i, action) in input.actions.iter().enumerate() {
        let (mut verdict, layers) = strictest_reading(l, action, &rec.state, now_ms);
        if l.bundle.is_layered() {
            layer_outcomes.push(layers);
        }
        if let Some(why) = input.grant.and_then(|g| outside_grant(g, action)) {
            verdict = verdict.overruled(FilterRule::GrantOutside.as_str(), why);
        }
        if let Some((rule, why)) = input.bound_state.get(i).and_then(Option::as_ref) {
            verdict = verdict.overruled(rule.as_str(), why.clone());
        }
        if let Some(check) = input.tool_checks.get(i).and_then(Option::as_ref)
            && (action.tool_state.changed || action.tool_state.shadowed)
            && !crate::policy::pins::kept(l, action, &verdict)
        {
            verdict = crate::policy::pins::refuse(action, check, verdict);
        }
        let intent = verdict.intent.clone();
        // Drift: the policy saw the value before this action; the receipt carries it after.
        // Intents are the baseline's (the pack that sets the session-level settings).
        let score = drift::action_score(l.bundle.baseline(), action, &verdict);
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
                m.rule = FilterRule::Batch.as_str().to_owned();
                m.reason = "another message in this batch was refused".to_owned();
                m.denial = Some(DenialKind::Denied {
                    approval_error: None,
                });
                m.defer = None;
            }
        }
    }
    let seal = !l.cut(Stage::Sealing);
    for (i, (m, action)) in msgs
        .iter_mut()
        .zip(input.actions)
        .enumerate()
        .filter(|_| seal)
    {
        let layers = layer_outcomes.get(i).map_or(&[][..], Vec::as_slice);
        // The pinned intent's source, or (a session that pinned none) the action's.
        let source = if rec.state.intent.is_some() {
            rec.state.intent_source
        } else {
            action.intent_source
        };
        let (r, line) = seal_one(
            l,
            chain_name,
            (action, layers),
            m,
            (rec.state.drift, source),
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
        session: None,
        followups: Vec::new(),
    }
}

/// Replace a plan by "deny everything" because the session store failed (failure mode closed).
fn store_failed(plan: Plan, why: &str) -> Plan {
    refuse_all(
        plan,
        FilterRule::SessionStore,
        &format!("session state could not be saved ({why})"),
    )
}

/// Deny every message of `plan` with `rule` and `reason`, dropping its receipts (the chain head
/// they extend was not saved).
fn refuse_all(mut plan: Plan, rule: FilterRule, reason: &str) -> Plan {
    for m in &mut plan.msgs {
        m.enforced = Decision::Deny;
        m.rule = rule.as_str().to_owned();
        m.reason = reason.to_owned();
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

/// Decide with a session `state` that is not saved; receipts go to the worker's anonymous chain,
/// and approval tokens are claimed in the process-wide set of used ones (no record keeps them).
/// Returns the plan and the principal as the decision left it.
fn unsaved(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    input: &Input<'_>,
    state: SessionState,
    now: u64,
) -> (Plan, PrincipalView) {
    let claim = |a: &Approval| sessions.claim_approval(host, a, now);
    sessions.on_anon_chain(|chain| {
        let mut rec = Record {
            state,
            chain: chain.clone(),
            ..Record::default()
        };
        let plan = plan_on(l, input, sessions.anon_name(), &mut rec, now, Some(&claim));
        *chain = rec.chain;
        (plan, rec.state.principal)
    })
}

/// A decision saved in its session.
struct Saved {
    plan: Plan,
    /// The session end the read found (expired), with its receipt.
    ended: Option<(EndReason, Receipt)>,
    /// The principal as the decision left it.
    after: PrincipalView,
    /// The session had no record before.
    new_session: bool,
}

/// What one update of the session decided.
enum Decided {
    /// Saved (boxed: the other outcomes carry nothing).
    Saved(Box<Saved>),
    /// Not saved: an MCP session id never initialized here (`session.require_initialize`).
    Unknown,
    /// Not saved: a new session whose first request was refused stores nothing (it is decided
    /// again without a record).
    Refused,
    /// Not saved: the session belongs to another principal; to this one it is unknown.
    Foreign,
}

/// Whether a session carries anything that must be kept: a taint, a revocation, read-only or a
/// kill (a refused first request with none stores nothing; one with any is saved).
fn contains(s: &SessionState) -> bool {
    s.killed
        || s.read_only
        || !s.taints.is_empty()
        || !s.revoked_tools.is_empty()
        || !s.revoked_classes.is_empty()
}

/// A fresh session state that sees `principal`.
fn fresh(now: u64, principal: &PrincipalView) -> SessionState {
    SessionState {
        principal: principal.clone(),
        ..SessionState::new(now)
    }
}

/// Decide a request: evaluate, enforce, record and seal in one update of its session; then carry
/// what it did to its principal into the principal's record (`session::Sessions::principal_acted`).
pub(crate) fn decide(host: &dyn Host, l: &Policy, sessions: &Sessions, input: &Input<'_>) -> Plan {
    let (view, principal_failed) = match input.principal.map(|w| w.record) {
        None => (PrincipalView::default(), None),
        Some(Ok(r)) => (r.view.clone(), None),
        Some(Err(e)) => (PrincipalView::default(), Some(e)),
    };
    if let Some(why) = input.state_store {
        // The cache may not know this principal's quarantine: decided without state, denied.
        let now = host.now_ms();
        let (plan, _) = unsaved(host, l, sessions, input, fresh(now, &view), now);
        return match l.cfg.failure_mode {
            FailureMode::Closed => refuse_all(plan, FilterRule::StateStore, why),
            FailureMode::Open => plan,
        };
    }
    if let Some(e) = principal_failed {
        // Without its record the principal may be quarantined: nothing is decided with state.
        let now = host.now_ms();
        let (plan, _) = unsaved(host, l, sessions, input, fresh(now, &view), now);
        return match l.cfg.failure_mode {
            FailureMode::Closed => store_failed(plan, &e.0),
            FailureMode::Open => plan,
        };
    }
    let Some(session) = input.session else {
        // No session key and no principal: a new, unsaved session on this worker's anonymous
        // chain (or a missing one, when the pack says `session_key required`).
        let now = host.now_ms();
        sessions.untracked(host, input.actions.len(), now);
        let state = if l.bundle.program().require_session_key {
            tombstone(now)
        } else {
            SessionState::new(now)
        };
        return unsaved(host, l, sessions, input, state, now).0;
    };
    let owner = input.principal.map(|w| name_hash(w.id));
    // With sessions on etcd, the record is staged for the stream to write (`stream/commit.rs`).
    let decided = sessions.stage(host, session, owner, |rec, now| {
        let new_session = rec.state.status == SessionStatus::New;
        if new_session && input.keyed && l.cfg.session.require_initialize {
            // An id whose `initialize` answer never passed here: missing, and nothing is saved
            // (made-up ids must not take slots from real sessions).
            return Write::Skip(Decided::Unknown);
        }
        if !new_session && rec.extra.owner.is_some_and(|o| owner != Some(o)) {
            // A session key names a session only for the principal that owns it.
            return Write::Skip(Decided::Foreign);
        }
        rec.state.principal = view.clone();
        let ended = rec.ended.map(|why| {
            (
                why,
                receipt::session_end(session, &mut rec.chain, &l.signer, now),
            )
        });
        let plan = plan_on(l, input, session, rec, now, None);
        if new_session && plan.overall == Decision::Deny && !contains(&rec.state) {
            return Write::Skip(Decided::Refused);
        }
        let after = std::mem::take(&mut rec.state.principal);
        Write::Active(Decided::Saved(Box::new(Saved {
            plan,
            ended,
            after,
            new_session,
        })))
    });
    let (plan, after, new_session) = match decided {
        Ok(Decided::Saved(saved)) => {
            let Saved {
                mut plan,
                ended,
                after,
                new_session,
            } = *saved;
            if let Some((why, r)) = ended {
                host.log(
                    LogLevel::Info,
                    &format!("portcullis: session `{session}` ended ({why})"),
                );
                log_receipt(host, &r);
            }
            plan.session = Some(session.to_owned());
            (plan, after, new_session)
        }
        Ok(d @ (Decided::Unknown | Decided::Foreign)) => {
            if host.log_enabled(LogLevel::Debug) {
                let why = if matches!(d, Decided::Foreign) {
                    "it belongs to another principal"
                } else {
                    "session.require_initialize"
                };
                host.log(
                    LogLevel::Debug,
                    &format!(
                        "portcullis: session `{session}` is unknown ({why}); deciding it as \
                         missing on the anonymous chain"
                    ),
                );
            }
            let now = host.now_ms();
            let mut state = tombstone(now);
            state.principal = view.clone();
            let (plan, after) = unsaved(host, l, sessions, input, state, now);
            (plan, after, false)
        }
        Ok(Decided::Refused) => {
            let now = host.now_ms();
            let (plan, after) = unsaved(host, l, sessions, input, fresh(now, &view), now);
            (plan, after, false)
        }
        Err(e) => {
            host.log(
                LogLevel::Error,
                &format!("portcullis: session `{session}` could not be saved: {e}"),
            );
            // Evaluate once more without saving, to know what the policy said (the record does
            // not keep a token used now, so the process-wide set does).
            let now = host.now_ms();
            let mut rec = sessions.read(host, session, owner, now);
            rec.state.principal = view.clone();
            let claim = |a: &Approval| sessions.claim_approval(host, a, now);
            let plan = plan_on(l, input, session, &mut rec, now, Some(&claim));
            // What it did to the principal is still carried to the principal's record below.
            let plan = match l.cfg.failure_mode {
                FailureMode::Closed => store_failed(plan, &e.0),
                FailureMode::Open => plan,
            };
            (plan, rec.state.principal, false)
        }
    };
    let Some(who) = input.principal else {
        return plan;
    };
    let saved_in = plan.session.clone();
    // The usual request (an agent acting in its current run, changing nothing about itself)
    // leaves the record as it was read: no second read-and-compare cycle on the request path.
    let unchanged = !new_session
        && view == after
        && (saved_in.is_none()
            || who
                .record
                .is_ok_and(|r| r.run.as_deref() == saved_in.as_deref()));
    if unchanged {
        return plan;
    }
    let acted = Acted {
        session: saved_in.as_deref(),
        new_session,
        before: &view,
        after: &after,
    };
    principal_acted(host, l, sessions, who.id, plan, &acted)
}

/// Carry a decision of principal `id` into its record. When that fails and the decision changed
/// what is contained (a taint, a quarantine), the principal-wide part would be lost: the failure
/// mode applies.
fn principal_acted(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    id: &str,
    plan: Plan,
    acted: &Acted<'_>,
) -> Plan {
    let (before, after) = (acted.before, acted.after);
    match sessions.principal_acted(host, id, acted) {
        Ok(_) => plan,
        Err(e) => {
            host.log(
                LogLevel::Error,
                &format!("portcullis: principal `{id}` could not be saved: {e}"),
            );
            let contains = before.taints != after.taints
                || before.quarantine != after.quarantine
                || before.revoked_tools != after.revoked_tools
                || before.revoked_classes != after.revoked_classes;
            match (l.cfg.failure_mode, contains) {
                (FailureMode::Closed, true) => store_failed(plan, &e.0),
                _ => plan,
            }
        }
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
    l: &Policy,
    sessions: &Sessions,
    d: &Deferred<'_>,
    outcome: Decision,
    reason: &str,
) -> Option<Receipt> {
    seal_event(
        host,
        l,
        sessions,
        d,
        EventKind::DeferResolved,
        outcome,
        reason,
    )
}

/// Seal a signed receipt of `event` about `d.action` in its session's chain (or the anonymous
/// chain). `None` when the session could not be saved.
fn seal_event(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    d: &Deferred<'_>,
    event: EventKind,
    outcome: Decision,
    reason: &str,
) -> Option<Receipt> {
    seal_event_with(host, l, sessions, d, event, outcome, reason, &|_| {})
}

/// Seal the `credential` receipt of `d.action`: the credential the MODIFY injected was minted (or
/// read from the cache) and the request goes on (`credentials` records it, never the token), or
/// it could not be minted and the request is denied by `filter:credential`. Always signed.
/// `None` when the session could not be saved.
pub(crate) fn seal_credential(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    d: &Deferred<'_>,
    minted: Result<receipt::CredentialRecord, &str>,
) -> Option<Receipt> {
    let (outcome, reason) = match &minted {
        Ok(c) => (
            Decision::Modify,
            format!(
                "credential `{}` injected for `{}` ({})",
                c.name, c.audience, c.scope
            ),
        ),
        Err(why) => (Decision::Deny, (*why).to_owned()),
    };
    let edit = |b: &mut ReceiptBody| match &minted {
        Ok(c) => b.credentials = Some(vec![c.clone()]),
        Err(_) => b.rule = Some(FilterRule::Credential.as_str().to_owned()),
    };
    seal_event_with(
        host,
        l,
        sessions,
        d,
        EventKind::Credential,
        outcome,
        &reason,
        &edit,
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "seal_event's arguments and the edit of its body"
)]
fn seal_event_with(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    d: &Deferred<'_>,
    event: EventKind,
    outcome: Decision,
    reason: &str,
    edit: &dyn Fn(&mut ReceiptBody),
) -> Option<Receipt> {
    let body = |drift: f32| {
        let mut b = ReceiptBody::for_action(d.chain_name, d.action, d.verdict);
        b.event = event;
        b.decision = Some(outcome);
        b.reason = Some(reason.to_owned());
        b.bundle = Some(l.bundle_ref.clone());
        b.drift_milli = Some(receipt::drift_milli(drift));
        edit(&mut b);
        b
    };
    let seal = |body: ReceiptBody, chain: &mut ChainHead, now: u64| {
        receipt::seal(body, chain, &l.signer, &l.sign_policy, now, true)
    };
    let Some(session) = d.session else {
        let now = host.now_ms();
        return Some(sessions.on_anon_chain(|chain| seal(body(0.0), chain, now)));
    };
    let resolved = sessions.update(host, session, None, |rec, now| {
        let r = seal(body(rec.state.drift), &mut rec.chain, now);
        rec.extra.last_seen_ms = now;
        Write::Active(r)
    });
    match resolved {
        Ok(r) => Some(r),
        Err(_) if sessions.on_etcd() => {
            // Sessions on etcd: the session's chain is etcd's, and only a decision writes it; a
            // receipt no decision staged goes to this worker's anonymous chain.
            let anon = Deferred {
                chain_name: sessions.anon_name(),
                session: None,
                ..*d
            };
            seal_event_with(host, l, sessions, &anon, event, outcome, reason, edit)
        }
        Err(e) => {
            host.log(
                LogLevel::Error,
                &format!(
                    "portcullis: the {} receipt of session `{session}` could not be saved: {e}",
                    event.as_str()
                ),
            );
            None
        }
    }
}

/// With sessions on etcd: the session record the decision made was not written to etcd (`why`:
/// unreachable, or other replicas wrote first every time), so neither its receipts nor its
/// effects hold. Every message is denied with `filter:state_store` (whatever the failure mode,
/// as a containment write that fails), and a signed `state_store` receipt on this worker's
/// anonymous chain says so: the session's own chain is etcd's and ends where etcd has it.
pub(crate) fn refuse_unsaved_session(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    plan: Plan,
    actions: &[Action],
    why: &str,
) -> Plan {
    let reason = format!("the shared state store did not take this session's write ({why})");
    let mut plan = refuse_all(plan, FilterRule::StateStore, &reason);
    // Receipts sealed after the decision's own went onto the same unsaved record.
    plan.followups.clear();
    let anon = sessions.anon_name().to_owned();
    push_state_store_receipt(
        host,
        l,
        sessions,
        &mut plan,
        actions,
        (&anon, None),
        &reason,
    );
    plan
}

/// Seal the signed `state_store` receipt of a refused write on chain `(name, session)` and add
/// it to the plan's follow-ups.
fn push_state_store_receipt(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    plan: &mut Plan,
    actions: &[Action],
    (chain_name, session): (&str, Option<&str>),
    reason: &str,
) {
    let (Some(m), Some(action)) = (plan.msgs.first(), actions.first()) else {
        return;
    };
    let d = Deferred {
        chain_name,
        session,
        action,
        verdict: &m.verdict,
    };
    if let Some(r) = seal_event(
        host,
        l,
        sessions,
        &d,
        EventKind::StateStore,
        Decision::Deny,
        reason,
    ) {
        let line = r.to_json();
        plan.followups.push((r, line));
    }
}

/// A decision whose writes to the shared state store did not all happen (`failed`), applied
/// after it was sealed. A DENY stands as decided (what it contained is in the local records
/// and the outbox). Anything else becomes a DENY: an approval token already used on another
/// replica keeps its rule with `approval_error: replayed`; a write etcd did not take is
/// `filter:state_store`. A signed `state_store` receipt records the change in the chain.
pub(crate) fn refuse_uncommitted(
    host: &dyn Host,
    l: &Policy,
    sessions: &Sessions,
    mut plan: Plan,
    actions: &[Action],
    failed: &crate::session::etcd::Failed,
) -> Plan {
    use crate::session::etcd::Failed;
    let (rule, reason, code) = match failed {
        Failed::Replayed => (
            None,
            "the approval token was already used".to_owned(),
            Some("replayed"),
        ),
        Failed::Unavailable(why) => (
            Some(FilterRule::StateStore.as_str()),
            format!("the shared state store did not take this decision's write ({why})"),
            None,
        ),
    };
    if plan.overall == Decision::Deny && code.is_none() {
        return plan;
    }
    let chain = (plan.chain_name.clone(), plan.session.clone());
    push_state_store_receipt(
        host,
        l,
        sessions,
        &mut plan,
        actions,
        (&chain.0, chain.1.as_deref()),
        &reason,
    );
    for m in &mut plan.msgs {
        m.enforced = Decision::Deny;
        if let Some(rule) = rule {
            rule.clone_into(&mut m.rule);
        }
        m.reason.clone_from(&reason);
        m.denial = Some(DenialKind::Denied {
            approval_error: code,
        });
        m.defer = None;
    }
    plan.overall = Decision::Deny;
    plan.new_body = None;
    plan.header_edits.clear();
    plan
}
