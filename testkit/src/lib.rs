//! Test support shared by every layer of Portcullis (a dev-dependency only):
//!
//! - [`format`]: the scenario file format of `testdata/scenarios/README.md` as types that refuse
//!   members they do not define, and [`corpus`] to find and load the files;
//! - [`FilterUnderTest`]: what a scenario step needs from a filter (the mock host and the built
//!   `.wasm` implement it next to their runners), [`run_scenario`] / [`run_corpus`] to drive one,
//!   and [`check`], the one comparison of an expectation with what was observed;
//! - [`fixtures`]: the fixed test keys, a policy compiled and signed in process, and the plugin
//!   configuration around it.

pub mod check;
pub mod corpus;
mod drive;
mod filter;
pub mod fixtures;
pub mod format;

pub use check::check;
pub use drive::{body_bytes, run_corpus, run_scenario, run_with, trailers_guard};
pub use filter::{Call, Failure, FilterUnderTest, Log, Observed, Reply, Setup};
pub use format::Scenario;
