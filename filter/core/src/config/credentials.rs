//! `credentials`: which of the agent's own credential headers may reach which destination, and
//! the credentials a policy may inject (`inject credential "NAME"`), each minted by an RFC 8693
//! token exchange at the operator's STS. `docs/credentials.md` is the reference.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::limits::{
    MAX_CREDENTIAL_DEFINITIONS, MAX_CREDENTIAL_PASS_RULES, MAX_CREDENTIAL_TTL_S, MAX_STS_TIMEOUT_MS,
};

/// The agent's credential headers stripped from every forwarded request unless a `pass` rule of
/// its destination lets them through.
pub const DEFAULT_STRIP: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];
/// Default STS call-out timeout.
pub const DEFAULT_STS_TIMEOUT_MS: u32 = 2_000;
/// Default margin: a cached credential is used until this many seconds before it expires.
pub const DEFAULT_SKEW_S: u64 = 30;
/// Default header an injected credential is written to.
pub const DEFAULT_HEADER: &str = "authorization";
/// Default format of an injected credential's header value.
pub const DEFAULT_FORMAT: &str = "Bearer {token}";

/// Where a credential is minted: an Envoy cluster serving RFC 8693 token exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sts {
    /// The Envoy cluster to call.
    pub cluster: String,
    /// `:authority` of the call.
    pub authority: String,
    /// `:path` of the token endpoint.
    pub path: String,
    /// Milliseconds to wait; no answer in time denies.
    pub timeout_ms: u32,
}

/// One credential a policy may inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// Its STS.
    pub sts: Sts,
    /// The request header it is written to (lowercase).
    pub header: String,
    /// The header value: `prefix` + token + `suffix` (the configured format split at `{token}`).
    pub prefix: String,
    /// See `prefix`.
    pub suffix: String,
    /// A fixed audience; `None`: the destination (the MCP server name, or the HTTP host).
    pub audience: Option<String>,
    /// Scope asked for a read action.
    pub read_scope: String,
    /// Scope asked for a write action.
    pub write_scope: String,
}

/// Which headers of the agent reach one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassTarget {
    /// An HTTP host (exact, lowercase).
    Host(String),
    /// An MCP server name (`target.server`).
    Server(String),
}

/// The parsed `credentials` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialsConfig {
    /// Header names stripped from forwarded requests (lowercase, unique).
    pub strip: Vec<String>,
    /// Per destination: which of `strip` still reach it.
    pub pass: Vec<(PassTarget, Vec<String>)>,
    /// Injectable credentials by name.
    pub definitions: BTreeMap<String, Definition>,
    /// Seconds before expiry a cached credential stops being used.
    pub skew_s: u64,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            strip: DEFAULT_STRIP.iter().map(|s| (*s).to_owned()).collect(),
            pass: Vec::new(),
            definitions: BTreeMap::new(),
            skew_s: DEFAULT_SKEW_S,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
    #[serde(default)]
    strip: Vec<String>,
    #[serde(default)]
    pass: Vec<RawPass>,
    sts: Option<RawSts>,
    #[serde(default)]
    definitions: BTreeMap<String, RawDefinition>,
    skew_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPass {
    host: Option<String>,
    server: Option<String>,
    headers: Vec<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawSts {
    cluster: String,
    authority: Option<String>,
    path: Option<String>,
    timeout_ms: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    sts: Option<RawSts>,
    header: Option<String>,
    format: Option<String>,
    audience: Option<String>,
    scopes: RawScopes,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopes {
    read: String,
    write: String,
}

fn header_name(field: &str, name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(format!("`{field}`: `{name}` is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// A credential name as policies spell it (`policyc` checks the same rule).
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A scope as RFC 6749 §3.3 writes it: space-separated tokens of `%x21 / %x23-5B / %x5D-7E`.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.split(' ').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        })
}

/// A value that may travel in a header or a form field untouched: visible ASCII and spaces.
fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

fn sts(field: &str, raw: &RawSts) -> Result<Sts, String> {
    if raw.cluster.is_empty() {
        return Err(format!("`{field}.cluster` is empty"));
    }
    let path = raw.path.clone().unwrap_or_else(|| "/token".to_owned());
    if !path.starts_with('/') || !printable(&path) || path.contains(' ') {
        return Err(format!(
            "`{field}.path` must start with `/` and be visible ASCII"
        ));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_STS_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > MAX_STS_TIMEOUT_MS {
        return Err(format!(
            "`{field}.timeout_ms` must be 1 to {MAX_STS_TIMEOUT_MS}"
        ));
    }
    Ok(Sts {
        cluster: raw.cluster.clone(),
        authority: raw.authority.clone().unwrap_or_else(|| raw.cluster.clone()),
        path,
        timeout_ms,
    })
}

/// Parse the `credentials` section. `has_verified_jwt`: `identity.jwt` is configured (an
/// injectable credential needs the verified JWT as its subject token).
pub(crate) fn parse(
    raw: RawCredentials,
    has_verified_jwt: bool,
) -> Result<CredentialsConfig, String> {
    let mut strip: Vec<String> = DEFAULT_STRIP.iter().map(|s| (*s).to_owned()).collect();
    for (i, h) in raw.strip.iter().enumerate() {
        let h = header_name(&format!("credentials.strip[{i}]"), h)?;
        if !strip.contains(&h) {
            strip.push(h);
        }
    }
    if raw.pass.len() > MAX_CREDENTIAL_PASS_RULES {
        return Err(format!(
            "`credentials.pass` has more than {MAX_CREDENTIAL_PASS_RULES} rules"
        ));
    }
    let mut pass = Vec::with_capacity(raw.pass.len());
    for (i, p) in raw.pass.into_iter().enumerate() {
        let field = format!("credentials.pass[{i}]");
        let target = match (p.host, p.server) {
            (Some(h), None) if !h.is_empty() && printable(&h) => {
                PassTarget::Host(h.to_ascii_lowercase())
            }
            (None, Some(s)) if !s.is_empty() && printable(&s) => PassTarget::Server(s),
            _ => {
                return Err(format!(
                    "`{field}` names exactly one non-empty `host` or `server`"
                ));
            }
        };
        let mut headers = Vec::with_capacity(p.headers.len());
        for (j, h) in p.headers.iter().enumerate() {
            let h = header_name(&format!("{field}.headers[{j}]"), h)?;
            if !strip.contains(&h) {
                return Err(format!(
                    "`{field}.headers[{j}]`: `{h}` is not a stripped credential header (it is never stripped, so it needs no pass)"
                ));
            }
            headers.push(h);
        }
        pass.push((target, headers));
    }
    if raw.definitions.len() > MAX_CREDENTIAL_DEFINITIONS {
        return Err(format!(
            "`credentials.definitions` has more than {MAX_CREDENTIAL_DEFINITIONS} entries"
        ));
    }
    if !raw.definitions.is_empty() && !has_verified_jwt {
        return Err(
            "`credentials.definitions` needs `identity.jwt`: the subject of a token exchange is the agent's JWT that `jwt_authn` verified"
                .to_owned(),
        );
    }
    let shared_sts = raw
        .sts
        .as_ref()
        .map(|s| sts("credentials.sts", s))
        .transpose()?;
    let mut definitions = BTreeMap::new();
    for (name, d) in raw.definitions {
        let field = format!("credentials.definitions.{name}");
        if !valid_name(&name) {
            return Err(format!(
                "`{field}`: a credential name is 1 to 64 characters of `a-z`, `0-9`, `_` and `-`"
            ));
        }
        let sts = match (&d.sts, &shared_sts) {
            (Some(s), _) => sts(&format!("{field}.sts"), s)?,
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Err(format!(
                    "`{field}` names no STS (`{field}.sts` or `credentials.sts`)"
                ));
            }
        };
        let header = header_name(
            &format!("{field}.header"),
            d.header.as_deref().unwrap_or(DEFAULT_HEADER),
        )?;
        let format = d.format.as_deref().unwrap_or(DEFAULT_FORMAT);
        let (prefix, suffix) = match format.split_once("{token}") {
            Some((p, s)) if !s.contains("{token}") && printable(format) => (p, s),
            _ => {
                return Err(format!(
                    "`{field}.format` must be visible ASCII with `{{token}}` exactly once"
                ));
            }
        };
        if let Some(a) = &d.audience
            && (a.is_empty() || !printable(a))
        {
            return Err(format!(
                "`{field}.audience` must be non-empty visible ASCII"
            ));
        }
        for (which, s) in [("read", &d.scopes.read), ("write", &d.scopes.write)] {
            if !valid_scope(s) {
                return Err(format!(
                    "`{field}.scopes.{which}` is not an OAuth scope (space-separated tokens)"
                ));
            }
        }
        definitions.insert(
            name,
            Definition {
                sts,
                header,
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
                audience: d.audience,
                read_scope: d.scopes.read,
                write_scope: d.scopes.write,
            },
        );
    }
    let skew_s = raw.skew_s.unwrap_or(DEFAULT_SKEW_S);
    if skew_s >= MAX_CREDENTIAL_TTL_S {
        return Err(format!(
            "`credentials.skew_s` must be below {MAX_CREDENTIAL_TTL_S}"
        ));
    }
    Ok(CredentialsConfig {
        strip,
        pass,
        definitions,
        skew_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: serde_json::Value) -> RawCredentials {
        serde_json::from_value(v).unwrap()
    }

    fn def() -> serde_json::Value {
        serde_json::json!({
            "sts": {"cluster": "sts", "path": "/token"},
            "scopes": {"read": "tickets.read", "write": "tickets.read tickets.write"}
        })
    }

    #[test]
    fn defaults_strip_the_four_credential_headers() {
        let c = parse(RawCredentials::default(), false).unwrap();
        assert_eq!(c, CredentialsConfig::default());
        assert_eq!(
            c.strip,
            [
                "authorization",
                "proxy-authorization",
                "cookie",
                "x-api-key"
            ]
        );
    }

    #[test]
    fn a_definition_is_parsed_with_its_defaults() {
        let c = parse(
            raw(
                serde_json::json!({"strip": ["X-Goog-Api-Key"], "definitions": {"tracker": def()}}),
            ),
            true,
        )
        .unwrap();
        assert!(c.strip.contains(&"x-goog-api-key".to_owned()));
        let d = &c.definitions["tracker"];
        assert_eq!((d.prefix.as_str(), d.suffix.as_str()), ("Bearer ", ""));
        assert_eq!(d.header, "authorization");
        assert_eq!(d.audience, None);
        assert_eq!(d.sts.authority, "sts");
        assert_eq!(d.sts.timeout_ms, DEFAULT_STS_TIMEOUT_MS);
    }

    #[test]
    fn bad_sections_are_refused_with_the_field() {
        let cases = [
            (
                serde_json::json!({"definitions": {"t": def()}}),
                false,
                "needs `identity.jwt`",
            ),
            (
                serde_json::json!({"definitions": {"T T": def()}}),
                true,
                "credential name",
            ),
            (
                serde_json::json!({"definitions": {"t": {"scopes": {"read": "a", "write": "b"}}}}),
                true,
                "names no STS",
            ),
            (
                serde_json::json!({"sts": {"cluster": "s"}, "definitions": {"t": {"format": "Token", "scopes": {"read": "a", "write": "b"}}}}),
                true,
                "`{token}` exactly once",
            ),
            (
                serde_json::json!({"sts": {"cluster": "s"}, "definitions": {"t": {"scopes": {"read": "a\"b", "write": "b"}}}}),
                true,
                "scopes.read",
            ),
            (
                serde_json::json!({"sts": {"cluster": "s", "timeout_ms": 0}}),
                true,
                "timeout_ms",
            ),
            (
                serde_json::json!({"pass": [{"host": "a", "server": "b", "headers": []}]}),
                true,
                "exactly one",
            ),
            (
                serde_json::json!({"pass": [{"host": "a", "headers": ["x-other"]}]}),
                true,
                "not a stripped credential header",
            ),
        ];
        for (v, jwt, want) in cases {
            let e = parse(raw(v.clone()), jwt).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        assert!(serde_json::from_value::<RawCredentials>(serde_json::json!({"bogus": 1})).is_err());
    }
}
