//! Resolve what the filter enforces for one verdict: approval tokens for STEP_UP, the context
//! service of a DEFER, the rewrites of a MODIFY, and what a batch may not carry. Pure: the
//! session state and the request's scratch ([`Work`]) are the only things it changes.

use bundle::action::Action;
use bundle::approval::{self, Approval, ApprovalError};
use bundle::receipt::{self, ApprovalRef};
use bundle::session::SessionState;
use bundle::session_codec::SessionExtra;
use bundle::verdict::{Decision, Modification, Verdict};

use super::{MsgResult, PendingDefer, Shape};
use crate::normalize;
use crate::policy::Policy;
use crate::respond::{ApprovalRequest, DenialKind};
use crate::rules::{self, FilterRule};
use crate::session::ClaimRefused;

/// Claims a used approval token where no session record keeps it.
pub(super) type Claim<'a> = &'a dyn Fn(&Approval) -> Result<(), ClaimRefused>;

/// Per-request scratch while evaluating one message.
pub(super) struct Work<'a> {
    pub l: &'a Policy,
    pub now_ms: u64,
    /// The request body as received.
    pub original: Option<&'a [u8]>,
    /// The body after the MODIFY rewrites so far (`None`: unchanged).
    pub rewritten: Option<Vec<u8>>,
    pub header_edits: Vec<(String, Option<String>)>,
    /// Where a used approval token is claimed when no session record keeps it (a request
    /// without a saved session); `None`: the session's own ring does.
    pub claim: Option<Claim<'a>>,
    /// In-band approval refused this action: (reason, `approval_error`).
    pub approver_denial: Option<(&'a str, &'static str)>,
}

pub(super) fn result(verdict: Verdict, enforced: Decision) -> MsgResult {
    MsgResult {
        rule: verdict.deciding_rule.clone(),
        reason: verdict.reason.clone(),
        verdict,
        enforced,
        denial: None,
        defer: None,
        changes: Vec::new(),
        approval: None,
        used_token: None,
        receipt: None,
        credential: None,
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
pub(super) fn enforce_one(
    w: &mut Work<'_>,
    shape: &Shape,
    index: usize,
    action: &Action,
    verdict: Verdict,
    state: &mut SessionState,
    extra: &mut SessionExtra,
    token: Option<&str>,
) -> MsgResult {
    let batch = matches!(shape, Shape::Mcp { batch: true, .. });
    match verdict.decision {
        Decision::Allow => result(verdict, Decision::Allow),
        Decision::Deny => {
            let rule = verdict.deciding_rule.clone();
            let reason = verdict.reason.clone();
            let mut r = result(verdict, Decision::Deny);
            r.denial = Some(if rules::is_stop(&rule) {
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
        Decision::Modify => modify(w, shape, index, action, verdict),
        Decision::StepUp => {
            let r = result(verdict, Decision::StepUp);
            if batch {
                return deny(
                    r,
                    FilterRule::Batch.as_str(),
                    "an action that needs approval cannot be part of a batch; send it alone".into(),
                    None,
                );
            }
            let Some(step) = r.verdict.step_up.clone() else {
                return deny(
                    r,
                    FilterRule::StepUp.as_str(),
                    "the step-up decision names no approver group".into(),
                    None,
                );
            };
            if !w.l.cfg.approvers.contains_key(&step.group) {
                return deny(
                    r,
                    FilterRule::NoApprovers.as_str(),
                    format!("no approvers are configured for group `{}`", step.group),
                    None,
                );
            }
            let digest = receipt::action_digest(action);
            let now_s = w.now_ms / 1000;
            match token {
                None if let Some((why, code)) = w.approver_denial => {
                    let rule = r.rule.clone();
                    deny(r, &rule, why.to_owned(), Some(code))
                }
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
                            // The rule's own maximum age holds whatever the token's `exp` says
                            // (docs/approvals.md): a day-long token does not satisfy a 5m rule.
                            let max_age = u64::from(step.timeout_s);
                            if now_s >= a.issued_s.saturating_add(max_age) {
                                Err(ApprovalError::Expired)
                            } else if extra.token_used(&a.nonce) {
                                Err(ApprovalError::Replayed)
                            } else {
                                Ok(a)
                            }
                        })
                        .map_err(|e| (e.to_string(), e.as_str()))
                        .and_then(|a| match w.claim.map(|claim| claim(&a)) {
                            Some(Err(refused)) => {
                                Err((refused.reason().to_owned(), refused.as_str()))
                            }
                            Some(Ok(())) | None => Ok(a),
                        });
                    match checked {
                        Ok(a) => {
                            extra.remember_token(a.nonce);
                            state.approvals = state.approvals.saturating_add(1);
                            let mut r = r;
                            r.used_token = Some((a.nonce, a.expires_s));
                            r.enforced = Decision::Allow;
                            r.reason = format!("approved by {} ({})", a.key_id, r.reason);
                            r.approval = Some(ApprovalRef {
                                token_id: a.token_id,
                                group: a.group,
                                key_id: a.key_id,
                            });
                            r
                        }
                        Err((why, code)) => {
                            let rule = r.rule.clone();
                            deny(r, &rule, why, Some(code))
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
                    FilterRule::Batch.as_str(),
                    "a deferred action cannot be part of a batch; send it alone".into(),
                    None,
                );
            }
            let Some(d) = r.verdict.defer.clone() else {
                return deny(
                    r,
                    FilterRule::Defer.as_str(),
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
                    FilterRule::NoContextService.as_str(),
                    format!("context service `{}` is not configured", d.service),
                    None,
                ),
            }
        }
    }
}

fn modify(
    w: &mut Work<'_>,
    shape: &Shape,
    index: usize,
    action: &Action,
    verdict: Verdict,
) -> MsgResult {
    let mods = verdict.modifications.clone();
    let mut r = result(verdict, Decision::Modify);
    let mut injects = mods.iter().filter_map(|m| match m {
        Modification::InjectCredential { name } => Some(name.as_str()),
        _ => None,
    });
    if let Some(name) = injects.next() {
        if let Some(other) = injects.find(|n| *n != name) {
            return deny(
                r,
                FilterRule::Credential.as_str(),
                format!(
                    "the decision injects two credentials (`{name}`, `{other}`); a request carries one"
                ),
                None,
            );
        }
        if matches!(shape, Shape::Mcp { batch: true, .. }) {
            return deny(
                r,
                FilterRule::Batch.as_str(),
                "an action that injects a credential cannot be part of a batch; send it alone"
                    .into(),
                None,
            );
        }
        if !w.l.cfg.credentials.definitions.contains_key(name) {
            return deny(
                r,
                FilterRule::Credential.as_str(),
                format!("credential `{name}` is not configured (`credentials.definitions`)"),
                None,
            );
        }
        r.credential = Some(name.to_owned());
    }
    let body_mods: Vec<Modification> = mods
        .iter()
        .filter(|m| normalize::rewrites_body(m))
        .cloned()
        .collect();
    if let Some(why) = normalize::query_unrewritable(action, &body_mods) {
        // The rewrite would be made to the body only and reach the server unmade in the query.
        return deny(r, FilterRule::Modify.as_str(), why, None);
    }
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
                    FilterRule::Modify.as_str(),
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
                    FilterRule::Modify.as_str(),
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
            // Response-side rewrite (`results/`): recorded here, applied to the list result.
            // An injected credential is minted after the decision (`stream/credential.rs`).
            Modification::RemoveTools { .. } | Modification::InjectCredential { .. } => {
                r.changes.push(receipt::describe_modification(m));
            }
            _ => {}
        }
    }
    r
}
