//! Plain HTTP (egress) normalization: hosts, ports, paths, absolute-form targets, CONNECT, body
//! inspection, and the refusal for every ambiguous input (`docs/filter-normalization.md`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use bundle::action::Kind;
use filter_core::normalize::{
    NormalizeConfig, RequestHead, Route, needs_body, normalize_http, route,
};
use serde_json::{Value, json};

fn head(method: &str, authority: &str, path: &str) -> RequestHead {
    RequestHead {
        method: method.into(),
        scheme: "https".into(),
        authority: authority.into(),
        path: path.into(),
        headers: vec![],
    }
}

fn ok(h: &RequestHead) -> bundle::action::Action {
    normalize_http(h, None, &NormalizeConfig::default()).unwrap_or_else(|e| panic!("{h:?}: {e:?}"))
}

#[test]
fn hosts_ports_and_paths_normalize() {
    // (authority, path, host, port, normalized path, query)
    let cases = [
        (
            "API.GitHub.com",
            "/repos/x",
            "api.github.com",
            443,
            "/repos/x",
            "",
        ),
        ("api.github.com.", "/", "api.github.com", 443, "/", ""),
        (
            "api.github.com:8443",
            "/a?b=1&c",
            "api.github.com",
            8443,
            "/a",
            "b=1&c",
        ),
        ("api.github.com:", "/a", "api.github.com", 443, "/a", ""),
        ("[::1]:8080", "/x", "::1", 8080, "/x", ""),
        ("[2001:DB8:0:0::1]", "/x", "2001:db8::1", 443, "/x", ""),
        ("10.1.2.3", "/x", "10.1.2.3", 443, "/x", ""),
        ("h", "/a/b/../c/./d", "h", 443, "/a/c/d", ""),
        ("h", "/a/%2e%2E/b", "h", 443, "/b", ""),
        (
            "h",
            "/%2E%2e/%2e%2e/etc/passwd",
            "h",
            443,
            "/etc/passwd",
            "",
        ),
        ("h", "/%7Euser/%41%62c", "h", 443, "/~user/Abc", ""),
        ("h", "/a%20b/%2a", "h", 443, "/a%20b/%2A", ""),
        ("h", "/a;v=1/b;c/../d", "h", 443, "/a;v=1/d", ""),
        ("h", "/a/..", "h", 443, "/", ""),
        ("h", "/q?x=%2F..&y=/../", "h", 443, "/q", "x=%2F..&y=/../"),
        (
            "my_host-1.internal",
            "/",
            "my_host-1.internal",
            443,
            "/",
            "",
        ),
    ];
    for (auth, path, host, port, npath, query) in cases {
        let a = ok(&head("GET", auth, path));
        assert_eq!(a.kind, Kind::Http);
        assert_eq!(a.operation, "GET");
        assert_eq!(a.target.host, host, "{auth}");
        assert_eq!(a.target.port, port, "{auth}");
        assert_eq!(a.target.path, npath, "{path}");
        assert_eq!(a.target.query, query, "{path}");
        assert_eq!(a.target.scheme, "https");
        assert_eq!(a.target.server, host);
    }
}

#[test]
fn scheme_decides_the_default_port() {
    let mut h = head("post", "example.com", "/");
    h.scheme = "HTTP".into();
    let a = ok(&h);
    assert_eq!((a.target.port, a.target.scheme.as_str()), (80, "http"));
    assert_eq!(a.operation, "POST");
    h.scheme = String::new();
    assert_eq!(ok(&h).target.scheme, "http");
    h.scheme = "ftp".into();
    let e = normalize_http(&h, None, &NormalizeConfig::default()).unwrap_err();
    assert_eq!(e.http_status, 400);
}

#[test]
fn absolute_form_targets_of_a_forward_proxy() {
    let a = ok(&head("GET", "", "http://Registry.NPMJS.org/left-pad?x=1"));
    assert_eq!(a.target.host, "registry.npmjs.org");
    assert_eq!((a.target.port, a.target.scheme.as_str()), (80, "http"));
    assert_eq!(
        (a.target.path.as_str(), a.target.query.as_str()),
        ("/left-pad", "x=1")
    );
    let a = ok(&head(
        "GET",
        "hooks.slack.com",
        "https://hooks.slack.com:443",
    ));
    assert_eq!((a.target.path.as_str(), a.target.port), ("/", 443));
    let a = ok(&head("GET", "h:80", "http://h?q"));
    assert_eq!(
        (a.target.path.as_str(), a.target.query.as_str()),
        ("/", "q")
    );
    // The URI and the Host header must name the same place.
    let e = normalize_http(
        &head("GET", "api.github.com", "http://exfil.example/upload"),
        None,
        &NormalizeConfig::default(),
    )
    .unwrap_err();
    assert_eq!(e.http_status, 400);
    assert!(e.reason.contains("different hosts"));
    let e = normalize_http(
        &head("GET", "h:8080", "http://h/x"),
        None,
        &NormalizeConfig::default(),
    )
    .unwrap_err();
    assert!(e.reason.contains("different hosts"));
}

#[test]
fn ambiguous_requests_are_refused_with_400() {
    let cases = [
        ("h", "/a%2fb", "encoded `/`"),
        ("h", "/a%2Fb", "encoded `/`"),
        ("h", "/a%5cb", "encoded `/` or `\\`"),
        ("h", "/a\\b", "`\\`"),
        ("h", "/a%00", "%00"),
        ("h", "/a%zz", "malformed"),
        ("h", "/a%4", "malformed"),
        ("h", "/a#frag", "fragment"),
        ("h", "/a/..;/admin", "`;` parameter"),
        ("h", "/a/.;x/b", "`;` parameter"),
        ("h", "/a/%2e%2e;/admin", "`;` parameter"),
        ("h", "/a b", "space"),
        ("h", "/caf\u{e9}", "non-ascii"),
        ("h", "relative", "must start with"),
        ("h", "ftp://h/x", "http or https"),
        ("", "/", "no authority"),
        ("user:pw@h", "/", "userinfo"),
        ("h%2ecom", "/", "outside"),
        ("b\u{fc}cher.de", "/", "outside"),
        ("a..b", "/", "empty label"),
        ("h..", "/", "empty label"),
        ("127.1", "/", "non-canonical ipv4"),
        ("0x7f.0.0.1", "/", "non-canonical ipv4"),
        ("0177.0.0.1", "/", "non-canonical ipv4"),
        ("1.2.3.4.5", "/", "non-canonical ipv4"),
        ("2130706433", "/", "non-canonical ipv4"),
        ("[::1", "/", "unterminated"),
        ("[fe80::1%25eth0]", "/", "invalid ipv6"),
        ("[::1]x", "/", "after ipv6"),
        ("h:0", "/", "port"),
        ("h:65536", "/", "port"),
        ("h:+80", "/", "port"),
        ("h:8o", "/", "port"),
        // Two readings: servers that decode twice, or merge slashes, read another path.
        ("h", "/%2561dmin", "double-encoded"),
        ("h", "/%252e%252e/admin", "double-encoded"),
        ("h", "/x/%252F", "double-encoded"),
        ("h", "//admin", "empty segment"),
        ("h", "/x/..//admin", "empty segment"),
        ("h", "/a//b/", "empty segment"),
        ("h", "/x/%2e%2e//admin", "empty segment"),
    ];
    for (auth, path, why) in cases {
        let e = normalize_http(&head("GET", auth, path), None, &NormalizeConfig::default())
            .map(|a| panic!("{auth} {path}: accepted as {a:?}"))
            .unwrap_err();
        assert_eq!(
            (e.http_status, e.jsonrpc_code),
            (400, None),
            "{auth} {path}"
        );
        assert!(
            e.reason.contains(why),
            "{auth} {path}: `{}` lacks `{why}`",
            e.reason
        );
    }
}

#[test]
fn connect_tunnels() {
    let h = head("CONNECT", "API.github.com:443", "");
    assert_eq!(route(&h, &NormalizeConfig::default()), Route::Connect);
    assert!(!needs_body(&h, Route::Connect, &NormalizeConfig::default()));
    let a = ok(&h);
    assert_eq!(a.operation, "CONNECT");
    assert_eq!(
        (a.target.host.as_str(), a.target.port),
        ("api.github.com", 443)
    );
    assert_eq!(a.target.path, "/");
    let e =
        normalize_http(&head("CONNECT", "h", ""), None, &NormalizeConfig::default()).unwrap_err();
    assert!(e.reason.contains("host:port"));
    let e = normalize_http(
        &head("CONNECT", "h:443", "/chat"),
        None,
        &NormalizeConfig::default(),
    )
    .unwrap_err();
    assert!(e.reason.contains("must not have a path"));
}

#[test]
fn headers_session_trace_and_size() {
    let mut h = head("POST", "hooks.slack.com", "/services/x");
    h.headers = vec![
        ("Content-Length".into(), "120".into()),
        (
            "Authorization".into(),
            "Bearer abcdefghijklmnopqrstuvwxyz".into(),
        ),
        ("Cookie".into(), "s=1".into()),
        ("X-Portcullis-Identity".into(), "spoofed".into()),
        ("transfer-encoding".into(), "chunked".into()),
        ("x-request-id".into(), "r1".into()),
        (
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ),
    ];
    let a = ok(&h);
    assert_eq!(
        a.size, 120,
        "size from content-length when the body was not buffered"
    );
    assert_eq!(
        a.headers.to_vec(),
        vec![
            ("content-length".to_owned(), "120".to_owned()),
            ("authorization".to_owned(), "[REDACTED]".to_owned()),
            ("cookie".to_owned(), "[REDACTED]".to_owned()),
            ("x-request-id".to_owned(), "r1".to_owned()),
            (
                "traceparent".to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()
            ),
        ]
    );
    assert_eq!(
        a.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(a.egress_bytes(), 120);
}

fn inspecting() -> NormalizeConfig {
    NormalizeConfig {
        inspect_http_bodies: true,
        ..NormalizeConfig::default()
    }
}

fn json_post() -> RequestHead {
    let mut h = head("POST", "api.github.com", "/repos/o/r/issues");
    h.headers = vec![(
        "content-type".into(),
        "application/vnd.github+json; charset=utf-8".into(),
    )];
    h
}

#[test]
fn json_bodies_are_parsed_and_scanned_when_inspecting() {
    let body = br#"{"title":"leak","body":"ghp_abcdefghijklmnopqrstuvwxyz0123456789 from bob@example.com"}"#;
    let a = normalize_http(&json_post(), Some(body), &inspecting()).unwrap();
    assert_eq!(a.arguments["title"], "leak");
    assert_eq!(a.size, body.len() as u64);
    assert!(a.risk.secrets);
    assert_eq!(a.risk.data_classes, vec!["credential", "pii"]);
    // Not inspecting: size only.
    let a = normalize_http(&json_post(), Some(body), &NormalizeConfig::default()).unwrap();
    assert_eq!(a.arguments, Value::Null);
    assert!(!a.risk.secrets);
    assert_eq!(a.size, body.len() as u64);
}

#[test]
fn text_bodies_are_scanned_but_not_parsed() {
    let mut h = head("POST", "exfil.example", "/upload");
    h.headers = vec![("content-type".into(), "text/plain".into())];
    let body = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA";
    let a = normalize_http(&h, Some(body), &inspecting()).unwrap();
    assert_eq!(a.arguments, Value::Null);
    assert!(a.risk.secrets);
    // A body that starts like JSON but that no JSON parser reads stays text.
    for body in [&b"[INFO] deploy started"[..], b"{not json}", b"  [1, 2,"] {
        let a = normalize_http(&h, Some(body), &inspecting()).unwrap();
        assert_eq!(a.arguments, Value::Null);
    }
}

#[test]
fn json_under_another_label_is_judged_as_json() {
    // Servers that parse JSON whatever the content type act on these members: the policy sees
    // them too, whatever the label (or none).
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut h = head("POST", "hooks.slack.com", "/services/T0");
        if let Some(ct) = ct {
            h.headers = vec![("content-type".into(), ct.into())];
        }
        let a = normalize_http(
            &h,
            Some(br##" {"channel":"#exec","text":"hi"}"##),
            &inspecting(),
        )
        .unwrap();
        assert_eq!(a.arguments["channel"], "#exec", "{ct:?}");
        // What a lenient JSON parser forgives is refused, as for a body declared JSON.
        for body in [
            &br##"{"channel":"#ops","channel":"#exec"}"##[..],
            br##"{"channel":"#ops","Channel":"#exec"}"##,
            b"\xef\xbb\xbf{\"channel\":\"#exec\"}",
            b"{\"channel\":\"#ops\"} {\"channel\":\"#exec\"}",
            b"{\"channel\":\"#\xffexec\"}",
            br#"{"n":1e999}"#,
        ] {
            let e = normalize_http(&h, Some(body), &inspecting()).unwrap_err();
            assert_eq!(e.http_status, 400, "{ct:?}");
            assert!(
                e.reason.contains("servers that ignore its content type"),
                "{}",
                e.reason
            );
        }
    }
}

#[test]
fn bad_json_bodies_are_refused_when_inspecting() {
    for body in [
        &br#"{"a":1,"a":2}"#[..],
        br#"{"a":"\udc00"}"#,
        b"{\"a\":1} trailing",
        b"\xef\xbb\xbf{}",
        br#"{"n":1e999}"#,
    ] {
        let e = normalize_http(&json_post(), Some(body), &inspecting()).unwrap_err();
        assert_eq!((e.http_status, e.jsonrpc_code), (400, None));
        assert!(e.reason.contains("declared as json"), "{}", e.reason);
    }
    let a = normalize_http(&json_post(), Some(b""), &inspecting()).unwrap();
    assert_eq!((a.size, a.arguments.clone()), (0, Value::Null));
    let big = vec![b' '; 2048];
    let small = NormalizeConfig {
        max_body_bytes: 1024,
        ..inspecting()
    };
    assert_eq!(
        normalize_http(&json_post(), Some(&big), &small)
            .unwrap_err()
            .http_status,
        413
    );
}

#[test]
fn needs_body_for_http_follows_the_config() {
    let c = NormalizeConfig::default();
    let h = json_post();
    assert!(!needs_body(&h, Route::Http, &c));
    assert!(needs_body(&h, Route::Http, &inspecting()));
    let mut empty = json_post();
    empty.headers.push(("content-length".into(), "0".into()));
    assert!(!needs_body(&empty, Route::Http, &inspecting()));
    assert!(needs_body(&h, Route::Mcp, &c));
    // The body-less MCP routes read a body that follows, to refuse it unless it is empty.
    assert!(needs_body(&h, Route::McpStream, &c));
    assert!(needs_body(&h, Route::McpDelete, &c));
    assert!(needs_body(&h, Route::McpLegacy, &c));
    assert!(!needs_body(&h, Route::McpMethodNotAllowed, &c));
}

#[test]
fn hosts_that_read_paths_literally_keep_both_readings() {
    let c = NormalizeConfig {
        literal_path_hosts: vec!["files.internal".into()],
        ..NormalizeConfig::default()
    };
    let a = normalize_http(&head("GET", "files.internal:8080", "/a//b%2561"), None, &c).unwrap();
    assert_eq!(a.target.path, "/a//b%2561");
    let e = normalize_http(&head("GET", "other.internal", "/a//b"), None, &c).unwrap_err();
    assert_eq!(e.http_status, 400);
}

#[test]
fn ipv6_literals_that_deliver_to_ipv4_are_the_ipv4_host() {
    for (auth, host) in [
        ("[::ffff:169.254.169.254]", "169.254.169.254"),
        ("[::ffff:a9fe:a9fe]:80", "169.254.169.254"),
        ("[::FFFF:127.0.0.1]", "127.0.0.1"),
        ("[::169.254.169.254]", "169.254.169.254"),
        ("[64:ff9b::a9fe:a9fe]", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::]", "::"),
        ("[2001:db8::1]", "2001:db8::1"),
    ] {
        let a = normalize_http(&head("GET", auth, "/"), None, &NormalizeConfig::default()).unwrap();
        assert_eq!(a.target.host, host, "{auth}");
    }
}

#[test]
fn refusal_renders_an_http_error_body() {
    let e =
        normalize_http(&head("GET", "u@h", "/"), None, &NormalizeConfig::default()).unwrap_err();
    let v: Value = serde_json::from_slice(&e.to_json_body(false)).unwrap();
    assert_eq!(v, json!({"error": "bad_request", "reason": e.reason}));
}

#[test]
fn a_body_read_whole_is_hashed_once_for_the_digest() {
    use sha2::Digest as _;
    let hex_of = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    // The arguments are all of the body: their hash is the body's, which the stream reuses.
    let body = br#"{"title":"x"}"#;
    let a = normalize_http(&json_post(), Some(body), &inspecting()).unwrap();
    assert_eq!(a.body_sha256.as_deref(), Some(hex_of(body).as_str()));
    assert_eq!(a.arguments_sha256, Some(sha2::Sha256::digest(body).into()));
    let mut form = head("POST", "api.github.com", "/x");
    form.headers = vec![(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    )];
    let a = normalize_http(&form, Some(b"a=1"), &inspecting()).unwrap();
    assert_eq!(a.body_sha256.as_deref(), Some(hex_of(b"a=1").as_str()));
    // Whitespace around the value: the arguments are not the whole body, so the stream hashes
    // the body itself.
    let a = normalize_http(&json_post(), Some(b" {\"title\":\"x\"} "), &inspecting()).unwrap();
    assert_eq!(a.body_sha256, None);
    assert_eq!(a.arguments_sha256, Some(sha2::Sha256::digest(body).into()));
}
