//! RFC 8693 token exchange, the wire: the form the filter POSTs to the STS, and the strict
//! reading of its answer. Pure: no host access.

use crate::limits::{MAX_MINTED_TOKEN_BYTES, MAX_STS_FIELD_BYTES};

/// `grant_type` of a token exchange (RFC 8693 §2.1).
pub(crate) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` of the agent's verified JWT.
pub(crate) const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// `requested_token_type`: an access token for the destination.
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A credential the STS issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Minted {
    /// The secret. Never logged, never in a receipt, metric or filter state.
    pub token: String,
    /// The scope granted (the one asked for when the answer omits it, RFC 8693 §2.2.1).
    pub scope: String,
    /// Seconds it is valid for; `None`: the answer did not say (then it is not cached).
    pub expires_in: Option<u64>,
}

/// Append `s` to `out` as `application/x-www-form-urlencoded` (WHATWG URL, "urlencoded
/// serializer"): `A-Z a-z 0-9 * - . _` kept, space as `+`, every other byte `%XX`.
fn form_encode(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(
                    HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
                ));
                out.push(char::from(
                    HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0'),
                ));
            }
        }
    }
}

/// The body of a token-exchange request (RFC 8693 §2.1).
pub(crate) fn request_body(subject_token: &str, audience: &str, scope: &str) -> Vec<u8> {
    let mut out = String::with_capacity(subject_token.len().saturating_add(256));
    let fields = [
        ("grant_type", GRANT_TYPE),
        ("subject_token", subject_token),
        ("subject_token_type", JWT_TYPE),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
        ("audience", audience),
        ("scope", scope),
    ];
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode(&mut out, k);
        out.push('=');
        form_encode(&mut out, v);
    }
    out.into_bytes()
}

/// A string member of the answer, bounded; `Ok(None)` when absent.
fn field<'a>(
    o: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
    max: usize,
) -> Result<Option<&'a str>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(Some(s)),
        Some(serde_json::Value::String(_)) => Err(format!(
            "the STS answer's `{name}` is empty or longer than {max} bytes"
        )),
        Some(_) => Err(format!("the STS answer's `{name}` is not a string")),
    }
}

/// Read the STS's answer to a request for `asked` (the scope asked for). Anything but HTTP 200
/// with a JSON object carrying a bearer `access_token` of an access-token or JWT type, a positive
/// integer `expires_in` (or none) and a `scope` within the one asked for is refused: the
/// request is then denied. Errors never include the answer's token.
pub(crate) fn read_answer(status: &str, body: &[u8], asked: &str) -> Result<Minted, String> {
    if status != "200" {
        let s: String = status
            .chars()
            .filter(char::is_ascii_digit)
            .take(3)
            .collect();
        return Err(format!("the STS answered with status {s}"));
    }
    // One strict reading (duplicate keys refused): the filter and an auditor read one answer.
    let parsed = crate::normalize::json::parse(body, 4)
        .map_err(|_| "the STS answer is not a strict JSON document".to_owned())?;
    let serde_json::Value::Object(o) = parsed.value else {
        return Err("the STS answer is not a JSON object".to_owned());
    };
    let token = field(&o, "access_token", MAX_MINTED_TOKEN_BYTES)?
        .ok_or_else(|| "the STS answer has no `access_token`".to_owned())?;
    // It becomes a header value: visible ASCII only (RFC 6750 b64token is narrower still).
    if !token.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        return Err("the STS answer's `access_token` is not visible ASCII".to_owned());
    }
    match field(&o, "issued_token_type", MAX_STS_FIELD_BYTES)? {
        Some(ACCESS_TOKEN_TYPE | JWT_TYPE) => {}
        // The answer's own values are never echoed: a misbehaving STS could put the token there.
        Some(_) => return Err("the STS issued another token type than an access token".to_owned()),
        None => return Err("the STS answer has no `issued_token_type`".to_owned()),
    }
    match field(&o, "token_type", MAX_STS_FIELD_BYTES)? {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err("the STS answer's `token_type` is not `Bearer`".to_owned()),
        None => return Err("the STS answer has no `token_type`".to_owned()),
    }
    let expires_in = match o.get("expires_in") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => return Err("the STS answer's `expires_in` is not a positive integer".to_owned()),
        },
    };
    let scope = match field(&o, "scope", MAX_STS_FIELD_BYTES)? {
        None => asked.to_owned(),
        Some(granted) => {
            // Least privilege: never more than asked for.
            let asked: Vec<&str> = asked.split(' ').collect();
            if granted.split(' ').any(|t| !asked.contains(&t)) {
                return Err("the STS granted a scope that was not asked for".to_owned());
            }
            granted.to_owned()
        }
    };
    Ok(Minted {
        token: token.to_owned(),
        scope,
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "access_token": "eyJ.minted.sig",
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "tickets.read"
        })
    }

    #[test]
    fn the_request_is_a_token_exchange_form() {
        let b = request_body("a.b+c/d", "https://x.example/api?q=1", "read write");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=a.b%2Bc%2Fd\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt\
             &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &audience=https%3A%2F%2Fx.example%2Fapi%3Fq%3D1&scope=read+write"
        );
    }

    #[test]
    fn a_good_answer_is_read() {
        let m = read_answer("200", &answer(good()), "tickets.read").unwrap();
        assert_eq!(m.token, "eyJ.minted.sig");
        assert_eq!(m.scope, "tickets.read");
        assert_eq!(m.expires_in, Some(300));
        // No scope: the one asked for; no expiry: not cached.
        let mut v = good();
        v.as_object_mut().unwrap().remove("scope");
        v.as_object_mut().unwrap().remove("expires_in");
        let m = read_answer("200", &answer(v), "a b").unwrap();
        assert_eq!((m.scope.as_str(), m.expires_in), ("a b", None));
        // A narrower grant is kept as granted.
        let m = read_answer("200", &answer(good()), "tickets.read tickets.write").unwrap();
        assert_eq!(m.scope, "tickets.read");
    }

    #[test]
    fn every_bad_answer_is_refused_without_the_token() {
        let with = |k: &str, v: serde_json::Value| {
            let mut g = good();
            g.as_object_mut().unwrap().insert(k.into(), v);
            answer(g)
        };
        let without = |k: &str| {
            let mut g = good();
            g.as_object_mut().unwrap().remove(k);
            answer(g)
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("503", answer(good()), "status 503"),
            ("200", b"not json".to_vec(), "strict JSON"),
            ("200", b"[1]".to_vec(), "not a JSON object"),
            (
                "200",
                br#"{"access_token":"a","access_token":"b","issued_token_type":"x","token_type":"Bearer"}"#.to_vec(),
                "strict JSON",
            ),
            ("200", without("access_token"), "no `access_token`"),
            ("200", with("access_token", serde_json::json!("")), "empty"),
            ("200", with("access_token", serde_json::json!(7)), "not a string"),
            ("200", with("access_token", serde_json::json!("a b")), "visible ASCII"),
            ("200", with("access_token", serde_json::json!("a\r\nx-evil: 1")), "visible ASCII"),
            (
                "200",
                with("access_token", serde_json::json!("t".repeat(MAX_MINTED_TOKEN_BYTES + 1))),
                "longer than",
            ),
            ("200", without("issued_token_type"), "no `issued_token_type`"),
            (
                "200",
                with("issued_token_type", serde_json::json!("urn:ietf:params:oauth:token-type:refresh_token")),
                "another token type",
            ),
            // A value the STS echoes (here the token itself) is never repeated.
            ("200", with("issued_token_type", serde_json::json!("eyJ.minted.sig")), "another token type"),
            ("200", with("scope", serde_json::json!("eyJ.minted.sig")), "not asked for"),
            ("200", without("token_type"), "no `token_type`"),
            ("200", with("token_type", serde_json::json!("N_A")), "not `Bearer`"),
            ("200", with("expires_in", serde_json::json!(0)), "positive integer"),
            ("200", with("expires_in", serde_json::json!(-5)), "positive integer"),
            ("200", with("expires_in", serde_json::json!("300")), "positive integer"),
            ("200", with("expires_in", serde_json::json!(1.5)), "positive integer"),
            ("200", with("scope", serde_json::json!("tickets.read admin")), "not asked for"),
        ];
        for (status, body, want) in cases {
            let e = read_answer(status, &body, "tickets.read").unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("eyJ.minted.sig"), "{e}");
        }
    }
}
