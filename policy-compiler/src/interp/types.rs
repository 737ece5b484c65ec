//! Declared argument types in the reference interpreter (`docs/policy-language.md`, "Declared
//! argument types"), written independently of the VM's `bundle::argtypes`.

use super::type_of;
use crate::ast::{Item, Policy, ToolSchemaDef, VType};
use bundle::builtin as b;
use bundle::verdict::{Modification, PathSegment};
use serde_json::Value as Json;

/// What checking a call's arguments against its tool's declaration found.
pub(super) enum TypeCheck {
    /// Every declared argument that is given has its type.
    Ok,
    /// The converted arguments, and one `coerce_arg` per conversion in declaration order.
    Coerced(Json, Vec<Modification>),
    /// The reason of `args:type` (the first argument, in declaration order, that has another type
    /// and cannot be converted).
    Mismatch(String),
}

/// The first declaration of a tool.
pub(super) fn find_schema<'p>(policy: &'p Policy, tool: &str) -> Option<&'p ToolSchemaDef> {
    policy.items.iter().find_map(|i| match i {
        Item::ToolSchema(s) if s.tool.node == tool => Some(s),
        _ => None,
    })
}

/// "Declared argument types": an argument that is absent or `null` is not given; on the way to
/// it, a present member that is not an object is a mismatch of that member (declared `object`);
/// a value of another type is converted when the argument coerces and it can be, else it is a
/// mismatch. One mismatch and nothing is converted.
pub(super) fn check_types(schema: &ToolSchemaDef, args: &Json) -> TypeCheck {
    let mut coerced: Vec<(Vec<String>, Json)> = Vec::new();
    for decl in &schema.args {
        let path = &decl.path.node;
        let mut cur = Some(args);
        let mut bad_parent = None;
        for (depth, key) in path.iter().enumerate() {
            cur = match cur {
                Some(Json::Object(m)) => m.get(key),
                Some(Json::Null) | None => None,
                Some(other) => {
                    bad_parent = Some((depth, other));
                    None
                }
            };
        }
        if let Some((depth, v)) = bad_parent {
            return TypeCheck::Mismatch(b::args_type_reason(
                &schema.tool.node,
                path.get(..depth).unwrap_or(&[]),
                b::json_type_phrase(v),
                "object",
            ));
        }
        let Some(v) = cur.filter(|v| !v.is_null()) else {
            continue;
        };
        if type_of(v) == decl.ty {
            continue;
        }
        match convert(v, decl.ty).filter(|_| schema.coerces(decl)) {
            Some(c) => coerced.push((path.clone(), c)),
            None => {
                return TypeCheck::Mismatch(b::args_type_reason(
                    &schema.tool.node,
                    path,
                    b::json_type_phrase(v),
                    decl.ty.name(),
                ));
            }
        }
    }
    if coerced.is_empty() {
        return TypeCheck::Ok;
    }
    let mut out = args.clone();
    let mut mods = Vec::new();
    for (path, value) in coerced {
        let mut slot = Some(&mut out);
        for key in &path {
            slot = slot
                .and_then(|v| v.as_object_mut())
                .and_then(|m| m.get_mut(key));
        }
        if let Some(slot) = slot {
            *slot = value.clone();
        }
        mods.push(Modification::CoerceArg {
            path: path.into_iter().map(PathSegment::Key).collect(),
            value,
        });
    }
    TypeCheck::Coerced(out, mods)
}

/// `coerce`'s conversions: to `number` a string that is a JSON number (JSON whitespace around
/// it allowed); to `string` a number (its JSON text) or a boolean; to `bool` `"true"`/`"false"`.
fn convert(v: &Json, to: VType) -> Option<Json> {
    match (v, to) {
        (Json::String(s), VType::Number) => s.parse::<Json>().ok().filter(Json::is_number),
        (Json::Number(n), VType::String) => Some(Json::String(n.to_string())),
        (Json::Bool(b), VType::String) => {
            Some(Json::String(if *b { "true" } else { "false" }.to_owned()))
        }
        (Json::String(s), VType::Bool) if s == "true" => Some(Json::Bool(true)),
        (Json::String(s), VType::Bool) if s == "false" => Some(Json::Bool(false)),
        _ => None,
    }
}
