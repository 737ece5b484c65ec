//! Paths and URLs in arguments as the tool behind them reads them (docs/filter-normalization.md,
//! "Paths and URLs in arguments").
//!
//! A rule such as `args.path prefix "/repo/"` judges the text it is given, but a file system, or
//! an HTTP client's URL parser, resolves `.` and `..` segments first: `/repo/../etc/passwd` opens
//! `/etc/passwd`, and `https://api.example/v1/../admin` requests `/admin`; and a URL's client
//! reads its host in many spellings (`urls.rs`), as does a resolver a string that is only a host
//! (`0xA9FEA9FE`, a connect tool's `host`). So the arguments are also judged with every such
//! string read as the tool reads it, as one more reading of the request (the strictest verdict
//! decides; `action_readings`). Both `/` and `\` separate segments (Windows paths, and URL
//! parsers for `http`, `https` and `file`); in a URL, `%2e` is a dot too, and the part from `?`
//! or `#` on is left alone. `..` never climbs above the root of an absolute path or above a
//! URL's authority; in a relative path it is kept once nothing is left to remove. A string with
//! no dot segment, no URL and no other spelling of a host is not copied.

use serde_json::Value;

use super::urls::{self, Parser};

/// The readings of arguments `v` in which every path and URL string, at any depth, is read as
/// tools read it (`parser`'s URL reading; dot segments resolved): none when no string changes,
/// and a second one only when a URL reads differently under RFC 3986 (a `\` in its authority).
pub(crate) fn argument_readings(v: &Value) -> Vec<Value> {
    if !changes(v, Parser::Whatwg) {
        // A string no parser changes has no `\`, so RFC 3986 reads it the same way.
        return Vec::new();
    }
    let mut out = vec![read_value(v, Parser::Whatwg)];
    if changes(v, Parser::Rfc3986) {
        let rfc = read_value(v, Parser::Rfc3986);
        if !out.contains(&rfc) {
            out.push(rfc);
        }
    }
    out
}

/// The first string of `sent` that reads as another string in `read` (same shape), for reasons.
pub(crate) fn first_difference<'v>(sent: &'v Value, read: &'v Value) -> Option<(&'v str, &'v str)> {
    match (sent, read) {
        (Value::String(a), Value::String(b)) => (a != b).then_some((a.as_str(), b.as_str())),
        (Value::Array(a), Value::Array(b)) => {
            a.iter().zip(b).find_map(|(a, b)| first_difference(a, b))
        }
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .zip(b)
            .find_map(|((_, a), (_, b))| first_difference(a, b)),
        _ => None,
    }
}

fn read_string(s: &str, parser: Parser) -> Option<String> {
    urls::canonical(s, parser)
        .or_else(|| resolved(s))
        .or_else(|| urls::bare_host(s))
}

fn changes(v: &Value, parser: Parser) -> bool {
    match v {
        Value::String(s) => read_string(s, parser).is_some(),
        Value::Array(a) => a.iter().any(|v| changes(v, parser)),
        Value::Object(m) => m.values().any(|v| changes(v, parser)),
        _ => false,
    }
}

fn read_value(v: &Value, parser: Parser) -> Value {
    match v {
        Value::String(s) => Value::String(read_string(s, parser).unwrap_or_else(|| s.clone())),
        Value::Array(a) => Value::Array(a.iter().map(|v| read_value(v, parser)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), read_value(v, parser)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A URL's path (absolute below its authority; `%2e` a dot) with its dot segments resolved, when
/// it has any.
pub(super) fn resolved_path(path: &str) -> Option<String> {
    has_dot_segment(path, true).then(|| resolve(path, true))
}

/// `s` with its dot segments resolved, when that changes it.
pub(crate) fn resolved(s: &str) -> Option<String> {
    let (head, rest) = split_url(s);
    let url = !head.is_empty();
    let end = if url {
        rest.find(['?', '#']).unwrap_or(rest.len())
    } else {
        rest.len()
    };
    let (path, tail) = (
        rest.get(..end).unwrap_or_default(),
        rest.get(end..).unwrap_or_default(),
    );
    if !has_dot_segment(path, url) {
        return None;
    }
    let out = resolve(path, url);
    let r = format!("{head}{out}{tail}");
    (r != s).then_some(r)
}

/// Whether `path` has a `.` or `..` segment: a search for `.` and a look at its neighbours, so
/// prose full of full stops costs about one pass (in a URL, a segment with `%` is read too).
fn has_dot_segment(path: &str, url: bool) -> bool {
    let b = path.as_bytes();
    let boundary = |i: usize| b.get(i).is_none_or(|c| matches!(c, b'/' | b'\\'));
    let dotted = memchr::memchr_iter(b'.', b).any(|i| {
        let after = i.saturating_add(1);
        (i == 0 || boundary(i.saturating_sub(1)))
            && (boundary(after)
                || (b.get(after) == Some(&b'.') && boundary(after.saturating_add(1))))
    });
    dotted
        || (url
            && memchr::memchr(b'%', b).is_some()
            && path
                .split(['/', '\\'])
                .any(|seg| dots(seg, true) != Dots::None))
}

/// `scheme://authority` and the rest, or `("", s)` when `s` does not start with such a URL.
fn split_url(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return ("", s);
    }
    let colon = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .unwrap_or(b.len());
    if b.get(colon..colon.saturating_add(3)) != Some(b"://") {
        return ("", s);
    }
    let after = colon.saturating_add(3);
    let end = b
        .get(after..)
        .and_then(|r| {
            r.iter()
                .position(|c| matches!(c, b'/' | b'\\' | b'?' | b'#'))
        })
        .map_or(b.len(), |i| after.saturating_add(i));
    (
        s.get(..end).unwrap_or_default(),
        s.get(end..).unwrap_or_default(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dots {
    None,
    One,
    Two,
}

/// Whether `seg` is `.` or `..` (in a URL, with any dot written `%2e`, either case).
fn dots(seg: &str, url: bool) -> Dots {
    match seg {
        "." => return Dots::One,
        ".." => return Dots::Two,
        _ if !url || seg.len() > 6 => return Dots::None,
        _ => {}
    }
    match seg.to_ascii_lowercase().as_str() {
        "%2e" => Dots::One,
        ".%2e" | "%2e." | "%2e%2e" => Dots::Two,
        _ => Dots::None,
    }
}

/// RFC 3986's `remove_dot_segments` over segments separated by `/` or `\`, each separator kept
/// as written; `url`: the path of a URL (below its authority, `%2e` a dot).
fn resolve(path: &str, url: bool) -> String {
    // Each segment with the separator before it (the first has none).
    let mut segs: Vec<(Option<char>, &str)> = Vec::new();
    let (mut start, mut sep) = (0usize, None);
    for (i, c) in path.char_indices() {
        if c == '/' || c == '\\' {
            segs.push((sep, path.get(start..i).unwrap_or_default()));
            (start, sep) = (i.saturating_add(1), Some(c));
        }
    }
    segs.push((sep, path.get(start..).unwrap_or_default()));
    // Below a root: a leading separator, a URL's authority, or a Windows drive (`C:\\`).
    let drive = path
        .as_bytes()
        .get(..2)
        .is_some_and(|d| matches!(d, [l, b':'] if l.is_ascii_alphabetic()) && segs.len() > 1);
    let absolute = url || drive || path.starts_with(['/', '\\']);
    let last = segs.len().saturating_sub(1);
    let floor = usize::from(absolute);
    let mut out: Vec<(Option<char>, &str)> = Vec::with_capacity(segs.len());
    for (i, (sep, seg)) in segs.into_iter().enumerate() {
        // The root (the empty segment before a leading separator, or the drive): kept.
        if i == 0 && absolute {
            out.push((sep, seg));
            continue;
        }
        match dots(seg, url) {
            Dots::None => out.push((sep, seg)),
            Dots::One => {}
            Dots::Two => {
                if out.len() > floor && out.last().is_some_and(|(_, s)| *s != "..") {
                    out.pop();
                } else if !absolute {
                    out.push((sep, ".."));
                }
            }
        }
        // A trailing dot segment leaves a trailing separator (`/a/b/..` is `/a/`).
        if i == last && dots(seg, url) != Dots::None && sep.is_some() {
            out.push((sep, ""));
        }
    }
    let mut s = String::with_capacity(path.len());
    for (i, (sep, seg)) in out.iter().enumerate() {
        // A relative path whose first segments were removed starts with what is left.
        if let Some(c) = sep
            && (i > 0 || absolute)
        {
            s.push(*c);
        }
        s.push_str(seg);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_resolve_as_file_systems_read_them() {
        for (s, want) in [
            ("/repo/../etc/passwd", "/etc/passwd"),
            ("/repo/./a/../../etc/shadow", "/etc/shadow"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/repo/a/..", "/repo/"),
            ("/repo/a/.", "/repo/a/"),
            ("docs/../../secrets.txt", "../secrets.txt"),
            ("a/../b", "b"),
            ("./notes.md", "notes.md"),
            (
                "C:\\repo\\..\\Windows\\system.ini",
                "C:\\Windows\\system.ini",
            ),
            ("/repo/x\\..\\..\\etc", "\\etc"),
            ("C:\\..\\..\\boot.ini", "C:\\boot.ini"),
        ] {
            assert_eq!(resolved(s).as_deref(), Some(want), "{s}");
        }
    }

    #[test]
    fn urls_resolve_below_their_authority() {
        for (s, want) in [
            (
                "https://api.example/v1/../admin",
                "https://api.example/admin",
            ),
            (
                "https://api.example/../../admin",
                "https://api.example/admin",
            ),
            (
                "https://api.example/v1/%2E%2e/admin",
                "https://api.example/admin",
            ),
            (
                "https://api.example\\v1\\..\\admin",
                "https://api.example\\admin",
            ),
            (
                "https://api.example/v1/../x?next=/a/../b#/../c",
                "https://api.example/x?next=/a/../b#/../c",
            ),
        ] {
            assert_eq!(resolved(s).as_deref(), Some(want), "{s}");
        }
    }

    #[test]
    fn strings_without_dot_segments_are_left_alone() {
        for s in [
            "",
            "plain text. With sentences... and ellipses.",
            "/repo/file.txt",
            "/repo/.hidden/..config",
            "v1.2.3",
            "https://api.example/a.b/c",
            "https://api.example/?q=..",
            "/repo/%2e%2e/x", // not a URL: `%2e` is a name
            "..",
        ] {
            assert_eq!(resolved(s), None, "{s}");
        }
    }

    #[test]
    fn values_resolve_at_any_depth() {
        let v = json!({"path": "/repo/../etc/passwd", "n": 1, "more": [{"to": "a/./b"}, "x"]});
        let read = json!({"path": "/etc/passwd", "n": 1, "more": [{"to": "a/b"}, "x"]});
        assert_eq!(argument_readings(&v), vec![read.clone()]);
        assert_eq!(
            first_difference(&v, &read),
            Some(("/repo/../etc/passwd", "/etc/passwd"))
        );
        assert!(
            argument_readings(&json!({"path": "/repo/a.md", "u": "https://a.example/"})).is_empty()
        );
        assert!(argument_readings(&Value::Null).is_empty());
        // A URL is read as its client reads it; one with `\` before `@`, both ways.
        assert_eq!(
            argument_readings(&json!({"url": "HTTP://0xA9FEA9FE/x"})),
            vec![json!({"url": "http://169.254.169.254/x"})]
        );
        assert_eq!(
            argument_readings(&json!({"url": "http://good.example\\@evil.example/"})),
            vec![
                json!({"url": "http://good.example/@evil.example/"}),
                json!({"url": "http://evil.example/"})
            ]
        );
    }
}
