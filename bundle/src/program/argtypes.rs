//! Declared argument types at request time (`docs/policy-language.md`, "Declared argument
//! types"): a `tools/call` whose arguments do not have the types the pack's `tool "x" { ... }`
//! declares is denied (`args:type`), or, for arguments declared with `coerce`, evaluated and
//! forwarded with the value converted (`args:coerce`).

use serde_json::{Number, Value};

use crate::program::builtin;
use crate::program::format::{ArgDef, ToolDef, VType};
use crate::verdict::{Modification, PathSegment};

/// The outcome of checking a call's arguments against its tool's declaration.
#[derive(Debug, PartialEq)]
pub(crate) enum ArgCheck {
    /// Every declared argument that is given has its declared type.
    Ok,
    /// Some arguments were converted; the others have their types. The converted arguments (what
    /// the policy evaluates), and one `coerce_arg` per conversion, in declaration order.
    Coerced(Value, Vec<Modification>),
    /// An argument has another type and cannot be converted: the reason of `args:type`, naming
    /// the first such argument in declaration order. Nothing is converted then.
    Mismatch(String),
}

/// Check `args` (a `tools/call`'s arguments) against `tool`'s declaration.
///
/// For each declared argument, in order: an argument that is absent, or JSON `null`, is not
/// given and is fine. Walking its path, a member that is present but not an object where the
/// declaration needs one (`args.a` for `args.a.b`) is a mismatch of that member, declared
/// `object`. A given value of the declared type is fine; of another type, it is converted when
/// the argument is declared `coerce` and [`convert`] can, and is a mismatch otherwise.
pub(crate) fn check(tool: &ToolDef, args: &Value) -> ArgCheck {
    let mut coerced: Vec<(&ArgDef, Value)> = Vec::new();
    for decl in &tool.args {
        match lookup(args, &decl.path) {
            Found::NotGiven => {}
            Found::NotAnObject(depth, v) => {
                let path = decl.path.get(..depth).unwrap_or(&[]);
                return ArgCheck::Mismatch(builtin::args_type_reason(
                    &tool.name,
                    path,
                    builtin::json_type_phrase(v),
                    VType::Object.name(),
                ));
            }
            Found::Value(v) if type_of(v) == decl.ty => {}
            Found::Value(v) => match convert(v, decl.ty).filter(|_| decl.coerce) {
                Some(c) => coerced.push((decl, c)),
                None => {
                    return ArgCheck::Mismatch(builtin::args_type_reason(
                        &tool.name,
                        &decl.path,
                        builtin::json_type_phrase(v),
                        decl.ty.name(),
                    ));
                }
            },
        }
    }
    if coerced.is_empty() {
        return ArgCheck::Ok;
    }
    let mut out = args.clone();
    let mut mods = Vec::with_capacity(coerced.len());
    for (decl, value) in coerced {
        if let Some(slot) = lookup_mut(&mut out, &decl.path) {
            *slot = value.clone();
        }
        mods.push(Modification::CoerceArg {
            path: decl.path.iter().cloned().map(PathSegment::Key).collect(),
            value,
        });
    }
    ArgCheck::Coerced(out, mods)
}

enum Found<'a> {
    NotGiven,
    /// The member after `depth` keys is present but not an object (nor null).
    NotAnObject(usize, &'a Value),
    Value(&'a Value),
}

fn lookup<'a>(args: &'a Value, path: &[String]) -> Found<'a> {
    let mut cur = args;
    for (depth, key) in path.iter().enumerate() {
        cur = match cur {
            Value::Null => return Found::NotGiven,
            Value::Object(m) => match m.get(key) {
                Some(v) => v,
                None => return Found::NotGiven,
            },
            other => return Found::NotAnObject(depth, other),
        };
    }
    if cur.is_null() {
        Found::NotGiven
    } else {
        Found::Value(cur)
    }
}

fn lookup_mut<'a>(args: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = args;
    for key in path {
        cur = cur.as_object_mut()?.get_mut(key)?;
    }
    Some(cur)
}

fn type_of(v: &Value) -> VType {
    match v {
        Value::Null => VType::Null,
        Value::Bool(_) => VType::Bool,
        Value::Number(_) => VType::Number,
        Value::String(_) => VType::String,
        Value::Array(_) => VType::Array,
        Value::Object(_) => VType::Object,
    }
}

/// The conversions `coerce` makes, and only these:
/// - to `number`: a string that is a JSON number, JSON whitespace around it allowed (`"100"`,
///   `" 2.5 "`, `"-1e3"`; not `"+1"`, `"0x10"`, `"1_000"`, `"NaN"`, or a number out of range);
/// - to `string`: a number (its JSON text, `100` -> `"100"`) or a boolean (`"true"`, `"false"`);
/// - to `bool`: the strings `"true"` and `"false"`.
pub(crate) fn convert(v: &Value, to: VType) -> Option<Value> {
    match (v, to) {
        (Value::String(s), VType::Number) => {
            serde_json::from_str::<Number>(s).ok().map(Value::Number)
        }
        (Value::Number(n), VType::String) => Some(Value::String(n.to_string())),
        (Value::Bool(b), VType::String) => Some(Value::String(b.to_string())),
        (Value::String(s), VType::Bool) => match s.as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(args: &[(&[&str], VType, bool)]) -> ToolDef {
        ToolDef {
            name: "query_db".into(),
            args: args
                .iter()
                .map(|(p, ty, coerce)| ArgDef {
                    path: p.iter().map(|k| (*k).to_owned()).collect(),
                    ty: *ty,
                    coerce: *coerce,
                })
                .collect(),
        }
    }

    #[test]
    fn conversions_are_exactly_the_documented_ones() {
        assert_eq!(convert(&json!("100"), VType::Number), Some(json!(100)));
        assert_eq!(convert(&json!(" 2.5\n"), VType::Number), Some(json!(2.5)));
        assert_eq!(convert(&json!("-1e3"), VType::Number), Some(json!(-1000.0)));
        for bad in ["+1", "0x10", "1_000", "NaN", "", "1e999", "100 rows", "[1]"] {
            assert_eq!(convert(&json!(bad), VType::Number), None, "{bad}");
        }
        assert_eq!(convert(&json!(100), VType::String), Some(json!("100")));
        assert_eq!(convert(&json!(true), VType::String), Some(json!("true")));
        assert_eq!(convert(&json!("false"), VType::Bool), Some(json!(false)));
        assert_eq!(convert(&json!("True"), VType::Bool), None);
        assert_eq!(convert(&json!(1), VType::Bool), None);
        assert_eq!(convert(&json!(true), VType::Number), None);
        assert_eq!(convert(&json!([1]), VType::Array), None);
        assert_eq!(convert(&json!("x"), VType::Object), None);
    }

    #[test]
    fn a_mismatch_names_the_argument_and_both_types() {
        let t = tool(&[(&["limit"], VType::Number, false)]);
        assert_eq!(
            check(&t, &json!({"limit": "100"})),
            ArgCheck::Mismatch(
                "argument `args.limit` of tool `query_db` is a string, but the policy declares it `number`"
                    .into()
            )
        );
        assert_eq!(check(&t, &json!({"limit": 100})), ArgCheck::Ok);
        // Not given: absent, null, or no arguments at all.
        assert_eq!(check(&t, &json!({})), ArgCheck::Ok);
        assert_eq!(check(&t, &json!({"limit": null})), ArgCheck::Ok);
        assert_eq!(check(&t, &Value::Null), ArgCheck::Ok);
    }

    #[test]
    fn a_member_on_the_way_that_is_not_an_object_is_a_mismatch() {
        let t = tool(&[(&["filter", "limit"], VType::Number, true)]);
        assert_eq!(
            check(&t, &json!({"filter": "limit=100"})),
            ArgCheck::Mismatch(
                "argument `args.filter` of tool `query_db` is a string, but the policy declares it `object`"
                    .into()
            )
        );
        assert!(matches!(
            check(&t, &json!([1])),
            ArgCheck::Mismatch(r) if r.starts_with("argument `args` of tool")
        ));
    }

    #[test]
    fn coerce_converts_in_declaration_order_or_not_at_all() {
        let t = tool(&[
            (&["limit"], VType::Number, true),
            (&["verbose"], VType::Bool, true),
            (&["sql"], VType::String, false),
        ]);
        let ArgCheck::Coerced(args, mods) = check(
            &t,
            &json!({"sql": "select 1", "verbose": "true", "limit": "100"}),
        ) else {
            panic!("expected a coercion");
        };
        assert_eq!(
            args,
            json!({"sql": "select 1", "verbose": true, "limit": 100})
        );
        assert_eq!(
            mods,
            vec![
                Modification::CoerceArg {
                    path: vec![PathSegment::Key("limit".into())],
                    value: json!(100)
                },
                Modification::CoerceArg {
                    path: vec![PathSegment::Key("verbose".into())],
                    value: json!(true)
                },
            ]
        );
        // One argument that cannot be converted: a mismatch, and nothing is converted.
        assert!(matches!(
            check(&t, &json!({"limit": "100", "sql": 5})),
            ArgCheck::Mismatch(r) if r.contains("`args.sql`")
        ));
        assert!(matches!(
            check(&t, &json!({"limit": "a hundred"})),
            ArgCheck::Mismatch(r) if r.contains("is a string")
        ));
    }
}
