//! Which request an answer answers, as clients read it. JSON-RPC ids match exactly on the wire,
//! but the SDKs agents run correlate looser: the TypeScript SDK looks an answer up by
//! `Number(response.id)`, the Python SDK by `int(id)` for a string id (`coerce_request_id`, "to
//! match the TS SDK"). So a server that answers request `1` with id `"1"`, `" 1"`, `"0x1"`,
//! `"1.0"`, `1.0` or `"0_1"` reaches the agent as the answer to request 1. The filter ties an
//! answer to every request a client would: exactly first, then by those readings, so the answer
//! is checked as what it answers (a list filtered, a result judged) and never passes as an
//! unknown one.

use serde_json::Value;

/// The largest integer both readings agree on (JavaScript's safe integers).
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// The request ids a client may read `id` as: its JavaScript `Number()` reading and its Python
/// `int()` reading, where each is an integer. Empty for ids no client reads as a number.
pub(super) fn readings(id: &Value) -> Vec<i64> {
    let mut out = Vec::new();
    let mut add = |n: Option<i64>| {
        if let Some(n) = n
            && !out.contains(&n)
        {
            out.push(n);
        }
    };
    match id {
        Value::Number(n) => add(n.as_i64().or_else(|| n.as_f64().and_then(integral))),
        Value::String(s) => {
            add(js_number(s).and_then(integral));
            add(python_int(s));
        }
        // Python reads `true` as 1 when it looks the id up (`True == 1`).
        Value::Bool(b) => add(Some(i64::from(*b))),
        _ => {}
    }
    out
}

fn integral(f: f64) -> Option<i64> {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "checked: integral and within the safe range"
    )]
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE).then_some(f as i64)
}

/// Whitespace JavaScript's `Number()` trims (WhiteSpace and LineTerminator).
fn js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// JavaScript's `Number(s)` for a string (ECMAScript StringToNumber), `None` for NaN.
fn js_number(s: &str) -> Option<f64> {
    let t = s.trim_matches(js_space);
    if t.is_empty() {
        return Some(0.0);
    }
    let radix = |digits: &str, r: u32| u64::from_str_radix(digits, r).ok().map(|v| v as f64);
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return radix(h, 16);
    }
    if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        return radix(o, 8);
    }
    if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        return radix(b, 2);
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned == "Infinity" {
        return None; // not an integer id either way
    }
    // StrDecimalLiteral: digits, `.`, an exponent; Rust's parser also takes `inf` and `nan`,
    // which JavaScript does not.
    let decimal = !unsigned.is_empty()
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && unsigned.bytes().any(|b| b.is_ascii_digit());
    if !decimal {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Python's `int(s)`: surrounding whitespace, a sign, decimal digits with single `_` between
/// them. ASCII and fullwidth digits (Python also takes other scripts' digits; an id in those is
/// matched by no SDK test and is left to the exact reading).
fn python_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let mut value: i64 = 0;
    let mut seen = false;
    let mut prev_underscore = false;
    for c in digits.chars() {
        let d = match c {
            '0'..='9' => u32::from(c).wrapping_sub(u32::from('0')),
            '\u{ff10}'..='\u{ff19}' => u32::from(c).wrapping_sub(0xff10),
            '_' if seen && !prev_underscore => {
                prev_underscore = true;
                continue;
            }
            _ => return None,
        };
        prev_underscore = false;
        seen = true;
        value = value.checked_mul(10)?.checked_add(i64::from(d))?;
    }
    if !seen || prev_underscore {
        return None;
    }
    Some(if neg { value.checked_neg()? } else { value })
}

#[cfg(test)]
mod tests {
    use super::readings;
    use serde_json::json;

    #[test]
    fn ids_read_as_the_sdks_read_them() {
        for (id, want) in [
            (json!(1), vec![1]),
            (json!(1.0), vec![1]),
            (json!(1e0), vec![1]),
            (json!("1"), vec![1]),
            (json!(" 1\n"), vec![1]),
            (json!("\u{a0}1"), vec![1]),
            (json!("+1"), vec![1]),
            (json!("1.0"), vec![1]),
            (json!("1e0"), vec![1]),
            (json!("0x1"), vec![1]),
            (json!("0b1"), vec![1]),
            (json!("0o1"), vec![1]),
            (json!("0_1"), vec![1]),
            (json!("\u{ff11}"), vec![1]),
            (json!(true), vec![1]),
            (json!(""), vec![0]),
            (json!("0x10"), vec![16]),
            (json!("1_0"), vec![10]),
        ] {
            assert_eq!(readings(&id), want, "{id}");
        }
        for id in [
            json!("abc"),
            json!("1.5"),
            json!(1.5),
            json!("inf"),
            json!("Infinity"),
            json!("nan"),
            json!("1__0"),
            json!("_1"),
            json!(null),
            json!([1]),
            json!({"id": 1}),
            json!("9007199254740993"),
        ] {
            // The last one: Python reads it exactly, JavaScript rounds it; both are kept apart
            // from ids within the safe range only by Python's reading.
            let r = readings(&id);
            if id == json!("9007199254740993") {
                assert_eq!(r, vec![9_007_199_254_740_993]);
            } else {
                assert!(r.is_empty(), "{id}: {r:?}");
            }
        }
    }
}
