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
        Policy {
            cfg,
            norm,
            bundle,
            signer: Signer::new(key),
            sign_policy,
            approvers,
            bundle_ref,
            pack,
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
