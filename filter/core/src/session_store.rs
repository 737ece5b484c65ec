//! Session records in Envoy shared data, and this worker's bookkeeping of the sessions it served.
//!
//! One shared-data key per session, `portcullis/s/<session key>`, holding
//! `bundle::session_codec::encode(state, chain head, extra)`: the policy's view of the session,
//! the receipt chain head, used approval token ids and the last-seen time. Updates use
//! compare-and-swap (read, evaluate, write with the token read; on `CasMismatch` start over,
//! at most [`MAX_CAS_ATTEMPTS`] times).
//!
//! Expiry and eviction leave a **tombstone**: a record with status `missing` (and the chain head,
//! so the receipt chain continues), never a deleted key (proxy-wasm cannot delete shared data).
//! A later action of that session is evaluated with `SessionStatus::Missing`, i.e. by the pack's
//! `unknown_session` rule, and the tombstone is never turned back into an active session, so
//! losing state never grants more than the session had.
//!
//! Limits, documented in `docs/filter.md`: the session cap is enforced per worker (each worker
//! tracks the sessions it served, least recently used first, killed/tainted ones last), so a
//! process holds at most `workers x max_sessions` live records; tombstones (about 50 bytes plus
//! the key) are never reclaimed; two workers creating the same new session at the same instant
//! both succeed (Envoy's shared data does not compare-and-swap a key that does not exist yet) and
//! the later write wins.

use std::collections::BTreeMap;

use bundle::receipt::ChainHead;
use bundle::session::{SessionState, SessionStatus};
use bundle::session_codec::{self, SessionExtra};

use crate::host::{Host, LogLevel, SharedDataError};

/// How many times a read-evaluate-write cycle is tried before the failure mode applies.
pub const MAX_CAS_ATTEMPTS: usize = 8;

/// The shared-data key of a session.
pub fn shared_key(session: &str) -> String {
    format!("portcullis/s/{session}")
}

/// A session record as read.
#[derive(Clone, Debug, Default)]
pub(crate) struct Record {
    pub state: SessionState,
    pub chain: ChainHead,
    pub extra: SessionExtra,
    /// The compare-and-swap token of what was read (`None`: the key did not exist).
    pub cas: Option<u32>,
    /// Why the session ended on this read (`expired`), so the caller can log it.
    pub ended: Option<&'static str>,
}

/// The tombstone of a session: status missing, chain kept.
pub(crate) fn tombstone(started_ms: u64) -> SessionState {
    SessionState {
        status: SessionStatus::Missing,
        started_ms,
        ..SessionState::default()
    }
}

/// Read a session. A key that does not exist is a new session. A record that cannot be read
/// (store error, corrupt bytes) is treated as missing: fail closed. An active record idle for
/// longer than `idle_ttl_ms` is expired on the spot (returned as a tombstone; the caller writes it).
pub(crate) fn load(host: &dyn Host, session: &str, now_ms: u64, idle_ttl_ms: u64) -> Record {
    let key = shared_key(session);
    let (bytes, cas) = match host.get_shared_data(&key) {
        Ok(v) => v,
        Err(e) => {
            host.log(
                LogLevel::Error,
                &format!("portcullis: cannot read session `{session}`: {}", e.0),
            );
            return Record {
                state: tombstone(now_ms),
                ..Record::default()
            };
        }
    };
    let Some(bytes) = bytes else {
        return Record {
            state: SessionState::new(now_ms),
            cas,
            ..Record::default()
        };
    };
    match session_codec::decode(&bytes) {
        Ok((state, chain, extra)) => {
            let idle = now_ms.saturating_sub(extra.last_seen_ms);
            if state.status != SessionStatus::Missing && idle > idle_ttl_ms {
                return Record {
                    state: tombstone(state.started_ms),
                    chain,
                    extra: SessionExtra::default(),
                    cas,
                    ended: Some("expired"),
                };
            }
            Record {
                state,
                chain,
                extra,
                cas,
                ended: None,
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
                ..Record::default()
            }
        }
    }
}

/// Write a session record with the token it was read with.
pub(crate) fn store(host: &dyn Host, session: &str, rec: &Record) -> Result<(), SharedDataError> {
    let bytes = session_codec::encode(&rec.state, &rec.chain, &rec.extra);
    host.set_shared_data(&shared_key(session), &bytes, rec.cas)
}

/// Pin `intent` on a session the MCP server has just created. A legacy `initialize` carries no
/// session id (the server assigns it in the response), so the intent it declared cannot be pinned
/// while it is evaluated; the filter pins it when the response names the session. Only a session
/// with no record yet is written: if any action of the session was already recorded, its pinned
/// intent (or none) stands. Contention is not retried: another writer means the session exists.
pub(crate) fn pin_intent(host: &dyn Host, session: &str, intent: &str, idle_ttl_ms: u64) {
    let now = host.now_ms();
    let mut rec = load(host, session, now, idle_ttl_ms);
    if rec.state.status != SessionStatus::New {
        return;
    }
    rec.state.status = SessionStatus::Active;
    rec.state.intent = Some(intent.to_owned());
    rec.extra.last_seen_ms = now;
    if let Err(e) = store(host, session, &rec) {
        host.log(
            LogLevel::Warn,
            &format!("portcullis: intent `{intent}` not pinned on new session `{session}`: {e:?}"),
        );
    }
}

/// What this worker remembers about one session it served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tracked {
    pub last_seen_ms: u64,
    /// Killed or tainted: evicted last.
    pub sticky: bool,
    /// Receipts since the last signature, and when the oldest of them was sealed.
    pub unsigned: u32,
    pub oldest_unsigned_ms: u64,
}

/// The sessions this worker served, for the cap, expiry and checkpoints.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    entries: BTreeMap<String, Tracked>,
}

impl Tracker {
    /// Note that a session was just served.
    pub fn touch(&mut self, session: &str, now_ms: u64, state: &SessionState, chain: &ChainHead) {
        let t = Tracked {
            last_seen_ms: now_ms,
            sticky: state.killed || !state.taints.is_empty(),
            unsigned: chain.unsigned,
            oldest_unsigned_ms: chain.oldest_unsigned_ms,
        };
        if state.status == SessionStatus::Missing && chain.unsigned == 0 {
            // Nothing left to evict or attest.
            self.entries.remove(session);
            return;
        }
        self.entries.insert(session.to_owned(), t);
    }

    /// Forget a session.
    pub fn forget(&mut self, session: &str) {
        self.entries.remove(session);
    }

    /// How many sessions are tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The session to evict when more than `cap` are tracked: the least recently used one that is
    /// neither killed nor tainted, else the least recently used overall; never `keep` (the
    /// session being served).
    pub fn victim(&self, cap: usize, keep: &str) -> Option<String> {
        if self.entries.len() <= cap {
            return None;
        }
        let lru = |sticky: Option<bool>| {
            self.entries
                .iter()
                .filter(|(k, _)| k.as_str() != keep)
                .filter(|(_, t)| sticky.is_none_or(|s| t.sticky == s))
                .min_by_key(|(_, t)| t.last_seen_ms)
                .map(|(k, _)| k.clone())
        };
        lru(Some(false)).or_else(|| lru(None))
    }

    /// Sessions idle for longer than `ttl_ms`.
    pub fn idle(&self, now_ms: u64, ttl_ms: u64) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, t)| now_ms.saturating_sub(t.last_seen_ms) > ttl_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Sessions whose oldest unsigned receipt is at least `max_unsigned_ms` old.
    pub fn checkpoint_due(&self, now_ms: u64, max_unsigned_ms: u64) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, t)| {
                t.unsigned > 0 && now_ms.saturating_sub(t.oldest_unsigned_ms) >= max_unsigned_ms
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// What is tracked for a session.
    #[cfg(test)]
    pub fn get(&self, session: &str) -> Option<Tracked> {
        self.entries.get(session).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    fn active(now: u64) -> SessionState {
        SessionState {
            status: SessionStatus::Active,
            started_ms: now,
            actions: 3,
            ..SessionState::default()
        }
    }

    #[test]
    fn new_then_stored_then_read_back() {
        let h = MockHost::new(1000);
        let r = load(&h, "s1", 1000, 60_000);
        assert_eq!(r.state.status, SessionStatus::New);
        assert_eq!(r.cas, None);
        let rec = Record {
            state: active(1000),
            extra: SessionExtra {
                last_seen_ms: 1000,
                ..SessionExtra::default()
            },
            ..r
        };
        store(&h, "s1", &rec).unwrap();
        let back = load(&h, "s1", 2000, 60_000);
        assert_eq!(back.state.status, SessionStatus::Active);
        assert_eq!(back.state.actions, 3);
        assert!(back.cas.is_some());
        // a stale token loses
        store(&h, "s1", &back).unwrap();
        assert_eq!(store(&h, "s1", &back), Err(SharedDataError::CasMismatch));
    }

    #[test]
    fn idle_session_expires_to_a_tombstone() {
        let h = MockHost::new(0);
        let rec = Record {
            state: active(0),
            extra: SessionExtra {
                last_seen_ms: 0,
                ..SessionExtra::default()
            },
            ..Record::default()
        };
        store(&h, "s", &rec).unwrap();
        let r = load(&h, "s", 61_000, 60_000);
        assert_eq!(r.state.status, SessionStatus::Missing);
        assert_eq!(r.ended, Some("expired"));
        assert_eq!(r.state.actions, 0);
    }

    #[test]
    fn corrupt_record_is_missing() {
        let h = MockHost::new(0);
        h.set_shared_data(&shared_key("s"), b"\x07garbage", None)
            .unwrap();
        let r = load(&h, "s", 0, 60_000);
        assert_eq!(r.state.status, SessionStatus::Missing);
        assert!(h.state().logs.iter().any(|(_, l)| l.contains("unreadable")));
    }

    #[test]
    fn victim_prefers_plain_lru_sessions() {
        let mut t = Tracker::default();
        let chain = ChainHead::default();
        let mut killed = active(0);
        killed.killed = true;
        t.touch("old-killed", 1, &killed, &chain);
        t.touch("mid", 2, &active(0), &chain);
        t.touch("new", 3, &active(0), &chain);
        assert_eq!(t.victim(3, "new"), None);
        assert_eq!(t.victim(2, "new").as_deref(), Some("mid"));
        // the session being served is never the victim, even when it is the only plain one
        assert_eq!(t.victim(2, "mid").as_deref(), Some("new"));
        t.forget("mid");
        t.forget("new");
        t.touch("x", 5, &killed, &chain);
        assert_eq!(t.victim(1, "x").as_deref(), Some("old-killed"));
        t.touch("plain", 6, &active(0), &chain);
        assert_eq!(t.victim(2, "plain").as_deref(), Some("old-killed"));
    }

    #[test]
    fn checkpoint_and_idle_lists() {
        let mut t = Tracker::default();
        let chain = ChainHead {
            seq: 2,
            unsigned: 2,
            oldest_unsigned_ms: 100,
            ..ChainHead::default()
        };
        t.touch("a", 100, &active(0), &chain);
        t.touch("b", 100, &active(0), &ChainHead::default());
        assert!(t.checkpoint_due(5000, 5000).is_empty());
        assert_eq!(t.checkpoint_due(5100, 5000), vec!["a".to_owned()]);
        assert_eq!(t.idle(70_101, 70_000).len(), 2);
        assert_eq!(t.get("a").unwrap().unsigned, 2);
    }
}
