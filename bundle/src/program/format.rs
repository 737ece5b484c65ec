//! The bundle file format: constants and the in-memory program model that `policyc` fills in.
//! The encoder is [`crate::encode()`], the decoder (with every check) is in `verify`; both read
//! the wire tags from one table (`wire`). The byte layout is documented in
//! `docs/bundle-format.md`.
//!
//! Layout of a bundle (all integers little-endian):
//! ```text
//! magic "PCLB" | version u16 | reserved u16 (0) | content_hash [32] = SHA-256(body)
//! | sig_tag u8 (0 none, 1 ed25519) [ key_id_len u8 | key_id | signature [64] ]
//! | body_len u32 | body
//! ```
//! The body is a sequence of sections: strings, pack, matchers, classes, intents, rules, and (from
//! version 2) tool argument declarations. Version 3 adds the pack flags (`intent_source`,
//! `session_key`) and the principal fields, predicates and `quarantine` effect. Version 4 adds
//! the fields `tool.changed` and `tool.shadowed` and an optional last section: tool pins from a
//! reviewed catalogue (`policyc pin`). Version 5 adds the `inject_credential` modification.

use crate::action::{Action, Kind};
use crate::session::Quarantine;
use crate::verdict::{Decision, Defer, Effect, Mode, Modification, PathSegment, RiskTier, StepUp};

/// The four magic bytes at the start of every bundle.
pub const MAGIC: [u8; 4] = *b"PCLB";
/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 5;
/// The oldest format version this build reads. A version-1 bundle is evaluated exactly as a
/// version-1 build did: a type error in a test is false, there are no argument declarations.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// Domain separation prefix of the bundle signature.
pub const SIGNATURE_DOMAIN: &[u8] = b"portcullis/bundle/v1\0";
/// Bytes before the signature block: magic, version, reserved, content hash.
pub const HEADER_LEN: usize = 40;

/// `names! { Type { Variant = "name", ... } }`: the policy language's name of each variant, from
/// one line per variant: `ALL` (every variant, in this order), `name()` and `from_name()`. With
/// `unnamed { Variant(_), ... }` (variants that carry their name), the list is `NAMED` and
/// `name()` returns an `Option`.
macro_rules! names {
    (@list $ty:ident $list:ident $doc:literal { $($v:ident $(($($tp:tt)*))? = $name:literal),+ }) => {
        impl $ty {
            #[doc = $doc]
            pub const $list: &'static [$ty] = &[$($ty::$v $(($($tp)*))?),+];
            /// The value the policy language writes as `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($ty::$v $(($($tp)*))?),)+
                    _ => None,
                }
            }
        }
    };
    ($ty:ident { $($v:ident $(($($tp:tt)*))? = $name:literal),+ $(,)? }) => {
        names!(@list $ty ALL "Every value, in the order the language lists them."
            { $($v $(($($tp)*))? = $name),+ });
        impl $ty {
            /// How the policy language writes this value.
            pub fn name(&self) -> &'static str {
                match self {
                    $($ty::$v $(($($tp)*))? => $name,)+
                }
            }
        }
    };
    ($ty:ident { $($v:ident $(($($tp:tt)*))? = $name:literal),+ $(,)? }
        unnamed { $($u:ident $(($($up:tt)*))?),+ $(,)? }) => {
        names!(@list $ty NAMED "Every value with a fixed name, in the order the language lists them."
            { $($v $(($($tp)*))? = $name),+ });
        impl $ty {
            /// How the policy language writes this value, when it has a fixed name.
            pub fn name(&self) -> Option<&'static str> {
                match self {
                    $($ty::$v $(($($tp)*))? => Some($name),)+
                    $($ty::$u $(($($up)*))? => None,)+
                }
            }
        }
    };
}

/// A whole compiled policy: what the encoder writes and the decoder returns (after verification).
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Pack name.
    pub pack: String,
    /// Pack version string.
    pub version: String,
    /// The pack's mode (default for rules, and the mode of `default` / `unknown_session` /
    /// `intent:*` matches).
    pub mode: Mode,
    /// The pack's default decision.
    pub default: DecisionDef,
    /// Decision for a missing session.
    pub unknown_session: DecisionDef,
    /// The version of the built-in `mcp_protocol` list ([`crate::protocol`]) the pack was
    /// compiled with, when it uses the class (its members are in the class's code).
    pub mcp_protocol: Option<u16>,
    /// `intent_source header`: the agent's own `x-portcullis-intent` header may declare the
    /// intent (otherwise only a task grant or a JWT claim may; format version 3).
    pub intent_header: bool,
    /// `session_key required`: a request that belongs to no session (no key, no run) is decided
    /// as an unknown session (format version 3).
    pub require_session_key: bool,
    /// Precompiled matchers, referred to by index from instructions.
    pub matchers: Vec<MatcherDef>,
    /// Classes in source order.
    pub classes: Vec<ClassDef>,
    /// Intents in source order.
    pub intents: Vec<IntentDef>,
    /// Rules in source order (the table order of matches).
    pub rules: Vec<RuleDef>,
    /// Declared argument types of tools (`tool "x" { args.a: number }`), sorted by tool name,
    /// names unique.
    pub tools: Vec<ToolDef>,
    /// Tool definitions pinned from a reviewed catalogue (`policyc pin`; format version 4),
    /// sorted by (server, name), unique.
    pub tool_pins: Vec<ToolPin>,
}

/// One pinned tool definition: the SHA-256 of its canonical definition (`docs/filter.md`,
/// "Tool pins", says what it covers) as the named MCP server offers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolPin {
    /// The MCP server's name (`target.server`).
    pub server: String,
    /// The tool's name.
    pub name: String,
    /// SHA-256 of the tool's canonical definition.
    pub digest: [u8; 32],
}

/// A tool's declared argument types, checked on every `tools/call` of that tool.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    /// The tool name.
    pub name: String,
    /// Declared arguments, in declaration order.
    pub args: Vec<ArgDef>,
}

/// One declared argument.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgDef {
    /// Object keys from the arguments' root (`args.a.b` is `["a", "b"]`).
    pub path: Vec<String>,
    /// The declared JSON type.
    pub ty: VType,
    /// A value of another type is converted to `ty` when it can be (`coerce`), instead of
    /// denying the action.
    pub coerce: bool,
}

/// A decision with its reason and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionDef {
    /// Which decision.
    pub decision: Decision,
    /// The human reason.
    pub reason: String,
    /// MODIFY rewrites.
    pub modifications: Vec<Modification>,
    /// STEP_UP parameters.
    pub step_up: Option<StepUp>,
    /// DEFER parameters.
    pub defer: Option<Defer>,
}

/// A class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassDef {
    /// Name.
    pub name: String,
    /// Risk tier.
    pub risk: RiskTier,
    /// Whether actions in it stay allowed in a read-only session.
    pub readonly: bool,
    /// Condition code.
    pub code: Vec<Instr>,
}

/// An intent.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentDef {
    /// Name.
    pub name: String,
    /// Classes in scope (indices into [`Program::classes`]).
    pub classes: Vec<u32>,
    /// Tool globs in scope.
    pub tools: Vec<String>,
    /// Host globs in scope.
    pub hosts: Vec<String>,
    /// Data classes in scope (empty: not restricted).
    pub data: Vec<String>,
    /// `max actions`.
    pub max_actions: Option<u32>,
    /// `max egress_bytes`.
    pub max_egress_bytes: Option<u64>,
    /// `max duration` in ms.
    pub max_duration_ms: Option<u64>,
    /// `max approvals`.
    pub max_approvals: Option<u32>,
    /// Decision for an acting action outside the intent.
    pub outside: DecisionDef,
}

/// A rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDef {
    /// Name.
    pub name: String,
    /// Mode (already resolved against the pack's).
    pub mode: Mode,
    /// Decision.
    pub decision: DecisionDef,
    /// Effects.
    pub effects: Vec<EffectDef>,
    /// What the condition pins (for the rule index).
    pub pins: Pins,
    /// Condition code.
    pub code: Vec<Instr>,
}

/// A session effect as written in the policy (`then ...`); the VM turns it into a
/// [`crate::verdict::Effect`] (`revoke tool` alone names the matched action's tool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectDef {
    /// `taint "name"`
    Taint(String),
    /// `revoke tool "name"` (or `revoke tool` alone: the matched action's tool).
    RevokeTool(Option<String>),
    /// `revoke class NAME`
    RevokeClass(String),
    /// `revoke tool ["name"] principal` (format version 3).
    RevokePrincipalTool(Option<String>),
    /// `revoke class NAME principal` (format version 3).
    RevokePrincipalClass(String),
    /// `read_only`
    ReadOnly,
    /// `kill`
    Kill,
    /// `quarantine` / `quarantine read_only` (format version 3).
    Quarantine(Quarantine),
}

impl EffectDef {
    /// The change to the session this effect makes when its rule matches `action`.
    pub fn effect(&self, action: &Action) -> Effect {
        match self {
            EffectDef::Taint(t) => Effect::Taint(t.clone()),
            EffectDef::RevokeTool(Some(t)) => Effect::RevokeTool(t.clone()),
            EffectDef::RevokeTool(None) => Effect::RevokeTool(action.subject().to_owned()),
            EffectDef::RevokeClass(c) => Effect::RevokeClass(c.clone()),
            EffectDef::RevokePrincipalTool(Some(t)) => Effect::RevokePrincipalTool(t.clone()),
            EffectDef::RevokePrincipalTool(None) => {
                Effect::RevokePrincipalTool(action.subject().to_owned())
            }
            EffectDef::RevokePrincipalClass(c) => Effect::RevokePrincipalClass(c.clone()),
            EffectDef::ReadOnly => Effect::ReadOnly,
            EffectDef::Kill => Effect::Kill,
            EffectDef::Quarantine(q) => Effect::Quarantine(*q),
        }
    }
}

/// Values a rule's condition requires (each is a conjunct of the top-level `and` chain), used
/// only to index rules. Empty lists pin nothing. The compiler guarantees soundness: a rule can only
/// match an action whose kind / operation / tool / host is in the pinned list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// Required kind.
    pub kind: Option<Kind>,
    /// One of these operations.
    pub operations: Vec<String>,
    /// One of these tools.
    pub tools: Vec<String>,
    /// One of these hosts.
    pub hosts: Vec<String>,
}

/// Where an instruction continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jump {
    /// To the instruction with this index (always a later one).
    To(u16),
    /// The condition holds.
    Accept,
    /// The condition does not hold.
    Reject,
}

/// One instruction: test a predicate, continue at `on_true` or `on_false`. Conditions are
/// compiled to forward-only control flow, so a condition runs at most `code.len()` instructions.
///
/// A test can also be *unknown* (a type error: `args.limit > 20` on the string `"100"`). Where
/// it goes then depends on the evaluation and on `negated` (see `docs/bundle-format.md`,
/// "Unknown tests").
#[derive(Clone, Debug, PartialEq)]
pub struct Instr {
    /// The test.
    pub pred: Pred,
    /// The test sits under an odd number of `not` in the source condition (`on_true` is the
    /// branch where the *written* condition is false).
    pub negated: bool,
    /// Continuation when it holds.
    pub on_true: Jump,
    /// Continuation when it does not.
    pub on_false: Jump,
}

/// Comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

names! { CmpOp {
    Eq = "==",
    Ne = "!=",
    Lt = "<",
    Le = "<=",
    Gt = ">",
    Ge = ">=",
}}

impl CmpOp {
    /// Whether `a OP b` holds (for numbers, IEEE comparison: nothing holds of NaN but `!=`).
    pub fn holds<T: PartialOrd + ?Sized>(self, a: &T, b: &T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// JSON value type (`is` tests, declared argument types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VType {
    /// string
    String,
    /// number
    Number,
    /// bool
    Bool,
    /// array
    Array,
    /// object
    Object,
    /// null
    Null,
}

names! { VType {
    String = "string",
    Number = "number",
    Bool = "bool",
    Array = "array",
    Object = "object",
    Null = "null",
}}

/// A literal operand (also the policy language's literal values).
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    /// `"text"`
    Str(String),
    /// `42`, `-1.5`, `10MB` (bytes), `30s` (milliseconds)
    Num(f64),
    /// `true` / `false`
    Bool(bool),
}

/// Which principal of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// agent
    Agent,
    /// human
    Human,
    /// workload
    Workload,
}

names! { Role {
    Agent = "agent",
    Human = "human",
    Workload = "workload",
}}

/// Something an expression can read from the action or the session.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldRef {
    /// `kind`: "mcp" | "http" (compare with bare `mcp` / `http` or strings).
    Kind,
    /// `operation`
    Operation,
    /// `tool`
    Tool,
    /// `resource`
    Resource,
    /// `prompt`
    Prompt,
    /// `target.host`
    Host,
    /// `target.port`
    Port,
    /// `target.path`
    Path,
    /// `target.query`
    Query,
    /// `target.scheme`
    Scheme,
    /// `target.server`
    Server,
    /// `identity.agent` / `identity.human` / `identity.workload`
    Principal(Role),
    /// `identity.agent_auth` / `identity.human_auth` / `identity.workload_auth`
    PrincipalAuth(Role),
    /// `header.NAME` or `header["name"]` (first value; lowercase name)
    Header(String),
    /// `args.PATH`
    Arg(Vec<PathSegment>),
    /// `request.size`
    RequestSize,
    /// `risk.secrets` (bool)
    RiskSecrets,
    /// `risk.data_classes` (set; use with `contains`)
    RiskDataClasses,
    /// `session.id`
    SessionId,
    /// `trace.id`
    TraceId,
    /// `intent` (the session's pinned intent name, "" when none)
    Intent,
    /// `session.actions`
    SessionActions,
    /// `session.egress_bytes`
    SessionEgressBytes,
    /// `session.approvals`
    SessionApprovals,
    /// `session.elapsed` (milliseconds; compare with durations like `30m`)
    SessionElapsed,
    /// `session.drift`
    SessionDrift,
    /// `principal.id` ("" when there is none; format version 3 and later for the `principal.*`
    /// fields and predicates)
    PrincipalId,
    /// `principal.sessions`
    PrincipalSessions,
    /// `principal.denials`
    PrincipalDenials,
    /// `tool.changed` (bool; format version 4 and later for the `tool.*` flags)
    ToolChanged,
    /// `tool.shadowed` (bool)
    ToolShadowed,
}

names! { FieldRef {
    Kind = "kind",
    Operation = "operation",
    Tool = "tool",
    Resource = "resource",
    Prompt = "prompt",
    Host = "target.host",
    Port = "target.port",
    Path = "target.path",
    Query = "target.query",
    Scheme = "target.scheme",
    Server = "target.server",
    Principal(Role::Agent) = "identity.agent",
    Principal(Role::Human) = "identity.human",
    Principal(Role::Workload) = "identity.workload",
    PrincipalAuth(Role::Agent) = "identity.agent_auth",
    PrincipalAuth(Role::Human) = "identity.human_auth",
    PrincipalAuth(Role::Workload) = "identity.workload_auth",
    RequestSize = "request.size",
    RiskSecrets = "risk.secrets",
    RiskDataClasses = "risk.data_classes",
    SessionId = "session.id",
    TraceId = "trace.id",
    Intent = "intent",
    SessionActions = "session.actions",
    SessionEgressBytes = "session.egress_bytes",
    SessionApprovals = "session.approvals",
    SessionElapsed = "session.elapsed",
    SessionDrift = "session.drift",
    PrincipalId = "principal.id",
    PrincipalSessions = "principal.sessions",
    PrincipalDenials = "principal.denials",
    ToolChanged = "tool.changed",
    ToolShadowed = "tool.shadowed",
} unnamed {
    Header(_),
    Arg(_),
}}

impl FieldRef {
    /// The JSON type the field reads as (`risk.data_classes` is an array of strings), or `None`
    /// for an argument, which is whatever the action's JSON holds.
    pub fn value_type(&self) -> Option<VType> {
        match self {
            FieldRef::Kind
            | FieldRef::Operation
            | FieldRef::Tool
            | FieldRef::Resource
            | FieldRef::Prompt
            | FieldRef::Host
            | FieldRef::Path
            | FieldRef::Query
            | FieldRef::Scheme
            | FieldRef::Server
            | FieldRef::Principal(_)
            | FieldRef::PrincipalAuth(_)
            | FieldRef::Header(_)
            | FieldRef::SessionId
            | FieldRef::TraceId
            | FieldRef::Intent
            | FieldRef::PrincipalId => Some(VType::String),
            FieldRef::Port
            | FieldRef::RequestSize
            | FieldRef::SessionActions
            | FieldRef::SessionEgressBytes
            | FieldRef::SessionApprovals
            | FieldRef::SessionElapsed
            | FieldRef::SessionDrift
            | FieldRef::PrincipalSessions
            | FieldRef::PrincipalDenials => Some(VType::Number),
            FieldRef::RiskSecrets | FieldRef::ToolChanged | FieldRef::ToolShadowed => {
                Some(VType::Bool)
            }
            FieldRef::RiskDataClasses => Some(VType::Array),
            FieldRef::Arg(_) => None,
        }
    }
}

/// A predicate.
#[derive(Clone, Debug, PartialEq)]
pub enum Pred {
    /// Constant.
    Const(bool),
    /// `field OP literal`.
    Cmp(FieldRef, CmpOp, Lit),
    /// `field in SET` (matcher must be a [`MatcherDef::Set`]).
    In(FieldRef, u32),
    /// `field glob ...` (matcher must be [`MatcherDef::Globs`]).
    Glob(FieldRef, u32),
    /// `field prefix ...` (matcher must be [`MatcherDef::Prefixes`]).
    Prefix(FieldRef, u32),
    /// `field matches "re"` (matcher must be [`MatcherDef::Regex`]).
    Matches(FieldRef, u32),
    /// `field is TYPE`.
    Is(FieldRef, VType),
    /// `field present`.
    Present(FieldRef),
    /// `len(field) OP n`.
    Len(FieldRef, CmpOp, f64),
    /// `field contains "s"`.
    Contains(FieldRef, String),
    /// `class NAME` (index into classes).
    InClass(u32),
    /// `session.tainted(..)` with the name hash.
    Tainted(u64),
    /// `session.used(..)` with the name hash.
    Used(u64),
    /// `session.seen(CLASS)` with the class name hash.
    Seen(u64),
    /// `session.count(tool "x", within W) OP n`.
    CountSubject(u64, u64, CmpOp, u32),
    /// `session.count(class c, within W) OP n`.
    CountClass(u64, u64, CmpOp, u32),
    /// `intent.outside`.
    OutsideIntent,
    /// `principal.tainted(..)` with the name hash.
    PrincipalTainted(u64),
    /// `principal.quarantined`.
    Quarantined,
}

/// A precompiled matcher.
#[derive(Clone, Debug, PartialEq)]
pub enum MatcherDef {
    /// Exact membership: strings sorted ascending and unique, numbers, booleans.
    Set {
        /// Strings (sorted, unique).
        strs: Vec<String>,
        /// Numbers.
        nums: Vec<f64>,
        /// Booleans.
        bools: Vec<bool>,
    },
    /// Any of these globs (`*`, `?`).
    Globs(Vec<String>),
    /// Starts with any of these (sorted, unique).
    Prefixes(Vec<String>),
    /// Whole-value regex: the source (for display) and a dense DFA serialized little-endian.
    Regex {
        /// The source pattern.
        pattern: String,
        /// `regex_automata::dfa::dense::DFA::to_bytes_little_endian` of an anchored DFA of
        /// `(?:pattern)\z`.
        dfa: Vec<u8>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name reads back as the value that has it, and no two values share a name.
    #[test]
    fn names_round_trip() {
        for f in FieldRef::NAMED {
            let name = f.name().unwrap_or_default();
            assert_eq!(FieldRef::from_name(name).as_ref(), Some(f), "{name}");
        }
        assert_eq!(FieldRef::NAMED.len(), 33);
        assert_eq!(FieldRef::Header("x".into()).name(), None);
        for op in CmpOp::ALL {
            assert_eq!(CmpOp::from_name(op.name()), Some(*op));
        }
        for t in VType::ALL {
            assert_eq!(VType::from_name(t.name()), Some(*t));
        }
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(*r));
        }
    }
}
