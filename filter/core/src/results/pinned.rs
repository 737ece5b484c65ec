//! Tool pins on the response path (`docs/filter.md`, "Tool pins"; issue 18, items 2 and 4):
//! every tool of a `tools/list` answer is judged against its pin (`session/pins.rs`; the first
//! definition its owner was offered, or the bundle's reviewed one). An entry whose definition
//! changed (`tool.changed`) or whose name another server offers first, or one that looks like it
//! (`tool.shadowed`), is removed before the agent reads it, unless the pack keeps it: it is judged
//! as the pseudo-action `tools/list_entry` (the tool's name, `tool.changed`, `tool.shadowed`,
//! `args.changed`, `args.shadowed`, `args.pinned`, `args.digest`) and stays only when a rule that
//! reads each flag set decides it and does not deny (`decide/pins.rs`). A `result` receipt says
//! what became of each, with the pinned and the current digest.
//!
//! `notifications/tools/list_changed` from the server marks the owner's pins of that server for
//! a re-check: until the next list, a call of its tools is judged changed.

use bundle::action::{Action, Risk};
use bundle::pin::definition_digest;
use bundle::receipt::Receipt;
use serde_json::{Value, json};

use super::{Cx, Judge, ListKind, result};
use crate::host::LogLevel;
use crate::normalize::Method;
use crate::policy::pins::{self, ToolCheck};
use crate::rules::FilterRule;
use crate::session::pin_owner;

/// The action a flagged entry is judged as.
fn entry_action(list: &Action, name: &str, check: &ToolCheck, digest: &str) -> Action {
    let mut a = ListKind::Tools.call(list, name);
    a.operation = Method::ToolsListEntry.name().to_owned();
    a.risk = Risk::default();
    pins::flag(&mut a, check);
    let pinned = check.changed.as_ref().map_or("", |(old, _)| old.as_str());
    a.set_arguments(json!({
        "changed": a.tool_state.changed,
        "shadowed": a.tool_state.shadowed,
        "pinned": pinned,
        "digest": digest,
    }));
    a
}

/// Judge the tools of one list answer against their pins, removing the flagged entries the pack
/// does not keep; returns how many were removed. The receipt recording them goes to `sealed`.
pub(super) fn filter(
    cx: &Judge<'_>,
    c: &Cx<'_>,
    list_action: &Action,
    list: &mut Vec<Value>,
    sealed: &mut Vec<Receipt>,
) -> usize {
    let Some(owner) = pin_owner(cx.principal, cx.session) else {
        return 0;
    };
    let server = list_action.target.server.as_str();
    let tools: Vec<(String, Option<[u8; 32]>)> = list
        .iter()
        .map(|e| {
            let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
            (name.to_owned(), definition_digest(e))
        })
        .collect();
    let checks = cx
        .sessions
        .observe_tools(cx.host, c.l.bundle.baseline(), &owner, server, &tools);
    let before = list.len();
    let mut lines = Vec::new();
    let mut changed_any = false;
    let mut i = 0usize;
    list.retain(|_| {
        let at = i;
        i = i.saturating_add(1);
        let (Some(check), Some((name, digest))) = (checks.get(at), tools.get(at)) else {
            return true;
        };
        if check.changed.is_none() && check.shadowed.is_none() {
            return true;
        }
        changed_any |= check.changed.is_some();
        let digest = digest.map(hex::encode).unwrap_or_default();
        let a = entry_action(list_action, name, check, &digest);
        let v = c.l.bundle.evaluate(&a, c.state, c.now);
        let keep = pins::kept(c.l, &a, &v);
        let why = [
            pins::changed_words(server, name, check),
            pins::shadowed_words(server, name, check),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
        lines.push(if keep {
            format!(
                "kept tool `{name}` although {why}: rule `{}`",
                v.deciding_rule
            )
        } else {
            format!("removed tool `{name}`: {why}")
        });
        keep
    });
    let removed = before.saturating_sub(list.len());
    if !lines.is_empty() {
        cx.host.log(
            LogLevel::Warn,
            &format!("portcullis: list result: {}", lines.join("; ")),
        );
        let (rule, reason) = if changed_any {
            (
                FilterRule::ToolChanged,
                "tool definitions differ from their pins",
            )
        } else {
            (
                FilterRule::ToolShadowed,
                "tool names shadow another server's tools",
            )
        };
        if let Some(r) = result::flagged_entries(cx, list_action, removed, lines, rule, reason) {
            sealed.push(r);
        }
    }
    removed
}

/// The server of the stream `base` announced a changed tool list: its tools' pins are re-checked
/// on the next list, and calls before it are judged changed.
pub(super) fn list_changed(cx: &Judge<'_>, base: &Action) {
    if let Some(owner) = pin_owner(cx.principal, cx.session) {
        cx.sessions
            .tools_list_changed(cx.host, &owner, &base.target.server);
    }
}
