//! The compact, versioned binary form of one session record (what the filter keeps in Envoy shared
//! data), and the JSON form of a [`SessionState`] used by tests and `policyc eval`.
//!
//! A record holds the [`SessionState`], the receipt [`ChainHead`] of the session and a small
//! [`SessionExtra`] (approval token ids already used, last activity). Layout, version 1 (all
//! integers are unsigned LEB128 varints unless noted; "hash" is 8 bytes big-endian):
//!
//! ```text
//! version          1 byte  = 0x01
//! flags            1 byte  bits 0-1 status (0 new, 1 active, 2 missing), bit 2 read_only,
//!                          bit 3 killed, bit 4 intent present, bit 5 owner present, bit 6
//!                          intent source present; bit 7 must be 0
//! started_ms actions egress_bytes approvals            varints
//! intent           varint length (<= 255) + UTF-8 bytes      (only when flag bit 4)
//! drift            4 bytes, IEEE-754 f32 little-endian
//! taints revoked_tools revoked_classes class_table     each: varint count + count hashes
//! subjects         varint count + hashes                (distinct history subjects, first-use order)
//! history          varint count, then per entry: varint subject index, varint at_ms delta
//!                  (zigzag, from the previous entry's at_ms, the first from 0), varint classes
//! chain            varint seq, 32 bytes prev hash, varint unsigned, varint oldest_unsigned_ms
//! extra            varint last_seen_ms, varint count (<= 8) + 16 bytes per used token id
//! owner            8-byte hash of the session's principal (only when flag bit 5)
//! intent source    1 byte: 1 grant, 2 claim, 3 header, 4 conflict (only when flag bit 6,
//!                  which needs bit 4)
//! ```
//!
//! [`decode`] checks every read, refuses any list over the caps in [`crate::session`], unknown
//! versions, reserved flag bits, bad UTF-8, an out-of-range subject index and trailing bytes, and
//! never panics.

use crate::action::IntentSource;
use crate::evidence::receipt::ChainHead;
use crate::session::{
    CLASS_TABLE_CAP, HISTORY_CAP, HistoryEntry, NameHash, PrincipalView, Quarantine, SET_CAP,
    SessionState, SessionStatus, name_hash,
};

/// The record format version written by [`encode`].
pub const CODEC_VERSION: u8 = 1;
/// Flag bit 5: the record ends with its owner's hash.
const FLAG_OWNER: u8 = 0x20;
/// Flag bit 6 (only with an intent): then one byte, where the pinned intent came from.
const FLAG_INTENT_SOURCE: u8 = 0x40;
/// How many used approval token ids a session remembers (a ring: the oldest is forgotten first).
pub const USED_TOKENS_CAP: usize = 8;
/// The longest intent name a record stores, in bytes.
pub const INTENT_MAX_BYTES: usize = 255;

/// Per-session bookkeeping the filter keeps next to the state and the chain head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionExtra {
    /// Ids (nonces) of approval tokens already used in this session, oldest first, at most
    /// [`USED_TOKENS_CAP`]. See [`crate::approval::Approval::nonce`].
    pub used_tokens: Vec<[u8; 16]>,
    /// When the session was last active (ms since the Unix epoch), for idle expiry.
    pub last_seen_ms: u64,
    /// [`crate::session::name_hash`] of the principal the session belongs to, when one is known:
    /// another principal's new session never displaces it from its slot.
    pub owner: Option<NameHash>,
}

impl SessionExtra {
    /// Whether this approval token id was already used in the session.
    pub fn token_used(&self, nonce: &[u8; 16]) -> bool {
        self.used_tokens.contains(nonce)
    }

    /// Remember a used approval token id; when the ring is full the oldest id is forgotten. (A
    /// forgotten token is still bounded by its own short expiry.)
    pub fn remember_token(&mut self, nonce: [u8; 16]) {
        if self.token_used(&nonce) {
            return;
        }
        if self.used_tokens.len() >= USED_TOKENS_CAP && !self.used_tokens.is_empty() {
            self.used_tokens.remove(0);
        }
        self.used_tokens.push(nonce);
    }
}

/// Why a session record (or session JSON) could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The record ended in the middle of a field.
    #[error("the session record is truncated")]
    Truncated,
    /// The record was written by an unknown format version.
    #[error("unsupported session record version {0} (this build reads version 1)")]
    Version(u8),
    /// A varint is longer than 10 bytes or does not fit its field.
    #[error("a number in the session record is out of range")]
    Overflow,
    /// A list is longer than its cap.
    #[error("the session record's `{what}` list has {len} entries, more than the cap of {cap}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length in the input.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// Something else is not valid (reserved bits, bad UTF-8, an index out of range, a value in the
    /// session JSON of the wrong type).
    #[error("invalid session record: {0}")]
    Invalid(String),
    /// Bytes are left after the record.
    #[error("the session record has trailing bytes")]
    Trailing,
}

// ---------------------------------------------------------------------------------------------
// Writing

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v = v.wrapping_shr(7);
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    put_varint(out, u64::try_from(len).unwrap_or(u64::MAX));
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[NameHash]) {
    put_len(out, hashes.len());
    for h in hashes {
        out.extend_from_slice(&h.to_be_bytes());
    }
}

fn zigzag(v: i64) -> u64 {
    (v.wrapping_shl(1) ^ v.wrapping_shr(63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v.wrapping_shr(1) as i64) ^ (v & 1).wrapping_neg() as i64
}

/// Encode a session record. Lists longer than their cap are truncated to the cap (the state's own
/// operations never let them grow past it), and an intent longer than [`INTENT_MAX_BYTES`] is
/// dropped, so the output always decodes.
pub fn encode(state: &SessionState, chain: &ChainHead, extra: &SessionExtra) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(CODEC_VERSION);
    let intent = state
        .intent
        .as_deref()
        .filter(|i| i.len() <= INTENT_MAX_BYTES);
    let mut flags: u8 = match state.status {
        SessionStatus::New => 0,
        SessionStatus::Active => 1,
        SessionStatus::Missing => 2,
    };
    if state.read_only {
        flags |= 0x04;
    }
    if state.killed {
        flags |= 0x08;
    }
    if intent.is_some() {
        flags |= 0x10;
    }
    if extra.owner.is_some() {
        flags |= FLAG_OWNER;
    }
    let source = intent
        .map(|_| source_byte(state.intent_source))
        .filter(|b| *b != 0);
    if source.is_some() {
        flags |= FLAG_INTENT_SOURCE;
    }
    out.push(flags);
    put_varint(&mut out, state.started_ms);
    put_varint(&mut out, u64::from(state.actions));
    put_varint(&mut out, state.egress_bytes);
    put_varint(&mut out, u64::from(state.approvals));
    if let Some(i) = intent {
        put_len(&mut out, i.len());
        out.extend_from_slice(i.as_bytes());
    }
    out.extend_from_slice(&state.drift.to_le_bytes());
    let cap = |v: &[NameHash], n: usize| -> Vec<NameHash> { v.iter().take(n).copied().collect() };
    put_hashes(&mut out, &cap(&state.taints, SET_CAP));
    put_hashes(&mut out, &cap(&state.revoked_tools, SET_CAP));
    put_hashes(&mut out, &cap(&state.revoked_classes, SET_CAP));
    put_hashes(&mut out, &cap(&state.class_table, CLASS_TABLE_CAP));
    let skip = state.history.len().saturating_sub(HISTORY_CAP);
    let history: Vec<&HistoryEntry> = state.history.iter().skip(skip).collect();
    let mut subjects: Vec<NameHash> = Vec::new();
    let mut indices: Vec<usize> = Vec::with_capacity(history.len());
    for e in &history {
        let idx = match subjects.iter().position(|s| *s == e.subject) {
            Some(i) => i,
            None => {
                subjects.push(e.subject);
                subjects.len().saturating_sub(1)
            }
        };
        indices.push(idx);
    }
    put_hashes(&mut out, &subjects);
    put_len(&mut out, history.len());
    let mut prev_at: i64 = 0;
    for (e, idx) in history.iter().zip(indices) {
        put_len(&mut out, idx);
        let at = i64::from(e.at_ms);
        put_varint(&mut out, zigzag(at.wrapping_sub(prev_at)));
        prev_at = at;
        put_varint(&mut out, u64::from(e.classes));
    }
    put_varint(&mut out, chain.seq);
    out.extend_from_slice(&chain.prev);
    put_varint(&mut out, u64::from(chain.unsigned));
    put_varint(&mut out, chain.oldest_unsigned_ms);
    put_varint(&mut out, extra.last_seen_ms);
    let skip = extra.used_tokens.len().saturating_sub(USED_TOKENS_CAP);
    put_len(&mut out, extra.used_tokens.len().saturating_sub(skip));
    for t in extra.used_tokens.iter().skip(skip) {
        out.extend_from_slice(t);
    }
    if let Some(owner) = extra.owner {
        out.extend_from_slice(&owner.to_be_bytes());
    }
    if let Some(b) = source {
        out.push(b);
    }
    out
}

/// The byte of an intent source (0: none recorded).
fn source_byte(s: IntentSource) -> u8 {
    match s {
        IntentSource::None => 0,
        IntentSource::Grant => 1,
        IntentSource::Claim => 2,
        IntentSource::Header => 3,
        IntentSource::Conflict => 4,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (b, rest) = self.rest.split_first().ok_or(CodecError::Truncated)?;
        self.rest = rest;
        Ok(*b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let b = self.bytes(N)?;
        <[u8; N]>::try_from(b).map_err(|_| CodecError::Truncated)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.byte()?;
            let low = u64::from(b & 0x7f);
            let shift = i.saturating_mul(7);
            // The 10th byte may only carry the top bit of a u64.
            if i == 9 && low > 1 {
                return Err(CodecError::Overflow);
            }
            v |= low.wrapping_shl(shift);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Overflow)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| CodecError::Overflow)
    }

    fn count(&mut self, what: &'static str, cap: usize) -> Result<usize, CodecError> {
        let len = self.varint()?;
        match usize::try_from(len) {
            Ok(n) if n <= cap => Ok(n),
            _ => Err(CodecError::TooMany { what, len, cap }),
        }
    }

    fn hashes(&mut self, what: &'static str, cap: usize) -> Result<Vec<NameHash>, CodecError> {
        let n = self.count(what, cap)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(u64::from_be_bytes(self.array::<8>()?));
        }
        Ok(v)
    }
}

/// Decode a session record written by [`encode`]. Never panics; every bad input is a
/// [`CodecError`].
pub fn decode(bytes: &[u8]) -> Result<(SessionState, ChainHead, SessionExtra), CodecError> {
    let mut r = Reader { rest: bytes };
    let version = r.byte()?;
    if version != CODEC_VERSION {
        return Err(CodecError::Version(version));
    }
    let flags = r.byte()?;
    if flags & 0x80 != 0 || (flags & FLAG_INTENT_SOURCE != 0 && flags & 0x10 == 0) {
        return Err(CodecError::Invalid("reserved flag bits are set".into()));
    }
    let status = match flags & 0x03 {
        0 => SessionStatus::New,
        1 => SessionStatus::Active,
        2 => SessionStatus::Missing,
        _ => return Err(CodecError::Invalid("unknown session status".into())),
    };
    let mut s = SessionState {
        status,
        read_only: flags & 0x04 != 0,
        killed: flags & 0x08 != 0,
        ..SessionState::default()
    };
    s.started_ms = r.varint()?;
    s.actions = r.u32()?;
    s.egress_bytes = r.varint()?;
    s.approvals = r.u32()?;
    if flags & 0x10 != 0 {
        let n = r.count("intent", INTENT_MAX_BYTES)?;
        let raw = r.bytes(n)?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| CodecError::Invalid("the intent is not UTF-8".into()))?;
        s.intent = Some(text.to_owned());
    }
    s.drift = f32::from_le_bytes(r.array::<4>()?);
    s.taints = r.hashes("taints", SET_CAP)?;
    s.revoked_tools = r.hashes("revoked_tools", SET_CAP)?;
    s.revoked_classes = r.hashes("revoked_classes", SET_CAP)?;
    s.class_table = r.hashes("class_table", CLASS_TABLE_CAP)?;
    let subjects = r.hashes("subjects", HISTORY_CAP)?;
    let n = r.count("history", HISTORY_CAP)?;
    let mut at: i64 = 0;
    for _ in 0..n {
        let idx = usize::try_from(r.varint()?).map_err(|_| CodecError::Overflow)?;
        let subject = *subjects
            .get(idx)
            .ok_or_else(|| CodecError::Invalid("a history subject index is out of range".into()))?;
        at = at
            .checked_add(unzigzag(r.varint()?))
            .ok_or(CodecError::Overflow)?;
        let at_ms = u32::try_from(at).map_err(|_| CodecError::Overflow)?;
        let classes = u16::try_from(r.varint()?).map_err(|_| CodecError::Overflow)?;
        s.history.push(HistoryEntry {
            at_ms,
            subject,
            classes,
        });
    }
    let chain = ChainHead {
        seq: r.varint()?,
        prev: r.array::<32>()?,
        unsigned: r.u32()?,
        oldest_unsigned_ms: r.varint()?,
    };
    let mut extra = SessionExtra {
        last_seen_ms: r.varint()?,
        used_tokens: Vec::new(),
        owner: None,
    };
    let n = r.count("used_tokens", USED_TOKENS_CAP)?;
    for _ in 0..n {
        extra.used_tokens.push(r.array::<16>()?);
    }
    if flags & FLAG_OWNER != 0 {
        extra.owner = Some(u64::from_be_bytes(r.array::<8>()?));
    }
    if flags & FLAG_INTENT_SOURCE != 0 {
        s.intent_source = match r.byte()? {
            1 => IntentSource::Grant,
            2 => IntentSource::Claim,
            3 => IntentSource::Header,
            4 => IntentSource::Conflict,
            b => return Err(CodecError::Invalid(format!("unknown intent source {b}"))),
        };
    }
    if !r.rest.is_empty() {
        return Err(CodecError::Trailing);
    }
    Ok((s, chain, extra))
}

// ---------------------------------------------------------------------------------------------
// JSON form

// ---------------------------------------------------------------------------------------------
// Keyed records (a record that names its session)

/// The first byte of a keyed record ([`encode_keyed`]); distinct from [`CODEC_VERSION`], so a
/// bare record is never taken for a keyed one.
pub const KEYED_TAG: u8 = 0x4b;
/// The longest session key a keyed record holds, in bytes.
pub const KEYED_KEY_MAX_BYTES: usize = 1024;

/// Encode a record together with the session key it belongs to, for stores where one location
/// can hold different sessions over time (the filter's hashed session slots):
///
/// ```text
/// tag              1 byte  = 0x4b
/// key              varint length (1..=1024) + bytes
/// record           the bytes of [`encode`]
/// ```
///
/// `None` when the key is empty or longer than [`KEYED_KEY_MAX_BYTES`].
pub fn encode_keyed(
    key: &[u8],
    state: &SessionState,
    chain: &ChainHead,
    extra: &SessionExtra,
) -> Option<Vec<u8>> {
    if key.is_empty() || key.len() > KEYED_KEY_MAX_BYTES {
        return None;
    }
    let record = encode(state, chain, extra);
    let mut out = Vec::with_capacity(record.len().saturating_add(key.len()).saturating_add(3));
    out.push(KEYED_TAG);
    put_len(&mut out, key.len());
    out.extend_from_slice(key);
    out.extend_from_slice(&record);
    Some(out)
}

/// Split a keyed record into the session key and the bytes of the record ([`decode`] them).
/// Only the frame is checked here, so the owner of a record whose body is damaged can still be
/// told. Never panics.
pub fn split_keyed(bytes: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let mut r = Reader { rest: bytes };
    let tag = r.byte()?;
    if tag != KEYED_TAG {
        return Err(CodecError::Version(tag));
    }
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| CodecError::Overflow)?;
    if len == 0 || len > KEYED_KEY_MAX_BYTES {
        return Err(CodecError::Invalid(format!(
            "a keyed record's key must be 1 to {KEYED_KEY_MAX_BYTES} bytes"
        )));
    }
    let key = r.bytes(len)?;
    Ok((key, r.rest))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryJson {
    subject: String,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    at_ms: u32,
}

fn default_status() -> SessionStatus {
    SessionStatus::Active
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionJson {
    #[serde(default = "default_status")]
    status: SessionStatus,
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    intent_source: IntentSource,
    #[serde(default)]
    started_ms: u64,
    #[serde(default)]
    actions: u32,
    #[serde(default)]
    egress_bytes: u64,
    #[serde(default)]
    approvals: u32,
    #[serde(default)]
    taints: Vec<String>,
    #[serde(default)]
    revoked_tools: Vec<String>,
    #[serde(default)]
    revoked_classes: Vec<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    killed: bool,
    #[serde(default)]
    history: Vec<HistoryJson>,
    #[serde(default)]
    drift: f32,
    #[serde(default)]
    principal: PrincipalJson,
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    quarantine: Quarantine,
    #[serde(default)]
    taints: Vec<String>,
    #[serde(default)]
    sessions: u32,
    #[serde(default)]
    denials: u32,
    #[serde(default)]
    revoked_tools: Vec<String>,
    #[serde(default)]
    revoked_classes: Vec<String>,
}

fn hash_set(what: &'static str, names: &[String]) -> Result<Vec<NameHash>, CodecError> {
    let mut out: Vec<NameHash> = Vec::new();
    for n in names {
        let h = name_hash(n);
        if !out.contains(&h) {
            out.push(h);
        }
    }
    if out.len() > SET_CAP {
        return Err(CodecError::TooMany {
            what,
            len: u64::try_from(out.len()).unwrap_or(u64::MAX),
            cap: SET_CAP,
        });
    }
    Ok(out)
}

/// Read a session from its JSON form (tests, `policyc eval --session`):
///
/// ```json
/// {"status": "active", "intent": "code_review", "started_ms": 1700000000000, "actions": 3,
///  "egress_bytes": 0, "approvals": 0, "taints": ["secret"], "revoked_tools": ["deploy"],
///  "revoked_classes": ["egress"], "read_only": false, "killed": false, "drift": 0.25,
///  "history": [{"subject": "read_file", "classes": ["read"], "at_ms": 1200}],
///  "principal": {"id": "spiffe://corp/agent", "quarantine": "read_only",
///                "taints": ["untrusted_instruction"], "sessions": 2, "denials": 1}}
/// ```
///
/// Every member is optional (`status` defaults to `active`: a session file describes a session
/// that exists; the rest default to empty / zero / false); unknown members are refused. Names are
/// stored hashed with [`name_hash`]; duplicate names count once. `history[].at_ms` is
/// milliseconds since `started_ms`; the class table is built from the history's class names in
/// order of first appearance. Lists over the caps of [`crate::session`] are refused.
pub fn session_from_json(v: &serde_json::Value) -> Result<SessionState, CodecError> {
    let j: SessionJson = serde::Deserialize::deserialize(v)
        .map_err(|e| CodecError::Invalid(format!("session json: {e}")))?;
    if let Some(i) = &j.intent
        && i.len() > INTENT_MAX_BYTES
    {
        return Err(CodecError::Invalid(format!(
            "the intent is longer than {INTENT_MAX_BYTES} bytes"
        )));
    }
    if j.history.len() > HISTORY_CAP {
        return Err(CodecError::TooMany {
            what: "history",
            len: u64::try_from(j.history.len()).unwrap_or(u64::MAX),
            cap: HISTORY_CAP,
        });
    }
    if !j.drift.is_finite() {
        return Err(CodecError::Invalid("drift must be a finite number".into()));
    }
    let mut class_table: Vec<NameHash> = Vec::new();
    let mut history = Vec::with_capacity(j.history.len());
    for e in &j.history {
        let mut bits = 0u16;
        for c in &e.classes {
            let h = name_hash(c);
            let idx = match class_table.iter().position(|x| *x == h) {
                Some(i) => i,
                None => {
                    if class_table.len() >= CLASS_TABLE_CAP {
                        return Err(CodecError::TooMany {
                            what: "history classes",
                            len: u64::try_from(class_table.len().saturating_add(1))
                                .unwrap_or(u64::MAX),
                            cap: CLASS_TABLE_CAP,
                        });
                    }
                    class_table.push(h);
                    class_table.len().saturating_sub(1)
                }
            };
            let bit = u32::try_from(idx)
                .ok()
                .and_then(|i| 1u16.checked_shl(i))
                .ok_or(CodecError::Overflow)?;
            bits |= bit;
        }
        history.push(HistoryEntry {
            at_ms: e.at_ms,
            subject: name_hash(&e.subject),
            classes: bits,
        });
    }
    Ok(SessionState {
        status: j.status,
        intent: j.intent,
        intent_source: j.intent_source,
        started_ms: j.started_ms,
        actions: j.actions,
        egress_bytes: j.egress_bytes,
        approvals: j.approvals,
        taints: hash_set("taints", &j.taints)?,
        revoked_tools: hash_set("revoked_tools", &j.revoked_tools)?,
        revoked_classes: hash_set("revoked_classes", &j.revoked_classes)?,
        read_only: j.read_only,
        killed: j.killed,
        class_table,
        history,
        drift: j.drift,
        principal: PrincipalView {
            id: j.principal.id,
            quarantine: j.principal.quarantine,
            taints: hash_set("principal taints", &j.principal.taints)?,
            sessions: j.principal.sessions,
            denials: j.principal.denials,
            revoked_tools: hash_set("principal revoked_tools", &j.principal.revoked_tools)?,
            revoked_classes: hash_set("principal revoked_classes", &j.principal.revoked_classes)?,
        },
    })
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "test arithmetic on small constants"
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn maximal() -> (SessionState, ChainHead, SessionExtra) {
        let h = |p: &str, i: usize| name_hash(&format!("{p}-{i}"));
        let s = SessionState {
            status: SessionStatus::Active,
            intent: Some("code_review_and_release".into()),
            intent_source: IntentSource::Grant,
            started_ms: 1_763_700_000_000,
            actions: 4_000_000,
            egress_bytes: 9_000_000_000,
            approvals: 12,
            taints: (0..SET_CAP).map(|i| h("t", i)).collect(),
            revoked_tools: (0..SET_CAP).map(|i| h("r", i)).collect(),
            revoked_classes: (0..SET_CAP).map(|i| h("c", i)).collect(),
            read_only: true,
            killed: true,
            class_table: (0..CLASS_TABLE_CAP).map(|i| h("k", i)).collect(),
            history: (0..HISTORY_CAP)
                .map(|i| HistoryEntry {
                    at_ms: 3_000_000 + 1_500 * i as u32,
                    subject: h("s", i),
                    classes: 0xffff,
                })
                .collect(),
            drift: 0.75,
            principal: PrincipalView::default(),
        };
        let chain = ChainHead {
            seq: 4_000_000,
            prev: [0xab; 32],
            unsigned: 15,
            oldest_unsigned_ms: 1_763_703_000_000,
        };
        let extra = SessionExtra {
            used_tokens: (0..USED_TOKENS_CAP as u8).map(|i| [i; 16]).collect(),
            last_seen_ms: 1_763_703_100_000,
            owner: Some(name_hash("spiffe://corp/ns/agents/sa/coder")),
        };
        (s, chain, extra)
    }

    fn typical() -> (SessionState, ChainHead, SessionExtra) {
        let tools = [
            "read_file",
            "list_dir",
            "run_tests",
            "write_file",
            "create_pr",
        ];
        let s = SessionState {
            status: SessionStatus::Active,
            intent: Some("code_review".into()),
            started_ms: 1_763_700_000_000,
            actions: 180,
            egress_bytes: 0,
            approvals: 1,
            taints: vec![name_hash("untrusted_instruction")],
            revoked_tools: vec![name_hash("deploy")],
            class_table: vec![name_hash("read"), name_hash("write")],
            history: (0..HISTORY_CAP)
                .map(|i| HistoryEntry {
                    at_ms: 600_000 + 2_000 * i as u32,
                    subject: name_hash(tools[i % tools.len()]),
                    classes: 1 << (i % 2),
                })
                .collect(),
            ..SessionState::default()
        };
        let chain = ChainHead {
            seq: 180,
            prev: [7; 32],
            unsigned: 3,
            oldest_unsigned_ms: 1_763_700_640_000,
        };
        (
            s,
            chain,
            SessionExtra {
                used_tokens: vec![[1; 16]],
                last_seen_ms: 1_763_700_650_000,
                owner: None,
            },
        )
    }

    #[test]
    fn round_trips_and_sizes() {
        for (name, rec) in [("maximal", maximal()), ("typical", typical())] {
            let bytes = encode(&rec.0, &rec.1, &rec.2);
            eprintln!("{name} session record: {} bytes", bytes.len());
            assert_eq!(decode(&bytes).unwrap(), rec);
        }
        // The realistic full-history session stays well under the 512-byte target. A session
        // with every list at its cap and 24 distinct subjects holds 88 random 8-byte name hashes
        // (704 bytes) that no encoding can shrink; the rest must stay small.
        let (s, c, e) = typical();
        assert!(encode(&s, &c, &e).len() < 512);
        let (s, c, e) = maximal();
        assert!(encode(&s, &c, &e).len() < 704 + 400);
    }

    #[test]
    fn keyed_record_names_its_session_and_round_trips() {
        let (s, c, e) = typical();
        let bytes = encode_keyed(b"sess-1", &s, &c, &e).unwrap();
        let (key, body) = split_keyed(&bytes).unwrap();
        assert_eq!(key, b"sess-1");
        assert_eq!(decode(body).unwrap(), (s.clone(), c.clone(), e.clone()));
        // the frame costs the key plus two bytes
        assert_eq!(bytes.len(), encode(&s, &c, &e).len() + 6 + 2);
        // a damaged body still tells whose record it is
        let mut damaged = bytes.clone();
        damaged.truncate(damaged.len() - 3);
        let (key, body) = split_keyed(&damaged).unwrap();
        assert_eq!(key, b"sess-1");
        assert!(decode(body).is_err());
        // a bare record is not a keyed one
        assert_eq!(
            split_keyed(&encode(&s, &c, &e)),
            Err(CodecError::Version(CODEC_VERSION))
        );
        // keys: 1..=1024 bytes
        assert!(encode_keyed(b"", &s, &c, &e).is_none());
        let long = vec![b'k'; KEYED_KEY_MAX_BYTES];
        let bytes = encode_keyed(&long, &s, &c, &e).unwrap();
        assert_eq!(split_keyed(&bytes).unwrap().0, long.as_slice());
        assert!(encode_keyed(&[b'k'; KEYED_KEY_MAX_BYTES + 1], &s, &c, &e).is_none());
    }

    #[test]
    fn keyed_frame_refuses_bad_input() {
        let (s, c, e) = typical();
        let bytes = encode_keyed(b"abc", &s, &c, &e).unwrap();
        // every cut inside the frame is an error; cuts after it leave a record decode refuses
        for n in 0..bytes.len() {
            match split_keyed(&bytes[..n]) {
                Err(_) => assert!(n < 5, "frame cut at {n} refused"),
                Ok((key, body)) => {
                    assert_eq!(key, b"abc");
                    assert!(decode(body).is_err());
                }
            }
        }
        assert!(split_keyed(&[KEYED_TAG, 0]).is_err());
        assert!(split_keyed(&[KEYED_TAG, 0x81, 0x08, b'x']).is_err()); // 1025 bytes
        assert!(
            split_keyed(&[
                KEYED_TAG, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ])
            .is_err()
        );
    }

    #[test]
    fn new_session_is_tiny() {
        let bytes = encode(
            &SessionState::new(5),
            &ChainHead::default(),
            &SessionExtra::default(),
        );
        assert!(bytes.len() < 64, "{}", bytes.len());
        let (s, c, e) = decode(&bytes).unwrap();
        assert_eq!(s, SessionState::new(5));
        assert_eq!(c, ChainHead::default());
        assert_eq!(e, SessionExtra::default());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (s, c, e) = maximal();
        let bytes = encode(&s, &c, &e);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(CodecError::Trailing));
    }

    #[test]
    fn refuses_wrong_version_flags_and_over_cap_lists() {
        let (s, c, e) = typical();
        let mut bytes = encode(&s, &c, &e);
        bytes[0] = 2;
        assert_eq!(decode(&bytes), Err(CodecError::Version(2)));
        let mut bytes = encode(&s, &c, &e);
        bytes[1] |= 0x80;
        assert!(matches!(decode(&bytes), Err(CodecError::Invalid(_))));

        // Hand-built record claiming 17 taints.
        let mut b = vec![1u8, 1];
        for _ in 0..4 {
            put_varint(&mut b, 0);
        }
        b.extend_from_slice(&0f32.to_le_bytes());
        put_varint(&mut b, 17);
        assert_eq!(
            decode(&b),
            Err(CodecError::TooMany {
                what: "taints",
                len: 17,
                cap: SET_CAP
            })
        );
        // A huge count must not allocate or loop.
        let mut b = vec![1u8, 1];
        for _ in 0..4 {
            put_varint(&mut b, 0);
        }
        b.extend_from_slice(&0f32.to_le_bytes());
        put_varint(&mut b, u64::MAX);
        assert!(matches!(decode(&b), Err(CodecError::TooMany { .. })));
    }

    #[test]
    fn refuses_overlong_varints() {
        let mut b = vec![1u8, 1];
        b.extend_from_slice(&[0xff; 11]);
        assert_eq!(decode(&b), Err(CodecError::Overflow));
        let mut b = vec![1u8, 1];
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert_eq!(decode(&b), Err(CodecError::Overflow));
    }

    #[test]
    fn session_json_hashes_names_and_builds_class_bits() {
        let s = session_from_json(&json!({
            "intent": "code_review", "started_ms": 1000, "actions": 3,
            "taints": ["secret", "secret"], "revoked_tools": ["deploy"],
            "history": [
                {"subject": "read_file", "classes": ["read"], "at_ms": 10},
                {"subject": "get_secret", "classes": ["secret_read", "read"], "at_ms": 20}
            ]
        }))
        .unwrap();
        assert_eq!(s.status, SessionStatus::Active);
        assert!(s.tainted(name_hash("secret")));
        assert_eq!(s.taints.len(), 1);
        assert!(s.tool_revoked(name_hash("deploy")));
        assert!(s.used(name_hash("get_secret")));
        assert!(s.seen_class(name_hash("secret_read")));
        assert!(!s.seen_class(name_hash("write")));
        assert_eq!(s.count_class(name_hash("read"), 1_000_000, 2_000), 2);
    }

    #[test]
    fn session_json_refuses_bad_shapes() {
        assert!(session_from_json(&json!({"taint": ["x"]})).is_err());
        assert!(session_from_json(&json!({"actions": -1})).is_err());
        assert!(session_from_json(&json!({"status": "zombie"})).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            session_from_json(&json!({ "taints": many })),
            Err(CodecError::TooMany { what: "taints", .. })
        ));
        let hist: Vec<_> = (0..25).map(|_| json!({"subject": "x"})).collect();
        assert!(session_from_json(&json!({ "history": hist })).is_err());
        assert_eq!(
            session_from_json(&json!({"status": "new"})).unwrap().status,
            SessionStatus::New
        );
    }
}
