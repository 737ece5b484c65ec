//! The normalized action: one vocabulary for an MCP JSON-RPC request and a plain HTTP request.
//!
//! The filter builds an [`Action`] from what Envoy hands it; `policyc eval` and the tabletop tests
//! read the same shape from JSON. Field names here are the policy language's vocabulary and the
//! receipt's (see `docs/policy-language.md`, "Vocabulary"). Every string is already normalized by
//! the filter (lowercase host, decoded path, lowercase header names), so the policy compares what
//! the upstream will act on.

use serde::{Deserialize, Serialize};

/// Which protocol an action came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An MCP JSON-RPC message (Streamable HTTP).
    #[default]
    Mcp,
    /// A plain HTTP request (egress), including CONNECT.
    Http,
}

impl Kind {
    /// The name the policy language uses for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mcp => "mcp",
            Kind::Http => "http",
        }
    }
}

/// How a principal was authenticated. The policy can require a method (`identity.agent_auth == mtls`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// Not authenticated: the id, if any, is only a claim.
    #[default]
    None,
    /// The mTLS peer certificate (SPIFFE URI SAN) verified by Envoy.
    Mtls,
    /// A JWT verified by Envoy's `jwt_authn` filter (read from its dynamic metadata).
    Jwt,
    /// A request header the operator configured as trusted (e.g. set by an inner gateway).
    Header,
    /// Envoy's own node metadata (a sidecar's local workload, `identity.node_workload`).
    Node,
}

impl AuthMethod {
    /// The name the policy language and receipts use.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Node => "node",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Header => "header",
        }
    }
}

/// One authenticated (or not) principal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Principal {
    /// The principal's id (SPIFFE id, JWT `sub`, ...); `None` when unknown.
    pub id: Option<String>,
    /// How `id` was established.
    pub auth: AuthMethod,
}

/// Who is acting: the agent, the human on whose behalf it acts, and the workload it runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// The AI agent (e.g. a JWT `azp`/`sub` claim, or a trusted header).
    pub agent: Principal,
    /// The human principal the agent acts for (e.g. a JWT `act.sub` or `sub` claim).
    pub human: Principal,
    /// The calling workload (e.g. the SPIFFE id of the mTLS peer).
    pub workload: Principal,
}

/// Where a declared intent came from, most trusted first (`docs/policy-language.md`, "Trusted
/// intent").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentSource {
    /// No intent was declared.
    #[default]
    None,
    /// A task grant signed by an orchestrator key the filter trusts (`x-portcullis-grant`).
    Grant,
    /// A claim of the JWT Envoy verified (`identity.jwt.intent_claim`).
    Claim,
    /// The agent's own `x-portcullis-intent` header: trusted only when the pack says
    /// `intent_source header`.
    Header,
    /// The agent's header names another intent than the grant or claim in force: never trusted.
    Conflict,
}

impl IntentSource {
    /// The name receipts and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentSource::None => "none",
            IntentSource::Grant => "grant",
            IntentSource::Claim => "claim",
            IntentSource::Header => "header",
            IntentSource::Conflict => "conflict",
        }
    }
}

/// Where the action goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    /// Lowercase host name or IP literal, no port, no trailing dot.
    pub host: String,
    /// Port (the scheme's default when the request did not name one).
    pub port: u16,
    /// Normalized path: percent-decoded where safe, dot segments removed, never empty (`/`).
    pub path: String,
    /// Raw query string without the `?`.
    pub query: String,
    /// `http` or `https`.
    pub scheme: String,
    /// For MCP: the configured name of the MCP server behind this route (or the authority).
    pub server: String,
}

/// Risk flags computed inline by the filter while it normalizes the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Risk {
    /// A secret-like value (API key, private key, bearer token, ...) appears in the arguments or body.
    pub secrets: bool,
    /// Data classes detected in the request (e.g. `pii`, `credential`), lowercase, sorted, unique.
    pub data_classes: Vec<String>,
}

/// What the filter knows of a tool's definition against its pin (`docs/filter.md`, "Tool pins"):
/// the fields `tool.changed` and `tool.shadowed` (format version 4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolState {
    /// The tool's definition differs from the one pinned for it (first seen by the principal or
    /// session, or shipped in the bundle), or cannot be vouched for since the server announced a
    /// changed list (`tool.changed`).
    pub changed: bool,
    /// Another server behind the route or the session offered the same name, or one confusable
    /// with it (case, Unicode compatibility forms, look-alike letters), first (`tool.shadowed`).
    pub shadowed: bool,
}

impl ToolState {
    /// Neither flag is set (the state of every action the filter did not flag).
    pub fn is_clear(&self) -> bool {
        !self.changed && !self.shadowed
    }
}

/// One normalized action: what the policy evaluates and the receipt records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Action {
    /// `mcp` or `http`.
    pub kind: Kind,
    /// The MCP method (`tools/call`, `initialize`, `notifications/initialized`, ...) or, for a
    /// response the client posts back to a server request, `response`; for HTTP the request method
    /// in upper case (`GET`, `POST`, `CONNECT`, ...).
    pub operation: String,
    /// `tools/call`: the tool name.
    pub tool: Option<String>,
    /// `resources/read`, `resources/subscribe`, ...: the resource URI.
    pub resource: Option<String>,
    /// `prompts/get`: the prompt name.
    pub prompt: Option<String>,
    /// `tools/call` arguments (or `prompts/get` arguments); `null` when there are none. For HTTP, the
    /// request body when it is JSON and the policy inspects bodies, else `null`.
    pub arguments: serde_json::Value,
    /// SHA-256 of the JSON text `arguments` were read from, byte for byte as received: the
    /// filter sets it when it parses a request (one hash pass over the arguments, which the
    /// action digest then names instead of re-canonicalizing them; `docs/receipts.md`, "The
    /// action digest"). `None` for an action built any other way (tests, `policyc`, the
    /// response path's pseudo-actions), whose digest hashes the canonical form of `arguments`.
    // INVARIANT: it describes `arguments`: whoever replaces them uses [`Action::set_arguments`]
    // (or clears this), or the digest would name the old arguments.
    #[serde(skip)]
    pub arguments_sha256: Option<[u8; 32]>,
    /// Where the action goes.
    pub target: Target,
    /// Who is acting.
    pub identity: Identity,
    /// Request headers the policy may read: lowercase names, in arrival order. Hop-by-hop headers,
    /// credentials and Portcullis' own headers are not included. Shared, not copied, between the
    /// actions of one request and the response inspector's copies of them (read-only: a
    /// `strip_header` changes the request, not the action).
    pub headers: std::sync::Arc<[(String, String)]>,
    /// The session key (from `Mcp-Session-Id` or the configured source), if any.
    pub session_id: Option<String>,
    /// The W3C trace id, if the request carried one.
    pub trace_id: Option<String>,
    /// The intent declared for this request (only read when a session starts), from
    /// [`Action::intent_source`].
    pub declared_intent: Option<String>,
    /// Where `declared_intent` came from.
    pub intent_source: IntentSource,
    /// Request body size in bytes (for an element of a JSON-RPC batch: that element's size).
    pub size: u64,
    /// HTTP: lowercase hex SHA-256 of the request body as received, when the filter read it (it
    /// does whenever an approval may have to bind it); the approval digest covers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    /// Risk flags computed inline.
    pub risk: Risk,
    /// The tool's definition against its pin (`tools/call` and list entries only).
    #[serde(skip_serializing_if = "ToolState::is_clear")]
    pub tool_state: ToolState,
}

impl Action {
    /// Replace the arguments with `v`, which was not received as text: the digest will hash its
    /// canonical form (see [`Action::arguments_sha256`]).
    pub fn set_arguments(&mut self, v: serde_json::Value) {
        self.arguments = v;
        self.arguments_sha256 = None;
    }

    /// The action's name in the language's single "what is acted on" sense: the tool, else the
    /// prompt, else the resource, else for HTTP the host. Used by session history and revocation.
    pub fn subject(&self) -> &str {
        if let Some(t) = &self.tool {
            return t;
        }
        if let Some(p) = &self.prompt {
            return p;
        }
        if let Some(r) = &self.resource {
            return r;
        }
        &self.target.host
    }

    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the declared intent comes from a source the pack does not trust
    /// (`intent_source:untrusted`): a header that contradicts the grant or claim in force, or the
    /// agent's own header (an intent with no recorded source counts as one) unless the pack says
    /// `intent_source header` (`header_trusted`).
    pub fn intent_untrusted(&self, header_trusted: bool) -> bool {
        match self.intent_source {
            IntentSource::Conflict => true,
            IntentSource::Header => !header_trusted,
            IntentSource::None => self.declared_intent.is_some() && !header_trusted,
            IntentSource::Grant | IntentSource::Claim => false,
        }
    }

    /// Whether this action is an outbound HTTP request that sends data (for egress byte counters).
    pub fn egress_bytes(&self) -> u64 {
        match self.kind {
            Kind::Http => self.size,
            Kind::Mcp => 0,
        }
    }
}
