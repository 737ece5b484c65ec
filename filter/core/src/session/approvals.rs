//! Approval tokens used outside a saved session. A session remembers the tokens used in it (its
//! record, atomically with the action); a request with no session key (or an unknown one) has no
//! record, so its tokens are claimed here instead: one shared-data key, `portcullis/approvals`,
//! holding the ids of used tokens that have not expired yet. A token is claimed before it
//! approves anything, so an identical retry with the same token is refused as `replayed` on any
//! worker of the process.
//!
//! Bounded: at most [`MAX_USED_APPROVALS`] live entries (a used token stays until its own expiry,
//! at most 24 h with `policyc approve`). When every entry is live, a new claim is refused
//! (`approval_store_full`) rather than forgetting a live one; when the store cannot be read or
//! written, the claim is refused (`approval_store_unavailable`). Both deny: fail closed.

use super::retry_cas;
use super::store::EMPTY_SLOT_CAS;
use crate::host::{Host, SharedDataError};

/// The shared-data key of the used-token set.
pub(crate) const USED_APPROVALS_KEY: &str = "portcullis/approvals";

/// Live entries the set holds at most (24 bytes each).
pub(crate) const MAX_USED_APPROVALS: usize = 1024;

const MAGIC: &[u8; 4] = b"PAU1";
const ENTRY: usize = 24;

/// Why a claim was refused; [`Refused::as_str`] is the `approval_error` the agent sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The token was used before.
    Replayed,
    /// Every entry is a live token.
    Full,
    /// Shared data could not be read or written.
    Unavailable,
}

impl Refused {
    /// The `approval_error` code.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Refused::Replayed => "replayed",
            Refused::Full => "approval_store_full",
            Refused::Unavailable => "approval_store_unavailable",
        }
    }

    /// The reason a denial gives.
    pub(crate) const fn reason(self) -> &'static str {
        match self {
            Refused::Replayed => "the approval token was already used",
            Refused::Full => "too many approval tokens are in use; retry when some have expired",
            Refused::Unavailable => "used approval tokens cannot be checked",
        }
    }
}

/// The entries of a stored set (`(nonce, expires_s)`); `None` when the bytes are not a set.
fn decode(bytes: &[u8]) -> Option<Vec<([u8; 16], u64)>> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    if rest.len().checked_rem(ENTRY)? != 0 {
        return None;
    }
    rest.chunks_exact(ENTRY)
        .map(|e| {
            let nonce = <[u8; 16]>::try_from(e.get(..16)?).ok()?;
            let exp = u64::from_be_bytes(<[u8; 8]>::try_from(e.get(16..)?).ok()?);
            Some((nonce, exp))
        })
        .collect()
}

fn encode(entries: &[([u8; 16], u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        MAGIC
            .len()
            .saturating_add(entries.len().saturating_mul(ENTRY)),
    );
    out.extend_from_slice(MAGIC);
    for (nonce, exp) in entries {
        out.extend_from_slice(nonce);
        out.extend_from_slice(&exp.to_be_bytes());
    }
    out
}

/// Claim the token `nonce` (valid until `expires_s`) at `now_s`: `Ok` when it was not used
/// before and is now recorded as used.
pub(crate) fn claim(
    host: &dyn Host,
    nonce: [u8; 16],
    expires_s: u64,
    now_s: u64,
) -> Result<(), Refused> {
    let outcome = retry_cas(|| {
        let (bytes, cas) = host
            .get_shared_data(USED_APPROVALS_KEY)
            .map_err(|e| SharedDataError::Other(e.0))?;
        let mut live = match &bytes {
            None => Vec::new(),
            Some(b) => match decode(b) {
                Some(entries) => entries,
                None => return Ok(Err(Refused::Unavailable)),
            },
        };
        live.retain(|(_, exp)| *exp > now_s);
        if live.iter().any(|(n, _)| *n == nonce) {
            return Ok(Err(Refused::Replayed));
        }
        if live.len() >= MAX_USED_APPROVALS {
            return Ok(Err(Refused::Full));
        }
        live.push((nonce, expires_s));
        let cas = if bytes.is_some() {
            cas
        } else {
            Some(EMPTY_SLOT_CAS)
        };
        host.set_shared_data(USED_APPROVALS_KEY, &encode(&live), cas)?;
        Ok(Ok(()))
    });
    outcome.unwrap_or(Err(Refused::Unavailable))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed unwrap or index is a failed test"
    )]

    use super::*;
    use crate::mock::MockHost;

    #[test]
    fn a_token_is_claimed_once_until_it_expires() {
        let h = MockHost::new(0);
        assert_eq!(claim(&h, [1; 16], 100, 10), Ok(()));
        assert_eq!(claim(&h, [1; 16], 100, 11), Err(Refused::Replayed));
        assert_eq!(claim(&h, [2; 16], 100, 11), Ok(()));
        // Once expired, the entry is dropped (the token itself no longer verifies by then).
        assert_eq!(claim(&h, [1; 16], 200, 100), Ok(()));
    }

    #[test]
    fn a_full_set_of_live_tokens_refuses_new_claims_and_frees_up_as_they_expire() {
        let h = MockHost::new(0);
        for i in 0..MAX_USED_APPROVALS {
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            assert_eq!(claim(&h, n, 50, 1), Ok(()));
        }
        assert_eq!(claim(&h, [9; 16], 60, 1), Err(Refused::Full));
        assert_eq!(claim(&h, [9; 16], 60, 50), Ok(()), "all expired at 50");
    }

    #[test]
    fn an_unreadable_set_fails_closed() {
        let h = MockHost::new(0);
        h.state()
            .shared
            .insert(USED_APPROVALS_KEY.to_owned(), (b"garbage".to_vec(), 1));
        assert_eq!(claim(&h, [1; 16], 100, 10), Err(Refused::Unavailable));
    }
}
