//! `bundle` is the one contract between `policyc` (the policy compiler) and the Portcullis filter.
//!
//! It holds, with no I/O and no proxy-wasm:
//! - [`action`]: the normalized action the policy reads (one vocabulary for MCP and HTTP);
//! - [`session`]: the per-session state the policy reads and the filter stores;
//! - [`verdict`]: what an evaluation returns (decision, matched rules, modifications, effects);
//! - `program/`: the bundle file format, its wire tags, encoder, verifier, loader and the VM that
//!   evaluates it (re-exported here as [`format`](mod@format), [`disasm`], [`builtin`], [`matchers`],
//!   [`protocol`], [`sign`](mod@sign), [`encode()`], [`Bundle`]);
//! - `evidence/`: receipts and the canonical form and keys they are signed with, which the filter
//!   writes and a SOC verifies ([`receipt`], [`canonical`], [`keys`]);
//! - [`approval`], [`grant`] (task grants) and [`release`] (quarantine releases): the signed
//!   tokens `policyc` mints and the filter verifies, in the one envelope of [`signed_token`];
//! - [`session`] and its record codec ([`session_codec`]);
//! - [`layers`]: layered bundles (a baseline and team packs in one signed envelope) and how
//!   their verdicts combine;
//! - [`limits`]: every limit the decoder and the VM enforce.
//!
//! Every decoder here treats its input as hostile: it never panics, and it reports a typed error.

pub mod action;
pub mod approval;
pub mod error;
mod evidence;
pub mod grant;
pub mod layers;
pub mod limits;
pub mod pin;
mod program;
pub mod release;
pub mod session;
pub mod signed_token;
pub mod verdict;

// The module paths other crates use (`bundle::format`, `bundle::receipt`, ...) stay where they
// were before the folders; each names the one module that does the job.
pub use evidence::{canonical, keys, receipt};
pub use program::{builtin, disasm, format, matchers, protocol, sign};
pub use session::codec as session_codec;

pub use error::LoadError;
pub use layers::PackSet;
pub use limits::Limits;
pub use program::encode::encode;
pub use program::load::{Bundle, BundleInfo, Trust};
pub use program::sign::sign;
