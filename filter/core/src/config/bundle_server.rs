//! `bundle.server`: where the filter pulls its policy bundle from, and how often
//! (`root::bundle_pull` does the pulling; docs/filter-config.md).

use serde::Deserialize;

/// Default poll interval.
pub const DEFAULT_POLL_INTERVAL_S: u64 = 30;
/// Default fetch timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// `bundle.server` as written in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundleServer {
    cluster: String,
    authority: Option<String>,
    path: String,
    poll_interval_s: Option<u64>,
    timeout_ms: Option<u64>,
    sha256: Option<String>,
}

/// Where and how often to fetch the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleServer {
    /// Envoy cluster of the bundle server.
    pub cluster: String,
    /// `:authority` of the fetch (default: the cluster).
    pub authority: String,
    /// `:path` of the fetch.
    pub path: String,
    /// Time between polls (ms).
    pub poll_interval_ms: u64,
    /// Fetch timeout (ms).
    pub timeout_ms: u64,
    /// Accept only a body with this SHA-256 (a pinned reference); polling stops once it is in force.
    pub sha256: Option<[u8; 32]>,
}

/// Validate `bundle.server`; the error names the key.
pub(crate) fn parse_server(raw: RawBundleServer) -> Result<BundleServer, String> {
    if raw.cluster.is_empty() {
        return Err("`cluster` is empty".into());
    }
    if !raw.path.starts_with('/') {
        return Err(format!("`path`: `{}` must start with `/`", raw.path));
    }
    let poll_s = raw.poll_interval_s.unwrap_or(DEFAULT_POLL_INTERVAL_S);
    if !(5..=86_400).contains(&poll_s) {
        return Err(format!(
            "`poll_interval_s`: {poll_s} is not within 5..=86400"
        ));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(100..=60_000).contains(&timeout_ms) {
        return Err(format!(
            "`timeout_ms`: {timeout_ms} is not within 100..=60000"
        ));
    }
    let sha256 = match raw.sha256 {
        None => None,
        Some(h) => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h.trim(), &mut out)
                .map_err(|_| format!("`sha256`: `{h}` is not 64 hex digits"))?;
            Some(out)
        }
    };
    Ok(BundleServer {
        authority: raw.authority.unwrap_or_else(|| raw.cluster.clone()),
        cluster: raw.cluster,
        path: raw.path,
        poll_interval_ms: poll_s.saturating_mul(1000),
        timeout_ms,
        sha256,
    })
}
