//! Session records in Envoy shared data, in a fixed number of hashed slots, and this worker's
//! bookkeeping of the sessions it served.
//!
//! **Slots.** proxy-wasm cannot delete a shared-data key, so one key per session would grow the
//! store with every session id ever seen. Instead the store has `session.slots` keys,
//! `portcullis/s/<slot in hex>`. A session lives in one of [`PROBES`] consecutive slots starting
//! at its home slot, SHA-256(salt ‖ session key) mod slots. The salt is derived from the receipt
//! signing key's secret seed ([`Layout::new`]), so an agent that picks its own session ids cannot
//! aim them at another session's slots. Each slot holds
//! `bundle::session_codec::encode_keyed(session key, state, chain head, extra)`: the record names
//! its session, and a record naming another session is never read as this one's.
//!
//! The layout in force (salt and slot count) is itself in shared data ([`LAYOUT_KEY`]), written by
//! the first plugin configured in the process ([`install_layout`]) and read by every lookup, so
//! every worker and every later configuration agree on where a session lives; a different
//! `session.slots` (or a new signing key) takes effect when Envoy restarts.
//!
//! **Lookup** ([`load`]): the first probe whose record names this session. **Placement** of a new
//! session: the first empty probe; else a tombstone (the oldest first); else an active record idle
//! past the ttl (it expires); else the least recently seen active record, killed or tainted ones
//! last (it is evicted). A displaced live session is returned in [`Record::displaced`], and
//! [`super::Sessions`] logs its signed `session_end` receipt once the write of the
//! new session succeeded. Every write is a compare-and-swap with the token the slot was read with;
//! a slot read as empty is written with [`EMPTY_SLOT_CAS`], which no existing key holds, so of two
//! workers placing a session in the same empty slot the second one fails and starts over.
//!
//! **Tombstones.** Expiry and eviction by this worker's cap leave a tombstone in the slot: status
//! `missing` and the chain head. A later action of that session is evaluated with
//! `SessionStatus::Missing`, i.e. by the pack's `unknown_session` rule, for as long as the
//! tombstone exists; a tombstone is only reclaimed when a new session needs the slot, and from then
//! on the old id is indistinguishable from a new session (the same as the agent opening a new one).
//!
//! **Fail closed.** A slot that cannot be read, or whose record does not even say whose it is, may
//! hold this session: when the session is not found in another probe it is treated as `missing`
//! (never as new). A record of this session that does not decode is `missing` as well.
//!
//! **The etcd revision.** With `state.sessions: etcd` a slot is a cache of etcd's value: it is
//! prefixed with [`REV_TAG`] and the `mod_revision` of the etcd value it holds (8 bytes,
//! big-endian), read back into [`Record::etcd_rev`]. A slot without the prefix has revision 0
//! (etcd has no value this cache knows of), as every slot of the `local` mode does.
//!
//! Limits, documented in `docs/filter.md`: shared data holds at most `slots` + 1 keys (bounded by
//! `slots` x (record + key)); the per-worker cap still applies (`max_sessions`, least recently
//! used first, killed/tainted last); a session displaced from its slot by a new one comes back as
//! a new session.

use std::cell::Cell;

use bundle::receipt::ChainHead;
use bundle::session::{SessionState, SessionStatus};
use bundle::session_codec::{self, SessionExtra};
use sha2::{Digest, Sha256};

use super::retry_cas;
use crate::host::{Host, LogLevel, SharedDataError};

/// How many consecutive slots (from the home slot) a session may live in.
pub const PROBES: u32 = 4;

/// The shared-data key of the slot layout in force.
pub const LAYOUT_KEY: &str = "portcullis/slots";

/// The compare-and-swap token a record is written with into a slot that was read as empty.
/// Envoy (like the mock) accepts any token for a key that does not exist, and refuses a non-zero
/// token that differs from an existing key's: so if another worker created the slot in the
/// meantime, this write fails instead of silently replacing it. Tokens count up from 1 for the
/// whole process, so an existing key holds this one only after 4 billion shared-data writes.
pub const EMPTY_SLOT_CAS: u32 = u32::MAX;

const LAYOUT_MAGIC: &[u8; 4] = b"PSL1";

/// The first byte of a slot that carries the etcd revision of its record (`session_codec`'s keyed
/// records start with `K`).
pub const REV_TAG: u8 = b'R';

/// A slot's bytes without the etcd revision prefix, and that revision (0: none).
fn split_rev(bytes: &[u8]) -> (i64, &[u8]) {
    match bytes.split_first() {
        Some((&REV_TAG, rest)) => {
            let rev = rest
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, i64::from_be_bytes);
            (rev, rest.get(8..).unwrap_or_default())
        }
        _ => (0, bytes),
    }
}

/// The bytes of a session record as etcd keeps it: `session_codec::encode_keyed` (it names its
/// session); `None` when the key is too long to encode.
pub(crate) fn value_of(session: &str, rec: &Record) -> Option<Vec<u8>> {
    session_codec::encode_keyed(session.as_bytes(), &rec.state, &rec.chain, &rec.extra)
}

/// Decode a value etcd holds for `session`: `None` when it does not decode or names another
/// session (the caller treats the session as missing).
pub(crate) fn decode_value(
    session: &str,
    bytes: &[u8],
) -> Option<(SessionState, ChainHead, SessionExtra)> {
    let (owner, body) = session_codec::split_keyed(bytes).ok()?;
    if owner != session.as_bytes() {
        return None;
    }
    session_codec::decode(body).ok()
}

/// The shared-data key of a slot.
pub fn shared_key(slot: u32) -> String {
    format!("portcullis/s/{slot:x}")
}

/// Where sessions live: the slot count and the salt of the slot hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    salt: [u8; 32],
    slots: u32,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The salt stays out of logs.
        f.debug_struct("Layout")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Layout {
    /// The layout for `slots` slots (at least 1) with the salt SHA-256("portcullis slots\0" ‖
    /// `secret_seed`), where `secret_seed` is the receipt signing key's secret seed.
    pub fn new(secret_seed: &[u8; 32], slots: u32) -> Layout {
        let mut h = Sha256::new();
        h.update(b"portcullis slots\0");
        h.update(secret_seed);
        Layout {
            salt: h.finalize().into(),
            slots: slots.max(1),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.extend_from_slice(LAYOUT_MAGIC);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.slots.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Layout> {
        let rest = bytes.strip_prefix(LAYOUT_MAGIC.as_slice())?;
        let salt = <[u8; 32]>::try_from(rest.get(..32)?).ok()?;
        let slots = u32::from_be_bytes(<[u8; 4]>::try_from(rest.get(32..)?).ok()?);
        (slots > 0).then_some(Layout { salt, slots })
    }

    /// The home slot of a session key.
    fn home(&self, session: &str) -> u64 {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(session.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
        u64::from_be_bytes(first)
            .checked_rem(u64::from(self.slots))
            .unwrap_or(0)
    }

    /// The principal slots (of `slots`) the principal `id` may live in, in probe order: the same
    /// salt as sessions, domain-separated, so an agent cannot aim at another principal's slots
    /// either.
    pub fn principal_probes(&self, id: &str, slots: u32) -> Vec<u32> {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(b"principal\0");
        h.update(id.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
        let n = u64::from(slots.max(1));
        let home = u64::from_be_bytes(first).checked_rem(n).unwrap_or(0);
        (0..u64::from(PROBES.min(slots.max(1))))
            .filter_map(|i| u32::try_from(home.wrapping_add(i).checked_rem(n)?).ok())
            .collect()
    }

    /// The slots a session may live in, in probe order (distinct, at most [`PROBES`]).
    pub fn probes(&self, session: &str) -> Vec<u32> {
        let home = self.home(session);
        let slots = u64::from(self.slots);
        (0..u64::from(PROBES.min(self.slots)))
            .filter_map(|i| {
                let s = home.wrapping_add(i).checked_rem(slots)?;
                u32::try_from(s).ok()
            })
            .collect()
    }
}

/// Make `wanted` the layout of the process unless one is already in force, and return the one in
/// force (`None` when shared data cannot be read or written: every session is then `missing` and
/// cannot be saved, i.e. fail closed). A layout already in force that differs from `wanted` is
/// kept, with a warning: moving sessions between slots would forget them.
pub fn install_layout(host: &dyn Host, wanted: Layout) -> Option<Layout> {
    let installed = retry_cas(|| {
        let bytes = match host.get_shared_data(LAYOUT_KEY) {
            Ok((bytes, _)) => bytes,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("portcullis: cannot read the session slot layout: {}", e.0),
                );
                return Ok(None);
            }
        };
        let Some(bytes) = bytes else {
            host.set_shared_data(LAYOUT_KEY, &wanted.encode(), Some(EMPTY_SLOT_CAS))?;
            return Ok(Some(wanted));
        };
        let Some(current) = Layout::decode(&bytes) else {
            host.log(
                LogLevel::Error,
                "portcullis: the session slot layout in shared data is unreadable; sessions cannot be saved",
            );
            return Ok(None);
        };
        if current != wanted {
            host.log(
                LogLevel::Warn,
                &format!(
                    "portcullis: sessions stay in the slot layout already in force ({} slots{}); the configured one ({} slots) applies after Envoy restarts",
                    current.slots,
                    if current.salt == wanted.salt {
                        ""
                    } else {
                        ", salt from an earlier signing key"
                    },
                    wanted.slots
                ),
            );
        }
        Ok(Some(current))
    });
    installed.unwrap_or_else(|e| {
        host.log(
            LogLevel::Error,
            &format!("portcullis: cannot write the session slot layout: {e}"),
        );
        None
    })
}

fn layout(host: &dyn Host) -> Option<Layout> {
    match host.get_shared_data(LAYOUT_KEY) {
        Ok((Some(bytes), _)) => Layout::decode(&bytes),
        _ => None,
    }
}

/// The layout in force, as this configuration last read it. It never changes while Envoy runs
/// (the first configuration writes it, later ones keep it), so it is read from shared data once,
/// not on every session lookup; until a read succeeds, every lookup tries again.
#[derive(Debug, Default)]
pub(crate) struct LayoutCache(Cell<Option<Layout>>);

impl LayoutCache {
    /// Remember `in_force` (what [`install_layout`] returned).
    pub(crate) fn prime(&self, in_force: Layout) {
        self.0.set(Some(in_force));
    }

    /// The layout in force.
    pub(crate) fn get(&self, host: &dyn Host) -> Option<Layout> {
        if let Some(l) = self.0.get() {
            return Some(l);
        }
        let l = layout(host)?;
        self.0.set(Some(l));
        Some(l)
    }
}

/// A live session displaced from its slot by a new one: its final `session_end` receipt is due
/// once the new session's write succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Displaced {
    pub session: String,
    pub chain: ChainHead,
    /// Expired (idle past the ttl) or evicted.
    pub why: EndReason,
}

/// A session record as read.
#[derive(Clone, Debug, Default)]
pub(crate) struct Record {
    pub state: SessionState,
    pub chain: ChainHead,
    pub extra: SessionExtra,
    /// The compare-and-swap token of the slot as read (`None`: the slot was empty).
    pub cas: Option<u32>,
    /// Why the session ended on this read (`expired`), so the caller can log it.
    pub ended: Option<EndReason>,
    /// The slot this record is written to (`None`: no slot can be written, [`store`] fails).
    pub slot: Option<u32>,
    /// The live session this record replaces in its slot, if any.
    pub displaced: Option<Displaced>,
    /// With `state.sessions: etcd`: the `mod_revision` of the etcd value this record is a copy
    /// of (0: etcd has none this cache knows of).
    pub etcd_rev: i64,
}

/// Why a session ended (its `session_end` receipt and log line say it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// Idle for longer than `session.idle_ttl_s`.
    Expired,
    /// Pushed out by the per-worker cap or by a new session taking its slot.
    Evicted,
    /// The client ended it (an allowed MCP `DELETE` the server accepted).
    Deleted,
}

impl EndReason {
    /// The word logs use.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Evicted => "evicted",
            EndReason::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tombstone of a session: status missing, chain kept.
pub(crate) fn tombstone(started_ms: u64) -> SessionState {
    SessionState {
        status: SessionStatus::Missing,
        started_ms,
        ..SessionState::default()
    }
}

/// What a probe may offer a new session, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Empty,
    /// A tombstone, or a record of another session whose body is unreadable (its owner reads it as
    /// missing anyway).
    Dead,
    Expired,
    Live,
    /// Killed or tainted: evicted last.
    Sticky,
}

struct Candidate {
    rank: Rank,
    /// Probe order for empty slots, last activity otherwise.
    order: u64,
    slot: u32,
    cas: Option<u32>,
    displaced: Option<Displaced>,
}

/// What the probes of a session hold.
enum Scan {
    /// This session's record, in `slot`.
    Found {
        slot: u32,
        cas: Option<u32>,
        rev: i64,
        record: Box<Result<(SessionState, ChainHead, SessionExtra), session_codec::CodecError>>,
    },
    /// Not found. `unknown`: a probe whose owner cannot be told (`Some(slot, cas)` when it can be
    /// overwritten, `None` when it could not even be read); `best`: where a new session goes.
    Absent {
        unknown: Option<Option<(u32, Option<u32>)>>,
        best: Option<Candidate>,
    },
}

/// Who a new session belongs to: [`name_hash`](bundle::session::name_hash) of its principal, if
/// one is known. A live record of another principal is never offered to it.
pub(crate) type Owner = Option<bundle::session::NameHash>;

fn scan(
    host: &dyn Host,
    layout: &Layout,
    session: &str,
    now_ms: u64,
    idle_ttl_ms: u64,
    me: Owner,
) -> Scan {
    let mut unknown = None;
    let mut best: Option<Candidate> = None;
    for (i, slot) in layout.probes(session).into_iter().enumerate() {
        let key = shared_key(slot);
        let cand = match host.get_shared_data(&key) {
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("portcullis: cannot read session slot `{key}`: {}", e.0),
                );
                unknown = unknown.or(Some(None));
                continue;
            }
            Ok((None, cas)) => Candidate {
                rank: Rank::Empty,
                order: u64::try_from(i).unwrap_or(u64::MAX),
                slot,
                cas,
                displaced: None,
            },
            Ok((Some(bytes), cas)) => {
                let (rev, bytes) = split_rev(&bytes);
                let Ok((owner, body)) = session_codec::split_keyed(bytes) else {
                    if !matches!(unknown, Some(Some(_))) {
                        unknown = Some(Some((slot, cas)));
                    }
                    continue;
                };
                let decoded = session_codec::decode(body);
                if owner == session.as_bytes() {
                    return Scan::Found {
                        slot,
                        cas,
                        rev,
                        record: Box::new(decoded),
                    };
                }
                match classify(owner, decoded, slot, cas, now_ms, idle_ttl_ms, me) {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        if best
            .as_ref()
            .is_none_or(|b| (cand.rank, cand.order) < (b.rank, b.order))
        {
            best = Some(cand);
        }
    }
    Scan::Absent { unknown, best }
}

/// What another session's record in a probe offers a new session of principal `me`: nothing
/// when it is a live session of another principal (one principal's sessions never displace
/// another's).
fn classify(
    owner: &[u8],
    decoded: Result<(SessionState, ChainHead, SessionExtra), session_codec::CodecError>,
    slot: u32,
    cas: Option<u32>,
    now_ms: u64,
    idle_ttl_ms: u64,
    me: Owner,
) -> Option<Candidate> {
    let Ok((state, chain, extra)) = decoded else {
        return Some(Candidate {
            rank: Rank::Dead,
            order: 0,
            slot,
            cas,
            displaced: None,
        });
    };
    let order = extra.last_seen_ms;
    let idle = now_ms.saturating_sub(extra.last_seen_ms);
    let (rank, why) = if state.status == SessionStatus::Missing {
        (Rank::Dead, None)
    } else if idle > idle_ttl_ms {
        (Rank::Expired, Some(EndReason::Expired))
    } else if state.killed || !state.taints.is_empty() {
        (Rank::Sticky, Some(EndReason::Evicted))
    } else {
        (Rank::Live, Some(EndReason::Evicted))
    };
    let foreign = extra.owner.is_some_and(|o| me != Some(o));
    if matches!(rank, Rank::Live | Rank::Sticky) && foreign {
        return None;
    }
    Some(Candidate {
        rank,
        order,
        slot,
        cas,
        displaced: why.map(|why| Displaced {
            session: String::from_utf8_lossy(owner).into_owned(),
            chain,
            why,
        }),
    })
}

/// The record of a session found in its slot, expired on the spot when idle past the ttl.
fn found(
    host: &dyn Host,
    session: &str,
    (slot, cas, etcd_rev): (u32, Option<u32>, i64),
    record: Result<(SessionState, ChainHead, SessionExtra), session_codec::CodecError>,
    now_ms: u64,
    idle_ttl_ms: u64,
) -> Record {
    match record {
        Ok((state, chain, extra)) => {
            let idle = now_ms.saturating_sub(extra.last_seen_ms);
            if state.status != SessionStatus::Missing && idle > idle_ttl_ms {
                return Record {
                    state: tombstone(state.started_ms),
                    chain,
                    cas,
                    ended: Some(EndReason::Expired),
                    slot: Some(slot),
                    etcd_rev,
                    ..Record::default()
                };
            }
            Record {
                state,
                chain,
                extra,
                cas,
                slot: Some(slot),
                etcd_rev,
                ..Record::default()
            }
        }
        Err(e) => {
            host.log(
                LogLevel::Error,
                &format!("portcullis: session `{session}` record is unreadable ({e}); treating it as missing"),
            );
            Record {
                state: tombstone(now_ms),
                cas,
                slot: Some(slot),
                etcd_rev,
                ..Record::default()
            }
        }
    }
}

fn no_layout(host: &dyn Host, session: &str, now_ms: u64) -> Record {
    host.log(
        LogLevel::Error,
        &format!("portcullis: no session slot layout in shared data; session `{session}` is treated as missing and cannot be saved"),
    );
    Record {
        state: tombstone(now_ms),
        ..Record::default()
    }
}

/// Read a session, or find the slot a new one goes to. Not found: a new session, with the slot it
/// will be written to (and the live session it displaces, if any). A session that may be in a
/// slot that cannot be read (store error, a record that does not say whose it is) or whose record
/// does not decode is treated as missing: fail closed. An active record idle for longer than
/// `idle_ttl_ms` is expired on the spot (returned as a tombstone; the caller writes it).
#[cfg(test)]
pub(crate) fn load(host: &dyn Host, session: &str, now_ms: u64, idle_ttl_ms: u64) -> Record {
    load_in(host, layout(host), session, now_ms, idle_ttl_ms, None)
}

/// [`load`] with the layout in force (`None`: there is none; the session is missing), for a new
/// session of principal `me`.
pub(crate) fn load_in(
    host: &dyn Host,
    layout: Option<Layout>,
    session: &str,
    now_ms: u64,
    idle_ttl_ms: u64,
    me: Owner,
) -> Record {
    let Some(layout) = layout else {
        return no_layout(host, session, now_ms);
    };
    match scan(host, &layout, session, now_ms, idle_ttl_ms, me) {
        Scan::Found {
            slot,
            cas,
            rev,
            record,
        } => {
            let record = *record;
            found(host, session, (slot, cas, rev), record, now_ms, idle_ttl_ms)
        }
        Scan::Absent {
            unknown: Some(writable),
            ..
        } => {
            host.log(
                LogLevel::Error,
                &format!("portcullis: a slot session `{session}` may live in is unreadable; treating the session as missing"),
            );
            Record {
                state: tombstone(now_ms),
                slot: writable.map(|(slot, _)| slot),
                cas: writable.and_then(|(_, cas)| cas),
                ..Record::default()
            }
        }
        Scan::Absent {
            unknown: None,
            best: Some(c),
        } => Record {
            state: SessionState::new(now_ms),
            cas: c.cas,
            slot: Some(c.slot),
            displaced: c.displaced,
            ..Record::default()
        },
        Scan::Absent {
            unknown: None,
            best: None,
        } => {
            // Every probe holds a live session of another principal: a new session, with no
            // slot it may take (saving it fails; the decision fails closed).
            host.log(
                LogLevel::Warn,
                &format!(
                    "portcullis: every slot session `{session}` may take holds another \
                     principal's live session; it cannot be saved"
                ),
            );
            Record {
                state: SessionState::new(now_ms),
                ..Record::default()
            }
        }
    }
}

/// Read a session that has a record, without choosing a slot for a new one (for ending and
/// checkpointing sessions this worker served: one displaced since has nothing left to do).
/// `None` when no probe holds the session.
#[cfg(test)]
pub(crate) fn find(
    host: &dyn Host,
    session: &str,
    now_ms: u64,
    idle_ttl_ms: u64,
) -> Option<Record> {
    find_in(host, layout(host), session, now_ms, idle_ttl_ms)
}

/// [`find`] with the layout in force.
pub(crate) fn find_in(
    host: &dyn Host,
    layout: Option<Layout>,
    session: &str,
    now_ms: u64,
    idle_ttl_ms: u64,
) -> Option<Record> {
    let layout = layout?;
    match scan(host, &layout, session, now_ms, idle_ttl_ms, None) {
        Scan::Found {
            slot,
            cas,
            rev,
            record,
        } => {
            let record = *record;
            Some(found(
                host,
                session,
                (slot, cas, rev),
                record,
                now_ms,
                idle_ttl_ms,
            ))
        }
        Scan::Absent { .. } => None,
    }
}

/// The shared-data key of the slot that holds a session's record, if one does (for tests and
/// tools).
pub fn slot_key_of(host: &dyn Host, session: &str) -> Option<String> {
    let layout = layout(host)?;
    layout.probes(session).into_iter().find_map(|slot| {
        let key = shared_key(slot);
        let (bytes, _) = host.get_shared_data(&key).ok()?;
        let bytes = bytes?;
        let (owner, _) = session_codec::split_keyed(split_rev(&bytes).1).ok()?;
        (owner == session.as_bytes()).then_some(key)
    })
}

/// Write a session record into its slot with the token the slot was read with.
pub(crate) fn store(host: &dyn Host, session: &str, rec: &Record) -> Result<(), SharedDataError> {
    let Some(slot) = rec.slot else {
        return Err(SharedDataError::Other(
            "no session slot can be written".to_owned(),
        ));
    };
    let mut bytes = value_of(session, rec)
        .ok_or_else(|| SharedDataError::Other("the session key is too long".to_owned()))?;
    if rec.etcd_rev != 0 {
        let mut tagged = Vec::with_capacity(bytes.len().saturating_add(9));
        tagged.push(REV_TAG);
        tagged.extend_from_slice(&rec.etcd_rev.to_be_bytes());
        tagged.append(&mut bytes);
        bytes = tagged;
    }
    host.set_shared_data(
        &shared_key(slot),
        &bytes,
        Some(rec.cas.unwrap_or(EMPTY_SLOT_CAS)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    const TTL: u64 = 60_000;

    use super::super::active_for_tests as active;

    fn host_with(slots: u32) -> (MockHost, Layout) {
        let h = MockHost::new(1000);
        let l = install_layout(&h, Layout::new(&[7; 32], slots)).unwrap();
        (h, l)
    }

    /// Record `state` for `session` as seen at `seen` (a new session takes its slot).
    fn put(h: &MockHost, session: &str, state: SessionState, seen: u64) -> Record {
        let mut rec = load(h, session, seen, TTL);
        rec.state = state;
        rec.extra.last_seen_ms = seen;
        store(h, session, &rec).unwrap();
        rec
    }

    /// `n` session keys that share one home slot.
    fn colliding(l: &Layout, n: usize) -> Vec<String> {
        let home = l.home("c0");
        (0..)
            .map(|i| format!("c{i}"))
            .filter(|k| l.home(k) == home)
            .take(n)
            .collect()
    }

    fn slot_keys(h: &MockHost) -> usize {
        h.state()
            .shared
            .keys()
            .filter(|k| k.starts_with("portcullis/s/"))
            .count()
    }

    #[test]
    fn new_then_stored_then_read_back() {
        let (h, _) = host_with(64);
        let r = load(&h, "s1", 1000, TTL);
        assert_eq!(r.state.status, SessionStatus::New);
        assert_eq!(r.cas, None);
        assert!(r.slot.is_some() && r.displaced.is_none());
        let rec = Record {
            state: active(1000),
            extra: SessionExtra {
                last_seen_ms: 1000,
                ..SessionExtra::default()
            },
            ..r
        };
        store(&h, "s1", &rec).unwrap();
        let back = load(&h, "s1", 2000, TTL);
        assert_eq!(back.state.status, SessionStatus::Active);
        assert_eq!(back.state.actions, 3);
        assert_eq!(back.slot, rec.slot);
        assert!(back.cas.is_some());
        assert_eq!(slot_key_of(&h, "s1"), Some(shared_key(back.slot.unwrap())));
        // a stale token loses
        store(&h, "s1", &back).unwrap();
        assert_eq!(store(&h, "s1", &back), Err(SharedDataError::CasMismatch));
    }

    #[test]
    fn a_cached_etcd_revision_is_kept_beside_the_record_and_values_name_their_session() {
        let (h, _) = host_with(64);
        let r = load(&h, "s1", 1000, TTL);
        let rec = Record {
            state: active(1000),
            etcd_rev: 0x0102_0304_0506,
            ..r
        };
        store(&h, "s1", &rec).unwrap();
        let key = slot_key_of(&h, "s1").unwrap();
        let raw = h.state().shared.get(&key).unwrap().0.clone();
        assert_eq!(raw[0], REV_TAG);
        let back = load(&h, "s1", 2000, TTL);
        assert_eq!(back.etcd_rev, 0x0102_0304_0506);
        assert_eq!(back.state.actions, 3);
        // Revision 0 writes the plain record, as the local mode does.
        store(
            &h,
            "s1",
            &Record {
                etcd_rev: 0,
                ..back
            },
        )
        .unwrap();
        assert_eq!(h.state().shared.get(&key).unwrap().0[0], b'K');
        assert_eq!(load(&h, "s1", 2000, TTL).etcd_rev, 0);
        // A value decodes only for the session it names; garbage is none.
        let v = value_of("s1", &rec).unwrap();
        assert_eq!(decode_value("s1", &v).unwrap().0.actions, 3);
        assert!(decode_value("s2", &v).is_none());
        assert!(decode_value("s1", b"garbage").is_none());
        assert!(decode_value("s1", &v[..v.len() - 1]).is_none());
        // A truncated revision prefix reads as revision 0 and the session stays unreadable.
        assert_eq!(split_rev(&[REV_TAG, 1, 2]), (0, &[][..]));
    }

    #[test]
    fn idle_session_expires_to_a_tombstone() {
        let (h, _) = host_with(64);
        put(&h, "s", active(0), 0);
        let r = load(&h, "s", 61_000, TTL);
        assert_eq!(r.state.status, SessionStatus::Missing);
        assert_eq!(r.ended, Some(EndReason::Expired));
        assert_eq!(r.state.actions, 0);
        // written back, the tombstone stays the session's: still missing, not new
        store(&h, "s", &r).unwrap();
        let again = load(&h, "s", 200_000, TTL);
        assert_eq!(again.state.status, SessionStatus::Missing);
        assert_eq!(again.ended, None);
        assert_eq!(again.slot, r.slot);
    }

    #[test]
    fn an_unreadable_slot_makes_the_session_missing_never_new() {
        let (h, l) = host_with(64);
        let home = l.probes("s")[0];
        h.set_shared_data(&shared_key(home), b"\x07garbage", None)
            .unwrap();
        let r = load(&h, "s", 0, TTL);
        assert_eq!(r.state.status, SessionStatus::Missing);
        assert_eq!(r.slot, Some(home), "the unreadable slot is overwritten");
        assert!(h.state().logs.iter().any(|(_, l)| l.contains("unreadable")));
        store(&h, "s", &r).unwrap();
        assert_eq!(load(&h, "s", 0, TTL).state.status, SessionStatus::Missing);

        // the session's own record with a damaged body: missing too
        let (h, _) = host_with(64);
        let rec = put(&h, "t", active(0), 0);
        let key = shared_key(rec.slot.unwrap());
        let mut bytes = h.state().shared.get(&key).unwrap().0.clone();
        bytes.truncate(bytes.len() - 2);
        h.set_shared_data(&key, &bytes, None).unwrap();
        let r = load(&h, "t", 0, TTL);
        assert_eq!(r.state.status, SessionStatus::Missing);
        assert_eq!(r.state.actions, 0);

        // an unreadable slot before the session's own slot does not hide it
        let (h, l) = host_with(64);
        let keys = colliding(&l, 2);
        put(&h, &keys[0], active(0), 0);
        put(&h, &keys[1], active(0), 0);
        let home = shared_key(l.probes(&keys[1])[0]);
        h.set_shared_data(&home, b"junk", None).unwrap();
        let r = load(&h, &keys[1], 0, TTL);
        assert_eq!(r.state.status, SessionStatus::Active);
        assert_eq!(r.state.actions, 3);
    }

    #[test]
    fn colliding_sessions_probe_consecutive_slots_and_keep_their_own_state() {
        let (h, l) = host_with(64);
        let keys = colliding(&l, 5);
        let probes = l.probes(&keys[0]);
        for (i, k) in keys.iter().take(4).enumerate() {
            let mut s = active(0);
            s.actions = u32::try_from(i).unwrap() + 10;
            let rec = put(&h, k, s, 100 + u64::try_from(i).unwrap());
            assert_eq!(rec.slot, Some(probes[i]), "{k} takes the next free probe");
        }
        for (i, k) in keys.iter().take(4).enumerate() {
            let r = load(&h, k, 200, TTL);
            assert_eq!(r.state.actions, u32::try_from(i).unwrap() + 10, "{k}");
            assert_eq!(r.slot, Some(probes[i]));
        }
        // a fifth colliding session: every probe is live, the least recently seen one goes
        let r = load(&h, &keys[4], 200, TTL);
        assert_eq!(
            r.state,
            SessionState::new(200),
            "nothing of another session leaks"
        );
        assert_eq!(r.slot, Some(probes[0]));
        let d = r.displaced.clone().unwrap();
        assert_eq!(
            (d.session.as_str(), d.why),
            (keys[0].as_str(), EndReason::Evicted)
        );
        let mut rec = r;
        rec.state = active(200);
        rec.extra.last_seen_ms = 200;
        store(&h, &keys[4], &rec).unwrap();
        // the displaced session's id is now a new session; the others are untouched
        let back = load(&h, &keys[0], 300, TTL);
        assert_eq!(back.state.status, SessionStatus::New);
        assert_eq!(back.state.actions, 0);
        assert_eq!(load(&h, &keys[2], 300, TTL).state.actions, 12);
        assert_eq!(slot_keys(&h), 4);
    }

    #[test]
    fn a_new_session_takes_empty_then_oldest_tombstone_then_expired_then_lru_plain_then_sticky() {
        // 4 slots: every session probes all of them
        let (h, _) = host_with(4);
        let mut killed = active(0);
        killed.killed = true;
        put(&h, "a", active(0), 10);
        put(&h, "b", killed, 5);
        let c_slot = put(&h, "c", tombstone(0), 30).slot;
        let r = load(&h, "x", 1000, TTL);
        assert_eq!(r.cas, None, "an empty slot comes first");
        let d_slot = put(&h, "d", tombstone(0), 20).slot;

        let r = load(&h, "n1", 1000, TTL);
        assert_eq!(r.slot, d_slot, "the oldest tombstone");
        assert!(r.displaced.is_none(), "a tombstone has already ended");
        put(&h, "n1", active(1000), 1000);
        let r = load(&h, "n2", 1000, TTL);
        assert_eq!(r.slot, c_slot, "then the next oldest");
        put(&h, "n2", active(1000), 1000);
        // now: a (plain, seen 10), b (killed, seen 5), n1, n2 (seen 1000)

        let b_slot = load(&h, "b", 1000, TTL).slot;
        let a_slot = load(&h, "a", 1000, TTL).slot;
        // b idle 995 ms > ttl 992: expired beats every live one, even though b is killed
        let r = load(&h, "n3", 1000, 992);
        assert_eq!(r.slot, b_slot);
        assert_eq!(r.displaced.as_ref().unwrap().why, EndReason::Expired);
        // nothing idle: the least recently seen plain session, not the older killed one
        let r = load(&h, "n3", 1000, TTL);
        assert_eq!(r.slot, a_slot);
        let d = r.displaced.unwrap();
        assert_eq!((d.session.as_str(), d.why), ("a", EndReason::Evicted));
        // only sticky sessions left to take: the least recently seen of them
        let mut tainted = active(0);
        tainted.taints = vec![bundle::session::name_hash("secret")];
        let (h, _) = host_with(2);
        put(&h, "k1", killed_at(), 50);
        put(&h, "k2", tainted, 40);
        let r = load(&h, "n", 100, TTL);
        assert_eq!(r.displaced.unwrap().session, "k2");
    }

    fn killed_at() -> SessionState {
        let mut s = active(0);
        s.killed = true;
        s
    }

    #[test]
    fn one_slot_shared_by_two_sessions_never_leaks_state() {
        let (h, _) = host_with(1);
        let mut a = active(0);
        a.killed = true;
        a.actions = 7;
        a.intent = Some("triage".into());
        put(&h, "a", a.clone(), 0);
        let rb = load(&h, "b", 10, TTL);
        assert_eq!(rb.state, SessionState::new(10));
        assert_eq!(rb.extra, SessionExtra::default());
        assert_eq!(rb.chain, ChainHead::default());
        assert_eq!(rb.displaced.as_ref().unwrap().session, "a");
        put(&h, "b", active(10), 10);
        let ra = load(&h, "a", 20, TTL);
        assert_eq!(ra.state, SessionState::new(20), "b's record is not a's");
        assert!(!ra.state.killed);
        assert_eq!(ra.displaced.unwrap().session, "b");
        // the kill of `a` is gone with its slot: documented (same as the agent opening a new
        // session); while its record existed, it was read
        assert_eq!(slot_keys(&h), 1);
    }

    #[test]
    fn two_workers_racing_for_an_empty_slot_cannot_both_win() {
        let (h, _) = host_with(1);
        // different sessions, one slot
        let wa = load(&h, "a", 0, TTL);
        let wb = load(&h, "b", 0, TTL);
        assert_eq!((wa.cas, wb.cas), (None, None));
        store(
            &h,
            "a",
            &Record {
                state: active(0),
                ..wa
            },
        )
        .unwrap();
        assert_eq!(
            store(
                &h,
                "b",
                &Record {
                    state: active(0),
                    ..wb
                }
            ),
            Err(SharedDataError::CasMismatch)
        );
        let wb = load(&h, "b", 0, TTL);
        assert_eq!(wb.displaced.unwrap().session, "a", "the retry sees a");

        // the same new session on two workers: the second one starts over from the first's record
        let (h, _) = host_with(8);
        let w1 = load(&h, "s", 0, TTL);
        let w2 = load(&h, "s", 0, TTL);
        let mut one = active(0);
        one.actions = 1;
        store(&h, "s", &Record { state: one, ..w1 }).unwrap();
        assert_eq!(
            store(
                &h,
                "s",
                &Record {
                    state: active(0),
                    ..w2
                }
            ),
            Err(SharedDataError::CasMismatch)
        );
        assert_eq!(load(&h, "s", 0, TTL).state.actions, 1);
    }

    #[test]
    fn the_key_space_is_bounded_by_the_slot_count() {
        let (h, _) = host_with(8);
        for i in 0..200u64 {
            put(&h, &format!("s{i}"), active(i), i);
            assert!(slot_keys(&h) <= 8);
        }
        assert_eq!(h.state().shared.len(), 9, "8 slots and the layout");
    }

    #[test]
    fn find_never_displaces() {
        let (h, _) = host_with(1);
        assert!(find(&h, "nobody", 0, TTL).is_none());
        assert_eq!(slot_keys(&h), 0, "find writes nothing");
        put(&h, "a", active(0), 0);
        assert!(find(&h, "b", 0, TTL).is_none());
        assert_eq!(load(&h, "a", 0, TTL).state.actions, 3, "a keeps its slot");
    }

    #[test]
    fn the_first_layout_stays_in_force_and_the_salt_depends_on_the_secret() {
        let h = MockHost::new(0);
        let first = Layout::new(&[1; 32], 8);
        assert_eq!(install_layout(&h, first), Some(first));
        assert_eq!(install_layout(&h, Layout::new(&[1; 32], 16)), Some(first));
        assert_eq!(install_layout(&h, Layout::new(&[2; 32], 8)), Some(first));
        let logs = h.state().logs.clone();
        assert!(logs.iter().any(|(_, l)| l.contains("(8 slots)")));
        assert!(
            logs.iter()
                .any(|(_, l)| l.contains("salt from an earlier signing key"))
        );
        // no salt in the debug form
        assert_eq!(format!("{first:?}"), "Layout { slots: 8, .. }");
        // another secret places sessions elsewhere
        let other = Layout::new(&[2; 32], 1024);
        let mine = Layout::new(&[1; 32], 1024);
        assert!((0..32).any(|i| {
            let k = format!("k{i}");
            other.home(&k) != mine.home(&k)
        }));
        // a damaged layout is refused, and then nothing can be saved
        let h = MockHost::new(0);
        h.set_shared_data(LAYOUT_KEY, b"PSL1short", None).unwrap();
        assert_eq!(install_layout(&h, first), None);
        let r = load(&h, "s", 0, TTL);
        assert_eq!(r.state.status, SessionStatus::Missing);
        assert!(matches!(store(&h, "s", &r), Err(SharedDataError::Other(_))));
    }

    #[test]
    fn probes_are_distinct_and_wrap() {
        let l = Layout::new(&[3; 32], 3);
        let p = l.probes("x");
        assert_eq!(p.len(), 3);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
        assert_eq!(Layout::new(&[3; 32], 1000).probes("x").len(), 4);
    }
}
