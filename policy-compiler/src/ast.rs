//! The policy language's abstract syntax tree: the pivot between the parser (`syntax`), the checker
//! (`check`), the formatter (`fmt`), the reference interpreter (`interp`) and code generation
//! (`lower` / `codegen`). Every node that a diagnostic can point at carries a [`Span`].
//!
//! The grammar is in `docs/policy-language.md` and at the top of `syntax.rs`.
//!
//! The leaves of the tree (fields, roles, operators, literals, value types, argument paths,
//! session effects) are the bundle's own types, re-exported here: one definition, with its source
//! name, read by the parser, checker, formatter, interpreter and code generator alike, so lowering
//! copies them as they are. The AST adds only what the bundle has no use for: spans
//! ([`Spanned`]), unresolved names (classes, lists) and [`ModSpec`], the modifications a policy
//! can write.

use bundle::verdict::{Decision, Mode, Modification, RiskTier};

pub use bundle::format::{CmpOp, EffectDef, FieldRef, Lit, Role, VType};
/// A step in an argument path: `args.a.b[0]["odd key"]`.
pub use bundle::verdict::PathSegment;

/// A byte range in one source file, with the 1-based line and column of its start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
    /// 1-based line of `start`.
    pub line: u32,
    /// 1-based column (in characters) of `start`.
    pub col: u32,
}

/// An identifier or string with where it was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    /// The value.
    pub node: T,
    /// Where it was written.
    pub span: Span,
}

/// One policy file (a pack).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The `pack` header.
    pub pack: Pack,
    /// Named lists (`let NAME = [...]`), classes, intents, tool schemas and rules, in source order.
    pub items: Vec<Item>,
}

/// `pack "name" { version "..." mode M default D "reason" unknown_session D "reason" }`
#[derive(Clone, Debug, PartialEq)]
pub struct Pack {
    /// The pack's name.
    pub name: Spanned<String>,
    /// The pack's version string (recorded in the bundle and every receipt).
    pub version: Spanned<String>,
    /// Mode of rules that do not name one, and of the default decision.
    pub mode: Mode,
    /// Decision when no enforce/warn rule matched (DENY when omitted).
    pub default: DecisionSpec,
    /// Decision for an action whose session state is missing (DENY when omitted).
    pub unknown_session: DecisionSpec,
    /// `mcp_protocol N`: the version of the built-in `mcp_protocol` list the pack is pinned to
    /// (`bundle::protocol`); the newest when omitted.
    pub mcp_protocol: Option<Spanned<u16>>,
    /// `intent_source header`: the agent's own `x-portcullis-intent` header may declare the
    /// intent (only task grants and JWT claims may otherwise).
    pub intent_header: bool,
    /// `session_key required`: a request that belongs to no session is an unknown session.
    pub require_session_key: bool,
    /// Where the header was written.
    pub span: Span,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `let NAME = ["a", "b*"]`: a named list of strings (or numbers) usable with `in` / `glob`.
    List(ListDef),
    /// `class NAME risk TIER [readonly] { when EXPR }`.
    Class(ClassDef),
    /// `intent NAME { ... }`.
    Intent(IntentDef),
    /// `tool "NAME" { args.PATH: TYPE, ... }`: the declared argument schema of a tool.
    ToolSchema(ToolSchemaDef),
    /// `rule NAME [mode M] { when EXPR  DECISION  [then EFFECTS] }`.
    Rule(RuleDef),
}

/// A named list.
#[derive(Clone, Debug, PartialEq)]
pub struct ListDef {
    /// Its name.
    pub name: Spanned<String>,
    /// Its elements.
    pub values: Vec<Spanned<Lit>>,
    /// The whole definition.
    pub span: Span,
}

/// A named action class with a risk tier.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassDef {
    /// Its name.
    pub name: Spanned<String>,
    /// Its risk tier.
    pub risk: RiskTier,
    /// Actions in a `readonly` class stay allowed after a session is dropped to read-only.
    pub readonly: bool,
    /// Which actions belong to it.
    pub when: Expr,
    /// The whole definition.
    pub span: Span,
}

/// A task scope pinned at session start.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentDef {
    /// Its name (what the agent declares).
    pub name: Spanned<String>,
    /// Human description (also used by drift scoring).
    pub description: Option<Spanned<String>>,
    /// Classes in scope.
    pub classes: Vec<Spanned<String>>,
    /// Tools in scope (globs).
    pub tools: Vec<Spanned<String>>,
    /// HTTP hosts in scope (globs).
    pub hosts: Vec<Spanned<String>>,
    /// Data scopes in scope (data classes the intent may touch).
    pub data_scopes: Vec<Spanned<String>>,
    /// Stop conditions.
    pub limits: IntentLimits,
    /// Decision for an action outside this intent (DENY when omitted).
    pub outside: DecisionSpec,
    /// The whole definition.
    pub span: Span,
}

/// Stop conditions of an intent; reaching one denies with rule `stop:<what>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntentLimits {
    /// `max actions N`.
    pub max_actions: Option<u32>,
    /// `max egress_bytes N` (accepts `10MB`, `512KiB`, ...).
    pub max_egress_bytes: Option<u64>,
    /// `max duration 30m` in milliseconds.
    pub max_duration_ms: Option<u64>,
    /// `max approvals N`.
    pub max_approvals: Option<u32>,
}

/// A tool's declared argument schema, checked by the compiler against the rules that pin the
/// tool and by the VM on every call of the tool (`args:type`, `args:coerce`).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSchemaDef {
    /// The tool name.
    pub tool: Spanned<String>,
    /// `tool "x" coerce { ... }`: every argument is declared `coerce`.
    pub coerce: bool,
    /// Declared arguments, in source order.
    pub args: Vec<ArgDecl>,
    /// The whole definition.
    pub span: Span,
}

/// `args.PATH: TYPE [coerce]` in a tool schema.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgDecl {
    /// The argument path as object keys (`args.a["b c"]` is `["a", "b c"]`).
    pub path: Spanned<Vec<String>>,
    /// The declared type.
    pub ty: VType,
    /// `coerce` written after this argument's type.
    pub coerce: bool,
}

impl ToolSchemaDef {
    /// Whether an argument is converted to its declared type (its own `coerce`, or the tool's).
    pub fn coerces(&self, arg: &ArgDecl) -> bool {
        self.coerce || arg.coerce
    }
}

/// A rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDef {
    /// Its name (unique in the pack; recorded in receipts).
    pub name: Spanned<String>,
    /// Its mode, when it overrides the pack's.
    pub mode: Option<Mode>,
    /// When it matches.
    pub when: Expr,
    /// What it decides.
    pub decision: DecisionSpec,
    /// Session effects applied when it matches (and is not in audit mode).
    pub effects: Vec<Spanned<EffectDef>>,
    /// The whole definition.
    pub span: Span,
}

/// A decision with its reason and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionSpec {
    /// Which decision.
    pub decision: Decision,
    /// The human reason.
    pub reason: String,
    /// For MODIFY: the rewrites.
    pub modifications: Vec<Spanned<ModSpec>>,
    /// For STEP_UP: approver group and validity (seconds).
    pub step_up: Option<(String, u32)>,
    /// For DEFER: context service name and timeout (milliseconds).
    pub defer: Option<(String, u32)>,
    /// Where it was written.
    pub span: Span,
}

/// One rewrite of a MODIFY decision, as the language writes it: the subset of
/// [`Modification`] a policy can name, in the parser's terms (see [`ModSpec::to_modification`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ModSpec {
    /// `redact args.PATH`
    Redact(Vec<PathSegment>),
    /// `drop args.PATH`
    Drop(Vec<PathSegment>),
    /// `clamp args.PATH MIN..MAX`
    Clamp(Vec<PathSegment>, f64, f64),
    /// `redact_secrets`
    RedactSecrets,
    /// `strip_header "name"`
    StripHeader(String),
    /// `set_header "name" "value"`
    SetHeader(String, String),
    /// `remove_tools ["glob", ...]`
    RemoveTools(Vec<String>),
    /// `inject credential "NAME"`
    InjectCredential(String),
}

impl ModSpec {
    /// The rewrite the VM and the interpreter apply (a [`Modification`]; the language writes all
    /// of them but `coerce_arg`, which only the built-in `args:coerce` check emits).
    pub fn to_modification(&self) -> Modification {
        match self {
            ModSpec::Redact(p) => Modification::RedactArg { path: p.clone() },
            ModSpec::Drop(p) => Modification::DropArg { path: p.clone() },
            ModSpec::Clamp(p, lo, hi) => Modification::ClampArg {
                path: p.clone(),
                min: *lo,
                max: *hi,
            },
            ModSpec::RedactSecrets => Modification::RedactSecrets,
            ModSpec::StripHeader(h) => Modification::StripHeader { name: h.clone() },
            ModSpec::SetHeader(h, v) => Modification::SetHeader {
                name: h.clone(),
                value: v.clone(),
            },
            ModSpec::RemoveTools(p) => Modification::RemoveTools {
                patterns: p.clone(),
            },
            ModSpec::InjectCredential(n) => Modification::InjectCredential { name: n.clone() },
        }
    }
}

/// What `session.count(...)` counts.
#[derive(Clone, Debug, PartialEq)]
pub enum CountSubject {
    /// `tool "name"` (any subject: tool, prompt, resource or host)
    Subject(String),
    /// `class NAME`
    Class(String),
}

/// A set operand: inline `["a", "b"]` or a named list.
#[derive(Clone, Debug, PartialEq)]
pub enum SetRef {
    /// Inline elements.
    Inline(Vec<Spanned<Lit>>),
    /// `NAME` of a `let` list.
    Named(Spanned<String>),
}

/// A boolean expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `true` / `false`
    Const(bool),
    /// `a and b`
    And(Box<Expr>, Box<Expr>),
    /// `a or b`
    Or(Box<Expr>, Box<Expr>),
    /// `not a`
    Not(Box<Expr>),
    /// `FIELD OP LITERAL` (strings compare by equality only; numbers by all six).
    Cmp(Spanned<FieldRef>, CmpOp, Spanned<Lit>),
    /// `FIELD in SET` (exact membership).
    In(Spanned<FieldRef>, SetRef),
    /// `FIELD glob "pat"` or `FIELD glob SET` (`*` any run, `?` one char; any pattern matches).
    Glob(Spanned<FieldRef>, SetRef),
    /// `FIELD prefix "p"` or `FIELD prefix SET` (starts with any).
    Prefix(Spanned<FieldRef>, SetRef),
    /// `FIELD matches "regex"` (whole-value match, compiled to a DFA; size-limited).
    Matches(Spanned<FieldRef>, Spanned<String>),
    /// `FIELD is TYPE` (argument type tests; `exists` is `FIELD is present`).
    IsType(Spanned<FieldRef>, VType),
    /// `FIELD present` (the field or argument exists and is not null).
    Present(Spanned<FieldRef>),
    /// `len(FIELD) OP N` (string length in characters, array length, object member count).
    Len(Spanned<FieldRef>, CmpOp, f64),
    /// `risk.data_classes contains "pii"` / `FIELD contains "x"` for arrays of strings.
    Contains(Spanned<FieldRef>, Spanned<String>),
    /// `class NAME` (the action is in that class)
    InClass(Spanned<String>),
    /// `session.tainted("name")`
    Tainted(Spanned<String>),
    /// `session.used("subject")`
    Used(Spanned<String>),
    /// `session.seen(CLASS)`
    Seen(Spanned<String>),
    /// `session.count(tool "x" | class c, within DURATION) OP N`
    Count(Spanned<CountSubject>, u64, CmpOp, u32),
    /// `intent.outside` (the action is outside the pinned intent; false when no intent)
    OutsideIntent,
    /// `principal.tainted("name")`: a session of the acting principal carries the taint
    PrincipalTainted(Spanned<String>),
    /// `principal.quarantined`: the acting principal is quarantined (either extent)
    Quarantined,
}
