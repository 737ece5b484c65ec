//! A tool whose definition differs from its pin (`tool.changed`) or whose name shadows another
//! server's (`tool.shadowed`): refused (`tool:changed`, `tool:shadowed`) unless the pack decided
//! it with a rule that reads that flag and did not deny it (`docs/filter.md`, "Tool pins"). The
//! pack's default, an intent's outside decision, a built-in or a rule that does not read the flag
//! never keeps one: a pack that says nothing refuses. The same principle as poisoned list entries
//! (`results/poison.rs`). The pins themselves are kept in `session/pins.rs`.

use bundle::action::Action;
use bundle::verdict::{Decision, Mode, RuleMatch, Verdict};

use crate::policy::Policy;
use crate::rules::FilterRule;

/// What the filter knows of one tool against its pin (`session/pins.rs` works it out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ToolCheck {
    /// `Some((pinned, now))` (lowercase hex; either empty when unknown): the definition differs
    /// from its pin, or cannot be vouched for.
    pub changed: Option<(String, String)>,
    /// Why it is judged changed when the digests alone do not say (an unreadable record, a
    /// changed list announced, no room for a pin).
    pub why: Option<String>,
    /// The other server and name this tool's name shadows.
    pub shadowed: Option<(String, String)>,
}

/// Set the action's `tool.changed` and `tool.shadowed` from `check`.
pub(crate) fn flag(action: &mut Action, check: &ToolCheck) {
    action.tool_state.changed = check.changed.is_some();
    action.tool_state.shadowed = check.shadowed.is_some();
}

/// Whether `v`, the pack's verdict on the flagged `action`, keeps it: for every flag set, an
/// enforced rule that reads it matched with the decision `v` took, and neither the decision nor
/// the would-be decision is DENY.
pub(crate) fn kept(l: &Policy, action: &Action, v: &Verdict) -> bool {
    let decided_by = |rules: &[String]| {
        v.matched
            .iter()
            .any(|m| m.mode == Mode::Enforce && m.decision == v.decision && rules.contains(&m.rule))
    };
    (!action.tool_state.changed || decided_by(&l.pack.on_changed))
        && (!action.tool_state.shadowed || decided_by(&l.pack.on_shadowed))
        && v.decision != Decision::Deny
        && v.would_be != Decision::Deny
}

/// `digest` for a receipt: its hex, or what stands for none.
fn shown(digest: &str) -> &str {
    if digest.is_empty() { "none" } else { digest }
}

/// What a receipt says of a changed tool `name` of `server`: the pinned and the current digest.
pub(crate) fn changed_words(server: &str, name: &str, check: &ToolCheck) -> Option<String> {
    let (old, new) = check.changed.as_ref()?;
    let mut s = format!(
        "the definition of tool `{name}` of server `{server}` differs from its pin \
         (pinned sha256 {}, now {})",
        shown(old),
        shown(new)
    );
    if let Some(why) = &check.why {
        s.push_str(": ");
        s.push_str(why);
    }
    Some(s)
}

/// What a receipt says of a shadowing tool `name` of `server`.
pub(crate) fn shadowed_words(server: &str, name: &str, check: &ToolCheck) -> Option<String> {
    let (other_server, other) = check.shadowed.as_ref()?;
    Some(if other == name {
        format!("tool `{name}` of server `{server}` is also offered by server `{other_server}`")
    } else {
        format!(
            "tool `{name}` of server `{server}` looks like tool `{other}` of server \
             `{other_server}`"
        )
    })
}

/// The refusal of a flagged call the pack did not keep: `tool:changed` when its definition
/// changed, else `tool:shadowed`; the reason names both digests (and the shadowed tool).
pub(crate) fn refuse(action: &Action, check: &ToolCheck, mut v: Verdict) -> Verdict {
    let server = action.target.server.as_str();
    let name = action.tool.as_deref().unwrap_or_default();
    let changed = changed_words(server, name, check);
    let shadowed = shadowed_words(server, name, check);
    let rule = if changed.is_some() {
        FilterRule::ToolChanged
    } else {
        FilterRule::ToolShadowed
    };
    let reason = [changed, shadowed]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
    v.matched.push(RuleMatch {
        rule: rule.as_str().to_owned(),
        decision: Decision::Deny,
        mode: Mode::Enforce,
        reason: reason.clone(),
    });
    v.overruled(rule.as_str(), reason)
}
