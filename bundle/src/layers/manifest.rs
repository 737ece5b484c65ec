//! The manifest of a layered bundle: which packs, in which order, assigned to which actions, in
//! which mode, owned by which key. It travels as JSON inside the signed envelope
//! (`docs/bundle-format.md`, "Layered bundles"), so it is read with `deny_unknown_fields` and
//! checked against [`crate::Limits`] before any pack is loaded.

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::LoadError;
use crate::limits::Limits;
use crate::matchers::glob_match;
use crate::verdict::Mode;

/// The manifest of a layered bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The name of the set (receipts name it as the bundle's pack).
    pub name: String,
    /// The version of the set.
    pub version: String,
    /// The packs, baseline first; every applicable pack is evaluated.
    pub packs: Vec<PackEntry>,
}

/// One pack of the set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackEntry {
    /// The pack's id in the set (unique; receipts write it).
    pub id: String,
    /// The layer's mode: `enforce` applies its decision; `audit` and `warn` record it (warn also
    /// tells the agent), and its decision never wins.
    pub mode: Mode,
    /// Which actions the pack applies to; empty: every action (the baseline).
    #[serde(default)]
    pub assign: Vec<Assign>,
    /// The key id of the pack's owner (`ed25519:<hex>`); the pack's own signature must be by it.
    pub owner: String,
    /// The owner's public key (`policyc keygen`'s `.pub` line), vouched for by the signature on
    /// the envelope.
    pub owner_key: String,
    /// Lowercase hex SHA-256 content hash of the pack's bundle (pins the exact bundle).
    pub hash: String,
}

/// An assignment rule: the pack applies to an action when any of its rules matches. Patterns are
/// globs (`*`, `?`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Assign {
    /// The verified agent id (`identity.agent.id`).
    Agent(String),
    /// The namespace of the workload: the `ns` segment of a SPIFFE id
    /// (`spiffe://<domain>/ns/<namespace>/sa/<account>`) or the first segment of a node identity
    /// (`k8s://<namespace>/<workload>`), of the workload or, failing that, the agent.
    Namespace(String),
    /// The workload id (`identity.workload.id`).
    Workload(String),
    /// The MCP server (`target.server`; MCP actions only).
    Server(String),
    /// The destination host (`target.host`; HTTP actions only).
    Host(String),
}

/// The id of an authenticated principal (an id that is only a claim, auth `none`, is none).
fn id(p: &crate::action::Principal) -> Option<&str> {
    p.id.as_deref()
        .filter(|_| p.auth != crate::action::AuthMethod::None)
}

/// The namespace of a workload id: the `ns` segment of a SPIFFE id, or the first segment of a
/// sidecar's node identity (`k8s://<namespace>/<workload>`).
fn spiffe_namespace(id: &str) -> Option<&str> {
    if let Some(rest) = id.strip_prefix("k8s://") {
        return rest.split('/').next().filter(|n| !n.is_empty());
    }
    let rest = id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/').skip(1);
    while let Some(p) = parts.next() {
        if p == "ns" {
            return parts.next().filter(|n| !n.is_empty());
        }
    }
    None
}

impl Assign {
    /// Whether the rule selects `a`.
    pub fn matches(&self, a: &Action) -> bool {
        // Only an authenticated id selects a pack: an id that is only a claim (auth `none`)
        // is no identity.
        match self {
            Assign::Agent(g) => id(&a.identity.agent).is_some_and(|v| glob_match(g, v)),
            Assign::Workload(g) => id(&a.identity.workload).is_some_and(|v| glob_match(g, v)),
            Assign::Namespace(g) => id(&a.identity.workload)
                .and_then(spiffe_namespace)
                .or_else(|| id(&a.identity.agent).and_then(spiffe_namespace))
                .is_some_and(|ns| glob_match(g, ns)),
            Assign::Server(g) => {
                a.kind == crate::action::Kind::Mcp
                    && !a.target.server.is_empty()
                    && glob_match(g, &a.target.server)
            }
            Assign::Host(g) => {
                a.kind == crate::action::Kind::Http
                    && !a.target.host.is_empty()
                    && glob_match(g, &a.target.host)
            }
        }
    }

    /// How receipts write the rule: `agent:<pattern>`, `host:<pattern>`, ...
    pub fn source(&self) -> String {
        let (k, v) = match self {
            Assign::Agent(v) => ("agent", v),
            Assign::Namespace(v) => ("namespace", v),
            Assign::Workload(v) => ("workload", v),
            Assign::Server(v) => ("server", v),
            Assign::Host(v) => ("host", v),
        };
        format!("{k}:{v}")
    }

    fn pattern(&self) -> &str {
        match self {
            Assign::Agent(v)
            | Assign::Namespace(v)
            | Assign::Workload(v)
            | Assign::Server(v)
            | Assign::Host(v) => v,
        }
    }
}

/// The assignment source receipts write for a pack with no assignment rules.
pub const BASELINE_SOURCE: &str = "baseline";

fn invalid(what: impl Into<String>) -> LoadError {
    LoadError::invalid(format!("layered bundle manifest: {}", what.into()))
}

fn too_large(what: &'static str, found: usize, max: u32) -> LoadError {
    LoadError::TooLarge {
        what,
        found: u64::try_from(found).unwrap_or(u64::MAX),
        max: u64::from(max),
    }
}

impl Manifest {
    /// Parse and check a manifest: bounded, ids unique and non-empty, the first pack the baseline
    /// (no assignment rules, enforce mode is not required), owner ids matching owner keys.
    pub fn parse(json: &[u8], limits: &Limits) -> Result<Manifest, LoadError> {
        let max = usize::try_from(limits.max_manifest_bytes).unwrap_or(usize::MAX);
        if json.len() > max {
            return Err(too_large(
                "the layered bundle manifest in bytes",
                json.len(),
                limits.max_manifest_bytes,
            ));
        }
        let m: Manifest = serde_json::from_slice(json)
            .map_err(|e| invalid(format!("not the expected JSON ({e})")))?;
        m.check(limits)?;
        Ok(m)
    }

    /// The checks [`Manifest::parse`] makes (also run by `policyc build`).
    pub fn check(&self, limits: &Limits) -> Result<(), LoadError> {
        let max_layers = usize::try_from(limits.max_layers).unwrap_or(usize::MAX);
        if self.packs.len() > max_layers {
            return Err(too_large(
                "the number of packs in a layered bundle",
                self.packs.len(),
                limits.max_layers,
            ));
        }
        let Some(first) = self.packs.first() else {
            return Err(invalid("it lists no pack"));
        };
        if !first.assign.is_empty() {
            return Err(invalid(format!(
                "the first pack `{}` is the baseline and must apply to every action (no `assign`)",
                first.id
            )));
        }
        let max_assign = usize::try_from(limits.max_assign_rules).unwrap_or(usize::MAX);
        for (i, p) in self.packs.iter().enumerate() {
            if p.id.is_empty()
                || p.id.len() > crate::limits::MAX_PACK_ID_BYTES
                || p.id.chars().any(char::is_control)
            {
                return Err(invalid(format!(
                    "a pack id is empty, longer than {} bytes or not printable",
                    crate::limits::MAX_PACK_ID_BYTES
                )));
            }
            if self.packs.iter().take(i).any(|q| q.id == p.id) {
                return Err(invalid(format!("pack id `{}` appears twice", p.id)));
            }
            if p.assign.len() > max_assign {
                return Err(too_large(
                    "the number of assignment rules of a pack",
                    p.assign.len(),
                    limits.max_assign_rules,
                ));
            }
            if p.assign.iter().any(|a| a.pattern().is_empty()) {
                return Err(invalid(format!(
                    "pack `{}` has an empty assignment pattern",
                    p.id
                )));
            }
            let key = crate::keys::parse_verifying_key(&p.owner_key)
                .map_err(|e| invalid(format!("pack `{}`: owner_key: {e}", p.id)))?;
            if crate::keys::key_id(&key) != p.owner {
                return Err(invalid(format!(
                    "pack `{}`: owner `{}` is not the id of its owner_key",
                    p.id, p.owner
                )));
            }
            if p.hash.len() != 64 || hex::decode(&p.hash).is_err() {
                return Err(invalid(format!(
                    "pack `{}`: hash is not 64 hex digits",
                    p.id
                )));
            }
        }
        Ok(())
    }
}

impl PackEntry {
    /// The assignment source that selects `a` (`baseline` for a pack without rules), or `None`
    /// when the pack does not apply to `a`.
    pub fn assigned(&self, a: &Action) -> Option<String> {
        if self.assign.is_empty() {
            return Some(BASELINE_SOURCE.to_owned());
        }
        self.assign
            .iter()
            .find(|r| r.matches(a))
            .map(Assign::source)
    }

    /// Whether the pack applies to every action.
    pub fn is_baseline(&self) -> bool {
        self.assign.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Kind, Principal};

    #[test]
    fn namespace_comes_from_the_spiffe_id() {
        assert_eq!(
            spiffe_namespace("spiffe://cluster.local/ns/payments/sa/agent"),
            Some("payments")
        );
        assert_eq!(spiffe_namespace("spiffe://cluster.local/sa/agent"), None);
        assert_eq!(
            spiffe_namespace("k8s://payments/refunder"),
            Some("payments")
        );
        assert_eq!(spiffe_namespace("payments"), None);
        let mut a = Action {
            kind: Kind::Http,
            ..Action::default()
        };
        a.identity.workload = Principal {
            id: Some("spiffe://cluster.local/ns/payments/sa/agent".into()),
            ..Principal::default()
        };
        assert!(
            !Assign::Namespace("pay*".into()).matches(&a),
            "an unauthenticated id is only a claim"
        );
        a.identity.workload.auth = crate::action::AuthMethod::Mtls;
        assert!(Assign::Namespace("pay*".into()).matches(&a));
        assert!(!Assign::Namespace("search".into()).matches(&a));
        // A host rule never selects an MCP action, a server rule never an HTTP one.
        a.target.host = "api.example".into();
        a.target.server = "tools".into();
        assert!(Assign::Host("*.example".into()).matches(&a));
        assert!(!Assign::Server("tools".into()).matches(&a));
        a.kind = Kind::Mcp;
        assert!(!Assign::Host("*.example".into()).matches(&a));
        assert!(Assign::Server("tools".into()).matches(&a));
    }
}
