//! Bundle signatures: Ed25519 over `"portcullis/bundle/v1\0"` || every byte of the bundle except
//! the signature block (the 40 header bytes, then the body length and the body). Re-signing an
//! already signed bundle replaces its signature.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::error::LoadError;
use crate::evidence::keys::key_id;
use crate::limits::Limits;
use crate::program::format::SIGNATURE_DOMAIN;
use crate::program::verify::{Envelope, envelope};

/// The message a bundle signature covers.
fn message(env: &Envelope<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(
        SIGNATURE_DOMAIN
            .len()
            .saturating_add(env.header.len())
            .saturating_add(env.tail.len()),
    );
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(env.header);
    m.extend_from_slice(env.tail);
    m
}

/// Sign a bundle (unsigned, or signed: the old signature is replaced). The bundle's structure and
/// content hash are checked first; its body is not decoded.
pub fn sign(unsigned_bundle: &[u8], key: &SigningKey) -> Result<Vec<u8>, LoadError> {
    let env = envelope(unsigned_bundle, &Limits::default())?;
    let sig = key.sign(&message(&env)).to_bytes();
    let id = key_id(&key.verifying_key());
    Ok(crate::program::encode::envelope(
        env.body,
        Some((&id, &sig)),
    ))
}

/// Check the signature block against trusted keys.
pub(crate) fn check(env: &Envelope<'_>, keys: &[VerifyingKey]) -> Result<String, LoadError> {
    let Some((id, sig)) = &env.sig else {
        return Err(LoadError::Unsigned);
    };
    let Some(key) = keys.iter().find(|k| key_id(k) == *id) else {
        return Err(LoadError::UnknownKey { key_id: id.clone() });
    };
    let sig = Signature::from_bytes(sig);
    key.verify_strict(&message(env), &sig)
        .map_err(|_| LoadError::BadSignature)?;
    Ok(id.clone())
}
