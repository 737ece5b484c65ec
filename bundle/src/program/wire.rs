//! The wire tags of the bundle format: one append-only table for each enum the format stores,
//! read by both the encoder ([`crate::encode()`]) and the verifier.
//!
//! Contract:
//! - each tag is written here and nowhere else; [`Wire::tag`] and [`Wire::from_tag`] are generated
//!   from the same line, so they cannot disagree;
//! - a table only grows: a new variant takes a new tag, an old tag never changes meaning (the
//!   goldens in `testdata/bundles/` keep loading);
//! - [`Wire::from_tag`] reports a tag it does not know as `None` (the verifier turns it into
//!   "unknown ... tag N"); it never indexes.
//!
//! A variant with a payload (a header name, an argument path) decodes to a *template* with an
//! empty payload; the verifier reads the payload that follows the tag into it.

use crate::action::Kind;
use crate::program::format::{CmpOp, EffectDef, FieldRef, Lit, MatcherDef, Role, VType};
use crate::session::Quarantine;
use crate::verdict::{Decision, Mode, Modification, PathSegment, RiskTier};

/// An enum with a wire table.
pub(crate) trait Wire: Sized {
    /// What the verifier calls this table in an "unknown ... tag" error.
    const WHAT: &'static str;
    /// The tag of this value.
    fn tag(&self) -> u8;
    /// The value (with an empty payload) of a tag, or `None` for a tag this build does not know.
    fn from_tag(tag: u8) -> Option<Self>;
}

/// `wire_table! { Type as "what" { Variant = tag, Variant(pattern) = tag => template, ... } }`:
/// one line per variant. A variant written without a template is its own template (a unit
/// variant, or one whose pattern is also an expression, like `Principal(Role::Agent)`).
macro_rules! wire_table {
    (@template [$($pat:tt)+] $tmpl:expr) => { $tmpl };
    (@template [$($pat:tt)+]) => { $($pat)+ };
    ($ty:ty as $what:literal {
        $($v:ident $(($($tp:tt)*))? $({$($sp:tt)*})? = $tag:literal $(=> $tmpl:expr)?),+ $(,)?
    }) => {
        impl Wire for $ty {
            const WHAT: &'static str = $what;
            fn tag(&self) -> u8 {
                match self {
                    $(Self::$v $(($($tp)*))? $({$($sp)*})? => $tag,)+
                }
            }
            fn from_tag(tag: u8) -> Option<Self> {
                match tag {
                    $($tag => Some(wire_table!(
                        @template [Self::$v $(($($tp)*))? $({$($sp)*})?] $($tmpl)?
                    )),)+
                    _ => None,
                }
            }
        }
    };
}

wire_table! { FieldRef as "field" {
    Kind = 1,
    Operation = 2,
    Tool = 3,
    Resource = 4,
    Prompt = 5,
    Host = 6,
    Port = 7,
    Path = 8,
    Query = 9,
    Scheme = 10,
    Server = 11,
    Principal(Role::Agent) = 12,
    Principal(Role::Human) = 13,
    Principal(Role::Workload) = 14,
    PrincipalAuth(Role::Agent) = 15,
    PrincipalAuth(Role::Human) = 16,
    PrincipalAuth(Role::Workload) = 17,
    Header(_) = 18 => FieldRef::Header(String::new()),
    Arg(_) = 19 => FieldRef::Arg(Vec::new()),
    RequestSize = 20,
    RiskSecrets = 21,
    RiskDataClasses = 22,
    SessionId = 23,
    TraceId = 24,
    Intent = 25,
    SessionActions = 26,
    SessionEgressBytes = 27,
    SessionApprovals = 28,
    SessionElapsed = 29,
    SessionDrift = 30,
    PrincipalId = 31,
    PrincipalSessions = 32,
    PrincipalDenials = 33,
    // Format version 4 and later.
    ToolChanged = 34,
    ToolShadowed = 35,
}}

wire_table! { CmpOp as "comparison" {
    Eq = 0,
    Ne = 1,
    Lt = 2,
    Le = 3,
    Gt = 4,
    Ge = 5,
}}

wire_table! { VType as "value type" {
    String = 0,
    Number = 1,
    Bool = 2,
    Array = 3,
    Object = 4,
    Null = 5,
}}

wire_table! { Lit as "literal" {
    Str(_) = 0 => Lit::Str(String::new()),
    Num(_) = 1 => Lit::Num(0.0),
    Bool(_) = 2 => Lit::Bool(false),
}}

wire_table! { PathSegment as "path segment" {
    Key(_) = 0 => PathSegment::Key(String::new()),
    Index(_) = 1 => PathSegment::Index(0),
}}

wire_table! { Decision as "decision" {
    Allow = 0,
    Modify = 1,
    Defer = 2,
    StepUp = 3,
    Deny = 4,
}}

wire_table! { Mode as "mode" {
    Audit = 0,
    Warn = 1,
    Enforce = 2,
}}

wire_table! { RiskTier as "risk tier" {
    Low = 0,
    Medium = 1,
    High = 2,
    Critical = 3,
}}

// A rule's pinned kind: 0 pins none.
wire_table! { Option<Kind> as "kind" {
    None = 0,
    Some(Kind::Mcp) = 1,
    Some(Kind::Http) = 2,
}}

wire_table! { Modification as "modification" {
    RedactArg { .. } = 1 => Modification::RedactArg { path: Vec::new() },
    DropArg { .. } = 2 => Modification::DropArg { path: Vec::new() },
    ClampArg { .. } = 3 => Modification::ClampArg { path: Vec::new(), min: 0.0, max: 0.0 },
    RedactSecrets = 4,
    StripHeader { .. } = 5 => Modification::StripHeader { name: String::new() },
    SetHeader { .. } = 6 => Modification::SetHeader { name: String::new(), value: String::new() },
    RemoveTools { .. } = 7 => Modification::RemoveTools { patterns: Vec::new() },
    // Format version 2 and later.
    CoerceArg { .. } = 8 => Modification::CoerceArg { path: Vec::new(), value: serde_json::Value::Null },
    // Format version 5 and later.
    InjectCredential { .. } = 9 => Modification::InjectCredential { name: String::new() },
}}

wire_table! { EffectDef as "effect" {
    Taint(_) = 1 => EffectDef::Taint(String::new()),
    RevokeTool(_) = 2 => EffectDef::RevokeTool(None),
    RevokeClass(_) = 3 => EffectDef::RevokeClass(String::new()),
    ReadOnly = 4,
    Kill = 5,
    // Format version 3 and later; the quarantine's extent is the next byte.
    Quarantine(_) = 6 => EffectDef::Quarantine(Quarantine::Full),
    RevokePrincipalTool(_) = 7 => EffectDef::RevokePrincipalTool(None),
    RevokePrincipalClass(_) = 8 => EffectDef::RevokePrincipalClass(String::new()),
}}

wire_table! { MatcherDef as "matcher" {
    Set { .. } = 1 => MatcherDef::Set { strs: Vec::new(), nums: Vec::new(), bools: Vec::new() },
    Globs(_) = 2 => MatcherDef::Globs(Vec::new()),
    Prefixes(_) = 3 => MatcherDef::Prefixes(Vec::new()),
    Regex { .. } = 4 => MatcherDef::Regex { pattern: String::new(), dfa: Vec::new() },
}}

/// Opcodes: the first byte of an instruction, one for each [`crate::format::Pred`] variant.
pub(crate) mod op {
    use crate::program::format::Pred;

    pub const CONST: u8 = 0x01;
    pub const CMP: u8 = 0x02;
    pub const IN: u8 = 0x03;
    pub const GLOB: u8 = 0x04;
    pub const PREFIX: u8 = 0x05;
    pub const MATCHES: u8 = 0x06;
    pub const IS: u8 = 0x07;
    pub const PRESENT: u8 = 0x08;
    pub const LEN: u8 = 0x09;
    pub const CONTAINS: u8 = 0x0A;
    pub const IN_CLASS: u8 = 0x0B;
    pub const TAINTED: u8 = 0x0C;
    pub const USED: u8 = 0x0D;
    pub const SEEN: u8 = 0x0E;
    pub const COUNT_SUBJECT: u8 = 0x0F;
    pub const COUNT_CLASS: u8 = 0x10;
    pub const OUTSIDE_INTENT: u8 = 0x11;
    pub const PRINCIPAL_TAINTED: u8 = 0x12;
    pub const QUARANTINED: u8 = 0x13;
    /// Flag bit of the opcode byte (version 2): the instruction is negated
    /// ([`crate::format::Instr`]).
    pub const NEGATED: u8 = 0x80;

    /// The opcode of a predicate.
    pub fn of(p: &Pred) -> u8 {
        match p {
            Pred::Const(_) => CONST,
            Pred::Cmp(..) => CMP,
            Pred::In(..) => IN,
            Pred::Glob(..) => GLOB,
            Pred::Prefix(..) => PREFIX,
            Pred::Matches(..) => MATCHES,
            Pred::Is(..) => IS,
            Pred::Present(_) => PRESENT,
            Pred::Len(..) => LEN,
            Pred::Contains(..) => CONTAINS,
            Pred::InClass(_) => IN_CLASS,
            Pred::Tainted(_) => TAINTED,
            Pred::Used(_) => USED,
            Pred::Seen(_) => SEEN,
            Pred::CountSubject(..) => COUNT_SUBJECT,
            Pred::CountClass(..) => COUNT_CLASS,
            Pred::OutsideIntent => OUTSIDE_INTENT,
            Pred::PrincipalTainted(_) => PRINCIPAL_TAINTED,
            Pred::Quarantined => QUARANTINED,
        }
    }
}

/// Jump encodings: `0..=0xFFFD` an instruction index, then these two terminals.
pub(crate) const JUMP_ACCEPT: u16 = 0xFFFF;
/// See [`JUMP_ACCEPT`].
pub(crate) const JUMP_REJECT: u16 = 0xFFFE;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tag a table knows decodes to a value that encodes back to that tag, so the two
    /// directions of each table agree (and no two variants share a tag).
    fn round_trips<T: Wire>() -> usize {
        (0..=u8::MAX)
            .filter(|&t| {
                T::from_tag(t).is_some_and(|v| {
                    assert_eq!(v.tag(), t, "{} tag {t}", T::WHAT);
                    true
                })
            })
            .count()
    }

    #[test]
    fn every_table_round_trips() {
        assert_eq!(round_trips::<FieldRef>(), 35);
        assert_eq!(round_trips::<CmpOp>(), 6);
        assert_eq!(round_trips::<VType>(), 6);
        assert_eq!(round_trips::<Lit>(), 3);
        assert_eq!(round_trips::<PathSegment>(), 2);
        assert_eq!(round_trips::<Decision>(), 5);
        assert_eq!(round_trips::<Mode>(), 3);
        assert_eq!(round_trips::<RiskTier>(), 4);
        assert_eq!(round_trips::<Option<Kind>>(), 3);
        assert_eq!(round_trips::<Modification>(), 9);
        assert_eq!(round_trips::<EffectDef>(), 8);
        assert_eq!(round_trips::<MatcherDef>(), 4);
    }
}
