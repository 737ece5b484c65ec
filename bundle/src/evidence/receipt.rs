//! Receipts: one signed, hash-chained record per evaluated action (AARM R5/R6).
//!
//! The filter builds a [`ReceiptBody`] (usually with [`ReceiptBody::for_action`]), then [`seal`]s
//! it: `seal` fills the sequence number, the previous receipt's hash and the timestamp from the
//! session's [`ChainHead`], hashes the canonical JSON of the body (see [`crate::canonical`]) and
//! signs the hash when the [`SignPolicy`] says so. One signature attests every earlier receipt of
//! the session, because each receipt commits to the previous one's hash.
//!
//! Signing rule (cost-aware; bound documented in `docs/receipts.md`): a receipt is signed when
//! - its decision or its would-be decision is not ALLOW, or its event is not `action`; or
//! - `force_sign` is set (session end); or
//! - with it, `checkpoint_every` receipts have passed since the last signed one; or
//! - the oldest unsigned receipt of the chain is `max_unsigned_ms` old or older.
//!
//! Signature: Ed25519 over `"portcullis/receipt/v1\0" || hash` (the 32 raw hash bytes).
//!
//! Arguments never appear in a receipt (AARM T9): only their top-level key names and the
//! [`action_digest`] of the whole action.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::action::{Action, AuthMethod, Identity, Kind, Principal};
use crate::evidence::canonical::{self, CanonicalError, Numbers};
use crate::verdict::{Decision, Effect, Mode, Modification, PathSegment, Verdict};

pub mod verify;
mod write;

pub use verify::{
    Finding, FindingKind, SessionSummary, TimelineEntry, VerifyOptions, VerifyReport,
    collect_receipts, verify_log, verify_log_with,
};

/// The receipt body format version written by this build. Version 2 (`docs/receipts.md`) omits
/// every empty member (no `null`, no `[]`) and names the action by the version 2
/// [`action_digest`]; version 1 bodies (every member present) still verify, by their own rules.
pub const RECEIPT_VERSION: u32 = 2;
/// The oldest receipt body format version this build reads and verifies.
pub const RECEIPT_VERSION_MIN: u32 = 1;
/// The domain separator of receipt signatures.
pub const RECEIPT_DOMAIN: &[u8] = b"portcullis/receipt/v1\0";
/// The longest receipt JSON [`Receipt::from_json`] reads, in bytes.
pub const MAX_RECEIPT_BYTES: usize = 256 * 1024;

/// What a receipt records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An evaluated action (the usual case).
    #[default]
    Action,
    /// A standalone signed record that attests the chain so far (idle-session timer).
    Checkpoint,
    /// The session ended (expired, evicted or closed); always signed.
    SessionEnd,
    /// A DEFER was resolved (by the context service, or denied on timeout).
    DeferResolved,
    /// The result of a tool call was inspected on the response path (filter `response/result.rs`):
    /// the action is the call, `effects` what the result did to the session.
    Result,
    /// An operator's signed release lifted a principal's quarantine (`reason` says whose, by
    /// which release and key); always signed.
    Release,
    /// A decision's write to the shared state store (etcd) failed or was refused after the
    /// decision was sealed: `decision` is what the filter enforced instead (a DENY), `reason`
    /// says why; always signed.
    StateStore,
    /// The credentials a MODIFY injected were minted (or read from the cache) and the request went
    /// on (`decision` MODIFY, `credentials` lists them), or minting failed and the request was
    /// denied (`decision` DENY, rule `filter:credential`); always signed.
    Credential,
}

impl EventKind {
    /// The name used in receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Action => "action",
            EventKind::Checkpoint => "checkpoint",
            EventKind::SessionEnd => "session_end",
            EventKind::DeferResolved => "defer_resolved",
            EventKind::Result => "result",
            EventKind::Release => "release",
            EventKind::StateStore => "state_store",
            EventKind::Credential => "credential",
        }
    }
}

/// Where the action went (the query string is left out: it often carries credentials; the digest
/// covers it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptTarget {
    /// Host.
    pub host: String,
    /// Normalized path.
    pub path: String,
    /// Port.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: String,
    /// MCP server name.
    pub server: String,
}

/// The reviewer's view of an action: everything but argument values and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptAction {
    /// The argument object's top-level key names, sorted (never their values); at most
    /// [`MAX_ARG_KEYS`] names of at most [`MAX_ARG_KEY_BYTES`] bytes, then `+N more`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arg_keys: Vec<String>,
    /// Data classes detected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_classes: Vec<String>,
    /// Lowercase hex of [`action_digest`].
    pub digest: String,
    /// `mcp` or `http`.
    pub kind: Kind,
    /// MCP method or HTTP method.
    pub operation: String,
    /// Prompt name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Resource URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// A secret-like value was detected.
    pub secrets: bool,
    /// Request (element) size in bytes.
    pub size: u64,
    /// Target.
    pub target: ReceiptTarget,
    /// Tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// One matched rule as the receipt records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchedRule {
    /// The decision the rule asked for.
    pub decision: Decision,
    /// Its mode.
    pub mode: Mode,
    /// Rule name.
    pub rule: String,
}

/// The bundle that decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRef {
    /// Lowercase hex of the bundle's content hash.
    pub hash: String,
    /// Pack name.
    pub pack: String,
    /// Pack version.
    pub version: String,
}

/// The approval token that satisfied a STEP_UP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRef {
    /// Approver group.
    pub group: String,
    /// The approver's key id.
    pub key_id: String,
    /// The token id (its nonce, hex).
    pub token_id: String,
}

/// One principal as a receipt records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPrincipal {
    /// How `id` was established.
    pub auth: AuthMethod,
    /// The principal's id, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Who acted: agent, human, workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptIdentity {
    /// The AI agent.
    pub agent: ReceiptPrincipal,
    /// The human principal the agent acts for.
    pub human: ReceiptPrincipal,
    /// The calling workload.
    pub workload: ReceiptPrincipal,
}

impl From<&Principal> for ReceiptPrincipal {
    fn from(p: &Principal) -> Self {
        ReceiptPrincipal {
            auth: p.auth,
            id: p.id.clone(),
        }
    }
}

impl From<&Identity> for ReceiptIdentity {
    fn from(i: &Identity) -> Self {
        ReceiptIdentity {
            agent: (&i.agent).into(),
            human: (&i.human).into(),
            workload: (&i.workload).into(),
        }
    }
}

// Every struct inside a body declares its fields in byte order of their names and holds no
// floats. Version 2 bodies are written by hand in that order (`receipt/write.rs`);
// `hand_writer_matches_generic_canonical_form` (and the `body_fast_path_is_canonical` property in
// `tests/receipt_props.rs`) check the bytes against the generic canonicalization.

/// Everything a receipt says. `v`, `seq`, `prev` and `ts_ms` are filled by [`seal`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// The action (absent for checkpoints and session ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ReceiptAction>,
    /// The approval that satisfied a STEP_UP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
    /// The bundle that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleRef>,
    /// The credentials injected into the request (`credential` receipts only): what identifies
    /// each one, never the secret. Absent otherwise, so other receipts' bytes are unchanged.
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub credentials: Option<Vec<CredentialRecord>>,
    /// The enforced decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Intent drift × 1000, rounded (see [`drift_milli`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_milli: Option<i64>,
    /// Session effects applied (`taint:<name>`, `revoke_tool:<name>`, `revoke_class:<name>`,
    /// `read_only`, `kill`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<String>,
    /// What this receipt records.
    pub event: EventKind,
    /// Who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ReceiptIdentity>,
    /// Intent in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Where the intent in force came from (`grant`, `claim`, `header`); absent when there is
    /// none, and in receipts written before it existed (so their bytes are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_source: Option<String>,
    /// With a layered bundle: every applicable pack and what it decided, baseline first (the
    /// winner flagged). Absent with a single-pack bundle, so those receipts' bytes are unchanged.
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub layers: Option<Vec<LayerRecord>>,
    /// Every matched rule, in rule-table order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<MatchedRule>,
    /// What the filter changed (human-readable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modifications: Vec<String>,
    /// Lowercase hex of the previous receipt's hash; 64 zeros for seq 1.
    pub prev: String,
    /// Its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The deciding rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Position in the session's chain, from 1.
    pub seq: u64,
    /// The session id (the chain's name).
    pub session: String,
    /// W3C trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// When it was sealed (ms since the Unix epoch).
    pub ts_ms: u64,
    /// Body format version ([`RECEIPT_VERSION`]).
    pub v: u32,
    /// Warnings sent to the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What enforce mode would have decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_be: Option<Decision>,
}

/// One injected credential as a receipt records it (`docs/credentials.md`): never the token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRecord {
    /// The audience it was minted for (the destination).
    pub audience: String,
    /// Whether it came from the filter's cache (no exchange for this request).
    pub cached: bool,
    /// What identifies it: `jti:<jti>` when the token is a JWT with a `jti` claim, else
    /// `sha256:<first 16 hex digits of SHA-256 of the token>`.
    pub id: String,
    /// The credential's name in the plugin configuration.
    pub name: String,
    /// The scope it carries (as the STS granted it).
    pub scope: String,
}

/// One applicable pack of a layered bundle, as a receipt records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRecord {
    /// The assignment rule that selected the pack (`baseline`, `agent:<pattern>`, `host:<pattern>`, ...).
    pub assigned: String,
    /// The pack's own decision (before its layer mode).
    pub decision: Decision,
    /// Lowercase hex content hash of the pack's bundle.
    pub hash: String,
    /// The layer's mode in the manifest.
    pub mode: Mode,
    /// The pack's id in the manifest.
    pub pack: String,
    /// The pack's deciding rule.
    pub rule: String,
    /// The pack's version.
    pub version: String,
    /// Whether this pack's decision is the one enforced.
    pub winner: bool,
}

/// A receipt signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The signer's key id ([`crate::keys::key_id`]).
    pub key_id: String,
    /// The Ed25519 signature over `RECEIPT_DOMAIN || hash`.
    pub bytes: [u8; 64],
}

/// A sealed receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The body.
    pub body: ReceiptBody,
    /// SHA-256 of the canonical JSON of `body`.
    pub hash: [u8; 32],
    /// Present when this receipt was signed.
    pub sig: Option<Signature>,
}

/// The state of a session's chain, kept with the session (see `session_codec`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the last receipt (0 before the first).
    pub seq: u64,
    /// Hash of the last receipt (zeros before the first).
    pub prev: [u8; 32],
    /// Receipts sealed since the last signed one.
    pub unsigned: u32,
    /// Timestamp of the oldest of those (0 when `unsigned` is 0).
    pub oldest_unsigned_ms: u64,
}

/// When ALLOW receipts are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignPolicy {
    /// Sign at least every this many receipts (0 or 1: sign every receipt).
    pub checkpoint_every: u32,
    /// Sign when the oldest unsigned receipt is this old (ms).
    pub max_unsigned_ms: u64,
}

impl Default for SignPolicy {
    fn default() -> Self {
        SignPolicy {
            checkpoint_every: 16,
            max_unsigned_ms: 5000,
        }
    }
}

/// A receipt signing key with its key id. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Wrap a signing key.
    pub fn new(key: SigningKey) -> Self {
        let key_id = crate::evidence::keys::key_id(&key.verifying_key());
        Signer { key, key_id }
    }

    /// The key id receipts name.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// A 32-byte secret derived from the signing key for another use, named by `domain`
    /// (SHA-256 of `domain`, a zero byte and the secret key): every holder of this key derives the
    /// same one, and it reveals nothing of the key. The filter MACs its MCP `requestState` with it.
    pub fn derive_secret(&self, domain: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(domain);
        h.update([0u8]);
        h.update(self.key.to_bytes());
        h.finalize().into()
    }

    fn sign_hash(&self, hash: &[u8; 32]) -> Signature {
        let mut msg = Vec::with_capacity(RECEIPT_DOMAIN.len().saturating_add(32));
        msg.extend_from_slice(RECEIPT_DOMAIN);
        msg.extend_from_slice(hash);
        Signature {
            key_id: self.key_id.clone(),
            bytes: self.key.sign(&msg).to_bytes(),
        }
    }
}

/// Why a receipt could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Longer than [`MAX_RECEIPT_BYTES`].
    #[error("the receipt is longer than {MAX_RECEIPT_BYTES} bytes")]
    TooLong,
    /// Not JSON, or not the receipt shape.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// A body version this build does not read.
    #[error("unsupported receipt version {0} (this build reads versions 1 and 2)")]
    Version(u64),
    /// The body has no canonical form (e.g. a non-integer number).
    #[error("the receipt body has no canonical form: {0}")]
    Canonical(#[from] CanonicalError),
}

/// Intent drift as an integer (drift × 1000, rounded; 0 for NaN; saturating), so receipts stay
/// integer-only.
pub fn drift_milli(drift: f32) -> i64 {
    if drift.is_nan() {
        return 0;
    }
    // `as` saturates for out-of-range floats.
    (f64::from(drift) * 1000.0).round() as i64
}

/// Request headers that make servers read another method, path or host than the request's (the
/// readings `docs/filter-normalization.md` lists): the action digest covers them.
pub const READING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-host",
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
    "x-original-host",
    "x-original-url",
    "x-rewrite-url",
];

/// The action digest's format version written by this build (member `v` of the digest's
/// object; version 1 has no such member).
pub const DIGEST_VERSION: u32 = 2;

/// What a receipt names the action by and an approval is bound to (version 2): SHA-256 of the
/// canonical JSON of the action's *stable* fields, with the arguments as the SHA-256 of their
/// received text.
///
/// The object: `arguments_sha256` ([`arguments_sha256`]: lowercase hex SHA-256 of the JSON text
/// the arguments were read from, byte for byte as received, when the filter parsed them from a
/// request; else of their canonical form), then as in version 1: `kind`, `operation`, `tool`,
/// `resource`, `prompt`, `target` (host, port, path, query, scheme, server), `identity`,
/// `session_id`, and for HTTP the request `size`, the body's SHA-256 when the filter read it
/// (`body_sha256`) and the [`READING_HEADERS`] it carries (`overrides`, sorted pairs), the last
/// two only when present; and `"v":2`. Left out because a retry of the same action legitimately
/// changes them: `headers` (request ids, tracing, the approval token itself), `trace_id`,
/// `declared_intent`, the MCP `size` (the JSON-RPC id changes) and `risk` (derived from the
/// arguments). The arguments are hashed once, as received: never re-canonicalized on the
/// request path, and every later digest of the same action (receipt, approval, binding) hashes
/// only this small object.
pub fn action_digest(action: &Action) -> [u8; 32] {
    action_digest_in(action, action.session_id.as_deref())
}

/// [`action_digest`] with `session_id` in place of the action's own (a binding holds actions
/// without theirs, `filter/core/src/session/bindings.rs`), without copying the action.
pub fn action_digest_in(action: &Action, session_id: Option<&str>) -> [u8; 32] {
    let mut out = String::with_capacity(512);
    out.push_str("{\"arguments_sha256\":\"");
    out.push_str(&hash_hex(&arguments_sha256(action)));
    out.push('"');
    write_stable_members(&mut out, action, session_id);
    out.push_str(",\"v\":");
    out.push_str(&DIGEST_VERSION.to_string());
    out.push('}');
    Sha256::digest(out.as_bytes()).into()
}

/// The SHA-256 the version 2 [`action_digest`] names the arguments by: of their received text
/// ([`Action::arguments_sha256`]) when the filter read them from a request, else of their
/// canonical form (non-integers in `serde_json`'s shortest round-trip form).
pub fn arguments_sha256(action: &Action) -> [u8; 32] {
    if let Some(h) = action.arguments_sha256 {
        return h;
    }
    if action.arguments.is_null() {
        // Every action without arguments (HTTP, most MCP methods): not hashed per request.
        return NULL_SHA256;
    }
    let mut text = String::new();
    // AllowFloats never fails.
    let _ = canonical::write_value(&mut text, &action.arguments, Numbers::AllowFloats);
    Sha256::digest(text.as_bytes()).into()
}

/// SHA-256 of `null`, the canonical text of absent arguments (`null_arguments_hash` checks it).
const NULL_SHA256: [u8; 32] = [
    0x74, 0x23, 0x4e, 0x98, 0xaf, 0xe7, 0x49, 0x8f, 0xb5, 0xda, 0xf1, 0xf3, 0x6a, 0xc2, 0xd7, 0x8a,
    0xcc, 0x33, 0x94, 0x64, 0xf9, 0x50, 0x70, 0x3b, 0x8c, 0x01, 0x98, 0x92, 0xf9, 0x82, 0xb9, 0x0b,
];

/// The version 1 action digest (receipt format 1): the same object as version 2 with
/// `arguments` (whole, canonicalized, non-integers in `serde_json`'s shortest round-trip form)
/// in place of `arguments_sha256`, and no `v`. Kept so that old receipts and vectors can be
/// checked against their actions, and as the benches' baseline.
pub fn action_digest_v1(action: &Action) -> [u8; 32] {
    let hint = usize::try_from(action.size).unwrap_or(0).min(1 << 20);
    let mut out = String::with_capacity(hint.saturating_add(512));
    out.push_str("{\"arguments\":");
    // AllowFloats never fails.
    let _ = canonical::write_value(&mut out, &action.arguments, Numbers::AllowFloats);
    write_stable_members(&mut out, action, action.session_id.as_deref());
    out.push('}');
    Sha256::digest(out.as_bytes()).into()
}

/// The members of the digest object after the arguments, in canonical (sorted) order, each with
/// its leading comma, written by hand straight into `out` (no intermediate JSON values).
/// `digest_matches_generic_canonical_form` checks this against the generic canonicalization.
fn write_stable_members(out: &mut String, action: &Action, session_id: Option<&str>) {
    let t = &action.target;
    let id = &action.identity;
    let opt = |out: &mut String, v: Option<&str>| match v {
        Some(s) => canonical::write_string(out, s),
        None => out.push_str("null"),
    };
    let principal = |out: &mut String, p: &crate::action::Principal| {
        out.push_str("{\"auth\":");
        canonical::write_string(out, p.auth.as_str());
        out.push_str(",\"id\":");
        opt(out, p.id.as_deref());
        out.push('}');
    };
    if let Some(b) = &action.body_sha256 {
        out.push_str(",\"body_sha256\":");
        canonical::write_string(out, b);
    }
    out.push_str(",\"identity\":{\"agent\":");
    principal(out, &id.agent);
    out.push_str(",\"human\":");
    principal(out, &id.human);
    out.push_str(",\"workload\":");
    principal(out, &id.workload);
    out.push_str("},\"kind\":");
    canonical::write_string(out, action.kind.as_str());
    out.push_str(",\"operation\":");
    canonical::write_string(out, &action.operation);
    if action.kind == Kind::Http {
        // Headers that make a server execute another method, path or host than the request's: an
        // approval of one reading is no approval of another (absent when there are none, so
        // digests of requests without them are unchanged).
        let mut overrides: Vec<(&str, &str)> = action
            .headers
            .iter()
            .filter(|(n, _)| READING_HEADERS.contains(&n.as_str()))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if !overrides.is_empty() {
            overrides.sort_unstable();
            out.push_str(",\"overrides\":[");
            for (i, (n, v)) in overrides.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                canonical::write_string(out, n);
                out.push(',');
                canonical::write_string(out, v);
                out.push(']');
            }
            out.push(']');
        }
    }
    out.push_str(",\"prompt\":");
    opt(out, action.prompt.as_deref());
    out.push_str(",\"resource\":");
    opt(out, action.resource.as_deref());
    out.push_str(",\"session_id\":");
    opt(out, session_id);
    if action.kind == Kind::Http {
        out.push_str(",\"size\":");
        out.push_str(&action.size.to_string());
    }
    out.push_str(",\"target\":{\"host\":");
    canonical::write_string(out, &t.host);
    out.push_str(",\"path\":");
    canonical::write_string(out, &t.path);
    out.push_str(",\"port\":");
    out.push_str(&t.port.to_string());
    out.push_str(",\"query\":");
    canonical::write_string(out, &t.query);
    out.push_str(",\"scheme\":");
    canonical::write_string(out, &t.scheme);
    out.push_str(",\"server\":");
    canonical::write_string(out, &t.server);
    out.push_str("},\"tool\":");
    opt(out, action.tool.as_deref());
}

fn path_text(path: &[PathSegment]) -> String {
    let mut s = String::new();
    for seg in path {
        s.push('/');
        match seg {
            PathSegment::Key(k) => s.push_str(&k.replace('~', "~0").replace('/', "~1")),
            PathSegment::Index(i) => s.push_str(&i.to_string()),
        }
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// A human-readable line for a modification (argument paths as JSON pointers; header values and
/// coerced values are left out because they may be credentials).
pub fn describe_modification(m: &Modification) -> String {
    match m {
        Modification::RedactArg { path } => format!("redact_arg {}", path_text(path)),
        Modification::DropArg { path } => format!("drop_arg {}", path_text(path)),
        Modification::ClampArg { path, min, max } => {
            format!("clamp_arg {} to [{min}, {max}]", path_text(path))
        }
        Modification::RedactSecrets => "redact_secrets".to_owned(),
        Modification::StripHeader { name } => format!("strip_header {name}"),
        Modification::SetHeader { name, .. } => format!("set_header {name}"),
        Modification::RemoveTools { patterns } => format!("remove_tools {}", patterns.join(",")),
        // The name only: the credential itself is minted later and never written here.
        Modification::InjectCredential { name } => format!("inject_credential {name}"),
        // The type only: the value is the agent's argument.
        Modification::CoerceArg { path, value } => {
            let to = match value {
                serde_json::Value::String(_) => "string",
                serde_json::Value::Number(_) => "number",
                serde_json::Value::Bool(_) => "bool",
                serde_json::Value::Null => "null",
                serde_json::Value::Array(_) => "array",
                serde_json::Value::Object(_) => "object",
            };
            format!("coerce_arg {} to {to}", path_text(path))
        }
    }
}

/// How an effect is written in a receipt.
pub fn describe_effect(e: &Effect) -> String {
    match e {
        Effect::Taint(t) => format!("taint:{t}"),
        Effect::RevokeTool(t) => format!("revoke_tool:{t}"),
        Effect::RevokeClass(c) => format!("revoke_class:{c}"),
        Effect::RevokePrincipalTool(t) => format!("revoke_principal_tool:{t}"),
        Effect::RevokePrincipalClass(c) => format!("revoke_principal_class:{c}"),
        Effect::ReadOnly => "read_only".to_owned(),
        Effect::Kill => "kill".to_owned(),
        Effect::Quarantine(crate::session::Quarantine::ReadOnly) => {
            "quarantine:read_only".to_owned()
        }
        Effect::Quarantine(_) => "quarantine".to_owned(),
    }
}

/// How many argument names a receipt lists (the rest are counted: `+N more`).
pub const MAX_ARG_KEYS: usize = 32;
/// The longest argument name a receipt lists, in bytes (longer ones are cut and end in `…`).
pub const MAX_ARG_KEY_BYTES: usize = 64;

fn bounded_name(k: &str) -> String {
    if k.len() <= MAX_ARG_KEY_BYTES {
        return k.to_owned();
    }
    let mut end = MAX_ARG_KEY_BYTES;
    while !k.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    format!("{}…", k.get(..end).unwrap_or_default())
}

impl ReceiptAction {
    /// The reviewer's view of `action` (argument key names, never values).
    pub fn from_action(action: &Action) -> Self {
        let mut arg_keys: Vec<String> = match &action.arguments {
            Value::Object(m) => m.keys().map(|k| bounded_name(k)).collect(),
            _ => Vec::new(),
        };
        arg_keys.sort();
        if arg_keys.len() > MAX_ARG_KEYS {
            let more = arg_keys.len().saturating_sub(MAX_ARG_KEYS);
            arg_keys.truncate(MAX_ARG_KEYS);
            arg_keys.push(format!("+{more} more"));
        }
        let t = &action.target;
        ReceiptAction {
            kind: action.kind,
            operation: action.operation.clone(),
            tool: action.tool.clone(),
            resource: action.resource.clone(),
            prompt: action.prompt.clone(),
            target: ReceiptTarget {
                host: t.host.clone(),
                port: t.port,
                path: t.path.clone(),
                scheme: t.scheme.clone(),
                server: t.server.clone(),
            },
            size: action.size,
            secrets: action.risk.secrets,
            data_classes: action.risk.data_classes.clone(),
            arg_keys,
            digest: hash_hex(&action_digest(action)),
        }
    }
}

impl ReceiptBody {
    /// A body for a non-action event (checkpoint, session end) of `session`.
    pub fn event(event: EventKind, session: &str) -> Self {
        ReceiptBody {
            v: RECEIPT_VERSION,
            event,
            session: session.to_owned(),
            ..ReceiptBody::default()
        }
    }

    /// A body for an evaluated action: action summary and digest, the verdict (decision, would-be,
    /// deciding rule and reason, matched rules, modifications, effects, warnings, intent),
    /// identity and trace id. The caller adds `bundle`, `drift_milli` and `approval`, and may
    /// replace `modifications` with what it actually changed.
    pub fn for_action(session: &str, action: &Action, verdict: &Verdict) -> Self {
        ReceiptBody {
            v: RECEIPT_VERSION,
            event: EventKind::Action,
            session: session.to_owned(),
            trace: action.trace_id.clone(),
            action: Some(ReceiptAction::from_action(action)),
            decision: Some(verdict.decision),
            would_be: Some(verdict.would_be),
            rule: Some(verdict.deciding_rule.clone()),
            reason: Some(verdict.reason.clone()),
            matched: verdict
                .matched
                .iter()
                .map(|m| MatchedRule {
                    rule: m.rule.clone(),
                    decision: m.decision,
                    mode: m.mode,
                })
                .collect(),
            modifications: verdict
                .modifications
                .iter()
                .map(describe_modification)
                .collect(),
            effects: verdict.effects.iter().map(describe_effect).collect(),
            warnings: verdict.warnings.clone(),
            identity: Some((&action.identity).into()),
            intent: verdict.intent.clone(),
            ..ReceiptBody::default()
        }
    }

    /// The canonical JSON of this body (the bytes that are hashed).
    pub fn canonical_json(&self) -> Result<String, CanonicalError> {
        if self.v == 1 {
            // A version 1 body read from an old log: every member present (the slow, generic way;
            // the filter never writes version 1).
            return self.canonical_json_generic();
        }
        // A body is about 1 KiB: start there rather than grow.
        let mut out = String::with_capacity(1024);
        self.write_v2(&mut out);
        Ok(out)
    }

    /// The canonical JSON computed the generic way (serialize to a value, sort, write). Equal to
    /// [`ReceiptBody::canonical_json`]; used to test the fast path.
    pub fn canonical_json_generic(&self) -> Result<String, CanonicalError> {
        let mut v = serde_json::to_value(self).map_err(|_| CanonicalError::Float)?;
        if self.v == 1 {
            fill_v1_members(&mut v);
        }
        canonical::to_canonical(&v)
    }

    /// The body as a JSON value with every member a version 1 body always carried, the empty ones
    /// as `null` / `[]`, whatever the body's version: one shape for readers that map bodies
    /// (exports) rather than hash them.
    pub fn full_view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        fill_v1_members(&mut v);
        v
    }

    fn must_sign(&self) -> bool {
        let not_allow = |d: Option<Decision>| matches!(d, Some(d) if d != Decision::Allow);
        self.event != EventKind::Action || not_allow(self.decision) || not_allow(self.would_be)
    }
}

/// Lowercase hex of a 32-byte hash, as receipts write it (`hex::encode` goes a char at a time).
pub fn hash_hex(h: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    push_hex(&mut out, h);
    out
}

/// Append lowercase hex of a 32-byte hash.
fn push_hex(out: &mut String, bytes: &[u8; 32]) {
    let mut buf = [0u8; 64];
    // Cannot fail: `buf` is exactly twice as long as `bytes`, and hex digits are ASCII.
    let _ = hex::encode_to_slice(bytes, &mut buf);
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

/// SHA-256 of canonical bytes.
pub(crate) fn hash_canonical(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Seal `body` as the next receipt of the chain: set `v`, `seq`, `prev` and `ts_ms`, hash, sign
/// if the policy (or `force_sign`) says so, and advance `chain`.
pub fn seal(
    body: ReceiptBody,
    chain: &mut ChainHead,
    signer: &Signer,
    policy: &SignPolicy,
    now_ms: u64,
    force_sign: bool,
) -> Receipt {
    seal_canonical(body, chain, signer, policy, now_ms, force_sign).0
}

/// [`seal`], also returning the receipt's JSON line ([`Receipt::to_json`]), built from the same
/// canonical body text that was hashed: the body is serialized once, not once to hash and again
/// to write. This is what the filter does on every request.
pub fn seal_line(
    body: ReceiptBody,
    chain: &mut ChainHead,
    signer: &Signer,
    policy: &SignPolicy,
    now_ms: u64,
    force_sign: bool,
) -> (Receipt, String) {
    let (r, canonical) = seal_canonical(body, chain, signer, policy, now_ms, force_sign);
    let line = r.line_with_body(&canonical);
    (r, line)
}

fn seal_canonical(
    mut body: ReceiptBody,
    chain: &mut ChainHead,
    signer: &Signer,
    policy: &SignPolicy,
    now_ms: u64,
    force_sign: bool,
) -> (Receipt, String) {
    body.v = RECEIPT_VERSION;
    body.seq = chain.seq.saturating_add(1);
    body.prev = hash_hex(&chain.prev);
    body.ts_ms = now_ms;
    // Every field of a body is a string, integer, bool, enum or list of those: the canonical form
    // always exists.
    let canonical = body.canonical_json().unwrap_or_default();
    let hash = hash_canonical(&canonical);
    let count_due = chain.unsigned.saturating_add(1) >= policy.checkpoint_every;
    let age_due = chain.unsigned > 0
        && now_ms.saturating_sub(chain.oldest_unsigned_ms) >= policy.max_unsigned_ms;
    let sign = force_sign || body.must_sign() || count_due || age_due;
    let sig = sign.then(|| signer.sign_hash(&hash));
    chain.seq = body.seq;
    chain.prev = hash;
    if sign {
        chain.unsigned = 0;
        chain.oldest_unsigned_ms = 0;
    } else {
        if chain.unsigned == 0 {
            chain.oldest_unsigned_ms = now_ms;
        }
        chain.unsigned = chain.unsigned.saturating_add(1);
    }
    (Receipt { body, hash, sig }, canonical)
}

/// A standalone signed `checkpoint` receipt for an idle session: attests every receipt so far.
pub fn checkpoint(session: &str, chain: &mut ChainHead, signer: &Signer, now_ms: u64) -> Receipt {
    let body = ReceiptBody::event(EventKind::Checkpoint, session);
    seal(body, chain, signer, &SignPolicy::default(), now_ms, true)
}

/// A signed `session_end` receipt, the last of a chain.
pub fn session_end(session: &str, chain: &mut ChainHead, signer: &Signer, now_ms: u64) -> Receipt {
    let body = ReceiptBody::event(EventKind::SessionEnd, session);
    seal(body, chain, signer, &SignPolicy::default(), now_ms, true)
}

impl Receipt {
    /// The receipt as one line of canonical JSON:
    /// `{"body":{...},"hash":"<hex>","sig":{"kid":"ed25519:...","sig":"<base64url>"}}`
    /// (`"sig":null` when unsigned).
    pub fn to_json(&self) -> String {
        self.line_with_body(&self.body.canonical_json().unwrap_or_default())
    }

    /// The JSON line around `body`, the canonical JSON of `self.body`.
    fn line_with_body(&self, body: &str) -> String {
        // `{"body":` + body + `,"hash":"` + 64 + `","sig":` + signature or `null` + `}`.
        let mut out = String::with_capacity(body.len().saturating_add(256));
        out.push_str("{\"body\":");
        out.push_str(body);
        out.push_str(",\"hash\":\"");
        push_hex(&mut out, &self.hash);
        out.push_str("\",\"sig\":");
        match &self.sig {
            Some(s) => {
                out.push_str("{\"kid\":");
                canonical::write_string(&mut out, &s.key_id);
                out.push_str(",\"sig\":\"");
                URL_SAFE_NO_PAD.encode_string(s.bytes, &mut out);
                out.push_str("\"}");
            }
            None => out.push_str("null"),
        }
        out.push('}');
        out
    }

    /// The receipt for an HTTP header: base64url (no padding) of [`Receipt::to_json`].
    pub fn to_header(&self) -> String {
        header_from_json(&self.to_json())
    }

    /// Read a receipt from its JSON (or its header form, base64url of the JSON). The stated hash
    /// is not checked here; [`Receipt::hash_matches`] and [`verify_log`] do that.
    pub fn from_json(text: &str) -> Result<Receipt, ReceiptError> {
        let (r, _) = parse_text(text)?;
        Ok(r)
    }

    /// Whether `hash` is the SHA-256 of the canonical body.
    pub fn hash_matches(&self) -> bool {
        match self.body.canonical_json() {
            Ok(t) => hash_canonical(&t) == self.hash,
            Err(_) => false,
        }
    }

    /// Check the signature against `key` (the key id must match too). `false` when unsigned.
    pub fn signature_valid(&self, key: &VerifyingKey) -> bool {
        match &self.sig {
            Some(s) => {
                s.key_id == crate::evidence::keys::key_id(key) && sig_ok(key, &self.hash, &s.bytes)
            }
            None => false,
        }
    }
}

/// The header form of a receipt line already produced by [`Receipt::to_json`] (saves serializing
/// the body twice when both forms are needed).
pub fn header_from_json(line: &str) -> String {
    URL_SAFE_NO_PAD.encode(line)
}

pub(crate) fn sig_ok(key: &VerifyingKey, hash: &[u8; 32], sig: &[u8; 64]) -> bool {
    let mut msg = Vec::with_capacity(RECEIPT_DOMAIN.len().saturating_add(32));
    msg.extend_from_slice(RECEIPT_DOMAIN);
    msg.extend_from_slice(hash);
    key.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(sig))
        .is_ok()
}

fn malformed(what: &str) -> ReceiptError {
    ReceiptError::Malformed(what.to_owned())
}

/// Parse receipt text (JSON, or base64url of JSON). Returns the receipt and the hash computed over
/// the canonical form of the body *as received*.
pub(crate) fn parse_text(text: &str) -> Result<(Receipt, [u8; 32]), ReceiptError> {
    if text.len() > MAX_RECEIPT_BYTES {
        return Err(ReceiptError::TooLong);
    }
    let t = text.trim();
    let decoded;
    let json_text = if t.starts_with('{') {
        t
    } else {
        let bytes = URL_SAFE_NO_PAD
            .decode(t)
            .map_err(|_| malformed("neither JSON nor base64url"))?;
        decoded = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
        &decoded
    };
    let v: Value =
        serde_json::from_str(json_text).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    parse_value(&v)
}

/// Parse a receipt JSON value; see [`parse_text`].
pub(crate) fn parse_value(v: &Value) -> Result<(Receipt, [u8; 32]), ReceiptError> {
    let obj = v.as_object().ok_or_else(|| malformed("not an object"))?;
    if obj
        .keys()
        .any(|k| !matches!(k.as_str(), "body" | "hash" | "sig"))
    {
        return Err(malformed("unknown member next to body/hash/sig"));
    }
    let body_v = obj.get("body").ok_or_else(|| malformed("no body"))?;
    match body_v.get("v").and_then(Value::as_u64) {
        // Version 1: every member is present (absent values `null`, empty lists `[]`).
        Some(1) => {
            if let Some(m) = missing_v1_member(body_v) {
                return Err(ReceiptError::Malformed(format!(
                    "version 1 body has no member `{m}`"
                )));
            }
        }
        // Version 2: no member is empty, so each receipt has one form.
        Some(2) => {
            if let Some(m) = empty_member(body_v) {
                return Err(ReceiptError::Malformed(format!(
                    "version 2 body has an empty member `{m}` (absent values are left out)"
                )));
            }
        }
        Some(other) => return Err(ReceiptError::Version(other)),
        None => return Err(malformed("body has no version `v`")),
    }
    let computed = hash_canonical(&canonical::to_canonical(body_v)?);
    let body: ReceiptBody = serde_json::from_value(body_v.clone())
        .map_err(|e| ReceiptError::Malformed(format!("body: {e}")))?;
    let hash_hex = obj
        .get("hash")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no hash"))?;
    let hash = decode_hex32(hash_hex).ok_or_else(|| malformed("hash is not 64 hex digits"))?;
    if decode_hex32(&body.prev).is_none() {
        return Err(malformed("prev is not 64 hex digits"));
    }
    let sig = match obj.get("sig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(s)) => {
            let kid = s.get("kid").and_then(Value::as_str);
            let sig = s.get("sig").and_then(Value::as_str);
            let (Some(kid), Some(sig)) = (kid, sig) else {
                return Err(malformed("sig needs kid and sig"));
            };
            let raw = URL_SAFE_NO_PAD
                .decode(sig)
                .map_err(|_| malformed("sig is not base64url"))?;
            let bytes = <[u8; 64]>::try_from(raw.as_slice())
                .map_err(|_| malformed("sig is not 64 bytes"))?;
            Some(Signature {
                key_id: kid.to_owned(),
                bytes,
            })
        }
        Some(_) => return Err(malformed("sig is not an object")),
    };
    Ok((Receipt { body, hash, sig }, computed))
}

/// The members every version 1 body carries even when empty (`null`), besides `v`, `event`,
/// `session`, `seq`, `prev` and `ts_ms`.
const V1_NULLABLE: &[&str] = &[
    "action",
    "approval",
    "bundle",
    "decision",
    "drift_milli",
    "identity",
    "intent",
    "reason",
    "rule",
    "trace",
    "would_be",
];
/// The list members every version 1 body carries even when empty (`[]`).
const V1_LISTS: &[&str] = &["effects", "matched", "modifications", "warnings"];
/// The same for a version 1 `action`.
const V1_ACTION_NULLABLE: &[&str] = &["prompt", "resource", "tool"];
const V1_ACTION_LISTS: &[&str] = &["arg_keys", "data_classes"];
const PRINCIPALS: &[&str] = &["agent", "human", "workload"];

fn none_or_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

/// Put back the empty members a version 1 body always carried (the struct leaves them out).
fn fill_v1_members(body: &mut Value) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    for k in V1_NULLABLE {
        obj.entry(*k).or_insert(Value::Null);
    }
    for k in V1_LISTS {
        obj.entry(*k).or_insert_with(|| Value::Array(Vec::new()));
    }
    if let Some(Value::Object(a)) = obj.get_mut("action") {
        for k in V1_ACTION_NULLABLE {
            a.entry(*k).or_insert(Value::Null);
        }
        for k in V1_ACTION_LISTS {
            a.entry(*k).or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    if let Some(Value::Object(i)) = obj.get_mut("identity") {
        for p in PRINCIPALS {
            if let Some(Value::Object(p)) = i.get_mut(*p) {
                p.entry("id").or_insert(Value::Null);
            }
        }
    }
}

/// The first member a version 1 body must carry (possibly empty) but does not.
fn missing_v1_member(body: &Value) -> Option<String> {
    let obj = body.as_object()?;
    let missing = |o: &serde_json::Map<String, Value>, keys: &[&str], at: &str| {
        keys.iter()
            .find(|k| !o.contains_key(**k))
            .map(|k| format!("{at}{k}"))
    };
    let mut first = missing(obj, V1_NULLABLE, "").or_else(|| missing(obj, V1_LISTS, ""));
    if let Some(Value::Object(a)) = obj.get("action") {
        first = first
            .or_else(|| missing(a, V1_ACTION_NULLABLE, "action."))
            .or_else(|| missing(a, V1_ACTION_LISTS, "action."));
    }
    if let Some(Value::Object(i)) = obj.get("identity") {
        for p in PRINCIPALS {
            if let Some(Value::Object(pv)) = i.get(*p) {
                first = first.or_else(|| missing(pv, &["id"], &format!("identity.{p}.")));
            }
        }
    }
    first
}

/// The path of the first empty member (`null` or `[]`, at any depth) of a version 2 body.
fn empty_member(v: &Value) -> Option<String> {
    let empty = |v: &Value| v.is_null() || v.as_array().is_some_and(Vec::is_empty);
    match v {
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            if empty(x) {
                Some(k.clone())
            } else {
                empty_member(x).map(|inner| format!("{k}.{inner}"))
            }
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| {
            if empty(x) {
                Some(i.to_string())
            } else {
                empty_member(x).map(|inner| format!("{i}.{inner}"))
            }
        }),
        _ => None,
    }
}

pub(crate) fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let v = hex::decode(s).ok()?;
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "test arithmetic on small constants"
)]
mod tests;
