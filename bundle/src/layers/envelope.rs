//! The layered bundle envelope: bytes in and out, and its signature. It wraps single-pack
//! bundles unchanged (each keeps its own header, hash and owner's signature); the layout is in
//! `docs/bundle-format.md`, "Layered bundles":
//!
//! ```text
//! magic "PCLS" | version u16 (1) | reserved u16 (0) | content_hash [32] = SHA-256(body)
//! | sig_tag u8 (0 none, 1 ed25519) [ key_id_len u8 | key_id | signature [64] ]
//! | body_len u32 | body
//! body = manifest_len u32 | manifest (UTF-8 JSON) | pack_count u16 | { pack_len u32 | pack }*
//! ```
//!
//! Signature: Ed25519 over `"portcullis/layers/v1\0"` || the 40 header bytes || body_len || body.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::LoadError;
use crate::keys::key_id;
use crate::limits::Limits;

/// The four magic bytes of a layered bundle.
pub const SET_MAGIC: [u8; 4] = *b"PCLS";
/// The envelope version this build writes and reads.
pub const SET_VERSION: u16 = 1;
/// Domain separation prefix of the envelope signature.
pub const SET_SIGNATURE_DOMAIN: &[u8] = b"portcullis/layers/v1\0";
/// Bytes before the signature block.
const HEADER_LEN: usize = 40;

/// A parsed envelope (structure and content hash checked, signature not yet).
pub(crate) struct SetEnvelope<'a> {
    header: &'a [u8],
    tail: &'a [u8],
    pub sig: Option<(String, [u8; 64])>,
    pub hash: [u8; 32],
    pub manifest: &'a [u8],
    pub packs: Vec<&'a [u8]>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], LoadError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(LoadError::Truncated { what })?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(LoadError::Truncated { what })?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, LoadError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, LoadError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]))
    }
    fn u32(&mut self, what: &'static str) -> Result<usize, LoadError> {
        let b = self.take(4, what)?;
        let n = u32::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
            b.get(2).copied().unwrap_or(0),
            b.get(3).copied().unwrap_or(0),
        ]);
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Parse the envelope and check its content hash; the signature is checked by [`check`].
pub(crate) fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<SetEnvelope<'a>, LoadError> {
    if bytes.len() > limits.max_bundle_bytes {
        return Err(LoadError::TooLarge {
            what: "the bundle size in bytes",
            found: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            max: u64::try_from(limits.max_bundle_bytes).unwrap_or(u64::MAX),
        });
    }
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4, "header")? != SET_MAGIC {
        return Err(LoadError::BadMagic);
    }
    let version = c.u16("header")?;
    if version != SET_VERSION {
        return Err(LoadError::invalid(format!(
            "layered bundle envelope version {version} is not supported (this build reads version {SET_VERSION}); rebuild it with a matching policyc"
        )));
    }
    if c.take(2, "header")? != [0, 0] {
        return Err(LoadError::invalid("the reserved header bytes are not zero"));
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(c.take(32, "header")?);
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(LoadError::Truncated { what: "header" })?;
    let sig = match c.u8("signature block")? {
        0 => None,
        1 => {
            let n = c.u8("signature block")?;
            let id = std::str::from_utf8(c.take(usize::from(n), "signature block")?)
                .map_err(|_| LoadError::invalid("the signing key id is not text"))?
                .to_owned();
            let mut s = [0u8; 64];
            s.copy_from_slice(c.take(64, "signature block")?);
            Some((id, s))
        }
        t => {
            return Err(LoadError::invalid(format!(
                "unknown signature block tag {t}"
            )));
        }
    };
    let tail = bytes
        .get(c.pos..)
        .ok_or(LoadError::Truncated { what: "body" })?;
    let body_len = c.u32("body length")?;
    let body = c.take(body_len, "body")?;
    if c.pos != bytes.len() {
        return Err(LoadError::invalid("trailing bytes after the body"));
    }
    if Sha256::digest(body).as_slice() != hash {
        return Err(LoadError::HashMismatch);
    }
    let mut b = Cursor {
        bytes: body,
        pos: 0,
    };
    let mlen = b.u32("manifest length")?;
    let manifest = b.take(mlen, "manifest")?;
    let count = b.u16("pack count")?;
    if u32::from(count) > limits.max_layers {
        return Err(LoadError::TooLarge {
            what: "the number of packs in a layered bundle",
            found: u64::from(count),
            max: u64::from(limits.max_layers),
        });
    }
    let mut packs = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let n = b.u32("pack length")?;
        packs.push(b.take(n, "pack")?);
    }
    if b.pos != body.len() {
        return Err(LoadError::invalid("trailing bytes after the last pack"));
    }
    Ok(SetEnvelope {
        header,
        tail,
        sig,
        hash,
        manifest,
        packs,
    })
}

fn message(header: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(
        SET_SIGNATURE_DOMAIN
            .len()
            .saturating_add(header.len())
            .saturating_add(tail.len()),
    );
    m.extend_from_slice(SET_SIGNATURE_DOMAIN);
    m.extend_from_slice(header);
    m.extend_from_slice(tail);
    m
}

/// Check the envelope's signature against trusted keys; returns the signer's key id.
pub(crate) fn check(env: &SetEnvelope<'_>, keys: &[VerifyingKey]) -> Result<String, LoadError> {
    let Some((id, sig)) = &env.sig else {
        return Err(LoadError::Unsigned);
    };
    let Some(key) = keys.iter().find(|k| key_id(k) == *id) else {
        return Err(LoadError::UnknownKey { key_id: id.clone() });
    };
    key.verify_strict(&message(env.header, env.tail), &Signature::from_bytes(sig))
        .map_err(|_| LoadError::BadSignature)?;
    Ok(id.clone())
}

fn write(body: &[u8], sig: Option<(&str, &[u8; 64])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len().saturating_add(128));
    out.extend_from_slice(&SET_MAGIC);
    out.extend_from_slice(&SET_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(body));
    match sig {
        None => out.push(0),
        Some((id, s)) => {
            out.push(1);
            out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(s);
        }
    }
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Write an unsigned envelope around a manifest (JSON) and the packs' bundles, in manifest order.
/// Refuses what the reader would refuse for its size (more than `u16` packs, parts over 4 GiB).
pub fn encode_set(manifest_json: &[u8], packs: &[&[u8]]) -> Result<Vec<u8>, LoadError> {
    let len32 = |n: usize, what: &'static str| {
        u32::try_from(n).map_err(|_| LoadError::TooLarge {
            what,
            found: u64::try_from(n).unwrap_or(u64::MAX),
            max: u64::from(u32::MAX),
        })
    };
    let count = u16::try_from(packs.len()).map_err(|_| LoadError::TooLarge {
        what: "the number of packs in a layered bundle",
        found: u64::try_from(packs.len()).unwrap_or(u64::MAX),
        max: u64::from(u16::MAX),
    })?;
    let mut body = Vec::new();
    body.extend_from_slice(&len32(manifest_json.len(), "the manifest in bytes")?.to_le_bytes());
    body.extend_from_slice(manifest_json);
    body.extend_from_slice(&count.to_le_bytes());
    for p in packs {
        body.extend_from_slice(&len32(p.len(), "a pack in bytes")?.to_le_bytes());
        body.extend_from_slice(p);
    }
    Ok(write(&body, None))
}

/// Sign (or re-sign) a layered bundle envelope. Its structure and content hash are checked first.
pub fn sign_set(set: &[u8], key: &SigningKey) -> Result<Vec<u8>, LoadError> {
    let env = parse(set, &Limits::default())?;
    let sig = key.sign(&message(env.header, env.tail)).to_bytes();
    let body_start = set
        .len()
        .checked_sub(env.tail.len())
        .and_then(|s| s.checked_add(4))
        .ok_or(LoadError::Truncated { what: "body" })?;
    let body = set
        .get(body_start..)
        .ok_or(LoadError::Truncated { what: "body" })?;
    Ok(write(body, Some((&key_id(&key.verifying_key()), &sig))))
}
