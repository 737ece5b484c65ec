//! The metrics the filter keeps (Envoy prefixes Wasm metrics with `wasmcustom.`), defined once per
//! plugin and counted by every stage through a copy of [`Metrics`].

use crate::host::{Host, MetricKind};

/// One metric the filter keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metric {
    Allow,
    Modify,
    Defer,
    StepUp,
    Deny,
    /// Requests refused before evaluation (bad input).
    Refused,
    /// Internal failures (session store, call-outs, configuration).
    Errors,
    /// Sessions ended by expiry, eviction or the client's `DELETE`.
    Evicted,
    /// Sessions this worker tracks (gauge).
    Sessions,
    /// Actions decided without session state: the request carried no session key.
    Untracked,
    /// Calls to the shared state store (etcd) that failed.
    StateStoreErrors,
    /// Watches of the shared state store in sync (gauge: one per worker when all is well).
    StateStoreWatches,
    /// Credentials injected after a token exchange at the STS.
    CredentialsMinted,
    /// Credentials injected from the filter's cache, with no call to the STS.
    CredentialsCached,
    /// Credentials that could not be had (the request was denied by `filter:credential`).
    CredentialsFailed,
}

impl Metric {
    const ALL: [Metric; 15] = [
        Metric::Allow,
        Metric::Modify,
        Metric::Defer,
        Metric::StepUp,
        Metric::Deny,
        Metric::Refused,
        Metric::Errors,
        Metric::Evicted,
        Metric::Sessions,
        Metric::Untracked,
        Metric::StateStoreErrors,
        Metric::StateStoreWatches,
        Metric::CredentialsMinted,
        Metric::CredentialsCached,
        Metric::CredentialsFailed,
    ];

    /// The metric's name and kind.
    const fn definition(self) -> (&'static str, MetricKind) {
        match self {
            Metric::Allow => ("portcullis_decisions_allow", MetricKind::Counter),
            Metric::Modify => ("portcullis_decisions_modify", MetricKind::Counter),
            Metric::Defer => ("portcullis_decisions_defer", MetricKind::Counter),
            Metric::StepUp => ("portcullis_decisions_step_up", MetricKind::Counter),
            Metric::Deny => ("portcullis_decisions_deny", MetricKind::Counter),
            Metric::Refused => ("portcullis_refused", MetricKind::Counter),
            Metric::Errors => ("portcullis_errors", MetricKind::Counter),
            Metric::Evicted => ("portcullis_sessions_ended", MetricKind::Counter),
            Metric::Sessions => ("portcullis_sessions_tracked", MetricKind::Gauge),
            Metric::Untracked => ("portcullis_actions_untracked", MetricKind::Counter),
            Metric::StateStoreErrors => ("portcullis_state_store_errors", MetricKind::Counter),
            Metric::StateStoreWatches => ("portcullis_state_store_watches", MetricKind::Gauge),
            Metric::CredentialsMinted => ("portcullis_credentials_minted", MetricKind::Counter),
            Metric::CredentialsCached => ("portcullis_credentials_cached", MetricKind::Counter),
            Metric::CredentialsFailed => ("portcullis_credentials_failed", MetricKind::Counter),
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The host's ids of the filter's metrics (a metric the host would not define is not counted).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Metrics {
    ids: [Option<u32>; Metric::ALL.len()],
}

impl Metrics {
    /// Define every metric with the host.
    pub(crate) fn define(host: &dyn Host) -> Metrics {
        let mut ids = [None; Metric::ALL.len()];
        for (slot, m) in ids.iter_mut().zip(Metric::ALL) {
            let (name, kind) = m.definition();
            *slot = host.define_metric(kind, name).ok();
        }
        Metrics { ids }
    }

    /// Count one.
    pub(crate) fn count(&self, host: &dyn Host, metric: Metric) {
        self.add(host, metric, 1);
    }

    /// Add `delta` (a gauge may go down).
    pub(crate) fn add(&self, host: &dyn Host, metric: Metric, delta: i64) {
        if let Some(Some(id)) = self.ids.get(metric.index()) {
            host.increment_metric(*id, delta);
        }
    }
}
