//! Static types of fields and literals, and their names in messages.

use crate::ast::{CmpOp, Field, Literal, ValueType};

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

pub(super) fn lit_ty(l: &Literal) -> Ty {
    match l {
        Literal::Str(_) => Ty::Str,
        Literal::Num(_) => Ty::Num,
        Literal::Bool(_) => Ty::Bool,
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

pub(super) fn vt_to_ty(t: ValueType) -> Option<Ty> {
    match t {
        ValueType::String => Some(Ty::Str),
        ValueType::Number => Some(Ty::Num),
        ValueType::Bool => Some(Ty::Bool),
        _ => None,
    }
}

pub(super) fn vt_word(t: ValueType) -> &'static str {
    match t {
        ValueType::String => "string",
        ValueType::Number => "number",
        ValueType::Bool => "bool",
        ValueType::Array => "array",
        ValueType::Object => "object",
        ValueType::Null => "null",
    }
}

pub(super) fn op_text(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}
