//! Body rewrites for a MODIFY verdict: redact, drop or clamp argument paths, redact secrets.
//!
//! For MCP the paths are inside `params.arguments` of the chosen message; for an HTTP JSON body
//! they start at the body's root. The rewritten body is serialized compactly (object member order
//! kept); when nothing changed the original bytes are returned untouched. Header modifications
//! (`StripHeader`, `SetHeader`) are applied by the filter, not here, and are skipped. `RemoveTools`
//! applies to `tools/list` responses and is a no-op on a request body.

use bundle::verdict::{Modification, PathSegment};
use serde_json::{Number, Value};

use super::{Refusal, json, risk};

fn internal(reason: impl Into<String>) -> Refusal {
    Refusal {
        http_status: 500,
        jsonrpc_code: Some(-32603),
        reason: reason.into(),
        id: None,
    }
}

/// Apply `mods` to message `msg_index` of an MCP POST body (0 for a single message; the element
/// index for a batch). Returns the new body and one human-readable line per change for the
/// receipt (e.g. `redacted arguments.token`, `clamped arguments.limit from 5000 to 100`).
///
/// Refusals (HTTP 500, -32603; the filter then denies): the body no longer parses, `msg_index`
/// does not name a message, or a clamp has bounds that are not finite numbers with `min <= max`.
/// A path that is absent changes nothing and is not reported.
pub fn apply_modifications(
    body: &[u8],
    msg_index: usize,
    mods: &[Modification],
) -> Result<(Vec<u8>, Vec<String>), Refusal> {
    let mut root = json::parse(body, json::HARD_MAX_DEPTH)
        .map_err(|e| internal(format!("cannot rewrite body: {}", e.reason())))?
        .value;
    let msg = match &mut root {
        Value::Array(items) => items.get_mut(msg_index),
        v if msg_index == 0 => Some(v),
        _ => None,
    }
    .ok_or_else(|| internal(format!("no json-rpc message at index {msg_index}")))?;
    let args = msg
        .get_mut("params")
        .and_then(|p| p.get_mut("arguments"))
        .filter(|a| a.is_object());
    let changes = match args {
        Some(a) => apply_to(a, "arguments", mods)?,
        None => {
            check_bounds(mods)?;
            Vec::new()
        }
    };
    finish(body, &root, changes)
}

/// Whether a modification rewrites the request body (the others edit headers, or apply to the
/// response).
pub fn rewrites_body(m: &Modification) -> bool {
    matches!(
        m,
        Modification::RedactArg { .. }
            | Modification::DropArg { .. }
            | Modification::ClampArg { .. }
            | Modification::RedactSecrets
            | Modification::CoerceArg { .. }
    )
}

/// Apply `mods` to a JSON HTTP request body (paths start at the body's root, reported as
/// `body.<path>`). An empty body changes nothing. A body that is not JSON while an argument or
/// secret rewrite is asked for is refused (HTTP 500): the filter cannot make the rewrite, so it
/// must not forward the body unchanged.
pub fn apply_http_modifications(
    body: &[u8],
    mods: &[Modification],
) -> Result<(Vec<u8>, Vec<String>), Refusal> {
    check_bounds(mods)?;
    if body.is_empty() || !mods.iter().any(rewrites_body) {
        return Ok((body.to_vec(), Vec::new()));
    }
    let mut root = json::parse(body, json::HARD_MAX_DEPTH)
        .map_err(|e| internal(format!("cannot rewrite a non-json body: {}", e.reason())))?
        .value;
    let changes = apply_to(&mut root, "body", mods)?;
    finish(body, &root, changes)
}

fn finish(
    original: &[u8],
    root: &Value,
    changes: Vec<String>,
) -> Result<(Vec<u8>, Vec<String>), Refusal> {
    if changes.is_empty() {
        return Ok((original.to_vec(), changes));
    }
    let out = serde_json::to_vec(root).map_err(|e| internal(format!("cannot serialize: {e}")))?;
    Ok((out, changes))
}

fn check_bounds(mods: &[Modification]) -> Result<(), Refusal> {
    for m in mods {
        if let Modification::ClampArg { min, max, .. } = m
            && !(min.is_finite() && max.is_finite() && min <= max)
        {
            return Err(internal("clamp bounds must be finite with min <= max"));
        }
    }
    Ok(())
}

/// Apply the argument rewrites of `mods` (redact / drop / clamp paths, redact secrets) to any JSON
/// value, paths starting at `target`, changes reported under `root_name` (the response path uses
/// it on a tool's `result`). Header and `remove_tools` modifications are ignored.
pub fn apply_to_value(
    target: &mut Value,
    root_name: &str,
    mods: &[Modification],
) -> Result<Vec<String>, Refusal> {
    apply_to(target, root_name, mods)
}

fn apply_to(
    target: &mut Value,
    root_name: &str,
    mods: &[Modification],
) -> Result<Vec<String>, Refusal> {
    check_bounds(mods)?;
    let mut changes = Vec::new();
    for m in mods {
        match m {
            Modification::RedactArg { path } => {
                if let Some(v) = get_mut(target, path) {
                    *v = Value::String(risk::REDACTED.to_owned());
                    changes.push(format!("redacted {}", show(root_name, path)));
                }
            }
            Modification::DropArg { path } => {
                if remove(target, path) {
                    changes.push(format!("dropped {}", show(root_name, path)));
                }
            }
            Modification::ClampArg { path, min, max } => {
                if let Some(v) = get_mut(target, path)
                    && let Some((from, to)) = clamp(v, *min, *max)
                {
                    changes.push(format!(
                        "clamped {} from {from} to {to}",
                        show(root_name, path)
                    ));
                }
            }
            Modification::RedactSecrets => {
                for p in risk::redact_secrets(target) {
                    let rest = p.strip_prefix('$').unwrap_or(&p);
                    changes.push(format!("redacted secret at {root_name}{rest}"));
                }
            }
            // The pack declared the argument's type with `coerce`: the server gets the value the
            // policy judged (`"100"` -> `100`), not the one a lax server would coerce itself.
            Modification::CoerceArg { path, value } => {
                if let Some(v) = get_mut(target, path)
                    && v != value
                {
                    changes.push(format!(
                        "coerced {} from {v} to {value}",
                        show(root_name, path)
                    ));
                    v.clone_from(value);
                }
            }
            Modification::StripHeader { .. }
            | Modification::SetHeader { .. }
            | Modification::RemoveTools { .. }
            | Modification::InjectCredential { .. } => {}
        }
    }
    Ok(changes)
}

fn show(root: &str, path: &[PathSegment]) -> String {
    let mut s = root.to_owned();
    for seg in path {
        match seg {
            PathSegment::Key(k) => risk::push_key(&mut s, k),
            PathSegment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn step_mut<'a>(v: &'a mut Value, seg: &PathSegment) -> Option<&'a mut Value> {
    match (v, seg) {
        (Value::Object(m), PathSegment::Key(k)) => m.get_mut(k),
        (Value::Array(a), PathSegment::Index(i)) => a.get_mut(usize::try_from(*i).ok()?),
        _ => None,
    }
}

fn get_mut<'a>(mut v: &'a mut Value, path: &[PathSegment]) -> Option<&'a mut Value> {
    if path.is_empty() {
        // An empty path would name the whole arguments object: never rewrite that wholesale.
        return None;
    }
    for seg in path {
        v = step_mut(v, seg)?;
    }
    Some(v)
}

fn remove(v: &mut Value, path: &[PathSegment]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let mut parent = v;
    for seg in parent_path {
        match step_mut(parent, seg) {
            Some(p) => parent = p,
            None => return false,
        }
    }
    match (parent, last) {
        (Value::Object(m), PathSegment::Key(k)) => m.shift_remove(k).is_some(),
        (Value::Array(a), PathSegment::Index(i)) => match usize::try_from(*i) {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "only used after checking the value is integral and within i64 range"
)]
fn as_integral_i64(x: f64) -> Option<i64> {
    // 2^63 as f64; every integral f64 strictly inside (-2^63, 2^63) converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (x.fract() == 0.0 && x > -LIMIT && x < LIMIT).then_some(x as i64)
}

/// Clamp a number (or a string holding a number, which lax servers coerce) into `[min, max]`.
/// Returns `(from, to)` as text when the value changed.
fn clamp(v: &mut Value, min: f64, max: f64) -> Option<(String, String)> {
    let (x, is_string) = match v {
        Value::Number(n) => (n.as_f64()?, false),
        Value::String(s) => (
            s.trim().parse::<f64>().ok().filter(|f| f.is_finite())?,
            true,
        ),
        _ => return None,
    };
    let c = x.clamp(min, max);
    if c == x {
        return None;
    }
    let from = match &*v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let was_integer = match &*v {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => from.trim().bytes().all(|b| b.is_ascii_digit() || b == b'-'),
    };
    let num = match (was_integer, as_integral_i64(c)) {
        (true, Some(i)) => Number::from(i),
        _ => Number::from_f64(c)?,
    };
    let to = num.to_string();
    *v = if is_string {
        Value::String(to.clone())
    } else {
        Value::Number(num)
    };
    Some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> PathSegment {
        PathSegment::Key(k.to_owned())
    }

    #[test]
    fn clamp_keeps_integers_and_strings() {
        let mut v = json!(5000);
        assert_eq!(
            clamp(&mut v, 1.0, 100.0),
            Some(("5000".into(), "100".into()))
        );
        assert_eq!(v, json!(100));
        let mut v = json!("5000");
        assert!(clamp(&mut v, 1.0, 100.0).is_some());
        assert_eq!(v, json!("100"));
        let mut v = json!(2.5);
        assert_eq!(clamp(&mut v, 0.0, 1.5), Some(("2.5".into(), "1.5".into())));
        let mut v = json!(50);
        assert_eq!(clamp(&mut v, 1.0, 100.0), None);
        let mut v = json!("abc");
        assert_eq!(clamp(&mut v, 1.0, 100.0), None);
    }

    #[test]
    fn remove_paths() {
        let mut v = json!({"a": [1, 2, 3], "b": {"c": 1}});
        assert!(remove(&mut v, &[key("a"), PathSegment::Index(1)]));
        assert!(remove(&mut v, &[key("b"), key("c")]));
        assert!(!remove(&mut v, &[key("zz")]));
        assert!(!remove(&mut v, &[]));
        assert_eq!(v, json!({"a": [1, 3], "b": {}}));
    }
}
