//! The filter's own answers on a stream: a refusal of bad input, a denial (DENY, STEP_UP, a DEFER
//! denied), in MCP's terms where the request is JSON-RPC (a JSON-RPC error with status 200, or
//! 404 for a session the filter has no state for) and in HTTP's otherwise; and, for refused client
//! responses, the errors the server gets in their place. The shapes and codes are `respond.rs`.

use bundle::builtin::Builtin;
use bundle::verdict::Decision;

use super::outputs::{DECISION_HEADER, receipt_extra, set_state};
use super::{Phase, Stream};
use crate::decide::{MsgResult, Plan, Shape};
use crate::host::{Host, LogLevel};
use crate::metrics::Metric;
use crate::normalize::{self, JsonRpcId, McpMessageKind, Refusal};
use crate::respond::{Denial, DenialKind};
use crate::rules::FilterRule;

/// The message whose decision the request reports: the first with the request's overall decision
/// that is not only refused for being in its batch.
pub(super) fn deciding_msg(plan: &Plan) -> Option<&MsgResult> {
    let batch = FilterRule::Batch.as_str();
    plan.msgs
        .iter()
        .find(|m| m.enforced == plan.overall && m.rule != batch)
        .or_else(|| plan.msgs.iter().find(|m| m.enforced == plan.overall))
        .or_else(|| plan.msgs.first())
}

/// When every message of a refused MCP POST is a client's response to a server request
/// (sampling, elicitation, roots): what the server gets instead, a JSON-RPC error for each of its
/// request ids (one object, or an array for a batch), so its pending requests fail at once with
/// the reason rather than waiting out their timeouts. `None` for anything else.
pub(super) fn refused_responses(shape: &Shape, plan: &Plan) -> Option<Vec<u8>> {
    let Shape::Mcp { batch, msgs, .. } = shape else {
        return None;
    };
    if msgs.is_empty() || msgs.iter().any(|(_, k)| *k != McpMessageKind::Response) {
        return None;
    }
    let errors: Vec<serde_json::Value> = plan
        .msgs
        .iter()
        .zip(msgs)
        .map(|(m, (id, _))| denial_of(m).jsonrpc_error(id.as_ref()))
        .collect();
    let body = match (batch, errors.as_slice()) {
        (false, [one]) => serde_json::to_vec(one),
        _ => serde_json::to_vec(&errors),
    };
    body.ok()
}

/// Send a JSON answer.
fn send_json(host: &dyn Host, status: u16, decision: &str, body: &[u8], extra: &[(&str, &str)]) {
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        (DECISION_HEADER, decision),
    ];
    headers.extend_from_slice(extra);
    host.send_local_response(status, &headers, body);
}

/// The denial a refused message's result says.
fn denial_of(m: &MsgResult) -> Denial {
    Denial {
        kind: m.denial.clone().unwrap_or(DenialKind::Denied {
            approval_error: None,
        }),
        rule: m.rule.clone(),
        reason: m.reason.clone(),
        receipt_id: m
            .receipt
            .as_ref()
            .map(|r| bundle::receipt::hash_hex(&r.hash)),
    }
}

impl Stream {
    /// Refuse bad input before any evaluation (documented in docs/filter-normalization.md).
    pub(super) fn refuse(&mut self, host: &dyn Host, refusal: &Refusal) {
        let mcp = self.answers_jsonrpc();
        let body = refusal.to_json_body(mcp);
        let mut headers = vec![
            ("content-type", "application/json"),
            (DECISION_HEADER, Decision::Deny.as_str()),
        ];
        if refusal.http_status == 405 {
            headers.push(("allow", normalize::MCP_METHODS));
        }
        host.send_local_response(refusal.http_status, &headers, &body);
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: refused {} {}: {}",
                self.head.method, self.head.path, refusal.reason
            ),
        );
        set_state(
            host,
            Decision::Deny.as_str(),
            FilterRule::Refused.as_str(),
            self.session.as_deref().unwrap_or(""),
            None,
        );
        self.plugin.metrics.count(host, Metric::Refused);
        self.phase = Phase::Answered;
    }

    /// Send a local answer built from a plan where the request as a whole is refused.
    pub(super) fn answer_plan(
        &mut self,
        host: &dyn Host,
        shape: &Shape,
        plan: &Plan,
        receipt_header: &str,
    ) {
        let Some(first) = deciding_msg(plan) else {
            return;
        };
        let first = denial_of(first);
        let extra = receipt_extra(receipt_header);
        match shape {
            Shape::Mcp {
                batch: true, msgs, ..
            } => {
                let errors: Vec<serde_json::Value> = plan
                    .msgs
                    .iter()
                    .zip(msgs)
                    .filter(|(_, (id, kind))| *kind == McpMessageKind::Request && id.is_some())
                    .map(|(m, (id, _))| denial_of(m).jsonrpc_error(id.as_ref()))
                    .collect();
                if errors.is_empty() {
                    self.answer(host, &first, None, false, &extra);
                } else {
                    let body = serde_json::to_vec(&errors).unwrap_or_default();
                    let status = self.jsonrpc_status(&first);
                    send_json(host, status, first.decision(), &body, &extra);
                    self.phase = Phase::Answered;
                }
            }
            Shape::Mcp {
                batch: false, msgs, ..
            } => match msgs.first() {
                Some((id, McpMessageKind::Request)) => {
                    self.answer(host, &first, id.as_ref(), true, &extra);
                }
                _ => self.answer(host, &first, None, false, &extra),
            },
            Shape::McpHeaders | Shape::Http { .. } => {
                self.answer(host, &first, None, false, &extra);
            }
        }
    }

    /// Answer with one denial: a JSON-RPC error (200) when `jsonrpc`, else the HTTP form.
    pub(super) fn answer(
        &mut self,
        host: &dyn Host,
        d: &Denial,
        id: Option<&JsonRpcId>,
        jsonrpc: bool,
        extra: &[(&str, &str)],
    ) {
        if jsonrpc {
            let body = serde_json::to_vec(&d.jsonrpc_error(id)).unwrap_or_default();
            send_json(host, self.jsonrpc_status(d), d.decision(), &body, extra);
        } else {
            let (status, body) = d.http();
            send_json(host, status, d.decision(), &body, extra);
        }
        self.phase = Phase::Answered;
    }

    /// The HTTP status of a JSON-RPC denial: 200, except for a request that names an MCP session
    /// the filter has no state for (ended, evicted, expired, lost in a restart, or never begun
    /// here) when the pack's `unknown_session` decision refuses it. That one gets 404, the
    /// transport's signal (MCP, Streamable HTTP) that makes a client start a new session instead
    /// of retrying a dead one forever; the body still says why.
    fn jsonrpc_status(&self, d: &Denial) -> u16 {
        let named = self.head.header("mcp-session-id").is_some();
        if named && d.rule == Builtin::SessionUnknown.as_str() {
            404
        } else {
            200
        }
    }

    /// The plugin has no working configuration: deny with the reason.
    pub(super) fn deny_unconfigured(&mut self, host: &dyn Host, why: &str) {
        let d = Denial::deny(FilterRule::Config.as_str(), why, None);
        let jsonrpc = self.answers_jsonrpc();
        self.answer(host, &d, None, jsonrpc, &[]);
        set_state(
            host,
            Decision::Deny.as_str(),
            FilterRule::Config.as_str(),
            "",
            None,
        );
        self.plugin.metrics.count(host, Metric::Deny);
    }
}
