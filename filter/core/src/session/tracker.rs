//! This worker's bookkeeping of the sessions it served: for the per-worker cap (least recently
//! used first, killed or tainted last), idle expiry and checkpoints. Shared data holds the records
//! (`store.rs`); this only remembers which sessions to look at, and when.

use std::collections::BTreeMap;

use bundle::receipt::ChainHead;
use bundle::session::{SessionState, SessionStatus};

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

    /// Forget a session; whether it was tracked.
    pub fn forget(&mut self, session: &str) -> bool {
        self.entries.remove(session).is_some()
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

    /// Sessions whose oldest unsigned receipt is at least `max_unsigned_ms` old, the longest
    /// waiting first.
    pub fn checkpoint_due(&self, now_ms: u64, max_unsigned_ms: u64) -> Vec<String> {
        let mut due: Vec<(u64, &String)> = self
            .entries
            .iter()
            .filter(|(_, t)| {
                t.unsigned > 0 && now_ms.saturating_sub(t.oldest_unsigned_ms) >= max_unsigned_ms
            })
            .map(|(k, t)| (t.oldest_unsigned_ms, k))
            .collect();
        due.sort();
        due.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// What is tracked for a session.
    #[cfg(test)]
    pub fn get(&self, session: &str) -> Option<Tracked> {
        self.entries.get(session).copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    use super::super::active_for_tests as active;

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
        assert!(t.forget("mid"));
        assert!(t.forget("new"));
        assert!(!t.forget("new"));
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
