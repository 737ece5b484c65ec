//! What one evaluation returns: the decision, every matched rule, modifications and session effects.
//!
//! The VM and the compiler's reference interpreter both produce a [`Verdict`], and the differential
//! tests require them to be equal. `policyc eval --format json` prints it (shape in
//! `docs/policy-language.md`, "Verdict JSON").

use serde::{Deserialize, Serialize};

/// AARM's five decisions. The derived order is strictness: `Allow < Modify < Defer < StepUp < Deny`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    /// Forward unchanged.
    #[default]
    Allow,
    /// Forward a rewritten action (see [`Modification`]).
    Modify,
    /// Hold pending more context from a context service; unresolved means deny.
    Defer,
    /// Require a human approval before execution.
    StepUp,
    /// Refuse without contacting upstream.
    Deny,
}

impl Decision {
    /// The upper-case name used in receipts, logs and the language's docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Modify => "MODIFY",
            Decision::Defer => "DEFER",
            Decision::StepUp => "STEP_UP",
            Decision::Deny => "DENY",
        }
    }
}

/// How a rule's decision is applied. Rolling out a pack goes audit -> warn -> enforce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide and record; never change what happens.
    Audit,
    /// Allow, but tell the agent (warning header) and record what would have happened.
    Warn,
    /// Apply the decision.
    #[default]
    Enforce,
}

impl Mode {
    /// The lowercase name the language, manifests and receipts use.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Warn => "warn",
            Mode::Enforce => "enforce",
        }
    }
}

/// One rule (or built-in check) that matched, with what it asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// The rule's name. Built-in checks use a prefix: `default`, `intent:<name>`, `stop:<what>`,
    /// `session:killed`, `session:revoked`, `session:read_only`, `session:unknown`.
    pub rule: String,
    /// The decision this rule asked for.
    pub decision: Decision,
    /// The mode the rule ran in.
    pub mode: Mode,
    /// The human reason written in the policy.
    pub reason: String,
}

/// A JSON path into the action's arguments, as a list of object keys and array indices.
pub type ArgPath = Vec<PathSegment>;

/// One step of an [`ArgPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// An object member.
    Key(String),
    /// An array element.
    Index(u32),
}

/// A rewrite a MODIFY decision asks the filter to make before forwarding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Modification {
    /// Replace the value at `path` with the string `"[REDACTED]"` (if present).
    RedactArg {
        /// Where in the arguments.
        path: ArgPath,
    },
    /// Remove the member or element at `path` (if present).
    DropArg {
        /// Where in the arguments.
        path: ArgPath,
    },
    /// Clamp the number at `path` into `[min, max]` (if present and numeric).
    ClampArg {
        /// Where in the arguments.
        path: ArgPath,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Replace every secret-like value found in the arguments / body with `"[REDACTED]"`.
    RedactSecrets,
    /// Remove a request header (lowercase name).
    StripHeader {
        /// Header name.
        name: String,
    },
    /// Set (replace) a request header.
    SetHeader {
        /// Header name.
        name: String,
        /// Header value.
        value: String,
    },
    /// Remove tools whose names match these globs from a `tools/list` result.
    RemoveTools {
        /// Glob patterns (`*` and `?`).
        patterns: Vec<String>,
    },
    /// Replace the value at `path` with `value`: the argument as the pack's `tool` declaration
    /// converts it (`"100"` -> `100` for a `number coerce` argument). Emitted by the built-in
    /// `args:coerce` match, always before the rules' modifications, so that the server receives
    /// exactly the value the policy judged. `path` names an existing member (object keys only).
    CoerceArg {
        /// Where in the arguments.
        path: ArgPath,
        /// The converted value (a JSON string, number or boolean).
        value: serde_json::Value,
    },
    /// Set a request header to a credential minted for this one action: an RFC 8693 token
    /// exchange at the operator's STS, whose definition (`credentials.definitions.NAME` of the
    /// plugin configuration) names the header, its format, the audience and the read / write
    /// scopes (format version 5; `docs/credentials.md`).
    InjectCredential {
        /// The credential's name in the plugin configuration.
        name: String,
    },
}

/// A lasting change to the session, applied after the decision (progressive enforcement).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "effect", content = "value", rename_all = "snake_case")]
pub enum Effect {
    /// Mark the session with a data-class / risk taint (e.g. `secret`, `untrusted_instruction`).
    Taint(String),
    /// Deny this tool for the rest of the session.
    RevokeTool(String),
    /// Deny every action in this class for the rest of the session.
    RevokeClass(String),
    /// Deny this tool to the principal, in every session of it, until it is released (and for
    /// the rest of this session).
    RevokePrincipalTool(String),
    /// Deny every action in this class to the principal, in every session, until it is released.
    RevokePrincipalClass(String),
    /// Deny every action not in a `readonly` class for the rest of the session.
    ReadOnly,
    /// Deny every later action of the session, and quarantine its principal.
    Kill,
    /// Quarantine the principal (every session of it, and its new ones) until an operator
    /// releases it; the session itself is killed (`Full`) or read-only (`ReadOnly`).
    Quarantine(crate::session::Quarantine),
}

/// STEP_UP parameters: who must approve, and for how long the approval request is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUp {
    /// The approver group that must sign the approval token.
    pub group: String,
    /// Seconds an approval stays valid after it is issued.
    pub timeout_s: u32,
}

/// DEFER parameters: which context service to ask, and how long to wait before denying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defer {
    /// The context service's name (mapped to an Envoy cluster in the plugin config).
    pub service: String,
    /// Milliseconds to wait; on timeout the action is denied.
    pub timeout_ms: u32,
}

/// The result of evaluating one action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The decision the filter enforces (after audit/warn modes are applied).
    pub decision: Decision,
    /// The strictest decision any matched rule asked for, whatever its mode: what enforce mode would
    /// have done. Equal to `decision` when every matched rule is in enforce mode.
    pub would_be: Decision,
    /// Every rule that matched, in rule-table order (never used to resolve conflicts).
    pub matched: Vec<RuleMatch>,
    /// The rule whose decision is `decision` (the strictest enforced match), or `default`.
    pub deciding_rule: String,
    /// The reason of `deciding_rule`.
    pub reason: String,
    /// Rewrites, from every enforced MODIFY match, when `decision` is MODIFY.
    pub modifications: Vec<Modification>,
    /// Session effects from every enforced match (audit matches record, but do not apply, theirs).
    pub effects: Vec<Effect>,
    /// Set when `decision` is STEP_UP.
    pub step_up: Option<StepUp>,
    /// Set when `decision` is DEFER.
    pub defer: Option<Defer>,
    /// Warnings for the agent from warn-mode matches stricter than ALLOW (`rule: reason`).
    pub warnings: Vec<String>,
    /// Names of the classes the action belongs to (recorded in session history).
    pub classes: Vec<String>,
    /// The highest risk tier among `classes` (`low` when none).
    pub risk: RiskTier,
    /// The intent in force: the session's pinned intent, or for a new session the declared one
    /// when the pack defines it. The filter pins it with `SessionState::record`.
    pub intent: Option<String>,
}

impl Verdict {
    /// This verdict overruled by a check of the filter's own: a DENY by `rule` for `reason`.
    /// Nothing of the decision it replaces is kept (its rewrites, session effects, step-up or
    /// deferral); what it matched, its warnings, classes, risk and intent stay, for the receipt.
    #[must_use]
    pub fn overruled(self, rule: &str, reason: String) -> Self {
        Self {
            decision: Decision::Deny,
            would_be: Decision::Deny,
            deciding_rule: rule.to_owned(),
            reason,
            modifications: Vec::new(),
            effects: Vec::new(),
            step_up: None,
            defer: None,
            ..self
        }
    }
}

/// Risk tier of an action class.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RiskTier {
    /// Low.
    #[default]
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}
