//! Names and reasons of the built-in checks (`docs/policy-language.md`, "Evaluation", step 2).
//! The VM and the reference interpreter both use these, so their verdicts are equal.

/// Rule name: the session state is missing.
pub const SESSION_UNKNOWN: &str = "session:unknown";
/// Rule name: the session was killed.
pub const SESSION_KILLED: &str = "session:killed";
/// Rule name: the subject or a class of the action was revoked.
pub const SESSION_REVOKED: &str = "session:revoked";
/// Rule name: the session is read-only and the action writes.
pub const SESSION_READ_ONLY: &str = "session:read_only";
/// Rule name: the intent in force is not defined by the pack.
pub const INTENT_UNKNOWN: &str = "intent:unknown";
/// Rule name prefix of an intent's outside decision: `intent:<name>`.
pub const INTENT_PREFIX: &str = "intent:";
/// Rule name: the intent's `max actions` was reached.
pub const STOP_MAX_ACTIONS: &str = "stop:max_actions";
/// Rule name: the intent's `max egress_bytes` would be exceeded.
pub const STOP_MAX_EGRESS_BYTES: &str = "stop:max_egress_bytes";
/// Rule name: the intent's `max duration` was exceeded.
pub const STOP_MAX_DURATION: &str = "stop:max_duration";
/// Rule name: a STEP_UP when the intent's `max approvals` is used up.
pub const STOP_MAX_APPROVALS: &str = "stop:max_approvals";
/// Rule name: the pack's default decision.
pub const DEFAULT: &str = "default";
/// `deciding_rule` when nothing was enforced.
pub const NONE: &str = "none";
/// Rule name (VM only): the evaluation ran out of its step budget and was denied.
pub const VM_STEP_LIMIT: &str = "vm:step_limit";

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
/// Reason of `vm:step_limit`.
pub const STEP_LIMIT_REASON: &str = "policy evaluation exceeded its step budget";
