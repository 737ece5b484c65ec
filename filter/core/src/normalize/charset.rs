//! Which text a body's bytes are to its recipient. The filter reads every body as UTF-8; a
//! recipient that honours a declared `charset` reads the same bytes as other text: UTF-7 turns
//! the ASCII `+ACI-` into a quote, UTF-16 interleaves NULs, Latin-1 reads each byte of a UTF-8
//! sequence as a letter of its own. So a body is read only under a declaration whose reading is
//! the filter's: no charset, UTF-8, or (for a body that is pure ASCII) ASCII or a single-byte
//! charset whose lower half is ASCII. Anything else is refused, by allowlist: a list of the
//! charsets to refuse would miss the next spelling (`utf16`, `ucs2`, `utf-7-imap`, `cp037`).

/// Charsets whose reading of any byte string is the filter's.
const UTF8: &[&str] = &["utf-8", "utf8"];

/// Charsets whose reading of a pure-ASCII byte string is the filter's: ASCII, and the single-byte
/// families whose lower half is ASCII (ISO 8859, Windows code pages 1250-1258). Not ISO-2022
/// (its escape sequences are ASCII bytes), not Shift_JIS (0x5C and 0x7E are other letters).
fn ascii_compatible(name: &str) -> bool {
    const EXACT: &[&str] = &["us-ascii", "ascii", "latin1", "l1"];
    if EXACT.contains(&name) {
        return true;
    }
    let numbered = |prefix: &str, range: std::ops::RangeInclusive<u32>| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| range.contains(&n))
    };
    numbered("iso-8859-", 1..=16)
        || numbered("iso8859-", 1..=16)
        || numbered("windows-", 1250..=1258)
        || numbered("cp", 1250..=1258)
}

/// Whether `b` reads the same as ASCII in every ASCII-compatible charset: ASCII, without ESC
/// (no escape sequence can switch a decoder's mode).
fn plain_ascii(b: &[u8]) -> bool {
    b.iter().all(|&c| c.is_ascii() && c != 0x1b)
}

/// What the `charset` parameters of a `content-type` value declare, when one makes its recipient
/// read a body other than as UTF-8: the offending declaration (`Some`), else `None`. `body` is
/// the body when it is known (a request); `None` (a response, judged at its headers) accepts only
/// the declarations that read every byte string as the filter does, and ASCII.
pub(crate) fn foreign(content_type: &str, body: Option<&[u8]>) -> Option<String> {
    for param in content_type.split(';').skip(1) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let name = name.trim().to_ascii_lowercase();
        if !name.starts_with("charset") {
            continue;
        }
        let raw = value.trim();
        // A quoted value is one token between two quotes; anything else quoted (an escape, a
        // `;` inside the quotes that split the parameter) is not a charset the filter can name.
        let value = match raw.strip_prefix('"') {
            Some(rest) => match rest.strip_suffix('"') {
                Some(inner) if !inner.contains(['"', '\\']) => inner,
                _ => return Some(raw.to_owned()),
            },
            None => raw,
        };
        let value = value.trim().to_ascii_lowercase();
        // `charset*` (RFC 2231) and every name but exactly `charset` are refused with it.
        let readable = name == "charset"
            && (UTF8.contains(&value.as_str())
                || (value == "us-ascii" || value == "ascii") && body.is_none_or(plain_ascii)
                || body.is_some_and(plain_ascii) && ascii_compatible(&value));
        if !readable {
            return Some(format!("{name}={value}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::foreign;

    #[test]
    fn utf8_and_no_charset_are_read() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "text/event-stream; charset=utf8",
            "application/json; boundary=x",
        ] {
            assert_eq!(foreign(ct, None), None, "{ct}");
            assert_eq!(foreign(ct, Some("é".as_bytes())), None, "{ct}");
        }
    }

    #[test]
    fn every_other_charset_is_foreign_whatever_its_spelling() {
        for ct in [
            "application/json; charset=utf-7",
            "application/json; charset=UTF-7",
            "application/json; charset=\"utf-7\"",
            "application/json; charset=utf-7-imap",
            "application/json; charset=utf16",
            "application/json; charset=utf_16le",
            "application/json; charset=ucs2",
            "application/json; charset=utf-32",
            "application/json; charset=cp037",
            "application/json; charset=iso-2022-jp",
            "application/json; charset=shift_jis",
            "application/json; charset=\"utf-8;x\"",
            "application/json; charset=\"utf-8",
            "application/json; charset*=utf-8''",
            "application/json; charset=utf-8; charset=utf-7",
            "application/json; charset=",
        ] {
            assert!(foreign(ct, None).is_some(), "{ct}");
            assert!(foreign(ct, Some(b"{}")).is_some(), "{ct}");
        }
    }

    #[test]
    fn ascii_compatible_charsets_only_for_a_pure_ascii_body() {
        for cs in [
            "iso-8859-1",
            "ISO-8859-15",
            "latin1",
            "windows-1252",
            "cp1252",
        ] {
            let ct = format!("application/x-www-form-urlencoded; charset={cs}");
            assert_eq!(foreign(&ct, Some(b"a=1&b=%C3%A9")), None, "{cs}");
            assert!(foreign(&ct, Some("a=é".as_bytes())).is_some(), "{cs}");
            assert!(foreign(&ct, Some(b"a=\x1b$B")).is_some(), "{cs}: an escape");
            assert!(foreign(&ct, None).is_some(), "{cs}: a response");
        }
        let ct = "application/json; charset=us-ascii";
        assert_eq!(foreign(ct, None), None);
        assert_eq!(foreign(ct, Some(b"{}")), None);
        assert!(foreign(ct, Some("{\"a\":\"é\"}".as_bytes())).is_some());
    }
}
