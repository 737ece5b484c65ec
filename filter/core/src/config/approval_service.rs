//! `approval_service`: the approval service that answers STEP_UP in-band (`docs/approvals.md`,
//! "In-band approval"). The filter tells it about a pending action (a POST), points the agent's
//! client at its page (an MCP URL-mode elicitation), and on the client's retry fetches the token
//! an approver minted there. The service is trusted for nothing its signature does not prove:
//! the token is verified against `approvers` exactly as an `x-portcullis-approval` header is.

use serde::Deserialize;

/// Default per-call timeout of approval-service call-outs.
pub const DEFAULT_TIMEOUT_MS: u32 = 2_000;
/// Default path prefix of the service's API.
pub const DEFAULT_API_PREFIX: &str = "/api";

/// `approval_service` as written in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovalService {
    cluster: String,
    authority: Option<String>,
    public_url: String,
    api_prefix: Option<String>,
    timeout_ms: Option<u32>,
}

/// The approval service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalService {
    /// The Envoy cluster the call-outs go to.
    pub cluster: String,
    /// `:authority` of the call-outs.
    pub authority: String,
    /// The base URL approvers open in a browser (`http(s)://host[:port][/path]`, no trailing
    /// `/`); the page of an elicitation is `<public_url>/approve/<elicitation id>`.
    pub public_url: String,
    /// Path prefix of the API the filter calls (`/api`): `POST <prefix>/elicitations`,
    /// `GET <prefix>/elicitations/<id>`.
    pub api_prefix: String,
    /// Per call (ms); a slower answer counts as no answer.
    pub timeout_ms: u32,
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// Validate `approval_service`.
pub(crate) fn parse(raw: RawApprovalService) -> Result<ApprovalService, String> {
    if raw.cluster.is_empty() || raw.cluster.len() > 100 || !printable(&raw.cluster) {
        return Err(format!(
            "`approval_service.cluster`: `{}` is not an Envoy cluster name (1 to 100 printable \
             characters)",
            raw.cluster
        ));
    }
    let url = raw.public_url.trim_end_matches('/').to_owned();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let host_ok = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    if !scheme_ok || !host_ok || url.len() > 512 || !printable(&url) || url.contains(['"', '<']) {
        return Err(format!(
            "`approval_service.public_url`: `{}` is not an http(s) URL with a host",
            raw.public_url
        ));
    }
    let api_prefix = raw
        .api_prefix
        .unwrap_or_else(|| DEFAULT_API_PREFIX.to_owned())
        .trim_end_matches('/')
        .to_owned();
    if !api_prefix.starts_with('/') || !printable(&api_prefix) || api_prefix.contains(['?', '#']) {
        return Err(format!(
            "`approval_service.api_prefix`: `{api_prefix}` must start with `/` (no query)"
        ));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(100..=30_000).contains(&timeout_ms) {
        return Err(format!(
            "`approval_service.timeout_ms`: {timeout_ms} is outside 100..30000"
        ));
    }
    let authority = raw.authority.unwrap_or_else(|| raw.cluster.clone());
    Ok(ApprovalService {
        cluster: raw.cluster,
        authority,
        public_url: url,
        api_prefix,
        timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: serde_json::Value) -> RawApprovalService {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_refusals() {
        let s = parse(raw(serde_json::json!({
            "cluster": "approver", "public_url": "https://approve.example.com/"
        })))
        .unwrap();
        assert_eq!(s.authority, "approver");
        assert_eq!(s.public_url, "https://approve.example.com");
        assert_eq!(s.api_prefix, "/api");
        assert_eq!(s.timeout_ms, DEFAULT_TIMEOUT_MS);
        for bad in [
            serde_json::json!({"cluster": "", "public_url": "https://a"}),
            serde_json::json!({"cluster": "c", "public_url": "ftp://a"}),
            serde_json::json!({"cluster": "c", "public_url": "https:///path"}),
            serde_json::json!({"cluster": "c", "public_url": "https://a", "api_prefix": "api"}),
            serde_json::json!({"cluster": "c", "public_url": "https://a", "timeout_ms": 5}),
        ] {
            assert!(parse(raw(bad.clone())).is_err(), "{bad}");
        }
        let unknown: Result<RawApprovalService, _> = serde_json::from_value(
            serde_json::json!({"cluster": "c", "public_url": "https://a", "secret": 1}),
        );
        assert!(unknown.is_err());
    }
}
