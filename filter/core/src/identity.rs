//! Who is acting, from sources the proxy verified, and the session key of a request.
//!
//! Order of trust for each principal: mTLS peer certificate (workload), then JWT claims verified by
//! Envoy's `jwt_authn` (agent, human), then operator-configured trusted headers. A slot filled by
//! a stronger source is never overwritten by a weaker one. Nothing else is read: a client's own
//! `x-portcullis-*` headers are stripped before the request goes upstream (see
//! [`strip_spoofed_headers`]) and never reach identity.

use bundle::action::{AuthMethod, Identity, Principal};

use crate::config::{IdentityConfig, SessionKeySource};
use crate::host::Host;

/// Longest identity / session key value accepted (bytes). Longer values are ignored.
const MAX_ID_BYTES: usize = 512;

/// The property path of the mTLS peer URI SAN.
pub(crate) const PEER_URI_SAN: [&str; 2] = ["connection", "uri_san_peer_certificate"];
/// The metadata namespace Envoy's `jwt_authn` filter writes verified payloads to.
pub(crate) const JWT_AUTHN_NS: &str = "envoy.filters.http.jwt_authn";

fn clean(value: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if s.is_empty() || s.len() > MAX_ID_BYTES || s.chars().any(char::is_control) {
        return None;
    }
    Some(s.to_owned())
}

fn fill(slot: &mut Principal, id: Option<String>, auth: AuthMethod) {
    if slot.id.is_none()
        && let Some(id) = id
    {
        slot.id = Some(id);
        slot.auth = auth;
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Read a JWT claim (`a.b` = nested) from the `jwt_authn` metadata of `provider`.
fn jwt_claim(host: &dyn Host, provider: &str, claim: &str) -> Option<String> {
    let mut path: Vec<&str> = vec!["metadata", "filter_metadata", JWT_AUTHN_NS, provider];
    path.extend(claim.split('.'));
    host.get_property(&path).and_then(|v| clean(&v))
}

/// The identity of the current request. `headers` are the request headers as the client sent
/// them (trusted identity headers are only read when configured).
pub(crate) fn identify(
    host: &dyn Host,
    cfg: &IdentityConfig,
    headers: &[(String, String)],
) -> Identity {
    let mut id = Identity::default();
    if cfg.mtls {
        let san = host.get_property(&PEER_URI_SAN).and_then(|v| clean(&v));
        fill(&mut id.workload, san, AuthMethod::Mtls);
    }
    if let Some(jwt) = &cfg.jwt {
        if let Some(c) = &jwt.agent_claim {
            fill(
                &mut id.agent,
                jwt_claim(host, &jwt.provider, c),
                AuthMethod::Jwt,
            );
        }
        if let Some(c) = &jwt.human_claim {
            fill(
                &mut id.human,
                jwt_claim(host, &jwt.provider, c),
                AuthMethod::Jwt,
            );
        }
    }
    if let Some(h) = &cfg.headers {
        let read = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| header(headers, n))
                .and_then(|v| clean(v.as_bytes()))
        };
        fill(&mut id.agent, read(&h.agent), AuthMethod::Header);
        fill(&mut id.human, read(&h.human), AuthMethod::Header);
        fill(&mut id.workload, read(&h.workload), AuthMethod::Header);
    }
    if cfg.node_workload {
        fill(&mut id.workload, node_workload(host), AuthMethod::Node);
    }
    id
}

/// A sidecar's local workload from Envoy's node metadata (what istio-agent writes):
/// `k8s://<NAMESPACE>/<WORKLOAD_NAME>`.
fn node_workload(host: &dyn Host) -> Option<String> {
    let meta = |k: &str| {
        host.get_property(&["node", "metadata", k])
            .and_then(|v| clean(&v))
    };
    Some(format!(
        "k8s://{}/{}",
        meta("NAMESPACE")?,
        meta("WORKLOAD_NAME")?
    ))
}

/// The principal of a request: the verified agent identity, else the verified workload; `None`
/// when neither is known (state is then kept per session only). An identity that is only a
/// claim (`AuthMethod::None`) never is one.
pub(crate) fn principal_of(id: &Identity) -> Option<String> {
    [&id.agent, &id.workload]
        .into_iter()
        .find(|p| p.auth != AuthMethod::None && p.id.is_some())
        .and_then(|p| p.id.clone())
}

/// A claim of the verified JWT, when `identity.jwt` is configured and `claim` names one.
pub(crate) fn jwt_claim_of(
    host: &dyn Host,
    cfg: &IdentityConfig,
    claim: Option<&str>,
) -> Option<String> {
    let jwt = cfg.jwt.as_ref()?;
    jwt_claim(host, &jwt.provider, claim?)
}

/// Whether `name` is one of the headers the operator configured as a trusted identity source.
fn trusted(cfg: &IdentityConfig, name: &str) -> bool {
    cfg.headers.as_ref().is_some_and(|h| {
        [&h.agent, &h.human, &h.workload]
            .iter()
            .any(|t| t.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(name)))
    })
}

/// Names of request headers that must not reach upstream: every `x-portcullis-*` header the
/// client sent (receipts, decisions, identity claims, and the inputs `x-portcullis-intent` /
/// `x-portcullis-approval`, which the filter consumes), unless configured as a trusted identity
/// header.
pub(crate) fn spoofed_headers(cfg: &IdentityConfig, headers: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    const PREFIX: &str = "x-portcullis-";
    for (n, _) in headers {
        // Most requests have none: test the prefix before lowercasing (and allocating).
        if !n
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        {
            continue;
        }
        let lower = n.to_ascii_lowercase();
        if !trusted(cfg, &lower) && !out.contains(&lower) {
            out.push(lower);
        }
    }
    out
}

/// Remove [`spoofed_headers`] from the request the proxy forwards.
pub(crate) fn strip_spoofed_headers(
    host: &dyn Host,
    cfg: &IdentityConfig,
    headers: &[(String, String)],
) {
    for name in spoofed_headers(cfg, headers) {
        host.set_request_header(&name, None);
    }
}

/// The session key of a request from the configured source; `None` when absent or unusable
/// (visible ASCII only, at most 256 bytes).
pub(crate) fn session_key(
    source: &SessionKeySource,
    headers: &[(String, String)],
    trace_id: Option<&str>,
) -> Option<String> {
    let raw = match source {
        SessionKeySource::McpSessionId => header(headers, "mcp-session-id")?,
        SessionKeySource::Header(name) => header(headers, name)?,
        SessionKeySource::Traceparent => trace_id?,
    };
    usable_key(raw)
}

/// `raw` as a session key: trimmed, visible ASCII only, 1 to 256 bytes; `None` otherwise.
pub(crate) fn usable_key(raw: &str) -> Option<String> {
    let v = raw.trim();
    if v.is_empty() || v.len() > 256 || !v.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return None;
    }
    Some(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderIdentity, JwtIdentity};
    use crate::mock::MockHost;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn mtls_and_jwt_fill_their_slots() {
        let host = MockHost::new(0);
        host.set_property(&PEER_URI_SAN, "spiffe://cluster.local/ns/a/sa/agent");
        host.set_property(
            &["metadata", "filter_metadata", JWT_AUTHN_NS, "agents", "azp"],
            "coder-bot",
        );
        host.set_property(
            &[
                "metadata",
                "filter_metadata",
                JWT_AUTHN_NS,
                "agents",
                "act",
                "sub",
            ],
            "alice",
        );
        let cfg = IdentityConfig {
            mtls: true,
            jwt: Some(JwtIdentity {
                provider: "agents".into(),
                agent_claim: Some("azp".into()),
                human_claim: Some("act.sub".into()),
                intent_claim: None,
                run_claim: None,
            }),
            headers: None,
            node_workload: false,
        };
        let id = identify(&host, &cfg, &h(&[("x-portcullis-agent", "root")]));
        assert_eq!(
            id.workload.id.as_deref(),
            Some("spiffe://cluster.local/ns/a/sa/agent")
        );
        assert_eq!(id.workload.auth, AuthMethod::Mtls);
        assert_eq!(id.agent.id.as_deref(), Some("coder-bot"));
        assert_eq!(id.agent.auth, AuthMethod::Jwt);
        assert_eq!(id.human.id.as_deref(), Some("alice"));
    }

    /// The principal is the verified agent, else the verified workload (mTLS, a trusted header,
    /// or in a sidecar the node's own workload); a claim nobody verified is never one.
    #[test]
    fn the_principal_is_the_strongest_verified_identity() {
        let host = MockHost::new(0);
        let cfg = IdentityConfig {
            mtls: true,
            jwt: None,
            headers: None,
            node_workload: true,
        };
        assert_eq!(principal_of(&identify(&host, &cfg, &[])), None);
        host.set_property(&["node", "metadata", "NAMESPACE"], "agents");
        host.set_property(&["node", "metadata", "WORKLOAD_NAME"], "coder");
        let id = identify(&host, &cfg, &[]);
        assert_eq!(id.workload.auth, AuthMethod::Node);
        assert_eq!(principal_of(&id).as_deref(), Some("k8s://agents/coder"));
        host.set_property(&PEER_URI_SAN, "spiffe://corp/ns/agents/sa/coder");
        let id = identify(&host, &cfg, &[]);
        assert_eq!(
            principal_of(&id).as_deref(),
            Some("spiffe://corp/ns/agents/sa/coder"),
            "the peer certificate comes before node metadata"
        );
        let mut claimed = id.clone();
        claimed.agent.id = Some("whoever".into());
        assert_eq!(
            principal_of(&claimed).as_deref(),
            Some("spiffe://corp/ns/agents/sa/coder"),
            "an unverified agent claim is not the principal"
        );
        claimed.agent.auth = AuthMethod::Jwt;
        assert_eq!(principal_of(&claimed).as_deref(), Some("whoever"));
    }

    #[test]
    fn headers_are_read_only_when_configured_and_never_override_jwt() {
        let host = MockHost::new(0);
        let hdrs = h(&[("x-agent-id", "bot-7"), ("x-user", "mallory")]);
        let none = IdentityConfig {
            mtls: true,
            jwt: None,
            headers: None,
            node_workload: false,
        };
        assert_eq!(identify(&host, &none, &hdrs), Identity::default());
        let cfg = IdentityConfig {
            mtls: false,
            jwt: None,
            headers: Some(HeaderIdentity {
                agent: Some("x-agent-id".into()),
                human: None,
                workload: None,
            }),
            node_workload: false,
        };
        let id = identify(&host, &cfg, &hdrs);
        assert_eq!(id.agent.id.as_deref(), Some("bot-7"));
        assert_eq!(id.agent.auth, AuthMethod::Header);
        assert_eq!(id.human.id, None);
    }

    #[test]
    fn spoofed_headers_listed_except_trusted() {
        let hdrs = h(&[
            ("X-Portcullis-Receipt", "fake"),
            ("x-portcullis-decision", "ALLOW"),
            ("x-portcullis-agent", "a"),
            ("content-type", "application/json"),
        ]);
        let cfg = IdentityConfig {
            mtls: true,
            jwt: None,
            headers: Some(HeaderIdentity {
                agent: Some("x-portcullis-agent".into()),
                human: None,
                workload: None,
            }),
            node_workload: false,
        };
        assert_eq!(
            spoofed_headers(&cfg, &hdrs),
            vec![
                "x-portcullis-receipt".to_owned(),
                "x-portcullis-decision".to_owned()
            ]
        );
    }

    #[test]
    fn session_key_sources() {
        let hdrs = h(&[
            ("mcp-session-id", "abc"),
            ("x-run", "run-1"),
            ("x-bad", "a b"),
        ]);
        assert_eq!(
            session_key(&SessionKeySource::McpSessionId, &hdrs, None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            session_key(&SessionKeySource::Header("x-run".into()), &hdrs, None).as_deref(),
            Some("run-1")
        );
        assert_eq!(
            session_key(&SessionKeySource::Header("x-bad".into()), &hdrs, None),
            None
        );
        assert_eq!(
            session_key(&SessionKeySource::Traceparent, &hdrs, Some("4bf9")).as_deref(),
            Some("4bf9")
        );
        assert_eq!(
            session_key(&SessionKeySource::Traceparent, &hdrs, None),
            None
        );
    }
}
