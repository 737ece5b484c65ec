//! The plugin (root context): configuration, the loaded bundle, the receipt signer, this worker's
//! session bookkeeping, metrics, and the timer that checkpoints idle sessions.
//!
//! A plugin is built once per configuration by [`Plugin::configure`]. If anything is wrong
//! (configuration, bundle, signing key) it is still built, in a *failed* state that makes every
//! request be denied with the error as the reason: fail closed, never pass-through.

use std::cell::RefCell;

use bundle::receipt::{self, BundleRef, ChainHead, Receipt, SignPolicy, Signer};
use bundle::session::SessionStatus;
use bundle::session_codec::SessionExtra;
use bundle::{Bundle, Trust};
use ed25519_dalek::VerifyingKey;

use crate::config::{self, Config, SigningKeySource};
use crate::host::{Host, LogLevel, MetricKind, SharedDataError};
use crate::normalize::NormalizeConfig;
use crate::session_store::{self, Displaced, Layout, MAX_CAS_ATTEMPTS, Record, Tracker};

/// Everything a working plugin holds.
pub(crate) struct Loaded {
    pub cfg: Config,
    pub norm: NormalizeConfig,
    pub bundle: Bundle,
    pub signer: Signer,
    pub sign_policy: SignPolicy,
    /// `approvers` flattened for `bundle::approval::verify`.
    pub approvers: Vec<(String, VerifyingKey)>,
    pub bundle_ref: BundleRef,
    /// The session slot layout this configuration asks for (the one in force is in shared data,
    /// see [`session_store::install_layout`]).
    pub layout: Layout,
    /// The layout in force, read once.
    pub layout_in_force: session_store::LayoutCache,
    /// The pack can act on tool results (`response::result::pack_reads_results`); when not,
    /// tool results pass without being held or read.
    pub inspect_results: bool,
    /// The pack reads byte counts (`request.size`, `session.egress_bytes`, an intent's
    /// `max egress_bytes`): a body whose length is not declared is then read to count it.
    pub counts_bytes: bool,
    /// The argument member names the pack reads (conditions and rewrites, any depth), as
    /// `(folded, as written)`: a request naming one of them in another case is refused.
    pub arg_names: Vec<(String, String)>,
    /// The pack's rule names (a decision by one of them is not the default's).
    pub rule_names: Vec<String>,
    /// Rules that allow depending on arguments (list filtering keeps their tools).
    pub arg_allows: crate::response::ArgAllows,
}

/// Signatures (session ends and checkpoints) one timer tick makes at most. Under V8 one costs
/// ~50-80 µs with its session read and write, so a tick stays under ~2.5 ms; with 1,000 busy
/// sessions and no budget a tick signed ~180 of them and stalled the worker ~15-20 ms
/// (BENCHMARKS.md, e's p99.9).
pub const MAX_SIGNATURES_PER_TICK: usize = 32;

/// Checkpoints signed at most when Envoy stops a configuration ([`Plugin::on_done`]): ~50-80 ms
/// of the stopping worker at the cost above. Only sessions with receipts from the last
/// `max_unsigned_ms` are unsigned then (the timer signed older ones).
pub const MAX_SIGNATURES_AT_DONE: usize = 1024;

/// Whether a pack reads byte counts: an intent with `max egress_bytes`, or a condition on
/// `request.size` or `session.egress_bytes`.
fn pack_counts_bytes(p: &bundle::format::Program) -> bool {
    use bundle::format::FieldRef;
    p.intents.iter().any(|i| i.max_egress_bytes.is_some())
        || pack_fields(p, &mut |f| {
            matches!(f, FieldRef::RequestSize | FieldRef::SessionEgressBytes)
        })
}

/// Call `f` on every field the conditions of a pack read (rules and classes) until it returns
/// true; whether it did.
fn pack_fields(
    p: &bundle::format::Program,
    f: &mut dyn FnMut(&bundle::format::FieldRef) -> bool,
) -> bool {
    use bundle::format::Pred;
    p.rules
        .iter()
        .flat_map(|r| r.code.iter())
        .chain(p.classes.iter().flat_map(|c| c.code.iter()))
        .any(|i| match &i.pred {
            Pred::Cmp(x, ..)
            | Pred::In(x, _)
            | Pred::Glob(x, _)
            | Pred::Prefix(x, _)
            | Pred::Matches(x, _)
            | Pred::Is(x, _)
            | Pred::Present(x)
            | Pred::Len(x, ..)
            | Pred::Contains(x, _) => f(x),
            _ => false,
        })
}

/// Every argument member name the pack reads: keys of `args.` paths in conditions (rules and
/// classes) and in MODIFY rewrites, at any depth, with their folded form.
fn pack_arg_names(p: &bundle::format::Program) -> Vec<(String, String)> {
    use bundle::format::FieldRef;
    use bundle::verdict::{Modification, PathSegment};
    // Owned: the condition walk lends its fields only for the call (loaded once per bundle).
    let mut keys: Vec<String> = Vec::new();
    let mut add = |path: &[PathSegment]| {
        for seg in path {
            if let PathSegment::Key(k) = seg {
                keys.push(k.clone());
            }
        }
        false
    };
    pack_fields(p, &mut |f| match f {
        FieldRef::Arg(path) => add(path),
        _ => false,
    });
    let decisions = p
        .rules
        .iter()
        .map(|r| &r.decision)
        .chain([&p.default, &p.unknown_session])
        .chain(p.intents.iter().map(|i| &i.outside));
    for m in decisions.flat_map(|d| d.modifications.iter()) {
        if let Modification::RedactArg { path }
        | Modification::DropArg { path }
        | Modification::ClampArg { path, .. }
        | Modification::CoerceArg { path, .. } = m
        {
            add(path);
        }
    }
    // Declared argument types (`tool "x" { args.limit: number }`) are read too.
    keys.extend(
        p.tools
            .iter()
            .flat_map(|t| t.args.iter())
            .flat_map(|a| a.path.iter().cloned()),
    );
    let mut names: Vec<(String, String)> = Vec::new();
    for k in keys {
        if !names.iter().any(|(_, n)| *n == k) {
            names.push((crate::normalize::fold_key(&k).into_owned(), k));
        }
    }
    names
}

impl Loaded {
    /// A benchmark build's cut is `at` (always false without the `bench-cuts` feature).
    pub fn bench_cut(&self, at: crate::config::BenchCut) -> bool {
        #[cfg(feature = "bench-cuts")]
        {
            self.cfg.bench_cut == Some(at)
        }
        #[cfg(not(feature = "bench-cuts"))]
        {
            let _ = at;
            false
        }
    }

    /// Read a session (or find the slot a new one goes to) in the layout in force; see
    /// [`session_store::load_in`].
    pub(crate) fn load_session(&self, host: &dyn Host, session: &str, now_ms: u64) -> Record {
        let layout = self.layout_in_force.get(host);
        session_store::load_in(host, layout, session, now_ms, self.cfg.session.idle_ttl_ms)
    }

    /// Read a session that has a record, without choosing a slot for a new one; see
    /// [`session_store::find_in`].
    pub(crate) fn find_session(
        &self,
        host: &dyn Host,
        session: &str,
        now_ms: u64,
    ) -> Option<Record> {
        let layout = self.layout_in_force.get(host);
        session_store::find_in(host, layout, session, now_ms, self.cfg.session.idle_ttl_ms)
    }
}

/// Metric names (Envoy prefixes Wasm metrics with `wasmcustom.`).
const METRICS: [(Metric, &str, MetricKind); 9] = [
    (
        Metric::Allow,
        "portcullis_decisions_allow",
        MetricKind::Counter,
    ),
    (
        Metric::Modify,
        "portcullis_decisions_modify",
        MetricKind::Counter,
    ),
    (
        Metric::Defer,
        "portcullis_decisions_defer",
        MetricKind::Counter,
    ),
    (
        Metric::StepUp,
        "portcullis_decisions_step_up",
        MetricKind::Counter,
    ),
    (
        Metric::Deny,
        "portcullis_decisions_deny",
        MetricKind::Counter,
    ),
    (Metric::Refused, "portcullis_refused", MetricKind::Counter),
    (Metric::Errors, "portcullis_errors", MetricKind::Counter),
    (
        Metric::Evicted,
        "portcullis_sessions_ended",
        MetricKind::Counter,
    ),
    (
        Metric::Sessions,
        "portcullis_sessions_tracked",
        MetricKind::Gauge,
    ),
];

/// The metrics the filter keeps.
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
}

/// The plugin: one per configuration per worker.
pub struct Plugin {
    pub(crate) loaded: Result<Loaded, String>,
    pub(crate) tracker: RefCell<Tracker>,
    /// The receipt chain of requests that carry no session key (per worker).
    pub(crate) anon_chain: RefCell<ChainHead>,
    pub(crate) anon_name: String,
    metric_ids: Vec<(Metric, u32)>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("error", &self.error())
            .finish_non_exhaustive()
    }
}

/// Shared-data key of the counter that names per-worker anonymous chains: the process's epoch
/// (ms) and the number of configurations since, 8 bytes big-endian each.
const WORKER_COUNTER_KEY: &str = "portcullis/workers";

/// The name of this configuration's anonymous chain, `anon/<epoch>-<n>`. `epoch` is the time (ms)
/// of the process's first configuration and `n` counts configurations (workers, reloads) since:
/// distinct within the process, and from the chains of an earlier run of Envoy, whose receipts
/// end up in the same log (a bare counter restarted at 1 and every restart read as a fork).
fn anon_chain_name(host: &dyn Host) -> String {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Ok((value, cas)) = host.get_shared_data(WORKER_COUNTER_KEY) else {
            break;
        };
        let word = |v: &[u8], at: usize| {
            v.get(at..at.saturating_add(8))
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
        };
        let (epoch, n) = value
            .filter(|v| v.len() == 16)
            .and_then(|v| Some((word(&v, 0)?, word(&v, 8)?)))
            .unwrap_or_else(|| (host.now_ms(), 0));
        let next = n.saturating_add(1);
        let mut bytes = epoch.to_be_bytes().to_vec();
        bytes.extend_from_slice(&next.to_be_bytes());
        match host.set_shared_data(WORKER_COUNTER_KEY, &bytes, cas) {
            Ok(()) => return format!("anon/{epoch}-{next}"),
            Err(SharedDataError::CasMismatch) => continue,
            Err(SharedDataError::Other(_)) => break,
        }
    }
    // No shared data: the clock alone still differs between workers' starts and restarts.
    format!("anon/{}-0", host.now_ms())
}

fn load(host: &dyn Host, bytes: &[u8], fetched: Option<&[u8]>) -> Result<Loaded, String> {
    let mut cfg = config::parse(bytes).map_err(|e| e.to_string())?;
    if let Some(b) = fetched {
        b.clone_into(&mut cfg.bundle);
    }
    if cfg.bundle.is_empty() {
        return Err(crate::bundle_pull::NO_BUNDLE_YET.to_owned());
    }
    let bundle = Bundle::from_bytes(&cfg.bundle, &Trust::Keys(cfg.trusted_bundle_keys.clone()))
        .map_err(|e| format!("the policy bundle was refused: {e}"))?;
    let key_line = match &cfg.signing_key {
        SigningKeySource::Inline(line) => line.clone(),
        SigningKeySource::Env(var) => host.env_var(var).ok_or_else(|| {
            format!("the receipt signing key variable `{var}` is not set in the VM environment")
        })?,
    };
    let key = bundle::keys::parse_signing_key(&key_line)
        .map_err(|e| format!("the receipt signing key is not usable: {e}"))?;
    let info = bundle.info();
    let bundle_ref = BundleRef {
        pack: info.pack.clone(),
        version: info.version.clone(),
        hash: hex::encode(info.content_hash),
    };
    let norm = NormalizeConfig {
        mcp_paths: cfg.mcp_paths.clone(),
        mcp_legacy_paths: cfg.mcp_legacy_paths.clone(),
        literal_path_hosts: cfg.literal_path_hosts.clone(),
        server_name: cfg.server_name.clone(),
        max_body_bytes: cfg.max_body_bytes,
        max_json_depth: cfg.max_json_depth,
        inspect_http_bodies: cfg.inspect_http_bodies,
        allow_batches: cfg.allow_batches,
        ..NormalizeConfig::default()
    };
    let approvers = cfg
        .approvers
        .iter()
        .flat_map(|(g, keys)| keys.iter().map(move |k| (g.clone(), *k)))
        .collect();
    let sign_policy = SignPolicy {
        checkpoint_every: cfg.receipts.checkpoint_every,
        max_unsigned_ms: cfg.receipts.max_unsigned_ms,
    };
    let layout = Layout::new(&key.to_bytes(), cfg.session.slots);
    let inspect_results = crate::response::pack_reads_results(bundle.program());
    let counts_bytes = pack_counts_bytes(bundle.program());
    let arg_names = pack_arg_names(bundle.program());
    let rule_names = bundle
        .program()
        .rules
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let arg_allows = crate::response::ArgAllows::of(bundle.program());
    Ok(Loaded {
        cfg,
        norm,
        bundle,
        signer: Signer::new(key),
        sign_policy,
        approvers,
        bundle_ref,
        layout,
        layout_in_force: session_store::LayoutCache::default(),
        inspect_results,
        counts_bytes,
        arg_names,
        rule_names,
        arg_allows,
    })
}

impl Plugin {
    /// Build the plugin from its configuration. Never fails: a bad configuration yields a plugin
    /// that denies everything (and says why in the log and in every answer).
    pub fn configure(host: &dyn Host, config: &[u8]) -> Plugin {
        Plugin::configure_with(host, config, None)
    }

    /// [`Plugin::configure`] with the bundle replaced by `fetched` (a bundle pulled from the
    /// bundle server, see [`crate::bundle_pull`]) when given.
    pub fn configure_with(host: &dyn Host, config: &[u8], fetched: Option<&[u8]>) -> Plugin {
        let loaded = load(host, config, fetched);
        let metric_ids = METRICS
            .iter()
            .filter_map(|(m, name, kind)| host.define_metric(*kind, name).ok().map(|id| (*m, id)))
            .collect();
        let plugin = Plugin {
            loaded,
            tracker: RefCell::new(Tracker::default()),
            anon_chain: RefCell::new(ChainHead::default()),
            anon_name: anon_chain_name(host),
            metric_ids,
        };
        match &plugin.loaded {
            Ok(l) => {
                let i = l.bundle.info();
                host.log(
                    LogLevel::Info,
                    &format!(
                        "portcullis: loaded pack `{}` version `{}` ({} rules, hash {}), receipts signed by {}",
                        i.pack,
                        i.version,
                        i.rules,
                        l.bundle_ref.hash,
                        l.signer.key_id()
                    ),
                );
                #[cfg(feature = "bench-cuts")]
                if let Some(cut) = l.cfg.bench_cut {
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "portcullis: BENCHMARK BUILD, bench_cut {cut:?}: requests are let \
                             through without full enforcement"
                        ),
                    );
                }
                host.set_tick_period_ms(l.cfg.receipts.tick_ms);
                // Without a layout every session is missing and unsaved (fail closed, logged).
                if let Some(in_force) = session_store::install_layout(host, l.layout) {
                    l.layout_in_force.prime(in_force);
                }
            }
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("portcullis: {e}; every request will be denied"),
                );
                plugin.count(host, Metric::Errors);
            }
        }
        plugin
    }

    /// The configuration error, when the plugin failed to load.
    pub fn error(&self) -> Option<&str> {
        self.loaded.as_ref().err().map(String::as_str)
    }

    pub(crate) fn count(&self, host: &dyn Host, metric: Metric) {
        self.add(host, metric, 1);
    }

    pub(crate) fn add(&self, host: &dyn Host, metric: Metric, delta: i64) {
        if let Some((_, id)) = self.metric_ids.iter().find(|(m, _)| *m == metric) {
            host.increment_metric(*id, delta);
        }
    }

    /// Note a served session, then evict over the cap.
    pub(crate) fn touched(
        &self,
        host: &dyn Host,
        l: &Loaded,
        session: &str,
        rec: &Record,
        now_ms: u64,
    ) {
        let before = self.tracker.borrow().len();
        if let Some(d) = &rec.displaced {
            self.end_displaced(host, l, d, now_ms);
        }
        self.tracker
            .borrow_mut()
            .touch(session, now_ms, &rec.state, &rec.chain);
        loop {
            let victim = self
                .tracker
                .borrow()
                .victim(l.cfg.session.max_sessions, session);
            let Some(victim) = victim else { break };
            self.end_session(host, l, &victim, "evicted");
            // INVARIANT: the victim is forgotten, so this loop ends.
            self.tracker.borrow_mut().forget(&victim);
        }
        let after = self.tracker.borrow().len();
        let delta = i64::try_from(after)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(before).unwrap_or(i64::MAX));
        if delta != 0 {
            self.add(host, Metric::Sessions, delta);
        }
    }

    /// A new session took the slot of a live one (written already): log the displaced session's
    /// final, signed `session_end` receipt and forget it here. Its slot now holds the new session,
    /// so its id is from now on a new session (see `docs/filter.md`, Sessions).
    fn end_displaced(&self, host: &dyn Host, l: &Loaded, d: &Displaced, now_ms: u64) {
        let mut chain = d.chain.clone();
        let r = receipt::session_end(&d.session, &mut chain, &l.signer, now_ms);
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: session `{}` ended ({}; its slot went to a new session)",
                d.session, d.why
            ),
        );
        log_receipt(host, &r);
        self.count(host, Metric::Evicted);
        // The caller's gauge update counts this.
        self.tracker.borrow_mut().forget(&d.session);
    }

    /// Begin a session the MCP server has just created, pinning `intent` on it. A legacy
    /// `initialize` carries no session id (the server assigns it in the response), so the intent
    /// it declared cannot be pinned while it is evaluated; the filter writes the record when the
    /// response names the session (with `session.require_initialize`, also without an intent:
    /// only such a record makes the id known). Displaces a live session from its slot when every
    /// slot the new session may use holds one (its `session_end` receipt is logged). Only a
    /// session with no record yet is written: if any action of the session was already recorded,
    /// its pinned intent (or none) stands. Contention is not retried: another writer means the
    /// session exists.
    pub(crate) fn begin_session(
        &self,
        host: &dyn Host,
        l: &Loaded,
        session: &str,
        intent: Option<&str>,
    ) {
        let now = host.now_ms();
        let mut rec = l.load_session(host, session, now);
        if rec.state.status != SessionStatus::New {
            return;
        }
        rec.state.status = SessionStatus::Active;
        rec.state.intent = intent.map(str::to_owned);
        rec.extra.last_seen_ms = now;
        match session_store::store(host, session, &rec) {
            Ok(()) => self.touched(host, l, session, &rec, now),
            Err(e) => host.log(
                LogLevel::Warn,
                &format!("portcullis: new session `{session}` not recorded: {e:?}"),
            ),
        }
    }

    /// [`Plugin::end_session`], then stop tracking the session on this worker. `deleted`: the
    /// client ended it (an allowed MCP `DELETE` the server accepted), a tombstone for every
    /// worker like an eviction, so a later request naming it is `missing`.
    pub(crate) fn end_and_forget(&self, host: &dyn Host, l: &Loaded, session: &str, why: &str) {
        self.end_session(host, l, session, why);
        if self.tracker.borrow_mut().forget(session) {
            self.add(host, Metric::Sessions, -1);
        }
    }

    /// End a session: leave a tombstone (status missing, chain kept) and log a signed
    /// `session_end` receipt. `evicted` and `deleted` always end it; `expired` only when the
    /// record itself says it is idle past the ttl (another worker may have served it since).
    fn end_session(&self, host: &dyn Host, l: &Loaded, session: &str, why: &str) {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let now = host.now_ms();
            let Some(mut rec) = l.find_session(host, session, now) else {
                return; // no record left: its slot went to another session
            };
            if rec.state.status == SessionStatus::Missing && rec.ended.is_none() {
                return; // already a tombstone
            }
            if why == "expired" && rec.ended.is_none() {
                // Another worker used the session since this one did: it is not idle.
                return;
            }
            let why = rec.ended.unwrap_or(why);
            rec.state = session_store::tombstone(rec.state.started_ms);
            rec.extra = SessionExtra {
                last_seen_ms: now,
                ..SessionExtra::default()
            };
            let r = receipt::session_end(session, &mut rec.chain, &l.signer, now);
            match session_store::store(host, session, &rec) {
                Ok(()) => {
                    host.log(
                        LogLevel::Info,
                        &format!("portcullis: session `{session}` ended ({why})"),
                    );
                    log_receipt(host, &r);
                    self.count(host, Metric::Evicted);
                    return;
                }
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Other(e)) => {
                    host.log(
                        LogLevel::Error,
                        &format!("portcullis: cannot end session `{session}`: {e}"),
                    );
                    self.count(host, Metric::Errors);
                    return;
                }
            }
        }
    }

    /// The timer: end sessions idle past their ttl, and sign a `checkpoint` for sessions whose
    /// oldest unsigned receipt is older than `max_unsigned_ms`, so no receipt stays unattested
    /// for longer than `max_unsigned_ms` + the tick period while its session is idle.
    pub fn on_tick(&self, host: &dyn Host) {
        let Ok(l) = &self.loaded else { return };
        let now = host.now_ms();
        // Each session end or checkpoint is a signature, and the tick runs on the worker that
        // serves requests: a budget per tick keeps it from stalling them (the rest waits for the
        // next tick; active sessions sign on their next receipt anyway).
        let mut budget = MAX_SIGNATURES_PER_TICK;
        let idle = self.tracker.borrow().idle(now, l.cfg.session.idle_ttl_ms);
        for s in idle.into_iter().take(budget) {
            budget = budget.saturating_sub(1);
            self.end_and_forget(host, l, &s, "expired");
        }
        let due = self
            .tracker
            .borrow()
            .checkpoint_due(now, l.cfg.receipts.max_unsigned_ms);
        for s in due.into_iter().take(budget) {
            self.checkpoint(host, l, &s);
        }
        self.checkpoint_anon(host, l, now, l.cfg.receipts.max_unsigned_ms);
    }

    /// Envoy stops this configuration: at shutdown, or when a new one replaces it (a new plugin
    /// configuration, a pulled bundle). Sign a checkpoint now for each session this worker served
    /// that has unsigned receipts, and for the anonymous chain, instead of leaving their last
    /// receipts `unsigned_tail` in a log that ends here (or for a timer that no longer knows
    /// them). At most [`MAX_SIGNATURES_AT_DONE`], oldest unsigned first; the rest is logged.
    pub fn on_done(&self, host: &dyn Host) {
        let Ok(l) = &self.loaded else { return };
        let now = host.now_ms();
        let due = self.tracker.borrow().checkpoint_due(now, 0);
        let left = due.len().saturating_sub(MAX_SIGNATURES_AT_DONE);
        for s in due.into_iter().take(MAX_SIGNATURES_AT_DONE) {
            self.checkpoint(host, l, &s);
        }
        if left > 0 {
            host.log(
                LogLevel::Warn,
                &format!(
                    "portcullis: stopping with {left} session(s) whose last receipts stay unsigned \
                     (at most {MAX_SIGNATURES_AT_DONE} checkpoints are signed on the way out)"
                ),
            );
        }
        self.checkpoint_anon(host, l, now, 0);
    }

    /// Sign the anonymous chain's unsigned receipts once the oldest is `max_unsigned_ms` old.
    fn checkpoint_anon(&self, host: &dyn Host, l: &Loaded, now: u64, max_unsigned_ms: u64) {
        let due = {
            let c = self.anon_chain.borrow();
            c.unsigned > 0 && now.saturating_sub(c.oldest_unsigned_ms) >= max_unsigned_ms
        };
        if due {
            let r = receipt::checkpoint(
                &self.anon_name,
                &mut self.anon_chain.borrow_mut(),
                &l.signer,
                now,
            );
            log_receipt(host, &r);
        }
    }

    fn checkpoint(&self, host: &dyn Host, l: &Loaded, session: &str) {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let now = host.now_ms();
            let Some(mut rec) = l.find_session(host, session, now) else {
                // Its slot went to another session (whose worker logged its `session_end`).
                if self.tracker.borrow_mut().forget(session) {
                    self.add(host, Metric::Sessions, -1);
                }
                return;
            };
            if rec.chain.unsigned == 0 {
                // Someone signed since: just refresh what this worker knows.
                self.tracker.borrow_mut().touch(
                    session,
                    rec.extra.last_seen_ms,
                    &rec.state,
                    &rec.chain,
                );
                return;
            }
            // A checkpoint is not activity: keep last_seen as it was.
            let r = receipt::checkpoint(session, &mut rec.chain, &l.signer, now);
            match session_store::store(host, session, &rec) {
                Ok(()) => {
                    log_receipt(host, &r);
                    let mut t = self.tracker.borrow_mut();
                    t.touch(session, rec.extra.last_seen_ms, &rec.state, &rec.chain);
                    return;
                }
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Other(e)) => {
                    host.log(
                        LogLevel::Error,
                        &format!("portcullis: cannot checkpoint session `{session}`: {e}"),
                    );
                    return;
                }
            }
        }
    }
}

/// Write a receipt that has no request to travel with (checkpoint, session end) to the log, one
/// line, prefixed so a log shipper can pick it out: `portcullis receipt {...}`.
pub(crate) fn log_receipt(host: &dyn Host, r: &Receipt) {
    host.log(
        LogLevel::Info,
        &format!("portcullis receipt {}", r.to_json()),
    );
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::{WORKER_COUNTER_KEY, anon_chain_name};
    use crate::mock::MockHost;

    #[test]
    fn anonymous_chains_are_named_per_process_and_a_counter_it_cannot_read_starts_anew() {
        let host = MockHost::new(1_000);
        assert_eq!(anon_chain_name(&host), "anon/1000-1");
        host.advance(5);
        assert_eq!(
            anon_chain_name(&host),
            "anon/1000-2",
            "same process, same epoch"
        );
        // An earlier module's 8-byte counter, or anything else of the wrong size: a new epoch.
        for bad in [vec![0u8; 8], vec![], vec![7u8; 17]] {
            host.state()
                .shared
                .insert(WORKER_COUNTER_KEY.to_owned(), (bad, 1));
            assert_eq!(anon_chain_name(&host), "anon/1005-1");
        }
    }
}
