//! Fuzz the receipt and approval entry points that read untrusted text: `verify_log` over
//! arbitrary lines (receipts, access-log objects, garbage), `Receipt::from_json`, the approval
//! token reader, and the session record decoder. None may panic; a decoded session record must
//! re-encode to something that decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        0 => {
            let key = bundle::keys::signing_key_from_seed([1; 32]).verifying_key();
            let _ = bundle::receipt::verify_log(text.lines().enumerate(), &[key]);
        }
        1 => {
            if let Ok(r) = bundle::receipt::Receipt::from_json(&text) {
                let _ = r.hash_matches();
                let _ = bundle::receipt::Receipt::from_json(&r.to_json());
            }
        }
        2 => {
            let key = bundle::keys::signing_key_from_seed([1; 32]).verifying_key();
            let _ =
                bundle::approval::verify(&text, &[0; 32], "g", &[("g".into(), key)], 1_800_000_000);
        }
        _ => {
            if let Ok((s, c, e)) = bundle::session_codec::decode(rest) {
                let again = bundle::session_codec::encode(&s, &c, &e);
                assert!(bundle::session_codec::decode(&again).is_ok());
            }
        }
    }
});
