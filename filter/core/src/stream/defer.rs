//! DEFER on a stream: the request waits while the context service is asked (an Envoy call-out),
//! then goes on or is denied. No answer in time, another status or body, or a call-out that cannot
//! be sent all deny; the resolution is recorded by a signed `defer_resolved` receipt.

use bundle::action::Action;
use bundle::receipt::{Receipt, ReceiptAction};
use bundle::verdict::{Decision, Verdict};

use super::outputs::{receipt_extra, receipts_out, set_state};
use super::{Forward, Phase, Stream};
use crate::config::FailureMode;
use crate::decide::{self, MsgResult, Shape};
use crate::host::{FilterAction, Host, LogLevel};
use crate::limits::{MAX_CONTEXT_ANSWER_BYTES, MAX_CONTEXT_REASON_CHARS};
use crate::metrics::Metric;
use crate::normalize::{JsonRpcId, McpMessageKind, Route};
use crate::policy::Policy;
use crate::respond::{Denial, DenialKind};
use crate::results::Inspector;
use crate::root::Loaded;

/// A DEFER waiting for its call-out.
#[derive(Debug)]
pub(super) struct Pending {
    token: u32,
    action: Action,
    verdict: Verdict,
    id: Option<JsonRpcId>,
    answer_with_jsonrpc: bool,
    chain_name: String,
    first_receipt: Option<Receipt>,
    /// Whose `requestState` its answer hands out, on a 2026-07-28 stream.
    bind_owner: Option<String>,
}

impl Pending {
    /// Whether the call-out `token` is this one's.
    pub(super) fn is(&self, token: u32) -> bool {
        self.token == token
    }
}

impl Stream {
    /// Ask the context service `m` names about `action`; the stream waits for the answer.
    pub(super) fn start_defer(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        shape: &Shape,
        m: &MsgResult,
        action: &Action,
        chain_name: &str,
    ) -> FilterAction {
        let Some(defer) = &m.defer else {
            return FilterAction::Pause;
        };
        let (id, answer_with_jsonrpc) = match shape {
            Shape::Mcp { msgs, .. } => match msgs.first() {
                Some((id, McpMessageKind::Request)) => (id.clone(), true),
                _ => (None, false),
            },
            _ => (None, false),
        };
        let digest = bundle::receipt::action_digest(action);
        let payload = serde_json::json!({
            "action": ReceiptAction::from_action(action),
            "digest": hex::encode(digest),
            "session": chain_name,
            "identity": action.identity,
            "intent": m.verdict.intent,
            "rule": m.rule,
            "reason": m.reason,
        });
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let headers = [
            (":method", "POST"),
            (":path", defer.service.path.as_str()),
            (":authority", defer.service.authority.as_str()),
            ("content-type", "application/json"),
        ];
        let mut pending = Pending {
            token: 0,
            action: action.clone(),
            verdict: m.verdict.clone(),
            id,
            answer_with_jsonrpc,
            chain_name: chain_name.to_owned(),
            first_receipt: m.receipt.clone(),
            bind_owner: matches!(shape, Shape::Mcp { modern: true, .. })
                .then(|| self.binding_owner()),
        };
        match host.dispatch_http_call(
            &defer.service.cluster,
            &headers,
            &body,
            u64::from(defer.timeout_ms),
        ) {
            Ok(token) => {
                pending.token = token;
                self.pending = Some(pending);
                self.phase = Phase::Waiting;
            }
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "portcullis: cannot call context service `{}`: {}",
                        defer.service.cluster, e.0
                    ),
                );
                self.plugin.metrics.count(host, Metric::Errors);
                self.pending = Some(pending);
                self.finish_defer(
                    host,
                    l,
                    Decision::Deny,
                    "the context service could not be called".into(),
                );
            }
        }
        FilterAction::Pause
    }

    /// The context service answered (or did not: no headers): resolve the DEFER.
    pub(super) fn defer_answered(&mut self, host: &dyn Host, l: &Loaded, body_size: usize) {
        let headers = host.http_call_response_headers();
        let status = super::pseudo(&headers, ":status");
        let body = if body_size > 0 {
            host.http_call_response_body(body_size.min(MAX_CONTEXT_ANSWER_BYTES))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let (outcome, reason) = interpret_answer(&headers, &status, &body);
        self.finish_defer(host, l, outcome, reason);
    }

    fn finish_defer(&mut self, host: &dyn Host, l: &Loaded, outcome: Decision, reason: String) {
        let Some(p) = self.pending.take() else { return };
        let policy: &Policy = &l.policy;
        let d = decide::Deferred {
            chain_name: &p.chain_name,
            session: self.session.as_deref(),
            action: &p.action,
            verdict: &p.verdict,
        };
        let resolved = decide::resolve_defer(host, policy, &l.sessions, &d, outcome, &reason);
        let store_failed = resolved.is_none() && policy.cfg.failure_mode == FailureMode::Closed;
        let outcome = if store_failed {
            Decision::Deny
        } else {
            outcome
        };
        // A DEFER is rare: these two are serialized here, not when sealed.
        let lines: Vec<(&Receipt, String)> = p
            .first_receipt
            .iter()
            .chain(resolved.iter())
            .map(|r| (r, r.to_json()))
            .collect();
        let receipts: Vec<(&Receipt, &str)> = lines.iter().map(|(r, l)| (*r, l.as_str())).collect();
        let (json, header) = receipts_out(&receipts, policy.cfg.receipts.header);
        let json = json.unwrap_or_default();
        let rule = p.verdict.deciding_rule.clone();
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: DEFER resolved to {} for `{}` session `{}`: {}",
                outcome.as_str(),
                p.action.subject(),
                p.chain_name,
                reason
            ),
        );
        if outcome == Decision::Allow {
            // A deferred request is a single message: its answer is read like an allowed one's.
            let inspector = (self.route == Route::Mcp).then(|| {
                let one = std::iter::once((p.id.as_ref(), &p.action, &[][..]));
                Inspector::new(one, &p.action, policy.pack.results, p.bind_owner.clone())
            });
            self.forward(
                host,
                Forward {
                    decision: Decision::Allow,
                    rule: &rule,
                    chain_name: &p.chain_name,
                    json: Some(json),
                    receipt_header: header,
                    warnings: &[],
                    inspector,
                },
            );
            host.resume_request();
        } else {
            let d = Denial {
                kind: DenialKind::DeferDenied,
                rule: rule.clone(),
                reason,
                receipt_id: resolved
                    .as_ref()
                    .map(|r| bundle::receipt::hash_hex(&r.hash)),
            };
            set_state(
                host,
                Decision::Deny.as_str(),
                &rule,
                &p.chain_name,
                Some(&json),
            );
            self.plugin.metrics.count(host, Metric::Deny);
            let extra = receipt_extra(&header);
            self.answer(host, &d, p.id.as_ref(), p.answer_with_jsonrpc, &extra);
        }
    }
}

/// Read a context service's answer: HTTP 200 with `{"decision": "allow" | "deny", "reason": ...}`.
/// Anything else (no answer: timeout or reset; another status; another body) denies.
fn interpret_answer(headers: &[(String, String)], status: &str, body: &[u8]) -> (Decision, String) {
    if headers.is_empty() {
        return (
            Decision::Deny,
            "the context service did not answer in time".into(),
        );
    }
    if status != "200" {
        return (
            Decision::Deny,
            format!("the context service answered with status {status}"),
        );
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (
            Decision::Deny,
            "the context service's answer is not JSON".into(),
        );
    };
    let reason = v
        .get("reason")
        .and_then(serde_json::Value::as_str)
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(MAX_CONTEXT_REASON_CHARS)
                .collect::<String>()
        });
    match v.get("decision").and_then(serde_json::Value::as_str) {
        Some("allow") => (
            Decision::Allow,
            reason.unwrap_or_else(|| "allowed by the context service".into()),
        ),
        Some("deny") => (
            Decision::Deny,
            reason.unwrap_or_else(|| "denied by the context service".into()),
        ),
        _ => (
            Decision::Deny,
            "the context service's answer has no decision".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_service_answers() {
        let h = vec![(":status".to_owned(), "200".to_owned())];
        assert_eq!(
            interpret_answer(&h, "200", br#"{"decision":"allow","reason":"ok"}"#),
            (Decision::Allow, "ok".into())
        );
        assert_eq!(
            interpret_answer(&h, "200", br#"{"decision":"deny"}"#).0,
            Decision::Deny
        );
        assert_eq!(
            interpret_answer(&h, "200", br#"{"decision":"maybe"}"#).0,
            Decision::Deny
        );
        assert_eq!(interpret_answer(&h, "200", b"not json").0, Decision::Deny);
        assert_eq!(interpret_answer(&h, "503", b"").0, Decision::Deny);
        let (d, why) = interpret_answer(&[], "", b"");
        assert_eq!(d, Decision::Deny);
        assert!(why.contains("in time"));
    }
}
