//! Plain HTTP (egress) normalization: authority, path, query, CONNECT, optional JSON body.
//!
//! Rules (also in `docs/filter-normalization.md`):
//! - host: lowercase; one trailing dot stripped; port split off (default from the scheme);
//!   IPv6 literals `[..]` read as an address and written in canonical compressed form without
//!   brackets; a dotted-quad IPv4 written canonically; anything a resolver could read as a
//!   non-canonical IPv4 (`127.1`, `0x7f.0.0.1`, `017.0.0.1`) refused; userinfo (`user@host`),
//!   percent-escapes, non-ASCII and other characters outside `[a-z0-9.-_]` refused.
//! - path: percent-escapes of unreserved characters decoded (`%7E` -> `~`, `%2e` -> `.`), other
//!   escapes kept with upper-case hex, dot segments removed (RFC 3986 5.2.4, after decoding, so
//!   `%2e%2e` is `..`); nothing else collapsed (`//` stays). Refused as ambiguous (HTTP 400):
//!   an encoded `/` (`%2F`), `\` or `%5C`, `%00`, a malformed escape, a fragment, a dot segment
//!   with a `;` parameter (`/..;/`), control
//!   characters, spaces and non-ASCII; and, unless the host is one of `literal_path_hosts`, a path
//!   with two readings: an escape that still decodes after one decoding (`%252F`, `%2561`:
//!   servers that decode twice read `/`, `a`), or an empty segment (`//admin`: nginx and most
//!   routers merge it to `/admin`).
//! - IPv6 literals that embed an IPv4 address the network delivers to (`::ffff:a.b.c.d`,
//!   `::a.b.c.d`, the NAT64 `64:ff9b::a.b.c.d`) are that IPv4 address.
//! - query: raw, without `?`.

use std::net::{Ipv4Addr, Ipv6Addr};

use bundle::action::{Action, IntentSource, Kind, Target};
use sha2::Digest as _;

use super::{NormalizeConfig, Refusal, RequestHead, json, policy_headers, risk};

/// A normalized origin-form path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NormPath {
    pub(crate) path: String,
    pub(crate) query: String,
}

pub(super) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

pub(super) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(b.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

/// Normalize a raw origin-form `:path` (`/a/b?q`). `*` (asterisk-form) is kept as is. `literal`:
/// the server reads paths literally, so double-encoded escapes and empty segments are kept.
pub(crate) fn normalize_origin_path(raw: &str, literal: bool) -> Result<NormPath, Refusal> {
    if raw == "*" {
        return Ok(NormPath {
            path: "*".to_owned(),
            query: String::new(),
        });
    }
    if !raw.starts_with('/') {
        return Err(Refusal::bad_http("request path must start with `/`"));
    }
    if raw.contains('#') {
        return Err(Refusal::bad_http(
            "request path must not contain a fragment",
        ));
    }
    let (path_raw, query) = match raw.split_once('?') {
        Some((p, q)) => (p, q),
        None => (raw, ""),
    };
    for b in raw.bytes() {
        if b <= 0x20 || b >= 0x7f {
            return Err(Refusal::bad_http(
                "request path contains a space, control or non-ascii character",
            ));
        }
    }
    if path_raw.contains('\\') {
        return Err(Refusal::bad_http(
            "request path contains `\\` (ambiguous: some servers read it as `/`)",
        ));
    }
    let decoded = decode_unreserved(path_raw)?;
    // `/..;x/` is `..` to some servers (Tomcat, Jetty strip path parameters first) and a plain
    // segment to others: ambiguous.
    if decoded
        .split('/')
        .any(|seg| seg.contains(';') && matches!(seg.split(';').next(), Some("." | "..")))
    {
        return Err(Refusal::bad_http(
            "request path has a dot segment with a `;` parameter (ambiguous)",
        ));
    }
    if !literal {
        two_readings(&decoded)?;
    }
    Ok(NormPath {
        path: remove_dot_segments(&decoded),
        query: query.to_owned(),
    })
}

/// Refuse a (once-decoded) path that servers read two ways: an escape left after decoding that
/// decodes again (`%25` + two hex digits), or an empty segment (`//`).
fn two_readings(decoded: &str) -> Result<(), Refusal> {
    let b = decoded.as_bytes();
    let double = b.windows(5).any(
        |w| matches!(w, [b'%', b'2', b'5', h, l] if hex_val(*h).is_some() && hex_val(*l).is_some()),
    );
    if double {
        return Err(Refusal::bad_http(
            "request path has a double-encoded escape (`%25xx`): servers that decode twice read \
             another path",
        ));
    }
    // `/;x=1/admin`: a segment that is only a `;` parameter is empty to servers that drop
    // parameters (Servlet containers), which then merge it away.
    if decoded.contains("//") || decoded.split('/').any(|seg| seg.starts_with(';')) {
        return Err(Refusal::bad_http(
            "request path has an empty segment (`//`): servers that merge slashes read another path",
        ));
    }
    Ok(())
}

/// Decode `%XX` of unreserved characters; upper-case the hex of every other escape; refuse
/// escapes of `/`, `\`, NUL and malformed escapes.
fn decode_unreserved(p: &str) -> Result<String, Refusal> {
    let bytes = p.as_bytes();
    let mut out = String::with_capacity(p.len());
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(char::from(b));
            i = i.saturating_add(1);
            continue;
        }
        let hi = bytes.get(i.saturating_add(1)).copied().and_then(hex_val);
        let lo = bytes.get(i.saturating_add(2)).copied().and_then(hex_val);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(Refusal::bad_http(
                "malformed percent-escape in request path",
            ));
        };
        let v = (hi << 4) | lo;
        if overlong_at(bytes, i, v) {
            return Err(Refusal::bad_http(
                "request path has an overlong utf-8 escape (`%C0%AE`): decoders that accept \
                 overlong forms (IIS, older Java servers) read it as an ascii character",
            ));
        }
        match v {
            b'/' | b'\\' => {
                return Err(Refusal::bad_http(
                    "request path contains an encoded `/` or `\\` (ambiguous)",
                ));
            }
            0 => return Err(Refusal::bad_http("request path contains `%00`")),
            _ if is_unreserved(v) => out.push(char::from(v)),
            _ => {
                out.push('%');
                out.push(char::from(
                    b"0123456789ABCDEF"
                        .get(usize::from(hi))
                        .copied()
                        .unwrap_or(b'0'),
                ));
                out.push(char::from(
                    b"0123456789ABCDEF"
                        .get(usize::from(lo))
                        .copied()
                        .unwrap_or(b'0'),
                ));
            }
        }
        i = i.saturating_add(3);
    }
    Ok(out)
}

/// Whether the escape at `i` (decoding to `v`) starts an overlong UTF-8 sequence: a lead byte
/// that only ever encodes what a shorter form does (`C0`, `C1`), or `E0` / `F0` followed by an
/// escaped continuation below the shortest form's range. No valid UTF-8 has one; decoders that
/// accept them read `%C0%AE` as `.` and `%C0%AF` as `/`.
fn overlong_at(bytes: &[u8], i: usize, v: u8) -> bool {
    let next = || {
        let at = i.saturating_add(3);
        match (
            bytes.get(at),
            bytes.get(at.saturating_add(1)),
            bytes.get(at.saturating_add(2)),
        ) {
            (Some(b'%'), Some(&h), Some(&l)) => Some((hex_val(h)? << 4) | hex_val(l)?),
            _ => None,
        }
    };
    match v {
        0xC0 | 0xC1 => true,
        0xE0 => next().is_some_and(|c| (0x80..=0x9F).contains(&c)),
        0xF0 => next().is_some_and(|c| (0x80..=0x8F).contains(&c)),
        _ => false,
    }
}

/// How a server resolves a hierarchical resource URI (`file:///a/../b`, `repo://acme/%61pp`):
/// scheme and authority lowercased, escapes of unreserved characters decoded, repeated slashes
/// merged and dot segments removed. `Ok(None)` when that is the URI as sent, or when it is not
/// hierarchical (`urn:...`, no scheme). `Err` (why) for a path servers read two ways: an encoded
/// `/`, `\` or NUL, a `\`, a double-encoded escape, a malformed escape.
pub(crate) fn resource_reading(uri: &str) -> Result<Option<String>, String> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Ok(None);
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Ok(None);
    }
    let (authority, after) = match rest.strip_prefix("//") {
        Some(r) => {
            let end = r.find(['/', '?', '#']).unwrap_or(r.len());
            (
                Some(r.get(..end).unwrap_or_default()),
                r.get(end..).unwrap_or_default(),
            )
        }
        None => (None, rest),
    };
    let end = after.find(['?', '#']).unwrap_or(after.len());
    let (path, tail) = (
        after.get(..end).unwrap_or_default(),
        after.get(end..).unwrap_or_default(),
    );
    if !path.starts_with('/') {
        return Ok(None);
    }
    if path.contains('\\') {
        return Err("its path contains `\\` (some servers read it as `/`)".to_owned());
    }
    let decoded = decode_resource_path(path)?;
    let b = decoded.as_bytes();
    if b.windows(5).any(
        |w| matches!(w, [b'%', b'2', b'5', h, l] if hex_val(*h).is_some() && hex_val(*l).is_some()),
    ) {
        return Err(
            "its path has a double-encoded escape (`%25xx`): servers that decode twice read \
             another resource"
                .to_owned(),
        );
    }
    let mut merged = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    let mut read = scheme.to_ascii_lowercase();
    read.push(':');
    if let Some(a) = authority {
        read.push_str("//");
        read.push_str(&a.to_ascii_lowercase());
    }
    read.push_str(&remove_dot_segments(&merged));
    read.push_str(tail);
    Ok((read != uri).then_some(read))
}

/// A resource URI's path with the escapes of unreserved characters decoded (any other escape
/// kept as sent; other characters, non-ASCII too, kept). `Err` for an escape of `/`, `\\` or
/// NUL, or a malformed one.
fn decode_resource_path(p: &str) -> Result<String, String> {
    let bytes = p.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i = i.saturating_add(1);
            continue;
        }
        let hi = bytes.get(i.saturating_add(1)).copied().and_then(hex_val);
        let lo = bytes.get(i.saturating_add(2)).copied().and_then(hex_val);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err("its path has a malformed percent-escape".to_owned());
        };
        let v = (hi << 4) | lo;
        if overlong_at(bytes, i, v) {
            return Err(
                "its path has an overlong utf-8 escape (`%C0%AE`), an ascii character to \
                 decoders that accept overlong forms"
                    .to_owned(),
            );
        }
        match v {
            b'/' | b'\\' | 0 => {
                return Err(
                    "its path has an encoded `/`, `\\` or NUL (servers read it two ways)"
                        .to_owned(),
                );
            }
            _ if is_unreserved(v) => out.push(v),
            _ => out.extend_from_slice(bytes.get(i..i.saturating_add(3)).unwrap_or_default()),
        }
        i = i.saturating_add(3);
    }
    // Only ASCII escapes were decoded into ASCII bytes: the text stays UTF-8.
    String::from_utf8(out).map_err(|_| "its path is not UTF-8".to_owned())
}

/// RFC 3986 section 5.2.4 on an absolute path; `..` above the root stays at the root.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || s.is_empty() {
        s.push('/');
    }
    s
}

/// A parsed authority.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Authority {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
}

/// Parse `host[:port]` strictly (see the module docs).
pub(crate) fn parse_authority(raw: &str) -> Result<Authority, Refusal> {
    if raw.is_empty() {
        return Err(Refusal::bad_http("request has no authority (host)"));
    }
    if raw.contains('@') {
        return Err(Refusal::bad_http(
            "authority must not contain userinfo (`@`)",
        ));
    }
    let (host_part, port_part) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(Refusal::bad_http("unterminated ipv6 literal in authority"));
        };
        let addr: Ipv6Addr = inside
            .parse()
            .map_err(|_| Refusal::bad_http("invalid ipv6 literal in authority"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| Refusal::bad_http("invalid characters after ipv6 literal"))?,
            ),
        };
        if let Some(v4) = embedded_ipv4(addr) {
            return Ok(Authority {
                host: v4.to_string(),
                port: parse_port(port)?,
            });
        }
        return Ok(Authority {
            host: addr.to_string(),
            port: parse_port(port)?,
        });
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let port = parse_port(port_part)?;
    Ok(Authority {
        host: normalize_host(host_part)?,
        port,
    })
}

/// The IPv4 address an IPv6 literal delivers to: IPv4-mapped (`::ffff:a.b.c.d`), the deprecated
/// IPv4-compatible form (`::a.b.c.d`, not `::` or `::1`), and the NAT64 well-known prefix
/// (`64:ff9b::a.b.c.d`, RFC 6052). A host rule written for the IPv4 address must hold for them.
pub(super) fn embedded_ipv4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = a.segments();
    let tail = |s: &[u16; 8]| {
        let [.., hi, lo] = *s;
        Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
    };
    match s {
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail(&s)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail(&s)),
        _ => None,
    }
}

fn parse_port(p: Option<&str>) -> Result<Option<u16>, Refusal> {
    match p {
        None | Some("") => Ok(None),
        Some(p) => {
            if !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
                return Err(Refusal::bad_http("invalid port in authority"));
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(Refusal::bad_http("invalid port in authority")),
                Ok(n) => Ok(Some(n)),
            }
        }
    }
}

fn normalize_host(h: &str) -> Result<String, Refusal> {
    let lower = h.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if host.is_empty() || host.len() > 253 {
        return Err(Refusal::bad_http("invalid host in authority"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(Refusal::bad_http(
            "host contains characters outside `a-z 0-9 - . _` (send IDNs as punycode)",
        ));
    }
    if host.split('.').any(str::is_empty) {
        return Err(Refusal::bad_http("host has an empty label"));
    }
    // A last label that is numeric (or hex) makes the WHATWG URL parser and inet_aton read the
    // whole host as an IPv4 address; only the canonical dotted quad is unambiguous.
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric_last = last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x");
    if numeric_last {
        return match host.parse::<Ipv4Addr>() {
            Ok(a) if a.to_string() == host => Ok(host.to_owned()),
            _ => Err(Refusal::bad_http(
                "host looks like a non-canonical ipv4 address (ambiguous)",
            )),
        };
    }
    Ok(host.to_owned())
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// The normalized path of a request target in origin-form (`/a?b`) or absolute-form
/// (`http://h/a?b`, forward proxy).
pub(crate) fn normalize_target_path(raw: &str, literal: bool) -> Result<NormPath, Refusal> {
    if raw.starts_with('/') || raw == "*" {
        normalize_origin_path(raw, literal)
    } else {
        let (_, _, origin) = split_absolute(raw)?;
        normalize_origin_path(&origin, literal)
    }
}

/// Split an absolute-form request target (`http://host[:port]/path?q`) into scheme, authority
/// and origin-form path.
fn split_absolute(raw: &str) -> Result<(String, &str, String), Refusal> {
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| Refusal::bad_http("request path must start with `/` or `http(s)://`"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(Refusal::bad_http(
            "absolute request target must be http or https",
        ));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(end);
    let path = if tail.is_empty() {
        "/".to_owned()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_owned()
    };
    Ok((scheme, auth, path))
}

/// Normalize a plain HTTP request (egress, CONNECT, or a non-MCP path) into an action.
///
/// `body` is the complete buffered body when [`super::needs_body`] asked for it, else `None`.
/// With `inspect_http_bodies`, a JSON body (`content-type` `application/json` or `*+json`, or
/// any body that starts like a JSON object or array) is parsed strictly into `arguments` (a
/// malformed one is refused with 400, see `inspect_body`), a form body
/// (`application/x-www-form-urlencoded`, `multipart/form-data`) into `arguments` of its fields
/// (`form.rs`, `multipart.rs`; one servers read differently is refused with 400); every other
/// body is risk-scanned as text. `size` is
/// the body length, or the `content-length` header when the body was not buffered.
pub fn normalize_http(
    head: &RequestHead,
    body: Option<&[u8]>,
    cfg: &NormalizeConfig,
) -> Result<Action, Refusal> {
    let connect = head.method.eq_ignore_ascii_case("CONNECT");
    let mut target = if connect {
        connect_target(head)?
    } else {
        request_target(head, super::literal_paths(head, cfg))?
    };
    if target.server.is_empty() {
        target.server = target.host.clone();
    }
    let mut action = Action {
        kind: Kind::Http,
        operation: head.method.to_ascii_uppercase(),
        target,
        headers: policy_headers(head).into(),
        session_id: super::session_id(head),
        trace_id: super::trace_id(head),
        declared_intent: head.header("x-portcullis-intent").map(str::to_owned),
        intent_source: if head.header("x-portcullis-intent").is_some() {
            IntentSource::Header
        } else {
            IntentSource::None
        },
        ..Action::default()
    };
    let mut scan = super::head_scan(head);
    match body {
        Some(b) => {
            if b.len() > cfg.max_body_bytes {
                return Err(Refusal::too_large(cfg.max_body_bytes));
            }
            action.size = u64::try_from(b.len()).unwrap_or(u64::MAX);
            if cfg.inspect_http_bodies {
                inspect_body(head, b, cfg, &mut action, &mut scan)?;
            }
        }
        None => {
            action.size = head
                .header("content-length")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    action.risk = scan.risk();
    Ok(action)
}

/// A body that is not JSON: scanned as text, and a form's fields read as the server's
/// parameters, the policy's `args`.
fn inspect_text_body(
    head: &RequestHead,
    body: &[u8],
    action: &mut Action,
    scan: &mut risk::Scan,
) -> Result<(), Refusal> {
    scan.text(&String::from_utf8_lossy(body));
    let fields = match form_kind(head) {
        Some(FormKind::Urlencoded) => Some(
            super::form::parse(body)
                .map_err(|e| Refusal::bad_http(format!("request body: {}", e.reason())))?,
        ),
        Some(FormKind::Multipart(ct)) => Some(
            super::multipart::boundary(&ct)
                .and_then(|b| super::multipart::parse(body, &b))
                .map_err(|e| Refusal::bad_http(format!("request body: {}", e.0)))?,
        ),
        None => None,
    };
    if let Some(fields) = fields {
        action.arguments = fields;
        named_by(action, body, 0..body.len());
        scan.value(&action.arguments);
    }
    Ok(())
}

fn is_json_content_type(head: &RequestHead) -> bool {
    let Some(ct) = head.header("content-type") else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn inspect_body(
    head: &RequestHead,
    body: &[u8],
    cfg: &NormalizeConfig,
    action: &mut Action,
    scan: &mut risk::Scan,
) -> Result<(), Refusal> {
    if body.is_empty() {
        return Ok(());
    }
    // A body is judged as what servers read it as, not as what its label says: many parse JSON
    // whatever the content type (`force=True`, `json.NewDecoder(r.Body)`, `express.json({type:
    // "*/*"})`). So a body that starts like JSON is JSON to the policy, declared or not. One that
    // is not strict JSON is refused when declared, and undeclared unless no JSON parser reads it
    // either (a syntax error): a byte-order mark, trailing data, a duplicate or case-twin member,
    // bad UTF-8, a lone surrogate or an overflowing number are all forgiven by some server.
    let declared = is_json_content_type(head);
    if !declared && !looks_like_json(body) {
        return inspect_text_body(head, body, action, scan);
    }
    match json::parse(body, cfg.max_json_depth) {
        Ok(parsed) => {
            action.arguments = parsed.value;
            named_by(action, body, parsed.value_span);
            scan.value(&action.arguments);
        }
        // Not JSON to any parser: read as its label says (a form body may start with `[`, as
        // `[role]=admin` does, which qs and Rack read as `role`).
        Err(json::JsonError::Syntax { .. }) if !declared => {
            return inspect_text_body(head, body, action, scan);
        }
        Err(e) => {
            let how = if declared {
                "declared as json"
            } else {
                "read as json by servers that ignore its content type"
            };
            return Err(Refusal::bad_http(format!(
                "request body {how}: {}",
                e.reason()
            )));
        }
    }
    Ok(())
}

/// Name the arguments read from `body[span]` by the SHA-256 of that text, as the digest does. When
/// the span is the whole body it is also the body's hash (`body_sha256`, which the stream would
/// otherwise compute again over the same bytes).
fn named_by(action: &mut Action, body: &[u8], span: std::ops::Range<usize>) {
    let whole = span == (0..body.len());
    let Some(text) = body.get(span) else {
        return;
    };
    let hash: [u8; 32] = sha2::Sha256::digest(text).into();
    action.arguments_sha256 = Some(hash);
    if whole {
        action.body_sha256 = Some(hex::encode(hash));
    }
}

/// A body type whose fields servers read as parameters.
enum FormKind {
    /// `application/x-www-form-urlencoded`.
    Urlencoded,
    /// `multipart/form-data`, with its whole content type (for the boundary).
    Multipart(String),
}

fn form_kind(head: &RequestHead) -> Option<FormKind> {
    let ct = head.header("content-type")?;
    let mime = ct.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(FormKind::Urlencoded)
    } else if mime.eq_ignore_ascii_case("multipart/form-data") {
        Some(FormKind::Multipart(ct.to_owned()))
    } else {
        None
    }
}

/// Whether a body starts like a JSON object or array (after an optional UTF-8 byte-order mark and
/// whitespace).
fn looks_like_json(body: &[u8]) -> bool {
    let text = body.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(body);
    matches!(
        text.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

fn request_target(head: &RequestHead, literal: bool) -> Result<Target, Refusal> {
    let (scheme, auth_raw, origin) = if head.path.starts_with('/') || head.path == "*" {
        let scheme = match head.scheme.to_ascii_lowercase() {
            s if s.is_empty() => "http".to_owned(),
            s => s,
        };
        (scheme, head.authority.as_str(), head.path.clone())
    } else {
        let (scheme, auth, origin) = split_absolute(&head.path)?;
        // Absolute form: the URI's authority is the target; a different `:authority` is a
        // request two hops could route differently.
        if !head.authority.is_empty() {
            let a = parse_authority(auth)?;
            let b = parse_authority(&head.authority)?;
            let dp = default_port(&scheme);
            if a.host != b.host || a.port.unwrap_or(dp) != b.port.unwrap_or(dp) {
                return Err(Refusal::bad_http(
                    "absolute request target and host header name different hosts",
                ));
            }
        }
        (scheme, auth, origin)
    };
    if scheme != "http" && scheme != "https" {
        return Err(Refusal::bad_http("scheme must be http or https"));
    }
    let auth = parse_authority(auth_raw)?;
    let norm = normalize_origin_path(&origin, literal)?;
    Ok(Target {
        port: auth.port.unwrap_or_else(|| default_port(&scheme)),
        host: auth.host,
        path: norm.path,
        query: norm.query,
        scheme,
        server: String::new(),
    })
}

fn connect_target(head: &RequestHead) -> Result<Target, Refusal> {
    if !head.path.is_empty() {
        return Err(Refusal::bad_http("connect request must not have a path"));
    }
    let auth = parse_authority(&head.authority)?;
    let Some(port) = auth.port else {
        return Err(Refusal::bad_http("connect authority must be `host:port`"));
    };
    Ok(Target {
        host: auth.host,
        port,
        path: "/".to_owned(),
        query: String::new(),
        scheme: head.scheme.to_ascii_lowercase(),
        server: String::new(),
    })
}

/// The MCP target of a request on an MCP path (host/port/scheme from the authority, normalized
/// path, configured server name; the host for a forward-proxied absolute-form request).
pub(crate) fn mcp_target(head: &RequestHead, cfg: &NormalizeConfig) -> Result<Target, Refusal> {
    let mut t = request_target(head, super::literal_paths(head, cfg))?;
    // A forward-proxied (absolute-form) request goes to the host it names, not to the MCP server
    // this filter fronts.
    let proxied = !(head.path.starts_with('/') || head.path == "*");
    t.server = if cfg.server_name.is_empty() || proxied {
        t.host.clone()
    } else {
        cfg.server_name.clone()
    };
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_resolve_as_servers_resolve_them() {
        let r = |u: &str| super::resource_reading(u);
        assert_eq!(r("file:///a/b.md"), Ok(None));
        assert_eq!(r("urn:isbn:123"), Ok(None));
        assert_eq!(r("notes"), Ok(None));
        assert_eq!(r("C:/x/../y"), Ok(Some("c:/y".to_owned())));
        assert_eq!(
            r("Repo://ACME/app/./src/../README.md?ref=main#top"),
            Ok(Some("repo://acme/app/README.md?ref=main#top".to_owned()))
        );
        assert_eq!(
            r("file:///a//b/%7Ec"),
            Ok(Some("file:///a/b/~c".to_owned()))
        );
        assert_eq!(
            r("file:///caf\u{e9}/../x"),
            Ok(Some("file:///x".to_owned()))
        );
        assert!(r("file:///a/%2F..").is_err());
        assert!(r("file:///a/%2525").is_err());
        assert!(r("file:///a\\b").is_err());
    }

    #[test]
    fn overlong_utf8_escapes_are_refused() {
        for p in [
            "/%C0%AE%C0%AE/admin",
            "/x/%c0%af/admin",
            "/%c1%9c",
            "/%E0%80%AE",
            "/%F0%80%80%AE",
        ] {
            let e = normalize_origin_path(p, false).unwrap_err();
            assert!(e.reason.contains("overlong"), "{p}: {}", e.reason);
        }
        // Shortest forms pass, as escapes kept.
        for p in ["/caf%C3%A9", "/%E0%A4%85", "/%F0%9F%98%80", "/%E0", "/%C3"] {
            assert!(normalize_origin_path(p, false).is_ok(), "{p}");
        }
        assert!(resource_reading("file:///w/%c0%ae%c0%ae/etc").is_err());
    }

    #[test]
    fn dot_segments() {
        assert_eq!(remove_dot_segments("/a/b/../c"), "/a/c");
        assert_eq!(remove_dot_segments("/a/./b/."), "/a/b/");
        assert_eq!(remove_dot_segments("/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/a//b"), "/a//b");
        assert_eq!(remove_dot_segments("/"), "/");
        assert_eq!(remove_dot_segments("/a/"), "/a/");
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_authority("Example.COM.:8080").unwrap().host,
            "example.com"
        );
        assert_eq!(parse_authority("[::1]:9").unwrap().host, "::1");
        assert_eq!(parse_authority("[0:0::1]").unwrap().host, "::1");
        assert!(parse_authority("127.1").is_err());
        assert!(parse_authority("0x7f.0.0.1").is_err());
        assert!(parse_authority("017.0.0.1").is_err());
        assert!(parse_authority("a..b").is_err());
        assert!(parse_authority("u@h").is_err());
        assert!(parse_authority("h:0").is_err());
        assert!(parse_authority("h:65536").is_err());
        assert!(parse_authority("h:+1").is_err());
        assert_eq!(parse_authority("10.0.0.1").unwrap().host, "10.0.0.1");
    }
}
