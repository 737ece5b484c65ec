//! Ed25519 keys as Portcullis stores and names them: one text line per key file, and a key id
//! derived from the public key so bundles, receipts and approval tokens can say who signed them.
//!
//! Formats (one line, surrounding whitespace ignored):
//! - secret key: `portcullis-ed25519-secret:<base64 of the 32-byte seed>`
//! - public key: `portcullis-ed25519-public:<base64 of the 32-byte public key>`
//!
//! Key id: `ed25519:` followed by the first 8 bytes of SHA-256(public key), in lowercase hex.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const SECRET_PREFIX: &str = "portcullis-ed25519-secret:";
const PUBLIC_PREFIX: &str = "portcullis-ed25519-public:";

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text does not start with the expected prefix.
    #[error("expected a key starting with `{0}`")]
    Prefix(&'static str),
    /// The base64 part is not valid base64 or not 32 bytes.
    #[error("the key material is not 32 bytes of base64")]
    Material,
    /// The bytes are not a valid Ed25519 public key.
    #[error("not a valid ed25519 public key")]
    Invalid,
}

/// The key id of a public key: `ed25519:<16 hex digits>`.
pub fn key_id(key: &VerifyingKey) -> String {
    let d = Sha256::digest(key.as_bytes());
    let mut id = String::from("ed25519:");
    id.push_str(&hex::encode(d.get(..8).unwrap_or_default()));
    id
}

fn material(text: &str, prefix: &'static str) -> Result<[u8; 32], KeyError> {
    let rest = text
        .trim()
        .strip_prefix(prefix)
        .ok_or(KeyError::Prefix(prefix))?;
    let bytes = STANDARD
        .decode(rest.trim())
        .map_err(|_| KeyError::Material)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Material)
}

/// Read a secret key line.
pub fn parse_signing_key(text: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&material(text, SECRET_PREFIX)?))
}

/// Read a public key line.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&material(text, PUBLIC_PREFIX)?).map_err(|_| KeyError::Invalid)
}

/// Write a secret key line (keep it out of logs and repositories).
pub fn format_signing_key(key: &SigningKey) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key.to_bytes()))
}

/// Write a public key line.
pub fn format_verifying_key(key: &VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX}{}", STANDARD.encode(key.as_bytes()))
}

/// A deterministic key from a 32-byte seed (tests and fixtures only; real keys come from `policyc
/// keygen`, which uses the OS random source).
pub fn signing_key_from_seed(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_id() {
        let sk = signing_key_from_seed([7; 32]);
        let text = format_signing_key(&sk);
        let back = parse_signing_key(&text).unwrap();
        assert_eq!(back.to_bytes(), sk.to_bytes());
        let pk_text = format_verifying_key(&sk.verifying_key());
        let pk = parse_verifying_key(&pk_text).unwrap();
        assert_eq!(pk, sk.verifying_key());
        let id = key_id(&pk);
        assert!(id.starts_with("ed25519:"));
        assert_eq!(id.len(), "ed25519:".len() + 16);
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(
            parse_signing_key("nope").unwrap_err(),
            KeyError::Prefix(SECRET_PREFIX)
        );
        assert_eq!(
            parse_verifying_key("portcullis-ed25519-public:AAAA").unwrap_err(),
            KeyError::Material
        );
        // a public key line is not a secret key
        let pk = format_verifying_key(&signing_key_from_seed([1; 32]).verifying_key());
        assert!(parse_signing_key(&pk).is_err());
    }
}
