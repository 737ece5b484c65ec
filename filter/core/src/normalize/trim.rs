//! Parameter values as frameworks that trim them read them (docs/filter-normalization.md,
//! "Trimmed values"): Laravel's `TrimStrings` middleware (in every new application's stack)
//! trims every string of the request's input, query and body alike, of white space, NUL, the
//! byte-order mark, the zero-width space and the left-to-right mark; Django's form fields strip
//! white space by default. So `role= admin` or `{"role":"admin\u0000"}` is `admin` to them, and a
//! plain HTTP request whose parameters have such a string is judged with them trimmed too, as one
//! more reading.

use serde_json::Value;

/// Whether a framework that trims strips `c` from the ends of a value: Unicode white space (what
/// Python's `str.strip()` and PCRE's `\s` with `u` strip, the information separators
/// U+001C..U+001F included), NUL (PHP's `trim`), and the invisible U+FEFF, U+200B, U+200E
/// Laravel adds.
fn trims(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\0' | '\u{1c}'..='\u{1f}' | '\u{feff}' | '\u{200b}' | '\u{200e}'
        )
}

/// `v` with every string (at any depth; object keys as written) trimmed as [`trims`] says;
/// `None` when no string changes (the usual request: one look at each string's ends).
pub(crate) fn trimmed(v: &Value) -> Option<Value> {
    if !needs(v) {
        return None;
    }
    let mut out = v.clone();
    trim_in_place(&mut out);
    Some(out)
}

/// The first string of `v` that [`trimmed`] changes, and what it reads as, for reasons.
pub(crate) fn first_untrimmed(v: &Value) -> Option<(&str, &str)> {
    match v {
        Value::String(s) => {
            let t = s.trim_matches(trims);
            (t.len() != s.len()).then_some((s.as_str(), t))
        }
        Value::Array(items) => items.iter().find_map(first_untrimmed),
        Value::Object(m) => m.values().find_map(first_untrimmed),
        _ => None,
    }
}

fn needs(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with(trims) || s.ends_with(trims),
        Value::Array(items) => items.iter().any(needs),
        Value::Object(m) => m.values().any(needs),
        _ => false,
    }
}

fn trim_in_place(v: &mut Value) {
    match v {
        Value::String(s) => {
            let t = s.trim_matches(trims);
            if t.len() != s.len() {
                *s = t.to_owned();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(trim_in_place),
        Value::Object(m) => m.values_mut().for_each(trim_in_place),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_trimmed_as_frameworks_trim_them() {
        assert_eq!(
            trimmed(
                &json!({"role": " admin", "n": 1, "l": ["x\u{0}", "y"], "k": {"a": "\u{feff}b\u{200b}"}})
            ),
            Some(json!({"role": "admin", "n": 1, "l": ["x", "y"], "k": {"a": "b"}}))
        );
        assert_eq!(
            trimmed(&json!({"role": "admin\t\r\n\u{b}\u{1f}\u{3000}"})),
            Some(json!({"role": "admin"}))
        );
        assert_eq!(trimmed(&json!({"role": "admin", " key ": "v"})), None);
        assert_eq!(trimmed(&json!({"text": "a b"})), None);
        assert_eq!(trimmed(&Value::Null), None);
        assert_eq!(
            first_untrimmed(&json!({"a": "x", "b": [" y"]})),
            Some((" y", "y"))
        );
    }
}
