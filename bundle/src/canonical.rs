//! Canonical JSON: the one byte form that receipts and approval tokens are hashed and signed in.
//!
//! The rules (also in `docs/receipts.md`, "Canonical form"):
//! - no insignificant whitespace: `{"a":1,"b":[true,null]}`;
//! - object members sorted by key, comparing the keys' UTF-8 bytes; duplicate keys cannot occur
//!   (a parsed object keeps one value per key);
//! - numbers: integers only, written in decimal without sign for non-negative values, without
//!   leading zeros, exponent or fraction (`0`, `-12`, `18446744073709551615`). A non-integer is an
//!   error in [`Numbers::IntegersOnly`] mode (receipts, approval payloads);
//!   [`Numbers::AllowFloats`] (only used for the action digest, which is never re-computed outside
//!   Rust) writes it as `serde_json` does (shortest round-trip form, e.g. `1.5`, `1e20`);
//! - strings: UTF-8, wrapped in `"`; `"` -> `\"`, `\` -> `\\`, U+0008 -> `\b`, U+0009 -> `\t`,
//!   U+000A -> `\n`, U+000C -> `\f`, U+000D -> `\r`, every other code point below U+0020 ->
//!   `\u00xx` with lowercase hex; every other character is written as itself (no `\u` escapes for
//!   non-ASCII, no escaping of `/`).
//!
//! This is exactly what Python writes with
//! `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` for values without
//! floats, so a SOC can re-implement verification in a few lines.

use serde_json::Value;

/// Whether non-integer numbers may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Numbers {
    /// Refuse any number that is not an integer (receipts, approval tokens).
    IntegersOnly,
    /// Write non-integers in `serde_json`'s shortest round-trip form (action digests).
    AllowFloats,
}

/// A value has no canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A number with a fraction or exponent appeared where only integers are allowed.
    #[error("a non-integer number has no canonical form")]
    Float,
}

/// The canonical bytes of `v` (integers only).
pub fn to_canonical(v: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_value(&mut out, v, Numbers::IntegersOnly)?;
    Ok(out)
}

/// The canonical bytes of `v` in the given number mode.
#[cfg(test)]
pub(crate) fn to_canonical_with(v: &Value, numbers: Numbers) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_value(&mut out, v, numbers)?;
    Ok(out)
}

/// Append the canonical form of `v`.
pub(crate) fn write_value(
    out: &mut String,
    v: &Value,
    numbers: Numbers,
) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if numbers == Numbers::AllowFloats {
                out.push_str(&n.to_string());
            } else {
                return Err(CanonicalError::Float);
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, numbers)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item, numbers)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Write `s` as a canonical JSON string (see the module rules).
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len().saturating_add(2));
    out.push('"');
    // Copy runs of characters that need no escape in one go.
    let mut start = 0usize;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            0x08 => Some("\\b"),
            b'\t' => Some("\\t"),
            b'\n' => Some("\\n"),
            0x0c => Some("\\f"),
            b'\r' => Some("\\r"),
            0..=0x1f => Some(""),
            _ => None,
        };
        let Some(esc) = esc else { continue };
        // INVARIANT: `i` is at an ASCII byte, so both slice ends are char boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            out.push_str("\\u00");
            for nibble in [b.wrapping_shr(4), b & 0xf] {
                let d = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
                out.push(char::from(d));
            }
        } else {
            out.push_str(esc);
        }
        start = i.saturating_add(1);
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "test arithmetic on small constants"
)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, -2, {"z":null,"a":true}], "a": "x" }"#).unwrap();
        assert_eq!(
            to_canonical(&v).unwrap(),
            r#"{"a":"x","b":[1,-2,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn escapes_strings_one_way() {
        let v = json!("q\"b\\s/\u{8}\t\n\u{c}\r\u{1}\u{1f}é😀\u{7f}");
        assert_eq!(
            to_canonical(&v).unwrap(),
            "\"q\\\"b\\\\s/\\b\\t\\n\\f\\r\\u0001\\u001fé😀\u{7f}\""
        );
    }

    #[test]
    fn sorts_by_utf8_bytes() {
        let v = json!({"é": 1, "z": 2, "Z": 3, "a": 4});
        assert_eq!(to_canonical(&v).unwrap(), r#"{"Z":3,"a":4,"z":2,"é":1}"#);
    }

    #[test]
    fn refuses_floats_unless_allowed() {
        let v = json!({"x": 1.5});
        assert_eq!(to_canonical(&v), Err(CanonicalError::Float));
        assert_eq!(
            to_canonical_with(&v, Numbers::AllowFloats).unwrap(),
            r#"{"x":1.5}"#
        );
        let big = json!([u64::MAX, i64::MIN]);
        assert_eq!(
            to_canonical(&big).unwrap(),
            "[18446744073709551615,-9223372036854775808]"
        );
    }
}
