//! The escapes a reader decodes on the way to the text: percent-escapes (`%49`), HTML and XML
//! character references (`&#73;`, `&#x49;`, `&amp;`) and backslash escapes (`\u0049`, `\x49`).
//! A server reading a form or a URL, a browser, a template or a model reads through them, so a
//! detector that judges only the written bytes misses `AKIA%49OSF...` or `&#105;gnore previous`.
//! Detectors read each text as written and then [`decodings`] of it: decoded once, twice and
//! three times (double encoding), stopping when a round changes nothing.
//!
//! Used by the secret and PII scan (`risk`) and the injection detector (`results::inject`).

/// How many times escapes are decoded: `%2549` is `%49` once and `I` twice.
pub(crate) const ROUNDS: usize = 3;

/// The named character references decoded, with what they stand for.
const NAMED_REFERENCES: [(&str, char); 6] = [
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", ' '),
];

/// One round of decoding the escapes a model reads through: percent-escapes (`%49`), HTML and
/// XML character references (`&#73;`, `&#x49;`, `&amp;`; the `;` may be missing, as browsers
/// allow for numeric ones) and backslash escapes (`\u0049`, `\x49`, `\n`, `\t`). `None` when
/// the text has none. A bad escape is kept as it is.
pub(crate) fn once(text: &str) -> Option<String> {
    if !text.bytes().any(is_escape_start) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        let rest = bytes.get(i..).unwrap_or_default();
        let mut taken = escape_at(rest, &mut out);
        if taken == 0 {
            out.push(b);
            taken = 1;
        } else {
            changed = true;
        }
        i = i.saturating_add(taken);
    }
    changed.then(|| String::from_utf8_lossy(&out).into_owned())
}

/// A byte an escape starts with.
pub(crate) fn is_escape_start(b: u8) -> bool {
    matches!(b, b'%' | b'&' | b'\\')
}

/// The escapes of `text` that stand for something other than white space, as (offset, length):
/// where a decoded reading can hold a letter the written text does not. `\n` or `%20` only
/// separate words; `%49`, `&#65;` or `%25` (a `%` that starts another escape) can join them.
pub(crate) fn spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    // Allocated at the first escape only: most texts have none.
    let mut scratch = Vec::new();
    let mut from = 0usize;
    while let Some(found) = bytes
        .get(from..)
        .and_then(|rest| memchr::memchr3(b'%', b'&', b'\\', rest))
    {
        let i = from.saturating_add(found);
        scratch.clear();
        let taken = escape_at(bytes.get(i..).unwrap_or_default(), &mut scratch);
        if taken > 0 && !scratch.iter().all(u8::is_ascii_whitespace) {
            out.push((i, taken));
        }
        from = i.saturating_add(taken.max(1));
    }
    out
}

/// The escape `rest` starts with, decoded into `out`; its length in `rest`, or 0 when `rest`
/// starts with no escape (or a bad one, kept as written) and nothing was pushed.
fn escape_at(rest: &[u8], out: &mut Vec<u8>) -> usize {
    let hex = |s: &[u8]| -> Option<u32> {
        std::str::from_utf8(s)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let push_char = |out: &mut Vec<u8>, c: u32| -> bool {
        match char::from_u32(c) {
            Some(ch) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                true
            }
            None => false,
        }
    };
    let mut taken = 0usize;
    let Some(&b) = rest.first() else {
        return 0;
    };
    match b {
        b'%' => {
            if let Some(v) = rest.get(1..3).and_then(hex) {
                out.push(u8::try_from(v).unwrap_or(b' '));
                taken = 3;
            }
        }
        b'\\' => match rest.get(1) {
            Some(b'u') => {
                if let Some(v) = rest.get(2..6).and_then(hex)
                    && push_char(out, v)
                {
                    taken = 6;
                }
            }
            Some(b'x') => {
                if let Some(v) = rest.get(2..4).and_then(hex)
                    && push_char(out, v)
                {
                    taken = 4;
                }
            }
            Some(b'n' | b't' | b'r') => {
                out.push(b' ');
                taken = 2;
            }
            _ => {}
        },
        b'&' => {
            if rest.get(1) == Some(&b'#') {
                let (digits, radix, start) = match rest.get(2) {
                    Some(b'x' | b'X') => (rest.get(3..).unwrap_or_default(), 16, 3usize),
                    _ => (rest.get(2..).unwrap_or_default(), 10, 2),
                };
                let n = digits
                    .iter()
                    .take(8)
                    .take_while(|d| {
                        if radix == 16 {
                            d.is_ascii_hexdigit()
                        } else {
                            d.is_ascii_digit()
                        }
                    })
                    .count();
                let value = digits
                    .get(..n)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| u32::from_str_radix(d, radix).ok());
                if n > 0
                    && let Some(v) = value
                    && push_char(out, v)
                {
                    let semi = usize::from(digits.get(n) == Some(&b';'));
                    taken = start.saturating_add(n).saturating_add(semi);
                }
            } else if let Some((name, c)) = NAMED_REFERENCES.iter().find(|(name, _)| {
                rest.get(1..)
                    .is_some_and(|r| r.starts_with(name.as_bytes()))
                    && rest.get(name.len().saturating_add(1)) == Some(&b';')
            }) && push_char(out, u32::from(*c))
            {
                taken = name.len().saturating_add(2);
            }
        }
        _ => {}
    }
    taken
}

/// Call `read` with each decoding of `text` in turn ([`once`], up to [`ROUNDS`] times), until
/// `read` returns true (then true) or a round finds no escape left (then false). `text` itself is
/// not passed: the caller has read it already.
pub(crate) fn decodings(text: &str, mut read: impl FnMut(&str) -> bool) -> bool {
    let mut current = std::borrow::Cow::Borrowed(text);
    for _ in 0..ROUNDS {
        let Some(next) = once(&current) else {
            return false;
        };
        if read(&next) {
            return true;
        }
        current = std::borrow::Cow::Owned(next);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        decodings(text, |t| {
            out.push(t.to_owned());
            false
        });
        out
    }

    #[test]
    fn each_round_decodes_one_layer() {
        assert_eq!(all("AKIA%2549OSF"), ["AKIA%49OSF", "AKIAIOSF"]);
        assert_eq!(all("&#x41;&#66;&amp;C"), ["AB&C"]);
        assert_eq!(all(r"\u0041KIA \x42"), ["AKIA B"]);
        assert!(
            all("plain text, 100% sure").is_empty(),
            "a bad escape is no decoding"
        );
        assert!(all("no escapes").is_empty());
    }

    #[test]
    fn stops_when_the_reader_is_satisfied() {
        let mut rounds = 0;
        assert!(decodings("%252541", |t| {
            rounds += 1;
            t == "%2541"
        }));
        assert_eq!(rounds, 1);
    }
}
