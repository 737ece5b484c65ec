//! In-band approval (STEP_UP through MCP): when the client declared URL-mode elicitation, a
//! STEP_UP is answered with an elicitation pointing at the approval service's page for this
//! action, and the retry of the same action fetches the token an approver minted there
//! (`docs/approvals.md`, "In-band approval"). The stream side is `stream/approval.rs`; this
//! module holds what does not touch the stream: the per-session record (`store.rs`), the wire
//! shapes (`wire.rs`) and what the service is told about an action ([`notify_body`]).

pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod wire;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use bundle::action::Action;
use bundle::format::{EffectDef, Program};
use bundle::session::{NameHash, SessionState, name_hash};
use bundle::verdict::Verdict;

use crate::limits::MAX_RECENT_ACTIONS_SENT;
use crate::respond::ApprovalRequest;

/// The names a pack knows (tools, hosts, classes, taints), by their hash: the session record
/// keeps only hashes, the approver reads names. A hash no name of the pack matches is shown as
/// its hex.
fn known_names(p: &Program, action: &Action) -> BTreeMap<NameHash, String> {
    // A non-tool MCP action's subject is its target's host.
    let mut names: Vec<&str> = vec![
        action.subject(),
        action.target.host.as_str(),
        action.target.server.as_str(),
    ];
    names.extend(p.classes.iter().map(|c| c.name.as_str()));
    names.extend(p.tools.iter().map(|t| t.name.as_str()));
    names.extend(p.tool_pins.iter().map(|t| t.name.as_str()));
    for i in &p.intents {
        names.extend(i.tools.iter().map(String::as_str));
        names.extend(i.hosts.iter().map(String::as_str));
    }
    for r in &p.rules {
        names.extend(r.pins.tools.iter().map(String::as_str));
        names.extend(r.pins.hosts.iter().map(String::as_str));
        for e in &r.effects {
            match e {
                EffectDef::Taint(t) | EffectDef::RevokeTool(Some(t)) => names.push(t),
                _ => {}
            }
        }
    }
    names
        .into_iter()
        .map(|n| (name_hash(n), n.to_owned()))
        .collect()
}

/// The rules of the pack that set taint `t` (where untrusted content came from, as the policy
/// names it).
fn tainting_rules(p: &Program, t: &str) -> Vec<String> {
    p.rules
        .iter()
        .filter(|r| {
            r.effects
                .iter()
                .any(|e| matches!(e, EffectDef::Taint(x) if x == t))
        })
        .map(|r| r.name.clone())
        .collect()
}

/// Everything the approval service is told about a pending action (`POST
/// <api_prefix>/elicitations`): what an approver needs to judge it (docs/approvals.md lists
/// the members).
pub(crate) struct Notice<'a> {
    pub elicitation_id: &'a str,
    pub url: &'a str,
    pub session: &'a str,
    pub principal: Option<&'a str>,
    pub action: &'a Action,
    pub verdict: &'a Verdict,
    pub rule: &'a str,
    pub req: &'a ApprovalRequest,
    pub state: &'a SessionState,
    pub program: &'a Program,
    pub now_ms: u64,
}

/// The JSON body of the notice.
pub(crate) fn notify_body(n: &Notice<'_>) -> Vec<u8> {
    let names = known_names(n.program, n.action);
    let name = |h: &NameHash| {
        names
            .get(h)
            .cloned()
            .unwrap_or_else(|| format!("#{h:016x}"))
    };
    let class_of = |bits: u16| -> Vec<String> {
        n.state
            .class_table
            .iter()
            .enumerate()
            .filter(|(i, _)| u32::try_from(*i).is_ok_and(|i| i < 16 && bits & (1u16 << i) != 0))
            .map(|(_, h)| name(h))
            .collect()
    };
    let skip = n
        .state
        .history
        .len()
        .saturating_sub(MAX_RECENT_ACTIONS_SENT);
    let recent: Vec<Value> = n
        .state
        .history
        .iter()
        .skip(skip)
        .map(|e| {
            json!({
                "subject": name(&e.subject),
                "classes": class_of(e.classes),
                "at_ms": n.state.started_ms.saturating_add(u64::from(e.at_ms)),
            })
        })
        .collect();
    let taints: Vec<Value> = n
        .state
        .taints
        .iter()
        .map(|h| {
            let t = name(h);
            json!({"taint": t, "set_by_rules": tainting_rules(n.program, &t)})
        })
        .collect();
    let a = n.action;
    // Where untrusted content entered the session, as the policy names it: each taint and the
    // rules that set it (a tool result judged as `tools/result`, or an action).
    let sources: Vec<String> = taints
        .iter()
        .filter_map(|t| {
            let rules = t.get("set_by_rules")?.as_array()?;
            let names: Vec<&str> = rules.iter().filter_map(Value::as_str).collect();
            Some(format!(
                "{} (set by {})",
                t.get("taint")?.as_str()?,
                if names.is_empty() {
                    "no rule of this pack".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })
        .collect();
    let effects: Vec<Value> = n
        .verdict
        .effects
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    let summary = format!(
        "{} `{}` on {} `{}`{}",
        a.operation,
        a.subject(),
        if a.kind == bundle::action::Kind::Mcp {
            "MCP server"
        } else {
            "host"
        },
        if a.kind == bundle::action::Kind::Mcp {
            a.target.server.as_str()
        } else {
            a.target.host.as_str()
        },
        if n.verdict.classes.is_empty() {
            String::new()
        } else {
            format!(" (classes: {})", n.verdict.classes.join(", "))
        }
    );
    let body = json!({
        "v": 1,
        "elicitation_id": n.elicitation_id,
        "url": n.url,
        "digest": n.req.digest,
        "group": n.req.group,
        "expires_at": n.req.expires_at,
        "created_at_ms": n.now_ms,
        "rule": n.rule,
        "reason": n.req.reason,
        "session": n.session,
        "principal": n.principal,
        "action": {
            "kind": a.kind,
            "operation": a.operation,
            "tool": a.tool,
            "resource": a.resource,
            "prompt": a.prompt,
            "arguments": a.arguments,
            "target": a.target,
            "risk": {
                "secrets": a.risk.secrets,
                "data_classes": a.risk.data_classes,
            },
        },
        "identity": a.identity,
        "intent": n.verdict.intent.as_ref().or(n.state.intent.as_ref()),
        "session_state": {
            "actions": n.state.actions,
            "approvals": n.state.approvals,
            "read_only": n.state.read_only,
            "drift": n.state.drift,
            "recent_actions": recent,
            "taints": taints,
        },
        "untrusted_source": {
            "present": !sources.is_empty(),
            "sources": sources,
        },
        "expected_effect": {
            "summary": summary,
            "classes": n.verdict.classes,
            "session_effects": effects,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}
