//! All of the Portcullis filter's logic, with no `proxy_wasm` dependency. The proxy is reached
//! only through the [`Host`] trait, so every path here runs under the mock host in tests and under
//! Envoy through `filter/wasm`.
//!
//! The modules are the pipeline, top to bottom; each imports only the ones below it:
//!
//! | module | stage |
//! |---|---|
//! | `root/` | the root context: [`Plugin`] loads a configuration, runs the timer, pulls bundles |
//! | `stream/` | the HTTP context: [`Stream`] reads a request, has it decided, enforces, answers |
//! | `results/` | the response path: lists filtered, tool results and server requests judged |
//! | `decide/` | one request's decision: evaluate, resolve, record and seal |
//! | `credentials/` | the agent's credential headers per destination; minted per-action credentials |
//! | `session/` | session records in shared data, this worker's tracker, the one CAS cycle |
//! | `policy/` | the policy in force and what its pack reads |
//! | `normalize/`, `identity` | a request as actions; who acts and in which session |
//! | `respond`, `rules` | the shapes of the filter's answers; its own rule names |
//! | `config/` | the plugin configuration, parsed and checked |
//! | `host`, `limits`, `metrics`, `error`, `bench` | the seam, the bounds, the counters, the errors |

mod approve;
mod bench;
mod config;
mod credentials;
mod decide;
mod error;
pub mod host;
mod identity;
pub mod limits;
mod metrics;
#[cfg(any(test, feature = "test-util"))]
pub mod mock;
pub mod normalize;
mod policy;
mod respond;
mod results;
mod root;
mod rules;
mod session;
mod stream;

pub use config::{Config, ConfigError, parse as parse_config};
pub use error::{FilterError, PullError};
pub use host::{FilterAction, Host};
pub use root::Plugin;
pub use root::bundle_pull::BundlePuller;
pub use session::{LAYOUT_KEY, slot_key_of};
pub use stream::Stream;
