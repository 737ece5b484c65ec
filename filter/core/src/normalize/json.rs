//! A strict JSON parser (RFC 8259) that builds a `serde_json::Value` and refuses everything two
//! JSON implementations could read differently.
//!
//! Why not `serde_json::from_slice`: it silently keeps the last of duplicate object keys (the
//! Python MCP SDK does the same, other servers keep the first), so the filter and the server could
//! read different tool names or arguments. This parser refuses:
//! - invalid UTF-8 anywhere, a byte-order mark, trailing data after the value;
//! - a `\u` escape that is a lone (unpaired) UTF-16 surrogate;
//! - raw control characters in strings, every syntax error of RFC 8259;
//! - nesting deeper than the configured depth (arrays and objects both count);
//! - a number whose magnitude overflows `f64` (e.g. `1e400`); underflow (`1e-400`) reads as 0;
//! - duplicate keys in any object ([`JsonError::DuplicateKey`], reported only when the document
//!   is otherwise well-formed, so a syntax error always wins);
//! - keys of one object that are equal once case is ignored ([`JsonError::CaseCollision`]):
//!   Go's `encoding/json` (mark3labs/mcp-go, older official go-sdk), ASP.NET Core's web
//!   defaults and Jackson's case-insensitive mode match members without case, so
//!   `"method"` beside `"Method"` is one member to them, read last-wins or first-wins. The fold
//!   ([`fold_key`]) covers ASCII and the Unicode letters Go folds onto ASCII (`ſ` is `s`, the
//!   Kelvin sign `K` is `k`).
//! - a member named `__proto__`, or a `constructor` object with a `prototype` member
//!   ([`JsonError::PrototypeKey`]): JavaScript's `JSON.parse` keeps them as data, but the
//!   assignments servers then make (`Object.assign({}, defaults, args)`, a recursive merge) set the
//!   object's prototype instead, so a server reads `args.role` from
//!   `{"__proto__": {"role": "admin"}}` where every other reader finds no `role`.
//!
//! Integers that fit `i64` / `u64` are kept exactly; larger integers and every number with a
//! fraction or exponent become the nearest `f64`.

use std::ops::Range;

use serde_json::{Map, Number, Value};

/// The deepest nesting any configuration may ask for: the parser recurses once per level, and a
/// Wasm VM has a small stack.
pub(crate) const HARD_MAX_DEPTH: usize = 512;

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// The bytes are not UTF-8.
    Utf8,
    /// The document starts with a UTF-8 byte-order mark.
    Bom,
    /// A syntax error at this byte offset.
    Syntax {
        /// Byte offset of the problem.
        offset: usize,
        /// What was wrong, lowercase.
        what: &'static str,
    },
    /// A `\u` escape names an unpaired UTF-16 surrogate.
    LoneSurrogate {
        /// Byte offset of the escape.
        offset: usize,
    },
    /// Nesting deeper than the limit.
    TooDeep {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A number too large for `f64`.
    NumberOverflow {
        /// Byte offset of the number.
        offset: usize,
    },
    /// Something other than whitespace follows the value.
    TrailingData {
        /// Byte offset of the first extra byte.
        offset: usize,
    },
    /// An object has the same key twice (the first duplicate found).
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// Two keys of one object differ only in case (the first pair found).
    CaseCollision {
        /// The key that came first.
        first: String,
        /// The later key that folds to the same name.
        second: String,
    },
    /// A member JavaScript merges read as the object's prototype: `__proto__`, or `prototype`
    /// inside `constructor`.
    PrototypeKey {
        /// The key path refused: `__proto__` or `constructor.prototype`.
        key: &'static str,
    },
}

impl JsonError {
    /// A lowercase, human-readable reason for refusals and logs.
    pub(crate) fn reason(&self) -> String {
        match self {
            JsonError::Utf8 => "body is not valid utf-8".to_owned(),
            JsonError::Bom => "body starts with a byte-order mark".to_owned(),
            JsonError::Syntax { offset, what } => format!("invalid json at byte {offset}: {what}"),
            JsonError::LoneSurrogate { offset } => {
                format!("invalid json at byte {offset}: unpaired utf-16 surrogate in \\u escape")
            }
            JsonError::TooDeep { limit } => format!("json nested deeper than {limit} levels"),
            JsonError::NumberOverflow { offset } => {
                format!("invalid json at byte {offset}: number too large")
            }
            JsonError::TrailingData { offset } => {
                format!("invalid json at byte {offset}: data after the json value")
            }
            JsonError::DuplicateKey { key } => {
                format!("duplicate key `{}` in a json object", super::printable(key))
            }
            JsonError::CaseCollision { first, second } => format!(
                "keys `{}` and `{}` of a json object differ only in case (servers that ignore \
                 case read them as one)",
                super::printable(first),
                super::printable(second)
            ),
            JsonError::PrototypeKey { key } => format!(
                "a json object has a member `{key}`, which javascript servers merging it read as \
                 the object's prototype, not as data"
            ),
        }
    }

    /// Whether the document is well-formed JSON that readers read differently: one member named
    /// twice (exactly or up to case), or a prototype member. A JSON-RPC "invalid request"
    /// (-32600), not a parse error.
    pub(crate) fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            JsonError::DuplicateKey { .. }
                | JsonError::CaseCollision { .. }
                | JsonError::PrototypeKey { .. }
        )
    }
}

/// A parsed document, with the byte range of each element when the top level is an array
/// (so a JSON-RPC batch element knows its own size).
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The value.
    pub(crate) value: Value,
    /// For a top-level array: each element's byte range in the input, in order. Empty otherwise.
    pub(crate) element_spans: Vec<Range<usize>>,
    /// The byte range of the whole value (the input without surrounding whitespace).
    pub(crate) value_span: Range<usize>,
    /// Where the members of JSON-RPC messages that become an action's arguments were read from
    /// (the message is the top-level object, or an element of a top-level array): their received
    /// text is what the action digest hashes. Objects that are not messages record nothing.
    pub(crate) members: Vec<MemberSpan>,
}

/// A JSON-RPC member whose received text the parser records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Member {
    /// `params.arguments` (`tools/call`, `prompts/get`).
    Arguments,
    /// `params.argument` (`completion/complete`).
    Argument,
    /// `result` (a response the client posts).
    Result,
    /// `error` (the same).
    Error,
}

/// The byte range of one recorded member's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberSpan {
    /// Which message: 0 for a single message, else the index in the batch.
    pub(crate) message: usize,
    /// Which member.
    pub(crate) member: Member,
    /// Its value's bytes in the input (no surrounding whitespace).
    pub(crate) span: Range<usize>,
}

/// The received text of `member` of message `message` among `spans` ([`Parsed::members`]),
/// when it was present.
pub(crate) fn member_text<'b>(
    spans: &[MemberSpan],
    input: &'b [u8],
    message: usize,
    member: Member,
) -> Option<&'b [u8]> {
    let m = spans
        .iter()
        .find(|m| m.message == message && m.member == member)?;
    input.get(m.span.clone())
}

/// What the object or array being parsed is, for [`Parsed::members`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Anything not recorded.
    Other,
    /// A JSON-RPC message (its index).
    Message(usize),
    /// The `params` of a message.
    Params(usize),
}

/// Parse `bytes` as one strict JSON document; see the module docs for what is refused.
pub(crate) fn parse(bytes: &[u8], max_depth: usize) -> Result<Parsed, JsonError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(JsonError::Bom);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Utf8)?;
    let mut p = Parser {
        text,
        bytes,
        pos: 0,
        max_depth: max_depth.min(HARD_MAX_DEPTH),
        ambiguous: None,
        spans: Vec::new(),
        members: Vec::new(),
    };
    p.skip_ws();
    let start = p.pos;
    let value = p.value(0, Role::Message(0))?;
    let value_span = start..p.pos;
    p.skip_ws();
    if p.pos < bytes.len() {
        return Err(JsonError::TrailingData { offset: p.pos });
    }
    if let Some(e) = p.ambiguous {
        return Err(e);
    }
    Ok(Parsed {
        value,
        element_spans: p.spans,
        value_span,
        members: p.members,
    })
}

/// A key as servers that ignore case read it: ASCII letters lowercased; any other character by
/// its simple lowercase mapping, and the few characters whose uppercase lowers to another letter
/// ([`FOLD_THROUGH_UPPER`]) to that letter. That is `lower(upper(lower(c)))`, a superset of Go's
/// `encoding/json` fold (`upper(lower(c))`), so `ſ` folds to `s`, `ı` to `i` and the Kelvin sign
/// to `k`, without carrying Unicode's uppercase table in the module. Borrowed when the key is
/// already folded (the common case: lowercase ASCII).
pub(crate) fn fold_key(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        return std::borrow::Cow::Borrowed(key);
    }
    std::borrow::Cow::Owned(key.chars().map(fold_char).collect())
}

/// Lowercase characters whose uppercase lowers to another character (Unicode CaseFolding's
/// entries that differ from the lowercase mapping).
const FOLD_THROUGH_UPPER: &[(char, char)] = &[
    ('\u{00b5}', '\u{03bc}'), // micro sign -> mu
    ('\u{0131}', 'i'),        // dotless i -> i (its uppercase is I)
    ('\u{017f}', 's'),        // long s -> s
    ('\u{0345}', '\u{03b9}'), // combining ypogegrammeni -> iota
    ('\u{03c2}', '\u{03c3}'), // final sigma -> sigma
    ('\u{03d0}', '\u{03b2}'), // beta symbol -> beta
    ('\u{03d1}', '\u{03b8}'), // theta symbol -> theta
    ('\u{03d5}', '\u{03c6}'), // phi symbol -> phi
    ('\u{03d6}', '\u{03c0}'), // pi symbol -> pi
    ('\u{03f0}', '\u{03ba}'), // kappa symbol -> kappa
    ('\u{03f1}', '\u{03c1}'), // rho symbol -> rho
    ('\u{03f5}', '\u{03b5}'), // lunate epsilon -> epsilon
    ('\u{1e9b}', '\u{1e61}'), // long s with dot above -> s with dot above
    ('\u{1fbe}', '\u{03b9}'), // greek prosgegrammeni -> iota
];

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let lower = c.to_lowercase().next().unwrap_or(c);
    FOLD_THROUGH_UPPER
        .iter()
        .find(|(from, _)| *from == lower)
        .map_or(lower, |(_, to)| *to)
}

/// A member `key: v` that JavaScript merges read as a prototype, as an error.
fn prototype_member(key: &str, v: &Value) -> Option<JsonError> {
    match key {
        "__proto__" => Some(JsonError::PrototypeKey { key: "__proto__" }),
        "constructor" if v.get("prototype").is_some() => Some(JsonError::PrototypeKey {
            key: "constructor.prototype",
        }),
        _ => None,
    }
}

/// The first pair of keys of `map` that fold to the same name, as an error.
fn case_collision(map: &Map<String, Value>) -> Option<JsonError> {
    // Objects without an upper-case or non-ASCII key cannot collide (their keys are distinct
    // and already folded): no work for the usual JSON-RPC object.
    if !map
        .keys()
        .any(|k| k.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()))
    {
        return None;
    }
    // A `Map` of the folded keys: the same map type the parser builds, so no other set type is
    // compiled into the module for this rare path.
    let mut seen = Map::new();
    for k in map.keys() {
        if let Some(Value::String(first)) =
            seen.insert(fold_key(k).into_owned(), Value::String(k.clone()))
        {
            return Some(JsonError::CaseCollision {
                first,
                second: k.clone(),
            });
        }
    }
    None
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
    /// The first member readers read differently (a duplicate, a case collision, a prototype
    /// member), reported once the document is otherwise well-formed.
    ambiguous: Option<JsonError>,
    spans: Vec<Range<usize>>,
    members: Vec<MemberSpan>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    fn err(&self, what: &'static str) -> JsonError {
        JsonError::Syntax {
            offset: self.pos,
            what,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.bump();
        }
    }

    fn expect_literal(&mut self, lit: &'static [u8], v: Value) -> Result<Value, JsonError> {
        let end = self.pos.saturating_add(lit.len());
        if self.bytes.get(self.pos..end) == Some(lit) {
            self.pos = end;
            Ok(v)
        } else {
            Err(self.err("unexpected token"))
        }
    }

    fn value(&mut self, depth: usize, role: Role) -> Result<Value, JsonError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth, role),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.expect_literal(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Value::Bool(false)),
            Some(b'n') => self.expect_literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn enter(&self, depth: usize) -> Result<usize, JsonError> {
        let d = depth.saturating_add(1);
        if d > self.max_depth {
            return Err(JsonError::TooDeep {
                limit: self.max_depth,
            });
        }
        Ok(d)
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        let inner = self.enter(depth)?;
        self.bump(); // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.bump();
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            let start = self.pos;
            // The elements of a top-level array are the messages of a batch.
            let role = if depth == 0 {
                Role::Message(items.len())
            } else {
                Role::Other
            };
            let v = self.value(inner, role)?;
            if depth == 0 {
                self.spans.push(start..self.pos);
            }
            items.push(v);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected `,` or `]` in array")),
            }
        }
    }

    fn object(&mut self, depth: usize, role: Role) -> Result<Value, JsonError> {
        let inner = self.enter(depth)?;
        self.bump(); // '{'
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.bump();
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key in object"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected `:` after object key"));
            }
            self.bump();
            self.skip_ws();
            let child = match role {
                Role::Message(i) if key == "params" => Role::Params(i),
                _ => Role::Other,
            };
            let start = self.pos;
            let v = self.value(inner, child)?;
            if self.ambiguous.is_none() {
                self.ambiguous = prototype_member(&key, &v);
            }
            if map.contains_key(&key) {
                if self.ambiguous.is_none() {
                    self.ambiguous = Some(JsonError::DuplicateKey { key });
                }
            } else {
                let recorded = match (role, key.as_str()) {
                    (Role::Message(i), "result") => Some((i, Member::Result)),
                    (Role::Message(i), "error") => Some((i, Member::Error)),
                    (Role::Params(i), "arguments") => Some((i, Member::Arguments)),
                    (Role::Params(i), "argument") => Some((i, Member::Argument)),
                    _ => None,
                };
                if let Some((message, member)) = recorded {
                    self.members.push(MemberSpan {
                        message,
                        member,
                        span: start..self.pos,
                    });
                }
                map.insert(key, v);
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b'}') => {
                    self.bump();
                    if self.ambiguous.is_none() {
                        self.ambiguous = case_collision(&map);
                    }
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.err("expected `,` or `}` in object")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let mut v: u16 = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c.wrapping_sub(b'0'),
                Some(c @ b'a'..=b'f') => c.wrapping_sub(b'a').wrapping_add(10),
                Some(c @ b'A'..=b'F') => c.wrapping_sub(b'A').wrapping_add(10),
                _ => return Err(self.err("invalid \\u escape")),
            };
            v = (v << 4) | u16::from(d);
            self.bump();
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.bump(); // opening quote
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            // Skip the run of bytes that stand for themselves (most of a large argument) in one
            // call; what stops it is a quote, a backslash, a control byte or the end.
            let rest = self.bytes.get(self.pos..).unwrap_or_default();
            self.pos = self
                .pos
                .saturating_add(bundle::canonical::json_plain_len(rest));
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    out.push_str(self.text.get(run_start..self.pos).unwrap_or_default());
                    self.bump();
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(self.text.get(run_start..self.pos).unwrap_or_default());
                    let esc_at = self.pos;
                    self.bump();
                    let Some(c) = self.peek() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.bump();
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape(esc_at)?),
                        _ => {
                            return Err(JsonError::Syntax {
                                offset: esc_at,
                                what: "invalid escape",
                            });
                        }
                    }
                    run_start = self.pos;
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    /// After `\u`: read the escape (and its low surrogate, if it is a high one).
    fn unicode_escape(&mut self, esc_at: usize) -> Result<char, JsonError> {
        let hi = self.hex4()?;
        let lone = JsonError::LoneSurrogate { offset: esc_at };
        if (0xDC00..=0xDFFF).contains(&hi) {
            return Err(lone);
        }
        if !(0xD800..=0xDBFF).contains(&hi) {
            return char::from_u32(u32::from(hi)).ok_or(lone);
        }
        if self.bytes.get(self.pos..self.pos.saturating_add(2)) != Some(b"\\u".as_slice()) {
            return Err(lone);
        }
        self.pos = self.pos.saturating_add(2);
        let lo = self.hex4()?;
        if !(0xDC00..=0xDFFF).contains(&lo) {
            return Err(lone);
        }
        let cp = 0x10000u32
            .saturating_add((u32::from(hi).saturating_sub(0xD800)) << 10)
            .saturating_add(u32::from(lo).saturating_sub(0xDC00));
        char::from_u32(cp).ok_or(lone)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.bump();
        }
        self.pos.saturating_sub(start)
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => {
                self.bump();
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("leading zero in number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.bump();
            if self.digits() == 0 {
                return Err(self.err("expected digits after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.bump();
            if let Some(b'+' | b'-') = self.peek() {
                self.bump();
            }
            if self.digits() == 0 {
                return Err(self.err("expected digits in exponent"));
            }
        }
        let text = self.text.get(start..self.pos).unwrap_or_default();
        if integer {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Value::Number(Number::from(i)));
            }
            if let Ok(u) = text.parse::<u64>() {
                return Ok(Value::Number(Number::from(u)));
            }
        }
        let overflow = JsonError::NumberOverflow { offset: start };
        let f: f64 = text.parse().map_err(|_| overflow.clone())?;
        Number::from_f64(f).map(Value::Number).ok_or(overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Value, JsonError> {
        parse(s.as_bytes(), 64).map(|p| p.value)
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(
            p(r#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateKey { key: "a".into() })
        );
        assert_eq!(
            p(r#"{"x":{"b":[{"k":1,"k":1}]}}"#),
            Err(JsonError::DuplicateKey { key: "k".into() })
        );
        // Keys equal only after unescaping are duplicates too.
        assert_eq!(
            p(r#"{"name":1,"na\u006de":2}"#),
            Err(JsonError::DuplicateKey { key: "name".into() })
        );
    }

    #[test]
    fn keys_that_fold_together_collide() {
        for (a, b) in [
            ("method", "Method"),
            ("params", "PARAMS"),
            ("params", "param\u{17f}"),
            ("kind", "\u{212a}ind"),
            ("id", "\u{130}d"),
            ("id", "\u{131}d"),
            ("\u{e9}t\u{e9}", "\u{c9}T\u{c9}"),
            ("\u{3c3}", "\u{3c2}"),
        ] {
            assert_eq!(fold_key(a), fold_key(b), "{a} / {b}");
            let doc = format!(r#"{{"x":{{"{a}":1,"{b}":2}}}}"#);
            assert!(
                matches!(p(&doc), Err(JsonError::CaseCollision { .. })),
                "{doc}"
            );
        }
        for (a, b) in [("name", "names"), ("\u{540d}", "\u{540e}"), ("a_b", "a-b")] {
            assert_ne!(fold_key(a), fold_key(b), "{a} / {b}");
        }
        assert!(matches!(
            fold_key("already_folded"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn prototype_members_are_refused_at_any_depth() {
        let proto = Err(JsonError::PrototypeKey { key: "__proto__" });
        assert_eq!(p(r#"{"__proto__":{"role":"admin"}}"#), proto);
        assert_eq!(p(r#"{"a":[{"b":{"__proto__":1}}]}"#), proto);
        // Spelled with an escape, it is the same key.
        assert_eq!(p(r#"{"\u005f_proto__":{}}"#), proto);
        assert_eq!(
            p(r#"{"x":{"constructor":{"prototype":{"role":"admin"}}}}"#),
            Err(JsonError::PrototypeKey {
                key: "constructor.prototype"
            })
        );
        assert!(p(r#"{"__proto__":{}}"#).unwrap_err().is_ambiguous());
        // Data that only looks like it: kept.
        for ok in [
            r#"{"constructor":"Object","prototype":1}"#,
            r#"{"constructor":{"name":"x"}}"#,
            r#"{"proto":1,"__PROTO__":2,"note":"__proto__"}"#,
            r#"["__proto__"]"#,
        ] {
            assert!(p(ok).is_ok(), "{ok}");
        }
        // A syntax error still wins.
        assert!(matches!(
            p(r#"{"__proto__":1"#),
            Err(JsonError::Syntax { .. })
        ));
    }

    #[test]
    fn syntax_error_wins_over_duplicate() {
        assert!(matches!(
            p(r#"{"a":1,"a":2"#),
            Err(JsonError::Syntax { .. })
        ));
    }

    #[test]
    fn surrogates() {
        assert_eq!(p(r#""\ud834\udd1e""#), Ok(Value::String("𝄞".into())));
        assert!(matches!(
            p(r#""\ud834""#),
            Err(JsonError::LoneSurrogate { .. })
        ));
        assert!(matches!(
            p(r#""\udd1e""#),
            Err(JsonError::LoneSurrogate { .. })
        ));
        assert!(matches!(
            p(r#""\ud834\u0041""#),
            Err(JsonError::LoneSurrogate { .. })
        ));
    }

    #[test]
    fn numbers() {
        assert_eq!(p("1e400"), Err(JsonError::NumberOverflow { offset: 0 }));
        assert_eq!(p("-1e400"), Err(JsonError::NumberOverflow { offset: 0 }));
        assert_eq!(p("1e-400"), Ok(serde_json::json!(0.0)));
        assert_eq!(p("18446744073709551615"), Ok(serde_json::json!(u64::MAX)));
        assert_eq!(p("-9223372036854775808"), Ok(serde_json::json!(i64::MIN)));
        assert!(p("012").is_err());
        assert!(p("1.").is_err());
        assert!(p("-").is_err());
    }

    #[test]
    fn depth_limit_counts_arrays_and_objects() {
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(ok.as_bytes(), 64).is_ok());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            parse(deep.as_bytes(), 64).map(|p| p.value),
            Err(JsonError::TooDeep { limit: 64 })
        );
        let objs = format!("{}1{}", r#"{"a":"#.repeat(3), "}".repeat(3));
        assert_eq!(
            parse(objs.as_bytes(), 2).map(|p| p.value),
            Err(JsonError::TooDeep { limit: 2 })
        );
    }

    #[test]
    fn bom_trailing_and_utf8() {
        assert_eq!(p("\u{feff}{}"), Err(JsonError::Bom));
        assert_eq!(p("{} x"), Err(JsonError::TrailingData { offset: 3 }));
        assert_eq!(
            parse(b"\"\xff\"", 64).map(|p| p.value),
            Err(JsonError::Utf8)
        );
    }

    #[test]
    fn element_spans_cover_top_level_array_elements() {
        let src = r#"[ {"a":1} , [2,3] ,"x"]"#;
        let parsed = parse(src.as_bytes(), 64).unwrap();
        let spans: Vec<&str> = parsed
            .element_spans
            .iter()
            .map(|r| &src[r.clone()])
            .collect();
        assert_eq!(spans, vec![r#"{"a":1}"#, "[2,3]", r#""x""#]);
    }
}
