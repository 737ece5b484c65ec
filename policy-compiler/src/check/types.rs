//! Static types of fields and literals, and their names in messages.

use crate::ast::{Field, Lit, VType};

/// The static type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Str,
    Num,
    Bool,
    StrSet,
    /// An argument: whatever the JSON holds (or the schema says).
    Any,
}

pub(super) fn field_ty(f: &Field) -> Ty {
    match f {
        Field::Port
        | Field::RequestSize
        | Field::SessionActions
        | Field::SessionEgressBytes
        | Field::SessionApprovals
        | Field::SessionElapsed
        | Field::SessionDrift => Ty::Num,
        Field::RiskSecrets => Ty::Bool,
        Field::RiskDataClasses => Ty::StrSet,
        Field::Arg(_) => Ty::Any,
        _ => Ty::Str,
    }
}

pub(super) fn lit_ty(l: &Lit) -> Ty {
    match l {
        Lit::Str(_) => Ty::Str,
        Lit::Num(_) => Ty::Num,
        Lit::Bool(_) => Ty::Bool,
    }
}

pub(super) fn ty_word(t: Ty) -> &'static str {
    match t {
        Ty::Str => "a string",
        Ty::Num => "a number",
        Ty::Bool => "a boolean",
        Ty::StrSet => "a set of strings",
        Ty::Any => "a value",
    }
}

pub(super) fn vt_to_ty(t: VType) -> Option<Ty> {
    match t {
        VType::String => Some(Ty::Str),
        VType::Number => Some(Ty::Num),
        VType::Bool => Some(Ty::Bool),
        _ => None,
    }
}
