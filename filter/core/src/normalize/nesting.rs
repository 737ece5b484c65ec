//! Form and query field names that servers read as nested parameters
//! (docs/filter-normalization.md, "Nested field names").
//!
//! The filter reads a form or query field by its name as written: `user[role]=admin` is the
//! argument `"user[role]"`. Most server frameworks read such a name as a path into nested
//! parameters instead, each by its own rules (its dialect):
//! - **brackets** (`qs`, the parser of Express's `req.query` and of body-parser's `urlencoded`
//!   with `extended`; Rack, so Rails and Sinatra): `user[role]` is `user.role`, `tags[]` adds to
//!   the array `tags`, and a name that starts with a bracket is named by it (`[role]` is `role`);
//! - **PHP** (`$_GET`, `$_POST`, `$_REQUEST`): the same brackets, but a name ends at a NUL,
//!   leading spaces of a name are dropped, a space or `.` before the first bracket reads as `_` (`user.role` is `user_role`),
//!   an unclosed first bracket reads as `_` too (`user[role` is `user_role`), and a name that
//!   starts with a bracket is dropped;
//! - **dots** (ASP.NET Core's and Spring's model binding, `qs` with `allowDots`): `user.role` and
//!   `user[role]` are both `user.role`.
//!
//! So a pack reading `args.user.role` or `args.role` judges the fields each way too, as readings
//! (the strictest verdict decides). A later field replaces an earlier one at the same place, as
//! PHP does; numeric indexes are keys (`items[0]` is `items."0"`, as Rack reads it). Past
//! [`MAX_DEPTH`] levels the rest of a name is one key, as `qs` does past its own depth.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// The deepest a field name nests (PHP allows 64, Rack 32, `qs` 5 by default).
pub(crate) const MAX_DEPTH: usize = 32;

/// One server family's reading of field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `qs` and Rack.
    Brackets,
    /// PHP.
    Php,
    /// ASP.NET Core and Spring model binding.
    Dots,
}

impl Dialect {
    /// Every dialect, in the order readings are built.
    pub(crate) const ALL: [Dialect; 3] = [Dialect::Brackets, Dialect::Php, Dialect::Dots];

    /// Where the field `name` goes: the key it names, then each key or `[]` below it. `None` when
    /// this dialect drops the field.
    fn path(self, name: &str) -> Option<Vec<Step<'_>>> {
        match self {
            Dialect::Brackets => Some(brackets(name)),
            Dialect::Php => php(name),
            Dialect::Dots => Some(dots(name)),
        }
    }
}

/// One level of a field's place.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step<'a> {
    /// A member of an object.
    Key(Cow<'a, str>),
    /// The next element of an array (`[]`).
    Append,
}

/// Whether some dialect may read the field `name` as other than its name as written: it has a
/// bracket, a `.`, a space or a NUL. The usual name has none, so most requests pay one scan of
/// each.
pub(crate) fn may_nest(name: &str) -> bool {
    name.bytes().any(|b| matches!(b, b'[' | b'.' | b' ' | 0))
}

/// `fields` (names as written, each a string or, for a `[]` name, an array) as `dialect` reads
/// them.
pub(crate) fn nest(fields: &Map<String, Value>, dialect: Dialect) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in fields {
        let Some(path) = dialect.path(name) else {
            continue;
        };
        match path.split_first() {
            Some((Step::Key(first), rest)) => {
                let slot = out.entry(first.as_ref()).or_insert(Value::Null);
                place(slot, rest, value);
            }
            // A name that is only `[]`: no dialect names a parameter by it, keep it as written.
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    out
}

/// The first field name of `fields` that some dialect reads as another place, and that place,
/// written as a path (`user[role]` -> `user.role`), for reasons.
pub(crate) fn first_nested(fields: &Map<String, Value>) -> Option<(&str, String)> {
    fields.keys().filter(|k| may_nest(k)).find_map(|name| {
        Dialect::ALL.iter().find_map(|d| match d.path(name) {
            Some(path) if path == [Step::Key(Cow::Borrowed(name.as_str()))] => None,
            Some(path) => Some((name.as_str(), show(&path))),
            None => Some((name.as_str(), "nothing (the field is dropped)".to_owned())),
        })
    })
}

/// The top-level names some dialect gives the field `name` (beside `name` itself): what a
/// rewrite of an argument must not find in a query it cannot rewrite.
pub(crate) fn top_names(name: &str) -> Vec<String> {
    if !may_nest(name) {
        return Vec::new();
    }
    Dialect::ALL
        .iter()
        .filter_map(|d| match d.path(name)?.into_iter().next()? {
            Step::Key(k) => Some(k.into_owned()),
            Step::Append => None,
        })
        .collect()
}

/// Put `value` at `path` below `slot`, making the objects and arrays on the way (replacing what
/// was there when it is not one).
fn place(slot: &mut Value, path: &[Step<'_>], value: &Value) {
    let Some((step, rest)) = path.split_first() else {
        *slot = value.clone();
        return;
    };
    match step {
        Step::Key(k) => {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(m) = slot {
                place(m.entry(k.as_ref()).or_insert(Value::Null), rest, value);
            }
        }
        Step::Append => {
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            if let Value::Array(items) = slot {
                match (rest.is_empty(), value) {
                    // `tags[]` collected its values into an array (`form.rs`): each is an element.
                    (true, Value::Array(values)) => items.extend(values.iter().cloned()),
                    (true, v) => items.push(v.clone()),
                    (false, _) => {
                        items.push(Value::Null);
                        if let Some(last) = items.last_mut() {
                            place(last, rest, value);
                        }
                    }
                }
            }
        }
    }
}

/// A path written as the policy reads it (`a.b`), an element added to an array as `[+]`
/// (`tags[+]`), for reasons.
fn show(path: &[Step<'_>]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Append => s.push_str("[+]"),
        }
    }
    s
}

/// The next `[...]` with no bracket inside at or after `from`: its `[` and `]` offsets.
fn segment(name: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = name.as_bytes();
    let mut open = None;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        match b {
            b'[' => open = Some(i),
            b']' => {
                if let Some(o) = open {
                    return Some((o, i));
                }
            }
            _ => {}
        }
    }
    None
}

/// The key a bracket's content names: `[]` appends.
fn step(content: &str) -> Step<'_> {
    if content.is_empty() {
        Step::Append
    } else {
        Step::Key(Cow::Borrowed(content))
    }
}

/// `qs` and Rack: the name before the first `[...]` (or, when that is empty, the first
/// bracket's content), then each `[...]`; text between or after them is ignored.
fn brackets(name: &str) -> Vec<Step<'_>> {
    let Some((open, close)) = segment(name, 0) else {
        return vec![Step::Key(Cow::Borrowed(name))];
    };
    let mut path = Vec::new();
    let parent = name.get(..open).unwrap_or_default();
    if !parent.is_empty() {
        path.push(Step::Key(Cow::Borrowed(parent)));
    }
    let mut next = Some((open, close));
    while let Some((o, c)) = next {
        if path.len() > MAX_DEPTH {
            path.push(Step::Key(Cow::Borrowed(name.get(o..).unwrap_or_default())));
            break;
        }
        path.push(step(name.get(o.saturating_add(1)..c).unwrap_or_default()));
        next = segment(name, c.saturating_add(1));
    }
    path
}

/// PHP's `php_register_variable_ex`: the name ends at a NUL (a C string: `role%00x` is `role`);
/// leading spaces dropped; before the first `[`, a space or
/// `.` is `_`; an empty name drops the field; each `[...]` (up to the next `]`, brackets inside
/// included) follows while the next character is `[`; an unclosed first `[` is `_`, and so is
/// each space, `.` or `[` after it.
fn php(name: &str) -> Option<Vec<Step<'_>>> {
    let name = name.split('\0').next().unwrap_or_default();
    let name = name.trim_start_matches(' ');
    let open = name.find('[');
    let base_end = open.unwrap_or(name.len());
    let mangle = |s: &str, also: &[char]| -> String {
        s.chars()
            .map(|c| {
                if c == ' ' || c == '.' || also.contains(&c) {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    let base = mangle(name.get(..base_end).unwrap_or_default(), &[]);
    if base.is_empty() {
        return None;
    }
    let Some(mut at) = open else {
        return Some(vec![Step::Key(Cow::Owned(base))]);
    };
    let mut path = vec![Step::Key(Cow::Owned(base.clone()))];
    loop {
        let inner = at.saturating_add(1);
        let rest = name.get(inner..).unwrap_or_default();
        let Some(len) = rest.find(']') else {
            if path.len() == 1 {
                // Not an index: the `[` is part of the name, read as `_`.
                return Some(vec![Step::Key(Cow::Owned(format!(
                    "{base}_{}",
                    mangle(rest, &['['])
                )))]);
            }
            break;
        };
        path.push(step(rest.get(..len).unwrap_or_default()));
        at = inner.saturating_add(len).saturating_add(1);
        if !name.get(at..).unwrap_or_default().starts_with('[') || path.len() > MAX_DEPTH {
            break;
        }
    }
    Some(path)
}

/// ASP.NET Core and Spring: `.` and `[...]` both open a level (`a.b[c].d`). A name these binders
/// do not read as a path (an empty part, an unclosed bracket, text right after a `]`) is kept.
fn dots(name: &str) -> Vec<Step<'_>> {
    let literal = || vec![Step::Key(Cow::Borrowed(name))];
    // A key: up to the next `.`, `[` or `]`, never empty.
    let key = |s: &str| -> Option<usize> {
        let end = s.find(['.', '[', ']']).unwrap_or(s.len());
        (end > 0).then_some(end)
    };
    let Some(end) = key(name) else {
        return literal();
    };
    let mut path = vec![Step::Key(Cow::Borrowed(
        name.get(..end).unwrap_or_default(),
    ))];
    let mut rest = name.get(end..).unwrap_or_default();
    while !rest.is_empty() {
        if path.len() > MAX_DEPTH {
            path.push(Step::Key(Cow::Borrowed(rest)));
            break;
        }
        if let Some(after) = rest.strip_prefix('.') {
            let Some(end) = key(after) else {
                return literal();
            };
            path.push(Step::Key(Cow::Borrowed(
                after.get(..end).unwrap_or_default(),
            )));
            rest = after.get(end..).unwrap_or_default();
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(close) = after.find(']') else {
                return literal();
            };
            path.push(step(after.get(..close).unwrap_or_default()));
            rest = after.get(close.saturating_add(1)..).unwrap_or_default();
        } else {
            return literal();
        }
    }
    path
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "test indexing on known shapes")]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(fields: Value, d: Dialect) -> Value {
        let Value::Object(m) = fields else {
            panic!("fields are an object")
        };
        Value::Object(nest(&m, d))
    }

    fn shown(name: &str, d: Dialect) -> Option<String> {
        d.path(name).map(|p| show(&p))
    }

    #[test]
    fn brackets_read_as_qs_and_rack() {
        let d = Dialect::Brackets;
        assert_eq!(shown("user[role]", d).as_deref(), Some("user.role"));
        assert_eq!(shown("a[b][c]", d).as_deref(), Some("a.b.c"));
        assert_eq!(shown("[role]", d).as_deref(), Some("role"));
        assert_eq!(shown("tags[]", d).as_deref(), Some("tags[+]"));
        assert_eq!(shown("a[b]x[c]", d).as_deref(), Some("a.b.c"));
        assert_eq!(shown("a[b", d).as_deref(), Some("a[b"));
        assert_eq!(shown("user.role", d).as_deref(), Some("user.role"));
        assert_eq!(
            read(json!({"user[role]": "admin", "user[name]": "x"}), d),
            json!({"user": {"role": "admin", "name": "x"}})
        );
        assert_eq!(
            read(json!({"tags[]": ["a", "b"], "x[][y]": "1"}), d),
            json!({"tags": ["a", "b"], "x": [{"y": "1"}]})
        );
        // A later field replaces an earlier one at the same place.
        assert_eq!(
            read(json!({"user": "bob", "user[role]": "admin"}), d),
            json!({"user": {"role": "admin"}})
        );
    }

    #[test]
    fn php_mangles_the_name_before_the_first_bracket() {
        let d = Dialect::Php;
        assert_eq!(shown(" role", d).as_deref(), Some("role"));
        assert_eq!(shown("user.role", d).as_deref(), Some("user_role"));
        assert_eq!(shown("user role", d).as_deref(), Some("user_role"));
        assert_eq!(shown("user[role", d).as_deref(), Some("user_role"));
        assert_eq!(shown("a[b.c[d", d).as_deref(), Some("a_b_c_d"));
        assert_eq!(shown("a.b[c.d]", d).as_deref(), Some("a_b.c.d"));
        assert_eq!(shown("a[b]x[c]", d).as_deref(), Some("a.b"));
        assert_eq!(shown("a[b[c]]", d).as_deref(), Some("a.b[c"));
        assert_eq!(shown("[role]", d), None);
        assert_eq!(shown("role\0x", d).as_deref(), Some("role"));
        assert_eq!(shown("\0role", d), None);
        assert_eq!(shown("  ", d), None);
        assert_eq!(
            read(json!({"[role]": "admin", " access.level": "owner"}), d),
            json!({"access_level": "owner"})
        );
    }

    #[test]
    fn dots_read_as_model_binders() {
        let d = Dialect::Dots;
        assert_eq!(shown("user.role", d).as_deref(), Some("user.role"));
        assert_eq!(shown("a.b[c].d", d).as_deref(), Some("a.b.c.d"));
        assert_eq!(shown("a[0][b]", d).as_deref(), Some("a.0.b"));
        assert_eq!(shown("a[]", d).as_deref(), Some("a[+]"));
        for kept in ["a..b", ".a", "a.", "a[b", "a]b", "a[b]c", "[b]"] {
            assert_eq!(shown(kept, d).as_deref(), Some(kept), "{kept}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let name = format!("a{}", "[b]".repeat(100));
        for d in Dialect::ALL {
            let path = d.path(&name).unwrap_or_default();
            assert!(path.len() <= MAX_DEPTH + 2, "{d:?}: {}", path.len());
        }
        let dotted = format!("a{}", ".b".repeat(100));
        assert!(Dialect::Dots.path(&dotted).unwrap_or_default().len() <= MAX_DEPTH + 2);
    }

    #[test]
    fn names_that_nest_and_where() {
        let fields = json!({"plain": "1", "user[role]": "admin"});
        let Value::Object(m) = fields else { panic!() };
        assert_eq!(
            first_nested(&m),
            Some(("user[role]", "user.role".to_owned()))
        );
        assert_eq!(top_names("user[role]"), vec!["user", "user", "user"]);
        assert_eq!(
            top_names("access.level"),
            vec!["access.level", "access_level", "access"]
        );
        assert!(top_names("plain").is_empty());
        assert!(!may_nest("plain_name-1"));
    }
}
