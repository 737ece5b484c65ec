//! Releases: an operator's signed lifting of a principal's quarantine.
//!
//! A release has no expiry: it lifts the quarantines of its principal imposed **before** its
//! `iat` (the filter compares), so replaying an old release never lifts a later quarantine. It
//! reaches the filter by a configuration push (plugin configuration list `releases`, verified
//! against `release_keys`), not from the agent.
//!
//! A release is a token in the envelope of [`crate::signed_token`] whose payload is the canonical
//! JSON of
//!
//! ```json
//! {"iat":<unix s>,"kid":"ed25519:<16 hex>","nonce":"<32 hex>","principal":"<id>",
//!  "reason":"<text>","v":1}
//! ```
//!
//! (`reason` is optional), signed over `"portcullis/release/v1\0" || payload`. The `nonce` is the
//! release id. Format details: `docs/containment.md`.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use crate::grant::MAX_PRINCIPAL_BYTES;
use crate::signed_token::{self, ClaimError, Kind};

/// Domain separator of release signatures.
pub const RELEASE_DOMAIN: &[u8] = b"portcullis/release/v1\0";
/// The longest release [`verify`] reads, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The longest `reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 256;

const KIND: Kind<ReleaseError> = Kind {
    domain: RELEASE_DOMAIN,
    max_bytes: MAX_TOKEN_BYTES,
    required: &["iat", "nonce", "principal"],
    optional: &["reason"],
    malformed: ReleaseError::Malformed,
    unknown_key: ReleaseError::UnknownKey,
    bad_signature: ReleaseError::BadSignature,
};

/// What a release says, before it is signed ([`mint`]'s input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseClaims {
    /// The principal whose quarantine is lifted, exactly as the filter names it.
    pub principal: String,
    /// Why (for receipts and the audit trail).
    pub reason: Option<String>,
    /// Issue time (unix seconds): quarantines imposed before it are lifted.
    pub issued_s: u64,
    /// Fresh randomness: the release id.
    pub nonce: [u8; 16],
}

impl ReleaseClaims {
    fn payload_text(&self, key: &SigningKey) -> String {
        let mut m = Map::new();
        m.insert("principal".into(), Value::from(self.principal.as_str()));
        m.insert("iat".into(), Value::from(self.issued_s));
        m.insert("nonce".into(), Value::from(hex::encode(self.nonce)));
        if let Some(reason) = &self.reason {
            m.insert("reason".into(), Value::from(reason.as_str()));
        }
        signed_token::payload_text(m, key)
    }

    /// Whether these claims, signed by `key`, make a release that [`verify`] reads: a non-empty
    /// principal of at most [`MAX_PRINCIPAL_BYTES`], a non-empty reason of at most
    /// [`MAX_REASON_BYTES`] when given, and the token within [`MAX_TOKEN_BYTES`].
    pub fn check(&self, key: &SigningKey) -> Result<(), ClaimError> {
        signed_token::check_text("principal", &self.principal, MAX_PRINCIPAL_BYTES)?;
        if let Some(reason) = &self.reason {
            signed_token::check_text("reason", reason, MAX_REASON_BYTES)?;
        }
        signed_token::check_len(&KIND, &self.payload_text(key))
    }
}

/// A verified release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The release id: lowercase hex of the nonce (what receipts record).
    pub release_id: String,
    /// The principal whose quarantine is lifted.
    pub principal: String,
    /// Issue time (unix seconds): it lifts quarantines imposed before this time.
    pub issued_s: u64,
    /// The operator's key id.
    pub key_id: String,
    /// The operator's reason, when given.
    pub reason: Option<String>,
}

/// Why a release was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// Not a release (shape, encoding, JSON, non-canonical payload, members, limits, too long).
    #[error("the release is malformed")]
    Malformed,
    /// Signed by a key that is not a configured release key.
    #[error("the release is signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the release's signature is not valid")]
    BadSignature,
    /// Issued in the future (beyond the allowed clock skew): it would lift quarantines not yet
    /// imposed.
    #[error("the release is not valid yet")]
    NotYetValid,
}

impl ReleaseError {
    /// A stable snake_case name for logs, receipts and configuration errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseError::Malformed => "malformed",
            ReleaseError::UnknownKey => "unknown_key",
            ReleaseError::BadSignature => "bad_signature",
            ReleaseError::NotYetValid => "not_yet_valid",
        }
    }
}

/// Sign `r` with the operator's `key`. Claims that [`ReleaseClaims::check`] refuses make a token
/// that [`verify`] refuses (as malformed).
pub fn mint(r: &ReleaseClaims, key: &SigningKey) -> String {
    signed_token::seal(RELEASE_DOMAIN, &r.payload_text(key), key)
}

fn claims(p: &signed_token::Payload) -> Option<Release> {
    Some(Release {
        release_id: hex::encode(p.nonce()?),
        principal: p.text("principal", MAX_PRINCIPAL_BYTES)?,
        issued_s: p.u64("iat")?,
        key_id: p.kid().to_owned(),
        reason: p.optional_text("reason", MAX_REASON_BYTES)?,
    })
}

/// Verify `token` as a release at `now_s` (unix seconds); `keys` are the configured operator keys
/// (`release_keys`).
///
/// Order of checks: shape, length, canonical payload, exact members and their limits
/// (`Malformed`), the key named by `kid` (`UnknownKey`), the signature (`BadSignature`), then `iat`
/// more than [`CLOCK_SKEW_S`](crate::signed_token::CLOCK_SKEW_S) ahead (`NotYetValid`). There is
/// no expiry; which quarantines it lifts is the filter's comparison with [`Release::issued_s`].
/// Never panics.
pub fn verify(token: &str, keys: &[VerifyingKey], now_s: u64) -> Result<Release, ReleaseError> {
    let r = signed_token::open(&KIND, token, claims, |kid| {
        signed_token::key_by_id(keys, kid)
    })?;
    if signed_token::issued_in_future(r.issued_s, now_s) {
        return Err(ReleaseError::NotYetValid);
    }
    Ok(r)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "test arithmetic on small constants"
)]
mod tests {
    use super::*;
    use crate::evidence::keys::{key_id, signing_key_from_seed};
    use crate::signed_token::testing;

    const NOW: u64 = 1_763_700_000;
    const P: &str = "spiffe://corp.example/ns/agents/sa/payroll-bot";

    fn claims() -> ReleaseClaims {
        ReleaseClaims {
            principal: P.into(),
            reason: Some("INC-2291: injected prompt cleaned up".into()),
            issued_s: NOW,
            nonce: [5; 16],
        }
    }

    fn key() -> SigningKey {
        signing_key_from_seed([31; 32])
    }

    fn keys() -> Vec<VerifyingKey> {
        vec![
            signing_key_from_seed([32; 32]).verifying_key(),
            key().verifying_key(),
        ]
    }

    #[test]
    fn round_trip() {
        let c = claims();
        assert_eq!(c.check(&key()), Ok(()));
        let r = verify(&mint(&c, &key()), &keys(), NOW).unwrap();
        assert_eq!(
            r,
            Release {
                release_id: "05".repeat(16),
                principal: P.into(),
                issued_s: NOW,
                key_id: key_id(&key().verifying_key()),
                reason: Some("INC-2291: injected prompt cleaned up".into()),
            }
        );
        // No expiry: a year later it still verifies.
        assert!(verify(&mint(&c, &key()), &keys(), NOW + 365 * 86_400).is_ok());
        let bare = ReleaseClaims {
            reason: None,
            ..claims()
        };
        let t = mint(&bare, &key());
        let (payload, _) = testing::split(&t);
        assert_eq!(
            payload,
            format!(
                "{{\"iat\":{NOW},\"kid\":\"{}\",\"nonce\":\"{}\",\"principal\":\"{P}\",\"v\":1}}",
                key_id(&key().verifying_key()),
                "05".repeat(16)
            )
        );
        assert_eq!(verify(&t, &keys(), NOW).unwrap().reason, None);
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let t = mint(&claims(), &key());
        let ks = keys();
        assert_eq!(verify(&t, &ks, NOW - 61), Err(ReleaseError::NotYetValid));
        assert!(verify(&t, &ks, NOW - 60).is_ok());
        assert_eq!(verify(&t, &ks[..1], NOW), Err(ReleaseError::UnknownKey));
        assert_eq!(
            verify(&testing::flip_signature(&t), &ks, NOW),
            Err(ReleaseError::BadSignature)
        );
        let (payload, sig) = testing::split(&t);
        let other = payload.replace(P, "spiffe://corp.example/ns/agents/sa/other");
        assert_eq!(
            verify(&testing::with_payload(&other, &sig), &ks, NOW),
            Err(ReleaseError::BadSignature)
        );
        let later = payload.replace(&format!("\"iat\":{NOW}"), &format!("\"iat\":{}", NOW + 1));
        assert_eq!(
            verify(&testing::with_payload(&later, &sig), &ks, NOW + 10),
            Err(ReleaseError::BadSignature)
        );
        // A grant's signature never makes a release.
        let as_grant = testing::resigned(crate::grant::GRANT_DOMAIN, &payload, &key());
        assert_eq!(verify(&as_grant, &ks, NOW), Err(ReleaseError::BadSignature));
        let names: Vec<_> = [
            ReleaseError::Malformed,
            ReleaseError::UnknownKey,
            ReleaseError::BadSignature,
            ReleaseError::NotYetValid,
        ]
        .into_iter()
        .map(ReleaseError::as_str)
        .collect();
        assert_eq!(
            names,
            ["malformed", "unknown_key", "bad_signature", "not_yet_valid"]
        );
    }

    #[test]
    fn malformed_payloads_and_garbage() {
        let ks = keys();
        let (payload, sig) = testing::split(&mint(&claims(), &key()));
        let cases = [
            payload.replacen(',', ", ", 1),
            payload.replacen("{", "{\"exp\":1,", 1),
            payload.replace(&format!("\"principal\":\"{P}\","), ""),
            payload.replace("\"v\":1", "\"v\":2"),
            payload.replace(P, ""),
            payload.replace("\"INC-2291: injected prompt cleaned up\"", "\"\""),
            payload.replace(
                "\"INC-2291: injected prompt cleaned up\"",
                &format!("\"{}\"", "r".repeat(MAX_REASON_BYTES + 1)),
            ),
            payload.replace("\"INC-2291: injected prompt cleaned up\"", "null"),
        ];
        for bad in cases {
            assert_ne!(bad, payload);
            let t = testing::resigned(RELEASE_DOMAIN, &bad, &key());
            assert_eq!(verify(&t, &ks, NOW), Err(ReleaseError::Malformed), "{bad}");
            assert_eq!(verify(&t, &[], NOW), Err(ReleaseError::Malformed), "{bad}");
        }
        let spaced = payload.replacen(',', ", ", 1);
        assert_eq!(
            verify(&testing::with_payload(&spaced, &sig), &ks, NOW),
            Err(ReleaseError::Malformed)
        );
        for t in ["", ".", "abc", "a.b.c", "e30.AAAA", &"A".repeat(5000)] {
            assert_eq!(verify(t, &ks, NOW), Err(ReleaseError::Malformed), "{t}");
        }
    }

    #[test]
    fn check_names_the_claim_that_cannot_be_minted() {
        let k = key();
        let mut c = claims();
        c.principal.clear();
        assert_eq!(c.check(&k), Err(ClaimError::Empty("principal")));
        let mut c = claims();
        c.reason = Some("x".repeat(MAX_REASON_BYTES + 1));
        assert_eq!(
            c.check(&k),
            Err(ClaimError::TooLong {
                claim: "reason",
                max: MAX_REASON_BYTES
            })
        );
        // The longest claims still fit in a token.
        let c = ReleaseClaims {
            principal: "p".repeat(MAX_PRINCIPAL_BYTES),
            reason: Some("\u{7}".repeat(MAX_REASON_BYTES)),
            ..claims()
        };
        assert_eq!(c.check(&k), Ok(()));
        assert!(verify(&mint(&c, &k), &keys(), NOW).is_ok());
    }
}
