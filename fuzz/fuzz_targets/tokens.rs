//! Fuzz the task-grant and release readers (`bundle::grant::verify`, `bundle::release::verify`).
//! Modes 0 and 1 read arbitrary text as a token; modes 2 and 3 sign arbitrary bytes as the payload
//! with a configured key, so the claims checks behind the signature are reached. None may panic,
//! and a payload that verifies must be exactly what `mint` writes for the claims read from it.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use libfuzzer_sys::fuzz_target;

use bundle::{grant, release};

const NOW: u64 = 1_800_000_000;

fn signed(domain: &[u8], payload: &[u8], key: &ed25519_dalek::SigningKey) -> String {
    let sig = key.sign(&[domain, payload].concat());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    )
}

fn nonce(id: &str) -> [u8; 16] {
    let raw = hex::decode(id).expect("a verified id is hex");
    <[u8; 16]>::try_from(raw.as_slice()).expect("a verified id has 16 bytes")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = bundle::keys::signing_key_from_seed([1; 32]);
    let keys = [key.verifying_key()];
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        0 => {
            let _ = grant::verify(&text, &keys, "p", NOW);
        }
        1 => {
            let _ = release::verify(&text, &keys, NOW);
        }
        2 => {
            let t = signed(grant::GRANT_DOMAIN, rest, &key);
            let Ok(g) = grant::verify(&t, &keys, "p", NOW) else {
                return;
            };
            assert_eq!(g.principal, "p");
            let _ = (g.allows_tool("read_file"), g.allows_host("API.example"));
            let again = grant::mint(
                &grant::GrantClaims {
                    intent: g.intent.clone(),
                    principal: g.principal.clone(),
                    run: g.run.clone(),
                    tools: g.tools.clone(),
                    hosts: g.hosts.clone(),
                    issued_s: g.issued_s,
                    expires_s: g.expires_s,
                    nonce: nonce(&g.grant_id),
                },
                &key,
            );
            assert_eq!(again, t, "a verified grant is exactly what mint writes");
        }
        _ => {
            let t = signed(release::RELEASE_DOMAIN, rest, &key);
            let Ok(r) = release::verify(&t, &keys, NOW) else {
                return;
            };
            let again = release::mint(
                &release::ReleaseClaims {
                    principal: r.principal.clone(),
                    reason: r.reason.clone(),
                    issued_s: r.issued_s,
                    nonce: nonce(&r.release_id),
                },
                &key,
            );
            assert_eq!(again, t, "a verified release is exactly what mint writes");
        }
    }
});
