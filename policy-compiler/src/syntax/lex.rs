//! Tokens of the policy language: whitespace and comments, keywords, identifiers, strings, numbers
//! with units. Every token parser skips leading whitespace and comments first, so a token's span
//! starts at its first character.

use super::{In, PErr, R};
use crate::ast::Span;
use nom::bytes::complete::{tag, take_while};
use nom::{Input, Parser};

/// The span from `start` (inclusive) to `end` (exclusive).
pub(crate) fn span(start: &In<'_>, end: &In<'_>) -> Span {
    Span {
        start: start.location_offset(),
        end: end.location_offset(),
        line: start.location_line(),
        col: u32::try_from(start.get_utf8_column()).unwrap_or(u32::MAX),
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Skip whitespace and comments (`# ...` and `// ...` to the end of the line).
pub(crate) fn sp(mut i: In<'_>) -> R<'_, ()> {
    loop {
        let (rest, _) = take_while(|c: char| c.is_whitespace()).parse(i)?;
        i = rest;
        let frag = *i.fragment();
        if frag.starts_with('#') || frag.starts_with("//") {
            let (rest, _) = take_while(|c: char| c != '\n').parse(i)?;
            i = rest;
        } else {
            return Ok((i, ()));
        }
    }
}

/// A short description of the token at `i`, for "found ..." in messages, and its byte length.
pub(crate) fn next_token(i: &In<'_>) -> (String, usize) {
    let frag = *i.fragment();
    let mut chars = frag.chars();
    match chars.next() {
        None => ("end of file".to_owned(), 0),
        Some('"') => {
            let end = frag
                .get(1..)
                .and_then(|s| s.find('"'))
                .map(|e| e.saturating_add(2))
                .unwrap_or(frag.len())
                .min(frag.len());
            (format!("`{}`", frag.get(..end).unwrap_or(frag)), end)
        }
        Some(c) if is_ident_char(c) || c == '.' => {
            let end = frag
                .find(|c: char| !(is_ident_char(c) || c == '.' || c == '-'))
                .unwrap_or(frag.len());
            (format!("`{}`", frag.get(..end).unwrap_or(frag)), end)
        }
        Some(c) => (format!("`{c}`"), c.len_utf8()),
    }
}

/// A fatal (cut) error at the next token: "expected X, found `tok`".
pub(crate) fn expected(i: In<'_>, what: &str) -> nom::Err<PErr> {
    let (i, _) = match sp(i) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let (found, len) = next_token(&i);
    let end = i.take_from(len.min(i.fragment().len()));
    nom::Err::Failure(PErr {
        span: span(&i, &end),
        message: format!("expected {what}, found {found}"),
        hint: None,
    })
}

/// A fatal error with a custom message over `[start, end)`.
pub(crate) fn fail_at(start: &In<'_>, end: &In<'_>, message: String) -> nom::Err<PErr> {
    nom::Err::Failure(PErr {
        span: span(start, end),
        message,
        hint: None,
    })
}

/// A keyword: the exact word, not followed by an identifier character. Recoverable on mismatch.
pub(crate) fn kw<'a>(word: &'static str) -> impl FnMut(In<'a>) -> R<'a, Span> {
    move |i: In<'a>| {
        let (i, _) = sp(i)?;
        let (rest, _) = tag(word).parse(i)?;
        if rest.fragment().chars().next().is_some_and(is_ident_char) {
            return Err(nom::Err::Error(PErr::at(&i, "keyword")));
        }
        Ok((rest, span(&i, &rest)))
    }
}

/// A keyword that must be there (cut): otherwise "expected `word` ...".
pub(crate) fn must_kw<'a>(i: In<'a>, word: &'static str, context: &str) -> R<'a, Span> {
    match kw(word)(i) {
        Ok(x) => Ok(x),
        Err(nom::Err::Error(_)) => Err(expected(i, &format!("`{word}`{context}"))),
        Err(e) => Err(e),
    }
}

/// A punctuation symbol. Recoverable on mismatch.
pub(crate) fn sym<'a>(s: &'static str) -> impl FnMut(In<'a>) -> R<'a, Span> {
    move |i: In<'a>| {
        let (i, _) = sp(i)?;
        let (rest, _) = tag(s).parse(i)?;
        Ok((rest, span(&i, &rest)))
    }
}

/// A symbol that must be there (cut).
pub(crate) fn must_sym<'a>(i: In<'a>, s: &'static str, context: &str) -> R<'a, Span> {
    match sym(s)(i) {
        Ok(x) => Ok(x),
        Err(nom::Err::Error(_)) => Err(expected(i, &format!("`{s}`{context}"))),
        Err(e) => Err(e),
    }
}

/// An identifier: an ASCII letter, then letters, digits and `_`. Recoverable on mismatch.
pub(crate) fn ident(i: In<'_>) -> R<'_, (String, Span)> {
    let (i, _) = sp(i)?;
    if !i
        .fragment()
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
    {
        return Err(nom::Err::Error(PErr::at(&i, "identifier")));
    }
    let (rest, name) = take_while(is_ident_char).parse(i)?;
    Ok((rest, ((*name.fragment()).to_owned(), span(&i, &rest))))
}

/// An identifier that must be there (cut).
pub(crate) fn must_ident<'a>(i: In<'a>, what: &str) -> R<'a, (String, Span)> {
    match ident(i) {
        Ok(x) => Ok(x),
        Err(nom::Err::Error(_)) => Err(expected(i, what)),
        Err(e) => Err(e),
    }
}

/// A string literal with escapes `\"`, `\\`, `\n`, `\t`, `\u{HEX}`. Recoverable when the next
/// character is not `"`; fatal on an unterminated string or a bad escape.
pub(crate) fn string(i: In<'_>) -> R<'_, (String, Span)> {
    let (i, _) = sp(i)?;
    let frag = *i.fragment();
    if !frag.starts_with('"') {
        return Err(nom::Err::Error(PErr::at(&i, "string")));
    }
    let mut out = String::new();
    let mut chars = frag.char_indices().skip(1);
    while let Some((pos, c)) = chars.next() {
        match c {
            '"' => {
                let rest = i.take_from(pos.saturating_add(1));
                return Ok((rest, (out, span(&i, &rest))));
            }
            '\n' => break,
            '\\' => {
                let Some((epos, e)) = chars.next() else { break };
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'u' => {
                        let body = frag.get(epos.saturating_add(1)..).unwrap_or("");
                        let close = body.find('}');
                        let hex = close
                            .and_then(|c| body.get(1..c))
                            .filter(|_| body.starts_with('{'));
                        let ch = hex
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32);
                        let (Some(ch), Some(close)) = (ch, close) else {
                            let start = i.take_from(pos);
                            let end = i.take_from(epos.saturating_add(1));
                            return Err(fail_at(
                                &start,
                                &end,
                                "invalid unicode escape: write `\\u{HEX}` with 1 to 6 hex digits of a valid character".to_owned(),
                            ));
                        };
                        out.push(ch);
                        // Skip past the closing brace.
                        for _ in 0..=close {
                            chars.next();
                        }
                    }
                    other => {
                        let start = i.take_from(pos);
                        let end = i.take_from(epos.saturating_add(other.len_utf8()));
                        return Err(nom::Err::Failure(PErr {
                            span: span(&start, &end),
                            message: format!("unknown escape `\\{other}` in a string"),
                            hint: Some(
                                "the escapes are `\\\"`, `\\\\`, `\\n`, `\\t` and `\\u{HEX}`; in a regex write `\\\\` for one backslash".to_owned(),
                            ),
                        }));
                    }
                }
            }
            c => out.push(c),
        }
    }
    let line_end = frag.find('\n').unwrap_or(frag.len());
    let end = i.take_from(line_end);
    Err(fail_at(&i, &end, "unterminated string".to_owned()))
}

/// A string that must be there (cut).
pub(crate) fn must_string<'a>(i: In<'a>, what: &str) -> R<'a, (String, Span)> {
    match string(i) {
        Ok(x) => Ok(x),
        Err(nom::Err::Error(_)) => Err(expected(i, what)),
        Err(e) => Err(e),
    }
}

/// A number as written: value, unit suffix, and whether it is a plain non-negative integer.
#[derive(Clone, Debug)]
pub(crate) struct NumTok {
    /// The number before any unit.
    pub value: f64,
    /// The integer before the unit, when it is one and fits.
    pub int: Option<u64>,
    /// `ms`, `s`, `m`, `h`, `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
    pub unit: Option<&'static str>,
    /// The text as written.
    pub text: String,
    /// Where.
    pub span: Span,
}

/// Units, longest first so `ms` wins over `m` and `MiB` over `MB`'s prefix.
const UNITS: [&str; 11] = [
    "KiB", "MiB", "GiB", "KB", "MB", "GB", "ms", "B", "s", "m", "h",
];

/// Size units and their byte multipliers.
pub(crate) fn size_multiplier(unit: &str) -> Option<u64> {
    Some(match unit {
        "B" => 1,
        "KB" => 1_000,
        "KiB" => 1_024,
        "MB" => 1_000_000,
        "MiB" => 1_048_576,
        "GB" => 1_000_000_000,
        "GiB" => 1_073_741_824,
        _ => return None,
    })
}

/// Duration units and their millisecond multipliers.
pub(crate) fn duration_multiplier(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    })
}

/// A number: `-`? digits (`.` digits)? unit?. Recoverable when no digit starts here.
pub(crate) fn number(i: In<'_>) -> R<'_, NumTok> {
    let (i, _) = sp(i)?;
    let frag = *i.fragment();
    let neg = frag.starts_with('-');
    let body = if neg {
        frag.get(1..).unwrap_or("")
    } else {
        frag
    };
    let int_len = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    if int_len == 0 {
        return Err(nom::Err::Error(PErr::at(&i, "number")));
    }
    let mut len = int_len;
    let after = body.get(int_len..).unwrap_or("");
    let mut has_fraction = false;
    if after.starts_with('.')
        && after
            .get(1..)
            .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_digit()))
    {
        let frac = after.get(1..).unwrap_or("");
        let frac_len = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        len = len.saturating_add(1).saturating_add(frac_len);
        has_fraction = true;
    }
    let digits = body.get(..len).unwrap_or("");
    let rest_str = body.get(len..).unwrap_or("");
    let unit = UNITS.iter().copied().find(|u| {
        rest_str.starts_with(u)
            && !rest_str
                .get(u.len()..)
                .is_some_and(|s| s.starts_with(is_ident_char))
    });
    let total = usize::from(neg)
        .saturating_add(len)
        .saturating_add(unit.map_or(0, str::len));
    let rest = i.take_from(total);
    if unit.is_none() && rest.fragment().starts_with(is_ident_char) {
        let (found, flen) = next_token(&i);
        let end = i.take_from(flen);
        return Err(nom::Err::Failure(PErr {
            span: span(&i, &end),
            message: format!("invalid number {found}"),
            hint: Some(
                "sizes are written `10MB`, `512KiB`, ...; durations `500ms`, `30s`, `15m`, `2h`"
                    .to_owned(),
            ),
        }));
    }
    let magnitude: f64 = digits.parse().unwrap_or(f64::INFINITY);
    let value = if neg { -magnitude } else { magnitude };
    let int = if neg || has_fraction {
        None
    } else {
        digits.parse::<u64>().ok()
    };
    Ok((
        rest,
        NumTok {
            value,
            int,
            unit,
            text: frag.get(..total).unwrap_or("").to_owned(),
            span: span(&i, &rest),
        },
    ))
}
