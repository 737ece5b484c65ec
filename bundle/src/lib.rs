//! `bundle` is the one contract between `policyc` (the policy compiler) and the Portcullis filter.
//!
//! It holds, with no I/O and no proxy-wasm:
//! - [`action`]: the normalized action the policy reads (one vocabulary for MCP and HTTP);
//! - [`session`]: the per-session state the policy reads and the filter stores;
//! - [`verdict`]: what an evaluation returns (decision, matched rules, modifications, effects);
//! - the bundle file format, its verifier and the VM that evaluates it;
//! - receipts and approval tokens, which the filter writes and `policyc` verifies or mints.
//!
//! Every decoder here treats its input as hostile: it never panics, and it reports a typed error.

pub mod action;
pub mod approval;
mod argtypes;
pub mod canonical;
pub mod keys;
pub mod receipt;
pub mod session;
pub mod session_codec;
pub mod verdict;
mod wire;

pub mod builtin;
pub mod disasm;
mod encode;
pub mod error;
pub mod format;
mod index;
pub mod limits;
mod load;
pub mod matchers;
pub mod protocol;
pub mod sign;
mod verify;
mod vm;

pub use encode::encode;
pub use error::LoadError;
pub use limits::Limits;
pub use load::{Bundle, BundleInfo, Trust};
pub use sign::sign;
