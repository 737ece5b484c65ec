//! `multipart/form-data` bodies as the policy's `args`, like a urlencoded form (`form.rs`): a
//! server reads each part as a parameter (Flask's `request.form`, PHP's `$_POST`, multer), so a
//! rule on `args.role` reads it too, and a file part's content is the argument of its name.
//!
//! Read strictly (RFC 7578 over RFC 2046), because multipart is where parsers disagree most and
//! where request-smuggling tricks live. Refused (a [`MultipartError`], answered 400):
//! - a `boundary` parameter that is missing, empty, longer than 70 characters or given twice;
//! - delimiter and header lines that do not end in CRLF, or a body that does not start with the
//!   first delimiter (after an optional preamble) and end with the closing one (an epilogue after
//!   it is allowed, as RFC 2046 says);
//! - a part without `Content-Disposition: form-data; name="..."`, with `name` or `filename` given
//!   twice, with an extended `name*=` / `filename*=` (RFC 2231, which some parsers read and others
//!   ignore), or with a `Content-Transfer-Encoding` (parsers ignore or apply it);
//! - a part header line without a colon, or one folded over lines;
//! - a name given to two parts with different values (as in `form.rs`; a name ending in `[]`
//!   collects its values into an array).
//!
//! Values are strings: a part's content as UTF-8, with U+FFFD for bytes that are not (binary
//! files).

use serde_json::Value;

/// RFC 2046: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

/// Why a multipart body cannot be read one way only.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MultipartError(pub(crate) String);

fn bad(why: impl Into<String>) -> MultipartError {
    MultipartError(why.into())
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut found: Option<String> = None;
    for param in content_type.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if found.is_some() {
            return Err(bad("the multipart boundary is given twice"));
        }
        found = Some(value.to_owned());
    }
    match found {
        Some(b) if !b.is_empty() && b.len() <= MAX_BOUNDARY && !b.contains('"') => Ok(b),
        Some(_) => Err(bad(
            "the multipart boundary is empty, too long or malformed",
        )),
        None => Err(bad("a multipart body without a boundary parameter")),
    }
}

/// The fields of a multipart body, as a JSON object of strings (arrays for `[]` names).
pub(crate) fn parse(body: &[u8], boundary: &str) -> Result<Value, MultipartError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter: at the start, or after a preamble ending in CRLF.
    let first = if body.starts_with(delimiter) {
        0
    } else {
        let mut marker = b"\r\n".to_vec();
        marker.extend_from_slice(delimiter);
        find(body, &marker)
            .map(|at| at.saturating_add(2))
            .ok_or_else(|| bad("the multipart body has no delimiter line"))?
    };
    let mut next_delimiter = b"\r\n".to_vec();
    next_delimiter.extend_from_slice(delimiter);
    let mut fields = super::form::Fields::default();
    let mut at = first.saturating_add(delimiter.len());
    loop {
        let rest = body.get(at..).unwrap_or_default();
        if rest.starts_with(b"--") {
            // The closing delimiter: what follows is the epilogue.
            let after = rest.get(2..).unwrap_or_default();
            if !(after.is_empty() || after.starts_with(b"\r\n")) {
                return Err(bad(
                    "the closing multipart delimiter is not followed by CRLF",
                ));
            }
            return Ok(fields.into_value());
        }
        let Some(rest) = rest.strip_prefix(b"\r\n") else {
            return Err(bad("a multipart delimiter line does not end in CRLF"));
        };
        let head_len =
            find(rest, b"\r\n\r\n").ok_or_else(|| bad("a multipart part's headers do not end"))?;
        let name = part_name(rest.get(..head_len).unwrap_or_default())?;
        let content_start = head_len.saturating_add(4);
        let content_rest = rest.get(content_start..).unwrap_or_default();
        let content_len = find(content_rest, &next_delimiter)
            .ok_or_else(|| bad("a multipart part is not closed by a delimiter"))?;
        let content = content_rest.get(..content_len).unwrap_or_default();
        fields.add(name.into_bytes(), content).map_err(|name| {
            bad(format!(
                "multipart field `{}` appears more than once with different values: servers \
                 differ on which one they read",
                super::printable(&name)
            ))
        })?;
        // Past the content and the CRLF + delimiter that closed it.
        at = at
            .saturating_add(2)
            .saturating_add(content_start)
            .saturating_add(content_len)
            .saturating_add(next_delimiter.len());
    }
}

/// A part's field name, from its headers.
fn part_name(head: &[u8]) -> Result<String, MultipartError> {
    let head =
        std::str::from_utf8(head).map_err(|_| bad("a multipart part header is not UTF-8"))?;
    let mut disposition: Option<&str> = None;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) || line.contains(['\r', '\n']) {
            return Err(bad(
                "a multipart part header is folded or has a bare line break",
            ));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("a multipart part header line has no colon"))?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-transfer-encoding") {
            return Err(bad(
                "a multipart part with a Content-Transfer-Encoding: servers ignore or apply it",
            ));
        }
        if name.eq_ignore_ascii_case("content-disposition") {
            if disposition.is_some() {
                return Err(bad("a multipart part with two Content-Disposition headers"));
            }
            disposition = Some(value.trim());
        }
    }
    let disposition = disposition.ok_or_else(|| bad("a multipart part without a name"))?;
    let mut params = disposition.split(';');
    if !params
        .next()
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("form-data"))
    {
        return Err(bad("a multipart part that is not form-data"));
    }
    let (mut name, mut filename) = (None::<String>, false);
    for param in params {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| bad("a malformed Content-Disposition parameter"))?;
        let key = key.trim().to_ascii_lowercase();
        if key.ends_with('*') {
            return Err(bad(
                "an extended (RFC 2231) multipart parameter: parsers differ on reading it",
            ));
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if value.contains(['"', '\\']) {
            return Err(bad("a quoted multipart parameter with escapes"));
        }
        match key.as_str() {
            "name" if name.is_none() => name = Some(value.to_owned()),
            "filename" if !filename => filename = true,
            "name" | "filename" => {
                return Err(bad(format!("a multipart part names its `{key}` twice")));
            }
            _ => {}
        }
    }
    name.ok_or_else(|| bad("a multipart part without a name"))
}

/// The offset of the first `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (head, content) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(content.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    #[test]
    fn parts_are_arguments() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\"").unwrap(),
            "XyZ"
        );
        let b = body(&[
            ("Content-Disposition: form-data; name=\"role\"", "admin"),
            (
                "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
                 Content-Type: text/plain",
                "line one\r\nline two",
            ),
            ("content-disposition: form-data; name=tags[]", "a"),
            ("Content-Disposition: form-data; name=\"tags[]\"", "b"),
        ]);
        assert_eq!(
            parse(&b, "XyZ").unwrap(),
            json!({"role": "admin", "file": "line one\r\nline two", "tags[]": ["a", "b"]})
        );
        let mut with_preamble = b"ignored preamble\r\n".to_vec();
        with_preamble.extend_from_slice(&b);
        with_preamble.extend_from_slice(b"epilogue");
        assert_eq!(parse(&with_preamble, "XyZ").unwrap()["role"], "admin");
    }

    #[test]
    fn what_parsers_read_differently_is_refused() {
        for ct in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=a; boundary=b",
        ] {
            assert!(boundary(ct).is_err(), "{ct}");
        }
        let cases: [&[(&str, &str)]; 7] = [
            &[
                ("Content-Disposition: form-data; name=\"role\"", "viewer"),
                ("Content-Disposition: form-data; name=\"role\"", "admin"),
            ],
            &[("Content-Disposition: form-data; name*=UTF-8''role", "admin")],
            &[(
                "Content-Disposition: form-data; name=\"role\"; name=\"x\"",
                "admin",
            )],
            &[(
                "Content-Disposition: form-data; name=\"role\"\r\nContent-Transfer-Encoding: base64",
                "YWRtaW4=",
            )],
            &[("Content-Disposition: form-data;\r\n name=\"role\"", "admin")],
            &[("Content-Type: text/plain", "admin")],
            &[("Content-Disposition: attachment; name=\"role\"", "admin")],
        ];
        for parts in cases {
            assert!(parse(&body(parts), "XyZ").is_err(), "{parts:?}");
        }
        // Bare LF line ends, no closing delimiter, no delimiter at all.
        let lf = b"--XyZ\nContent-Disposition: form-data; name=\"role\"\n\nadmin\n--XyZ--\n";
        assert!(parse(lf, "XyZ").is_err());
        let open = b"--XyZ\r\nContent-Disposition: form-data; name=\"role\"\r\n\r\nadmin";
        assert!(parse(open, "XyZ").is_err());
        assert!(parse(b"role=admin", "XyZ").is_err());
    }
}
