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
pub mod session;
pub mod verdict;
pub mod keys;
