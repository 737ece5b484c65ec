//! The bytecode program: what `policyc` compiles a policy to, and everything that writes, checks,
//! loads and runs it.
//!
//! Contract: a [`format::Program`] encoded by [`encode()`](encode::encode) is read back equal by
//! the verifier, whose every read is checked ([`load::Bundle::from_bytes`] never panics on any
//! input); every wire tag is written once, in `wire`; the VM evaluates only verified programs,
//! within [`crate::Limits`], and fails closed.
//!
//! - [`format`]: the in-memory model and the header constants;
//! - `wire`: the append-only tag tables, read by `encode` and `verify`;
//! - `encode` / `verify` / [`sign`]: bytes out, bytes in, the signature over them;
//! - `load`: a verified, immutable [`load::Bundle`]; `index`: its rule index;
//! - `vm`, `argtypes`, [`matchers`]: evaluation; [`builtin`], [`protocol`]: the names and lists it
//!   shares with the compiler's reference interpreter;
//! - [`disasm`]: a human-readable listing.

pub(crate) mod argtypes;
pub mod builtin;
pub mod disasm;
pub(crate) mod encode;
pub mod format;
pub(crate) mod index;
pub(crate) mod load;
pub mod matchers;
pub mod protocol;
pub mod sign;
pub(crate) mod verify;
pub(crate) mod vm;
pub(crate) mod wire;
