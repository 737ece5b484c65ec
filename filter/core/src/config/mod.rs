//! Plugin configuration: the JSON Envoy hands the filter at `on_configure`, parsed once by a pure
//! function ([`parse`]) into a typed [`Config`]. Unknown keys, wrong types, unparsable keys and
//! dangling references are errors, never defaults. Every key and default is documented in
//! `docs/filter-config.md`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::limits::MAX_CONFIG_BYTES;
use crate::normalize::NormalizeConfig;

pub(crate) mod approval_service;
pub(crate) mod bundle_server;
pub(crate) mod credentials;
pub(crate) mod state;

pub use bundle_server::BundleServer;
pub use credentials::CredentialsConfig;
pub use state::EtcdConfig;

/// Why a configuration was refused. The filter then denies every action with this as the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid plugin configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where the receipt signing key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKeySource {
    /// The secret key line itself (`portcullis-ed25519-secret:...`).
    Inline(String),
    /// The name of a VM environment variable holding the secret key line.
    Env(String),
}

/// Where the session key of a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKeySource {
    /// The `mcp-session-id` header (legacy MCP sessions).
    McpSessionId,
    /// A configured request header (e.g. an agent-run id set by a trusted gateway).
    Header(String),
    /// The trace id of the W3C `traceparent` header.
    Traceparent,
}

impl SessionKeySource {
    /// Where the key is read, for logs: `mcp-session-id`, `header x-agent-run`, `traceparent`.
    pub fn describe(&self) -> String {
        match self {
            SessionKeySource::McpSessionId => "mcp-session-id".to_owned(),
            SessionKeySource::Header(h) => format!("header {h}"),
            SessionKeySource::Traceparent => "traceparent".to_owned(),
        }
    }
}

/// What the filter does with a request header whose name has an `_` (`http.underscore_headers`;
/// docs/filter-normalization.md, "Header names with `_`").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Refuse the request (400), as Envoy's `headers_with_underscores_action: REJECT_REQUEST`
    /// does (default).
    #[default]
    Reject,
    /// Remove such headers before anything reads them: neither the policy nor the server sees
    /// them.
    Drop,
    /// Pass them on, read as other headers (for upstreams known to keep `_` and `-` apart).
    Allow,
}

/// What the filter does when its own machinery fails (shared data, call-out dispatch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Deny the action (default).
    #[default]
    Closed,
    /// Let the action's own decision stand even though session state could not be saved.
    Open,
}

/// JWT identity: claims of a token Envoy's `jwt_authn` verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The `payload_in_metadata` name of the provider.
    pub provider: String,
    /// Claim path (dot-separated) naming the agent, if any.
    pub agent_claim: Option<String>,
    /// Claim path (dot-separated) naming the human principal, if any.
    pub human_claim: Option<String>,
    /// Claim path naming the intent the token was issued for (a trusted intent source).
    pub intent_claim: Option<String>,
    /// Claim path naming the run (`session.run: claim`).
    pub run_claim: Option<String>,
}

/// Headers trusted to carry identity (only when the operator says an inner hop sets them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderIdentity {
    /// Header naming the agent.
    pub agent: Option<String>,
    /// Header naming the human.
    pub human: Option<String>,
    /// Header naming the workload.
    pub workload: Option<String>,
}

/// Where identity comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Take the workload from the mTLS peer URI SAN.
    pub mtls: bool,
    /// JWT claims, if configured.
    pub jwt: Option<JwtIdentity>,
    /// Trusted headers, if configured.
    pub headers: Option<HeaderIdentity>,
    /// In a sidecar: the local workload from Envoy's node metadata (`NAMESPACE`,
    /// `WORKLOAD_NAME`) is the workload when no other source names one.
    pub node_workload: bool,
}

/// A context service for DEFER decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextService {
    /// The Envoy cluster to call.
    pub cluster: String,
    /// `:authority` of the call.
    pub authority: String,
    /// `:path` of the call.
    pub path: String,
}

/// Receipt signing cadence and the checkpoint timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptConfig {
    /// Sign an ALLOW receipt at least every this many receipts.
    pub checkpoint_every: u32,
    /// Sign when the oldest unsigned receipt is older than this.
    pub max_unsigned_ms: u64,
    /// Timer period for checkpoints of idle sessions (0: no timer).
    pub tick_ms: u64,
    /// What the `x-portcullis-receipt` header carries (the access log always has the whole
    /// receipt).
    pub header: ReceiptHeader,
}

/// What the `x-portcullis-receipt` request/response header carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptHeader {
    /// The whole receipt, base64url of its JSON line (about 1.5 KB), so the agent and the
    /// upstream can verify it on their own.
    #[default]
    Full,
    /// The receipt id only (the hex SHA-256 hash, 64 characters): enough to find the receipt in
    /// the access log, for a fraction of the header bytes.
    Id,
    /// No receipt header (the decision header stays).
    None,
}

/// Session store settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Where the session key comes from.
    pub key: SessionKeySource,
    /// Sessions one worker tracks before evicting the least recently used.
    pub max_sessions: usize,
    /// A session idle for longer than this is expired.
    pub idle_ttl_ms: u64,
    /// Shared-data slots session records live in (the process-wide bound on session keys).
    pub slots: u32,
    /// An MCP session id counts only once its `initialize` answer passed through this Envoy; any
    /// other id is `missing` (an Envoy restart lost it, or the client made it up).
    pub require_initialize: bool,
    /// What a run (the session of a request of a known principal) is.
    pub run: RunSource,
    /// Sessions one principal keeps records for; a new one beyond it ends its oldest.
    pub max_per_principal: usize,
}

/// What a run is: the session a request of a known principal is decided in
/// (`docs/containment.md`, "Runs"). Requests of an unknown principal always use the session key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunSource {
    /// The request's session key; a keyless request joins the principal's current run (the
    /// session it acted in last), else `run/<principal>`.
    #[default]
    Key,
    /// The principal itself: every request of it is in `run/<principal>`.
    Principal,
    /// The principal plus the run id of the verified JWT (`identity.jwt.run_claim`):
    /// `run/<principal>/<run id>`; without one, as `key`.
    Claim,
    /// The principal plus the run id of the verified task grant (`x-portcullis-grant`, its
    /// `run`): `run/<principal>/<run id>`; without one, as `key`.
    Grant,
}

/// The parsed plugin configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The signed bundle bytes (empty when a bundle server is configured without an initial
    /// inline bundle: nothing is enforced until the first good fetch, so every request is denied).
    pub bundle: Vec<u8>,
    /// Where to pull bundles from (`bundle.server`), if anywhere.
    pub bundle_server: Option<BundleServer>,
    /// Keys a bundle must be signed by (at least one).
    pub trusted_bundle_keys: Vec<VerifyingKey>,
    /// The receipt signing key.
    pub signing_key: SigningKeySource,
    /// Receipt cadence.
    pub receipts: ReceiptConfig,
    /// Largest request body buffered (bytes).
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// Path prefixes that are MCP endpoints.
    pub mcp_paths: Vec<String>,
    /// Path prefixes of the legacy HTTP+SSE transport (2024-11-05): its message endpoint
    /// (`POST /messages?sessionId=...`) and event stream (`GET /sse`). MCP too.
    pub mcp_legacy_paths: Vec<String>,
    /// Hosts whose servers read request paths literally: for them a double-encoded escape or an
    /// empty path segment is not refused (`http.literal_path_hosts`).
    pub literal_path_hosts: Vec<String>,
    /// What a request header named with an `_` gets (`http.underscore_headers`).
    pub underscore_headers: UnderscoreHeaders,
    /// The MCP server's name (`target.server`).
    pub server_name: String,
    /// Accept JSON-RPC batches (every element is evaluated).
    pub allow_batches: bool,
    /// Buffer and inspect plain HTTP request bodies.
    pub inspect_http_bodies: bool,
    /// Sessions.
    pub session: SessionConfig,
    /// Identity sources.
    pub identity: IdentityConfig,
    /// Approver groups -> keys that may sign approvals for them.
    pub approvers: BTreeMap<String, Vec<VerifyingKey>>,
    /// Context services by name.
    pub context_services: BTreeMap<String, ContextService>,
    /// The approval service that answers STEP_UP in-band (`None`: the JSON-RPC error only).
    pub approval_service: Option<approval_service::ApprovalService>,
    /// Failure mode.
    pub failure_mode: FailureMode,
    /// Orchestrator keys a task grant (`x-portcullis-grant`) must be signed by.
    pub task_grant_keys: Vec<VerifyingKey>,
    /// Operator keys a release must be signed by.
    pub release_keys: Vec<VerifyingKey>,
    /// Signed releases (`policyc release`), applied when the configuration loads.
    pub releases: Vec<String>,
    /// The shared state store (`state.backend: etcd`); `None`: this Envoy's shared data only.
    pub state: Option<EtcdConfig>,
    /// The agent's credential headers stripped per destination, and injectable credentials.
    pub credentials: CredentialsConfig,
    /// Benchmark builds only: where the request path stops.
    #[cfg(feature = "bench-cuts")]
    pub bench_cut: Option<crate::bench::Cut>,
}

impl Config {
    /// The normalization settings of this configuration (what `normalize` reads of it).
    pub fn normalize_config(&self) -> NormalizeConfig {
        NormalizeConfig {
            mcp_paths: self.mcp_paths.clone(),
            mcp_legacy_paths: self.mcp_legacy_paths.clone(),
            literal_path_hosts: self.literal_path_hosts.clone(),
            server_name: self.server_name.clone(),
            max_body_bytes: self.max_body_bytes,
            max_json_depth: self.max_json_depth,
            inspect_http_bodies: self.inspect_http_bodies,
            allow_batches: self.allow_batches,
            ..NormalizeConfig::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    bundle: RawBundle,
    trusted_bundle_keys: Vec<String>,
    #[serde(default)]
    task_grant_keys: Vec<String>,
    #[serde(default)]
    release_keys: Vec<String>,
    #[serde(default)]
    releases: Vec<String>,
    signing_key: RawSigningKey,
    #[serde(default)]
    receipts: RawReceipts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    mcp: RawMcp,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    approvers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    context_services: BTreeMap<String, RawContextService>,
    #[serde(default)]
    approval_service: Option<approval_service::RawApprovalService>,
    #[serde(default)]
    failure_mode: Option<String>,
    #[serde(default)]
    state: state::RawState,
    #[serde(default)]
    credentials: credentials::RawCredentials,
    #[cfg(feature = "bench-cuts")]
    #[serde(default)]
    bench_cut: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundle {
    inline_base64: Option<String>,
    /// Pull bundles from a bundle server (`crate::root::bundle_pull`).
    server: Option<bundle_server::RawBundleServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigningKey {
    inline: Option<String>,
    env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReceipts {
    checkpoint_every: Option<u32>,
    max_unsigned_ms: Option<u64>,
    tick_ms: Option<u64>,
    header: Option<ReceiptHeader>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    max_json_depth: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMcp {
    paths: Option<Vec<String>>,
    legacy_paths: Option<Vec<String>>,
    server_name: Option<String>,
    allow_batches: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    inspect_bodies: Option<bool>,
    literal_path_hosts: Option<Vec<String>>,
    underscore_headers: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSession {
    key: Option<RawSessionKey>,
    max_sessions: Option<usize>,
    idle_ttl_s: Option<u64>,
    slots: Option<u64>,
    require_initialize: Option<bool>,
    run: Option<String>,
    max_per_principal: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessionKey {
    source: String,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    mtls: Option<bool>,
    jwt: Option<RawJwt>,
    headers: Option<RawHeaders>,
    node_workload: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    provider: String,
    agent_claim: Option<String>,
    human_claim: Option<String>,
    intent_claim: Option<String>,
    run_claim: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    agent: Option<String>,
    human: Option<String>,
    workload: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContextService {
    cluster: String,
    authority: Option<String>,
    path: Option<String>,
}

/// Default: sessions one principal keeps records for.
pub const DEFAULT_MAX_PER_PRINCIPAL: usize = 32;
/// Most sessions one principal may keep (its record lists their keys).
pub const MAX_PER_PRINCIPAL: usize = 256;
/// Default: sign at least every 16 receipts.
pub const DEFAULT_CHECKPOINT_EVERY: u32 = 16;
/// Default: sign when the oldest unsigned receipt is 5 s old.
pub const DEFAULT_MAX_UNSIGNED_MS: u64 = 5_000;
/// Default timer period.
pub const DEFAULT_TICK_MS: u64 = 1_000;
/// Default body limit (4 MiB): what the MCP TypeScript SDK's servers accept (`4mb`); the Python
/// SDK's servers set no limit. Envoy's buffer limit must be above it (the shipped configurations
/// set 8 MiB), or Envoy answers a bare 413 first.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default JSON depth limit.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Default session cap per worker.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default number of session slots: 32,768 keys in shared data for the whole process, about 3x
/// the default per-worker cap, so a new session rarely finds all of its probes live.
pub const DEFAULT_SESSION_SLOTS: u32 = 32_768;
/// The most session slots a configuration may ask for (2^20; a slot holds at most about 1.4 KiB).
pub const MAX_SESSION_SLOTS: u32 = 1 << 20;
/// Default idle ttl (1 hour).
pub const DEFAULT_IDLE_TTL_S: u64 = 3_600;

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(err(format!(
            "`{field}`: `{name}` is not a valid header name"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

fn public_key(field: &str, text: &str) -> Result<VerifyingKey, ConfigError> {
    bundle::keys::parse_verifying_key(text).map_err(|e| err(format!("`{field}`: {e}")))
}

/// Parse and validate a plugin configuration. Pure: no host access (the signing key named by an
/// environment variable is resolved later, by the plugin, through the host).
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(err(format!(
            "the configuration is larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(err("the configuration is empty (a bundle is required)"));
    }
    let raw: RawConfig =
        serde_json::from_slice(bytes).map_err(|e| err(format!("not valid: {e}")))?;

    let bundle_server = raw
        .bundle
        .server
        .map(bundle_server::parse_server)
        .transpose()
        .map_err(|e| err(format!("`bundle.server`: {e}")))?;
    let bundle = match (raw.bundle.inline_base64, &bundle_server) {
        (Some(b64), _) => {
            let bundle = STANDARD
                .decode(b64.trim())
                .map_err(|_| err("`bundle.inline_base64` is not valid base64"))?;
            if bundle.is_empty() {
                return Err(err("`bundle.inline_base64` is empty"));
            }
            bundle
        }
        (None, Some(_)) => Vec::new(),
        (None, None) => return Err(err("`bundle.inline_base64` is required")),
    };

    if raw.trusted_bundle_keys.is_empty() {
        return Err(err(
            "`trusted_bundle_keys` is empty: at least one key must sign the bundle",
        ));
    }
    let trusted_bundle_keys = raw
        .trusted_bundle_keys
        .iter()
        .map(|k| public_key("trusted_bundle_keys", k))
        .collect::<Result<Vec<_>, _>>()?;
    let task_grant_keys = raw
        .task_grant_keys
        .iter()
        .map(|k| public_key("task_grant_keys", k))
        .collect::<Result<Vec<_>, _>>()?;
    let release_keys = raw
        .release_keys
        .iter()
        .map(|k| public_key("release_keys", k))
        .collect::<Result<Vec<_>, _>>()?;
    if !raw.releases.is_empty() && release_keys.is_empty() {
        return Err(err(
            "`releases` needs `release_keys`: the keys a release must be signed by",
        ));
    }

    let signing_key = match (raw.signing_key.inline, raw.signing_key.env) {
        (Some(line), None) => {
            bundle::keys::parse_signing_key(&line)
                .map_err(|e| err(format!("`signing_key.inline`: {e}")))?;
            SigningKeySource::Inline(line)
        }
        (None, Some(var)) if !var.is_empty() => SigningKeySource::Env(var),
        (None, Some(_)) => return Err(err("`signing_key.env` is empty")),
        (Some(_), Some(_)) => {
            return Err(err(
                "`signing_key`: give either `inline` or `env`, not both",
            ));
        }
        (None, None) => return Err(err("`signing_key` needs `inline` or `env`")),
    };

    let receipts = ReceiptConfig {
        checkpoint_every: raw
            .receipts
            .checkpoint_every
            .unwrap_or(DEFAULT_CHECKPOINT_EVERY),
        max_unsigned_ms: raw
            .receipts
            .max_unsigned_ms
            .unwrap_or(DEFAULT_MAX_UNSIGNED_MS),
        tick_ms: raw.receipts.tick_ms.unwrap_or(DEFAULT_TICK_MS),
        header: raw.receipts.header.unwrap_or_default(),
    };
    if receipts.checkpoint_every == 0 {
        return Err(err("`receipts.checkpoint_every` must be at least 1"));
    }

    let max_body_bytes = raw.limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let max_json_depth = raw.limits.max_json_depth.unwrap_or(DEFAULT_MAX_JSON_DEPTH);
    if max_body_bytes == 0 || max_json_depth == 0 {
        return Err(err("`limits` values must be at least 1"));
    }

    let mcp_paths = raw.mcp.paths.unwrap_or_else(|| vec!["/mcp".to_owned()]);
    if let Some(p) = mcp_paths.iter().find(|p| !p.starts_with('/')) {
        return Err(err(format!("`mcp.paths`: `{p}` must start with `/`")));
    }
    let mcp_legacy_paths = raw
        .mcp
        .legacy_paths
        .unwrap_or_else(|| vec!["/messages".to_owned(), "/sse".to_owned()]);
    if let Some(p) = mcp_legacy_paths.iter().find(|p| !p.starts_with('/')) {
        return Err(err(format!(
            "`mcp.legacy_paths`: `{p}` must start with `/`"
        )));
    }
    let server_name = raw.mcp.server_name.unwrap_or_else(|| "mcp".to_owned());
    let mut literal_path_hosts = Vec::new();
    for h in raw.http.literal_path_hosts.unwrap_or_default() {
        match crate::normalize::host_of(&h) {
            Some(host) => literal_path_hosts.push(host),
            None => {
                return Err(err(format!(
                    "`http.literal_path_hosts`: `{h}` is not a host name or address"
                )));
            }
        }
    }

    let underscore_headers = match raw.http.underscore_headers.as_deref() {
        None | Some("reject") => UnderscoreHeaders::Reject,
        Some("drop") => UnderscoreHeaders::Drop,
        Some("allow") => UnderscoreHeaders::Allow,
        Some(other) => {
            return Err(err(format!(
                "`http.underscore_headers`: `{other}` is not `reject`, `drop` or `allow`"
            )));
        }
    };

    let key = match raw.session.key {
        None => SessionKeySource::McpSessionId,
        Some(k) => match (k.source.as_str(), k.name) {
            ("mcp-session-id", None) => SessionKeySource::McpSessionId,
            ("traceparent", None) => SessionKeySource::Traceparent,
            ("header", Some(name)) => {
                SessionKeySource::Header(header_name("session.key.name", &name)?)
            }
            ("header", None) => {
                return Err(err("`session.key.name` is required with `source: header`"));
            }
            ("mcp-session-id" | "traceparent", Some(_)) => {
                return Err(err(
                    "`session.key.name` is only allowed with `source: header`",
                ));
            }
            (other, _) => {
                return Err(err(format!(
                    "`session.key.source`: `{other}` is not one of `mcp-session-id`, `header`, `traceparent`"
                )));
            }
        },
    };
    let session = SessionConfig {
        key,
        max_sessions: raw.session.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
        idle_ttl_ms: raw
            .session
            .idle_ttl_s
            .unwrap_or(DEFAULT_IDLE_TTL_S)
            .saturating_mul(1000),
        slots: match raw.session.slots {
            None => DEFAULT_SESSION_SLOTS,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_SESSION_SLOTS).contains(n))
                .ok_or_else(|| {
                    err(format!(
                        "`session.slots`: {n} is not between 1 and {MAX_SESSION_SLOTS}"
                    ))
                })?,
        },
        require_initialize: raw.session.require_initialize.unwrap_or(false),
        run: match raw.session.run.as_deref() {
            None | Some("key") => RunSource::Key,
            Some("principal") => RunSource::Principal,
            Some("claim") => RunSource::Claim,
            Some("grant") => RunSource::Grant,
            Some(other) => {
                return Err(err(format!(
                    "`session.run`: `{other}` is not one of `key`, `principal`, `claim`, `grant`"
                )));
            }
        },
        max_per_principal: match raw.session.max_per_principal {
            None => DEFAULT_MAX_PER_PRINCIPAL,
            Some(n) if (1..=MAX_PER_PRINCIPAL).contains(&n) => n,
            Some(n) => {
                return Err(err(format!(
                    "`session.max_per_principal`: {n} is not between 1 and {MAX_PER_PRINCIPAL}"
                )));
            }
        },
    };
    if session.require_initialize && session.key != SessionKeySource::McpSessionId {
        return Err(err(
            "`session.require_initialize` needs `session.key.source` `mcp-session-id`: only the \
             MCP server's `initialize` answer says when such a session begins",
        ));
    }
    if session.max_sessions == 0 || session.idle_ttl_ms == 0 {
        return Err(err(
            "`session.max_sessions` and `session.idle_ttl_s` must be at least 1",
        ));
    }

    let jwt = match raw.identity.jwt {
        None => None,
        Some(j) => {
            if j.provider.is_empty() {
                return Err(err("`identity.jwt.provider` is empty"));
            }
            if j.agent_claim.is_none() && j.human_claim.is_none() {
                return Err(err(
                    "`identity.jwt` needs `agent_claim` or `human_claim` (or remove it)",
                ));
            }
            Some(JwtIdentity {
                provider: j.provider,
                agent_claim: j.agent_claim,
                human_claim: j.human_claim,
                intent_claim: j.intent_claim,
                run_claim: j.run_claim,
            })
        }
    };
    let headers = match raw.identity.headers {
        None => None,
        Some(h) => {
            let f = |field: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
                v.map(|n| header_name(field, &n)).transpose()
            };
            let h = HeaderIdentity {
                agent: f("identity.headers.agent", h.agent)?,
                human: f("identity.headers.human", h.human)?,
                workload: f("identity.headers.workload", h.workload)?,
            };
            if h.agent.is_none() && h.human.is_none() && h.workload.is_none() {
                return Err(err("`identity.headers` names no header (or remove it)"));
            }
            Some(h)
        }
    };
    let identity = IdentityConfig {
        mtls: raw.identity.mtls.unwrap_or(true),
        node_workload: raw.identity.node_workload.unwrap_or(false),
        jwt,
        headers,
    };
    if session.run == RunSource::Claim
        && identity.jwt.as_ref().is_none_or(|j| j.run_claim.is_none())
    {
        return Err(err(
            "`session.run: claim` needs `identity.jwt.run_claim`: the claim that names the run",
        ));
    }

    let mut approvers = BTreeMap::new();
    for (group, keys) in raw.approvers {
        if keys.is_empty() {
            return Err(err(format!("`approvers.{group}` lists no key")));
        }
        let field = format!("approvers.{group}");
        let keys = keys
            .iter()
            .map(|k| public_key(&field, k))
            .collect::<Result<Vec<_>, _>>()?;
        approvers.insert(group, keys);
    }

    let mut context_services = BTreeMap::new();
    for (name, s) in raw.context_services {
        if s.cluster.is_empty() {
            return Err(err(format!("`context_services.{name}.cluster` is empty")));
        }
        let path = s.path.unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') {
            return Err(err(format!(
                "`context_services.{name}.path` must start with `/`"
            )));
        }
        let authority = s.authority.unwrap_or_else(|| s.cluster.clone());
        context_services.insert(
            name,
            ContextService {
                cluster: s.cluster,
                authority,
                path,
            },
        );
    }

    let failure_mode = match raw.failure_mode.as_deref() {
        None | Some("closed") => FailureMode::Closed,
        Some("open") => FailureMode::Open,
        Some(other) => {
            return Err(err(format!(
                "`failure_mode`: `{other}` is not `closed` or `open`"
            )));
        }
    };

    let credentials = credentials::parse(raw.credentials, identity.jwt.is_some()).map_err(err)?;

    Ok(Config {
        bundle,
        bundle_server,
        trusted_bundle_keys,
        signing_key,
        receipts,
        max_body_bytes,
        max_json_depth,
        mcp_paths,
        mcp_legacy_paths,
        literal_path_hosts,
        underscore_headers,
        server_name,
        allow_batches: raw.mcp.allow_batches.unwrap_or(false),
        inspect_http_bodies: raw.http.inspect_bodies.unwrap_or(false),
        session,
        identity,
        approvers,
        context_services,
        approval_service: raw
            .approval_service
            .map(approval_service::parse)
            .transpose()
            .map_err(err)?,
        failure_mode,
        task_grant_keys,
        release_keys,
        releases: raw.releases,
        state: state::parse_state(raw.state).map_err(err)?,
        credentials,
        #[cfg(feature = "bench-cuts")]
        bench_cut: match raw.bench_cut.as_deref() {
            None => None,
            Some(name) => Some(crate::bench::Cut::from_name(name).ok_or_else(|| {
                err(format!(
                    "bench_cut: after_body, after_normalize, no_writes or no_receipts, not `{name}`"
                ))
            })?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};

    fn base() -> serde_json::Value {
        let pk = format_verifying_key(&signing_key_from_seed([1; 32]).verifying_key());
        let sk = format_signing_key(&signing_key_from_seed([2; 32]));
        serde_json::json!({
            "bundle": {"inline_base64": "UENMQg=="},
            "trusted_bundle_keys": [pk],
            "signing_key": {"inline": sk},
        })
    }

    fn parse_v(v: &serde_json::Value) -> Result<Config, ConfigError> {
        parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse_v(&base()).unwrap();
        assert_eq!(c.bundle, b"PCLB");
        assert_eq!(c.receipts.checkpoint_every, 16);
        assert_eq!(c.receipts.max_unsigned_ms, 5000);
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.max_json_depth, 64);
        assert_eq!(c.mcp_paths, vec!["/mcp".to_owned()]);
        assert_eq!(c.session.key, SessionKeySource::McpSessionId);
        assert_eq!(c.session.idle_ttl_ms, 3_600_000);
        assert_eq!(c.session.slots, 32_768);
        assert!(!c.session.require_initialize);
        assert!(c.identity.mtls);
        assert!(c.identity.jwt.is_none() && c.identity.headers.is_none());
        assert_eq!(c.failure_mode, FailureMode::Closed);
        assert!(!c.allow_batches);
        assert_eq!(c.underscore_headers, UnderscoreHeaders::Reject);
    }

    #[test]
    fn legacy_paths_and_literal_hosts_are_read() {
        let c = parse_v(&base()).unwrap();
        assert_eq!(
            c.mcp_legacy_paths,
            vec!["/messages".to_owned(), "/sse".to_owned()]
        );
        assert!(c.literal_path_hosts.is_empty());
        let mut v = base();
        v["mcp"] = serde_json::json!({"legacy_paths": []});
        v["http"] =
            serde_json::json!({"literal_path_hosts": ["Files.Internal.", "[::ffff:10.0.0.1]"]});
        let c = parse_v(&v).unwrap();
        assert!(c.mcp_legacy_paths.is_empty());
        for (value, mode) in [
            ("reject", UnderscoreHeaders::Reject),
            ("drop", UnderscoreHeaders::Drop),
            ("allow", UnderscoreHeaders::Allow),
        ] {
            let mut v = base();
            v["http"] = serde_json::json!({ "underscore_headers": value });
            assert_eq!(parse_v(&v).unwrap().underscore_headers, mode);
        }
        assert_eq!(
            c.literal_path_hosts,
            vec!["files.internal".to_owned(), "10.0.0.1".to_owned()]
        );
    }

    /// A release build (no `bench-cuts` feature) must never accept a cut: it would let requests
    /// through unenforced.
    #[cfg(not(feature = "bench-cuts"))]
    #[test]
    fn release_builds_refuse_bench_cut() {
        let mut c = base();
        c["bench_cut"] = "after_body".into();
        let e = parse_v(&c).unwrap_err();
        assert!(e.0.contains("bench_cut"), "{e}");
    }

    #[cfg(feature = "bench-cuts")]
    #[test]
    fn bench_builds_read_each_cut() {
        for (name, cut) in crate::bench::Cut::ALL {
            let mut c = base();
            c["bench_cut"] = name.into();
            assert_eq!(parse_v(&c).unwrap().bench_cut, Some(cut));
        }
        let mut c = base();
        c["bench_cut"] = "everything".into();
        assert!(parse_v(&c).is_err());
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        for (path, v) in [
            ("/", serde_json::json!({"bundel": 1})),
            ("/session", serde_json::json!({"idle_ttl": 5})),
            ("/identity", serde_json::json!({"mtsl": true})),
        ] {
            let mut c = base();
            if path == "/" {
                c.as_object_mut().unwrap().insert("bundel".into(), 1.into());
            } else {
                c.as_object_mut()
                    .unwrap()
                    .insert(path.trim_start_matches('/').into(), v);
            }
            let e = parse_v(&c).unwrap_err();
            assert!(e.0.contains("unknown field"), "{e}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                serde_json::json!({"bundle": {"inline_base64": "!!"}}),
                "not valid base64",
            ),
            (
                serde_json::json!({"bundle": {"server": {"cluster": "b"}}}),
                "missing field `path`",
            ),
            (
                serde_json::json!({"trusted_bundle_keys": []}),
                "at least one key",
            ),
            (
                serde_json::json!({"trusted_bundle_keys": ["nope"]}),
                "trusted_bundle_keys",
            ),
            (serde_json::json!({"signing_key": {}}), "`inline` or `env`"),
            (
                serde_json::json!({"signing_key": {"inline": "x"}}),
                "signing_key.inline",
            ),
            (
                serde_json::json!({"session": {"key": {"source": "header"}}}),
                "session.key.name",
            ),
            (
                serde_json::json!({"session": {"key": {"source": "cookie"}}}),
                "`cookie`",
            ),
            (
                serde_json::json!({"session": {"slots": 0}}),
                "`session.slots`: 0 is not between 1 and 1048576",
            ),
            (
                serde_json::json!({"session": {"slots": 1_048_577}}),
                "`session.slots`",
            ),
            (
                serde_json::json!({"session": {"slots": 1u64 << 40}}),
                "`session.slots`",
            ),
            (serde_json::json!({"session": {"slots": -1}}), "`-1`"),
            (
                serde_json::json!({"session": {"require_initialize": true, "key": {"source": "traceparent"}}}),
                "`session.require_initialize` needs",
            ),
            (
                serde_json::json!({"session": {"require_initialize": "yes"}}),
                "expected a boolean",
            ),
            (serde_json::json!({"failure_mode": "maybe"}), "`maybe`"),
            (
                serde_json::json!({"http": {"underscore_headers": "keep"}}),
                "`http.underscore_headers`: `keep` is not",
            ),
            (
                serde_json::json!({"session": {"run": "cookie"}}),
                "`session.run`: `cookie` is not one of",
            ),
            (
                serde_json::json!({"session": {"run": "claim"}}),
                "`session.run: claim` needs `identity.jwt.run_claim`",
            ),
            (
                serde_json::json!({"session": {"max_per_principal": 0}}),
                "`session.max_per_principal`: 0 is not between 1 and 256",
            ),
            (
                serde_json::json!({"releases": ["x.y"]}),
                "`releases` needs `release_keys`",
            ),
            (
                serde_json::json!({"task_grant_keys": ["nope"]}),
                "task_grant_keys",
            ),
            (
                serde_json::json!({"mcp": {"legacy_paths": ["messages"]}}),
                "`mcp.legacy_paths`: `messages` must start with `/`",
            ),
            (
                serde_json::json!({"http": {"literal_path_hosts": ["files.internal:8080"]}}),
                "`http.literal_path_hosts`: `files.internal:8080` is not a host",
            ),
            (
                serde_json::json!({"http": {"literal_path_hosts": ["bad host"]}}),
                "`http.literal_path_hosts`",
            ),
            (
                serde_json::json!({"approvers": {"ops": []}}),
                "approvers.ops",
            ),
            (
                serde_json::json!({"approvers": {"ops": ["bad"]}}),
                "approvers.ops",
            ),
            (
                serde_json::json!({"context_services": {"risk": {"cluster": ""}}}),
                "context_services.risk",
            ),
            (
                serde_json::json!({"identity": {"jwt": {"provider": "p"}}}),
                "agent_claim",
            ),
            (
                serde_json::json!({"identity": {"headers": {"agent": "bad header"}}}),
                "valid header",
            ),
            (
                serde_json::json!({"receipts": {"checkpoint_every": 0}}),
                "checkpoint_every",
            ),
        ];
        for (patch, needle) in cases {
            let mut c = base();
            for (k, v) in patch.as_object().unwrap() {
                c.as_object_mut().unwrap().insert(k.clone(), v.clone());
            }
            let e = parse_v(&c).unwrap_err();
            assert!(e.0.contains(needle), "expected `{needle}` in `{e}`");
        }
        assert!(parse(b"").unwrap_err().0.contains("empty"));
        assert!(parse(b"{not json").is_err());
    }

    #[test]
    fn full_config_parses() {
        let mut c = base();
        let pk = format_verifying_key(&signing_key_from_seed([3; 32]).verifying_key());
        let o = c.as_object_mut().unwrap();
        o.insert(
            "signing_key".into(),
            serde_json::json!({"env": "PORTCULLIS_KEY"}),
        );
        o.insert("session".into(), serde_json::json!({"key": {"source": "header", "name": "X-Agent-Run"}, "max_sessions": 5, "idle_ttl_s": 60, "slots": 100}));
        o.insert("identity".into(), serde_json::json!({"mtls": false, "jwt": {"provider": "agents", "agent_claim": "azp", "human_claim": "act.sub"}, "headers": {"agent": "x-agent-id"}}));
        o.insert(
            "approvers".into(),
            serde_json::json!({"release-managers": [pk]}),
        );
        o.insert(
            "context_services".into(),
            serde_json::json!({"risk": {"cluster": "risk", "path": "/decide"}}),
        );
        o.insert("failure_mode".into(), "open".into());
        o.insert("mcp".into(), serde_json::json!({"paths": ["/mcp", "/v2/mcp"], "server_name": "workbench", "allow_batches": true}));
        let c = parse_v(&c).unwrap();
        assert_eq!(
            c.signing_key,
            SigningKeySource::Env("PORTCULLIS_KEY".into())
        );
        assert_eq!(
            c.session.key,
            SessionKeySource::Header("x-agent-run".into())
        );
        assert_eq!(c.session.idle_ttl_ms, 60_000);
        assert_eq!(c.session.slots, 100);
        assert!(!c.identity.mtls);
        assert_eq!(
            c.identity.jwt.as_ref().unwrap().human_claim.as_deref(),
            Some("act.sub")
        );
        assert_eq!(c.approvers["release-managers"].len(), 1);
        assert_eq!(c.context_services["risk"].authority, "risk");
        assert_eq!(c.failure_mode, FailureMode::Open);
        assert!(c.allow_batches);
    }
}
