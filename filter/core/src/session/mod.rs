//! Session state: where records live (`store.rs`: hashed slots in Envoy shared data), what this
//! worker served (`tracker.rs`), and the one read-change-write cycle every writer goes through
//! ([`Sessions::update`]). A stage that reads or changes a session gets a [`Sessions`] handle;
//! nothing else of the plugin.
//!
//! **Contract of a write.** A record is read with its compare-and-swap token, changed by a pure
//! function of the record and the clock, and written with that token. When another worker wrote
//! first, the whole cycle runs again (at most [`MAX_CAS_ATTEMPTS`] times) so no change is lost
//! and none is applied twice. After a write: an active session is tracked (and the cap evicts
//! others); a live session displaced from its slot gets its signed `session_end` receipt. A write
//! that fails is counted in `portcullis_errors`; what it means for the request is the caller's.
//!
//! **Sessions on etcd** (`state.sessions: etcd`). The slots are then a cache of etcd's records.
//! A decision is made on the cached record but not written here: [`Sessions::stage`] keeps the
//! record it made ([`Staged`]) for the stream, which writes it to etcd with a compare-and-swap on
//! the revision the cache held (`stream/commit.rs`). Only then is it cached
//! ([`Sessions::committed`]); when another replica wrote first, what etcd holds is cached
//! ([`Sessions::adopt`]) and the request is decided again. Nothing else writes a session's chain
//! here in this mode: [`Sessions::update`] only adds to a staged record, timer checkpoints and
//! ends are not made (etcd, not this cache, is the record), and what cannot be staged says so.
//!
//! **The anonymous chain.** Requests that carry no session key are decided on a fresh, unsaved
//! session; their receipts go to this worker's own chain, `anon/<epoch>-<n>`.

mod approvals;
pub(crate) mod bindings;
pub(crate) mod etcd;
mod pins;
mod principals;
mod store;
mod tracker;

use std::cell::{Cell, RefCell};

use bundle::approval::Approval;
use bundle::receipt::{self, ChainHead, Receipt, Signer};
use bundle::session::SessionStatus;
use bundle::session_codec::SessionExtra;

pub(crate) use approvals::Refused as ClaimRefused;
pub(crate) use pins::owner as pin_owner;
pub(crate) use principals::PrincipalRecord;
pub(crate) use store::{Displaced, EndReason, Layout, Owner, Record, tombstone};
pub use store::{LAYOUT_KEY, slot_key_of};
use store::{LayoutCache, install_layout};
use tracker::Tracker;

use crate::config::{RunSource, SessionConfig};
use crate::host::{Host, LogLevel, SharedDataError};
use crate::limits::{
    MAX_CAS_ATTEMPTS, MAX_SIGNATURES_AT_DONE, MAX_SIGNATURES_PER_TICK, UNTRACKED_WARNING_PERIOD_MS,
};
use crate::metrics::{Metric, Metrics};

impl etcd::Records for Sessions {
    fn release_keys(&self) -> &[ed25519_dalek::VerifyingKey] {
        &self.release_keys
    }

    fn record(&self, host: &dyn Host, id: &str) -> Result<PrincipalRecord, String> {
        self.principal(host, id).map_err(|e| e.0)
    }

    fn apply(
        &self,
        host: &dyn Host,
        id: &str,
        change: &mut dyn FnMut(&mut PrincipalRecord) -> bool,
    ) -> Result<(), String> {
        principals::update(host, self.in_force.get(host), id, |r, _| change(r))
            .map(|_| ())
            .map_err(|e| e.0)
    }
}

/// Why a shared-data write did not happen: the store refused it, or other writers won every
/// attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoreFailed(pub String);

impl std::fmt::Display for StoreFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Run `attempt` (read a key, change it, write it with the token it was read with) until no other
/// writer beats it, at most [`MAX_CAS_ATTEMPTS`] times. Every compare-and-swap of the filter goes
/// through here.
pub(crate) fn retry_cas<T>(
    mut attempt: impl FnMut() -> Result<T, SharedDataError>,
) -> Result<T, StoreFailed> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        match attempt() {
            Ok(t) => return Ok(t),
            Err(SharedDataError::CasMismatch) => {}
            Err(SharedDataError::Other(e)) => return Err(StoreFailed(e)),
        }
    }
    Err(StoreFailed("compare-and-swap contention".to_owned()))
}

/// What one decision did, for the principal's record ([`Sessions::principal_acted`]).
pub(crate) struct Acted<'a> {
    /// The session it was decided in (`None`: no session was saved).
    pub session: Option<&'a str>,
    /// The session had no record before.
    pub new_session: bool,
    /// The principal as the policy saw it, and after the decision's effects.
    pub before: &'a bundle::session::PrincipalView,
    pub after: &'a bundle::session::PrincipalView,
}

/// What a change asks to be done with the record it was given.
pub(crate) enum Write<T> {
    /// Save it: the session acted (an action, a result, a resolution), so it is tracked as active.
    Active(T),
    /// Save it without counting activity (a checkpoint, a session end).
    Quiet(T),
    /// Save nothing.
    Skip(T),
}

/// Write a receipt that has no request to travel with (checkpoint, session end) to the log, one
/// line, prefixed so a log shipper can pick it out: `portcullis receipt {...}`.
pub(crate) fn log_receipt(host: &dyn Host, r: &Receipt) {
    host.log(
        LogLevel::Info,
        &format!("portcullis receipt {}", r.to_json()),
    );
}

/// The prefix of every anonymous chain's name. No session key may start with it: receipts of a
/// session named like a worker's chain would read as a fork of that chain.
pub(crate) const ANON_PREFIX: &str = "anon/";

/// The prefix of a principal's run (`run/<principal>[/<run id>]`, `docs/containment.md`). No
/// session key may start with it either: an agent must not name another principal's run.
pub(crate) const RUN_PREFIX: &str = "run/";

/// Whether `key` is a name only the filter gives a chain (a session key that is one is refused).
pub(crate) fn is_reserved_chain(key: &str) -> bool {
    key.starts_with(ANON_PREFIX) || key.starts_with(RUN_PREFIX)
}

/// Shared-data key of the counter that names per-worker anonymous chains: the process's epoch
/// (ms) and the number of configurations since, 8 bytes big-endian each.
const WORKER_COUNTER_KEY: &str = "portcullis/workers";

/// The name of this configuration's anonymous chain, `anon/<epoch>-<n>`. `epoch` is the time (ms)
/// of the process's first configuration and `n` counts configurations (workers, reloads) since:
/// distinct within the process, and from the chains of an earlier run of Envoy, whose receipts
/// end up in the same log (a bare counter restarted at 1 and every restart read as a fork).
fn anon_chain_name(host: &dyn Host) -> String {
    let named = retry_cas(|| {
        let (value, cas) = host
            .get_shared_data(WORKER_COUNTER_KEY)
            .map_err(|e| SharedDataError::Other(e.0))?;
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
        host.set_shared_data(WORKER_COUNTER_KEY, &bytes, cas)?;
        Ok(format!("{ANON_PREFIX}{epoch}-{next}"))
    });
    // No shared data: the clock alone still differs between workers' starts and restarts.
    named.unwrap_or_else(|_| format!("{ANON_PREFIX}{}-0", host.now_ms()))
}

/// Actions decided without session state, as counted between timer ticks and warnings.
#[derive(Clone, Copy, Debug, Default)]
struct Untracked {
    /// Not yet added to `portcullis_actions_untracked`.
    unflushed: u64,
    /// Since the last warning.
    since_warning: u64,
    /// When the last warning was logged.
    warned_ms: Option<u64>,
}

/// The session handle of one configuration on one worker.
#[derive(Debug)]
pub(crate) struct Sessions {
    cfg: SessionConfig,
    signer: Signer,
    metrics: Metrics,
    /// The slot layout this configuration asks for (the one in force is in shared data).
    layout: Layout,
    /// The layout in force, read once.
    in_force: LayoutCache,
    tracker: RefCell<Tracker>,
    /// The receipt chain of requests that carry no session key.
    anon_chain: RefCell<ChainHead>,
    anon_name: String,
    /// Actions decided without session state: not yet added to the metric, since the last
    /// warning, and when that was.
    untracked: Cell<Untracked>,
    /// With the etcd backend: every change of a principal's containment is queued for etcd.
    replicated: bool,
    /// With the etcd backend: the keys a release read from etcd must verify against.
    release_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Principals whose containment this worker changed since [`Sessions::take_changed`] last
    /// asked (the request being decided waits for etcd to have them).
    changed: RefCell<Vec<String>>,
    /// `state.sessions: etcd`: session records are etcd's, and the slots cache them.
    on_etcd: bool,
    /// With `on_etcd`: the record the decision being made wants written ([`Sessions::stage`]).
    staged: RefCell<Option<Staged>>,
}

/// With `state.sessions: etcd`: a session record a decision made on the cached one, waiting for
/// its compare-and-swap in etcd.
#[derive(Clone, Debug)]
pub(crate) struct Staged {
    pub session: String,
    /// The etcd revision of the record it was decided on (0: etcd had none the cache knew of).
    pub base_rev: i64,
    /// The record to write; `None`: nothing to write, only whether `base_rev` is current (the
    /// cache did not know the session, and the decision saved no record).
    pub rec: Option<Record>,
    /// Who a new record belongs to.
    pub owner: Owner,
    /// The session acted (it is tracked as active once written).
    pub active: bool,
}

impl Staged {
    /// Whether the write puts a record (else it only compares), without encoding it.
    pub(crate) fn puts(&self) -> bool {
        self.rec.is_some()
    }

    /// The value to put in etcd (`None`: nothing to put); an error when the record cannot be
    /// encoded (its key is too long).
    pub(crate) fn value(&self) -> Result<Option<Vec<u8>>, String> {
        self.rec
            .as_ref()
            .map(|r| {
                store::value_of(&self.session, r)
                    .ok_or_else(|| "the session key is too long to store".to_owned())
            })
            .transpose()
    }
}

impl Sessions {
    /// The sessions of a configuration: `layout` is where it wants records, `signer` signs session
    /// ends and checkpoints. Names this worker's anonymous chain.
    pub(crate) fn new(
        host: &dyn Host,
        cfg: &SessionConfig,
        layout: Layout,
        signer: Signer,
        metrics: Metrics,
    ) -> Sessions {
        Sessions {
            cfg: cfg.clone(),
            signer,
            metrics,
            layout,
            in_force: LayoutCache::default(),
            tracker: RefCell::new(Tracker::default()),
            anon_chain: RefCell::new(ChainHead::default()),
            anon_name: anon_chain_name(host),
            untracked: Cell::new(Untracked::default()),
            replicated: false,
            release_keys: Vec::new(),
            changed: RefCell::new(Vec::new()),
            on_etcd: false,
            staged: RefCell::new(None),
        }
    }

    /// Queue every change of a principal's containment for the shared state store, and accept
    /// from it only releases signed by `release_keys`. `sessions`: session records are kept
    /// there too (`state.sessions: etcd`).
    pub(crate) fn replicate(
        &mut self,
        release_keys: &[ed25519_dalek::VerifyingKey],
        sessions: bool,
    ) {
        self.replicated = true;
        self.on_etcd = sessions;
        release_keys.clone_into(&mut self.release_keys);
    }

    /// Whether session records are etcd's (`state.sessions: etcd`).
    pub(crate) fn on_etcd(&self) -> bool {
        self.on_etcd
    }

    /// The session record the last decision staged for etcd (cleared).
    pub(crate) fn take_staged(&self) -> Option<Staged> {
        self.staged.borrow_mut().take()
    }

    /// Put a taken record back, so a change made after the decision (a refusal's receipt) is
    /// added to it.
    pub(crate) fn restage(&self, staged: Staged) {
        *self.staged.borrow_mut() = Some(staged);
    }

    /// [`Sessions::update`] for a decision. With sessions on etcd, the record `change` makes
    /// from the cached one (or from the record staged already for this session) is staged for
    /// the stream to write, not written here ([`Staged`]). When `change` saves nothing for a
    /// session the cache does not know, a read-only compare is staged: etcd may know it.
    pub(crate) fn stage<T>(
        &self,
        host: &dyn Host,
        session: &str,
        owner: Owner,
        mut change: impl FnMut(&mut Record, u64) -> Write<T>,
    ) -> Result<T, StoreFailed> {
        if !self.on_etcd {
            return self.update(host, session, owner, change);
        }
        let now = host.now_ms();
        let prior = self
            .staged
            .borrow_mut()
            .take()
            .filter(|s| s.session == session);
        let owner = owner.or(prior.as_ref().and_then(|p| p.owner));
        let (mut rec, base_rev, was_active) = match &prior {
            Some(Staged {
                rec: Some(r),
                base_rev,
                active,
                ..
            }) => (r.clone(), *base_rev, *active),
            _ => {
                let mut r = self.read(host, session, owner, now);
                r.extra.owner = r.extra.owner.or(owner);
                let rev = r.etcd_rev;
                (r, rev, false)
            }
        };
        let unknown = rec.etcd_rev == 0 && rec.state.status == SessionStatus::New;
        let (t, active) = match change(&mut rec, now) {
            Write::Skip(t) => {
                let keep = prior.or_else(|| {
                    unknown.then(|| Staged {
                        session: session.to_owned(),
                        base_rev: 0,
                        rec: None,
                        owner,
                        active: false,
                    })
                });
                *self.staged.borrow_mut() = keep;
                return Ok(t);
            }
            Write::Active(t) => (t, true),
            Write::Quiet(t) => (t, was_active),
        };
        *self.staged.borrow_mut() = Some(Staged {
            session: session.to_owned(),
            base_rev,
            rec: Some(rec),
            owner,
            active,
        });
        Ok(t)
    }

    /// Etcd took `staged` (its key is now at revision `rev`): cache the record, unless the cache
    /// holds a newer one already, and track the session.
    pub(crate) fn committed(&self, host: &dyn Host, staged: Staged, rev: i64) {
        let Staged {
            session,
            rec: Some(rec),
            owner,
            active,
            ..
        } = staged
        else {
            return;
        };
        self.cache(
            host,
            &session,
            owner,
            rev,
            (rec.state, rec.chain, rec.extra),
            active,
        );
    }

    /// Etcd holds `value` at revision `rev` for `session` (`None`: no value), not what this
    /// cache had: cache it, so the request is decided again on it. A value that does not decode
    /// (or names another session) is cached as a tombstone: the session is `missing`, as a slot
    /// that does not decode is.
    pub(crate) fn adopt(
        &self,
        host: &dyn Host,
        session: &str,
        owner: Owner,
        rev: i64,
        value: Option<&[u8]>,
    ) {
        let now = host.now_ms();
        let theirs = value.and_then(|v| store::decode_value(session, v));
        let record = match theirs {
            Some(r) => r,
            None => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "portcullis: state store: session `{session}` {} in etcd; treating it \
                         as missing",
                        if value.is_some() {
                            "has a record that does not decode"
                        } else {
                            "has no record"
                        }
                    ),
                );
                (
                    tombstone(now),
                    ChainHead::default(),
                    SessionExtra::default(),
                )
            }
        };
        self.cache(host, session, owner, rev, record, false);
    }

    /// With sessions on etcd: apply `effects` (a tool result's) to the cached record of
    /// `session`, keeping its chain and revision. The next decision of the session on this Envoy
    /// writes them to etcd; a record adopted from etcd before that keeps them
    /// ([`join_containment`]).
    pub(crate) fn contain_cached(
        &self,
        host: &dyn Host,
        session: &str,
        effects: &[bundle::verdict::Effect],
    ) -> Result<(), StoreFailed> {
        let read = |now| self.find(host, session, now);
        self.cycle(host, session, &read, &mut |rec, _| {
            rec.state.apply_effects(effects);
            Write::Quiet(())
        })
        .map(|_| ())
    }

    /// Write `record`, etcd's at revision `rev`, into the session's slot, unless the slot holds a
    /// newer revision already. A live session it displaces from the slot only leaves this cache
    /// (etcd keeps it; no `session_end` is signed for it).
    fn cache(
        &self,
        host: &dyn Host,
        session: &str,
        owner: Owner,
        rev: i64,
        (state, chain, extra): (bundle::session::SessionState, ChainHead, SessionExtra),
        active: bool,
    ) {
        let written = retry_cas(|| {
            let now = host.now_ms();
            let mut cur = self.read(host, session, owner, now);
            // Revision 0 (etcd has no record) replaces whatever the cache holds.
            if rev != 0 && cur.etcd_rev > rev {
                return Ok(None);
            }
            let mut state = state.clone();
            if cur.state.status != SessionStatus::New {
                // What this cache holds of the session's containment and etcd does not yet (a
                // tool result's taint) is kept: it reaches etcd with the next decision.
                join_containment(&mut state, &cur.state);
            }
            cur.state = state;
            cur.chain = chain.clone();
            cur.extra = extra.clone();
            cur.etcd_rev = rev;
            cur.ended = None;
            store::store(host, session, &cur)?;
            Ok(Some((cur, now)))
        });
        match written {
            Ok(Some((cur, now))) => self.written(host, session, &cur, now, active),
            Ok(None) => {}
            Err(e) => host.log(
                LogLevel::Warn,
                &format!(
                    "portcullis: session `{session}` is in etcd but not in this Envoy's cache: {e}"
                ),
            ),
        }
    }

    /// The principals whose containment changed since the last call (cleared).
    pub(crate) fn take_changed(&self) -> Vec<String> {
        std::mem::take(&mut self.changed.borrow_mut())
    }

    /// Put the layout in force (the first configuration of the process writes it; later ones
    /// keep the one in force). Without a layout every session is missing and unsaved: fail
    /// closed, logged.
    pub(crate) fn install(&self, host: &dyn Host) {
        if let Some(in_force) = install_layout(host, self.layout) {
            self.in_force.prime(in_force);
        }
    }

    /// The name of this worker's anonymous chain.
    pub(crate) fn anon_name(&self) -> &str {
        &self.anon_name
    }

    /// Seal onto the anonymous chain: `f` gets its head.
    pub(crate) fn on_anon_chain<T>(&self, f: impl FnOnce(&mut ChainHead) -> T) -> T {
        f(&mut self.anon_chain.borrow_mut())
    }

    /// Claim, at `now_ms`, an approval token used where no session record keeps it (see
    /// `approvals.rs`).
    pub(crate) fn claim_approval(
        &self,
        host: &dyn Host,
        approval: &Approval,
        now_ms: u64,
    ) -> Result<(), ClaimRefused> {
        approvals::claim(host, approval.nonce, approval.expires_s, now_ms / 1000)
    }

    /// `actions` were decided without session state (the request had no session key): taints,
    /// kills, limits and drift do not accumulate for them. Counted in
    /// `portcullis_actions_untracked` (added on the timer tick, so the request path makes no host
    /// call for it), and said in a warning at most once per [`UNTRACKED_WARNING_PERIOD_MS`], so
    /// an operator whose clients send no key finds out.
    pub(crate) fn untracked(&self, host: &dyn Host, actions: usize, now_ms: u64) {
        let n = u64::try_from(actions).unwrap_or(u64::MAX);
        let mut u = self.untracked.get();
        u.unflushed = u.unflushed.saturating_add(n);
        u.since_warning = u.since_warning.saturating_add(n);
        let due = u
            .warned_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= UNTRACKED_WARNING_PERIOD_MS);
        if due {
            host.log(
                LogLevel::Warn,
                &format!(
                    "portcullis: {} action(s) decided without session state since the last \
                     warning: their requests carried no session key ({}), so taints, kills, \
                     limits and drift did not accumulate for them (clients on MCP 2026-07-28 \
                     send no mcp-session-id; see session.key in docs/filter-config.md)",
                    u.since_warning,
                    self.cfg.key.describe()
                ),
            );
            u.since_warning = 0;
            u.warned_ms = Some(now_ms);
        }
        self.untracked.set(u);
    }

    /// Add the untracked actions counted since the last flush to their metric.
    fn flush_untracked(&self, host: &dyn Host) {
        let mut u = self.untracked.get();
        if u.unflushed > 0 {
            let n = i64::try_from(u.unflushed).unwrap_or(i64::MAX);
            self.metrics.add(host, Metric::Untracked, n);
            u.unflushed = 0;
            self.untracked.set(u);
        }
    }

    /// Read a session (or find the slot a new one of principal `owner` goes to), without
    /// writing.
    pub(crate) fn read(&self, host: &dyn Host, session: &str, owner: Owner, now_ms: u64) -> Record {
        let layout = self.in_force.get(host);
        store::load_in(host, layout, session, now_ms, self.cfg.idle_ttl_ms, owner)
    }

    /// The session a request of principal `principal` (its record as read) is decided in, from
    /// `session.run`: its own run `run/<principal>` (`principal`), the run the verified JWT names
    /// (`claim`: `run/<principal>/<run id>`), else the request's own session key, else (a
    /// keyless request) the principal's current run when that session still has a record, else
    /// its own run. So a principal's keyless requests (egress, MCP 2026-07-28) share the session
    /// of its MCP traffic without its cooperation.
    pub(crate) fn run_of(
        &self,
        host: &dyn Host,
        principal: &str,
        record: &PrincipalRecord,
        key: Option<&str>,
        run_id: Option<&str>,
    ) -> String {
        let own = || record.own_run(principal);
        match (self.cfg.run, run_id, key) {
            (RunSource::Principal, ..) => own(),
            (RunSource::Claim | RunSource::Grant, Some(id), _) => {
                format!("{RUN_PREFIX}{principal}/{id}")
            }
            (_, _, Some(k)) => k.to_owned(),
            (_, _, None) => {
                let now = host.now_ms();
                record
                    .run
                    .as_deref()
                    .filter(|r| {
                        self.find(host, r, now)
                            .is_some_and(|rec| rec.state.status != SessionStatus::Missing)
                    })
                    .map_or_else(own, str::to_owned)
            }
        }
    }

    /// Apply operator releases (`releases`, verified against `release_keys`) when a configuration
    /// loads: each lifts its principal's quarantine if it was imposed before the release was
    /// issued, once (every worker loads the configuration; only the one that lifts it logs). A
    /// lifted quarantine gets a signed `release` receipt in the log; a release that does not
    /// verify is logged and ignored.
    pub(crate) fn apply_releases(
        &self,
        host: &dyn Host,
        releases: &[String],
        keys: &[ed25519_dalek::VerifyingKey],
    ) {
        let now_s = host.now_ms() / 1000;
        for token in releases {
            let r = match bundle::release::verify(token, keys, now_s) {
                Ok(r) => r,
                Err(e) => {
                    host.log(
                        LogLevel::Error,
                        &format!("portcullis: a release in the configuration is refused: {e}"),
                    );
                    continue;
                }
            };
            let lifted = Cell::new(false);
            let written = self.update_principal(host, &r.principal, |rec, _| {
                lifted.set(rec.release(r.issued_s));
                if lifted.get() {
                    rec.release_token = Some(token.clone());
                }
                lifted.get()
            });
            match written {
                Ok(_) if lifted.get() => {
                    let mut body =
                        receipt::ReceiptBody::event(receipt::EventKind::Release, &self.anon_name);
                    body.reason = Some(format!(
                        "principal `{}` released by {} (release {}){}",
                        r.principal,
                        r.key_id,
                        r.release_id,
                        r.reason
                            .as_deref()
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default()
                    ));
                    let now = host.now_ms();
                    let sealed = self.on_anon_chain(|chain| {
                        receipt::seal(body, chain, &self.signer, &Default::default(), now, true)
                    });
                    host.log(
                        LogLevel::Info,
                        &format!("portcullis: principal `{}` released", r.principal),
                    );
                    log_receipt(host, &sealed);
                }
                Ok(_) => {}
                Err(e) => host.log(
                    LogLevel::Error,
                    &format!("portcullis: release of `{}` not applied: {e}", r.principal),
                ),
            }
        }
    }

    /// The record of principal `id` (a new, empty one when it has none); see `principals.rs`.
    pub(crate) fn principal(
        &self,
        host: &dyn Host,
        id: &str,
    ) -> Result<PrincipalRecord, StoreFailed> {
        principals::read(host, self.in_force.get(host), id)
            .inspect_err(|_| self.metrics.count(host, Metric::Errors))
    }

    /// Change principal `id`'s record (`change` returns whether it changed; it may run several
    /// times) and write it back when it did.
    /// With the etcd backend, a change of its containment is queued in the outbox (etcd must
    /// learn of it) and noted for the request being decided ([`Sessions::take_changed`]).
    pub(crate) fn update_principal(
        &self,
        host: &dyn Host,
        id: &str,
        mut change: impl FnMut(&mut PrincipalRecord, u64) -> bool,
    ) -> Result<PrincipalRecord, StoreFailed> {
        if !self.replicated {
            return principals::update(host, self.in_force.get(host), id, change)
                .inspect_err(|_| self.metrics.count(host, Metric::Errors));
        }
        let contained = Cell::new(false);
        let written = principals::update(host, self.in_force.get(host), id, |r, now| {
            let before = etcd::Containment::of(r);
            let changed = change(r, now);
            contained.set(changed && etcd::Containment::of(r) != before);
            changed
        })
        .inspect_err(|_| self.metrics.count(host, Metric::Errors))?;
        if contained.get() {
            if let Err(e) = etcd::outbox_add(host, id) {
                // The request that made the change still waits for its own write; a
                // response-path change is lost to etcd only if this worker's write fails too.
                host.log(LogLevel::Error, &format!("portcullis: state store: {e}"));
                self.metrics.count(host, Metric::StateStoreErrors);
            }
            let mut changed = self.changed.borrow_mut();
            if !changed.iter().any(|c| c == id) {
                changed.push(id.to_owned());
            }
        }
        Ok(written)
    }

    /// After a decision of principal `id` in `session`: carry what it did to the principal
    /// (`before` -> `after`: taints, quarantine, denials) into its record, count a `new` session
    /// and make `session` its current run. A principal over `session.max_per_principal`
    /// sessions loses its oldest: they end (evicted), and no other principal's session does.
    pub(crate) fn principal_acted(
        &self,
        host: &dyn Host,
        id: &str,
        acted: &Acted<'_>,
    ) -> Result<PrincipalRecord, StoreFailed> {
        let quota = self.cfg.max_per_principal;
        let mut victims: Vec<String> = Vec::new();
        let written = self.update_principal(host, id, |r, now| {
            victims.clear();
            let mut changed = principals::merge(r, acted.before, acted.after, now);
            if let Some(session) = acted.session {
                if acted.new_session && !r.sessions.iter().any(|s| s == session) {
                    r.view.sessions = r.view.sessions.saturating_add(1);
                    r.sessions.push(session.to_owned());
                    let over = r.sessions.len().saturating_sub(quota);
                    victims.extend(r.sessions.drain(..over));
                    changed = true;
                }
                if r.run.as_deref() != Some(session) {
                    r.run = Some(session.to_owned());
                    changed = true;
                }
            }
            changed
        });
        for v in &victims {
            host.log(
                LogLevel::Info,
                &format!(
                    "portcullis: principal `{id}` has more than {quota} sessions \
                     (session.max_per_principal): ending its oldest, `{v}`"
                ),
            );
            self.end_and_forget(host, v, EndReason::Evicted);
        }
        written
    }

    /// Read a session that has a record, without choosing a slot for a new one.
    fn find(&self, host: &dyn Host, session: &str, now_ms: u64) -> Option<Record> {
        let layout = self.in_force.get(host);
        store::find_in(host, layout, session, now_ms, self.cfg.idle_ttl_ms)
    }

    /// Read `session`'s record (a new one when it has none), let `change` edit it, and write it
    /// back with compare-and-swap; see the module doc. `change` may run several times, so it is a
    /// function of the record and the time it is given.
    ///
    /// A new session is placed as principal `owner`'s (it never displaces another principal's
    /// live session), and a written record is marked as `owner`'s.
    ///
    /// With sessions on etcd, only a change to the record a decision staged for this session is
    /// made ([`Sessions::stage`]); any other fails, and the caller's failure path applies.
    pub(crate) fn update<T>(
        &self,
        host: &dyn Host,
        session: &str,
        owner: Owner,
        change: impl FnMut(&mut Record, u64) -> Write<T>,
    ) -> Result<T, StoreFailed> {
        if self.on_etcd {
            let staged = self
                .staged
                .borrow()
                .as_ref()
                .is_some_and(|s| s.session == session);
            if staged {
                return self.stage(host, session, owner, change);
            }
            return Err(StoreFailed(format!(
                "session `{session}` is kept in etcd, and this change is not part of a decision"
            )));
        }
        self.update_local(host, session, owner, change)
    }

    /// [`Sessions::update`] on this Envoy's slots only.
    fn update_local<T>(
        &self,
        host: &dyn Host,
        session: &str,
        owner: Owner,
        mut change: impl FnMut(&mut Record, u64) -> Write<T>,
    ) -> Result<T, StoreFailed> {
        let read = |now| {
            let mut rec = self.read(host, session, owner, now);
            rec.extra.owner = rec.extra.owner.or(owner);
            Some(rec)
        };
        self.cycle(host, session, &read, &mut change)
            .and_then(|t| t.ok_or_else(|| StoreFailed("no session slot can be written".into())))
            .inspect_err(|_| self.metrics.count(host, Metric::Errors))
    }

    /// [`Sessions::update`] for a session that has a record: `Ok(None)` when none does (its slot
    /// went to another session). With sessions on etcd, always `Ok(None)`: this cache's copy is
    /// not the record (a checkpoint or an end written here would fork the chain etcd keeps).
    pub(crate) fn update_existing<T>(
        &self,
        host: &dyn Host,
        session: &str,
        mut change: impl FnMut(&mut Record, u64) -> Write<T>,
    ) -> Result<Option<T>, StoreFailed> {
        if self.on_etcd {
            return Ok(None);
        }
        let read = |now| self.find(host, session, now);
        self.cycle(host, session, &read, &mut change)
            .inspect_err(|_| self.metrics.count(host, Metric::Errors))
    }

    /// Read, change, write, retried on contention; `None` when `read` finds no record.
    fn cycle<T>(
        &self,
        host: &dyn Host,
        session: &str,
        read: &dyn Fn(u64) -> Option<Record>,
        change: &mut dyn FnMut(&mut Record, u64) -> Write<T>,
    ) -> Result<Option<T>, StoreFailed> {
        retry_cas(|| {
            let now = host.now_ms();
            let Some(mut rec) = read(now) else {
                return Ok(None);
            };
            let (t, active) = match change(&mut rec, now) {
                Write::Skip(t) => return Ok(Some(t)),
                Write::Active(t) => (t, true),
                Write::Quiet(t) => (t, false),
            };
            store::store(host, session, &rec)?;
            self.written(host, session, &rec, now, active);
            Ok(Some(t))
        })
    }

    /// Bookkeeping after a successful write.
    fn written(&self, host: &dyn Host, session: &str, rec: &Record, now_ms: u64, active: bool) {
        match &rec.displaced {
            // Etcd keeps the displaced session: it only leaves this cache.
            Some(d) if self.on_etcd => self.track(host, |t| {
                t.forget(&d.session);
            }),
            Some(d) => self.end_displaced(host, d, now_ms),
            None => {}
        }
        let seen = if active {
            now_ms
        } else {
            // A checkpoint or an end is not activity: keep last_seen as it was.
            rec.extra.last_seen_ms
        };
        self.track(host, |t| t.touch(session, seen, &rec.state, &rec.chain));
        if !active {
            return;
        }
        loop {
            let victim = self.tracker.borrow().victim(self.cfg.max_sessions, session);
            let Some(victim) = victim else { break };
            self.end(host, &victim, EndReason::Evicted);
            // INVARIANT: the victim is forgotten, so this loop ends.
            self.track(host, |t| {
                t.forget(&victim);
            });
        }
    }

    /// Change what this worker tracks, keeping the `portcullis_sessions_tracked` gauge equal to it.
    fn track(&self, host: &dyn Host, f: impl FnOnce(&mut Tracker)) {
        let mut t = self.tracker.borrow_mut();
        let before = t.len();
        f(&mut t);
        let after = t.len();
        drop(t);
        let delta = i64::try_from(after)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(before).unwrap_or(i64::MAX));
        if delta != 0 {
            self.metrics.add(host, Metric::Sessions, delta);
        }
    }

    /// A new session took the slot of a live one (written already): log the displaced session's
    /// final, signed `session_end` receipt and forget it here. Its slot now holds the new session,
    /// so its id is from now on a new session (see `docs/filter.md`, Sessions).
    fn end_displaced(&self, host: &dyn Host, d: &Displaced, now_ms: u64) {
        let mut chain = d.chain.clone();
        let r = receipt::session_end(&d.session, &mut chain, &self.signer, now_ms);
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: session `{}` ended ({}; its slot went to a new session)",
                d.session, d.why
            ),
        );
        log_receipt(host, &r);
        self.metrics.count(host, Metric::Evicted);
        self.track(host, |t| {
            t.forget(&d.session);
        });
    }

    /// Begin a session the MCP server has just created, pinning `intent` on it. A legacy
    /// `initialize` carries no session id (the server assigns it in the response), so the intent
    /// it declared cannot be pinned while it is evaluated; the filter writes the record when the
    /// response names the session (with `session.require_initialize`, also without an intent:
    /// only such a record makes the id known). Displaces a live session from its slot when every
    /// slot the new session may use holds one (its `session_end` receipt is logged). Only a
    /// session with no record yet is written: if any action of the session was already recorded,
    /// its pinned intent (or none) stands.
    ///
    /// The session belongs to `principal` when one is known: it counts toward the principal's
    /// `session.max_per_principal` and becomes its current run.
    pub(crate) fn begin(
        &self,
        host: &dyn Host,
        session: &str,
        principal: Option<&str>,
        intent: Option<&(String, bundle::action::IntentSource)>,
    ) {
        let owner = principal.map(bundle::session::name_hash);
        // With sessions on etcd this writes only the cache (revision 0: etcd has no record yet);
        // the session's first decision writes it to etcd, and nothing of the chain is written.
        let begun = self.update_local(host, session, owner, |rec, now| {
            if rec.state.status != SessionStatus::New {
                return Write::Skip(false);
            }
            rec.state.status = SessionStatus::Active;
            rec.state.intent = intent.map(|(i, _)| i.clone());
            rec.state.intent_source = intent.map(|(_, s)| *s).unwrap_or_default();
            rec.extra.last_seen_ms = now;
            Write::Active(true)
        });
        match (begun, principal) {
            (Ok(true), Some(p)) => {
                let none = bundle::session::PrincipalView::default();
                let acted = Acted {
                    session: Some(session),
                    new_session: true,
                    before: &none,
                    after: &none,
                };
                if let Err(e) = self.principal_acted(host, p, &acted) {
                    host.log(
                        LogLevel::Warn,
                        &format!("portcullis: new session `{session}` not counted for `{p}`: {e}"),
                    );
                }
            }
            (Ok(_), _) => {}
            (Err(e), _) => host.log(
                LogLevel::Warn,
                &format!("portcullis: new session `{session}` not recorded: {e}"),
            ),
        }
    }

    /// End a session and stop tracking it on this worker; see [`Sessions::end`].
    pub(crate) fn end_and_forget(&self, host: &dyn Host, session: &str, why: EndReason) {
        self.end(host, session, why);
        self.track(host, |t| {
            t.forget(session);
        });
    }

    /// End a session: leave a tombstone (status missing, chain kept) and log a signed
    /// `session_end` receipt. Eviction and deletion always end it; expiry only when the record
    /// itself says it is idle past the ttl (another worker may have served it since). A later
    /// request naming a deleted or evicted session is `missing`.
    fn end(&self, host: &dyn Host, session: &str, why: EndReason) {
        let ended = self.update_existing(host, session, |rec, now| {
            if rec.state.status == SessionStatus::Missing && rec.ended.is_none() {
                return Write::Skip(None); // already a tombstone
            }
            if why == EndReason::Expired && rec.ended.is_none() {
                // Another worker used the session since this one did: it is not idle.
                return Write::Skip(None);
            }
            let why = rec.ended.unwrap_or(why);
            rec.state = tombstone(rec.state.started_ms);
            rec.extra = SessionExtra {
                last_seen_ms: now,
                ..SessionExtra::default()
            };
            let r = receipt::session_end(session, &mut rec.chain, &self.signer, now);
            Write::Quiet(Some((why, r)))
        });
        match ended {
            Ok(Some(Some((why, r)))) => {
                host.log(
                    LogLevel::Info,
                    &format!("portcullis: session `{session}` ended ({why})"),
                );
                log_receipt(host, &r);
                self.metrics.count(host, Metric::Evicted);
            }
            // No record left (its slot went to another session), or nothing to end.
            Ok(_) => {}
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("portcullis: cannot end session `{session}`: {e}"),
                );
            }
        }
    }

    /// The timer: end sessions idle past their ttl, and sign a `checkpoint` for sessions whose
    /// oldest unsigned receipt is older than `max_unsigned_ms`, so no receipt stays unattested
    /// for longer than `max_unsigned_ms` + the tick period while its session is idle.
    pub(crate) fn on_tick(&self, host: &dyn Host, max_unsigned_ms: u64) {
        self.flush_untracked(host);
        let now = host.now_ms();
        // Each session end or checkpoint is a signature, and the tick runs on the worker that
        // serves requests: a budget per tick keeps it from stalling them (the rest waits for the
        // next tick; active sessions sign on their next receipt anyway).
        let mut budget = MAX_SIGNATURES_PER_TICK;
        let idle = self.tracker.borrow().idle(now, self.cfg.idle_ttl_ms);
        for s in idle.into_iter().take(budget) {
            budget = budget.saturating_sub(1);
            self.end_and_forget(host, &s, EndReason::Expired);
        }
        let due = self.tracker.borrow().checkpoint_due(now, max_unsigned_ms);
        for s in due.into_iter().take(budget) {
            self.checkpoint(host, &s);
        }
        self.checkpoint_anon(host, now, max_unsigned_ms);
    }

    /// Envoy stops this configuration: at shutdown, or when a new one replaces it (a new plugin
    /// configuration, a pulled bundle). Sign a checkpoint now for each session this worker served
    /// that has unsigned receipts, and for the anonymous chain, instead of leaving their last
    /// receipts `unsigned_tail` in a log that ends here (or for a timer that no longer knows
    /// them). At most [`MAX_SIGNATURES_AT_DONE`], oldest unsigned first; the rest is logged.
    pub(crate) fn on_done(&self, host: &dyn Host) {
        self.flush_untracked(host);
        let now = host.now_ms();
        let due = self.tracker.borrow().checkpoint_due(now, 0);
        let left = due.len().saturating_sub(MAX_SIGNATURES_AT_DONE);
        for s in due.into_iter().take(MAX_SIGNATURES_AT_DONE) {
            self.checkpoint(host, &s);
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
        self.checkpoint_anon(host, now, 0);
    }

    /// Sign the anonymous chain's unsigned receipts once the oldest is `max_unsigned_ms` old.
    fn checkpoint_anon(&self, host: &dyn Host, now: u64, max_unsigned_ms: u64) {
        let mut c = self.anon_chain.borrow_mut();
        if c.unsigned > 0 && now.saturating_sub(c.oldest_unsigned_ms) >= max_unsigned_ms {
            let r = receipt::checkpoint(&self.anon_name, &mut c, &self.signer, now);
            log_receipt(host, &r);
        }
    }

    /// Sign a checkpoint of a session's unsigned receipts.
    fn checkpoint(&self, host: &dyn Host, session: &str) {
        let signed = self.update_existing(host, session, |rec, now| {
            if rec.chain.unsigned == 0 {
                // Someone signed since: just refresh what this worker knows.
                self.track(host, |t| {
                    t.touch(session, rec.extra.last_seen_ms, &rec.state, &rec.chain);
                });
                return Write::Skip(None);
            }
            let r = receipt::checkpoint(session, &mut rec.chain, &self.signer, now);
            Write::Quiet(Some(r))
        });
        match signed {
            Ok(Some(Some(r))) => log_receipt(host, &r),
            Ok(Some(None)) => {}
            // Its slot went to another session (whose worker logged its `session_end`).
            Ok(None) => self.track(host, |t| {
                t.forget(session);
            }),
            Err(e) => host.log(
                LogLevel::Error,
                &format!("portcullis: cannot checkpoint session `{session}`: {e}"),
            ),
        }
    }
}

/// `into` gains the containment `from` has (a kill, read-only, taints, revocations): the part of
/// a session that only ever grows. A set that cannot grow kills the session instead.
fn join_containment(
    into: &mut bundle::session::SessionState,
    from: &bundle::session::SessionState,
) {
    let mut full = false;
    for (mine, theirs) in [
        (&mut into.taints, &from.taints),
        (&mut into.revoked_tools, &from.revoked_tools),
        (&mut into.revoked_classes, &from.revoked_classes),
    ] {
        for h in theirs {
            if mine.contains(h) {
                continue;
            }
            if mine.len() >= bundle::session::SET_CAP {
                full = true;
            } else {
                mine.push(*h);
            }
        }
    }
    into.killed |= from.killed || full;
    into.read_only |= from.read_only;
}

/// An active session's state with three actions, started at `now` (for the session tests).
#[cfg(test)]
fn active_for_tests(now: u64) -> bundle::session::SessionState {
    bundle::session::SessionState {
        status: SessionStatus::Active,
        started_ms: now,
        actions: 3,
        ..bundle::session::SessionState::default()
    }
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
