//! Approval tokens: a human approver's signed, short-lived "yes" for one action (STEP_UP).
//!
//! A token is `base64url(payload) "." base64url(signature)` (no padding), where `payload` is the
//! canonical JSON (see [`crate::canonical`]) of
//!
//! ```json
//! {"digest":"<64 hex>","exp":<unix s>,"group":"<group>","iat":<unix s>,"kid":"ed25519:<16 hex>",
//!  "nonce":"<32 hex>","v":1}
//! ```
//!
//! and the signature is Ed25519 over `"portcullis/approval/v1\0" || payload`. The token is bound
//! to the action digest ([`crate::receipt::action_digest`]) and to an approver group; its `nonce`
//! is the token id the filter remembers to refuse a replay. Format details: `docs/approvals.md`.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use crate::signed_token::{self, Kind};

/// The header an agent retries a STEP_UP with, carrying the approval token.
pub const APPROVAL_HEADER: &str = "x-portcullis-approval";

/// Domain separator of approval signatures.
pub const APPROVAL_DOMAIN: &[u8] = b"portcullis/approval/v1\0";
/// The longest token [`verify`] reads, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// How far in the future `iat` may be (approver clock ahead of the proxy), in seconds.
pub use crate::signed_token::CLOCK_SKEW_S;

const KIND: Kind<ApprovalError> = Kind {
    domain: APPROVAL_DOMAIN,
    max_bytes: MAX_TOKEN_BYTES,
    required: &["digest", "exp", "group", "iat", "nonce"],
    optional: &[],
    malformed: ApprovalError::Malformed,
    unknown_key: ApprovalError::UnknownApprover,
    bad_signature: ApprovalError::BadSignature,
};

/// A verified approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The token id: lowercase hex of the nonce (what receipts record).
    pub token_id: String,
    /// The nonce bytes (what the session remembers to refuse a replay).
    pub nonce: [u8; 16],
    /// Approver group.
    pub group: String,
    /// The approver's key id.
    pub key_id: String,
    /// Issue time (unix seconds), so the filter can also enforce the policy's own maximum age
    /// (`StepUp::timeout_s`): accept only while `now < min(expires_s, issued_s + timeout_s)`.
    pub issued_s: u64,
    /// Expiry (unix seconds).
    pub expires_s: u64,
}

/// Why a token was refused. `Replayed` is never returned by [`verify`]: the filter returns it when
/// the token id was already used in the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Not a token (shape, encoding, JSON, non-canonical payload, too long).
    #[error("the approval token is malformed")]
    Malformed,
    /// The signature does not verify.
    #[error("the approval token's signature is not valid")]
    BadSignature,
    /// Signed by a key that is not a configured approver.
    #[error("the approval token is signed by an unknown approver")]
    UnknownApprover,
    /// Issued for another group, or by an approver who is not in the required group.
    #[error("the approval token is not from the required approver group")]
    WrongGroup,
    /// Past its expiry.
    #[error("the approval token has expired")]
    Expired,
    /// Issued in the future (beyond the allowed clock skew).
    #[error("the approval token is not valid yet")]
    NotYetValid,
    /// Approves a different action.
    #[error("the approval token is for a different action")]
    DigestMismatch,
    /// Already used in this session.
    #[error("the approval token was already used")]
    Replayed,
}

impl ApprovalError {
    /// A stable snake_case name for logs, receipts and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalError::Malformed => "malformed",
            ApprovalError::BadSignature => "bad_signature",
            ApprovalError::UnknownApprover => "unknown_approver",
            ApprovalError::WrongGroup => "wrong_group",
            ApprovalError::Expired => "expired",
            ApprovalError::NotYetValid => "not_yet_valid",
            ApprovalError::DigestMismatch => "digest_mismatch",
            ApprovalError::Replayed => "replayed",
        }
    }
}

/// Mint a token approving the action with this digest, for `group`, valid from `issued_s` for
/// `ttl_s` seconds. `nonce` must be fresh randomness (it is the token id).
pub fn mint(
    digest: &[u8; 32],
    group: &str,
    key: &SigningKey,
    issued_s: u64,
    ttl_s: u32,
    nonce: [u8; 16],
) -> String {
    let mut members = Map::new();
    members.insert("digest".into(), Value::from(hex::encode(digest)));
    members.insert("group".into(), Value::from(group));
    members.insert("iat".into(), Value::from(issued_s));
    members.insert(
        "exp".into(),
        Value::from(issued_s.saturating_add(u64::from(ttl_s))),
    );
    members.insert("nonce".into(), Value::from(hex::encode(nonce)));
    signed_token::seal(
        APPROVAL_DOMAIN,
        &signed_token::payload_text(members, key),
        key,
    )
}

struct Claims {
    digest: String,
    group: String,
    kid: String,
    iat: u64,
    exp: u64,
    nonce: [u8; 16],
}

fn claims(p: &signed_token::Payload) -> Option<Claims> {
    Some(Claims {
        digest: p.string("digest")?,
        group: p.string("group")?,
        kid: p.kid().to_owned(),
        iat: p.u64("iat")?,
        exp: p.u64("exp")?,
        nonce: p.nonce()?,
    })
}

/// Verify `token` for the action with `expected_digest`, requiring approver `group`, at `now_s`
/// (unix seconds). `approvers` lists (group, key) pairs from the filter configuration.
///
/// Order of checks: shape and length (`Malformed`), the key named by `kid` among the approvers
/// (`UnknownApprover`), the signature (`BadSignature`), the group — both the token's and the
/// approver's membership (`WrongGroup`) —, the digest (`DigestMismatch`), then time: `iat` more
/// than [`CLOCK_SKEW_S`] ahead (`NotYetValid`), `now_s >= exp` (`Expired`). Never panics.
pub fn verify(
    token: &str,
    expected_digest: &[u8; 32],
    group: &str,
    approvers: &[(String, VerifyingKey)],
    now_s: u64,
) -> Result<Approval, ApprovalError> {
    let c = signed_token::open(&KIND, token, claims, |kid| {
        signed_token::key_by_id(approvers.iter().map(|(_, k)| k), kid)
    })?;
    let in_group = approvers
        .iter()
        .any(|(g, k)| g == group && crate::evidence::keys::key_id(k) == c.kid);
    if c.group != group || !in_group {
        return Err(ApprovalError::WrongGroup);
    }
    if c.digest != hex::encode(expected_digest) {
        return Err(ApprovalError::DigestMismatch);
    }
    if signed_token::issued_in_future(c.iat, now_s) {
        return Err(ApprovalError::NotYetValid);
    }
    if now_s >= c.exp {
        return Err(ApprovalError::Expired);
    }
    Ok(Approval {
        token_id: hex::encode(c.nonce),
        nonce: c.nonce,
        group: c.group,
        key_id: c.kid,
        issued_s: c.iat,
        expires_s: c.exp,
    })
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "test arithmetic on small constants"
)]
mod tests {
    use super::*;
    use crate::evidence::keys::signing_key_from_seed;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const NOW: u64 = 1_763_700_000;

    fn setup() -> (SigningKey, Vec<(String, VerifyingKey)>, [u8; 32]) {
        let sk = signing_key_from_seed([3; 32]);
        let other = signing_key_from_seed([4; 32]);
        let approvers = vec![
            ("release".to_owned(), sk.verifying_key()),
            ("finance".to_owned(), other.verifying_key()),
        ];
        (sk, approvers, [0x5a; 32])
    }

    #[test]
    fn valid_token_verifies_and_names_itself() {
        let (sk, approvers, d) = setup();
        let t = mint(&d, "release", &sk, NOW, 900, [9; 16]);
        let a = verify(&t, &d, "release", &approvers, NOW + 10).unwrap();
        assert_eq!(a.token_id, "09".repeat(16));
        assert_eq!(a.nonce, [9; 16]);
        assert_eq!(a.group, "release");
        assert_eq!(a.key_id, crate::evidence::keys::key_id(&sk.verifying_key()));
        assert_eq!(a.expires_s, NOW + 900);
        assert_eq!(a.issued_s, NOW);
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let (sk, approvers, d) = setup();
        let t = mint(&d, "release", &sk, NOW, 900, [9; 16]);
        assert_eq!(
            verify(&t, &[0; 32], "release", &approvers, NOW),
            Err(ApprovalError::DigestMismatch)
        );
        assert_eq!(
            verify(&t, &d, "finance", &approvers, NOW),
            Err(ApprovalError::WrongGroup)
        );
        assert_eq!(
            verify(&t, &d, "release", &approvers, NOW + 900),
            Err(ApprovalError::Expired)
        );
        assert_eq!(
            verify(&t, &d, "release", &approvers, NOW - 61),
            Err(ApprovalError::NotYetValid)
        );
        assert!(verify(&t, &d, "release", &approvers, NOW - 60).is_ok());
        assert_eq!(
            verify(&t, &d, "release", &approvers[1..], NOW),
            Err(ApprovalError::UnknownApprover)
        );
        // An approver of another group mints a token claiming "release".
        let finance = signing_key_from_seed([4; 32]);
        let t2 = mint(&d, "release", &finance, NOW, 900, [1; 16]);
        assert_eq!(
            verify(&t2, &d, "release", &approvers, NOW),
            Err(ApprovalError::WrongGroup)
        );
    }

    #[test]
    fn tampered_payload_or_signature_is_refused() {
        let (sk, approvers, d) = setup();
        let t = mint(&d, "release", &sk, NOW, 900, [9; 16]);
        let (p, s) = t.split_once('.').unwrap();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        let longer = payload.replace(
            &format!("\"exp\":{}", NOW + 900),
            &format!("\"exp\":{}", NOW + 90000),
        );
        let forged = format!("{}.{s}", URL_SAFE_NO_PAD.encode(longer));
        assert_eq!(
            verify(&forged, &d, "release", &approvers, NOW),
            Err(ApprovalError::BadSignature)
        );
        // Same claims, non-canonical spacing: refused before any signature work.
        let spaced = payload.replacen(',', ", ", 1);
        let t3 = format!("{}.{s}", URL_SAFE_NO_PAD.encode(spaced));
        assert_eq!(
            verify(&t3, &d, "release", &approvers, NOW),
            Err(ApprovalError::Malformed)
        );
        let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
        sig[0] ^= 1;
        let t4 = format!("{p}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(
            verify(&t4, &d, "release", &approvers, NOW),
            Err(ApprovalError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let (_, approvers, d) = setup();
        for t in [
            "",
            ".",
            "abc",
            "a.b.c",
            "!!!.???",
            &"A".repeat(2000),
            "e30.AAAA",
        ] {
            assert_eq!(
                verify(t, &d, "release", &approvers, NOW),
                Err(ApprovalError::Malformed),
                "{t}"
            );
        }
    }
}
