//! The signed-token envelope that approval tokens, task grants and releases share.
//!
//! ```text
//! token     = base64url(payload) "." base64url(signature)     ; RFC 4648 §5, no padding
//! payload   = canonical JSON object (crate::canonical) with "v":1 and "kid":"ed25519:<16 hex>"
//! signature = Ed25519(key, domain || payload)                  ; verified with verify_strict
//! ```
//!
//! Each token kind names its own domain separator (so a signature of one kind never verifies as
//! another), its longest token, its exact member set, and the errors it reports. One reader does
//! the checks every kind makes, in one order: length and shape, canonical payload with exactly the
//! allowed members and well-formed claims (malformed), the key named by `kid` (unknown key), the
//! signature (bad signature). What the claims mean (groups, principals, times) is checked by the
//! token's own module: `approval`, `grant`, `release`.
//!
//! Public here: the clock skew all three allow, and [`ClaimError`], why claims cannot be minted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use crate::evidence::{canonical, keys};

/// How far in the future a token's `iat` may be (issuer clock ahead of the proxy), in seconds.
pub const CLOCK_SKEW_S: u64 = 60;

/// Length of a base64url (unpadded) Ed25519 signature.
const SIGNATURE_B64_LEN: usize = 86;

/// Why a claim cannot go into a token (what `mint`'s callers check first, with a message for the
/// person running `policyc`). Lowercase messages that name the claim.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A claim that must have a value is empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A claim (or one entry of a list claim) is longer than the format allows.
    #[error("`{claim}` is longer than {max} bytes")]
    TooLong {
        /// The claim's name in the payload.
        claim: &'static str,
        /// The most bytes allowed.
        max: usize,
    },
    /// A list claim has more entries than the format allows.
    #[error("`{claim}` has more than {max} entries")]
    TooMany {
        /// The claim's name in the payload.
        claim: &'static str,
        /// The most entries allowed.
        max: usize,
    },
    /// The expiry is not after the issue time.
    #[error("the expiry must be later than the issue time")]
    Lifetime,
    /// The whole token would be longer than the verifier reads.
    #[error("the token would be {len} bytes, more than the {max} a verifier reads")]
    TokenTooLong {
        /// The token's length in bytes.
        len: usize,
        /// The longest token the verifier reads.
        max: usize,
    },
}

/// What one token kind is: its domain separator, its longest token, its members, and the errors
/// it reports for the checks [`open`] makes.
pub(crate) struct Kind<E> {
    /// Prefixed to the payload before signing.
    pub(crate) domain: &'static [u8],
    /// The longest token (after trimming surrounding whitespace) that is read at all.
    pub(crate) max_bytes: usize,
    /// Members every payload has (besides `v` and `kid`, which every kind has).
    pub(crate) required: &'static [&'static str],
    /// Members a payload may have.
    pub(crate) optional: &'static [&'static str],
    /// Shape, length, encoding, JSON, canonical form, member set or claims.
    pub(crate) malformed: E,
    /// `kid` names no key the caller accepts.
    pub(crate) unknown_key: E,
    /// The signature does not verify under that key.
    pub(crate) bad_signature: E,
}

fn signed_message(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len().saturating_add(payload.len()));
    msg.extend_from_slice(domain);
    msg.extend_from_slice(payload);
    msg
}

/// The canonical payload text of `members` plus `"v":1` and the signer's `kid`.
pub(crate) fn payload_text(mut members: Map<String, Value>, key: &SigningKey) -> String {
    members.insert("v".to_owned(), Value::from(1));
    members.insert(
        "kid".to_owned(),
        Value::String(keys::key_id(&key.verifying_key())),
    );
    // Strings, integers and arrays of strings only: the canonical form exists.
    canonical::to_canonical(&Value::Object(members)).unwrap_or_default()
}

/// The length of the token whose payload is `payload_text`.
pub(crate) fn token_len(payload_text: &str) -> usize {
    // Unpadded base64 of n bytes has ceil(4n / 3) characters.
    let n = payload_text.len();
    let b64 = n
        .saturating_mul(4)
        .saturating_add(2)
        .checked_div(3)
        .unwrap_or(0);
    b64.saturating_add(1).saturating_add(SIGNATURE_B64_LEN)
}

/// Sign the canonical payload text under `domain` and assemble the token.
pub(crate) fn seal(domain: &[u8], payload_text: &str, key: &SigningKey) -> String {
    let sig = key.sign(&signed_message(domain, payload_text.as_bytes()));
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload_text.as_bytes()),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    )
}

/// The members of a payload that [`open`] accepted. Readers return `None` for a wrong type or
/// value, which the caller reports as malformed.
pub(crate) struct Payload {
    members: Map<String, Value>,
    kid: String,
}

impl Payload {
    /// The signer's key id.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// A string member, any value.
    pub(crate) fn string(&self, k: &str) -> Option<String> {
        self.members
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// A non-negative integer member.
    pub(crate) fn u64(&self, k: &str) -> Option<u64> {
        self.members.get(k).and_then(Value::as_u64)
    }

    /// The `nonce` member: exactly 32 lowercase hex digits.
    pub(crate) fn nonce(&self) -> Option<[u8; 16]> {
        let text = self.members.get("nonce").and_then(Value::as_str)?;
        let raw = hex::decode(text).ok()?;
        let nonce = <[u8; 16]>::try_from(raw.as_slice()).ok()?;
        (hex::encode(nonce) == text).then_some(nonce)
    }

    /// A string member that is not empty and at most `max` bytes.
    pub(crate) fn text(&self, k: &str, max: usize) -> Option<String> {
        self.string(k).filter(|s| text_fits(s, max))
    }

    /// An optional [`Payload::text`] member: `Some(None)` when absent, `None` when invalid.
    pub(crate) fn optional_text(&self, k: &str, max: usize) -> Option<Option<String>> {
        match self.members.get(k) {
            None => Some(None),
            Some(_) => self.text(k, max).map(Some),
        }
    }

    /// An optional list of strings, each non-empty and at most `max_item` bytes, at most
    /// `max_items` of them: `Some(None)` when absent, `None` when invalid.
    pub(crate) fn optional_list(
        &self,
        k: &str,
        max_items: usize,
        max_item: usize,
    ) -> Option<Option<Vec<String>>> {
        let Some(v) = self.members.get(k) else {
            return Some(None);
        };
        let items = v.as_array().filter(|a| a.len() <= max_items)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(item.as_str().filter(|s| text_fits(s, max_item))?.to_owned());
        }
        Some(Some(out))
    }
}

fn text_fits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max
}

/// Check a text claim before minting: not empty, at most `max` bytes.
pub(crate) fn check_text(claim: &'static str, s: &str, max: usize) -> Result<(), ClaimError> {
    if s.is_empty() {
        return Err(ClaimError::Empty(claim));
    }
    if s.len() > max {
        return Err(ClaimError::TooLong { claim, max });
    }
    Ok(())
}

/// Check a list claim before minting: at most `max_items` entries, each a valid text claim.
pub(crate) fn check_list(
    claim: &'static str,
    items: &[String],
    max_items: usize,
    max_item: usize,
) -> Result<(), ClaimError> {
    if items.len() > max_items {
        return Err(ClaimError::TooMany {
            claim,
            max: max_items,
        });
    }
    items
        .iter()
        .try_for_each(|s| check_text(claim, s, max_item))
}

/// Check that the token for `payload_text` fits in `kind`'s length limit.
pub(crate) fn check_len<E>(kind: &Kind<E>, payload_text: &str) -> Result<(), ClaimError> {
    let len = token_len(payload_text);
    if len > kind.max_bytes {
        return Err(ClaimError::TokenTooLong {
            len,
            max: kind.max_bytes,
        });
    }
    Ok(())
}

fn members<E>(kind: &Kind<E>, payload: &[u8]) -> Option<Payload> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    // INVARIANT: the signed bytes are exactly the canonical form, so every verifier reads the same
    // claims (no duplicate keys, no alternative encodings).
    let canon = canonical::to_canonical(&v).ok()?;
    if canon.as_bytes() != payload {
        return None;
    }
    let Value::Object(members) = v else {
        return None;
    };
    let known = |k: &str| {
        k == "v" || k == "kid" || kind.required.contains(&k) || kind.optional.contains(&k)
    };
    if !members.keys().all(|k| known(k)) || !kind.required.iter().all(|k| members.contains_key(*k))
    {
        return None;
    }
    if members.get("v").and_then(Value::as_u64) != Some(1) {
        return None;
    }
    let kid = members.get("kid").and_then(Value::as_str)?.to_owned();
    Some(Payload { members, kid })
}

/// Read `token` as a token of `kind`: shape and length, canonical payload with exactly the allowed
/// members, the claims as `read` takes them (`None`: malformed), then the key `key_for(kid)` and
/// the signature under it. Every malformed token is refused before any key or signature work.
/// Never panics.
pub(crate) fn open<T, E: Copy>(
    kind: &Kind<E>,
    token: &str,
    read: impl FnOnce(&Payload) -> Option<T>,
    key_for: impl FnOnce(&str) -> Option<VerifyingKey>,
) -> Result<T, E> {
    let token = token.trim();
    if token.len() > kind.max_bytes {
        return Err(kind.malformed);
    }
    let (p64, s64) = token.split_once('.').ok_or(kind.malformed)?;
    let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| kind.malformed)?;
    let sig_raw = URL_SAFE_NO_PAD.decode(s64).map_err(|_| kind.malformed)?;
    let sig_bytes = <[u8; 64]>::try_from(sig_raw.as_slice()).map_err(|_| kind.malformed)?;
    let members = members(kind, &payload).ok_or(kind.malformed)?;
    let claims = read(&members).ok_or(kind.malformed)?;
    let key = key_for(members.kid()).ok_or(kind.unknown_key)?;
    let sig = Signature::from_bytes(&sig_bytes);
    key.verify_strict(&signed_message(kind.domain, &payload), &sig)
        .map_err(|_| kind.bad_signature)?;
    Ok(claims)
}

/// The first of `keys` whose key id is `kid`.
pub(crate) fn key_by_id<'a>(
    keys: impl IntoIterator<Item = &'a VerifyingKey>,
    kid: &str,
) -> Option<VerifyingKey> {
    keys.into_iter().find(|k| keys::key_id(k) == kid).copied()
}

/// Whether a token issued at `iat` is ahead of `now_s` by more than [`CLOCK_SKEW_S`].
pub(crate) fn issued_in_future(iat: u64, now_s: u64) -> bool {
    iat > now_s.saturating_add(CLOCK_SKEW_S)
}

/// Test helpers shared by the token modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Split a token into its decoded payload text and its signature part.
    pub(crate) fn split(token: &str) -> (String, String) {
        let (p, s) = token.split_once('.').unwrap();
        (
            String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap(),
            s.to_owned(),
        )
    }

    /// A token with this payload text and the given signature part (not re-signed).
    pub(crate) fn with_payload(payload: &str, sig: &str) -> String {
        format!("{}.{sig}", URL_SAFE_NO_PAD.encode(payload))
    }

    /// A token with this payload text, signed properly under `domain` (so only the claims checks
    /// can refuse it).
    pub(crate) fn resigned(domain: &[u8], payload: &str, key: &SigningKey) -> String {
        seal(domain, payload, key)
    }

    /// The token with one bit of its signature flipped.
    pub(crate) fn flip_signature(token: &str) -> String {
        let (p, s) = token.split_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
        sig[0] ^= 1;
        format!("{p}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::keys::signing_key_from_seed;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum OpenError {
        Malformed,
        UnknownKey,
        BadSignature,
    }

    const KIND: Kind<OpenError> = Kind {
        domain: b"portcullis/test/v1\0",
        max_bytes: 512,
        required: &["a"],
        optional: &["b"],
        malformed: OpenError::Malformed,
        unknown_key: OpenError::UnknownKey,
        bad_signature: OpenError::BadSignature,
    };

    fn token(members: &[(&str, Value)], key: &SigningKey) -> String {
        let m: Map<String, Value> = members
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        seal(KIND.domain, &payload_text(m, key), key)
    }

    #[test]
    fn token_len_is_exact() {
        let sk = signing_key_from_seed([1; 32]);
        for n in 0..40 {
            let text = payload_text(
                [("a".to_owned(), Value::from("x".repeat(n)))]
                    .into_iter()
                    .collect(),
                &sk,
            );
            assert_eq!(token_len(&text), seal(KIND.domain, &text, &sk).len(), "{n}");
        }
    }

    #[test]
    fn members_are_exact() {
        let sk = signing_key_from_seed([1; 32]);
        let pk = sk.verifying_key();
        let open_ = |t: &str| open(&KIND, t, |p| p.string("a"), |kid| key_by_id([&pk], kid));
        assert_eq!(open_(&token(&[("a", "x".into())], &sk)), Ok("x".into()));
        assert!(open_(&token(&[("a", "x".into()), ("b", "y".into())], &sk)).is_ok());
        assert_eq!(
            open_(&token(&[("b", "y".into())], &sk)),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            open_(&token(&[("a", "x".into()), ("c", "y".into())], &sk)),
            Err(OpenError::Malformed)
        );
        // `v` other than 1, or `kid` not a string.
        let (p, s) = testing::split(&token(&[("a", "x".into())], &sk));
        let kid = keys::key_id(&pk);
        for bad in [
            p.replace("\"v\":1", "\"v\":2"),
            p.replace(&format!("\"kid\":\"{kid}\""), "\"kid\":7"),
        ] {
            assert_ne!(bad, p);
            let t = testing::resigned(KIND.domain, &bad, &sk);
            assert_eq!(open_(&t), Err(OpenError::Malformed), "{bad}");
        }
        // A payload that is not an object.
        let t = testing::with_payload("[1]", &s);
        assert_eq!(open_(&t), Err(OpenError::Malformed));
    }

    #[test]
    fn another_domain_does_not_verify() {
        let sk = signing_key_from_seed([1; 32]);
        let pk = sk.verifying_key();
        let (p, _) = testing::split(&token(&[("a", "x".into())], &sk));
        let t = testing::resigned(b"portcullis/other/v1\0", &p, &sk);
        assert_eq!(
            open(&KIND, &t, |_| Some(()), |kid| key_by_id([&pk], kid)),
            Err(OpenError::BadSignature)
        );
    }
}
