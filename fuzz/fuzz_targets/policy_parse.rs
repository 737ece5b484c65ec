//! Fuzz the policy parser and, when it parses, code generation and loading of the result.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = policy::syntax::parse(src) {
        if let Ok(bytes) = policy::codegen::compile(&p) {
            let loaded = bundle::Bundle::from_bytes(&bytes, &bundle::Trust::AllowUnsigned);
            assert!(loaded.is_ok(), "a compiled policy must load: {loaded:?}");
        }
    }
});
