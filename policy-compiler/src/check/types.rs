//! Static types of fields and literals, and their names in messages.

use crate::ast::{FieldRef, Lit, VType};

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

pub(super) fn field_ty(f: &FieldRef) -> Ty {
    match f.value_type() {
        Some(VType::String) => Ty::Str,
        Some(VType::Number) => Ty::Num,
        Some(VType::Bool) => Ty::Bool,
        // `risk.data_classes`, the one array field, holds strings.
        Some(VType::Array) => Ty::StrSet,
        Some(VType::Object | VType::Null) | None => Ty::Any,
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
