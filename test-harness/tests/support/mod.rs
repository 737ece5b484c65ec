//! Shared by the wasm test binaries: the fixed test keys and placeholders of
//! `testdata/scenarios/README.md`, policy compilation, and the base plugin configuration.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
use serde_json::{Value, json};

pub const START_MS: u64 = 1_800_000_000_000;

pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/scenarios")
}

pub type Failure = String;

pub fn placeholders(bundle_b64: &str) -> Vec<(String, String)> {
    let public =
        |seed: u8| format_verifying_key(&signing_key_from_seed([seed; 32]).verifying_key());
    vec![
        ("{{bundle_pub}}".into(), public(1)),
        (
            "{{receipt_secret}}".into(),
            format_signing_key(&signing_key_from_seed([2; 32])),
        ),
        ("{{receipt_pub}}".into(), public(2)),
        ("{{approver_pub}}".into(), public(3)),
        ("{{stranger_pub}}".into(), public(4)),
        ("{{bundle}}".into(), bundle_b64.to_string()),
    ]
}

pub fn fill(text: &str, map: &[(String, String)]) -> String {
    map.iter()
        .fold(text.to_string(), |acc, (k, v)| acc.replace(k.as_str(), v))
}

pub fn fill_json(v: &mut Value, map: &[(String, String)]) {
    match v {
        Value::String(s) => *s = fill(s, map),
        Value::Array(items) => items.iter_mut().for_each(|x| fill_json(x, map)),
        Value::Object(members) => members.values_mut().for_each(|x| fill_json(x, map)),
        _ => {}
    }
}

/// RFC 7386 JSON merge patch.
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

pub fn base_config() -> Value {
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

pub fn compile_policy(path: &Path) -> Result<String, Failure> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ast = policy::syntax::parse(&src)
        .map_err(|d| format!("{}: policy does not parse: {d:?}", path.display()))?;
    let unsigned = policy::codegen::compile(&ast)
        .map_err(|e| format!("{}: policy does not compile: {e:?}", path.display()))?;
    let signed = bundle::sign(&unsigned, &signing_key_from_seed([1; 32]))
        .map_err(|e| format!("signing the bundle: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signed))
}

/// The base configuration with the placeholders filled for `policy` (relative to
/// `testdata/scenarios`).
pub fn config_for(policy: &str) -> String {
    let b64 = compile_policy(&scenarios_dir().join(policy)).unwrap_or_else(|e| panic!("{e}"));
    let mut c = base_config();
    fill_json(&mut c, &placeholders(&b64));
    c.to_string()
}

/// The last receipt in a `wasm.portcullis.receipt` filter state value (one receipt, or an array).
pub fn parse_receipt(text: &str) -> Result<bundle::receipt::Receipt, Failure> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("receipt is not JSON: {e}: {text}"))?;
    let last = match &v {
        Value::Array(a) => a.last().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    bundle::receipt::Receipt::from_json(&last.to_string())
        .map_err(|e| format!("receipt does not parse: {e}"))
}
