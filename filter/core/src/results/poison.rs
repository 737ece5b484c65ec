//! Poisoned list entries (docs/filter.md, "The response path"; OWASP MCP Top 10 MCP03, AARM T1):
//! an entry of a list answer whose description, title, schema or arguments carry an instruction
//! aimed at the agent ([`inject::detect`]) is removed before the agent reads it, unless a rule of
//! the pack keeps it. A flagged entry is judged as the pseudo-action `tools/list_entry` /
//! `prompts/list_entry` / `resources/list_entry` (the entry's name, `args.injection == true`,
//! `args.field`, `args.text`, the data class `instruction`); it stays only when a rule of the pack
//! decides that action and the decision is not DENY (in any mode). The pack's default, an
//! intent's outside decision and built-ins never keep one: a pack that says nothing removes.

use bundle::action::{Action, Risk};
use bundle::session::SessionState;
use bundle::verdict::Decision;
use serde_json::{Value, json};

use super::{ListKind, inject, result};
use crate::normalize::Method;
use crate::policy::Policy;

/// The server's `instructions` in an `initialize` or `server/discover` answer: clients hand them
/// to the model with the tool list, so they are read like an entry's description. Flagged ones
/// are removed (no rule keeps them: an `instructions` text has no name a rule could select), with
/// a signed `result` receipt on the request (rule `filter:poisoned_entry`, MODIFY; none without a
/// session, which an `initialize` usually has not yet) and a warning. Whether `msg` changed.
pub(super) fn strip_instructions(
    cx: &super::Judge<'_>,
    request: &Action,
    msg: &mut Value,
    sealed: &mut Vec<bundle::receipt::Receipt>,
) -> bool {
    let Some(answer) = msg.get_mut("result").and_then(Value::as_object_mut) else {
        return false;
    };
    let flagged = answer.get("instructions").is_some_and(|v| {
        let mut text = String::new();
        result::result_text(v, &mut text);
        inject::detect(&text)
    });
    if !flagged {
        return false;
    }
    answer.remove("instructions");
    let line = format!(
        "removed the server's `instructions` ({} answer): they carry an instruction aimed at \
         the agent",
        request.operation
    );
    cx.host
        .log(crate::host::LogLevel::Warn, &format!("portcullis: {line}"));
    if let Some(r) = result::poisoned_entries(cx, request, 1, vec![line]) {
        sealed.push(r);
    }
    true
}

/// The members of an entry the agent reads as text, scanned one by one, in this order.
fn scanned_members(kind: ListKind) -> &'static [&'static str] {
    match kind {
        ListKind::Tools => &[
            "description",
            "title",
            "annotations",
            "inputSchema",
            "outputSchema",
        ],
        ListKind::Prompts => &["description", "title", "arguments"],
        // A resource's `name` is display text (its key is the `uri`).
        ListKind::Resources | ListKind::Templates => &["description", "title", "name"],
    }
}

/// How a receipt says which member of an entry was flagged.
fn flagged_words(member: &str) -> &'static str {
    match member {
        "description" => "its description carries",
        "title" => "its title carries",
        "annotations" => "its annotations carry",
        "inputSchema" => "its input schema carries",
        "outputSchema" => "its output schema carries",
        "arguments" => "its arguments carry",
        "name" => "its name carries",
        _ => "its definition carries",
    }
}

impl ListKind {
    /// The noun a receipt uses for an entry.
    fn noun(self) -> &'static str {
        match self {
            ListKind::Tools => "tool",
            ListKind::Prompts => "prompt",
            ListKind::Resources => "resource",
            ListKind::Templates => "resource template",
        }
    }

    /// The pseudo-operation a flagged entry is judged as.
    fn entry_method(self) -> Method {
        match self {
            ListKind::Tools => Method::ToolsListEntry,
            ListKind::Prompts => Method::PromptsListEntry,
            ListKind::Resources | ListKind::Templates => Method::ResourcesListEntry,
        }
    }
}

/// The first member of `entry` whose text carries an instruction aimed at the agent, with that
/// text (every string value of the member at any depth, joined by `\n`, bounded as the detector
/// reads it). `None` for a clean entry.
pub(super) fn flagged(kind: ListKind, entry: &Value) -> Option<(&'static str, String)> {
    scanned_members(kind).iter().find_map(|m| {
        let v = entry.get(*m)?;
        let mut text = String::new();
        result::result_text(v, &mut text);
        inject::detect(&text).then_some((*m, text))
    })
}

/// The action a flagged entry `name` is judged as: the list request's identity, session, intent
/// and headers; the entry's name as tool / prompt / resource.
fn entry_action(kind: ListKind, list: &Action, name: &str, member: &str, text: String) -> Action {
    let mut a = kind.call(list, name);
    a.operation = kind.entry_method().name().to_owned();
    a.risk = Risk::default();
    a.risk
        .data_classes
        .push(result::INSTRUCTION_CLASS.to_owned());
    a.set_arguments(json!({"injection": true, "field": member, "text": text}));
    a
}

/// What became of one flagged entry: the line its list's receipt carries, and whether it stays.
pub(super) struct Judged {
    pub keep: bool,
    pub line: String,
}

/// Judge the flagged entry `name` of a `kind` list requested by `list` (its text in `member`).
pub(super) fn judge(
    l: &Policy,
    state: &SessionState,
    now: u64,
    kind: ListKind,
    list: &Action,
    name: &str,
    (member, text): (&'static str, String),
) -> Judged {
    let a = entry_action(kind, list, name, member, text);
    let v = l.bundle.evaluate(&a, state, now);
    let keep = l.pack.is_pack_rule(&v.deciding_rule)
        && v.decision != Decision::Deny
        && v.would_be != Decision::Deny;
    let why = format!(
        "{} an instruction aimed at the agent",
        flagged_words(member)
    );
    let noun = kind.noun();
    let line = if keep {
        format!(
            "kept {noun} `{name}` although {why}: rule `{}`",
            v.deciding_rule
        )
    } else {
        format!("removed {noun} `{name}`: {why}")
    };
    Judged { keep, line }
}
