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

/// The longest `host:port` a bare host reading looks at (a 253-character name, `:`, five digits).
const MAX_BARE_HOST: usize = 259;

/// A string that is nothing but a host, or `host:port`, as a resolver reads it, when that is
/// another spelling: what a connect, ping or lookup tool's `host` argument reaches. Every IPv4
/// spelling `inet_aton` accepts (`0xA9FEA9FE`, `169.254.43518`, `0251.0376.0251.0376`) is the
/// dotted quad, an IPv6 address in canonical form (brackets dropped unless a port follows) and
/// one carrying an IPv4 address (mapped, compatible, NAT64) that address, and a DNS name (two or
/// more labels, the last with a letter; or `localhost`) lowercased with its trailing dot dropped.
/// A lone decimal number below 2^24 (`80`, `2024`) is left alone: `inet_aton` reads it as an
/// address in `0.0.0.0/8`, which no rule names, and such numbers are everywhere in arguments.
pub(crate) fn bare_host(s: &str) -> Option<String> {
    if s.is_empty()
        || s.len() > MAX_BARE_HOST
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return None;
    }
    let read = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(bare_port(p.strip_prefix(':')?)?),
        };
        with_port(&v6_host(v6.parse().ok()?), port)
    } else if s.bytes().filter(|&b| b == b':').nth(1).is_some() {
        v6_host(s.parse().ok()?) // a bare IPv6 address: no port can follow it
    } else {
        let (host, port) = s.split_once(':').map_or((s, None), |(h, p)| (h, Some(p)));
        let port = match port {
            None => None,
            Some(p) => Some(bare_port(p)?),
        };
        with_port(&bare_name(host)?, port)
    };
    (read != s).then_some(read)
}

/// A port as resolvers read it: decimal digits, leading zeros dropped.
fn bare_port(p: &str) -> Option<&str> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = p.trim_start_matches('0');
    Some(if n.is_empty() { "0" } else { n })
}

/// An IPv6 address as a host: the IPv4 address it carries, else its canonical form.
fn v6_host(a: Ipv6Addr) -> String {
    super::http::embedded_ipv4(a).map_or_else(|| a.to_string(), |v4| v4.to_string())
}

/// `host` with `:port`, an IPv6 address in brackets then.
fn with_port(host: &str, port: Option<&str>) -> String {
    match port {
        None => host.to_owned(),
        Some(p) if host.contains(':') => format!("[{host}]:{p}"),
        Some(p) => format!("{host}:{p}"),
    }
}

/// A name or IPv4 spelling as a resolver reads it; `None` when it is neither.
fn bare_name(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.starts_with(|c: char| c.is_ascii_digit())
        && let Some(a) = inet_aton(&host)
    {
        let lone_small_number = host.bytes().all(|b| b.is_ascii_digit()) && u32::from(a) < 1 << 24;
        return (!lone_small_number).then(|| a.to_string());
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let named = labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|l| l.bytes().any(|b| b.is_ascii_alphabetic()));
    (named || host == "localhost").then_some(host)
}

/// The host as resolvers read it, or `None` when no parser would fetch it (empty, bad escape).
fn canonical_host(raw: &str) -> Option<String> {
    if let Some(v6) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let h = v6_host(v6.parse().ok()?);
        return Some(if h.contains(':') { format!("[{h}]") } else { h });
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
    fn a_bare_host_is_read_as_resolvers_read_it() {
        for (s, want) in [
            ("0xA9FEA9FE", Some("169.254.169.254")),
            ("2852039166", Some("169.254.169.254")),
            ("169.254.43518", Some("169.254.169.254")),
            ("0251.0376.0251.0376", Some("169.254.169.254")),
            ("169.254.169.254.", Some("169.254.169.254")),
            ("0xA9FEA9FE:0080", Some("169.254.169.254:80")),
            ("::ffff:a9fe:a9fe", Some("169.254.169.254")),
            ("[::FFFF:169.254.169.254]", Some("169.254.169.254")),
            ("[::ffff:a9fe:a9fe]:80", Some("169.254.169.254:80")),
            ("[64:ff9b::a9fe:a9fe]", Some("169.254.169.254")),
            ("0:0:0:0:0:0:0:1", Some("::1")),
            ("[::1]", Some("::1")),
            ("[0::1]:6379", Some("[::1]:6379")),
            ("127.1", Some("127.0.0.1")),
            (
                "Metadata.Google.Internal.",
                Some("metadata.google.internal"),
            ),
            ("LOCALHOST", Some("localhost")),
            ("1A.Example", Some("1a.example")),
            // Already canonical, or no host at all: no reading.
            ("169.254.169.254", None),
            ("::1", None),
            ("api.example:8080", None),
            ("80", None),
            ("2024", None),
            ("0", None),
            ("Admin", None),
            ("1.2.3.4.5", None),
            ("12:30:00", None),
            ("get_secret", None),
            ("a host", None),
            ("api.example:http", None),
            ("[::1", None),
            ("", None),
        ] {
            assert_eq!(bare_host(s).as_deref(), want, "{s}");
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
