//! Why a bundle was refused. Every way `Bundle::from_bytes` can fail has one variant here, and its
//! `Display` is a short lowercase sentence an operator can act on (it ends up in Envoy's log).

/// Why a bundle could not be loaded (or signed). A refused bundle never replaces a loaded one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The bytes end before the structure they announce.
    #[error("the bundle is truncated: it ends inside the {what}")]
    Truncated {
        /// Which part was being read.
        what: &'static str,
    },
    /// The first four bytes are not `PCLB`.
    #[error("this is not a portcullis bundle (bad magic bytes)")]
    BadMagic,
    /// The bundle was written in a format version this build cannot read.
    #[error(
        "bundle format version {found} is not supported (this build reads versions {} to {supported}); rebuild the bundle with a matching policyc",
        crate::program::format::MIN_FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
        /// The newest version this build reads (it reads every version from
        /// [`crate::format::MIN_FORMAT_VERSION`] to this one).
        supported: u16,
    },
    /// The content hash in the header does not match the content.
    #[error("the bundle content does not match its hash: it was corrupted or altered")]
    HashMismatch,
    /// Keys were configured but the bundle carries no signature.
    #[error("the bundle is not signed, and only signed bundles are trusted")]
    Unsigned,
    /// The bundle was signed by a key that is not trusted.
    #[error("the bundle is signed by `{key_id}`, which is not a trusted key")]
    UnknownKey {
        /// The key id named in the signature block.
        key_id: String,
    },
    /// The signature does not verify.
    #[error("the bundle signature does not verify: it was altered or signed with another key")]
    BadSignature,
    /// A size or count is over a limit in [`crate::limits::Limits`].
    #[error("the bundle exceeds a limit: {what} is {found}, the maximum is {max}")]
    TooLarge {
        /// Which limit.
        what: &'static str,
        /// The value found.
        found: u64,
        /// The limit.
        max: u64,
    },
    /// The content is structurally wrong (bad index, bad jump, bad tag, trailing bytes, ...).
    #[error("the bundle is invalid: {what}")]
    Invalid {
        /// What is wrong, in words.
        what: String,
    },
    /// A pack of a layered bundle was refused (its own signature, hash or content).
    #[error("pack `{pack}` of the layered bundle is refused: {error}")]
    Layer {
        /// The pack's id in the manifest.
        pack: String,
        /// Why.
        error: Box<LoadError>,
    },
}

impl LoadError {
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        LoadError::Invalid { what: what.into() }
    }
}
