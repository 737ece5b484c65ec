//! Expressions, fields and argument paths.

use super::lex::{
    expected, ident, kw, must_ident, must_string, must_sym, number, sp, span, string, sym,
};
use super::{In, PErr, R, duration, literal, literal_items, soft, vtype};
use crate::ast::{CmpOp, CountSubject, Expr, FieldRef, Lit, PathSegment, SetRef, Span, Spanned};
use crate::diag::Diagnostic;
use nom::Input as _;

/// Extra names only used for suggestions.
const OTHER_NAMES: [&str; 4] = ["session.seen", "session.count", "args", "header"];

/// The source name of a field (for messages and the formatter).
pub(crate) fn field_name(f: &FieldRef) -> String {
    match f {
        FieldRef::Header(h) => {
            if !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                format!("header.{h}")
            } else {
                format!("header[{}]", quote(h))
            }
        }
        FieldRef::Arg(p) => arg_path_text(p),
        other => other.name().map_or_else(String::new, str::to_owned),
    }
}

/// `args.a.b[0]["odd key"]`.
pub(crate) fn arg_path_text(p: &[PathSegment]) -> String {
    let mut s = "args".to_owned();
    for step in p {
        match step {
            PathSegment::Key(k) if is_plain_ident(k) => {
                s.push('.');
                s.push_str(k);
            }
            PathSegment::Key(k) => {
                s.push('[');
                s.push_str(&quote(k));
                s.push(']');
            }
            PathSegment::Index(n) => s.push_str(&format!("[{n}]")),
        }
    }
    s
}

/// Whether `k` can be written as a bare identifier (and is not a reserved word).
pub(crate) fn is_plain_ident(k: &str) -> bool {
    k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A string literal as source text, escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Most levels of parentheses and `not` around a condition (the parser recurses on them).
pub const MAX_NESTING: usize = 64;
/// Most operators on any path from a condition's root to a leaf (the interpreter, formatter and
/// code generator recurse on the tree).
pub const MAX_DEPTH: usize = 256;

thread_local! {
    static NESTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one level of parser recursion for as long as it lives.
struct Nest;

impl Nest {
    fn enter(i: In<'_>) -> Result<Nest, nom::Err<PErr>> {
        let n = NESTING.with(|c| {
            let n = c.get().saturating_add(1);
            c.set(n);
            n
        });
        let guard = Nest;
        if n > MAX_NESTING {
            let (_, len) = super::lex::next_token(&i);
            let end = i.take_from(len.min(i.fragment().len()));
            return Err(nom::Err::Failure(PErr {
                span: span(&i, &end),
                message: format!(
                    "condition nested too deeply (more than {MAX_NESTING} levels of parentheses or `not`)"
                ),
                hint: Some("split it into classes or several rules".to_owned()),
            }));
        }
        Ok(guard)
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        NESTING.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Reset the nesting counter (a fatal error may leave guards dropped out of order; they are all
/// dropped by the time `parse` returns, this is belt and braces).
pub(crate) fn reset_nesting() {
    NESTING.with(|c| c.set(0));
}

/// Depth of a condition tree (bounded: every subtree was checked when it was built).
pub(crate) fn depth(e: &Expr) -> usize {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => depth(a).max(depth(b)).saturating_add(1),
        Expr::Not(a) => depth(a).saturating_add(1),
        _ => 1,
    }
}

fn too_deep(start: &In<'_>, end: &In<'_>) -> nom::Err<PErr> {
    nom::Err::Failure(PErr {
        span: span(start, end),
        message: format!("condition too large: more than {MAX_DEPTH} nested `and` / `or` / `not`"),
        hint: Some("split it into classes or several rules".to_owned()),
    })
}

/// `expr = or_expr`.
pub(crate) fn expr(i: In<'_>) -> R<'_, Expr> {
    let _nest = Nest::enter(i)?;
    let (i, _) = sp(i)?;
    let start = i;
    let (mut i, mut left) = and_expr(i)?;
    let mut d = depth(&left);
    while let Ok((rest, _)) = kw("or")(i) {
        let (rest, right) = and_expr(rest)?;
        d = d.max(depth(&right)).saturating_add(1);
        if d > MAX_DEPTH {
            return Err(too_deep(&start, &rest));
        }
        left = Expr::Or(Box::new(left), Box::new(right));
        i = rest;
    }
    Ok((i, left))
}

fn and_expr(i: In<'_>) -> R<'_, Expr> {
    let (i, _) = sp(i)?;
    let start = i;
    let (mut i, mut left) = unary(i)?;
    let mut d = depth(&left);
    while let Ok((rest, _)) = kw("and")(i) {
        let (rest, right) = unary(rest)?;
        d = d.max(depth(&right)).saturating_add(1);
        if d > MAX_DEPTH {
            return Err(too_deep(&start, &rest));
        }
        left = Expr::And(Box::new(left), Box::new(right));
        i = rest;
    }
    Ok((i, left))
}

fn unary(i: In<'_>) -> R<'_, Expr> {
    if let Ok((rest, _)) = kw("not")(i) {
        let _nest = Nest::enter(i)?;
        let (rest, e) = unary(rest)?;
        if depth(&e) >= MAX_DEPTH {
            return Err(too_deep(&i, &rest));
        }
        return Ok((rest, Expr::Not(Box::new(e))));
    }
    primary(i)
}

fn cmp_op(i: In<'_>) -> R<'_, CmpOp> {
    // Two-character operators first: `<=` is not `<` followed by `=`.
    for op in [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Le,
        CmpOp::Ge,
        CmpOp::Lt,
        CmpOp::Gt,
    ] {
        if let Ok((r, _)) = sym(op.name())(i) {
            return Ok((r, op));
        }
    }
    Err(nom::Err::Error(PErr::at(&i, "comparison")))
}

fn must_cmp<'a>(i: In<'a>, after: &str) -> R<'a, CmpOp> {
    cmp_op(i).map_err(|_| {
        expected(
            i,
            &format!("a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`) after {after}"),
        )
    })
}

fn primary(i: In<'_>) -> R<'_, Expr> {
    let (i, _) = sp(i)?;
    if let Ok((rest, _)) = sym("(")(i) {
        let (rest, e) = expr(rest)?;
        let (rest, _) = must_sym(rest, ")", " to close `(`")?;
        return Ok((rest, e));
    }
    if let Ok((rest, _)) = kw("true")(i) {
        return Ok((rest, Expr::Const(true)));
    }
    if let Ok((rest, _)) = kw("false")(i) {
        return Ok((rest, Expr::Const(false)));
    }
    if let Ok((rest, _)) = kw("class")(i) {
        let (rest, (c, cspan)) = must_ident(rest, "a class name after `class`")?;
        return Ok((
            rest,
            Expr::InClass(Spanned {
                node: c,
                span: cspan,
            }),
        ));
    }
    if let Ok((rest, _)) = kw("len")(i) {
        let (rest, _) = must_sym(rest, "(", " after `len`")?;
        let (rest, f) = field(rest)?;
        let (rest, _) = must_sym(rest, ")", " to close `len(`")?;
        let (rest, op) = must_cmp(rest, "`len(...)`")?;
        let (rest, n) = match number(rest) {
            Ok((r, x)) if x.unit.is_none() => (r, x),
            Ok((_, x)) => {
                return Err(nom::Err::Failure(PErr {
                    span: x.span,
                    message: format!(
                        "expected a plain number after `len(...)`, found `{}`",
                        x.text
                    ),
                    hint: None,
                }));
            }
            Err(nom::Err::Error(_)) => return Err(expected(rest, "a number")),
            Err(e) => return Err(e),
        };
        return Ok((rest, Expr::Len(f, op, n.value)));
    }
    let (after_name, (name, nspan)) = match dotted_name(i) {
        Ok(x) => x,
        Err(nom::Err::Error(_)) => {
            return Err(expected(
                i,
                "a condition (a field like `tool`, `class NAME`, `not`, `(`, ...)",
            ));
        }
        Err(e) => return Err(e),
    };
    match name.as_str() {
        "intent.outside" => return Ok((after_name, Expr::OutsideIntent)),
        "principal.quarantined" => return Ok((after_name, Expr::Quarantined)),
        "session.tainted" | "session.used" | "principal.tainted" => {
            let (rest, _) = must_sym(after_name, "(", &format!(" after `{name}`"))?;
            let (rest, (s, sspan)) = must_string(rest, "a name as a string")?;
            let (rest, _) = must_sym(rest, ")", " to close the call")?;
            let arg = Spanned {
                node: s,
                span: sspan,
            };
            let e = match name.as_str() {
                "session.tainted" => Expr::Tainted(arg),
                "principal.tainted" => Expr::PrincipalTainted(arg),
                _ => Expr::Used(arg),
            };
            return Ok((rest, e));
        }
        "session.seen" => {
            let (rest, _) = must_sym(after_name, "(", " after `session.seen`")?;
            let (rest, (c, cspan)) = must_ident(rest, "a class name")?;
            let (rest, _) = must_sym(rest, ")", " to close the call")?;
            return Ok((
                rest,
                Expr::Seen(Spanned {
                    node: c,
                    span: cspan,
                }),
            ));
        }
        "session.count" => return count(after_name),
        _ => {}
    }
    let (rest, f) = field(i)?;
    let _ = nspan;
    field_test(rest, f)
}

fn count(i: In<'_>) -> R<'_, Expr> {
    let (i, _) = must_sym(i, "(", " after `session.count`")?;
    let (i, _) = sp(i)?;
    let start = i;
    let (i, subject) = if let Ok((rest, _)) = kw("tool")(i) {
        let (rest, (t, _)) = must_string(rest, "the tool name as a string")?;
        (rest, CountSubject::Subject(t))
    } else if let Ok((rest, _)) = kw("class")(i) {
        let (rest, (c, _)) = must_ident(rest, "a class name")?;
        (rest, CountSubject::Class(c))
    } else {
        return Err(expected(
            i,
            "`tool \"name\"` or `class NAME` in `session.count(...)`",
        ));
    };
    let subject = Spanned {
        node: subject,
        span: span(&start, &i),
    };
    let (i, _) = must_sym(i, ",", " then `within DURATION`")?;
    let (i, _) = super::lex::must_kw(i, "within", " in `session.count(..., within 10m)`")?;
    let (i, (ms, _)) = duration(i, "the window")?;
    let (i, _) = must_sym(i, ")", " to close `session.count(`")?;
    let (i, op) = must_cmp(i, "`session.count(...)`")?;
    let (i, (n, nspan)) = super::integer(i, "a whole number")?;
    let n = u32::try_from(n).unwrap_or_else(|_| {
        soft(Diagnostic::error(
            nspan,
            format!("count `{n}` is too large"),
        ));
        u32::MAX
    });
    Ok((i, Expr::Count(subject, ms, op, n)))
}

/// The test after a field: comparison, `in`, `glob`, `prefix`, `matches`, `is`, `present`, `contains`.
fn field_test(i: In<'_>, f: Spanned<FieldRef>) -> R<'_, Expr> {
    if let Ok((rest, op)) = cmp_op(i) {
        let (rest, v) = value(rest)?;
        return Ok((rest, Expr::Cmp(f, op, v)));
    }
    if let Ok((rest, _)) = kw("in")(i) {
        let (rest, s) = set(rest)?;
        return Ok((rest, Expr::In(f, s)));
    }
    if let Ok((rest, _)) = kw("glob")(i) {
        let (rest, s) = string_or_set(rest)?;
        return Ok((rest, Expr::Glob(f, s)));
    }
    if let Ok((rest, _)) = kw("prefix")(i) {
        let (rest, s) = string_or_set(rest)?;
        return Ok((rest, Expr::Prefix(f, s)));
    }
    if let Ok((rest, _)) = kw("matches")(i) {
        let (rest, (re, rspan)) = must_string(rest, "a regular expression as a string")?;
        return Ok((
            rest,
            Expr::Matches(
                f,
                Spanned {
                    node: re,
                    span: rspan,
                },
            ),
        ));
    }
    if let Ok((rest, _)) = kw("is")(i) {
        let (rest, t) = vtype(rest)?;
        return Ok((rest, Expr::IsType(f, t)));
    }
    if let Ok((rest, _)) = kw("present")(i) {
        return Ok((rest, Expr::Present(f)));
    }
    if let Ok((rest, _)) = kw("contains")(i) {
        let (rest, (s, sspan)) = must_string(rest, "a string after `contains`")?;
        return Ok((
            rest,
            Expr::Contains(
                f,
                Spanned {
                    node: s,
                    span: sspan,
                },
            ),
        ));
    }
    Err(expected(
        i,
        &format!(
            "a test after `{}` (`==`, `!=`, `<`, `in`, `glob`, `prefix`, `matches`, `is`, `present`, `contains`)",
            field_name(&f.node)
        ),
    ))
}

fn value(i: In<'_>) -> R<'_, Spanned<Lit>> {
    match literal(i) {
        Ok(x) => return Ok(x),
        Err(nom::Err::Error(_)) => {}
        Err(e) => return Err(e),
    }
    if let Ok((rest, (w, wspan))) = ident(i) {
        if ["mcp", "http", "none", "mtls", "jwt", "header", "node"].contains(&w.as_str()) {
            return Ok((
                rest,
                Spanned {
                    node: Lit::Str(w),
                    span: wspan,
                },
            ));
        }
        return Err(nom::Err::Failure(PErr {
            span: wspan,
            message: format!("expected a value, found `{w}`"),
            hint: Some(format!("write a string: `\"{w}\"`")),
        }));
    }
    Err(expected(
        i,
        "a value (a string, a number, `true`, `false`, `mcp`, `http`, ...)",
    ))
}

fn set(i: In<'_>) -> R<'_, SetRef> {
    if let Ok((rest, _)) = sym("[")(i) {
        let (rest, items) = literal_items(rest)?;
        return Ok((rest, SetRef::Inline(items)));
    }
    match ident(i) {
        Ok((rest, (n, nspan))) => Ok((
            rest,
            SetRef::Named(Spanned {
                node: n,
                span: nspan,
            }),
        )),
        Err(nom::Err::Error(_)) => Err(expected(
            i,
            "a list (`[\"a\", \"b\"]`) or the name of a `let` list",
        )),
        Err(e) => Err(e),
    }
}

fn string_or_set(i: In<'_>) -> R<'_, SetRef> {
    match string(i) {
        Ok((rest, (s, sspan))) => Ok((
            rest,
            SetRef::Inline(vec![Spanned {
                node: Lit::Str(s),
                span: sspan,
            }]),
        )),
        Err(nom::Err::Error(_)) => set(i).map_err(|e| match e {
            nom::Err::Failure(_) => expected(i, "a string, a list or the name of a `let` list"),
            other => other,
        }),
        Err(e) => Err(e),
    }
}

/// `ident { "." ident }`, where after `header.` a name may also contain `-`.
fn dotted_name(i: In<'_>) -> R<'_, (String, Span)> {
    let (i, _) = sp(i)?;
    let frag = *i.fragment();
    if !frag.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(nom::Err::Error(PErr::at(&i, "field")));
    }
    let mut len = 0usize;
    for (pos, c) in frag.char_indices() {
        let ok = c.is_ascii_alphanumeric()
            || c == '_'
            || (c == '.'
                && frag.get(pos.saturating_add(1)..).is_some_and(|s| {
                    s.starts_with(|n: char| n.is_ascii_alphanumeric() || n == '_' || n == '-')
                }))
            || (c == '-' && frag.get(..pos).is_some_and(|s| s.starts_with("header.")));
        if !ok {
            break;
        }
        len = pos.saturating_add(c.len_utf8());
    }
    let rest = i.take_from(len);
    Ok((
        rest,
        (frag.get(..len).unwrap_or("").to_owned(), span(&i, &rest)),
    ))
}

/// A field (cut on failure).
pub(crate) fn field(i: In<'_>) -> R<'_, Spanned<FieldRef>> {
    let (i, _) = sp(i)?;
    let start = i;
    if let Ok((rest, (p, pspan))) = arg_path(i) {
        return Ok((
            rest,
            Spanned {
                node: FieldRef::Arg(p),
                span: pspan,
            },
        ));
    }
    let (rest, (name, nspan)) = match dotted_name(i) {
        Ok(x) => x,
        Err(nom::Err::Error(_)) => {
            return Err(expected(
                i,
                "a field (`tool`, `target.host`, `args.x`, ...)",
            ));
        }
        Err(e) => return Err(e),
    };
    if name == "header"
        && let Ok((r, _)) = sym("[")(rest)
    {
        let (r, (h, _)) = must_string(r, "the header name as a string")?;
        let (r, _) = must_sym(r, "]", " to close `header[`")?;
        return Ok((
            r,
            Spanned {
                node: FieldRef::Header(h),
                span: span(&start, &r),
            },
        ));
    }
    if let Some(h) = name.strip_prefix("header.") {
        return Ok((
            rest,
            Spanned {
                node: FieldRef::Header(h.to_owned()),
                span: nspan,
            },
        ));
    }
    if let Some(f) = FieldRef::from_name(&name) {
        return Ok((
            rest,
            Spanned {
                node: f,
                span: nspan,
            },
        ));
    }
    let names = FieldRef::NAMED
        .iter()
        .filter_map(FieldRef::name)
        .chain(OTHER_NAMES);
    let mut d = Diagnostic::error(nspan, format!("unknown field `{name}`"));
    if let Some(s) = crate::diag::suggest(&name, names) {
        d = d.with_hint(format!("did you mean `{s}`?"));
    } else {
        d = d.with_hint("see the vocabulary table in docs/policy-language.md");
    }
    soft(d);
    Ok((
        rest,
        Spanned {
            node: FieldRef::Tool,
            span: nspan,
        },
    ))
}

/// `args { "." ident | "[" (string | integer) "]" }`. Recoverable when `args` is not here.
pub(crate) fn arg_path(i: In<'_>) -> R<'_, (Vec<PathSegment>, Span)> {
    let (i, _) = sp(i)?;
    let start = i;
    let (mut i, _) = kw("args")(i)?;
    let mut steps = Vec::new();
    loop {
        let frag = *i.fragment();
        if frag.starts_with('.') {
            let after = i.take_from(1);
            let (rest, (k, _)) = match ident(after) {
                Ok(x) if !after.fragment().starts_with(char::is_whitespace) => x,
                _ => {
                    return Err(expected(
                        after,
                        "an argument name after `.` (use `[\"...\"]` for other keys)",
                    ));
                }
            };
            steps.push(PathSegment::Key(k));
            i = rest;
        } else if frag.starts_with('[') {
            let after = i.take_from(1);
            if let Ok((rest, (k, _))) = string(after) {
                steps.push(PathSegment::Key(k));
                let (rest, _) = must_sym(rest, "]", " after the key")?;
                i = rest;
            } else {
                let (rest, (n, nspan)) = super::integer(after, "a string key or an array index")?;
                let n = u32::try_from(n).unwrap_or_else(|_| {
                    soft(Diagnostic::error(
                        nspan,
                        format!("array index `{n}` is too large"),
                    ));
                    u32::MAX
                });
                steps.push(PathSegment::Index(n));
                let (rest, _) = must_sym(rest, "]", " after the index")?;
                i = rest;
            }
        } else {
            return Ok((i, (steps, span(&start, &i))));
        }
    }
}

/// An argument path that must be there.
pub(crate) fn arg_path_required(i: In<'_>) -> R<'_, (Vec<PathSegment>, Span)> {
    match arg_path(i) {
        Ok(x) => Ok(x),
        Err(nom::Err::Error(_)) => Err(expected(i, "an argument path (`args.NAME`)")),
        Err(e) => Err(e),
    }
}
