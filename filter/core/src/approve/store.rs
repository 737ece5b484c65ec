//! What the filter remembers for in-band approval, per MCP session: whether its client declared
//! URL-mode elicitation in its `initialize`, and the elicitations it was sent (each bound to an
//! action digest) so the retry of the same action fetches the token minted for it.
//!
//! Bounded like the other shared-data stores: [`INBAND_SLOTS`] keys `portcullis/inband/<slot>`
//! for the whole process, the slot chosen by a hash of the session key; a record names its
//! session, so a slot taken by another session reads as "nothing remembered" (the client then
//! gets today's `-32041` answer: no privilege is gained by losing a record). At most
//! [`MAX_PENDING_ELICITATIONS`] per session; the oldest goes first.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::{Host, SharedDataError};
use crate::limits::{INBAND_SLOTS, MAX_CAS_ATTEMPTS, MAX_PENDING_ELICITATIONS};

/// One elicitation sent for an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// Lowercase hex of the action digest.
    #[serde(rename = "d")]
    pub digest: String,
    /// The elicitation id (32 hex).
    #[serde(rename = "e")]
    pub id: String,
    /// Unix seconds after which it is forgotten (the step-up rule's timeout).
    #[serde(rename = "x")]
    pub expires_s: u64,
}

/// The record of one session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InbandRecord {
    /// The session key.
    #[serde(rename = "s")]
    pub session: String,
    /// The client declared `capabilities.elicitation.url` in `initialize`.
    #[serde(rename = "u")]
    pub url: bool,
    /// Elicitations sent, oldest first.
    #[serde(rename = "p", default)]
    pub pending: Vec<Pending>,
}

fn key_of(session: &str) -> String {
    let h = Sha256::digest(session.as_bytes());
    let mut four = [0u8; 4];
    for (d, s) in four.iter_mut().zip(h.iter()) {
        *d = *s;
    }
    let slot = u32::from_le_bytes(four)
        .checked_rem(INBAND_SLOTS)
        .unwrap_or(0);
    format!("portcullis/inband/{slot}")
}

/// The record of `session` with the slot's compare-and-swap token; an empty record when the slot
/// holds nothing or another session's. `None` when shared data cannot be read.
fn load(host: &dyn Host, session: &str) -> Option<(InbandRecord, Option<u32>)> {
    let (value, cas) = host.get_shared_data(&key_of(session)).ok()?;
    let rec = value
        .as_deref()
        .and_then(|v| serde_json::from_slice::<InbandRecord>(v).ok())
        .filter(|r| r.session == session)
        .unwrap_or_else(|| InbandRecord {
            session: session.to_owned(),
            ..InbandRecord::default()
        });
    Some((rec, cas))
}

/// What is remembered for `session` (empty when nothing is, or shared data cannot be read).
pub(crate) fn read(host: &dyn Host, session: &str) -> InbandRecord {
    load(host, session).map(|(r, _)| r).unwrap_or_default()
}

/// Change `session`'s record with `f` (read, change, compare-and-swap; bounded retries). Whether
/// it was written.
fn update(host: &dyn Host, session: &str, f: impl Fn(&mut InbandRecord)) -> bool {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Some((mut rec, cas)) = load(host, session) else {
            return false;
        };
        f(&mut rec);
        let Ok(bytes) = serde_json::to_vec(&rec) else {
            return false;
        };
        match host.set_shared_data(&key_of(session), &bytes, Some(cas.unwrap_or(0))) {
            Ok(()) => return true,
            Err(SharedDataError::CasMismatch) => {}
            Err(SharedDataError::Other(_)) => return false,
        }
    }
    false
}

/// The client of `session` declared URL-mode elicitation.
pub(crate) fn mark_capable(host: &dyn Host, session: &str) -> bool {
    update(host, session, |r| {
        r.url = true;
    })
}

/// Remember an elicitation sent in `session`; expired ones and the oldest beyond the cap go.
pub(crate) fn remember(host: &dyn Host, session: &str, p: &Pending, now_s: u64) -> bool {
    update(host, session, |r| {
        r.pending
            .retain(|q| q.expires_s > now_s && q.digest != p.digest && q.id != p.id);
        r.pending.push(p.clone());
        let over = r.pending.len().saturating_sub(MAX_PENDING_ELICITATIONS);
        r.pending.drain(..over);
    })
}

/// Forget elicitation `id` of `session` (its token was fetched, or the service forgot it).
pub(crate) fn forget(host: &dyn Host, session: &str, id: &str) -> bool {
    update(host, session, |r| r.pending.retain(|q| q.id != id))
}

impl InbandRecord {
    /// The live elicitation sent for `digest`, if any.
    pub(crate) fn pending_for(&self, digest: &str, now_s: u64) -> Option<&Pending> {
        self.pending
            .iter()
            .find(|p| p.digest == digest && p.expires_s > now_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    fn p(d: &str, id: &str, x: u64) -> Pending {
        Pending {
            digest: d.into(),
            id: id.into(),
            expires_s: x,
        }
    }

    #[test]
    fn capability_and_pending_are_per_session_and_bounded() {
        let host = MockHost::new(1_000);
        assert!(!read(&host, "s1").url);
        assert!(mark_capable(&host, "s1"));
        assert!(read(&host, "s1").url);
        assert!(!read(&host, "s2").url, "another session is not capable");
        for i in 0..(MAX_PENDING_ELICITATIONS + 2) {
            assert!(remember(
                &host,
                "s1",
                &p(&format!("d{i}"), &format!("e{i}"), 100),
                10
            ));
        }
        let r = read(&host, "s1");
        assert_eq!(r.pending.len(), MAX_PENDING_ELICITATIONS);
        assert!(r.pending_for("d0", 10).is_none(), "the oldest went first");
        let last = format!("d{}", MAX_PENDING_ELICITATIONS + 1);
        assert!(r.pending_for(&last, 10).is_some());
        assert!(r.pending_for(&last, 100).is_none(), "expired");
        let id = r.pending_for(&last, 10).unwrap().id.clone();
        assert!(forget(&host, "s1", &id));
        assert!(read(&host, "s1").pending_for(&last, 10).is_none());
        assert!(read(&host, "s1").url, "forgetting keeps the capability");
    }

    #[test]
    fn a_slot_holding_another_session_reads_as_nothing() {
        let host = MockHost::new(1_000);
        let other = InbandRecord {
            session: "other".into(),
            url: true,
            pending: vec![p("d", "e", 99)],
        };
        host.set_shared_data(&key_of("mine"), &serde_json::to_vec(&other).unwrap(), None)
            .unwrap();
        let r = read(&host, "mine");
        assert!(!r.url && r.pending.is_empty());
        host.set_shared_data(&key_of("mine"), b"not json", None)
            .unwrap();
        assert!(!read(&host, "mine").url, "a corrupt record is nothing");
    }
}
