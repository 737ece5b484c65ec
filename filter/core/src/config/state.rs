//! `state`: where state that must hold across Envoy replicas and restarts is kept
//! (`docs/state.md`). `backend: local` (the default) keeps everything in this Envoy's shared
//! data; `backend: etcd` also keeps containment and used approval tokens in etcd v3, reached
//! through the Envoy cluster `etcd.cluster` (HTTP/2, etcd's gRPC port). `sessions: etcd` keeps
//! session records there as well (`local`, the default: each Envoy keeps its own).

use serde::Deserialize;

/// Default per-call timeout of etcd call-outs.
pub const DEFAULT_ETCD_TIMEOUT_MS: u32 = 500;
/// Default key prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/portcullis/";

/// `state` as written in the configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    backend: Option<String>,
    etcd: Option<RawEtcd>,
    sessions: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    cluster: String,
    prefix: Option<String>,
    timeout_ms: Option<u32>,
}

/// The etcd backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// The Envoy cluster of etcd's gRPC endpoint (every member, HTTP/2).
    pub cluster: String,
    /// Every key the filter writes starts with this (`/portcullis/`); one prefix per deployment
    /// that shares containment.
    pub prefix: String,
    /// Per call (ms): a call that takes longer counts as etcd being unavailable.
    pub timeout_ms: u32,
    /// `state.sessions: etcd`: session records (chain head, counters, budgets, session-scoped
    /// taints and kills) are kept in etcd too, written with a compare-and-swap per decided
    /// request; `false` (`local`): each Envoy keeps its own.
    pub sessions: bool,
}

/// Validate `state`; `None` is the local backend.
pub(crate) fn parse_state(raw: RawState) -> Result<Option<EtcdConfig>, String> {
    let sessions = match raw.sessions.as_deref() {
        None | Some("local") => false,
        Some("etcd") => true,
        Some(other) => {
            return Err(format!(
                "`state.sessions`: `{other}` is not one of `local`, `etcd`"
            ));
        }
    };
    if sessions && raw.backend.as_deref() != Some("etcd") {
        return Err("`state.sessions: etcd` is only allowed with `backend: etcd`".into());
    }
    match (raw.backend.as_deref(), raw.etcd) {
        (None | Some("local"), None) => Ok(None),
        (None | Some("local"), Some(_)) => {
            Err("`state.etcd` is only allowed with `backend: etcd`".into())
        }
        (Some("etcd"), None) => Err("`state.etcd` is required with `backend: etcd`".into()),
        (Some("etcd"), Some(e)) => {
            let cluster_ok = !e.cluster.is_empty()
                && e.cluster.len() <= 100
                && e.cluster.bytes().all(|b| b.is_ascii_graphic());
            if !cluster_ok {
                return Err(format!(
                    "`state.etcd.cluster`: `{}` is not an Envoy cluster name (1 to 100 printable \
                     characters)",
                    e.cluster
                ));
            }
            let prefix = e.prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_owned());
            if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() > 200 {
                return Err(format!(
                    "`state.etcd.prefix`: `{prefix}` must start and end with `/` (at most 200 \
                     characters)"
                ));
            }
            let timeout_ms = e.timeout_ms.unwrap_or(DEFAULT_ETCD_TIMEOUT_MS);
            if !(10..=60_000).contains(&timeout_ms) {
                return Err(format!(
                    "`state.etcd.timeout_ms`: {timeout_ms} is not between 10 and 60000"
                ));
            }
            Ok(Some(EtcdConfig {
                cluster: e.cluster,
                prefix,
                timeout_ms,
                sessions,
            }))
        }
        (Some(other), _) => Err(format!(
            "`state.backend`: `{other}` is not one of `local`, `etcd`"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    fn parse(json: &str) -> Result<Option<EtcdConfig>, String> {
        parse_state(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn the_etcd_backend_and_its_refusals() {
        assert_eq!(parse("{}").unwrap(), None);
        assert_eq!(parse(r#"{"backend":"local"}"#).unwrap(), None);
        let e = parse(r#"{"backend":"etcd","etcd":{"cluster":"etcd"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(e.prefix, "/portcullis/");
        assert_eq!(e.timeout_ms, 500);
        assert!(!e.sessions, "session records stay local unless asked");
        let shared = parse(r#"{"backend":"etcd","etcd":{"cluster":"etcd"},"sessions":"etcd"}"#)
            .unwrap()
            .unwrap();
        assert!(shared.sessions);
        assert!(
            !parse(r#"{"backend":"etcd","etcd":{"cluster":"e"},"sessions":"local"}"#)
                .unwrap()
                .unwrap()
                .sessions
        );
        for (bad, says) in [
            (r#"{"backend":"etcd"}"#, "is required"),
            (r#"{"etcd":{"cluster":"x"}}"#, "only allowed"),
            (r#"{"backend":"redis"}"#, "`redis`"),
            (
                r#"{"sessions":"etcd"}"#,
                "only allowed with `backend: etcd`",
            ),
            (
                r#"{"backend":"local","sessions":"etcd"}"#,
                "only allowed with `backend: etcd`",
            ),
            (
                r#"{"backend":"etcd","etcd":{"cluster":"e"},"sessions":"redis"}"#,
                "`state.sessions`: `redis`",
            ),
            (r#"{"backend":"etcd","etcd":{"cluster":""}}"#, "cluster"),
            (
                r#"{"backend":"etcd","etcd":{"cluster":"e","prefix":"p"}}"#,
                "prefix",
            ),
            (
                r#"{"backend":"etcd","etcd":{"cluster":"e","timeout_ms":1}}"#,
                "timeout_ms",
            ),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(serde_json::from_str::<RawState>(r#"{"etcd":{"cluster":"e","x":1}}"#).is_err());
    }
}
