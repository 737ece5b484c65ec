//! [`Bundle`]: a decoded, verified, immutable policy, ready to evaluate; and how to load one.

use ed25519_dalek::VerifyingKey;

use crate::error::LoadError;
use crate::limits::{Limits, MAX_CLASSES};
use crate::program::format::{DecisionDef, Program};
use crate::program::index::RuleIndex;
use crate::program::matchers::Matcher;
use crate::session::name_hash;
use crate::verdict::Decision;

/// Which bundles to accept.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Only bundles signed by one of these keys (matched by key id, then verified).
    Keys(Vec<VerifyingKey>),
    /// Any bundle whose content hash is right, signed or not; signatures are not checked.
    /// For tests, `policyc eval --allow-unsigned` and local development only.
    AllowUnsigned,
}

/// What a bundle says about itself (for logs, receipts and `policyc inspect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleInfo {
    /// The bundle format version.
    pub format_version: u16,
    /// The pack name.
    pub pack: String,
    /// The pack version.
    pub version: String,
    /// SHA-256 of the body (the content hash in the header).
    pub content_hash: [u8; 32],
    /// The key id of the signature, when the bundle is signed. With [`Trust::Keys`] it is the
    /// verified signer; with [`Trust::AllowUnsigned`] it is only what the bundle claims.
    pub key_id: Option<String>,
    /// Number of rules.
    pub rules: u32,
}

/// Decisions of the built-in checks, with their reasons (the same strings in every bundle).
#[derive(Clone, Debug)]
pub(crate) struct Builtins {
    pub killed: DecisionDef,
    pub revoked: DecisionDef,
    pub read_only: DecisionDef,
    pub intent_unknown: DecisionDef,
    pub max_actions: DecisionDef,
    pub max_egress: DecisionDef,
    pub max_duration: DecisionDef,
    pub max_approvals: DecisionDef,
    pub step_limit: DecisionDef,
    /// `args:type`: DENY; the verdict's reason names the argument instead of this one.
    pub args_type: DecisionDef,
    /// `args:coerce`: MODIFY; its `coerce_arg` modifications are made per evaluation.
    pub args_coerce: DecisionDef,
    pub quarantined: DecisionDef,
    pub principal_read_only: DecisionDef,
    pub principal_revoked: DecisionDef,
    pub intent_untrusted: DecisionDef,
}

fn deny(reason: &str) -> DecisionDef {
    DecisionDef {
        decision: Decision::Deny,
        reason: reason.to_owned(),
        modifications: Vec::new(),
        step_up: None,
        defer: None,
    }
}

impl Builtins {
    fn new() -> Self {
        use crate::program::builtin as b;
        Builtins {
            killed: deny(b::KILLED_REASON),
            revoked: deny(b::REVOKED_REASON),
            read_only: deny(b::READ_ONLY_REASON),
            intent_unknown: deny(b::INTENT_UNKNOWN_REASON),
            max_actions: deny(b::MAX_ACTIONS_REASON),
            max_egress: deny(b::MAX_EGRESS_BYTES_REASON),
            max_duration: deny(b::MAX_DURATION_REASON),
            max_approvals: deny(b::MAX_APPROVALS_REASON),
            step_limit: deny(b::STEP_LIMIT_REASON),
            args_type: deny("an argument has another type than the policy declares"),
            quarantined: deny(b::PRINCIPAL_QUARANTINED_REASON),
            principal_read_only: deny(b::PRINCIPAL_READ_ONLY_REASON),
            principal_revoked: deny(b::PRINCIPAL_REVOKED_REASON),
            intent_untrusted: deny(b::INTENT_UNTRUSTED_REASON),
            args_coerce: DecisionDef {
                decision: Decision::Modify,
                ..deny(b::ARGS_COERCE_REASON)
            },
        }
    }
}

/// A decoded, verified, immutable policy bundle. `Send + Sync`: load once, share, evaluate from
/// any number of requests.
#[derive(Debug)]
pub struct Bundle {
    pub(crate) prog: Program,
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) class_hashes: Vec<u64>,
    pub(crate) index: RuleIndex,
    pub(crate) builtins: Builtins,
    pub(crate) info: BundleInfo,
    pub(crate) max_steps: u32,
    /// A version-1 bundle: a test with a type error is false (the version-1 semantics), instead
    /// of unknown.
    pub(crate) type_errors_are_false: bool,
}

impl Bundle {
    /// Decode, verify and (per `trust`) authenticate a bundle, with the default [`Limits`].
    /// Never panics; every refusal is a [`LoadError`].
    pub fn from_bytes(bytes: &[u8], trust: &Trust) -> Result<Bundle, LoadError> {
        Self::from_bytes_with_limits(bytes, trust, &Limits::default())
    }

    /// [`Bundle::from_bytes`] with explicit limits.
    pub fn from_bytes_with_limits(
        bytes: &[u8],
        trust: &Trust,
        limits: &Limits,
    ) -> Result<Bundle, LoadError> {
        let env = crate::program::verify::envelope(bytes, limits)?;
        let key_id = match trust {
            Trust::Keys(keys) => Some(crate::program::sign::check(&env, keys)?),
            Trust::AllowUnsigned => env.sig.as_ref().map(|(id, _)| id.clone()),
        };
        let prog = crate::program::verify::body(env.body, limits, env.version)?;
        let classes = u64::try_from(prog.classes.len()).unwrap_or(u64::MAX);
        if classes > MAX_CLASSES {
            // The VM keeps an evaluation's class set in a fixed bitset of this size.
            return Err(LoadError::TooLarge {
                what: "the number of classes",
                found: classes,
                max: MAX_CLASSES,
            });
        }
        let matchers = prog
            .matchers
            .iter()
            .map(Matcher::build)
            .collect::<Result<Vec<_>, _>>()?;
        let class_hashes = prog.classes.iter().map(|c| name_hash(&c.name)).collect();
        let index = RuleIndex::build(&prog.rules);
        let info = BundleInfo {
            format_version: env.version,
            pack: prog.pack.clone(),
            version: prog.version.clone(),
            content_hash: env.hash,
            key_id,
            rules: u32::try_from(prog.rules.len()).unwrap_or(u32::MAX),
        };
        Ok(Bundle {
            prog,
            matchers,
            class_hashes,
            index,
            builtins: Builtins::new(),
            info,
            max_steps: limits.max_steps,
            type_errors_are_false: env.version < 2,
        })
    }

    /// What the bundle says about itself.
    pub fn info(&self) -> &BundleInfo {
        &self.info
    }

    /// The decoded program (for the disassembler and `policyc inspect`).
    pub fn program(&self) -> &Program {
        &self.prog
    }

    /// The digest pinned for the tool `name` of the MCP server `server` by a reviewed catalogue
    /// shipped in the bundle (`policyc pin`), if any.
    pub fn tool_pin(&self, server: &str, name: &str) -> Option<&[u8; 32]> {
        let pins = &self.prog.tool_pins;
        // INVARIANT: the verifier checked the pins are sorted by (server, name) and unique.
        let i = pins
            .binary_search_by(|p| (p.server.as_str(), p.name.as_str()).cmp(&(server, name)))
            .ok()?;
        pins.get(i).map(|p| &p.digest)
    }
}
