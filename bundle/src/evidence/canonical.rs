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

/// How many leading bytes of `b` a JSON string carries as they are: the length of the longest
/// prefix without `"`, `\\` or a control byte (below 0x20). Both the canonical writer and the
/// filter's JSON parser spend most of their time here on large arguments, so it tests eight bytes
/// at a time (SWAR) and only looks at single bytes near the first special one.
pub fn json_plain_len(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Exact "some byte of v is zero" test (the classic haszero; no false positives as a whole).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut n = 0usize;
    for chunk in b.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w);
        // A byte below 0x20: x & 0xe0 is zero in that byte. Then `"` (0x22) and `\` (0x5c).
        let special = has_zero(x & 0xe0e0_e0e0_e0e0_e0e0)
            || has_zero(x ^ (ONES.wrapping_mul(0x22)))
            || has_zero(x ^ (ONES.wrapping_mul(0x5c)));
        if special {
            break;
        }
        n = n.saturating_add(8);
    }
    let rest = b.get(n..).unwrap_or_default();
    n.saturating_add(
        rest.iter()
            .take_while(|&&c| c >= 0x20 && c != b'"' && c != b'\\')
            .count(),
    )
}

/// Write `s` as a canonical JSON string (see the module rules).
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len().saturating_add(2));
    out.push('"');
    let mut rest = s;
    loop {
        // Copy the run that needs no escape in one go. INVARIANT: `plain` is the end or the index
        // of an ASCII byte, so the split is on a char boundary.
        let plain = json_plain_len(rest.as_bytes());
        let (run, tail) = rest.split_at_checked(plain).unwrap_or((rest, ""));
        out.push_str(run);
        let Some(&b) = tail.as_bytes().first() else {
            break;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x0c => out.push_str("\\f"),
            b'\r' => out.push_str("\\r"),
            _ => {
                out.push_str("\\u00");
                for nibble in [b.wrapping_shr(4), b & 0xf] {
                    let d = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
                    out.push(char::from(d));
                }
            }
        }
        rest = tail.get(1..).unwrap_or_default();
    }
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

    /// The byte-at-a-time definition of [`json_plain_len`].
    fn plain_len_reference(b: &[u8]) -> usize {
        b.iter()
            .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
            .unwrap_or(b.len())
    }

    #[test]
    fn plain_len_finds_each_special_byte_at_each_offset() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for len in 0..20 {
                for at in 0..len {
                    let mut b = vec![b'a'; len];
                    b[at] = special;
                    assert_eq!(json_plain_len(&b), at, "byte {special:#x} at {at} of {len}");
                }
            }
        }
        // Neighbours of the special values, and UTF-8 bytes, are plain.
        let plain: Vec<u8> =
            [0x20u8, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff].repeat(3);
        assert_eq!(json_plain_len(&plain), plain.len());
    }

    proptest::proptest! {
        #[test]
        fn plain_len_agrees_with_the_reference(b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            proptest::prop_assert_eq!(json_plain_len(&b), plain_len_reference(&b));
        }

        #[test]
        fn strings_round_trip_through_a_json_parser(s in "\\PC*|[\\x00-\\x7f]{0,40}") {
            let mut out = String::new();
            write_string(&mut out, &s);
            let back: String = serde_json::from_str(&out).unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }
}
