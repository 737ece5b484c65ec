//! The shared state store (`state.backend: etcd`, `docs/state.md`): what must hold across Envoy
//! replicas and restarts is kept in etcd v3, reached only through Envoy's own gRPC call-outs to a
//! cluster the operator names. Local shared data stays the cache every request reads.
//!
//! **Containment** ([`Containment`]): a principal's quarantine, taints, principal-wide
//! revocations and releases. A value is a join-semilattice: a higher `epoch` (a release) wins
//! whole; within an epoch, quarantines take the stricter, sets take the union, times the later.
//! So two replicas that change one principal at once never lose a change: each writes with a
//! compare-and-swap on the key's `mod_revision`, and the loser joins what it finds and writes
//! again. Every change of a record's containment (`Sessions::update_principal`, whatever made
//! it: a decision, a tool result, a release) is queued in the shared-data outbox until etcd has
//! it; the request that made it waits for the write (`stream/commit.rs`), and the root's timer
//! writes what is left (a response-path taint, a write that failed).
//!
//! **Approvals**: a used approval token's id is created under `<prefix>a/<nonce>` (create if
//! absent, with a lease that ends with the token) before the approval is honoured: a replay on
//! any replica finds it.
//!
//! **Sessions** (`state.sessions: etcd`, `sessions.rs`): a decided request's session record is
//! written with a compare-and-swap on its key's `mod_revision`; a request that loses is decided
//! again on the record etcd returned.
//!
//! **Reading**: each worker's root context reads every containment record at start and then
//! holds a watch from the revision it read (`watch.rs`); events are joined into the local
//! records. While the watch is not in sync, a principal the cache does not know is denied
//! (`filter:state_store`); a known one is decided on the cache.

pub(crate) mod proto;
pub(crate) mod sessions;
pub(crate) mod watch;

use bundle::session::{NameHash, Quarantine, SET_CAP};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::principals::PrincipalRecord;
use super::retry_cas;
use super::store::EMPTY_SLOT_CAS;
use crate::config::EtcdConfig;
use crate::host::{Host, HostError, SharedDataError};
use crate::limits::{MAX_ETCD_ANSWER_BYTES, MAX_OUTBOX};

/// gRPC services and methods of etcd v3.
pub(crate) const KV: &str = "etcdserverpb.KV";
pub(crate) const LEASE: &str = "etcdserverpb.Lease";
pub(crate) const WATCH: &str = "etcdserverpb.Watch";

/// The shared-data key of the outbox: ids of principals whose containment etcd does not have yet.
const OUTBOX_KEY: &str = "portcullis/etcd/outbox";

/// What etcd keeps of one principal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Containment {
    pub id: String,
    /// Releases applied: a higher epoch replaces a lower one whole.
    #[serde(default)]
    pub epoch: u32,
    #[serde(default)]
    pub quarantine: Quarantine,
    #[serde(default)]
    pub quarantined_ms: u64,
    #[serde(default)]
    pub released_ms: u64,
    #[serde(default)]
    pub taints: Vec<NameHash>,
    #[serde(default)]
    pub revoked_tools: Vec<NameHash>,
    #[serde(default)]
    pub revoked_classes: Vec<NameHash>,
    /// The signed release that started `epoch` (none at epoch 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

fn rank(q: Quarantine) -> u8 {
    match q {
        Quarantine::None => 0,
        Quarantine::ReadOnly => 1,
        Quarantine::Full => 2,
    }
}

/// `mine` gains what `theirs` has (bounded by [`SET_CAP`]); returns whether it overflowed.
fn union(mine: &mut Vec<NameHash>, theirs: &[NameHash]) -> bool {
    let mut full = false;
    for h in theirs {
        if !mine.contains(h) {
            if mine.len() >= SET_CAP {
                full = true;
            } else {
                mine.push(*h);
            }
        }
    }
    full
}

impl Containment {
    /// The containment part of a principal's record.
    pub(crate) fn of(r: &PrincipalRecord) -> Containment {
        Containment {
            id: r.id.clone(),
            epoch: r.epoch,
            quarantine: r.view.quarantine,
            quarantined_ms: r.quarantined_ms,
            released_ms: r.released_ms,
            taints: r.view.taints.clone(),
            revoked_tools: r.view.revoked_tools.clone(),
            revoked_classes: r.view.revoked_classes.clone(),
            release: r.release_token.clone(),
        }
    }

    /// Whether this value's epoch was started by a release that verifies against `keys`: signed
    /// by an operator key, for this principal, issued when the value says.
    fn release_verifies(&self, keys: &[VerifyingKey], now_s: u64) -> bool {
        self.release.as_deref().is_some_and(|t| {
            bundle::release::verify(t, keys, now_s).is_ok_and(|r| {
                r.principal == self.id && r.issued_s.saturating_mul(1000) == self.released_ms
            })
        })
    }

    /// Join this (etcd's) containment into the local record `r`; returns whether `r` changed.
    /// A higher epoch replaces `r`'s containment only with a release that verifies against
    /// `keys` (whoever can write etcd cannot lift a quarantine by raising the epoch); without
    /// one, only what is stricter is taken, as within an epoch.
    pub(crate) fn join_into(
        &self,
        r: &mut PrincipalRecord,
        keys: &[VerifyingKey],
        now_s: u64,
    ) -> bool {
        let before = Containment::of(r);
        if self.epoch > r.epoch && self.release_verifies(keys, now_s) {
            // A release `r` has not seen: its containment is replaced, and its run with it.
            r.epoch = self.epoch;
            r.view.quarantine = self.quarantine;
            r.quarantined_ms = self.quarantined_ms;
            r.released_ms = self.released_ms;
            r.view.taints.clone_from(&self.taints);
            r.view.revoked_tools.clone_from(&self.revoked_tools);
            r.view.revoked_classes.clone_from(&self.revoked_classes);
            r.view.denials = 0;
            r.run = None;
            r.release_token.clone_from(&self.release);
        } else if self.epoch >= r.epoch {
            if rank(self.quarantine) > rank(r.view.quarantine) {
                r.view.quarantine = self.quarantine;
            }
            r.quarantined_ms = r.quarantined_ms.max(self.quarantined_ms);
            // `released_ms` moves only with a verified release (above): a larger one would
            // refuse the operator's next release.
            let full = union(&mut r.view.taints, &self.taints)
                | union(&mut r.view.revoked_tools, &self.revoked_tools)
                | union(&mut r.view.revoked_classes, &self.revoked_classes);
            if full {
                // As a local merge does: a set that cannot grow quarantines instead.
                r.view.quarantine_at_least(Quarantine::Full);
            }
        }
        Containment::of(r) != before
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decode a stored value; `None` when it is not one (it is then ignored and logged).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Containment> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The etcd key of principal `id`: `<prefix>p/<first 16 bytes of SHA-256(id), hex>`.
pub(crate) fn principal_key(prefix: &str, id: &str) -> Vec<u8> {
    let h = Sha256::digest(id.as_bytes());
    format!("{prefix}p/{}", hex::encode(h.get(..16).unwrap_or_default())).into_bytes()
}

/// The etcd key of a used approval token.
pub(crate) fn token_key(prefix: &str, nonce: &[u8; 16]) -> Vec<u8> {
    format!("{prefix}a/{}", hex::encode(nonce)).into_bytes()
}

/// The range of every principal key.
pub(crate) fn principals_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let start = format!("{prefix}p/").into_bytes();
    let end = proto::prefix_end(&start);
    (start, end)
}

/// The etcd client of one configuration: the Envoy cluster and key prefix.
#[derive(Clone, Debug)]
pub(crate) struct Etcd {
    pub cfg: EtcdConfig,
    /// The serialized `GrpcService` naming the cluster.
    service: String,
}

impl Etcd {
    pub(crate) fn new(cfg: EtcdConfig) -> Etcd {
        // The cluster name is checked to be short and printable ASCII, so the serialized
        // message is valid UTF-8 (the proxy-wasm SDK takes the upstream as a string).
        let service = String::from_utf8(proto::grpc_service(&cfg.cluster)).unwrap_or_default();
        Etcd { cfg, service }
    }

    /// Send one unary call; its answer arrives as a gRPC call response with the token returned.
    pub(crate) fn call(
        &self,
        host: &dyn Host,
        service: &str,
        method: &str,
        message: &[u8],
    ) -> Result<u32, HostError> {
        host.dispatch_grpc_call(
            &self.service,
            service,
            method,
            message,
            u64::from(self.cfg.timeout_ms),
        )
    }

    /// Open the watch stream.
    pub(crate) fn open_watch(&self, host: &dyn Host) -> Result<u32, HostError> {
        host.open_grpc_stream(&self.service, WATCH, "Watch")
    }
}

/// The answer of a unary call: its bytes when the call succeeded (gRPC status 0), else why not.
pub(crate) fn answer(host: &dyn Host, status: u32, size: usize) -> Result<Vec<u8>, String> {
    if status != 0 {
        return Err(match status {
            4 => "etcd did not answer in time (gRPC DEADLINE_EXCEEDED)".to_owned(),
            14 => "etcd is unavailable (gRPC UNAVAILABLE)".to_owned(),
            s => format!("etcd call failed with gRPC status {s}"),
        });
    }
    if size > MAX_ETCD_ANSWER_BYTES {
        return Err(format!(
            "etcd's answer is larger than {MAX_ETCD_ANSWER_BYTES} bytes"
        ));
    }
    Ok(host.grpc_call_response(size).unwrap_or_default())
}

/// One write to etcd in progress, as a state machine over its call-outs.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Write principal `id`'s containment (compare-and-swap; `tries` so far; `sent`: what the
    /// call in flight writes).
    Push {
        id: String,
        tries: u8,
        sent: Option<Containment>,
    },
    /// Claim a used approval token: first its lease ...
    Lease { nonce: [u8; 16], expires_s: u64 },
    /// ... then create its key if absent.
    Claim { nonce: [u8; 16], lease: i64 },
}

/// Why a write did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The approval token was already used (on any replica).
    Replayed,
    /// etcd could not be reached or refused: why.
    Unavailable(String),
}

impl Failed {
    /// The failure in words.
    pub(crate) fn why(&self) -> String {
        match self {
            Failed::Replayed => "the approval token was already used".to_owned(),
            Failed::Unavailable(why) => why.clone(),
        }
    }
}

/// What to do after an answer.
pub(crate) enum Step {
    /// The op is done.
    Done,
    /// The op goes on with another call-out (already dispatched: its token).
    Next(Op, u32),
    /// The op failed.
    Failed(Failed),
}

/// Compare-and-swap attempts on one principal key before the write counts as failed.
const MAX_PUSH_TRIES: u8 = 4;

/// What the ops need of the sessions: reading and joining principal records locally.
pub(crate) trait Records {
    /// The keys a release read from etcd must verify against (`release_keys`).
    fn release_keys(&self) -> &[VerifyingKey];
    /// The local record of `id` (a new one when it has none).
    fn record(&self, host: &dyn Host, id: &str) -> Result<PrincipalRecord, String>;
    /// Change the local record of `id` without queueing it for etcd (the change came from it).
    fn apply(
        &self,
        host: &dyn Host,
        id: &str,
        change: &mut dyn FnMut(&mut PrincipalRecord) -> bool,
    ) -> Result<(), String>;
}

impl Op {
    /// Write principal `id`'s containment.
    pub(crate) fn push(id: String) -> Op {
        Op::Push {
            id,
            tries: 0,
            sent: None,
        }
    }

    /// Dispatch this op's call; returns its token.
    pub(crate) fn start(
        &mut self,
        host: &dyn Host,
        etcd: &Etcd,
        records: &dyn Records,
    ) -> Result<u32, Failed> {
        let unavailable =
            |e: HostError| Failed::Unavailable(format!("etcd cannot be called: {}", e.0));
        match self {
            Op::Push { id, sent, .. } => {
                let r = records.record(host, id).map_err(Failed::Unavailable)?;
                let key = principal_key(&etcd.cfg.prefix, id);
                let value = Containment::of(&r);
                let msg = proto::txn_put(
                    &key,
                    proto::Compare::ModRevision(r.etcd_rev),
                    &value.encode(),
                    0,
                );
                *sent = Some(value);
                etcd.call(host, KV, "Txn", &msg.finish())
                    .map_err(unavailable)
            }
            Op::Lease { expires_s, .. } => {
                let now_s = host.now_ms() / 1000;
                // The id lives as long as the token could still verify, and a minute more.
                let ttl = expires_s.saturating_sub(now_s).saturating_add(60);
                let msg = proto::lease_grant(i64::try_from(ttl).unwrap_or(i64::MAX));
                etcd.call(host, LEASE, "LeaseGrant", &msg.finish())
                    .map_err(unavailable)
            }
            Op::Claim { nonce, lease } => {
                let key = token_key(&etcd.cfg.prefix, nonce);
                let msg = proto::txn_put(&key, proto::Compare::Absent, b"used", *lease);
                etcd.call(host, KV, "Txn", &msg.finish())
                    .map_err(unavailable)
            }
        }
    }

    /// The op's call answered (`status`: its gRPC status; `size`: its message size).
    pub(crate) fn step(
        self,
        host: &dyn Host,
        etcd: &Etcd,
        records: &dyn Records,
        status: u32,
        size: usize,
    ) -> Step {
        let body = match answer(host, status, size) {
            Ok(b) => b,
            Err(why) => return Step::Failed(Failed::Unavailable(why)),
        };
        let garbled = || Step::Failed(Failed::Unavailable("etcd's answer is not one".to_owned()));
        let next = |mut op: Op| match op.start(host, etcd, records) {
            Ok(token) => Step::Next(op, token),
            Err(f) => Step::Failed(f),
        };
        match self {
            Op::Push { id, tries, sent } => {
                let Some(t) = proto::txn_response(&body) else {
                    return garbled();
                };
                let again = |id: String| {
                    if tries.saturating_add(1) >= MAX_PUSH_TRIES {
                        return Step::Failed(Failed::Unavailable(
                            "etcd compare-and-swap contention".to_owned(),
                        ));
                    }
                    next(Op::Push {
                        id,
                        tries: tries.saturating_add(1),
                        sent: None,
                    })
                };
                let now_s = host.now_ms() / 1000;
                let joined = |rev: i64, theirs: Option<Containment>| {
                    records.apply(host, &id, &mut |r| {
                        let changed = theirs
                            .as_ref()
                            .is_some_and(|c| c.join_into(r, records.release_keys(), now_s));
                        let moved = r.etcd_rev != rev;
                        r.etcd_rev = rev;
                        changed || moved
                    })
                };
                if t.succeeded {
                    if let Err(e) = joined(t.revision, None) {
                        return Step::Failed(Failed::Unavailable(e));
                    }
                    // The record may have changed while the write was in flight: only what etcd
                    // now has leaves the outbox; a newer change is written next.
                    return match records.record(host, &id) {
                        Ok(r) if Some(Containment::of(&r)) == sent => {
                            outbox_remove(host, &id);
                            Step::Done
                        }
                        Ok(_) => again(id),
                        Err(e) => Step::Failed(Failed::Unavailable(e)),
                    };
                }
                // Another writer was first: join what etcd has, and try again.
                let (rev, theirs) = match t.current {
                    Some(kv) => (kv.mod_revision, Containment::decode(&kv.value)),
                    None => (0, None),
                };
                if let Err(e) = joined(rev, theirs) {
                    return Step::Failed(Failed::Unavailable(e));
                }
                again(id)
            }
            Op::Lease { nonce, .. } => match proto::lease_grant_response(&body) {
                Some(Ok(lease)) => next(Op::Claim { nonce, lease }),
                Some(Err(e)) => {
                    Step::Failed(Failed::Unavailable(format!("etcd refused a lease: {e}")))
                }
                None => garbled(),
            },
            Op::Claim { .. } => match proto::txn_response(&body) {
                Some(t) if t.succeeded => Step::Done,
                Some(_) => Step::Failed(Failed::Replayed),
                None => garbled(),
            },
        }
    }
}

/// The ids in the outbox.
pub(crate) fn outbox(host: &dyn Host) -> Vec<String> {
    host.get_shared_data(OUTBOX_KEY)
        .ok()
        .and_then(|(v, _)| v)
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default()
}

fn outbox_change(host: &dyn Host, change: impl Fn(&mut Vec<String>) -> bool) -> Result<(), String> {
    retry_cas(|| {
        let (bytes, cas) = host
            .get_shared_data(OUTBOX_KEY)
            .map_err(|e| SharedDataError::Other(e.0))?;
        let mut ids: Vec<String> = match &bytes {
            Some(b) => serde_json::from_slice(b)
                .map_err(|_| SharedDataError::Other("the etcd outbox is unreadable".into()))?,
            None => Vec::new(),
        };
        if !change(&mut ids) {
            return Ok(());
        }
        let cas = if bytes.is_some() {
            cas
        } else {
            Some(EMPTY_SLOT_CAS)
        };
        host.set_shared_data(
            OUTBOX_KEY,
            &serde_json::to_vec(&ids).unwrap_or_default(),
            cas,
        )
    })
    .map_err(|e| e.0)
}

/// Queue principal `id` for a write to etcd. Fails when the outbox is full or unwritable.
pub(crate) fn outbox_add(host: &dyn Host, id: &str) -> Result<(), String> {
    let full = std::cell::Cell::new(false);
    outbox_change(host, |ids| {
        full.set(false);
        if ids.iter().any(|i| i == id) {
            return false;
        }
        if ids.len() >= MAX_OUTBOX {
            full.set(true);
            return false;
        }
        ids.push(id.to_owned());
        true
    })?;
    if full.get() {
        return Err(format!(
            "the etcd outbox holds {MAX_OUTBOX} principals already"
        ));
    }
    Ok(())
}

/// Take principal `id` out of the outbox (etcd has its containment).
pub(crate) fn outbox_remove(host: &dyn Host, id: &str) {
    let _ = outbox_change(host, |ids| {
        let before = ids.len();
        ids.retain(|i| i != id);
        ids.len() != before
    });
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;
    use bundle::session::name_hash;

    const NOW_S: u64 = 1_800_000_000;

    fn operator() -> ed25519_dalek::SigningKey {
        bundle::keys::signing_key_from_seed([9; 32])
    }

    fn keys() -> Vec<VerifyingKey> {
        vec![operator().verifying_key()]
    }

    /// `c` joined into `r` with the operator's key.
    fn join(c: &Containment, r: &mut PrincipalRecord) -> bool {
        c.join_into(r, &keys(), NOW_S)
    }

    fn release(id: &str, key: &ed25519_dalek::SigningKey) -> String {
        bundle::release::mint(
            &bundle::release::ReleaseClaims {
                principal: id.to_owned(),
                reason: None,
                issued_s: NOW_S - 10,
                nonce: [3; 16],
            },
            key,
        )
    }

    fn rec(id: &str) -> PrincipalRecord {
        PrincipalRecord {
            id: id.to_owned(),
            ..PrincipalRecord::default()
        }
    }

    #[test]
    fn join_is_a_lattice_within_an_epoch() {
        let mut a = rec("p");
        a.view.taints.push(name_hash("pii"));
        let mut b = rec("p");
        b.view.quarantine = Quarantine::ReadOnly;
        b.quarantined_ms = 5;
        let (ca, cb) = (Containment::of(&a), Containment::of(&b));
        let mut ab = a.clone();
        assert!(join(&cb, &mut ab));
        let mut ba = b.clone();
        assert!(join(&ca, &mut ba));
        assert_eq!(Containment::of(&ab), Containment::of(&ba), "commutative");
        assert_eq!(ab.view.quarantine, Quarantine::ReadOnly);
        assert_eq!(ab.view.taints, vec![name_hash("pii")]);
        // Idempotent.
        assert!(!join(&Containment::of(&ab), &mut ab));
        // A stricter quarantine wins; a weaker one does not lower it.
        let mut full = rec("p");
        full.view.quarantine = Quarantine::Full;
        assert!(join(&Containment::of(&full), &mut ab));
        assert!(!join(&Containment::of(&b), &mut ab));
        assert_eq!(ab.view.quarantine, Quarantine::Full);
    }

    #[test]
    fn a_release_epoch_replaces_and_an_older_epoch_is_ignored() {
        let mut killed = rec("p");
        killed.view.quarantine = Quarantine::Full;
        killed.run = Some("run/p".into());
        let mut released = rec("p");
        released.epoch = 1;
        released.released_ms = (NOW_S - 10) * 1000;
        released.release_token = Some(release("p", &operator()));
        let stale = Containment::of(&killed);
        assert!(join(&Containment::of(&released), &mut killed));
        assert_eq!(killed.view.quarantine, Quarantine::None);
        assert_eq!(killed.epoch, 1);
        assert_eq!(killed.run, None);
        assert!(
            !join(&stale, &mut killed),
            "the pre-release quarantine stays lifted"
        );
    }

    /// Whoever can write etcd cannot lift a quarantine by raising the epoch: not without a
    /// release, nor with one signed by another key, for another principal, or of another time.
    #[test]
    fn a_higher_epoch_without_a_verified_release_lifts_nothing() {
        let mut killed = rec("p");
        killed.view.quarantine = Quarantine::Full;
        let forged = |token: Option<String>, released_ms: u64| {
            let mut c = Containment::of(&rec("p"));
            c.epoch = 5;
            c.released_ms = released_ms;
            c.release = token;
            c
        };
        let at = (NOW_S - 10) * 1000;
        let other_key = bundle::keys::signing_key_from_seed([10; 32]);
        for c in [
            forged(None, at),
            forged(Some(release("p", &other_key)), at),
            forged(Some(release("q", &operator())), at),
            forged(Some(release("p", &operator())), at + 1000),
            forged(Some("not a token".into()), at),
        ] {
            let mut r = killed.clone();
            join(&c, &mut r);
            assert_eq!(r.view.quarantine, Quarantine::Full, "{c:?}");
            assert_eq!((r.epoch, r.released_ms), (0, 0), "{c:?}");
        }
        // A stricter value at an unverified epoch is still taken (fail closed).
        let mut free = rec("p");
        let mut strict = forged(None, at);
        strict.quarantine = Quarantine::ReadOnly;
        assert!(join(&strict, &mut free));
        assert_eq!(free.view.quarantine, Quarantine::ReadOnly);
    }

    #[test]
    fn a_full_set_quarantines_instead_of_forgetting() {
        let mut mine = rec("p");
        mine.view.taints = (0..SET_CAP).map(|i| name_hash(&format!("t{i}"))).collect();
        let mut theirs = rec("p");
        theirs.view.taints.push(name_hash("one more"));
        assert!(join(&Containment::of(&theirs), &mut mine));
        assert_eq!(mine.view.quarantine, Quarantine::Full);
    }

    #[test]
    fn keys_are_prefixed_and_hashed() {
        let k = principal_key("/portcullis/", "spiffe://x");
        assert!(k.starts_with(b"/portcullis/p/"));
        assert_eq!(k.len(), "/portcullis/p/".len() + 32);
        let (start, end) = principals_range("/portcullis/");
        assert!(k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice());
        assert_eq!(token_key("/x/", &[0xab; 16]).len(), "/x/a/".len() + 32);
    }

    #[test]
    fn the_outbox_is_a_bounded_set() {
        let host = crate::mock::MockHost::new(0);
        outbox_add(&host, "a").unwrap();
        outbox_add(&host, "a").unwrap();
        outbox_add(&host, "b").unwrap();
        assert_eq!(outbox(&host), vec!["a", "b"]);
        outbox_remove(&host, "a");
        assert_eq!(outbox(&host), vec!["b"]);
        for i in 0..MAX_OUTBOX {
            let _ = outbox_add(&host, &format!("p{i}"));
        }
        assert!(outbox_add(&host, "late").is_err());
    }
}
