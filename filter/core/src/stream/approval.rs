//! In-band approval on a stream (`approve/`, `docs/approvals.md`, "In-band approval").
//!
//! - An allowed `initialize` whose client declares URL-mode elicitation: when the server names
//!   the MCP session, the session is remembered as capable.
//! - A STEP_UP without a token, in a capable session, for a single JSON-RPC request: the
//!   approval service is told about the action (a POST call-out; the request waits for it), and
//!   the client gets a URL-mode elicitation (`-32042`) pointing at the action's page. An action
//!   that already has a live elicitation gets the same one again, without a call-out. If the
//!   service cannot be told, the client gets today's `-32041`.
//! - The retry of that action (same digest, same session, no `x-portcullis-approval`): before the
//!   decision, the token is fetched from the service (a GET call-out). A token is then decided
//!   exactly as the header would be (verification, replay ring, etcd claim); a denial the service
//!   recorded denies (`approval_error: denied_by_approver`); still pending answers the same
//!   elicitation; an unknown or failed answer forgets the elicitation and sends a new one.
//! - MCP 2026-07-28 (capabilities per request, no session needed): the STEP_UP is answered with
//!   an `InputRequiredResult` carrying the URL elicitation and the filter's HMACed
//!   `requestState` (`approve/state.rs`); the retry's state names the elicitation and must name
//!   this action's digest (else the request is refused), and is removed from the body that goes
//!   upstream.

use std::rc::Rc;

use bundle::action::Action;
use bundle::verdict::Decision;

use super::answer::{deciding_msg, denial_of, send_json};
use super::outputs::receipt_extra;
use super::{Phase, Prepared, Stream, pseudo};
use crate::approve::state::{self as rstate, Modern, Opened, RequestState};
use crate::approve::store::{self, InbandRecord};
use crate::approve::wire::{self, TokenAnswer};
use crate::approve::{Notice, notify_body};
use crate::config::SessionKeySource;
use crate::decide::{Plan, Shape};
use crate::host::{FilterAction, Host, LogLevel};
use crate::limits::MAX_APPROVAL_ANSWER_BYTES;
use crate::normalize::{self, JsonRpcId, McpMessageKind, Refusal};
use crate::respond::{ApprovalRequest, Denial, DenialKind};
use crate::root::Loaded;
use crate::session;

/// In-band approval state of one stream.
#[derive(Debug, Default)]
pub(super) struct Inband {
    /// This stream's `initialize` declared URL-mode elicitation: the session the server names
    /// is remembered as capable.
    declared: bool,
    /// The session's record as read before the decision (`None`: not read).
    record: Option<InbandRecord>,
    /// In-band approval refused this action: (reason, `approval_error`).
    denial: Option<(String, &'static str)>,
    /// A 2026-07-28 request: its capabilities, state and responses.
    modern: Option<Modern>,
    /// The filter's own `requestState` the request carried, verified for this action.
    state: Option<RequestState>,
    /// The request carried the filter's `requestState`: strip it before going upstream.
    own_state: bool,
    /// A call-out to the service this stream waits for.
    waiting: Option<Waiting>,
}

/// What the stream waits for.
#[derive(Debug)]
enum Waiting {
    /// The token of an elicitation, before the retried action is decided.
    Fetch {
        token: u32,
        prepared: Box<Prepared>,
        entry: store::Pending,
    },
    /// The service acknowledging a new elicitation, before the client is answered.
    Notify { token: u32, answer: Box<Elicit> },
}

/// An elicitation answer waiting to be sent.
#[derive(Debug)]
struct Elicit {
    denial: Denial,
    req: ApprovalRequest,
    id: Option<JsonRpcId>,
    receipt_header: String,
    session: String,
    entry: store::Pending,
    url: String,
    /// 2026-07-28: answer with an `InputRequiredResult` carrying this `requestState`;
    /// `state_only`: without the input request (the client answered it; it polls).
    modern: Option<(String, bool)>,
}

impl Inband {
    /// Whether the call-out `token` is this stream's.
    pub(super) fn waits_for(&self, token: u32) -> bool {
        match &self.waiting {
            Some(Waiting::Fetch { token: t, .. } | Waiting::Notify { token: t, .. }) => *t == token,
            None => false,
        }
    }
}

/// The id of a single JSON-RPC request (the only shape answered in-band).
fn single_request(shape: &Shape) -> Option<&JsonRpcId> {
    match shape {
        Shape::Mcp {
            batch: false, msgs, ..
        } => match msgs.as_slice() {
            [(Some(id), McpMessageKind::Request)] => Some(id),
            _ => None,
        },
        _ => None,
    }
}

impl Stream {
    /// How in-band approval refused the action being decided, if it did.
    pub(super) fn inband_denial(&self) -> Option<(String, &'static str)> {
        self.inband.denial.clone()
    }

    /// Whether the request carried the filter's own `requestState` (removed before upstream).
    pub(super) fn inband_strips_state(&self) -> bool {
        self.inband.own_state
    }

    /// Note an `initialize` (about to be decided) whose client declares URL-mode elicitation.
    pub(super) fn inband_note_initialize(
        &mut self,
        l: &Loaded,
        shape: &Shape,
        actions: &[Action],
        body: Option<&[u8]>,
    ) {
        let cfg = &l.policy.cfg;
        self.inband.declared = cfg.approval_service.is_some()
            && self.key.is_none()
            && cfg.session.key == SessionKeySource::McpSessionId
            && single_request(shape).is_some()
            && actions
                .first()
                .is_some_and(|a| normalize::Method::Initialize.is(&a.operation))
            && body.is_some_and(wire::declares_url_elicitation);
    }

    /// The server answered an allowed `initialize` that declared URL-mode elicitation: the
    /// session it names is remembered as capable.
    pub(super) fn inband_session_begun(&mut self, host: &dyn Host) {
        if !std::mem::take(&mut self.inband.declared) || self.phase != Phase::Forwarded {
            return;
        }
        let session = host.response_headers().into_iter().find(|(n, v)| {
            n.eq_ignore_ascii_case("mcp-session-id")
                && normalize::valid_session_id(v)
                && !session::is_reserved_chain(v)
        });
        if let Some((_, s)) = session
            && !store::mark_capable(host, &s)
        {
            host.log(
                LogLevel::Warn,
                "portcullis: cannot remember the elicitation capability of a session: its \
                 STEP_UPs are answered with -32041",
            );
        }
    }

    /// Before the decision: when the request retries an action an elicitation was sent for,
    /// ask the approval service for its token and wait (`Ok`); else hand the request back.
    pub(super) fn inband_retry(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        p: Box<Prepared>,
    ) -> Result<FilterAction, Box<Prepared>> {
        self.inband_note_initialize(l, &p.shape, &p.actions, p.body.as_deref());
        let (Some(svc), None) = (&l.policy.cfg.approval_service, &self.approval_token) else {
            return Err(p);
        };
        let ([action], Some(id)) = (p.actions.as_slice(), single_request(&p.shape)) else {
            return Err(p);
        };
        let now_s = host.now_ms() / 1000;
        let digest = hex::encode(bundle::receipt::action_digest(action));
        // 2026-07-28: capabilities and state travel in the request (a cheap look first: most
        // bodies name neither).
        let body = p.body.as_deref().unwrap_or_default();
        let mentions = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        self.inband.modern = (mentions(b"clientCapabilities") || mentions(b"requestState"))
            .then(|| rstate::modern(body))
            .flatten();
        let entry = match self.inband.modern.as_ref().and_then(|m| m.state.clone()) {
            Some(text) => {
                let key = l.policy.signer.derive_secret(rstate::STATE_KEY_DOMAIN);
                let refuse = |why: &str| Refusal::invalid_params(why, Some(id.clone()));
                match rstate::open(&key, &text, now_s) {
                    Opened::NotOurs => return Err(p),
                    Opened::Forged => {
                        self.refuse(
                            host,
                            &refuse(
                                "`requestState` starts like the filter's but was not issued by it",
                            ),
                        );
                        return Ok(FilterAction::Pause);
                    }
                    Opened::Expired => {
                        self.inband.own_state = true;
                        return Err(p);
                    }
                    Opened::Valid(st) if st.digest != digest => {
                        self.refuse(
                            host,
                            &refuse(
                                "`requestState` was issued for another action: a retry must \
                                 repeat the action it answers",
                            ),
                        );
                        return Ok(FilterAction::Pause);
                    }
                    Opened::Valid(st) => {
                        self.inband.own_state = true;
                        self.inband.state = Some(st.clone());
                        let declined = self
                            .inband
                            .modern
                            .as_ref()
                            .and_then(|m| m.response.as_deref())
                            .is_some_and(|r| r != "accept");
                        if declined {
                            self.inband.denial = Some((
                                "the user declined the approval request".to_owned(),
                                "declined",
                            ));
                            return Err(p);
                        }
                        store::Pending {
                            digest: st.digest,
                            id: st.id,
                            expires_s: st.expires_s,
                        }
                    }
                }
            }
            None => {
                let Some(key) = self.key.clone() else {
                    return Err(p);
                };
                let rec = store::read(host, &key);
                let entry = rec.pending_for(&digest, now_s).cloned();
                self.inband.record = Some(rec);
                let Some(entry) = entry else {
                    return Err(p);
                };
                entry
            }
        };
        let path = format!("{}/elicitations/{}", svc.api_prefix, entry.id);
        let headers = [
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", svc.authority.as_str()),
            ("accept", "application/json"),
        ];
        match host.dispatch_http_call(&svc.cluster, &headers, &[], u64::from(svc.timeout_ms)) {
            Ok(token) => {
                self.inband.waiting = Some(Waiting::Fetch {
                    token,
                    prepared: p,
                    entry,
                });
                self.phase = Phase::Waiting;
                Ok(FilterAction::Pause)
            }
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "portcullis: cannot call the approval service `{}`: {}",
                        svc.cluster, e.0
                    ),
                );
                // Decided as pending: the same elicitation is answered again.
                Err(p)
            }
        }
    }

    /// The approval service answered (or did not: no headers).
    pub(super) fn inband_answered(&mut self, host: &dyn Host, body_size: usize) {
        let Some(w) = self.inband.waiting.take() else {
            return;
        };
        let plugin = Rc::clone(&self.plugin);
        let Ok(l) = &plugin.loaded else {
            return;
        };
        let headers = host.http_call_response_headers();
        let status = pseudo(&headers, ":status");
        let body = if body_size > 0 {
            host.http_call_response_body(body_size.min(MAX_APPROVAL_ANSWER_BYTES))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        match w {
            Waiting::Fetch {
                prepared, entry, ..
            } => {
                // 2025-11-25 elicitations are remembered per session; 2026-07-28 ones live in the
                // request's state only.
                let forget = |host: &dyn Host, id: &str| {
                    if let (Some(key), None) = (&self.key, &self.inband.state) {
                        store::forget(host, key, id);
                    }
                };
                match wire::interpret_token_answer(&status, &body) {
                    TokenAnswer::Approved(t) => {
                        // The token's one use is this request; a later identical call asks anew.
                        forget(host, &entry.id);
                        self.approval_token = Some(t);
                    }
                    TokenAnswer::Denied(why) => {
                        forget(host, &entry.id);
                        self.inband.denial = Some((why, "denied_by_approver"));
                    }
                    TokenAnswer::Pending => {}
                    TokenAnswer::Unknown(why) => {
                        host.log(
                            LogLevel::Warn,
                            &format!(
                                "portcullis: elicitation `{}`: {why}; a new one is sent",
                                entry.id
                            ),
                        );
                        forget(host, &entry.id);
                        if let Some(r) = &mut self.inband.record {
                            r.pending.retain(|q| q.id != entry.id);
                        }
                        self.inband.state = None;
                    }
                }
                if self.decide_and_enforce(host, l, *prepared) == FilterAction::Continue {
                    host.resume_request();
                }
            }
            Waiting::Notify { answer, .. } => {
                if matches!(status.as_str(), "200" | "201") {
                    let now_s = host.now_ms() / 1000;
                    if answer.modern.is_none()
                        && !store::remember(host, &answer.session, &answer.entry, now_s)
                    {
                        host.log(
                            LogLevel::Warn,
                            "portcullis: cannot remember an elicitation: its retry asks anew",
                        );
                    }
                    self.send_elicitation(host, &answer);
                } else {
                    host.log(
                        LogLevel::Error,
                        &format!(
                            "portcullis: the approval service did not take elicitation `{}` \
                             (status `{status}`): answered with -32041",
                            answer.entry.id
                        ),
                    );
                    let extra = receipt_extra(&answer.receipt_header);
                    self.answer(host, &answer.denial, answer.id.as_ref(), true, &extra);
                }
            }
        }
    }

    fn send_elicitation(&mut self, host: &dyn Host, e: &Elicit) {
        let v = match &e.modern {
            Some((state, state_only)) => {
                rstate::input_required(e.id.as_ref(), &e.denial, &e.req, &e.url, state, *state_only)
            }
            None => {
                wire::url_elicitation_error(e.id.as_ref(), &e.denial, &e.req, &e.entry.id, &e.url)
            }
        };
        let body = serde_json::to_vec(&v).unwrap_or_default();
        let extra = receipt_extra(&e.receipt_header);
        send_json(host, 200, Decision::StepUp.as_str(), &body, &extra);
        self.phase = Phase::Answered;
    }

    /// A STEP_UP without a valid approval: answer it in-band when the session's client can take
    /// an elicitation. `false`: answer it as today (`-32041`).
    pub(super) fn inband_step_up(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        shape: &Shape,
        plan: &Plan,
        actions: &[Action],
        receipt_header: &str,
    ) -> bool {
        let (Some(svc), None) = (&l.policy.cfg.approval_service, &self.approval_token) else {
            return false;
        };
        let (Some(id), Some(m), [action]) = (single_request(shape), deciding_msg(plan), actions)
        else {
            return false;
        };
        let Some(DenialKind::ApprovalRequired(req)) = &m.denial else {
            return false;
        };
        let now_ms = host.now_ms();
        let now_s = now_ms / 1000;
        let modern = self.inband.modern.clone().filter(|m| m.url);
        // The session the elicitation is bound to: the MCP session (2025-11-25, where it is
        // remembered), or the chain the action was decided in (2026-07-28: the state carries it).
        let (key, existing) = match &modern {
            Some(_) => (
                plan.chain_name.clone(),
                self.inband.state.clone().map(|st| store::Pending {
                    digest: st.digest,
                    id: st.id,
                    expires_s: st.expires_s,
                }),
            ),
            None => {
                let Some(key) = self.key.clone() else {
                    return false;
                };
                let rec = match self.inband.record.take() {
                    Some(r) => r,
                    None => store::read(host, &key),
                };
                if !rec.url {
                    return false;
                }
                let existing = rec.pending_for(&req.digest, now_s).cloned();
                (key, existing)
            }
        };
        let denial = denial_of(m);
        let existing = existing.filter(|e| e.digest == req.digest && e.expires_s > now_s);
        let fresh = existing.is_none();
        let entry = existing.unwrap_or_else(|| store::Pending {
            digest: req.digest.clone(),
            id: wire::elicitation_id(
                &key,
                &req.digest,
                self.principal.as_deref(),
                now_ms,
                denial.receipt_id.as_deref().unwrap_or(""),
            ),
            expires_s: req.expires_at,
        });
        let modern = modern.map(|_| {
            let mac_key = l.policy.signer.derive_secret(rstate::STATE_KEY_DOMAIN);
            let sealed = rstate::seal(
                &mac_key,
                &RequestState {
                    digest: entry.digest.clone(),
                    id: entry.id.clone(),
                    expires_s: entry.expires_s,
                },
            );
            // A retry of a pending elicitation gets the state only: the client already has the
            // URL, and polls (the SDK backs off) instead of asking its user again.
            (sealed, !fresh)
        });
        let e = Elicit {
            url: wire::page_url(svc, &entry.id),
            denial,
            req: req.clone(),
            id: Some(id.clone()),
            receipt_header: receipt_header.to_owned(),
            session: key.clone(),
            entry,
            modern,
        };
        if !fresh {
            self.send_elicitation(host, &e);
            return true;
        }
        let state = l.sessions.read(host, &plan.chain_name, None, now_ms).state;
        let body = notify_body(&Notice {
            elicitation_id: &e.entry.id,
            url: &e.url,
            session: &key,
            principal: self.principal.as_deref(),
            action,
            verdict: &m.verdict,
            rule: &m.rule,
            req,
            state: &state,
            program: l.policy.bundle.program(),
            now_ms,
        });
        let path = format!("{}/elicitations", svc.api_prefix);
        let headers = [
            (":method", "POST"),
            (":path", path.as_str()),
            (":authority", svc.authority.as_str()),
            ("content-type", "application/json"),
        ];
        match host.dispatch_http_call(&svc.cluster, &headers, &body, u64::from(svc.timeout_ms)) {
            Ok(token) => {
                self.inband.waiting = Some(Waiting::Notify {
                    token,
                    answer: Box::new(e),
                });
                self.phase = Phase::Waiting;
                true
            }
            Err(err) => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "portcullis: cannot call the approval service `{}`: {}; answered with \
                         -32041",
                        svc.cluster, err.0
                    ),
                );
                false
            }
        }
    }
}
