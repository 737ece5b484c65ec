//! URLs in arguments as the tool's HTTP client fetches them (docs/filter-normalization.md, "Paths
//! and URLs in arguments").
//!
//! A rule such as `args.url prefix "http://169.254.169.254/"` judges the text it is given, but a
//! fetch tool's URL parser reads `HTTP://0xA9FEA9FE/`, `http://[::ffff:a9fe:a9fe]/`,
//! `http://x@169.254.169.254./` and `http://169.254.169.254:80/a/../` as that same address. So an
//! `http` or `https` URL in the arguments is also judged in its canonical form: scheme and host
//! lowercased, userinfo dropped (the host follows the last `@`), the host's escapes decoded, a
//! trailing dot dropped, any IPv4 spelling `inet_aton` accepts (`2130706433`, `0x7f.1`,
//! `0177.0.0.1`) and an IPv6 literal carrying an IPv4 address (mapped, compatible, NAT64) written
//! as the dotted quad, the default port dropped, `\` read as `/` in the path, escapes of
//! unreserved characters decoded, dot segments resolved, the fragment (never sent) dropped.
//!
//! Parsers disagree on one thing that matters: WHATWG URL parsers (browsers, Node's `fetch`,
//! `reqwest`'s `url`) end the authority at a `\`, RFC 3986 parsers (Python's `urllib`, Go's
//! `net/url`) do not, so `http://good.example\@evil.example/` is `good.example` to the first and
//! `evil.example` to the second. Such a URL is read both ways.

use std::net::{Ipv4Addr, Ipv6Addr};

/// How a parser ends a URL's authority.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Parser {
    /// WHATWG: at `/`, `\`, `?` or `#`.
    Whatwg,
    /// RFC 3986: at `/`, `?` or `#`.
    Rfc3986,
}

/// `s` as `parser` reads it, in canonical form, when `s` is an `http(s)` URL and that changes it.
pub(crate) fn canonical(s: &str, parser: Parser) -> Option<String> {
    let (scheme, rest) = split_scheme(s)?;
    let authority_end = rest
        .bytes()
        .position(|c| matches!(c, b'/' | b'?' | b'#') || (c == b'\\' && parser == Parser::Whatwg))
        .unwrap_or(rest.len());
    let (authority, tail) = (
        rest.get(..authority_end).unwrap_or_default(),
        rest.get(authority_end..).unwrap_or_default(),
    );
    // The host follows the last `@` (WHATWG and urllib alike); userinfo never reaches the host.
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = split_port(hostport);
    let host = canonical_host(host)?;
    let default = if scheme == "https" { 443 } else { 80 };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            let n = p.trim_start_matches('0');
            (n != default.to_string()).then_some(if n.is_empty() { "0" } else { n })
        }
        Some(_) => return None, // not a URL any parser fetches
    };
    let tail = tail.split_once('#').map_or(tail, |(t, _)| t);
    let (path, query) = tail
        .split_once('?')
        .map_or((tail, None), |(p, q)| (p, Some(q)));
    let path = if parser == Parser::Whatwg {
        path.replace('\\', "/")
    } else {
        path.to_owned()
    };
    let path = decode_unreserved(&path);
    let path = super::dots::resolved_path(&path).unwrap_or(path);
    let mut out = String::with_capacity(s.len());
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(&host);
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    out.push_str(if path.is_empty() { "/" } else { &path });
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    (out != s).then_some(out)
}

/// The lowercased scheme (`http` or `https`) and what follows `://` (a look at the start only).
fn split_scheme(s: &str) -> Option<(&'static str, &str)> {
    for (scheme, len) in [("http", 7), ("https", 8)] {
        if let (Some(head), Some(rest)) = (s.get(..len), s.get(len..))
            && head
                .get(..len.saturating_sub(3))
                .is_some_and(|h| h.eq_ignore_ascii_case(scheme))
            && head.ends_with("://")
        {
            return Some((scheme, rest));
        }
    }
    None
}

/// Host and port of `host[:port]` or `[v6][:port]`.
fn split_port(hp: &str) -> (&str, Option<&str>) {
    if hp.starts_with('[') {
        return match hp.find(']') {
            Some(end) => {
                let (h, after) = hp.split_at(end.saturating_add(1));
                (h, after.strip_prefix(':'))
            }
            None => (hp, None),
        };
    }
    match hp.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hp, None),
    }
}

/// The host a `host[:port]` value names (a `Host`-like header: `x-forwarded-host`,
/// `forwarded: host=`), as `target.host` writes hosts: canonical, an IPv6 address without its
/// brackets. `None` when it names none.
pub(crate) fn host_reading(value: &str) -> Option<String> {
    let (host, _) = split_port(value.trim());
    let host = canonical_host(host)?;
    Some(
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map_or_else(|| host.clone(), str::to_owned),
    )
}

/// The host as resolvers read it, or `None` when no parser would fetch it (empty, bad escape).
fn canonical_host(raw: &str) -> Option<String> {
    if let Some(v6) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let a: Ipv6Addr = v6.parse().ok()?;
        return Some(match super::http::embedded_ipv4(a) {
            Some(v4) => v4.to_string(),
            None => format!("[{a}]"),
        });
    }
    let decoded = super::percent_decode(raw.as_bytes(), false);
    let host = String::from_utf8(decoded).ok()?.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host.is_empty() {
        return None;
    }
    Some(inet_aton(host).map_or_else(|| host.to_owned(), |a| a.to_string()))
}

/// An IPv4 address in any spelling `inet_aton` and WHATWG URL parsers accept: one to four parts,
/// each decimal, octal (leading `0`) or hex (`0x`), the last filling the remaining bytes.
fn inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values: Vec<u64> = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (p.get(1..).unwrap_or_default(), 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let v = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(v);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|&v| v > 255) {
        return None;
    }
    let free_bits = 8u32.checked_mul(4u32.checked_sub(u32::try_from(head.len()).ok()?)?)?;
    if *last >= 1u64.checked_shl(free_bits)? {
        return None;
    }
    let mut addr: u64 = 0;
    for (i, &v) in head.iter().enumerate() {
        let shift = 24u32.checked_sub(8u32.checked_mul(u32::try_from(i).ok()?)?)?;
        addr |= v.checked_shl(shift)?;
    }
    addr |= *last;
    Some(Ipv4Addr::from(u32::try_from(addr).ok()?))
}

/// `path` with escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded, as servers
/// route them; every other escape kept.
fn decode_unreserved(path: &str) -> String {
    if !path.contains('%') {
        return path.to_owned();
    }
    let b = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0usize;
    let hex = |j: usize| b.get(j).copied().and_then(super::http::hex_val);
    while let Some(&c) = b.get(i) {
        if c == b'%'
            && let (Some(hi), Some(lo)) = (hex(i.saturating_add(1)), hex(i.saturating_add(2)))
            && let v = (hi << 4) | lo
            && super::http::is_unreserved(v)
        {
            out.push(v);
            i = i.saturating_add(3);
            continue;
        }
        out.push(c);
        i = i.saturating_add(1);
    }
    // Only ASCII was decoded into ASCII: the text stays UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_address_is_the_address() {
        let want = "http://169.254.169.254/latest";
        for s in [
            "HTTP://169.254.169.254/latest",
            "http://0xA9FEA9FE/latest",
            "http://2852039166/latest",
            "http://0251.0376.0251.0376/latest",
            "http://169.254.43518/latest",
            "http://0xa9.0xfe.0xa9.0xfe/latest",
            "http://[::ffff:a9fe:a9fe]/latest",
            "http://[::ffff:169.254.169.254]:80/latest",
            "http://[64:ff9b::a9fe:a9fe]/latest",
            "http://user:pw@169.254.169.254/latest",
            "http://good.example@169.254.169.254/latest",
            "http://169.254.169.254./latest",
            "http://169.254.169.254:0080/latest",
            "http://%31%36%39.254.169.254/latest",
            "http://169.254.169.254/x/../latest",
            "http://169.254.169.254/%6Catest",
            "http://169.254.169.254\\latest",
            "http://169.254.169.254/latest#frag",
        ] {
            assert_eq!(canonical(s, Parser::Whatwg).as_deref(), Some(want), "{s}");
        }
        assert_eq!(canonical(want, Parser::Whatwg), None);
    }

    #[test]
    fn a_backslash_before_the_at_sign_is_read_both_ways() {
        let s = "http://good.example\\@evil.example/x";
        assert_eq!(
            canonical(s, Parser::Whatwg).as_deref(),
            Some("http://good.example/@evil.example/x")
        );
        assert_eq!(
            canonical(s, Parser::Rfc3986).as_deref(),
            Some("http://evil.example/x")
        );
    }

    #[test]
    fn other_strings_and_schemes_are_left_alone() {
        for s in [
            "",
            "hello",
            "/etc/passwd",
            "ftp://169.254.169.254/",
            "https://api.example/v1/items?q=a%2Fb",
            "http://host:notaport/",
            "http://[zz]/",
            "http:///x",
        ] {
            assert_eq!(canonical(s, Parser::Whatwg), None, "{s}");
        }
        assert_eq!(
            canonical("https://API.example:443", Parser::Whatwg).as_deref(),
            Some("https://api.example/")
        );
        assert_eq!(
            canonical("http://api.example:8080/a", Parser::Whatwg),
            None,
            "a non-default port is kept"
        );
    }

    #[test]
    fn host_headers_name_hosts_as_target_host_writes_them() {
        for (v, want) in [
            ("Admin.Tools.Example:8443", Some("admin.tools.example")),
            (" 0xA9FEA9FE ", Some("169.254.169.254")),
            ("[::ffff:a9fe:a9fe]:80", Some("169.254.169.254")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("", None),
        ] {
            assert_eq!(host_reading(v).as_deref(), want, "{v}");
        }
    }

    #[test]
    fn inet_aton_reads_what_resolvers_read() {
        for (s, want) in [
            ("127.0.0.1", Some("127.0.0.1")),
            ("127.1", Some("127.0.0.1")),
            ("0x7f000001", Some("127.0.0.1")),
            ("017700000001", Some("127.0.0.1")),
            ("10.0x10.1", Some("10.16.0.1")),
            ("256.0.0.1", None),
            ("1.2.3.4.5", None),
            ("1.2.3.256", None),
            ("08.0.0.1", None),
            ("api.example", None),
            ("4294967296", None),
        ] {
            assert_eq!(inet_aton(s).map(|a| a.to_string()).as_deref(), want, "{s}");
        }
    }
}
