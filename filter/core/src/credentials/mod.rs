//! Least-privilege credentials per action (AARM R9; `docs/credentials.md`):
//! - the agent's own credential headers never reach a destination the configuration did not let
//!   them through to ([`ambient_to_strip`]);
//! - a MODIFY that injects a credential gets one minted for this action by an RFC 8693 token
//!   exchange ([`exchange`]): subject the agent's verified JWT ([`subject_token`]), audience
//!   the destination, scope narrowed by whether the action reads or writes ([`access_of`]),
//!   cached until it expires ([`cache`]).
//!
//! Pure but for shared data (the cache) and properties (the verified claims): the stream
//! (`stream/credential.rs`) waits for the call-out.

pub(crate) mod cache;
pub(crate) mod exchange;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bundle::action::{Action, Kind};
use bundle::verdict::Verdict;
use sha2::{Digest, Sha256};

use crate::config::IdentityConfig;
use crate::config::credentials::{CredentialsConfig, Definition, PassTarget};
use crate::host::Host;
use crate::limits::{MAX_CREDENTIAL_ID_BYTES, MAX_SUBJECT_TOKEN_BYTES};
use crate::policy::Policy;

/// Whether an action reads or writes, for the scope of its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// `scopes.read`.
    Read,
    /// `scopes.write`.
    Write,
}

impl Access {
    /// The scope `d` asks for this access.
    pub(crate) fn scope(self, d: &Definition) -> &str {
        match self {
            Access::Read => &d.read_scope,
            Access::Write => &d.write_scope,
        }
    }
}

/// The destination's name: the MCP server (`target.server`) or the HTTP host.
pub(crate) fn destination(a: &Action) -> &str {
    match a.kind {
        Kind::Mcp => &a.target.server,
        Kind::Http => &a.target.host,
    }
}

/// Names of the agent's credential headers on this request that must not reach `a`'s
/// destination: every configured `strip` name present (any case, any number of times), less
/// those a `pass` rule of the destination lets through. Removing a name removes every value.
pub(crate) fn ambient_to_strip(
    cfg: &CredentialsConfig,
    headers: &[(String, String)],
    a: Option<&Action>,
) -> Vec<String> {
    let passed = |name: &str| {
        let Some(a) = a else { return false };
        cfg.pass.iter().any(|(t, names)| {
            let here = match (t, a.kind) {
                (PassTarget::Host(h), Kind::Http) => *h == a.target.host,
                (PassTarget::Server(s), Kind::Mcp) => *s == a.target.server,
                _ => false,
            };
            here && names.iter().any(|n| n == name)
        })
    };
    let mut out: Vec<String> = Vec::new();
    for (n, _) in headers {
        if let Some(s) = cfg.strip.iter().find(|s| s.eq_ignore_ascii_case(n))
            && !out.contains(s)
            && !passed(s)
        {
            out.push(s.clone());
        }
    }
    out
}

/// Read or write: the rule a read-only session applies (`docs/credentials.md`, "Read or
/// write"). An HTTP request with a safe method (`GET`, `HEAD`, `OPTIONS`) reads; an MCP message
/// other than `tools/call` reads (lists, `resources/read`, `prompts/get`); a `tools/call` reads
/// only when the pack puts it in a `readonly` class. Everything else writes.
pub(crate) fn access_of(a: &Action, verdict: &Verdict, policy: &Policy) -> Access {
    let writes = match a.kind {
        Kind::Mcp => a.operation == "tools/call",
        Kind::Http => !matches!(a.operation.as_str(), "GET" | "HEAD" | "OPTIONS"),
    };
    if !writes {
        return Access::Read;
    }
    let readonly_class = verdict.classes.iter().any(|name| {
        policy.bundle.layers().iter().any(|l| {
            l.bundle
                .program()
                .classes
                .iter()
                .any(|c| c.readonly && c.name == *name)
        })
    });
    if readonly_class {
        Access::Read
    } else {
        Access::Write
    }
}

/// The audience a credential is minted for: the definition's, else the destination.
pub(crate) fn audience_of<'a>(d: &'a Definition, a: &'a Action) -> &'a str {
    d.audience.as_deref().unwrap_or_else(|| destination(a))
}

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims of a compact JWT (its payload, unverified), if `token` is one.
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = B64URL.decode(payload).ok()?;
    match crate::normalize::json::parse(&bytes, 16).ok()?.value {
        serde_json::Value::Object(o) => Some(o),
        _ => None,
    }
}

/// The subject token of a token exchange: the agent's JWT that Envoy's `jwt_authn` verified.
/// It is read from the request's one `authorization: Bearer` header (`jwt_authn` with
/// `forward: true`), and is used only when it is the token whose claims `jwt_authn` wrote to
/// the metadata: its `sub` (required) and its `iss` and `jti` (when present) equal the
/// verified ones. No verified JWT, two `authorization` headers, or another token: `Err`.
pub(crate) fn subject_token(
    host: &dyn Host,
    identity: &IdentityConfig,
    headers: &[(String, String)],
) -> Result<String, String> {
    if identity.jwt.is_none() {
        return Err("no verified JWT is configured (`identity.jwt`)".into());
    }
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim());
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(
            "the request carries no single `authorization` header with the agent's verified JWT"
                .into(),
        );
    };
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err("the `authorization` header is not a bearer token".into()),
    };
    if token.is_empty() || token.len() > MAX_SUBJECT_TOKEN_BYTES {
        return Err("the agent's bearer token is empty or too long".into());
    }
    let claims = jwt_claims(token).ok_or("the agent's bearer token is not a JWT")?;
    let verified = |c: &str| crate::identity::jwt_claim_of(host, identity, Some(c));
    let Some(sub) = verified("sub") else {
        return Err(
            "no JWT was verified for this request (no `sub` in the `jwt_authn` metadata)".into(),
        );
    };
    for (name, required) in [("sub", true), ("iss", false), ("jti", false)] {
        let mine = claims.get(name).and_then(serde_json::Value::as_str);
        let theirs = if name == "sub" {
            Some(sub.clone())
        } else {
            verified(name)
        };
        let same = match (mine, theirs) {
            (Some(m), Some(t)) => m == t,
            (None, None) => !required,
            _ => false,
        };
        if !same {
            return Err(format!(
                "the bearer token is not the JWT `jwt_authn` verified (`{name}` differs)"
            ));
        }
    }
    Ok(token.to_owned())
}

/// What a receipt records to identify a minted credential: `jti:<jti>` when it is a JWT with a
/// printable `jti` of at most [`MAX_CREDENTIAL_ID_BYTES`], else `sha256:` and the first 16 hex
/// digits of the SHA-256 of the token (enough to match a log line, far from enough to guess it).
pub(crate) fn credential_id(token: &str) -> String {
    if let Some(jti) = jwt_claims(token)
        .as_ref()
        .and_then(|c| c.get("jti"))
        .and_then(serde_json::Value::as_str)
        .filter(|j| {
            !j.is_empty()
                && j.len() <= MAX_CREDENTIAL_ID_BYTES
                && j.bytes().all(|b| (0x21..=0x7E).contains(&b))
        })
    {
        return format!("jti:{jti}");
    }
    let h = hex::encode(Sha256::digest(token.as_bytes()));
    format!("sha256:{}", h.get(..16).unwrap_or(&h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::credentials::CredentialsConfig;

    fn jwt(claims: serde_json::Value) -> String {
        let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            e(br#"{"alg":"RS256"}"#),
            e(&serde_json::to_vec(&claims).unwrap()),
            e(b"sig")
        )
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn credential_headers_are_stripped_in_any_case_unless_passed() {
        let mut cfg = CredentialsConfig::default();
        let mut a = Action {
            kind: Kind::Http,
            ..Action::default()
        };
        a.target.host = "api.example.com".into();
        let headers = h(&[
            ("Authorization", "Bearer a"),
            ("authorization", "Bearer b"),
            ("cookie", "s=1"),
            ("x-api-key", "k"),
            ("accept", "*/*"),
        ]);
        assert_eq!(
            ambient_to_strip(&cfg, &headers, Some(&a)),
            ["authorization", "cookie", "x-api-key"]
        );
        cfg.pass.push((
            PassTarget::Host("api.example.com".into()),
            vec!["cookie".into()],
        ));
        assert_eq!(
            ambient_to_strip(&cfg, &headers, Some(&a)),
            ["authorization", "x-api-key"]
        );
        // A pass for a host never applies to an MCP server of the same name, or another host.
        a.kind = Kind::Mcp;
        a.target.server = "api.example.com".into();
        assert_eq!(ambient_to_strip(&cfg, &headers, Some(&a)).len(), 3);
        assert_eq!(ambient_to_strip(&cfg, &headers, None).len(), 3);
    }

    #[test]
    fn a_credential_id_is_its_jti_or_a_short_hash() {
        assert_eq!(
            credential_id(&jwt(serde_json::json!({"jti": "abc-1"}))),
            "jti:abc-1"
        );
        let opaque = credential_id("opaque-token");
        assert!(
            opaque.starts_with("sha256:") && opaque.len() == 7 + 16,
            "{opaque}"
        );
        assert!(!opaque.contains("opaque"));
        let long = jwt(serde_json::json!({"jti": "j".repeat(MAX_CREDENTIAL_ID_BYTES + 1)}));
        assert!(credential_id(&long).starts_with("sha256:"));
    }

    #[test]
    fn the_subject_is_only_the_verified_jwt() {
        use crate::config::JwtIdentity;
        use crate::mock::MockHost;
        let host = MockHost::new(0);
        let mut id = IdentityConfig {
            mtls: false,
            jwt: None,
            headers: None,
            node_workload: false,
        };
        let token = jwt(serde_json::json!({"sub": "agent-1", "iss": "idp", "jti": "t1"}));
        let bearer = format!("Bearer {token}");
        let hs = h(&[("authorization", &bearer)]);
        assert!(
            subject_token(&host, &id, &hs)
                .unwrap_err()
                .contains("identity.jwt")
        );
        id.jwt = Some(JwtIdentity {
            provider: "idp".into(),
            agent_claim: Some("sub".into()),
            human_claim: None,
            intent_claim: None,
            run_claim: None,
        });
        let meta = |c: &str| {
            vec![
                "metadata",
                "filter_metadata",
                crate::identity::JWT_AUTHN_NS,
                "idp",
            ]
            .into_iter()
            .chain(std::iter::once(c))
            .map(str::to_owned)
            .collect::<Vec<_>>()
        };
        // Nothing verified: refused.
        assert!(
            subject_token(&host, &id, &hs)
                .unwrap_err()
                .contains("no JWT was verified")
        );
        for (c, v) in [("sub", "agent-1"), ("iss", "idp"), ("jti", "t1")] {
            let p = meta(c);
            host.set_property(&p.iter().map(String::as_str).collect::<Vec<_>>(), v);
        }
        assert_eq!(subject_token(&host, &id, &hs).unwrap(), token);
        // Another token (another jti) beside the verified claims: refused.
        let other = jwt(serde_json::json!({"sub": "agent-1", "iss": "idp", "jti": "t2"}));
        let hs2 = h(&[("authorization", &format!("Bearer {other}"))]);
        assert!(
            subject_token(&host, &id, &hs2)
                .unwrap_err()
                .contains("`jti` differs")
        );
        // Two authorization headers, or none, or not bearer: refused.
        let two = h(&[("authorization", &bearer), ("Authorization", &bearer)]);
        assert!(subject_token(&host, &id, &two).is_err());
        assert!(subject_token(&host, &id, &[]).is_err());
        let basic = h(&[("authorization", "Basic YTpi")]);
        assert!(
            subject_token(&host, &id, &basic)
                .unwrap_err()
                .contains("bearer")
        );
        let not_jwt = h(&[("authorization", "Bearer opaque")]);
        assert!(
            subject_token(&host, &id, &not_jwt)
                .unwrap_err()
                .contains("not a JWT")
        );
    }
}
