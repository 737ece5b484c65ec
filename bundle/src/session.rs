//! Per-session state: what the policy can ask about a session, and what the filter keeps between
//! actions (in Envoy shared data, updated with compare-and-swap).
//!
//! Names (tools, classes, taints) are stored as 64-bit [`NameHash`]es so a session stays small
//! (target: under 512 bytes encoded) and independent of which bundle is loaded; the compiler
//! pre-hashes every name a policy mentions, so the VM never hashes at evaluation time.
//! History is a bounded window of the most recent [`HISTORY_CAP`] actions: `session.used`,
//! `session.seen` and `session.count` look only at that window. Facts that must last for the whole
//! session are taints (`then taint "secret"`), which never expire.

pub mod codec;

use sha2::{Digest, Sha256};

/// A 64-bit digest of a name (tool, class, taint). See [`name_hash`].
pub type NameHash = u64;

/// How many past actions a session remembers for `session.used` / `seen` / `count`.
pub const HISTORY_CAP: usize = 24;
/// How many distinct taints, revoked tools and revoked classes a session keeps (each list).
pub const SET_CAP: usize = 16;
/// How many distinct classes the history can refer to (bits of [`HistoryEntry::classes`]).
pub const CLASS_TABLE_CAP: usize = 16;

/// Hash a name for session storage: the first 8 bytes (big-endian) of
/// SHA-256(`"portcullis/name/v1\0"` || name). A keyed or cryptographic digest, because an agent
/// chooses tool names and must not be able to forge a collision with a name the policy mentions.
pub fn name_hash(name: &str) -> NameHash {
    let mut h = Sha256::new();
    h.update(b"portcullis/name/v1\0");
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    for (dst, src) in b.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    u64::from_be_bytes(b)
}

/// Whether the filter found state for this session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// First action of a session (or no session key at all).
    #[default]
    New,
    /// State was found.
    Active,
    /// The request names a session the filter once knew but whose state is gone (evicted or
    /// expired). The policy's `unknown_session` decision applies (deny by default).
    Missing,
}

/// One remembered action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Milliseconds since the session started.
    pub at_ms: u32,
    /// [`name_hash`] of the action's subject (tool, prompt, resource or HTTP host).
    pub subject: NameHash,
    /// Bit `i` set: the action was in class `class_table[i]`.
    pub classes: u16,
}

/// The state of one session, as the VM reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionState {
    /// New, active or missing.
    pub status: SessionStatus,
    /// The intent pinned at session start, if any.
    pub intent: Option<String>,
    /// Where the pinned intent came from (receipts record it).
    pub intent_source: crate::action::IntentSource,
    /// When the session started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Actions evaluated so far in this session (every decision counts).
    pub actions: u32,
    /// Bytes sent to HTTP egress targets so far.
    pub egress_bytes: u64,
    /// Approvals (STEP_UP resolved by a valid token) used so far.
    pub approvals: u32,
    /// Taints (name hashes), at most [`SET_CAP`].
    pub taints: Vec<NameHash>,
    /// Revoked tools (name hashes of subjects), at most [`SET_CAP`].
    pub revoked_tools: Vec<NameHash>,
    /// Revoked classes (name hashes), at most [`SET_CAP`].
    pub revoked_classes: Vec<NameHash>,
    /// The session was dropped to read-only.
    pub read_only: bool,
    /// The session was killed: every later action is denied.
    pub killed: bool,
    /// Classes referred to by `history[..].classes` bits, at most [`CLASS_TABLE_CAP`].
    pub class_table: Vec<NameHash>,
    /// The most recent actions, oldest first, at most [`HISTORY_CAP`].
    pub history: Vec<HistoryEntry>,
    /// Intent drift so far (0.0 = on intent); see `docs/policy-language.md`.
    pub drift: f32,
    /// The acting principal's state across all of its sessions (`principal.*`). Filled by the
    /// filter from the principal's own record for each evaluation; never part of the session
    /// record ([`codec`]).
    pub principal: PrincipalView,
}

/// How far a principal is quarantined.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Quarantine {
    /// Not quarantined.
    #[default]
    None,
    /// Only actions in a `readonly` class are allowed, in any of its sessions.
    ReadOnly,
    /// Every action is denied, in any of its sessions.
    Full,
}

/// What the policy can ask about the principal (the verified agent identity) behind a session:
/// state kept across all of its sessions, MCP and egress alike (`docs/containment.md`). Where
/// the operator configures no identity the principal is the session itself and this view is
/// empty.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrincipalView {
    /// The principal's id (`principal.id`); `None` when no identity is configured or known.
    pub id: Option<String>,
    /// Quarantine in force (`principal.quarantined` is true for both kinds).
    pub quarantine: Quarantine,
    /// Taints of any of its sessions (name hashes), at most [`SET_CAP`] (`principal.tainted`).
    pub taints: Vec<NameHash>,
    /// Sessions it has opened (`principal.sessions`).
    pub sessions: u32,
    /// Actions of it that were denied (`principal.denials`).
    pub denials: u32,
    /// Tools revoked for it in every session (subject name hashes), at most [`SET_CAP`].
    pub revoked_tools: Vec<NameHash>,
    /// Classes revoked for it in every session (name hashes), at most [`SET_CAP`].
    pub revoked_classes: Vec<NameHash>,
}

impl PrincipalView {
    /// Whether this tool (subject) was revoked for the principal.
    pub fn tool_revoked(&self, subject: NameHash) -> bool {
        self.revoked_tools.contains(&subject)
    }

    /// Whether this class was revoked for the principal.
    pub fn class_revoked(&self, class: NameHash) -> bool {
        self.revoked_classes.contains(&class)
    }

    /// Whether any of the principal's sessions carries this taint.
    pub fn tainted(&self, taint: NameHash) -> bool {
        self.taints.contains(&taint)
    }

    /// Whether a quarantine of either kind is in force.
    pub fn quarantined(&self) -> bool {
        self.quarantine != Quarantine::None
    }

    /// Apply what session effects do to the principal: a taint taints it (when its set is full
    /// it is fully quarantined instead: it never forgets a taint), `kill` and `quarantine`
    /// quarantine it. Returns whether anything changed.
    pub fn apply_effects(&mut self, effects: &[crate::verdict::Effect]) -> bool {
        use crate::verdict::Effect;
        let size = |v: &PrincipalView| {
            (
                v.taints.len(),
                v.revoked_tools.len(),
                v.revoked_classes.len(),
                v.quarantine,
            )
        };
        let before = size(self);
        for effect in effects {
            // A full set is a full quarantine: nothing is forgotten.
            let kept = match effect {
                Effect::Taint(t) => insert_bounded(&mut self.taints, name_hash(t), SET_CAP),
                Effect::RevokePrincipalTool(t) => {
                    insert_bounded(&mut self.revoked_tools, name_hash(t), SET_CAP)
                }
                Effect::RevokePrincipalClass(c) => {
                    insert_bounded(&mut self.revoked_classes, name_hash(c), SET_CAP)
                }
                Effect::Kill => {
                    self.quarantine_at_least(Quarantine::Full);
                    true
                }
                Effect::Quarantine(q) => {
                    self.quarantine_at_least(*q);
                    true
                }
                Effect::RevokeTool(_) | Effect::RevokeClass(_) | Effect::ReadOnly => true,
            };
            if !kept {
                self.quarantine_at_least(Quarantine::Full);
            }
        }
        before != size(self)
    }

    /// Raise the quarantine to at least `q` (a quarantine is only lifted by a release).
    pub fn quarantine_at_least(&mut self, q: Quarantine) {
        let rank = |q: Quarantine| match q {
            Quarantine::None => 0,
            Quarantine::ReadOnly => 1,
            Quarantine::Full => 2,
        };
        if rank(q) > rank(self.quarantine) {
            self.quarantine = q;
        }
    }
}

impl SessionState {
    /// Whether the session carries this taint.
    pub fn tainted(&self, taint: NameHash) -> bool {
        self.taints.contains(&taint)
    }

    /// Whether this tool (subject) was revoked.
    pub fn tool_revoked(&self, subject: NameHash) -> bool {
        self.revoked_tools.contains(&subject)
    }

    /// Whether this class was revoked.
    pub fn class_revoked(&self, class: NameHash) -> bool {
        self.revoked_classes.contains(&class)
    }

    fn class_bit(&self, class: NameHash) -> Option<u16> {
        let i = self.class_table.iter().position(|c| *c == class)?;
        1u16.checked_shl(u32::try_from(i).ok()?)
    }

    /// Whether an action on this subject is in the remembered history.
    pub fn used(&self, subject: NameHash) -> bool {
        self.history.iter().any(|e| e.subject == subject)
    }

    /// Whether an action in this class is in the remembered history.
    pub fn seen_class(&self, class: NameHash) -> bool {
        match self.class_bit(class) {
            Some(bit) => self.history.iter().any(|e| e.classes & bit != 0),
            None => false,
        }
    }

    fn since_ms(&self, window_ms: u64, now_ms: u64) -> u64 {
        now_ms
            .saturating_sub(window_ms)
            .saturating_sub(self.started_ms)
    }

    /// Remembered actions on this subject within the last `window_ms` before `now_ms`.
    pub fn count_subject(&self, subject: NameHash, window_ms: u64, now_ms: u64) -> u32 {
        let since = self.since_ms(window_ms, now_ms);
        let n = self
            .history
            .iter()
            .filter(|e| e.subject == subject && u64::from(e.at_ms) >= since)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Remembered actions in this class within the last `window_ms` before `now_ms`.
    pub fn count_class(&self, class: NameHash, window_ms: u64, now_ms: u64) -> u32 {
        let Some(bit) = self.class_bit(class) else {
            return 0;
        };
        let since = self.since_ms(window_ms, now_ms);
        let n = self
            .history
            .iter()
            .filter(|e| e.classes & bit != 0 && u64::from(e.at_ms) >= since)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Milliseconds since the session started (0 for a new session).
    pub fn elapsed_ms(&self, now_ms: u64) -> u64 {
        match self.status {
            SessionStatus::New => 0,
            _ => now_ms.saturating_sub(self.started_ms),
        }
    }
}

/// Add `h` to a bounded set unless it is there already. Returns `false` when the set is full:
/// forgetting a taint or a revocation would loosen enforcement, so the caller fails closed.
fn insert_bounded(set: &mut Vec<NameHash>, h: NameHash, cap: usize) -> bool {
    if set.contains(&h) {
        return true;
    }
    if set.len() >= cap {
        return false;
    }
    set.push(h);
    true
}

impl SessionState {
    /// A fresh session starting at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        SessionState {
            started_ms: now_ms,
            ..SessionState::default()
        }
    }

    /// Record one evaluated action and apply the verdict's session effects. This is the only way
    /// the filter and the tabletop simulator change a session, so both evolve it identically.
    ///
    /// `intent` is the intent the evaluation pinned (only taken when the session has none yet).
    pub fn record(
        &mut self,
        action: &crate::action::Action,
        verdict: &crate::verdict::Verdict,
        intent: Option<&str>,
        now_ms: u64,
    ) {
        if self.status != SessionStatus::Active {
            if self.status == SessionStatus::New {
                self.started_ms = now_ms;
            }
            self.status = SessionStatus::Active;
        }
        if self.intent.is_none() {
            self.intent = intent.map(str::to_owned);
            if self.intent.is_some() {
                self.intent_source = action.intent_source;
            }
        }
        self.actions = self.actions.saturating_add(1);
        if verdict.decision == crate::verdict::Decision::Deny {
            self.principal.denials = self.principal.denials.saturating_add(1);
        }
        if verdict.decision != crate::verdict::Decision::Deny {
            self.egress_bytes = self.egress_bytes.saturating_add(action.egress_bytes());
        }
        let subject = name_hash(action.subject());
        let mut bits = 0u16;
        for class in &verdict.classes {
            let h = name_hash(class);
            if !self.class_table.contains(&h) && self.class_table.len() < CLASS_TABLE_CAP {
                self.class_table.push(h);
            }
            if let Some(bit) = self.class_bit(h) {
                bits |= bit;
            }
        }
        if self.history.len() >= HISTORY_CAP && !self.history.is_empty() {
            self.history.remove(0);
        }
        let at = now_ms.saturating_sub(self.started_ms);
        self.history.push(HistoryEntry {
            at_ms: u32::try_from(at).unwrap_or(u32::MAX),
            subject,
            classes: bits,
        });
        self.apply_effects(&verdict.effects);
    }

    /// Apply session effects (taints, revocations, read-only, kill, quarantine) without
    /// recording an action: what [`SessionState::record`] does with a verdict's effects, and what
    /// the filter does with the effects of rules matched by a tool *result* (`tools/result`,
    /// docs/filter.md).
    ///
    /// The principal view changes with the session: a taint taints the principal too (a full
    /// principal set is a full quarantine: it never forgets a taint either); `kill` kills the
    /// session and fully quarantines the principal, so a new session does not escape it;
    /// `quarantine` contains the session the same way (read-only or killed) and the principal.
    pub fn apply_effects(&mut self, effects: &[crate::verdict::Effect]) {
        use crate::verdict::Effect;
        self.principal.apply_effects(effects);
        for effect in effects {
            let kept = match effect {
                Effect::Taint(t) => insert_bounded(&mut self.taints, name_hash(t), SET_CAP),
                Effect::Quarantine(q) => {
                    match q {
                        Quarantine::None => true,
                        Quarantine::ReadOnly => {
                            self.read_only = true;
                            true
                        }
                        // A full quarantine kills the session (below).
                        Quarantine::Full => false,
                    }
                }
                Effect::RevokeTool(t) | Effect::RevokePrincipalTool(t) => {
                    insert_bounded(&mut self.revoked_tools, name_hash(t), SET_CAP)
                }
                Effect::RevokeClass(c) | Effect::RevokePrincipalClass(c) => {
                    insert_bounded(&mut self.revoked_classes, name_hash(c), SET_CAP)
                }
                Effect::ReadOnly => {
                    self.read_only = true;
                    true
                }
                Effect::Kill => false,
            };
            // INVARIANT: a session never forgets a taint or revocation. When a bounded set is full
            // the session is killed instead (documented in docs/policy-language.md, "Sessions").
            if !kept {
                self.killed = true;
            }
        }
    }
}
