//! Session records on etcd (`state.sessions: etcd`, `docs/state.md`): the record a decision
//! was made on is compared by its `mod_revision`, and the record the decision made is put, in
//! one `Txn`. When another replica wrote the session first, the `Txn` answers with what etcd holds
//! instead, and the request is decided again on that (`stream/commit.rs`).
//!
//! The key of session `s` is `<prefix>s/<first 16 bytes of SHA-256(s), hex>`; the value is the
//! bytes a local slot holds for it (`session_codec::encode_keyed`, which names the session).

use sha2::{Digest, Sha256};

use super::{Etcd, Failed, KV, answer, proto};
use crate::host::Host;

/// The etcd key of session `session`.
pub(crate) fn session_key(prefix: &str, session: &str) -> Vec<u8> {
    let h = Sha256::digest(session.as_bytes());
    format!("{prefix}s/{}", hex::encode(h.get(..16).unwrap_or_default())).into_bytes()
}

/// Send the compare-and-swap of `session`: if its key is at revision `base_rev` (0: absent),
/// put `value` (`None`: put nothing, only learn whether `base_rev` is current). Returns the
/// call's token.
pub(crate) fn start(
    host: &dyn Host,
    etcd: &Etcd,
    session: &str,
    base_rev: i64,
    value: Option<&[u8]>,
) -> Result<u32, Failed> {
    let key = session_key(&etcd.cfg.prefix, session);
    let msg = proto::txn_at(&key, base_rev, value);
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
