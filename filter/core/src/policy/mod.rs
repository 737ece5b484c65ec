//! The policy in force: the plugin configuration, the verified bundle, the receipt signer and the
//! approver keys, with what the pack reads worked out once ([`pack`]). Read-only while it is in
//! force; the decision stage receives it with a session handle and nothing else of the plugin.

mod pack;
pub(crate) mod pins;

use bundle::PackSet;
use bundle::receipt::{BundleRef, SignPolicy, Signer};
use ed25519_dalek::{SigningKey, VerifyingKey};

pub(crate) use pack::PackReads;

use crate::bench::Stage;
use crate::config::Config;
use crate::normalize::NormalizeConfig;

/// Everything a decision reads.
pub(crate) struct Policy {
    pub cfg: Config,
    pub norm: NormalizeConfig,
    /// The packs in force (one for a plain bundle; a baseline and team packs for a layered one).
    pub bundle: PackSet,
    pub signer: Signer,
    pub sign_policy: SignPolicy,
    /// `approvers` flattened for `bundle::approval::verify`.
    pub approvers: Vec<(String, VerifyingKey)>,
    pub bundle_ref: BundleRef,
    /// What the pack reads.
    pub pack: PackReads,
    /// The request headers the filter reads one value of, lowercase: two different values are
    /// refused ([`crate::normalize::ambiguous_header`]). Worked out once per configuration.
    pub single_valued: Vec<String>,
}

impl Policy {
    /// The policy of `cfg` with its verified `bundle`, signing receipts with `key`.
    pub(crate) fn new(cfg: Config, bundle: PackSet, key: SigningKey) -> Policy {
        // A single pack names itself; a layered set names the set (each pack is in `layers`).
        let info = bundle.set_info();
        let bundle_ref = BundleRef {
            pack: info.name.clone(),
            version: info.version.clone(),
            hash: hex::encode(info.content_hash),
        };
        let norm = cfg.normalize_config();
        let approvers = cfg
            .approvers
            .iter()
            .flat_map(|(g, keys)| keys.iter().map(move |k| (g.clone(), *k)))
            .collect();
        let sign_policy = SignPolicy {
            checkpoint_every: cfg.receipts.checkpoint_every,
            max_unsigned_ms: cfg.receipts.max_unsigned_ms,
        };
        let pack = PackReads::of_all(bundle.layers().iter().map(|l| l.bundle.program()));
        let single_valued = single_valued(&cfg);
        Policy {
            cfg,
            norm,
            bundle,
            signer: Signer::new(key),
            sign_policy,
            approvers,
            bundle_ref,
            pack,
            single_valued,
        }
    }

    /// Whether a benchmark build cuts the request path after `stage` (always false without the
    /// `bench-cuts` feature; see [`crate::bench`]).
    pub(crate) fn cut(&self, stage: Stage) -> bool {
        #[cfg(feature = "bench-cuts")]
        {
            self.cfg.bench_cut.is_some_and(|c| c.at(stage))
        }
        #[cfg(not(feature = "bench-cuts"))]
        {
            let _ = stage;
            false
        }
    }
}

/// The request headers the filter reads one value of: the MCP session and protocol headers, the
/// intent, approval and grant tokens, `traceparent`, the configured session-key header and the
/// trusted identity headers.
fn single_valued(cfg: &Config) -> Vec<String> {
    let fixed = [
        "mcp-session-id",
        "mcp-protocol-version",
        "x-portcullis-intent",
        bundle::approval::APPROVAL_HEADER,
        bundle::grant::GRANT_HEADER,
        "traceparent",
    ];
    let key = match &cfg.session.key {
        crate::config::SessionKeySource::Header(name) => Some(name.as_str()),
        _ => None,
    };
    let identity = cfg.identity.headers.iter().flat_map(|h| {
        [&h.agent, &h.human, &h.workload]
            .into_iter()
            .filter_map(|n| n.as_deref())
    });
    fixed
        .into_iter()
        .chain(key)
        .chain(identity)
        .map(str::to_ascii_lowercase)
        .collect()
}
