//! A proxy-wasm (ABI 0.2.1) host on wasmtime that loads the built Portcullis `.wasm`.
