//! The fixed test keys, a policy compiled and signed in process, and the plugin configuration
//! around it: the one copy every test, bench and runner uses (`testdata/scenarios/README.md`,
//! "Fixed test keys and clock").

use std::path::Path;

use base64::Engine as _;
use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

/// Seed (all 32 bytes) of the key that signs test bundles; the configurations trust it.
pub const BUNDLE_KEY_SEED: u8 = 1;
/// Seed of the filter's receipt signing key.
pub const RECEIPT_KEY_SEED: u8 = 2;
/// Seed of the approver's key (`release-managers`).
pub const APPROVER_KEY_SEED: u8 = 3;
/// Seed of a key no configuration trusts (forged approvals).
pub const STRANGER_KEY_SEED: u8 = 4;

/// The clock's start, ms since the Unix epoch (`START_MS`).
pub const START_MS: u64 = 1_800_000_000_000;

/// The deterministic test key with this seed.
pub fn key(seed: u8) -> SigningKey {
    signing_key_from_seed([seed; 32])
}

/// The public key line (`portcullis-ed25519-public:...`) of the test key with this seed.
pub fn public_key_line(seed: u8) -> String {
    format_verifying_key(&key(seed).verifying_key())
}

/// The secret key line (`portcullis-ed25519-secret:...`) of the test key with this seed.
pub fn secret_key_line(seed: u8) -> String {
    format_signing_key(&key(seed))
}

/// `source` (policy language) parsed, compiled and signed with the bundle key.
pub fn signed_bundle(source: &str) -> Result<Vec<u8>, String> {
    let ast = policy::syntax::parse(source).map_err(|d| format!("policy does not parse: {d:?}"))?;
    let unsigned =
        policy::codegen::compile(&ast).map_err(|e| format!("policy does not compile: {e:?}"))?;
    bundle::sign(&unsigned, &key(BUNDLE_KEY_SEED)).map_err(|e| format!("signing the bundle: {e:?}"))
}

/// The policy file at `path` compiled and signed with the bundle key, as standard base64.
pub fn signed_bundle_b64(path: &Path) -> Result<String, String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let signed = signed_bundle(&src).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signed))
}

/// The plugin configuration for the policy file at `path`: the bundle inline, the bundle key
/// trusted, receipts signed with the receipt key; `extra`'s members are added at the top level
/// (replacing a base member of the same name).
pub fn plugin_config(path: &Path, extra: &Value) -> Result<String, String> {
    let mut c = json!({
        "bundle": { "inline_base64": signed_bundle_b64(path)? },
        "trusted_bundle_keys": [public_key_line(BUNDLE_KEY_SEED)],
        "signing_key": { "inline": secret_key_line(RECEIPT_KEY_SEED) },
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    Ok(c.to_string())
}

/// The placeholders of the scenario format and what they stand for, `{{bundle}}` being
/// `bundle_b64`.
pub fn placeholders(bundle_b64: &str) -> Vec<(String, String)> {
    vec![
        ("{{bundle_pub}}".into(), public_key_line(BUNDLE_KEY_SEED)),
        (
            "{{receipt_secret}}".into(),
            secret_key_line(RECEIPT_KEY_SEED),
        ),
        ("{{receipt_pub}}".into(), public_key_line(RECEIPT_KEY_SEED)),
        (
            "{{approver_pub}}".into(),
            public_key_line(APPROVER_KEY_SEED),
        ),
        (
            "{{stranger_pub}}".into(),
            public_key_line(STRANGER_KEY_SEED),
        ),
        ("{{bundle}}".into(), bundle_b64.to_owned()),
    ]
}

/// `text` with every placeholder of `map` replaced.
pub fn fill(text: &str, map: &[(String, String)]) -> String {
    map.iter()
        .fold(text.to_owned(), |acc, (k, v)| acc.replace(k.as_str(), v))
}

/// Every string value inside `v` filled (see [`fill`]).
pub fn fill_json(v: &mut Value, map: &[(String, String)]) {
    match v {
        Value::String(s) => *s = fill(s, map),
        Value::Array(items) => items.iter_mut().for_each(|x| fill_json(x, map)),
        Value::Object(members) => members.values_mut().for_each(|x| fill_json(x, map)),
        _ => {}
    }
}

/// RFC 7386 JSON merge patch: objects merge member by member, any other value replaces, `null`
/// deletes the member.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The base plugin configuration of the scenario format, placeholders unfilled.
pub fn scenario_base_config() -> Value {
    json!({
        "bundle": { "inline_base64": "{{bundle}}" },
        "trusted_bundle_keys": ["{{bundle_pub}}"],
        "signing_key": { "inline": "{{receipt_secret}}" },
        "approvers": { "release-managers": ["{{approver_pub}}"] },
        "context_services": {
            "risk": { "cluster": "context-risk", "authority": "risk.internal", "path": "/decide" }
        },
        "mcp": { "paths": ["/mcp"], "server_name": "workbench" }
    })
}

/// The scenario format's base configuration for the policy file at `path`, placeholders filled
/// (what a scenario without `config` runs with).
pub fn scenario_config(path: &Path) -> Result<String, String> {
    let mut c = scenario_base_config();
    fill_json(&mut c, &placeholders(&signed_bundle_b64(path)?));
    Ok(c.to_string())
}

/// The last receipt in a `wasm.portcullis.receipt` filter state value (one receipt JSON, or an
/// array of them).
pub fn parse_receipt(text: &str) -> Result<bundle::receipt::Receipt, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("receipt is not JSON: {e}: {text}"))?;
    let last = match &v {
        Value::Array(a) => a.last().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    bundle::receipt::Receipt::from_json(&last.to_string())
        .map_err(|e| format!("receipt does not parse: {e}"))
}
