//! A receipt as an OCSF event (class API Activity, `class_uid` 6003): what
//! `policyc receipts export --format ocsf` prints, one JSON object per receipt. The mapping is
//! documented field by field in `docs/siem.md`; change both together.
//!
//! Everything a SIEM indexes is in standard OCSF attributes; the rest of the receipt (matched
//! rules, effects, chain links, bundle, signature) is kept under `unmapped.portcullis`, so nothing
//! is lost. Argument values are not in receipts, so they cannot reach the SIEM either.

use bundle::receipt::Receipt;
use serde_json::{Map, Value, json};

/// The OCSF schema version the events claim.
pub(crate) const OCSF_VERSION: &str = "1.3.0";
/// API Activity.
const CLASS_UID: u64 = 6003;
/// Application Activity.
const CATEGORY_UID: u64 = 6;

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|x| !x.is_empty())
}

/// OCSF `activity_id` / `activity_name` for an operation: HTTP methods by their meaning, MCP reads
/// as Read, everything else (tool calls, session events) as Other with the operation as its name.
fn activity(kind: Option<&str>, operation: &str) -> (u64, String) {
    let named = |id: u64, name: &str| (id, name.to_owned());
    match (kind, operation) {
        (Some("http"), "POST") => named(1, "Create"),
        (Some("http"), "GET" | "HEAD" | "OPTIONS") => named(2, "Read"),
        (Some("http"), "PUT" | "PATCH") => named(3, "Update"),
        (Some("http"), "DELETE") => named(4, "Delete"),
        (
            Some("mcp"),
            "resources/read"
            | "resources/list"
            | "resources/templates/list"
            | "tools/list"
            | "prompts/list"
            | "prompts/get",
        ) => named(2, "Read"),
        (_, op) => (99, op.to_owned()),
    }
}

/// `(disposition_id, disposition, status_id, status, severity_id)` for a decision.
fn outcome(decision: Option<&str>) -> (u64, &'static str, u64, &'static str, u64) {
    match decision {
        Some("ALLOW") => (1, "Allowed", 1, "Success", 1),
        Some("MODIFY") => (11, "Corrected", 1, "Success", 2),
        Some("STEP_UP") => (23, "Challenge", 99, "Other", 3),
        Some("DEFER") => (14, "Delayed", 99, "Other", 2),
        Some("DENY") => (2, "Blocked", 2, "Failure", 3),
        // checkpoint / session_end: no decision, only the record.
        _ => (17, "Logged", 1, "Success", 1),
    }
}

fn principal(identity: &Value, who: &str) -> (Option<String>, String) {
    let p = identity.get(who).unwrap_or(&Value::Null);
    (
        s(p, "id").map(str::to_owned),
        s(p, "auth").unwrap_or("none").to_owned(),
    )
}

/// The OCSF API Activity event for one receipt. `line` is where it was read (kept in
/// `unmapped.portcullis.log_line`).
pub(crate) fn event(r: &Receipt, line: usize) -> Value {
    // One shape for both receipt formats (format 2 leaves empty members out).
    let body = r.body.full_view();
    let b = &body;
    let event_kind = s(b, "event").unwrap_or("action");
    let action = b.get("action").filter(|a| a.is_object());
    let kind = action.and_then(|a| s(a, "kind"));
    let operation = action
        .and_then(|a| s(a, "operation"))
        .unwrap_or(event_kind)
        .to_owned();
    let (activity_id, activity_name) = if event_kind == "action" || event_kind == "defer_resolved" {
        activity(kind, &operation)
    } else {
        (99, event_kind.to_owned())
    };
    let decision = s(b, "decision");
    let (disposition_id, disposition, status_id, status, severity_id) = outcome(decision);
    let session = s(b, "session").unwrap_or_default();
    let identity = b.get("identity").cloned().unwrap_or(Value::Null);
    let (agent, agent_auth) = principal(&identity, "agent");
    let (human, human_auth) = principal(&identity, "human");
    let (workload, workload_auth) = principal(&identity, "workload");
    let rule = s(b, "rule");
    let reason = s(b, "reason");
    let bundle = b.get("bundle").filter(|x| x.is_object());

    let mut ev = Map::new();
    ev.insert("class_uid".into(), json!(CLASS_UID));
    ev.insert("class_name".into(), json!("API Activity"));
    ev.insert("category_uid".into(), json!(CATEGORY_UID));
    ev.insert("category_name".into(), json!("Application Activity"));
    ev.insert("activity_id".into(), json!(activity_id));
    ev.insert("activity_name".into(), json!(activity_name));
    ev.insert(
        "type_uid".into(),
        json!(CLASS_UID.saturating_mul(100).saturating_add(activity_id)),
    );
    ev.insert(
        "type_name".into(),
        json!(format!("API Activity: {activity_name}")),
    );
    ev.insert("time".into(), b.get("ts_ms").cloned().unwrap_or(json!(0)));
    ev.insert("severity_id".into(), json!(severity_id));
    ev.insert("status_id".into(), json!(status_id));
    ev.insert("status".into(), json!(status));
    if let Some(reason) = reason {
        ev.insert("status_detail".into(), json!(reason));
    }
    ev.insert("disposition_id".into(), json!(disposition_id));
    ev.insert("disposition".into(), json!(disposition));
    ev.insert("action".into(), json!(decision.unwrap_or(event_kind)));
    let subject = action.and_then(|a| {
        s(a, "tool")
            .or(s(a, "resource"))
            .or(s(a, "prompt"))
            .map(str::to_owned)
            .or_else(|| {
                let t = a.get("target")?;
                let host = s(t, "host")?;
                Some(format!("{host}{}", s(t, "path").unwrap_or_default()))
            })
    });
    ev.insert(
        "message".into(),
        json!(match (decision, &subject, rule) {
            (Some(d), Some(sub), Some(rule)) => format!("{d} {operation} {sub} (rule {rule})"),
            (Some(d), None, Some(rule)) => format!("{d} {operation} (rule {rule})"),
            (Some(d), _, None) => format!("{d} {operation}"),
            (None, _, _) => format!("{event_kind} of session {session}"),
        }),
    );
    ev.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": {"name": "Portcullis", "vendor_name": "Portcullis"},
            "uid": hex::encode(r.hash),
            "correlation_uid": session,
            "sequence": b.get("seq"),
            "event_code": event_kind,
            "log_name": "portcullis-receipts",
            "profiles": ["security_control"],
        }),
    );
    let mut actor = Map::new();
    if let Some(a) = &agent {
        actor.insert("user".into(), json!({"uid": a, "name": a, "type": "Other"}));
        actor.insert("app_name".into(), json!(a));
    }
    if let Some(h) = &human {
        actor.insert("invoked_by".into(), json!(h));
    }
    actor.insert("session".into(), json!({"uid": session}));
    if let Some(d) = decision {
        actor.insert(
            "authorizations".into(),
            json!([{
                "decision": d,
                "policy": {
                    "name": rule,
                    "uid": bundle.and_then(|x| s(x, "hash")),
                    "version": bundle.and_then(|x| s(x, "version")),
                    "desc": reason,
                }
            }]),
        );
    }
    ev.insert("actor".into(), Value::Object(actor));
    if let Some(w) = &workload {
        ev.insert("src_endpoint".into(), json!({"uid": w, "svc_name": w}));
    }
    if let Some(a) = action {
        let target = a.get("target").unwrap_or(&Value::Null);
        let host = s(target, "host");
        let port = target
            .get("port")
            .and_then(Value::as_u64)
            .filter(|p| *p > 0);
        let server = s(target, "server");
        ev.insert(
            "api".into(),
            json!({
                "operation": operation,
                "service": {"name": server.or(host)},
                "request": {"uid": s(a, "digest")},
            }),
        );
        ev.insert(
            "dst_endpoint".into(),
            json!({"hostname": host, "port": port, "svc_name": server}),
        );
        if kind == Some("http") {
            ev.insert(
                "http_request".into(),
                json!({
                    "http_method": operation,
                    "url": {"hostname": host, "port": port, "path": s(target, "path"),
                            "scheme": s(target, "scheme")},
                    "length": a.get("size"),
                }),
            );
        }
        let resource_type = if s(a, "tool").is_some() {
            "mcp_tool"
        } else if s(a, "resource").is_some() {
            "mcp_resource"
        } else if s(a, "prompt").is_some() {
            "mcp_prompt"
        } else {
            "url"
        };
        if let Some(name) = &subject {
            let mut res = json!({"name": name, "type": resource_type});
            if let Some(classes) = a
                .get("data_classes")
                .filter(|c| c.as_array().is_some_and(|x| !x.is_empty()))
            {
                res["data_classes"] = classes.clone();
            }
            ev.insert("resources".into(), json!([res]));
        }
    }
    let sig = r.sig.as_ref();
    ev.insert(
        "unmapped".into(),
        json!({"portcullis": {
            "receipt_hash": hex::encode(r.hash),
            "prev": b.get("prev"),
            "seq": b.get("seq"),
            "signed": sig.is_some(),
            "key_id": sig.map(|x| x.key_id.clone()),
            "event": event_kind,
            "decision": decision,
            "would_be": b.get("would_be"),
            "rule": rule,
            "matched": b.get("matched"),
            "modifications": b.get("modifications"),
            "effects": b.get("effects"),
            "warnings": b.get("warnings"),
            "identity": {
                "agent": agent, "agent_auth": agent_auth,
                "human": human, "human_auth": human_auth,
                "workload": workload, "workload_auth": workload_auth,
            },
            "intent": b.get("intent"),
            "drift_milli": b.get("drift_milli"),
            "trace_id": b.get("trace"),
            "bundle": bundle,
            "approval": b.get("approval"),
            "action_digest": action.and_then(|a| s(a, "digest")),
            "arg_keys": action.and_then(|a| a.get("arg_keys")),
            "risk": action.map(|a| json!({"secrets": a.get("secrets"), "data_classes": a.get("data_classes")})),
            "log_line": line,
        }}),
    );
    let mut ev = Value::Object(ev);
    prune(&mut ev);
    ev
}

/// Drop `null` members (SIEMs index absent and null differently; absent is the OCSF habit).
fn prune(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(prune);
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_follows_the_operation() {
        assert_eq!(activity(Some("http"), "POST").0, 1);
        assert_eq!(activity(Some("http"), "GET").0, 2);
        assert_eq!(activity(Some("http"), "DELETE").0, 4);
        assert_eq!(activity(Some("mcp"), "resources/read").0, 2);
        assert_eq!(
            activity(Some("mcp"), "tools/call"),
            (99, "tools/call".to_owned())
        );
    }

    #[test]
    fn outcome_of_each_decision() {
        assert_eq!(outcome(Some("ALLOW")).2, 1);
        assert_eq!(outcome(Some("DENY")).0, 2);
        assert_eq!(outcome(Some("DENY")).3, "Failure");
        assert_eq!(outcome(Some("STEP_UP")).1, "Challenge");
        assert_eq!(outcome(None).1, "Logged");
    }
}
