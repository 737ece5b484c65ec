//! Principal records: what the filter keeps for the verified agent identity behind sessions
//! (`docs/containment.md`), in their own bounded shared-data slots, apart from session records.
//!
//! **Slots.** [`PRINCIPAL_SLOTS`] keys, `portcullis/p/<slot in hex>`; a principal lives in one
//! of [`super::store::PROBES`] consecutive slots from its home slot, a salted hash of its id
//! (the session layout's salt, domain-separated: [`Layout::principal_probes`]). A record names
//! its principal, and a record naming another is never read as this one's.
//!
//! **What survives.** A session ending, expiring or being evicted never touches a principal
//! record. A new principal takes an empty probe, else the least recently written record of an
//! *uncontained* principal (no quarantine, no taint: what it loses is counts and its session
//! list). A contained principal's record is never displaced; when every probe holds one, the new
//! principal's request cannot be decided with state and fails closed (`filter:session_store`).
//! A slot that cannot be read or decoded may hold this principal's quarantine, so it is never
//! overwritten either: the request fails closed.
//!
//! **Writes.** Compare-and-swap through [`super::retry_cas`], and only when the record changed:
//! an ALLOW on an uncontained principal's current run reads its record and writes nothing.

use bundle::session::{PrincipalView, Quarantine, SET_CAP};
use serde::{Deserialize, Serialize};

use super::store::{EMPTY_SLOT_CAS, Layout};
use super::{StoreFailed, retry_cas};
use crate::host::{Host, SharedDataError};
use crate::limits::PRINCIPAL_SLOTS;

/// The first bytes of a principal record (then its JSON).
const MAGIC: &[u8] = b"PPR1";

/// The shared-data key of a principal slot.
pub fn shared_key(slot: u32) -> String {
    format!("portcullis/p/{slot:x}")
}

/// One principal's record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrincipalRecord {
    /// The principal's id (SPIFFE id, JWT agent claim, node workload).
    pub id: String,
    /// What the policy sees of it (`principal.*`).
    pub view: PrincipalView,
    /// When the quarantine in force was imposed (ms since the Unix epoch); 0 when none.
    #[serde(default)]
    pub quarantined_ms: u64,
    /// The issue time (ms) of the last release applied; 0 when none.
    #[serde(default)]
    pub released_ms: u64,
    /// The session it acted in last: where its keyless requests go (`session.run: key`).
    #[serde(default)]
    pub run: Option<String>,
    /// Its sessions that have a record, oldest first, at most `session.max_per_principal`.
    #[serde(default)]
    pub sessions: Vec<String>,
    /// When the record was last written (ms).
    #[serde(default)]
    pub seen_ms: u64,
    /// Releases applied so far: a principal's own run is `run/<principal>` until its first
    /// release, `run/<principal>@<n>` after the n-th (its quarantined run stays killed).
    #[serde(default)]
    pub epoch: u32,
    /// With the etcd backend: the `mod_revision` of this principal's containment in etcd as
    /// last seen (0: etcd has none, as far as this record knows). Absent with the local backend.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub etcd_rev: i64,
    /// The signed release that started the current epoch (`policyc release`): with the etcd
    /// backend, other replicas accept a higher epoch only with a release that verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_token: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl PrincipalRecord {
    fn new(id: &str) -> PrincipalRecord {
        PrincipalRecord {
            id: id.to_owned(),
            view: PrincipalView {
                id: Some(id.to_owned()),
                ..PrincipalView::default()
            },
            ..PrincipalRecord::default()
        }
    }

    /// The name of its own run (see [`PrincipalRecord::epoch`]).
    pub(crate) fn own_run(&self, principal: &str) -> String {
        match self.epoch {
            0 => format!("{}{principal}", super::RUN_PREFIX),
            n => format!("{}{principal}@{n}", super::RUN_PREFIX),
        }
    }

    /// Lift a quarantine with a release issued at `issued_s`: only one imposed before it (to the
    /// second: a release names whole seconds), and only once (a later push of the same
    /// configuration changes nothing). Taints and denials go too; the principal starts a new run.
    /// Returns whether it was lifted.
    pub(crate) fn release(&mut self, issued_s: u64) -> bool {
        let issued_ms = issued_s.saturating_mul(1000);
        if !self.contained()
            || self.released_ms >= issued_ms
            || self.quarantined_ms / 1000 > issued_s
        {
            return false;
        }
        self.view.quarantine = Quarantine::None;
        self.view.taints.clear();
        self.view.revoked_tools.clear();
        self.view.revoked_classes.clear();
        self.view.denials = 0;
        self.released_ms = issued_ms;
        self.run = None;
        self.epoch = self.epoch.saturating_add(1);
        true
    }

    /// Quarantined or tainted: what must never be forgotten to make room.
    pub(crate) fn contained(&self) -> bool {
        self.view.quarantine != Quarantine::None
            || !self.view.taints.is_empty()
            || !self.view.revoked_tools.is_empty()
            || !self.view.revoked_classes.is_empty()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // Strings, numbers and lists only: serialization cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    fn decode(bytes: &[u8]) -> Option<PrincipalRecord> {
        serde_json::from_slice(bytes.strip_prefix(MAGIC)?).ok()
    }
}

/// Carry into `r` what one decision did to the principal as the policy saw it (`before` ->
/// `after`): new taints (a full set quarantines instead: a taint is never forgotten), a raised
/// quarantine (stamped `now`), more denials. Other decisions may have changed `r` since it was
/// read, so only the differences are applied. Returns whether `r` changed.
pub(crate) fn merge(
    r: &mut PrincipalRecord,
    before: &PrincipalView,
    after: &PrincipalView,
    now: u64,
) -> bool {
    let mut changed = false;
    let mut full = false;
    for t in after.taints.iter().filter(|t| !before.taints.contains(t)) {
        if r.view.taints.contains(t) {
            continue;
        }
        if r.view.taints.len() >= SET_CAP {
            r.view.quarantine_at_least(Quarantine::Full);
        } else {
            r.view.taints.push(*t);
        }
        changed = true;
    }
    if after.quarantine != before.quarantine {
        let was = r.view.quarantine;
        r.view.quarantine_at_least(after.quarantine);
        if r.view.quarantine != was {
            r.quarantined_ms = now;
            changed = true;
        }
    }
    for (mine, was, now) in [
        (
            &mut r.view.revoked_tools,
            &before.revoked_tools,
            &after.revoked_tools,
        ),
        (
            &mut r.view.revoked_classes,
            &before.revoked_classes,
            &after.revoked_classes,
        ),
    ] {
        for h in now.iter().filter(|h| !was.contains(h)) {
            if mine.contains(h) {
                continue;
            }
            if mine.len() >= SET_CAP {
                full = true;
            } else {
                mine.push(*h);
            }
            changed = true;
        }
    }
    if full {
        r.view.quarantine_at_least(Quarantine::Full);
    }
    let denials = after.denials.saturating_sub(before.denials);
    if denials > 0 {
        r.view.denials = r.view.denials.saturating_add(denials);
        changed = true;
    }
    changed
}

/// A principal record as read, with where it is written back.
struct Slot {
    rec: PrincipalRecord,
    slot: u32,
    /// `None`: the slot was empty (or is taken over from another principal's record).
    cas: Option<u32>,
}

/// Find `id`'s record, or the slot a new one goes to.
fn scan(host: &dyn Host, layout: &Layout, id: &str) -> Result<Slot, StoreFailed> {
    // (rank: 0 empty, 1 an uncontained principal's record; order), slot, cas
    let mut best: Option<((u8, u64), u32, Option<u32>)> = None;
    let mut consider = |rank: (u8, u64), slot: u32, cas: Option<u32>| {
        if best.as_ref().is_none_or(|(r, ..)| rank < *r) {
            best = Some((rank, slot, cas));
        }
    };
    for (i, slot) in layout
        .principal_probes(id, PRINCIPAL_SLOTS)
        .into_iter()
        .enumerate()
    {
        let key = shared_key(slot);
        match host.get_shared_data(&key) {
            Err(e) => {
                return Err(StoreFailed(format!(
                    "principal slot `{key}` cannot be read: {}",
                    e.0
                )));
            }
            Ok((None, cas)) => consider((0, u64::try_from(i).unwrap_or(u64::MAX)), slot, cas),
            Ok((Some(bytes), cas)) => match PrincipalRecord::decode(&bytes) {
                Some(rec) if rec.id == id => return Ok(Slot { rec, slot, cas }),
                Some(rec) if !rec.contained() => consider((1, rec.seen_ms), slot, cas),
                Some(_) => {}
                None => {
                    return Err(StoreFailed(format!("principal slot `{key}` is unreadable")));
                }
            },
        }
    }
    let (_, slot, cas) = best.ok_or_else(|| {
        StoreFailed(format!(
            "every slot principal `{id}` may take holds a contained principal"
        ))
    })?;
    // A displaced record is overwritten with the token it was read with.
    Ok(Slot {
        rec: PrincipalRecord::new(id),
        slot,
        cas,
    })
}

/// `id`'s record (a new, empty one when it has none).
pub(crate) fn read(
    host: &dyn Host,
    layout: Option<Layout>,
    id: &str,
) -> Result<PrincipalRecord, StoreFailed> {
    let layout = layout.ok_or_else(|| StoreFailed("no slot layout in shared data".into()))?;
    scan(host, &layout, id).map(|s| s.rec)
}

/// Read `id`'s record, let `change` edit it (`true`: it changed), and write it back with
/// compare-and-swap when it did. `change` may run several times. Returns the record as written
/// (or as read, when nothing changed).
pub(crate) fn update(
    host: &dyn Host,
    layout: Option<Layout>,
    id: &str,
    mut change: impl FnMut(&mut PrincipalRecord, u64) -> bool,
) -> Result<PrincipalRecord, StoreFailed> {
    let layout = layout.ok_or_else(|| StoreFailed("no slot layout in shared data".into()))?;
    retry_cas(|| {
        let now = host.now_ms();
        let Slot { mut rec, slot, cas } =
            scan(host, &layout, id).map_err(|e| SharedDataError::Other(e.0))?;
        if !change(&mut rec, now) {
            return Ok(rec);
        }
        rec.seen_ms = now;
        host.set_shared_data(
            &shared_key(slot),
            &rec.encode(),
            Some(cas.unwrap_or(EMPTY_SLOT_CAS)),
        )?;
        Ok(rec)
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;
    use crate::mock::MockHost;
    use bundle::session::name_hash;

    fn layout() -> Layout {
        Layout::new(&[7; 32], 64)
    }

    fn quarantine(host: &MockHost, id: &str) {
        update(host, Some(layout()), id, |r, now| {
            r.view.quarantine = Quarantine::Full;
            r.quarantined_ms = now;
            true
        })
        .unwrap();
    }

    #[test]
    fn a_record_round_trips_and_reading_writes_nothing() {
        let host = MockHost::new(1_000);
        let fresh = read(&host, Some(layout()), "spiffe://a").unwrap();
        assert_eq!(fresh.view.id.as_deref(), Some("spiffe://a"));
        assert!(
            host.state()
                .shared
                .keys()
                .all(|k| !k.starts_with("portcullis/p/"))
        );
        quarantine(&host, "spiffe://a");
        let back = read(&host, Some(layout()), "spiffe://a").unwrap();
        assert_eq!(back.view.quarantine, Quarantine::Full);
        assert_eq!(back.quarantined_ms, 1_000);
        // An unchanged update writes nothing.
        let before = host.state().shared.clone();
        update(&host, Some(layout()), "spiffe://a", |_, _| false).unwrap();
        assert_eq!(host.state().shared, before);
    }

    /// Principals that share every probe: a contained one is never displaced, an uncontained
    /// one is (least recently written first), and with no room left the request fails closed.
    #[test]
    fn contained_principals_are_never_displaced() {
        let host = MockHost::new(1_000);
        let l = layout();
        let home = |id: &str| l.principal_probes(id, PRINCIPAL_SLOTS);
        // Ids whose probes are exactly the first id's.
        let first = home("p0");
        let mut same: Vec<String> = (1..200_000)
            .map(|i| format!("p{i}"))
            .filter(|id| home(id) == first)
            .take(5)
            .collect();
        same.insert(0, "p0".into());
        assert_eq!(same.len(), 6, "enough colliding ids");
        for id in same.iter().take(4) {
            quarantine(&host, id);
            host.advance(1);
        }
        let err = update(&host, Some(l), &same[4], |r, _| {
            r.view.sessions += 1;
            true
        })
        .unwrap_err();
        assert!(err.0.contains("contained principal"), "{err}");
        for id in same.iter().take(4) {
            assert_eq!(
                read(&host, Some(l), id).unwrap().view.quarantine,
                Quarantine::Full,
                "{id} kept its quarantine"
            );
        }
        // Release one: an uncontained record is displaced by the next new principal.
        update(&host, Some(l), &same[1], |r, _| {
            r.view.quarantine = Quarantine::None;
            true
        })
        .unwrap();
        update(&host, Some(l), &same[4], |r, _| {
            r.view.taints.push(name_hash("x"));
            true
        })
        .unwrap();
        assert!(read(&host, Some(l), &same[4]).unwrap().contained());
        // `same[1]`'s record made the room: it is gone, and now every probe is contained.
        assert!(read(&host, Some(l), &same[1]).is_err());
    }

    #[test]
    fn an_unreadable_slot_fails_closed() {
        let host = MockHost::new(1_000);
        let l = layout();
        let slot = *l
            .principal_probes("spiffe://a", PRINCIPAL_SLOTS)
            .first()
            .unwrap();
        host.state()
            .shared
            .insert(shared_key(slot), (b"garbage".to_vec(), 1));
        assert!(read(&host, Some(l), "spiffe://a").is_err());
        assert!(read(&host, None, "spiffe://a").is_err());
    }
}
