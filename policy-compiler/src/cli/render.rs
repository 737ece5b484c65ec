//! `policyc render BUNDLE --target ecds|istio-envoyfilter|istio-wasmplugin --trusted-key PUB`:
//! turn a signed bundle into the control-plane object that delivers it to the Portcullis filter,
//! as YAML on stdout (or `-o FILE`), so CI can run `policyc render ... | kubectl apply -f -`.
//!
//! - `ecds`: an Envoy file-based ECDS DiscoveryResponse (`TypedExtensionConfig` holding the whole
//!   Wasm filter configuration), the file `envoy-configs/hot-reload` watches.
//! - `istio-envoyfilter`: an Istio `EnvoyFilter` with the EXTENSION_CONFIG (ECDS) and HTTP_FILTER
//!   (`config_discovery`) patches: body inspection (MCP), `allow_on_headers_stop_iteration`; and a
//!   LISTENER patch raising Envoy's buffer limit above the filter's body limit.
//! - `istio-wasmplugin`: an Istio `WasmPlugin` (header-only: HTTP egress decisions).
//!
//! The bundle must verify against one of the trusted keys (a bad bundle is never rendered). Its
//! base64 travels inline in the plugin configuration unless it is larger than
//! [`MAX_INLINE_BASE64`] (Kubernetes objects are stored in etcd, ~1.5 MiB per object): then render
//! refuses (Istio targets) and asks for `--bundle-url URL --sha256 HEX`, and the configuration references the
//! bundle server instead (`bundle.server`, docs/deploy-istio.md "Bundle server").

use std::fmt::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use super::build::{read_bytes, read_text};
use super::keys::read_public_keys;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// Largest bundle base64 rendered inline (900 KiB): keeps the whole object well under the
/// ~1.5 MiB etcd limit, with room for the rest of the object and `last-applied-configuration`.
pub const MAX_INLINE_BASE64: usize = 900 * 1024;

/// What to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Envoy file-based ECDS resource (a DiscoveryResponse with one TypedExtensionConfig).
    Ecds,
    /// Istio EnvoyFilter: EXTENSION_CONFIG (the Wasm filter) + HTTP_FILTER (config_discovery).
    IstioEnvoyfilter,
    /// Istio WasmPlugin (header-only: no MCP body inspection).
    IstioWasmplugin,
}

/// Arguments of `policyc render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The signed bundle (`policyc build --sign`).
    pub bundle: PathBuf,
    /// What to render.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Public key file trusted to sign bundles (repeatable). The bundle must verify with one of
    /// them; all of them go into `trusted_bundle_keys`.
    #[arg(long = "trusted-key", value_name = "PUBFILE", required = true)]
    pub trusted_keys: Vec<PathBuf>,
    /// Plugin configuration JSON for every key except `bundle` and `trusted_bundle_keys` (which
    /// render sets). Default: `{"signing_key":{"env":"PORTCULLIS_SIGNING_KEY"}}`.
    #[arg(long, value_name = "JSONFILE")]
    pub plugin_config: Option<PathBuf>,
    /// The Wasm module: a local file path (ecds; default /etc/portcullis/portcullis.wasm) or a
    /// URL (istio targets: https://... or oci://...; required).
    #[arg(long, value_name = "PATH|URL")]
    pub wasm: Option<String>,
    /// SHA-256 (hex) of the module (https URL) or of the OCI image manifest (oci:// URL), from
    /// scripts/package-wasm.
    #[arg(long, value_name = "HEX")]
    pub wasm_sha256: Option<String>,
    /// Object name (Istio) / ECDS resource and filter name.
    #[arg(long, default_value = "portcullis")]
    pub name: String,
    /// Namespace of the Istio object.
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
    /// Workload selector label KEY=VALUE (repeatable; Istio targets). Default istio=egressgateway.
    #[arg(long = "selector", value_name = "KEY=VALUE")]
    pub selectors: Vec<String>,
    /// Reference the bundle on a bundle server instead of inlining it (for bundles too large to
    /// inline). Needs --sha256.
    #[arg(long, value_name = "URL", requires = "sha256")]
    pub bundle_url: Option<String>,
    /// SHA-256 (hex) of the bundle file at --bundle-url; the filter accepts only that content.
    #[arg(long, value_name = "HEX", requires = "bundle_url")]
    pub sha256: Option<String>,
    /// Envoy cluster of the bundle server. Default: Istio's `outbound|PORT||HOST` of the URL
    /// (Istio targets) or the URL's host (ecds).
    #[arg(long, value_name = "NAME", requires = "bundle_url")]
    pub bundle_cluster: Option<String>,
    /// Write the YAML to this file instead of stdout.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const DEFAULT_WASM_FILE: &str = "/etc/portcullis/portcullis.wasm";
/// The listener buffer limit the Istio EnvoyFilter sets: above the filter's default
/// `limits.max_body_bytes` (4 MiB).
const LISTENER_BUFFER_BYTES: u64 = 8 * 1024 * 1024;

/// A usage error: the message for stderr.
struct Usage(String);

/// Run `policyc render`.
pub(crate) fn run(args: &RenderArgs) -> i32 {
    match render(args) {
        Ok(yaml) => {
            if let Some(out) = &args.out {
                match std::fs::write(out, yaml) {
                    Ok(()) => EXIT_OK,
                    Err(e) => {
                        eprintln!("error: cannot write `{}`: {e}", out.display());
                        EXIT_USAGE
                    }
                }
            } else {
                print!("{yaml}");
                EXIT_OK
            }
        }
        Err(code) => code,
    }
}

fn usage(msg: impl Into<String>) -> i32 {
    eprintln!("error: {}", msg.into());
    EXIT_USAGE
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The whole rendering; `Err` is the exit code (message already printed).
fn render(args: &RenderArgs) -> Result<String, i32> {
    let bytes = read_bytes(&args.bundle)?;
    let keys = read_public_keys(&args.trusted_keys)?;
    // A single-pack or a layered bundle (named by its set's name and version).
    let info = match bundle::PackSet::from_bytes(&bytes, &bundle::Trust::Keys(keys)) {
        Ok(b) => {
            let s = b.set_info();
            bundle::BundleInfo {
                pack: s.name.clone(),
                version: s.version.clone(),
                content_hash: s.content_hash,
                ..b.info().clone()
            }
        }
        Err(e) => {
            eprintln!(
                "error: {}: {e}; refusing to render a bundle the filter would refuse",
                args.bundle.display()
            );
            return Err(EXIT_FAILED);
        }
    };
    let mut key_lines = Vec::new();
    for p in &args.trusted_keys {
        key_lines.push(Value::String(read_text(p)?.trim().to_owned()));
    }
    let mut cfg = base_config(args)?;
    cfg.insert("bundle".into(), bundle_ref(args, &bytes)?);
    cfg.insert("trusted_bundle_keys".into(), Value::Array(key_lines));
    cfg.entry("signing_key")
        .or_insert_with(|| json!({"env": "PORTCULLIS_SIGNING_KEY"}));
    let plugin = Value::Object(cfg);
    let version = format!(
        "{}@{}+{}",
        info.pack,
        info.version,
        hex::encode(info.content_hash).get(..12).unwrap_or_default()
    );
    let doc = match args.target {
        Target::Ecds => ecds(args, &plugin, &version)?,
        Target::IstioEnvoyfilter => envoyfilter(args, &plugin, &version)?,
        Target::IstioWasmplugin => wasmplugin(args, plugin, &version)?,
    };
    let mut out = format!(
        "# Rendered by policyc render --target {}: pack `{}` version `{}`, bundle sha256 {}.\n",
        target_name(args.target),
        info.pack,
        info.version,
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    yaml(&doc, 0, &mut out);
    Ok(out)
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Ecds => "ecds",
        Target::IstioEnvoyfilter => "istio-envoyfilter",
        Target::IstioWasmplugin => "istio-wasmplugin",
    }
}

/// The user's plugin configuration (an object without the keys render owns).
fn base_config(args: &RenderArgs) -> Result<Map<String, Value>, i32> {
    let Some(path) = &args.plugin_config else {
        return Ok(Map::new());
    };
    let text = read_text(path)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("`{}` is not JSON: {e}", path.display())))?;
    let Value::Object(map) = value else {
        return Err(usage(format!(
            "`{}`: the plugin configuration must be a JSON object",
            path.display()
        )));
    };
    for owned in ["bundle", "trusted_bundle_keys"] {
        if map.contains_key(owned) {
            return Err(usage(format!(
                "`{}` sets `{owned}`, which render sets from the bundle and --trusted-key; remove it",
                path.display()
            )));
        }
    }
    Ok(map)
}

/// `bundle`: inline base64, or a bundle-server reference when --bundle-url is given.
fn bundle_ref(args: &RenderArgs, bytes: &[u8]) -> Result<Value, i32> {
    let Some(url) = &args.bundle_url else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        // An ECDS file is not a Kubernetes object: no etcd limit applies to it.
        if b64.len() > MAX_INLINE_BASE64 && args.target != Target::Ecds {
            return Err(usage(format!(
                "the bundle is {} bytes of base64, above the {} KiB that can travel inline in a \
                 Kubernetes object (etcd stores ~1.5 MiB per object); publish it on the bundle \
                 server and render with --bundle-url URL --sha256 {} (the bundle file's sha256)",
                b64.len(),
                MAX_INLINE_BASE64 / 1024,
                hex::encode(sha2::Sha256::digest(bytes))
            )));
        }
        return Ok(json!({ "inline_base64": b64 }));
    };
    let sha = args
        .sha256
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !is_hex64(&sha) {
        return Err(usage("--sha256 must be 64 hex digits"));
    }
    let actual = hex::encode(sha2::Sha256::digest(bytes));
    if sha != actual {
        return Err(usage(format!(
            "--sha256 {sha} is not the sha256 of {} ({actual}); publish that file at the URL",
            args.bundle.display()
        )));
    }
    let parsed = parse_url(url).map_err(|m| usage(format!("--bundle-url `{url}`: {}", m.0)))?;
    let cluster = match (&args.bundle_cluster, args.target) {
        (Some(c), _) => c.clone(),
        (None, Target::Ecds) => parsed.host.clone(),
        (None, _) => format!("outbound|{}||{}", parsed.port, parsed.host),
    };
    Ok(json!({ "server": {
        "cluster": cluster,
        "authority": parsed.authority,
        "path": parsed.path,
        "sha256": sha,
    }}))
}

struct Url {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

/// `http(s)://host[:port]/path` (no user info, no fragment).
fn parse_url(url: &str) -> Result<Url, Usage> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        return Err(Usage("must start with https:// or http://".into()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (
            rest.get(..i).unwrap_or_default(),
            rest.get(i..).unwrap_or("/"),
        ),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains('#') {
        return Err(Usage("needs a host, and no user info or fragment".into()));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| Usage(format!("bad port `{p}`")))?,
        ),
        None => (authority, default_port),
    };
    if host.is_empty() {
        return Err(Usage("needs a host".into()));
    }
    Ok(Url {
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// Names of VM environment variables the plugin configuration reads (`signing_key.env`).
fn env_keys(plugin: &Value) -> Vec<Value> {
    plugin
        .pointer("/signing_key/env")
        .and_then(Value::as_str)
        .map(|k| vec![Value::String(k.to_owned())])
        .unwrap_or_default()
}

fn compact(plugin: &Value) -> String {
    plugin.to_string()
}

/// The Envoy `Wasm` filter configuration (the ECDS resource's `typed_config`).
fn wasm_filter(args: &RenderArgs, plugin: &Value, code: Value) -> Value {
    json!({
        "@type": WASM_TYPE,
        "config": {
            "name": args.name,
            "root_id": "portcullis",
            "vm_config": {
                "vm_id": args.name,
                "runtime": "envoy.wasm.runtime.v8",
                "code": code,
                "environment_variables": { "host_env_keys": env_keys(plugin) },
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": compact(plugin),
            },
            "failure_policy": "FAIL_CLOSED",
            "allow_on_headers_stop_iteration": true,
        }
    })
}

fn wasm_sha(args: &RenderArgs) -> Result<Option<String>, i32> {
    match &args.wasm_sha256 {
        None => Ok(None),
        Some(s) if is_hex64(&s.to_ascii_lowercase()) => Ok(Some(s.to_ascii_lowercase())),
        Some(_) => Err(usage("--wasm-sha256 must be 64 hex digits")),
    }
}

fn wasm_url(args: &RenderArgs) -> Result<String, i32> {
    match &args.wasm {
        Some(u)
            if ["https://", "http://", "oci://", "file://"]
                .iter()
                .any(|p| u.starts_with(p)) =>
        {
            Ok(u.clone())
        }
        Some(u) => Err(usage(format!(
            "--wasm `{u}`: Istio fetches the module from a URL (https://, http://, oci:// or file://)"
        ))),
        None => Err(usage(
            "--wasm URL is required for Istio targets (oci://REGISTRY/portcullis/filter:TAG or https://...)",
        )),
    }
}

fn ecds(args: &RenderArgs, plugin: &Value, version: &str) -> Result<Value, i32> {
    let file = args
        .wasm
        .clone()
        .unwrap_or_else(|| DEFAULT_WASM_FILE.to_owned());
    if file.contains("://") {
        return Err(usage(
            "--wasm for --target ecds is a local file path the Envoy process can read",
        ));
    }
    if args.wasm_sha256.is_some() {
        return Err(usage(
            "--wasm-sha256 is for Istio targets (Envoy does not hash a local module); check the file \
             against portcullis.wasm.sha256 when you install it",
        ));
    }
    let code = json!({"local": {"filename": file}});
    Ok(json!({
        "version_info": version,
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": args.name,
            "typed_config": wasm_filter(args, plugin, code),
        }]
    }))
}

fn selector_labels(args: &RenderArgs) -> Result<Map<String, Value>, i32> {
    let mut labels = Map::new();
    for s in &args.selectors {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            _ => return Err(usage(format!("--selector `{s}` is not KEY=VALUE"))),
        }
    }
    if labels.is_empty() {
        labels.insert("istio".into(), Value::String("egressgateway".into()));
    }
    Ok(labels)
}

fn metadata(args: &RenderArgs, version: &str) -> Value {
    json!({
        "name": args.name,
        "namespace": args.namespace,
        "annotations": { "portcullis.dev/bundle": version },
    })
}

fn envoyfilter(args: &RenderArgs, plugin: &Value, version: &str) -> Result<Value, i32> {
    let url = wasm_url(args)?;
    let mut remote = json!({
        "http_uri": {
            // istio-agent fetches the module itself (and caches it) and hands Envoy a local file;
            // Envoy needs a cluster name here only to accept the configuration.
            "uri": url,
            "cluster": "portcullis-wasm",
            "timeout": "30s",
        }
    });
    if let (Some(sha), Some(obj)) = (wasm_sha(args)?, remote.as_object_mut()) {
        obj.insert("sha256".into(), Value::String(sha));
    }
    let context = if selector_labels(args)?.contains_key("istio") {
        "GATEWAY"
    } else {
        "SIDECAR_OUTBOUND"
    };
    Ok(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(args, version),
        "spec": {
            "workloadSelector": { "labels": selector_labels(args)? },
            "configPatches": [
                {
                    "applyTo": "EXTENSION_CONFIG",
                    "patch": {
                        "operation": "ADD",
                        "value": {
                            "name": args.name,
                            "typed_config": wasm_filter(args, plugin, json!({"remote": remote})),
                        }
                    }
                },
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": context,
                        "listener": { "filterChain": { "filter": {
                            "name": "envoy.filters.network.http_connection_manager",
                            "subFilter": { "name": "envoy.filters.http.router" },
                        }}}
                    },
                    "patch": {
                        "operation": "INSERT_BEFORE",
                        "value": {
                            "name": args.name,
                            "config_discovery": {
                                "config_source": { "ads": {}, "initial_fetch_timeout": "0s" },
                                "type_urls": [WASM_TYPE],
                            }
                        }
                    }
                },
                {
                    // Envoy buffers what the filter reads: above limits.max_body_bytes, or
                    // Envoy's default (1 MiB) answers first with a bare 413 or 500.
                    "applyTo": "LISTENER",
                    "match": { "context": context },
                    "patch": {
                        "operation": "MERGE",
                        "value": { "per_connection_buffer_limit_bytes": LISTENER_BUFFER_BYTES },
                    }
                }
            ]
        }
    }))
}

fn wasmplugin(args: &RenderArgs, plugin: Value, version: &str) -> Result<Value, i32> {
    let url = wasm_url(args)?;
    let env: Vec<Value> = env_keys(&plugin)
        .into_iter()
        .map(|k| json!({"name": k, "valueFrom": "HOST"}))
        .collect();
    let mut spec = json!({
        "selector": { "matchLabels": selector_labels(args)? },
        "url": url,
        "imagePullPolicy": "IfNotPresent",
        "pluginName": "portcullis",
        "phase": "AUTHZ",
        "type": "HTTP",
        "failStrategy": "FAIL_CLOSE",
        "vmConfig": { "env": env },
        "pluginConfig": plugin,
    });
    if let (Some(sha), Some(obj)) = (wasm_sha(args)?, spec.as_object_mut()) {
        obj.insert("sha256".into(), Value::String(sha));
    }
    let header_only = spec
        .pointer("/pluginConfig/mcp/paths")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    if !header_only {
        eprintln!(
            "note: a WasmPlugin cannot set allow_on_headers_stop_iteration, so it is for header-only \
             HTTP egress policies; set \"mcp\": {{\"paths\": []}} in --plugin-config, or use \
             --target istio-envoyfilter for MCP body inspection"
        );
    }
    Ok(json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": metadata(args, version),
        "spec": spec,
    }))
}

/// A plain YAML key (letters, digits, `_`, `-`, `.`, `/`, not starting with a digit or `-`).
fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
        && k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
}

fn key(k: &str) -> String {
    if plain_key(k) {
        k.to_owned()
    } else {
        Value::String(k.to_owned()).to_string()
    }
}

/// Scalars and empty collections in flow style (JSON is valid YAML for them).
fn inline(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) if m.is_empty() => Some("{}".into()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(_) | Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

/// Block-style YAML of `v` at `indent` spaces (strings double-quoted, so nothing is re-typed).
fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                match inline(val) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}{}: {s}", key(k));
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{}:", key(k));
                        yaml(val, indent.saturating_add(2), out);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                match inline(item) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}- {s}");
                    }
                    None => {
                        let mut inner = String::new();
                        yaml(item, indent.saturating_add(2), &mut inner);
                        // The first line of the item goes after "- ".
                        let first = inner.get(indent.saturating_add(2)..).unwrap_or_default();
                        let _ = write!(out, "{pad}- {first}");
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_yaml(v: &Value) -> String {
        let mut s = String::new();
        yaml(v, 0, &mut s);
        s
    }

    #[test]
    fn yaml_nests_lists_of_maps_and_quotes_strings() {
        let v = json!({"a": [{"b": 1, "c": {"d": "x: y"}}, "s", []], "@type": "t", "e": {}});
        assert_eq!(
            render_yaml(&v),
            "a:\n  - b: 1\n    c:\n      d: \"x: y\"\n  - \"s\"\n  - []\n\"@type\": \"t\"\ne: {}\n"
        );
    }

    #[test]
    fn urls_give_host_port_and_path() {
        let u = parse_url("https://bundles.example.com/packs/a.bundle")
            .ok()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("bundles.example.com", 443, "/packs/a.bundle")
        );
        let u = parse_url("http://b.internal:8080")
            .ok()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            (u.authority.as_str(), u.port, u.path.as_str()),
            ("b.internal:8080", 8080, "/")
        );
        assert!(parse_url("ftp://x/y").is_err());
        assert!(parse_url("https://user@x/y").is_err());
        assert!(parse_url("https://x:99999/y").is_err());
        assert!(parse_url("https:///y").is_err());
    }
}
