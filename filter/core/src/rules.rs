//! The filter's own rule names (`filter:*`): what a receipt, a log line and a denial say when the
//! filter, not the pack, decided. The pack's rules and the bundle's built-in checks
//! (`bundle::builtin`) name the rest.

use bundle::builtin::Builtin;

/// A decision the filter made itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FilterRule {
    /// The plugin has no working configuration: every request is denied.
    Config,
    /// The request was refused before evaluation (bad input).
    Refused,
    /// Another message of the same batch was refused, or the action cannot be part of a batch.
    Batch,
    /// A STEP_UP names no approver group.
    StepUp,
    /// A STEP_UP names a group with no configured approvers.
    NoApprovers,
    /// A DEFER names no context service.
    Defer,
    /// A DEFER names a context service that is not configured.
    NoContextService,
    /// A MODIFY could not be applied.
    Modify,
    /// The session could not be saved (failure mode closed).
    SessionStore,
    /// The shared state store (etcd) could not answer or take a write the decision needs.
    StateStore,
    /// A response the filter could not check was replaced by an error.
    UncheckedResponse,
    /// Entries of a list answer carry instructions aimed at the agent (removed, or kept by a rule).
    PoisonedEntry,
    /// The action is outside the tools or hosts the task grant in force narrows the run to.
    GrantOutside,
    /// The tool's definition differs from its pin (`tool.changed`), and no rule on
    /// `tool.changed` decided otherwise.
    ToolChanged,
    /// The tool's name is offered by another server, or looks like one it offers
    /// (`tool.shadowed`), and no rule on `tool.shadowed` decided otherwise.
    ToolShadowed,
    /// A credential the decision injects could not be minted (no verified subject token, the
    /// STS failed, timed out or answered badly) or is not configured.
    Credential,
    /// An MRTR retry carries a `requestState` handed out for another action (2026-07-28).
    RequestStateChanged,
    /// An MRTR retry carries a `requestState` not handed to its principal or session through the
    /// filter, expired, or that cannot be checked.
    RequestStateUnbound,
    /// A `tasks/*` names a task not handed to its principal or session through the filter (a
    /// task of another principal or session, forged, expired), or that cannot be checked.
    TaskUnbound,
}

impl FilterRule {
    /// The rule name, as receipts and logs write it.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            FilterRule::Config => "filter:config",
            FilterRule::Refused => "filter:refused",
            FilterRule::Batch => "filter:batch",
            FilterRule::StepUp => "filter:step_up",
            FilterRule::NoApprovers => "filter:no_approvers",
            FilterRule::Defer => "filter:defer",
            FilterRule::NoContextService => "filter:no_context_service",
            FilterRule::Modify => "filter:modify",
            FilterRule::SessionStore => "filter:session_store",
            FilterRule::StateStore => "filter:state_store",
            FilterRule::UncheckedResponse => "filter:unchecked_response",
            FilterRule::PoisonedEntry => "filter:poisoned_entry",
            FilterRule::GrantOutside => "grant:outside",
            FilterRule::Credential => "filter:credential",
            FilterRule::ToolChanged => "tool:changed",
            FilterRule::ToolShadowed => "tool:shadowed",
            FilterRule::RequestStateChanged => "mrtr:request_state_changed",
            FilterRule::RequestStateUnbound => "mrtr:request_state_unbound",
            FilterRule::TaskUnbound => "task:unbound",
        }
    }
}

impl std::fmt::Display for FilterRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the rule `name` is a stop condition of the intent (`stop:*`).
pub(crate) fn is_stop(name: &str) -> bool {
    Builtin::from_name(name).is_some_and(Builtin::is_stop)
}
