//! Evidence: what the filter writes about each decision and what a SOC verifies, with no bundle
//! and no filter at hand.
//!
//! Contract: [`receipt`]s are hash-chained and signed over their [`canonical`] JSON form, with
//! [`keys`] named by a key id derived from the public key; reading or verifying any of them never
//! panics on hostile input and reports a typed error.

pub mod canonical;
pub mod keys;
pub mod receipt;
