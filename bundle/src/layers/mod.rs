//! Layered packs: an organisation baseline and team packs, each compiled and signed on its own,
//! carried together in an outer envelope ([`envelope`]) with a [`manifest::Manifest`] that says
//! which pack applies to which action, in which mode, owned by which key.
//!
//! [`PackSet`] is what the filter evaluates. A plain single-pack bundle loads as a one-layer set
//! and is evaluated exactly as before (one VM run, no allocation for layers). With several
//! applicable packs, every one is evaluated and the strictest enforced decision wins
//! (DENY > STEP_UP > DEFER > MODIFY > ALLOW), so a team pack can never loosen what the baseline
//! denies. Rewrites of every MODIFY layer are merged; two that rewrite the same argument or header
//! differently are a conflict, decided DENY by [`CONFLICT_RULE`] (fail closed; `policyc build`
//! refuses such sets when it can see them).

pub mod envelope;
pub mod manifest;

use ed25519_dalek::VerifyingKey;

use crate::action::Action;
use crate::error::LoadError;
use crate::limits::Limits;
use crate::program::format::Program;
use crate::program::load::{Bundle, BundleInfo, Trust};
use crate::session::SessionState;
use crate::verdict::{Decision, Mode, Modification, Verdict};

pub use envelope::{SET_MAGIC, SET_VERSION, encode_set, sign_set};
pub use manifest::{Assign, Manifest, PackEntry};

/// The rule that decides DENY when applicable packs ask for conflicting rewrites.
pub const CONFLICT_RULE: &str = "layers:conflict";
/// The rule that decides ALLOW when no applicable pack runs in enforce mode.
pub const NOT_ENFORCED_RULE: &str = "layers:not_enforced";

/// One pack of a set, loaded and verified against its owner's key.
#[derive(Debug)]
pub struct Layer {
    /// Its manifest entry.
    pub entry: PackEntry,
    /// The verified bundle.
    pub bundle: Bundle,
    /// Lowercase hex content hash of the bundle.
    pub hash: String,
}

/// What one applicable pack decided about one action (receipts and `policyc explain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOutcome {
    /// Index of the layer in [`PackSet::layers`].
    pub index: usize,
    /// The assignment rule that selected the pack (`baseline`, `agent:<pattern>`, ...).
    pub assigned: String,
    /// The pack's own verdict: its enforced decision (before the layer's mode).
    pub decision: Decision,
    /// Its deciding rule.
    pub rule: String,
    /// Its reason.
    pub reason: String,
    /// Whether its decision is the one the set enforces.
    pub winner: bool,
}

/// The set's identity, for receipts (`bundle` member) and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetInfo {
    /// The set's name (the pack name for a single-pack bundle).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its content hash (the envelope's, or the single bundle's).
    pub content_hash: [u8; 32],
    /// The key id that signed the envelope (or the single bundle).
    pub key_id: Option<String>,
}

/// A verified set of packs, baseline first. `Send + Sync`, immutable: load once, share.
#[derive(Debug)]
pub struct PackSet {
    // INVARIANT: never empty, and `layers[0]` applies to every action (the manifest's check).
    layers: Vec<Layer>,
    info: SetInfo,
    /// Loaded from a layered envelope (receipts then list the layers, even for one pack).
    layered: bool,
}

impl PackSet {
    /// A single-pack bundle as a one-layer set.
    pub fn single(bundle: Bundle) -> PackSet {
        let i = bundle.info().clone();
        let hash = hex::encode(i.content_hash);
        let entry = PackEntry {
            id: i.pack.clone(),
            mode: Mode::Enforce,
            assign: Vec::new(),
            owner: i.key_id.clone().unwrap_or_default(),
            owner_key: String::new(),
            hash: hash.clone(),
        };
        PackSet {
            info: SetInfo {
                name: i.pack,
                version: i.version,
                content_hash: i.content_hash,
                key_id: i.key_id,
            },
            layers: vec![Layer {
                entry,
                bundle,
                hash,
            }],
            layered: false,
        }
    }

    /// Load a single-pack bundle (`PCLB`) or a layered bundle (`PCLS`), with default limits.
    pub fn from_bytes(bytes: &[u8], trust: &Trust) -> Result<PackSet, LoadError> {
        Self::from_bytes_with_limits(bytes, trust, &Limits::default())
    }

    /// [`PackSet::from_bytes`] with explicit limits. The envelope must be signed by a trusted key
    /// (with [`Trust::Keys`]); each pack must be signed by the owner key its manifest entry names,
    /// and only by it, and hash to the manifest's pin. Never panics.
    pub fn from_bytes_with_limits(
        bytes: &[u8],
        trust: &Trust,
        limits: &Limits,
    ) -> Result<PackSet, LoadError> {
        if bytes.get(..4) != Some(&SET_MAGIC[..]) {
            return Bundle::from_bytes_with_limits(bytes, trust, limits).map(PackSet::single);
        }
        let env = envelope::parse(bytes, limits)?;
        let key_id = match trust {
            Trust::Keys(keys) => Some(envelope::check(&env, keys)?),
            Trust::AllowUnsigned => env.sig.as_ref().map(|(id, _)| id.clone()),
        };
        let manifest = Manifest::parse(env.manifest, limits)?;
        if manifest.packs.len() != env.packs.len() {
            return Err(LoadError::invalid(format!(
                "the layered bundle manifest lists {} packs, the envelope carries {}",
                manifest.packs.len(),
                env.packs.len()
            )));
        }
        let mut layers = Vec::with_capacity(env.packs.len());
        for (entry, bytes) in manifest.packs.into_iter().zip(env.packs.iter()) {
            let pack_trust = match trust {
                Trust::Keys(_) => {
                    let owner: VerifyingKey = crate::keys::parse_verifying_key(&entry.owner_key)
                        .map_err(|e| LoadError::invalid(format!("owner_key: {e}")))?;
                    Trust::Keys(vec![owner])
                }
                Trust::AllowUnsigned => Trust::AllowUnsigned,
            };
            let bundle =
                Bundle::from_bytes_with_limits(bytes, &pack_trust, limits).map_err(|e| {
                    LoadError::Layer {
                        pack: entry.id.clone(),
                        error: Box::new(e),
                    }
                })?;
            let hash = hex::encode(bundle.info().content_hash);
            if hash != entry.hash {
                return Err(LoadError::Layer {
                    pack: entry.id.clone(),
                    error: Box::new(LoadError::invalid(
                        "its content hash is not the one the manifest pins",
                    )),
                });
            }
            layers.push(Layer {
                entry,
                bundle,
                hash,
            });
        }
        Ok(PackSet {
            layers,
            info: SetInfo {
                name: manifest.name,
                version: manifest.version,
                content_hash: env.hash,
                key_id,
            },
            layered: true,
        })
    }

    /// The layers, baseline first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Whether the set came from a layered envelope.
    pub fn is_layered(&self) -> bool {
        self.layered
    }

    /// The set's identity.
    pub fn set_info(&self) -> &SetInfo {
        &self.info
    }

    /// The baseline pack (the only one of a single-pack bundle).
    #[expect(
        clippy::indexing_slicing,
        reason = "INVARIANT: `layers` is never empty (built from one bundle, or a checked manifest with at least one pack)"
    )]
    pub fn baseline(&self) -> &Bundle {
        &self.layers[0].bundle
    }

    /// The baseline's program: session-level settings (`intent_source`, `session_key`) come from it.
    pub fn program(&self) -> &Program {
        self.baseline().program()
    }

    /// What the baseline bundle says about itself.
    pub fn info(&self) -> &BundleInfo {
        self.baseline().info()
    }

    /// The receipt records of `outcomes` (from [`PackSet::evaluate_layered`]).
    pub fn records(&self, outcomes: &[LayerOutcome]) -> Vec<crate::receipt::LayerRecord> {
        outcomes
            .iter()
            .filter_map(|o| {
                let l = self.layers.get(o.index)?;
                Some(crate::receipt::LayerRecord {
                    assigned: o.assigned.clone(),
                    decision: o.decision,
                    hash: l.hash.clone(),
                    mode: l.entry.mode,
                    pack: l.entry.id.clone(),
                    rule: o.rule.clone(),
                    version: l.bundle.info().version.clone(),
                    winner: o.winner,
                })
            })
            .collect()
    }

    /// Evaluate `action`: the combined verdict of every applicable pack.
    pub fn evaluate(&self, action: &Action, session: &SessionState, now_ms: u64) -> Verdict {
        self.evaluate_layered(action, session, now_ms).0
    }

    /// Evaluate `action`, with what each applicable pack decided. A single-pack bundle runs its VM
    /// once and returns no outcomes (nothing is allocated for layers).
    pub fn evaluate_layered(
        &self,
        action: &Action,
        session: &SessionState,
        now_ms: u64,
    ) -> (Verdict, Vec<LayerOutcome>) {
        if !self.layered {
            return (
                self.baseline().evaluate(action, session, now_ms),
                Vec::new(),
            );
        }
        let runs: Vec<(usize, String, Verdict)> = self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let src = l.entry.assigned(action)?;
                Some((i, src, l.bundle.evaluate(action, session, now_ms)))
            })
            .collect();
        combine(&self.layers, runs)
    }
}

/// The decision a layer contributes: its own in enforce mode, ALLOW in audit and warn mode.
fn contributes(mode: Mode, v: &Verdict) -> Decision {
    match mode {
        Mode::Enforce => v.decision,
        Mode::Audit | Mode::Warn => Decision::Allow,
    }
}

/// What a rewrite touches: rewrites with the same target must be equal, or they conflict.
#[derive(PartialEq)]
enum Target<'a> {
    Arg(&'a [crate::verdict::PathSegment]),
    Header(String),
    /// One request carries at most one injected credential: two different ones conflict.
    Credential,
    None,
}

fn target(m: &Modification) -> Target<'_> {
    match m {
        Modification::RedactArg { path }
        | Modification::DropArg { path }
        | Modification::ClampArg { path, .. }
        | Modification::CoerceArg { path, .. } => Target::Arg(path),
        Modification::StripHeader { name } | Modification::SetHeader { name, .. } => {
            Target::Header(name.to_ascii_lowercase())
        }
        Modification::InjectCredential { .. } => Target::Credential,
        Modification::RedactSecrets | Modification::RemoveTools { .. } => Target::None,
    }
}

/// Whether two rewrites (of different packs) conflict: they change the same argument or header,
/// differently.
pub fn conflicts(a: &Modification, b: &Modification) -> bool {
    let t = target(a);
    t != Target::None && t == target(b) && a != b
}

/// Combine the verdicts of the applicable layers (`runs`, in layer order; never empty because the
/// baseline applies to every action).
fn combine(layers: &[Layer], runs: Vec<(usize, String, Verdict)>) -> (Verdict, Vec<LayerOutcome>) {
    let mode = |i: usize| layers.get(i).map_or(Mode::Enforce, |l| l.entry.mode);
    let id = |i: usize| layers.get(i).map_or("", |l| l.entry.id.as_str());
    // The winner: the first enforce-mode layer with the strictest decision.
    let winner = runs
        .iter()
        .enumerate()
        .filter(|(_, (i, _, _))| mode(*i) == Mode::Enforce)
        .fold(None::<(usize, Decision)>, |best, (k, (i, _, v))| {
            let d = contributes(mode(*i), v);
            match best {
                Some((_, b)) if b >= d => best,
                _ => Some((k, d)),
            }
        })
        .map(|(k, _)| k);
    let mut out = match winner.and_then(|k| runs.get(k)) {
        Some((_, _, v)) => v.clone(),
        None => Verdict {
            decision: Decision::Allow,
            deciding_rule: NOT_ENFORCED_RULE.to_owned(),
            reason: "no applicable pack runs in enforce mode".to_owned(),
            ..Verdict::default()
        },
    };
    out.matched = Vec::new();
    out.effects = Vec::new();
    out.warnings = Vec::new();
    out.classes = Vec::new();
    out.modifications = Vec::new();
    let mut conflict: Option<String> = None;
    for (i, _, v) in &runs {
        let (i, m) = (*i, mode(*i));
        out.would_be = out.would_be.max(v.would_be);
        out.risk = out.risk.max(v.risk);
        if out.intent.is_none() {
            out.intent.clone_from(&v.intent);
        }
        for c in &v.classes {
            if !out.classes.contains(c) {
                out.classes.push(c.clone());
            }
        }
        out.matched.extend(v.matched.iter().map(|r| {
            let mut r = r.clone();
            if m != Mode::Enforce {
                r.mode = m;
            }
            r
        }));
        match m {
            Mode::Enforce => {
                out.warnings.extend(v.warnings.iter().cloned());
                for e in &v.effects {
                    if !out.effects.contains(e) {
                        out.effects.push(e.clone());
                    }
                }
                if out.decision == Decision::Modify && v.decision == Decision::Modify {
                    for mo in &v.modifications {
                        if let Some(prev) = out.modifications.iter().find(|p| conflicts(p, mo)) {
                            conflict.get_or_insert_with(|| {
                                format!(
                                    "pack `{}` asks for a rewrite that conflicts with another applicable pack's ({prev:?} and {mo:?})",
                                    id(i)
                                )
                            });
                        } else if !out.modifications.contains(mo) {
                            out.modifications.push(mo.clone());
                        }
                    }
                }
            }
            Mode::Warn if v.decision > Decision::Allow => {
                out.warnings
                    .push(format!("{}: {}: {}", id(i), v.deciding_rule, v.reason))
            }
            Mode::Warn | Mode::Audit => {}
        }
    }
    if let Some(why) = conflict {
        out.decision = Decision::Deny;
        out.would_be = Decision::Deny;
        out.deciding_rule = CONFLICT_RULE.to_owned();
        out.reason = why;
        out.modifications = Vec::new();
        out.step_up = None;
        out.defer = None;
    }
    let outcomes = runs
        .into_iter()
        .enumerate()
        .map(|(k, (index, assigned, v))| LayerOutcome {
            index,
            assigned,
            decision: v.decision,
            rule: v.deciding_rule,
            reason: v.reason,
            winner: Some(k) == winner,
        })
        .collect();
    (out, outcomes)
}
