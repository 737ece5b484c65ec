//! Minted credentials cached in Envoy shared data, per (credential, principal, audience, scope),
//! until they expire less a skew. Bounded: [`CREDENTIAL_CACHE_SLOTS`] fixed slots
//! (`portcullis/cred/<slot>`), one entry each; a new entry hashing to a busy slot replaces it.
//! Shared data is process memory of this Envoy (every worker reads it), never logged or exported.
//! An entry unreadable or for another key is a miss: the credential is minted again.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::Host;
use crate::limits::{CREDENTIAL_CACHE_SLOTS, MAX_CREDENTIAL_TTL_S, MAX_MINTED_TOKEN_BYTES};

/// What a cache entry is looked up by: SHA-256 over the length-prefixed credential name,
/// principal, audience and scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of `name` minted for `principal` with `audience` and `scope`.
    pub(crate) fn new(name: &str, principal: &str, audience: &str, scope: &str) -> Self {
        let mut h = Sha256::new();
        for part in [name, principal, audience, scope] {
            h.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
            h.update(part.as_bytes());
        }
        CacheKey(h.finalize().into())
    }

    fn slot_key(&self) -> String {
        let mut b = [0u8; 4];
        if let Some(head) = self.0.get(..4) {
            b.copy_from_slice(head);
        }
        let slot = u32::from_le_bytes(b)
            .checked_rem(CREDENTIAL_CACHE_SLOTS)
            .unwrap_or(0);
        format!("portcullis/cred/{slot:x}")
    }
}

/// A cached credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    /// Lowercase hex of the [`CacheKey`].
    key: String,
    /// Used until this time (ms since the Unix epoch): its expiry less the skew.
    pub until_ms: u64,
    /// The token.
    pub token: String,
    /// The scope granted.
    pub scope: String,
}

/// The cached credential of `key`, if there is one still usable at `now_ms`.
pub(crate) fn get(host: &dyn Host, key: &CacheKey, now_ms: u64) -> Option<Entry> {
    let (value, _) = host.get_shared_data(&key.slot_key()).ok()?;
    let value = value?;
    if value.len() > MAX_MINTED_TOKEN_BYTES.saturating_mul(2) {
        return None;
    }
    let e: Entry = serde_json::from_slice(&value).ok()?;
    (e.key == hex::encode(key.0) && now_ms < e.until_ms).then_some(e)
}

/// Cache a credential minted at `now_ms` valid for `expires_in` seconds, used until
/// `skew_s` seconds before it expires (never longer than [`MAX_CREDENTIAL_TTL_S`]). One that
/// expires within the skew is not cached. A failed write only costs a later exchange.
pub(crate) fn put(
    host: &dyn Host,
    key: &CacheKey,
    now_ms: u64,
    expires_in: u64,
    skew_s: u64,
    token: &str,
    scope: &str,
) {
    let ttl_s = expires_in.min(MAX_CREDENTIAL_TTL_S);
    let Some(usable_s) = ttl_s.checked_sub(skew_s).filter(|s| *s > 0) else {
        return;
    };
    let e = Entry {
        key: hex::encode(key.0),
        until_ms: now_ms.saturating_add(usable_s.saturating_mul(1000)),
        token: token.to_owned(),
        scope: scope.to_owned(),
    };
    if let Ok(bytes) = serde_json::to_vec(&e) {
        let _ = host.set_shared_data(&key.slot_key(), &bytes, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    #[test]
    fn an_entry_is_used_until_expiry_less_the_skew_and_only_for_its_key() {
        let host = MockHost::new(1_000_000);
        let k = CacheKey::new("tracker", "agent-1", "tickets", "read");
        assert_eq!(get(&host, &k, 1_000_000), None);
        put(&host, &k, 1_000_000, 300, 30, "tok", "read");
        let e = get(&host, &k, 1_000_000).unwrap();
        assert_eq!((e.token.as_str(), e.scope.as_str()), ("tok", "read"));
        assert!(get(&host, &k, 1_000_000 + 269_999).is_some());
        assert_eq!(get(&host, &k, 1_000_000 + 270_000), None);
        // Another principal, audience or scope never reads it, even in the same slot.
        for other in [
            CacheKey::new("tracker", "agent-2", "tickets", "read"),
            CacheKey::new("tracker", "agent-1", "other", "read"),
            CacheKey::new("tracker", "agent-1", "tickets", "read write"),
            CacheKey::new("tracker", "agent-1tickets", "", "read"),
        ] {
            let mut same_slot = other;
            same_slot.0.get_mut(..4).unwrap().copy_from_slice(&k.0[..4]);
            assert_eq!(get(&host, &same_slot, 1_000_000), None);
        }
        // Expiring within the skew: not cached.
        let k2 = CacheKey::new("tracker", "agent-3", "tickets", "read");
        put(&host, &k2, 1_000_000, 30, 30, "tok", "read");
        assert_eq!(get(&host, &k2, 1_000_000), None);
        // A lifetime beyond the cap is cut to it.
        put(&host, &k2, 0, u64::MAX, 0, "tok", "read");
        assert!(get(&host, &k2, MAX_CREDENTIAL_TTL_S * 1000 - 1).is_some());
        assert_eq!(get(&host, &k2, MAX_CREDENTIAL_TTL_S * 1000), None);
    }

    #[test]
    fn the_cache_is_bounded_by_its_slots() {
        let host = MockHost::new(0);
        for i in 0..(CREDENTIAL_CACHE_SLOTS * 2) {
            let k = CacheKey::new("t", &format!("agent-{i}"), "a", "s");
            put(&host, &k, 0, 300, 0, "tok", "s");
        }
        let n = host
            .state()
            .shared
            .keys()
            .filter(|k| k.starts_with("portcullis/cred/"))
            .count();
        assert!(n <= CREDENTIAL_CACHE_SLOTS as usize, "{n}");
    }
}
