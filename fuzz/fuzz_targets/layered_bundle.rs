//! Fuzz `PackSet::from_bytes` (layered bundles, docs/bundle-format.md "Layered bundles"): it must
//! never panic, and a set that loads must evaluate any action without panicking. The first byte
//! picks the mode: raw bytes (the envelope and the single-pack fallback), or the rest as an
//! envelope body behind a correct header and content hash (the manifest and pack decoders, which
//! a random hash would otherwise hide).
#![no_main]

use bundle::{PackSet, Trust};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn wrap(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(&bundle::layers::SET_MAGIC);
    out.extend_from_slice(&bundle::layers::SET_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&Sha256::digest(body));
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn actions() -> Vec<bundle::action::Action> {
    [
        r#"{"kind":"mcp","operation":"tools/call","tool":"paste","target":{"server":"payments-mcp"},"identity":{"agent":{"id":"agent-payments-1","auth":"jwt"}}}"#,
        r#"{"kind":"http","operation":"POST","target":{"host":"api.stripe.com","port":443,"path":"/v1/refunds"},"identity":{"workload":{"id":"spiffe://c/ns/payments/sa/x","auth":"mtls"}}}"#,
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
    if let Ok(set) = PackSet::from_bytes(&bytes, &Trust::AllowUnsigned) {
        let s = bundle::session::SessionState::new(1_800_000_000_000);
        for a in actions() {
            let (_, outcomes) = set.evaluate_layered(&a, &s, 1_800_000_000_000);
            let _ = set.records(&outcomes);
        }
    }
});
