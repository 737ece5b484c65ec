//! What the agent sees when the filter answers a request itself: the exact JSON shapes and codes
//! (documented in `docs/filter.md`, "Decisions on the wire").

use serde_json::{Value, json};

use crate::normalize::JsonRpcId;

/// JSON-RPC error code: denied by policy.
pub const CODE_DENIED: i64 = -32040;
/// JSON-RPC error code: human approval required (STEP_UP); `data.approval_request` says how.
pub const CODE_APPROVAL_REQUIRED: i64 = -32041;
/// JSON-RPC error code: a deferred action was denied (context service said no, failed or timed out).
pub const CODE_DEFER_DENIED: i64 = -32045;
/// JSON-RPC error code: a stop condition of the intent was reached (`stop:*` rules).
pub const CODE_STOP: i64 = -32043;
/// JSON-RPC error code: an argument of another type than the pack declares (`args:type`), the
/// standard "invalid params".
pub const CODE_INVALID_PARAMS: i64 = -32602;

/// An approval request the agent forwards to a human approver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApprovalRequest {
    /// Lowercase hex of `bundle::receipt::action_digest`.
    pub digest: String,
    pub reason: String,
    pub group: String,
    /// Unix seconds until which an approval for this request is useful.
    pub expires_at: u64,
}

/// Why the filter answers locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DenialKind {
    /// DENY (including a failed approval: `approval_error` is set).
    Denied {
        approval_error: Option<&'static str>,
    },
    /// DENY by a stop condition.
    Stop,
    /// STEP_UP without a valid approval.
    ApprovalRequired(ApprovalRequest),
    /// DEFER resolved to deny.
    DeferDenied,
}

/// Everything a local answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Denial {
    pub kind: DenialKind,
    pub rule: String,
    pub reason: String,
    /// Lowercase hex hash of the receipt recording this decision (none when no receipt exists,
    /// e.g. the filter has no valid configuration).
    pub receipt_id: Option<String>,
}

impl Denial {
    /// A plain DENY, choosing the stop-condition form for `stop:*` rules.
    pub fn deny(rule: &str, reason: &str, receipt_id: Option<String>) -> Self {
        let kind = if crate::rules::is_stop(rule) {
            DenialKind::Stop
        } else {
            DenialKind::Denied {
                approval_error: None,
            }
        };
        Denial {
            kind,
            rule: rule.to_owned(),
            reason: reason.to_owned(),
            receipt_id,
        }
    }

    /// The decision the agent is told (`STEP_UP` for an approval request, else `DENY`).
    pub fn decision(&self) -> &'static str {
        match self.kind {
            DenialKind::ApprovalRequired(_) => "STEP_UP",
            _ => "DENY",
        }
    }

    fn code(&self) -> i64 {
        match self.kind {
            // A value of another type than the pack declares: what a server says to it.
            DenialKind::Denied { .. } if self.rule == bundle::builtin::ARGS_TYPE => {
                CODE_INVALID_PARAMS
            }
            DenialKind::Denied { .. } => CODE_DENIED,
            DenialKind::Stop => CODE_STOP,
            DenialKind::ApprovalRequired(_) => CODE_APPROVAL_REQUIRED,
            DenialKind::DeferDenied => CODE_DEFER_DENIED,
        }
    }

    fn message(&self) -> String {
        let what = match self.kind {
            DenialKind::Denied { .. } => "denied",
            DenialKind::Stop => "stop condition reached",
            DenialKind::ApprovalRequired(_) => "approval required",
            DenialKind::DeferDenied => "deferred action denied",
        };
        format!("{what}: {}", self.reason)
    }

    fn data(&self) -> Value {
        let mut d = json!({
            "decision": self.decision(),
            "rule": self.rule,
            "reason": self.reason,
            "receipt_id": self.receipt_id,
        });
        if let Some(obj) = d.as_object_mut() {
            match &self.kind {
                DenialKind::ApprovalRequired(a) => {
                    obj.insert(
                        "approval_request".into(),
                        json!({
                            "digest": a.digest,
                            "reason": a.reason,
                            "group": a.group,
                            "expires_at": a.expires_at,
                            "approve_with": format!(
                                "policyc approve --digest {} --group {} --key <approver key file>",
                                a.digest, a.group
                            ),
                            "retry_with_header": bundle::approval::APPROVAL_HEADER,
                        }),
                    );
                }
                DenialKind::Denied {
                    approval_error: Some(e),
                } => {
                    obj.insert("approval_error".into(), Value::from(*e));
                }
                _ => {}
            }
        }
        d
    }

    /// The JSON-RPC error response for a request with this id.
    pub fn jsonrpc_error(&self, id: Option<&JsonRpcId>) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": id.map_or(Value::Null, JsonRpcId::to_json),
            "error": { "code": self.code(), "message": self.message(), "data": self.data() },
        })
    }

    /// HTTP status and JSON body for a plain HTTP request, or an MCP message nobody can answer
    /// with a JSON-RPC error (notification, client response).
    pub fn http(&self) -> (u16, Vec<u8>) {
        let (status, error) = match self.kind {
            DenialKind::Denied { .. } => (403, "denied"),
            DenialKind::Stop => (429, "stop_condition"),
            DenialKind::ApprovalRequired(_) => (428, "approval_required"),
            DenialKind::DeferDenied => (403, "deferred_denied"),
        };
        let mut body = self.data();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("error".into(), Value::from(error));
        }
        (status, serde_json::to_vec(&body).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_shapes() {
        let d = Denial::deny("no_secrets", "secrets are off limits", Some("ab".into()));
        let v = d.jsonrpc_error(Some(&JsonRpcId::Num(7)));
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32040);
        assert_eq!(v["error"]["data"]["rule"], "no_secrets");
        assert_eq!(v["error"]["data"]["receipt_id"], "ab");
        let (status, body) = d.http();
        assert_eq!(status, 403);
        let b: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(b["error"], "denied");
        assert_eq!(b["decision"], "DENY");
    }

    #[test]
    fn stop_and_step_up_shapes() {
        let d = Denial::deny("stop:max_actions", "too many", None);
        assert_eq!(d.jsonrpc_error(None)["error"]["code"], -32043);
        assert_eq!(d.http().0, 429);
        let a = Denial {
            kind: DenialKind::ApprovalRequired(ApprovalRequest {
                digest: "00ff".into(),
                reason: "prod".into(),
                group: "release-managers".into(),
                expires_at: 99,
            }),
            rule: "prod_deploy".into(),
            reason: "prod".into(),
            receipt_id: None,
        };
        let v = a.jsonrpc_error(Some(&JsonRpcId::Str("x".into())));
        assert_eq!(v["error"]["code"], -32041);
        assert_eq!(v["error"]["data"]["decision"], "STEP_UP");
        let req = &v["error"]["data"]["approval_request"];
        assert_eq!(req["digest"], "00ff");
        assert!(
            req["approve_with"]
                .as_str()
                .unwrap()
                .contains("--digest 00ff --group release-managers")
        );
        assert_eq!(a.http().0, 428);
    }
}
