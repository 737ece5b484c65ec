//! Why the filter cannot work as configured: a configuration it refuses, a bundle it cannot load,
//! a key it cannot use, or a bundle-server fetch that failed. A plugin that failed to load keeps
//! its [`FilterError`] and denies every request with it as the reason (fail closed); a failed fetch
//! keeps the bundle in force and is logged and counted.

use bundle::LoadError;
use bundle::keys::KeyError;

use crate::config::ConfigError;

/// Why a plugin configuration cannot be put in force.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The configuration itself is refused.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// `bundle.server` is configured, with no inline bundle, and no fetch has succeeded yet.
    #[error("no policy bundle yet: waiting for the first good fetch from the bundle server")]
    NoBundleYet,
    /// The bundle does not verify or load.
    #[error("the policy bundle was refused: {0}")]
    Bundle(LoadError),
    /// `receipts.signing_key_env` names a variable the VM does not have.
    #[error("the receipt signing key variable `{0}` is not set in the VM environment")]
    SigningKeyUnset(String),
    /// The receipt signing key does not parse.
    #[error("the receipt signing key is not usable: {0}")]
    SigningKey(KeyError),
}

/// Why a bundle fetched from the bundle server was not put in force (the bundle in force stays).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The call-out could not be sent.
    #[error("{0}")]
    Dispatch(String),
    /// The call-out got no answer.
    #[error("no answer (timeout or reset)")]
    NoAnswer,
    /// The server answered with a status other than 200 or 304.
    #[error("status {0}")]
    Status(String),
    /// The body is larger than a bundle may be.
    #[error("the body is {size} bytes, above {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit (`limits::MAX_BUNDLE_BYTES`).
        max: usize,
    },
    /// The server sent an empty body.
    #[error("empty body")]
    Empty,
    /// The body is not the pinned bundle.
    #[error("the body's sha256 {got} is not the pinned {pinned}")]
    NotPinned {
        /// Hex SHA-256 of the body.
        got: String,
        /// Hex SHA-256 of the pin.
        pinned: String,
    },
    /// The body is not a bundle this configuration trusts.
    #[error("bundle refused: {0}")]
    Refused(LoadError),
    /// The bundle verified, but the configuration cannot use it.
    #[error("the fetched bundle cannot be used: {0}")]
    Unusable(FilterError),
}
