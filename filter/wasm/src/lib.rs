//! proxy-wasm glue: implements `filter_core::Host` over the proxy-wasm ABI. Thin by design.
