//! All of the Portcullis filter's logic, with no `proxy_wasm` dependency. The proxy is reached
//! only through the `Host` trait, so every path here runs under the mock host in tests and under
//! Envoy through `filter/wasm`.

pub mod normalize;
