//! All of the Portcullis filter's logic, with no `proxy_wasm` dependency. The proxy is reached
//! only through the `Host` trait, so every path here runs under the mock host in tests and under
//! Envoy through `filter/wasm`.

pub mod bundle_pull;
pub mod config;
mod decide;
pub mod host;
mod identity;
pub mod mock;
pub mod normalize;
pub mod plugin;
pub mod request;
pub mod respond;
mod response;
pub mod session_store;

pub use host::Host;
pub use plugin::Plugin;
pub use request::{FilterAction, Stream};
