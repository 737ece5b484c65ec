//! Session records on etcd (`state.sessions: etcd`, `docs/state.md`): the record a decision
//! was made on is compared by its `mod_revision`, and the record the decision made is put, in
//! one `Txn`. When another replica wrote the session first, the `Txn` answers with what etcd holds
//! instead, and the request is decided again on that (`stream/commit.rs`).
//!
//! The key of session `s` is `<prefix>s/<first 16 bytes of SHA-256(s), hex>`; the value is the
//! bytes a local slot holds for it (`session_codec::encode_keyed`, which names the session).
//!
//! **Leases.** Every record is put with a lease, so etcd forgets a session nobody wrote for a
//! while, as the local slots do. A worker grants one lease of twice the session idle time and
//! attaches it to every record it writes while at least the idle time plus a minute of it is
//! left (kept in shared data, [`LEASE_KEY`], for the process's workers); then it grants the next.
//! So a record outlives its last write by at least the idle time, and one grant serves many
//! writes: an acting action pays the second round trip about once per idle time, not each time.

use sha2::{Digest, Sha256};

use super::{Etcd, Failed, KV, LEASE, answer, proto};
use crate::host::Host;

/// The shared-data key of the lease session records are written with: its id and expiry (ms
/// since the epoch), 16 bytes big-endian.
pub(crate) const LEASE_KEY: &str = "portcullis/etcd/session-lease";

/// What is kept of the session lease beyond the idle time before a new one is granted (ms).
const LEASE_MARGIN_MS: u64 = 60_000;

/// The lease to write a session record with at `now_ms`, when the one in shared data has the
/// idle time plus a margin left; `None`: grant a new one first.
pub(crate) fn current_lease(host: &dyn Host, now_ms: u64, idle_ms: u64) -> Option<i64> {
    let (Some(v), _) = host.get_shared_data(LEASE_KEY).ok()? else {
        return None;
    };
    let id = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let expires = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
    let needed = now_ms
        .saturating_add(idle_ms)
        .saturating_add(LEASE_MARGIN_MS);
    (id != 0 && expires >= needed).then_some(id)
}

/// The TTL of a new session lease, in seconds: twice the idle time (at least two minutes).
pub(crate) fn lease_ttl_s(idle_ms: u64) -> u64 {
    idle_ms.saturating_mul(2).div_ceil(1000).max(120)
}

/// Ask etcd for a session lease of `ttl_s` seconds; returns the call's token.
pub(crate) fn grant_lease(host: &dyn Host, etcd: &Etcd, ttl_s: u64) -> Result<u32, Failed> {
    let msg = proto::lease_grant(i64::try_from(ttl_s).unwrap_or(i64::MAX));
    etcd.call(host, LEASE, "LeaseGrant", &msg.finish())
        .map_err(|e| Failed::Unavailable(format!("etcd cannot be called: {}", e.0)))
}

/// etcd's answer to [`grant_lease`]: the lease id, kept in shared data until `now_ms + ttl_s`.
pub(crate) fn lease_granted(
    host: &dyn Host,
    status: u32,
    size: usize,
    now_ms: u64,
    ttl_s: u64,
) -> Result<i64, Failed> {
    let body = answer(host, status, size).map_err(Failed::Unavailable)?;
    match proto::lease_grant_response(&body) {
        Some(Ok(id)) => {
            let expires = now_ms.saturating_add(ttl_s.saturating_mul(1000));
            let mut v = id.to_be_bytes().to_vec();
            v.extend_from_slice(&expires.to_be_bytes());
            // Any worker's lease serves: a lost race only means another one is kept.
            let _ = host.set_shared_data(LEASE_KEY, &v, None);
            Ok(id)
        }
        Some(Err(e)) => Err(Failed::Unavailable(format!("etcd refused a lease: {e}"))),
        None => Err(Failed::Unavailable(
            "etcd's answer to a lease grant is not one".to_owned(),
        )),
    }
}

/// The etcd key of session `session`.
pub(crate) fn session_key(prefix: &str, session: &str) -> Vec<u8> {
    let h = Sha256::digest(session.as_bytes());
    format!("{prefix}s/{}", hex::encode(h.get(..16).unwrap_or_default())).into_bytes()
}

/// Send the compare-and-swap of `session`: if its key is at revision `base_rev` (0: absent),
/// put `value` with `lease` (`None`: put nothing, only learn whether `base_rev` is current).
/// Returns the call's token.
pub(crate) fn start(
    host: &dyn Host,
    etcd: &Etcd,
    session: &str,
    base_rev: i64,
    value: Option<&[u8]>,
    lease: i64,
) -> Result<u32, Failed> {
    let key = session_key(&etcd.cfg.prefix, session);
    let msg = proto::txn_at(&key, base_rev, value, lease);
    etcd.call(host, KV, "Txn", &msg.finish())
        .map_err(|e| Failed::Unavailable(format!("etcd cannot be called: {}", e.0)))
}

/// What etcd answered to a session's compare-and-swap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The base revision was current (and the value, if any, is now etcd's): the store's
    /// revision after the `Txn`, which is the key's new `mod_revision` when something was put.
    Current(i64),
    /// Another writer was first: the key's `mod_revision` and value now (`0`, `None`: absent).
    Stale(i64, Option<Vec<u8>>),
    /// No answer that can be used.
    Failed(Failed),
}

/// Read the answer of the call (its gRPC `status` and message `size`).
pub(crate) fn read_answer(host: &dyn Host, status: u32, size: usize) -> Answer {
    let body = match answer(host, status, size) {
        Ok(b) => b,
        Err(why) => return Answer::Failed(Failed::Unavailable(why)),
    };
    match proto::txn_response(&body) {
        Some(t) if t.succeeded => Answer::Current(t.revision),
        Some(t) => match t.current {
            Some(kv) => Answer::Stale(kv.mod_revision, Some(kv.value)),
            None => Answer::Stale(0, None),
        },
        None => Answer::Failed(Failed::Unavailable("etcd's answer is not one".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_are_prefixed_hashed_and_apart_from_principals() {
        let k = session_key("/portcullis/", "mcp-1");
        assert!(k.starts_with(b"/portcullis/s/"));
        assert_eq!(k.len(), "/portcullis/s/".len() + 32);
        assert_ne!(k, session_key("/portcullis/", "mcp-2"));
        let (start, end) = super::super::principals_range("/portcullis/");
        assert!(
            !(k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice()),
            "the containment watch never reads session records"
        );
    }
}
