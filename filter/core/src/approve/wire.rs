//! The wire of in-band approval: the MCP answer that points a client at the approval page
//! (URL-mode elicitation, 2025-11-25: JSON-RPC error `-32042`, `URLElicitationRequiredError`),
//! what the filter tells the approval service about a pending action, and how it reads the
//! service's answer about a minted token. The shapes are documented in `docs/approvals.md`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::approval_service::ApprovalService;
use crate::limits::{MAX_APPROVAL_ANSWER_BYTES, MAX_CONTEXT_REASON_CHARS};
use crate::normalize::JsonRpcId;
use crate::respond::{ApprovalRequest, Denial};

/// JSON-RPC error code of MCP's `URLElicitationRequiredError` (2025-11-25).
pub const CODE_URL_ELICITATION_REQUIRED: i64 = -32042;

/// A fresh elicitation id for an action: 32 hex of a domain-separated SHA-256 over the session,
/// the action digest, the principal, the time and a salt (the STEP_UP receipt's id, unique per
/// receipt). Bound to the action by
/// the record the filter keeps (`store.rs`), not by its secrecy: the token fetched with it must
/// still verify against the action's digest.
pub(crate) fn elicitation_id(
    session: &str,
    digest: &str,
    principal: Option<&str>,
    now_ms: u64,
    salt: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"portcullis/elicitation/v1\0");
    for part in [session, digest, principal.unwrap_or(""), salt] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(now_ms.to_le_bytes());
    let full = hex::encode(h.finalize());
    full.get(..32).unwrap_or(&full).to_owned()
}

/// The page approvers open for elicitation `id`.
pub(crate) fn page_url(svc: &ApprovalService, id: &str) -> String {
    format!("{}/approve/{id}", svc.public_url)
}

/// The JSON-RPC error that asks the client to open the approval page (URL-mode elicitation).
/// `data` carries MCP's `elicitations` and, beside it, everything the `-32041` answer says
/// (`decision`, `rule`, `reason`, `receipt_id`, `approval_request`), so a client that reads
/// either finds what it needs.
pub(crate) fn url_elicitation_error(
    id: Option<&JsonRpcId>,
    denial: &Denial,
    req: &ApprovalRequest,
    elicitation_id: &str,
    url: &str,
) -> Value {
    let mut data = denial
        .jsonrpc_error(id)
        .get("error")
        .and_then(|e| e.get("data"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let message = format!(
        "A human in group `{}` must approve this action: {}",
        req.group, req.reason
    );
    if let Some(obj) = data.as_object_mut() {
        obj.insert(
            "elicitations".into(),
            json!([{
                "mode": "url",
                "elicitationId": elicitation_id,
                "url": url,
                "message": message,
            }]),
        );
        if let Some(r) = obj
            .get_mut("approval_request")
            .and_then(Value::as_object_mut)
        {
            r.insert("elicitation_id".into(), Value::from(elicitation_id));
            r.insert("url".into(), Value::from(url));
        }
    }
    json!({
        "jsonrpc": "2.0",
        "id": id.map_or(Value::Null, JsonRpcId::to_json),
        "error": {
            "code": CODE_URL_ELICITATION_REQUIRED,
            "message": format!("approval required: {}", denial.reason),
            "data": data,
        },
    })
}

/// Whether an `initialize` body declares URL-mode elicitation
/// (`params.capabilities.elicitation.url` is an object). Read leniently: a client that claims a
/// capability it lacks only gets an elicitation instead of an error; nothing is allowed by it.
pub(crate) fn declares_url_elicitation(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| {
        v.pointer("/params/capabilities/elicitation/url")
            .is_some_and(Value::is_object)
    })
}

/// The service's answer about an elicitation (`GET <api_prefix>/elicitations/<id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenAnswer {
    /// An approver approved: the token they minted (verified by the filter as any other).
    Approved(String),
    /// An approver denied: who and when, as the service recorded it.
    Denied(String),
    /// Nobody decided yet.
    Pending,
    /// The service does not know the elicitation (404), or answered something unreadable, or
    /// nothing in time.
    Unknown(String),
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_CONTEXT_REASON_CHARS)
        .collect()
}

/// Read the service's answer: `200 {"status": "approved", "token": "..."}`,
/// `200 {"status": "denied", "by": "...", "at": "...", "reason": "..."}`,
/// `200 {"status": "pending"}`; anything else is [`TokenAnswer::Unknown`].
pub(crate) fn interpret_token_answer(status: &str, body: &[u8]) -> TokenAnswer {
    if status.is_empty() {
        return TokenAnswer::Unknown("the approval service did not answer in time".into());
    }
    if status != "200" {
        return TokenAnswer::Unknown(format!(
            "the approval service answered with status {status}"
        ));
    }
    let Ok(v) =
        serde_json::from_slice::<Value>(body.get(..MAX_APPROVAL_ANSWER_BYTES).unwrap_or(body))
    else {
        return TokenAnswer::Unknown("the approval service's answer is not JSON".into());
    };
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    match field("status") {
        Some("approved") => match field("token") {
            Some(t) if !t.is_empty() && t.len() <= bundle::approval::MAX_TOKEN_BYTES => {
                TokenAnswer::Approved(t.to_owned())
            }
            _ => TokenAnswer::Unknown("the approval service's answer has no usable token".into()),
        },
        Some("denied") => {
            let by = clean(field("by").unwrap_or("an approver"));
            let at = field("at").map(clean);
            let reason = field("reason").map(clean).filter(|r| !r.is_empty());
            let mut why = format!("denied by approver `{by}`");
            if let Some(at) = at {
                why.push_str(&format!(" at {at}"));
            }
            why.push_str(" through the approval service");
            if let Some(r) = reason {
                why.push_str(&format!(": {r}"));
            }
            TokenAnswer::Denied(why)
        }
        Some("pending") => TokenAnswer::Pending,
        _ => TokenAnswer::Unknown("the approval service's answer has no status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::DenialKind;

    #[test]
    fn ids_are_fresh_and_bound_to_their_inputs() {
        let a = elicitation_id("s", "d", Some("p"), 1, "r");
        assert_eq!(a.len(), 32);
        assert_ne!(a, elicitation_id("s", "d", Some("p"), 1, "r2"));
        assert_ne!(a, elicitation_id("s", "d", Some("p"), 2, "r"));
        assert_ne!(a, elicitation_id("s", "d2", Some("p"), 1, "r"));
        assert_ne!(a, elicitation_id("s2", "d", Some("p"), 1, "r"));
        assert_eq!(a, elicitation_id("s", "d", Some("p"), 1, "r"));
    }

    #[test]
    fn the_elicitation_error_has_mcp_shape_and_the_approval_request() {
        let req = ApprovalRequest {
            digest: "ab".repeat(32),
            reason: "prod".into(),
            group: "release-managers".into(),
            expires_at: 99,
        };
        let d = Denial {
            kind: DenialKind::ApprovalRequired(req.clone()),
            rule: "production_deploy".into(),
            reason: "prod".into(),
            receipt_id: Some("ff".into()),
        };
        let v = url_elicitation_error(
            Some(&JsonRpcId::Num(3)),
            &d,
            &req,
            "e1",
            "https://a/approve/e1",
        );
        assert_eq!(v["id"], 3);
        assert_eq!(v["error"]["code"], -32042);
        let e = &v["error"]["data"]["elicitations"][0];
        assert_eq!(e["mode"], "url");
        assert_eq!(e["elicitationId"], "e1");
        assert_eq!(e["url"], "https://a/approve/e1");
        assert_eq!(v["error"]["data"]["decision"], "STEP_UP");
        assert_eq!(v["error"]["data"]["approval_request"]["digest"], req.digest);
        assert_eq!(
            v["error"]["data"]["approval_request"]["elicitation_id"],
            "e1"
        );
    }

    #[test]
    fn capability_is_read_from_initialize() {
        let yes = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{"elicitation":{"form":{},"url":{}}}}}"#;
        let form_only = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{"elicitation":{}}}}"#;
        assert!(declares_url_elicitation(yes));
        assert!(!declares_url_elicitation(form_only));
        assert!(!declares_url_elicitation(b"not json"));
    }

    #[test]
    fn token_answers() {
        assert_eq!(
            interpret_token_answer("200", br#"{"status":"approved","token":"t.s"}"#),
            TokenAnswer::Approved("t.s".into())
        );
        let TokenAnswer::Denied(why) = interpret_token_answer(
            "200",
            br#"{"status":"denied","by":"bob","at":"2026-12-07T01:00:00Z","reason":"not\u0007 now"}"#,
        ) else {
            panic!("not denied")
        };
        assert!(why.contains("`bob`") && why.contains("not now"), "{why}");
        assert_eq!(
            interpret_token_answer("200", br#"{"status":"pending"}"#),
            TokenAnswer::Pending
        );
        for (s, b) in [
            ("404", &b""[..]),
            ("", &b""[..]),
            ("200", &b"nope"[..]),
            ("200", &br#"{"status":"approved"}"#[..]),
            ("200", &br#"{"status":"maybe"}"#[..]),
        ] {
            assert!(
                matches!(interpret_token_answer(s, b), TokenAnswer::Unknown(_)),
                "{s} {b:?}"
            );
        }
    }
}
