//! The root context: one [`Plugin`] per configuration per worker. It loads the configuration into
//! a [`Policy`] and a [`Sessions`] handle, defines the metrics, and runs the timer that ends idle
//! sessions and checkpoints receipts; `bundle_pull` swaps in a plugin built with a fetched bundle.
//!
//! A plugin is built once per configuration by [`Plugin::configure`]. If anything is wrong
//! (configuration, bundle, signing key) it is still built, in a *failed* state that makes every
//! request be denied with the error as the reason: fail closed, never pass-through.

pub mod bundle_pull;

use bundle::{PackSet, Trust};

use crate::config::{self, SigningKeySource};
use crate::error::FilterError;
use crate::host::{Host, LogLevel};
use crate::metrics::{Metric, Metrics};
use crate::policy::Policy;
use crate::session::etcd::Etcd;
use crate::session::etcd::watch::Watcher;
use crate::session::{Layout, Sessions};

/// A configuration in force: the policy, its sessions, and (with the etcd backend) this
/// worker's watch of the shared state store.
pub(crate) struct Loaded {
    pub policy: Policy,
    pub sessions: Sessions,
    pub watcher: Option<Watcher>,
}

/// The plugin: one per configuration per worker.
pub struct Plugin {
    pub(crate) loaded: Result<Loaded, FilterError>,
    pub(crate) metrics: Metrics,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("error", &self.error())
            .finish_non_exhaustive()
    }
}

/// Load a configuration (`bytes`), with `fetched` in place of its bundle when given.
fn load(
    host: &dyn Host,
    bytes: &[u8],
    fetched: Option<&[u8]>,
    metrics: Metrics,
) -> Result<Loaded, FilterError> {
    let mut cfg = config::parse(bytes)?;
    if let Some(b) = fetched {
        b.clone_into(&mut cfg.bundle);
    }
    if cfg.bundle.is_empty() {
        return Err(FilterError::NoBundleYet);
    }
    let bundle = PackSet::from_bytes(&cfg.bundle, &Trust::Keys(cfg.trusted_bundle_keys.clone()))
        .map_err(FilterError::Bundle)?;
    let key_line = match &cfg.signing_key {
        SigningKeySource::Inline(line) => line.clone(),
        SigningKeySource::Env(var) => host
            .env_var(var)
            .ok_or_else(|| FilterError::SigningKeyUnset(var.clone()))?,
    };
    let key = bundle::keys::parse_signing_key(&key_line).map_err(FilterError::SigningKey)?;
    let layout = Layout::new(&key.to_bytes(), cfg.session.slots);
    let session_cfg = cfg.session.clone();
    let watcher = cfg
        .state
        .clone()
        .map(|e| Watcher::new(Etcd::new(e), metrics));
    let release_keys = cfg.release_keys.clone();
    let policy = Policy::new(cfg, bundle, key);
    let mut sessions = Sessions::new(host, &session_cfg, layout, policy.signer.clone(), metrics);
    if let Some(w) = &watcher {
        sessions.replicate(&release_keys, w.etcd.cfg.sessions);
    }
    Ok(Loaded {
        policy,
        sessions,
        watcher,
    })
}

impl Plugin {
    /// Build the plugin from its configuration. Never fails: a bad configuration yields a plugin
    /// that denies everything (and says why in the log and in every answer).
    pub fn configure(host: &dyn Host, config: &[u8]) -> Plugin {
        Plugin::configure_with(host, config, None)
    }

    /// [`Plugin::configure`] with the bundle replaced by `fetched` (a bundle pulled from the
    /// bundle server, see [`bundle_pull`]) when given.
    pub fn configure_with(host: &dyn Host, config: &[u8], fetched: Option<&[u8]>) -> Plugin {
        let metrics = Metrics::define(host);
        let plugin = Plugin {
            loaded: load(host, config, fetched, metrics),
            metrics,
        };
        match &plugin.loaded {
            Ok(Loaded {
                policy,
                sessions,
                watcher,
            }) => {
                let i = policy.bundle.info();
                let line = if policy.bundle.is_layered() {
                    let packs: Vec<_> = policy
                        .bundle
                        .layers()
                        .iter()
                        .map(|l| {
                            let b = l.bundle.info();
                            format!(
                                "`{}` {} ({}, {} rules)",
                                l.entry.id,
                                b.version,
                                l.entry.mode.as_str(),
                                b.rules
                            )
                        })
                        .collect();
                    format!(
                        "portcullis: loaded layered set `{}` version `{}` (hash {}): {}; receipts signed by {}",
                        policy.bundle_ref.pack,
                        policy.bundle_ref.version,
                        policy.bundle_ref.hash,
                        packs.join(", "),
                        policy.signer.key_id()
                    )
                } else {
                    format!(
                        "portcullis: loaded pack `{}` version `{}` ({} rules, hash {}), receipts signed by {}",
                        i.pack,
                        i.version,
                        i.rules,
                        policy.bundle_ref.hash,
                        policy.signer.key_id()
                    )
                };
                host.log(LogLevel::Info, &line);
                #[cfg(feature = "bench-cuts")]
                if let Some(cut) = policy.cfg.bench_cut {
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "portcullis: BENCHMARK BUILD, bench_cut {cut:?}: requests are let \
                             through without full enforcement"
                        ),
                    );
                }
                host.set_tick_period_ms(policy.cfg.receipts.tick_ms);
                sessions.install(host);
                sessions.apply_releases(host, &policy.cfg.releases, &policy.cfg.release_keys);
                if let Some(w) = watcher {
                    // Read etcd now rather than at the first tick.
                    w.on_tick(host, sessions);
                }
            }
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("portcullis: {e}; every request will be denied"),
                );
                plugin.metrics.count(host, Metric::Errors);
            }
        }
        plugin
    }

    /// The configuration error, when the plugin failed to load.
    pub fn error(&self) -> Option<&FilterError> {
        self.loaded.as_ref().err()
    }

    /// The timer: see `Sessions::on_tick` and `Watcher::on_tick`.
    pub fn on_tick(&self, host: &dyn Host) {
        if let Ok(l) = &self.loaded {
            l.sessions
                .on_tick(host, l.policy.cfg.receipts.max_unsigned_ms);
            if let Some(w) = &l.watcher {
                w.on_tick(host, &l.sessions);
            }
        }
    }

    /// A gRPC call of the root context answered (the shared state store's reads and writes).
    pub fn on_grpc_call_response(&self, host: &dyn Host, token: u32, status: u32, size: usize) {
        if let Ok(l) = &self.loaded
            && let Some(w) = &l.watcher
            && w.on_call_response(host, &l.sessions, token, status, size)
            && w.take_just_read()
        {
            // Containment read from etcd may hold quarantines this configuration's releases
            // lift (a restart: the local records were empty when they were applied).
            l.sessions
                .apply_releases(host, &l.policy.cfg.releases, &l.policy.cfg.release_keys);
        }
    }

    /// A message on a gRPC stream of the root context (the shared state store's watch).
    pub fn on_grpc_stream_message(&self, host: &dyn Host, token: u32, size: usize) {
        if let Ok(l) = &self.loaded
            && let Some(w) = &l.watcher
        {
            w.on_stream_message(host, &l.sessions, token, size);
        }
    }

    /// A gRPC stream of the root context closed.
    pub fn on_grpc_stream_close(&self, host: &dyn Host, token: u32, status: u32) {
        if let Ok(l) = &self.loaded
            && let Some(w) = &l.watcher
        {
            w.on_stream_close(host, token, status);
        }
    }

    /// Envoy stops this configuration: see `Sessions::on_done`.
    pub fn on_done(&self, host: &dyn Host) {
        if let Ok(l) = &self.loaded {
            l.sessions.on_done(host);
            if let Some(w) = &l.watcher {
                w.on_done(host);
            }
        }
    }
}
