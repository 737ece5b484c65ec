//! Names and reasons of the built-in checks (`docs/policy-language.md`, "Evaluation", step 2).
//! The VM and the reference interpreter both use these, so their verdicts are equal.
//!
//! Built-in rule names are the [`Builtin`] enum; the `&str` constants below are the same names
//! for callers that match on strings (the filter, receipts).

/// A built-in check's rule name, as recorded in `Verdict::matched` and receipts. `intent:<name>`
/// (an intent's outside decision) is not here: its name carries the intent's ([`INTENT_PREFIX`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `session:unknown`: the session state is missing.
    SessionUnknown,
    /// `session:killed`: the session was killed.
    SessionKilled,
    /// `session:revoked`: the subject or a class of the action was revoked.
    SessionRevoked,
    /// `session:read_only`: the session is read-only and the action writes.
    SessionReadOnly,
    /// `intent:unknown`: the intent in force is not defined by the pack.
    IntentUnknown,
    /// `stop:max_actions`: the intent's `max actions` was reached.
    StopMaxActions,
    /// `stop:max_egress_bytes`: the intent's `max egress_bytes` would be exceeded.
    StopMaxEgressBytes,
    /// `stop:max_duration`: the intent's `max duration` was exceeded.
    StopMaxDuration,
    /// `args:type`: a `tools/call` argument has another JSON type than the pack's `tool`
    /// declaration says (and is not coerced).
    ArgsType,
    /// `default`: the pack's default decision.
    Default,
    /// `stop:max_approvals`: a STEP_UP when the intent's `max approvals` is used up.
    StopMaxApprovals,
    /// `args:coerce`: arguments were converted to their declared types (MODIFY, `coerce_arg`).
    ArgsCoerce,
    /// `vm:step_limit` (VM only): the evaluation ran out of its step budget and was denied.
    VmStepLimit,
    /// `principal:quarantined`: the principal behind the session is quarantined.
    PrincipalQuarantined,
    /// `principal:read_only`: the principal is quarantined read-only and the action writes.
    PrincipalReadOnly,
    /// `principal:revoked`: the subject or a class of the action was revoked for the principal.
    PrincipalRevoked,
    /// `intent_source:untrusted`: the intent was declared by a source the pack does not trust
    /// (the agent's header without `intent_source header`, or a header that contradicts the
    /// grant or claim in force).
    IntentUntrusted,
}

impl Builtin {
    /// The rule name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Builtin::SessionUnknown => "session:unknown",
            Builtin::SessionKilled => "session:killed",
            Builtin::SessionRevoked => "session:revoked",
            Builtin::SessionReadOnly => "session:read_only",
            Builtin::IntentUnknown => "intent:unknown",
            Builtin::StopMaxActions => "stop:max_actions",
            Builtin::StopMaxEgressBytes => "stop:max_egress_bytes",
            Builtin::StopMaxDuration => "stop:max_duration",
            Builtin::ArgsType => "args:type",
            Builtin::Default => "default",
            Builtin::StopMaxApprovals => "stop:max_approvals",
            Builtin::ArgsCoerce => "args:coerce",
            Builtin::VmStepLimit => "vm:step_limit",
            Builtin::PrincipalQuarantined => "principal:quarantined",
            Builtin::PrincipalReadOnly => "principal:read_only",
            Builtin::PrincipalRevoked => "principal:revoked",
            Builtin::IntentUntrusted => "intent_source:untrusted",
        }
    }

    /// Every built-in, in table order (the order their matches are recorded in).
    pub const ALL: [Builtin; 17] = [
        Builtin::SessionUnknown,
        Builtin::SessionKilled,
        Builtin::SessionRevoked,
        Builtin::SessionReadOnly,
        Builtin::IntentUnknown,
        Builtin::StopMaxActions,
        Builtin::StopMaxEgressBytes,
        Builtin::StopMaxDuration,
        Builtin::ArgsType,
        Builtin::Default,
        Builtin::StopMaxApprovals,
        Builtin::ArgsCoerce,
        Builtin::VmStepLimit,
        Builtin::PrincipalQuarantined,
        Builtin::PrincipalReadOnly,
        Builtin::PrincipalRevoked,
        Builtin::IntentUntrusted,
    ];

    /// The built-in with this rule name.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.as_str() == name)
    }

    /// A stop condition of the intent (`stop:*`): the agent is told it reached a limit, not that
    /// the action is forbidden.
    pub const fn is_stop(self) -> bool {
        matches!(
            self,
            Builtin::StopMaxActions
                | Builtin::StopMaxEgressBytes
                | Builtin::StopMaxDuration
                | Builtin::StopMaxApprovals
        )
    }
}

impl std::fmt::Display for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rule name: the session state is missing.
pub const SESSION_UNKNOWN: &str = Builtin::SessionUnknown.as_str();
/// Rule name: the session was killed.
pub const SESSION_KILLED: &str = Builtin::SessionKilled.as_str();
/// Rule name: the subject or a class of the action was revoked.
pub const SESSION_REVOKED: &str = Builtin::SessionRevoked.as_str();
/// Rule name: the session is read-only and the action writes.
pub const SESSION_READ_ONLY: &str = Builtin::SessionReadOnly.as_str();
/// Rule name: the intent in force is not defined by the pack.
pub const INTENT_UNKNOWN: &str = Builtin::IntentUnknown.as_str();
/// Rule name prefix of an intent's outside decision: `intent:<name>`.
pub const INTENT_PREFIX: &str = "intent:";
/// Rule name: the intent's `max actions` was reached.
pub const STOP_MAX_ACTIONS: &str = Builtin::StopMaxActions.as_str();
/// Rule name: the intent's `max egress_bytes` would be exceeded.
pub const STOP_MAX_EGRESS_BYTES: &str = Builtin::StopMaxEgressBytes.as_str();
/// Rule name: the intent's `max duration` was exceeded.
pub const STOP_MAX_DURATION: &str = Builtin::StopMaxDuration.as_str();
/// Rule name: a STEP_UP when the intent's `max approvals` is used up.
pub const STOP_MAX_APPROVALS: &str = Builtin::StopMaxApprovals.as_str();
/// Rule name: an argument's type differs from the pack's `tool` declaration.
pub const ARGS_TYPE: &str = Builtin::ArgsType.as_str();
/// Rule name: arguments were converted to their declared types.
pub const ARGS_COERCE: &str = Builtin::ArgsCoerce.as_str();
/// Rule name: the pack's default decision.
pub const DEFAULT: &str = Builtin::Default.as_str();
/// `deciding_rule` when nothing was enforced.
pub const NONE: &str = "none";
/// Rule name: the principal is quarantined.
pub const PRINCIPAL_QUARANTINED: &str = Builtin::PrincipalQuarantined.as_str();
/// Rule name: the principal is quarantined read-only and the action writes.
pub const PRINCIPAL_READ_ONLY: &str = Builtin::PrincipalReadOnly.as_str();
/// Rule name: the subject or a class of the action was revoked for the principal.
pub const PRINCIPAL_REVOKED: &str = Builtin::PrincipalRevoked.as_str();
/// Rule name: the intent's source is not trusted by the pack.
pub const INTENT_UNTRUSTED: &str = Builtin::IntentUntrusted.as_str();
/// Rule name (VM only): the evaluation ran out of its step budget and was denied.
pub const VM_STEP_LIMIT: &str = Builtin::VmStepLimit.as_str();

/// Reason of `session:killed`.
pub const KILLED_REASON: &str = "the session was killed";
/// Reason of `session:revoked`.
pub const REVOKED_REASON: &str = "this tool or class was revoked for the rest of the session";
/// Reason of `session:read_only`.
pub const READ_ONLY_REASON: &str = "the session is read-only";
/// Reason of `intent:unknown`.
pub const INTENT_UNKNOWN_REASON: &str = "the declared intent is not defined by this policy";
/// Reason of `stop:max_actions`.
pub const MAX_ACTIONS_REASON: &str = "the intent's action limit was reached";
/// Reason of `stop:max_egress_bytes`.
pub const MAX_EGRESS_BYTES_REASON: &str = "the intent's egress byte limit was reached";
/// Reason of `stop:max_duration`.
pub const MAX_DURATION_REASON: &str = "the intent's time limit was reached";
/// Reason of `stop:max_approvals`.
pub const MAX_APPROVALS_REASON: &str = "the intent's approval limit was reached";
/// Reason of `principal:quarantined`.
pub const PRINCIPAL_QUARANTINED_REASON: &str =
    "the agent is quarantined in every session until an operator releases it";
/// Reason of `principal:read_only`.
pub const PRINCIPAL_READ_ONLY_REASON: &str =
    "the agent is quarantined read-only until an operator releases it";
/// Reason of `principal:revoked`.
pub const PRINCIPAL_REVOKED_REASON: &str =
    "this tool or class was revoked for the agent, in every session, until it is released";
/// Reason of `intent_source:untrusted`.
pub const INTENT_UNTRUSTED_REASON: &str = "the intent was declared by a source this policy does not trust (the agent's own header without `intent_source header`, or one that contradicts the task grant or claim in force)";
/// Reason of `vm:step_limit`.
pub const STEP_LIMIT_REASON: &str = "policy evaluation exceeded its step budget";
/// Reason of `args:coerce`.
pub const ARGS_COERCE_REASON: &str =
    "arguments were converted to the types the policy declares for this tool";

/// Reason of `args:type`: names the first mismatching argument (in declaration order), the JSON
/// type it has and the type the pack declares, e.g. ``argument `args.limit` of tool `query_db`
/// is a string, but the policy declares it `number` ``. `path` is the argument's keys.
pub fn args_type_reason(tool: &str, path: &[String], found: &str, declared: &str) -> String {
    format!(
        "argument `{}` of tool `{tool}` is {found}, but the policy declares it `{declared}`",
        arg_path_text(path)
    )
}

/// `args.a.b["odd key"]`: how the language writes an argument path of object keys (strings
/// escaped as in the language: `\"`, `\\`, `\n`, `\t`, `\u{HEX}`).
pub fn arg_path_text(path: &[String]) -> String {
    let mut s = String::from("args");
    for k in path {
        let ident = k.starts_with(|c: char| c.is_ascii_alphabetic())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident {
            s.push('.');
            s.push_str(k);
        } else {
            s.push_str("[\"");
            for c in k.chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    '\t' => s.push_str("\\t"),
                    c if c.is_control() => s.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
                    c => s.push(c),
                }
            }
            s.push_str("\"]");
        }
    }
    s
}

/// The JSON type of a value, as the reason of `args:type` names it (`a string`, `a number`, ...).
pub fn json_type_phrase(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.as_str()), Some(b));
            assert_eq!(b.to_string(), b.as_str());
        }
        let mut names: Vec<&str> = Builtin::ALL.iter().map(|b| b.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Builtin::ALL.len());
        assert_eq!(Builtin::from_name("intent:demo"), None);
    }

    #[test]
    fn type_reason_names_the_argument_as_the_language_writes_it() {
        assert_eq!(
            args_type_reason("query_db", &["limit".into()], "a string", "number"),
            "argument `args.limit` of tool `query_db` is a string, but the policy declares it `number`"
        );
        assert_eq!(
            arg_path_text(&["a".into(), "odd key".into(), "0".into()]),
            "args.a[\"odd key\"][\"0\"]"
        );
    }
}
