//! Server-held state bound to the decision it was minted under (MCP 2026-07-28; `docs/filter.md`,
//! "2026-07-28: server state bound to its decision"). A server that answers a `tools/call`,
//! `prompts/get` or `resources/read` with an `InputRequiredResult` may hand the client an opaque
//! `requestState` to echo in its retry. The filter passes it untouched, and remembers, for the
//! owner of the stream (its principal, else its session), the digest of the action that was
//! decided: a retry carrying that `requestState` must be the same action (same digest), else it
//! is denied. A `requestState` this owner was never handed is denied too: it was minted for
//! another principal or session, forged, or forgotten (fail closed).
//!
//! **Store.** One shared-data key, `portcullis/bindings`, holding at most [`MAX_BINDINGS`] live
//! entries: the first 16 bytes of SHA-256 over (kind, owner, value) — the value itself (a
//! server's opaque state, possibly sensitive) is never stored — the 32-byte action digest, and
//! the expiry ([`BINDING_TTL_MS`] after it was seen). When the set is full the entry closest to
//! expiry is forgotten: its retry is then denied as unknown, never allowed unchecked. Requests
//! handed over to another stream ([`BindKind::Awaited`]) are kept the same way in a set of their
//! own, `portcullis/awaited`, so a server that leaves many unanswered pushes out only those
//! (their answers are then judged as every answer they could be).

use sha2::{Digest as _, Sha256};

use super::retry_cas;
use super::store::EMPTY_SLOT_CAS;
use crate::host::{Host, LogLevel, SharedDataError};
use crate::limits::{BINDING_TTL_MS, MAX_BINDINGS};

/// The shared-data key of the binding set: the server state handed out (request states, task
/// ids).
pub(crate) const BINDINGS_KEY: &str = "portcullis/bindings";

/// The shared-data key of the requests handed over to another stream: a set of its own, so a
/// server that leaves many requests unanswered pushes out only its own entries, never a
/// request state or a task a retry needs.
pub(crate) const AWAITED_KEY: &str = "portcullis/awaited";

const MAGIC: &[u8; 4] = b"PBD1";

/// What a bound value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BindKind {
    /// An MRTR `requestState`.
    RequestState,
    /// A task id (the tasks extension) handed out for a `tools/call`.
    Task,
    /// A request whose event stream ended before its answer: the answer comes on another stream
    /// of the session (`results::Inspector::hand_over`).
    Awaited,
}

impl BindKind {
    /// The shared-data key of the set that holds this kind.
    const fn set(self) -> &'static str {
        match self {
            BindKind::RequestState | BindKind::Task => BINDINGS_KEY,
            BindKind::Awaited => AWAITED_KEY,
        }
    }

    const fn tag(self) -> &'static str {
        match self {
            BindKind::RequestState => "request_state",
            BindKind::Task => "task",
            BindKind::Awaited => "awaited",
        }
    }
}

/// Where a bound value is kept: its set, and the hash of what was bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BindKey {
    set: &'static str,
    hash: [u8; 16],
}

/// The key of `value` of `kind` handed to `owner`.
pub(crate) fn key_of(kind: BindKind, owner: &str, value: &str) -> BindKey {
    let mut h = Sha256::new();
    for part in [kind.tag(), owner, value] {
        h.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(part.as_bytes());
    }
    let full: [u8; 32] = h.finalize().into();
    let mut hash = [0u8; 16];
    for (o, b) in hash.iter_mut().zip(full) {
        *o = b;
    }
    BindKey {
        set: kind.set(),
        hash,
    }
}

/// The digest a binding holds an action to: [`bundle::receipt::action_digest`] of the action
/// without its session id (the owner is part of the key; a keyless retry may be decided in
/// another run of its principal). Computed in place: the action (and its arguments) is not
/// copied.
pub(crate) fn action_digest(action: &bundle::action::Action) -> [u8; 32] {
    bundle::receipt::action_digest_in(action, None)
}

/// What a key is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bound {
    /// [`action_digest`] of the action decided.
    pub digest: [u8; 32],
    /// The decision it was forwarded with: [`FORWARDED_ALLOW`] or [`FORWARDED_MODIFY`] (what a
    /// task continues; logged when the task is used).
    pub decision: u8,
    /// The tool the action called (empty when none), at most [`MAX_BOUND_NAME_BYTES`] bytes.
    pub name: String,
}

/// [`Bound::decision`] of an action forwarded as it was sent.
pub(crate) const FORWARDED_ALLOW: u8 = 0;
/// [`Bound::decision`] of an action forwarded rewritten (MODIFY).
pub(crate) const FORWARDED_MODIFY: u8 = 1;

/// Longest tool name a binding keeps; a task of a tool with a longer name cannot be bound, and
/// its handle is replaced by an error (fail closed).
pub(crate) const MAX_BOUND_NAME_BYTES: usize = 255;

/// One live entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    key: [u8; 16],
    expires_ms: u64,
    bound: Bound,
}

/// Bytes of an entry before its name.
const FIXED: usize = 16 + 32 + 8 + 1 + 1;

fn decode(bytes: &[u8]) -> Option<Vec<Entry>> {
    let mut rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let fixed = rest.get(..FIXED)?;
        let len = usize::from(*fixed.get(FIXED.checked_sub(1)?)?);
        let end = FIXED.checked_add(len)?;
        let name = std::str::from_utf8(rest.get(FIXED..end)?).ok()?;
        out.push(Entry {
            key: <[u8; 16]>::try_from(fixed.get(..16)?).ok()?,
            expires_ms: u64::from_be_bytes(<[u8; 8]>::try_from(fixed.get(48..56)?).ok()?),
            bound: Bound {
                digest: <[u8; 32]>::try_from(fixed.get(16..48)?).ok()?,
                decision: *fixed.get(56)?,
                name: name.to_owned(),
            },
        });
        rest = rest.get(end..)?;
    }
    Some(out)
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        MAGIC
            .len()
            .saturating_add(entries.len().saturating_mul(FIXED.saturating_add(16))),
    );
    out.extend_from_slice(MAGIC);
    for e in entries {
        // INVARIANT: `bind` refuses names over MAX_BOUND_NAME_BYTES (255), so the length fits.
        let name = e.bound.name.as_bytes();
        let len = u8::try_from(name.len()).unwrap_or(0);
        out.extend_from_slice(&e.key);
        out.extend_from_slice(&e.bound.digest);
        out.extend_from_slice(&e.expires_ms.to_be_bytes());
        out.push(e.bound.decision);
        out.push(len);
        out.extend_from_slice(name.get(..usize::from(len)).unwrap_or_default());
    }
    out
}

/// The set cannot be read or written, or the value cannot be bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unavailable(pub String);

/// Read the live entries of `set` and their CAS (`None` bytes: no set yet).
fn read(host: &dyn Host, set: &str) -> Result<(Option<Vec<Entry>>, Option<u32>), Unavailable> {
    let (bytes, cas) = host
        .get_shared_data(set)
        .map_err(|e| Unavailable(format!("`{set}` cannot be read: {}", e.0)))?;
    match bytes {
        None => Ok((None, cas)),
        Some(b) => match decode(&b) {
            Some(entries) => Ok((Some(entries), cas)),
            None => Err(Unavailable(format!("`{set}` is unreadable"))),
        },
    }
}

/// Remember that `key` was handed out for `bound`, at `now_ms`. A value bound again (the server
/// asked for more input on the retry) is bound anew.
pub(crate) fn bind(
    host: &dyn Host,
    key: BindKey,
    bound: &Bound,
    now_ms: u64,
) -> Result<(), Unavailable> {
    if bound.name.len() > MAX_BOUND_NAME_BYTES {
        return Err(Unavailable(format!(
            "a tool name longer than {MAX_BOUND_NAME_BYTES} bytes cannot be bound"
        )));
    }
    let outcome = retry_cas(|| {
        let (entries, cas) = read(host, key.set).map_err(|u| SharedDataError::Other(u.0))?;
        let existed = entries.is_some();
        let mut live = entries.unwrap_or_default();
        live.retain(|e| e.expires_ms > now_ms && e.key != key.hash);
        if live.len() >= MAX_BINDINGS {
            // Forget the entry closest to expiry: its retry is denied as unknown.
            if let Some(i) = live
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.expires_ms)
                .map(|(i, _)| i)
            {
                live.swap_remove(i);
            }
            host.log(
                LogLevel::Warn,
                &format!(
                    "portcullis: {} is full ({MAX_BINDINGS} live entries): the one closest to \
                     expiry was forgotten (a retry that needs it is denied; an answer that needs \
                     it is judged as every answer it could be)",
                    key.set
                ),
            );
        }
        live.push(Entry {
            key: key.hash,
            expires_ms: now_ms.saturating_add(BINDING_TTL_MS),
            bound: bound.clone(),
        });
        let cas = if existed { cas } else { Some(EMPTY_SLOT_CAS) };
        host.set_shared_data(key.set, &encode(&live), cas)?;
        Ok(())
    });
    outcome.map_err(|e| Unavailable(e.0))
}

/// What `key` was bound to, if it is live.
pub(crate) fn lookup(
    host: &dyn Host,
    key: BindKey,
    now_ms: u64,
) -> Result<Option<Bound>, Unavailable> {
    let (entries, _) = read(host, key.set)?;
    Ok(entries
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.key == key.hash && e.expires_ms > now_ms)
        .map(|e| e.bound))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed unwrap or index is a failed test"
    )]

    use super::*;
    use crate::mock::MockHost;

    fn b(n: u8) -> Bound {
        Bound {
            digest: [n; 32],
            decision: n,
            name: format!("tool{n}"),
        }
    }

    #[test]
    fn a_bound_value_is_found_by_its_owner_only_until_it_expires() {
        let host = MockHost::new(0);
        let k = key_of(BindKind::RequestState, "principal:a", "opaque");
        bind(&host, k, &b(7), 1_000).unwrap();
        assert_eq!(lookup(&host, k, 1_001).unwrap(), Some(b(7)));
        let other = key_of(BindKind::RequestState, "principal:b", "opaque");
        assert_eq!(lookup(&host, other, 1_001).unwrap(), None);
        // Bound again (a second InputRequiredResult): the new digest, a fresh expiry.
        bind(&host, k, &b(8), 2_000).unwrap();
        assert_eq!(lookup(&host, k, 2_001).unwrap(), Some(b(8)));
        let after = 2_000 + BINDING_TTL_MS;
        assert_eq!(lookup(&host, k, after).unwrap(), None);
    }

    #[test]
    fn a_full_set_forgets_the_entry_closest_to_expiry() {
        let host = MockHost::new(0);
        let first = key_of(BindKind::RequestState, "o", "0");
        bind(&host, first, &b(0), 1).unwrap();
        for i in 1..MAX_BINDINGS {
            let k = key_of(BindKind::RequestState, "o", &i.to_string());
            bind(&host, k, &b(1), 2).unwrap();
        }
        assert_eq!(lookup(&host, first, 3).unwrap(), Some(b(0)));
        let last = key_of(BindKind::RequestState, "o", "last");
        bind(&host, last, &b(2), 3).unwrap();
        assert_eq!(lookup(&host, first, 4).unwrap(), None);
        assert_eq!(lookup(&host, last, 4).unwrap(), Some(b(2)));
        let (entries, _) = read(&host, BINDINGS_KEY).unwrap();
        assert_eq!(entries.unwrap().len(), MAX_BINDINGS);
    }

    #[test]
    fn requests_handed_over_never_push_out_state_a_retry_needs() {
        // A server that leaves many requests unanswered fills the awaited set only.
        let host = MockHost::new(0);
        let state = key_of(BindKind::RequestState, "o", "opaque");
        bind(&host, state, &b(0), 1).unwrap();
        for i in 0..=MAX_BINDINGS {
            let k = key_of(BindKind::Awaited, "o", &i.to_string());
            bind(&host, k, &b(1), 2).unwrap();
        }
        assert_eq!(lookup(&host, state, 3).unwrap(), Some(b(0)));
        let (awaited, _) = read(&host, AWAITED_KEY).unwrap();
        assert_eq!(awaited.unwrap().len(), MAX_BINDINGS);
    }

    #[test]
    fn an_unreadable_set_fails_closed() {
        let host = MockHost::new(0);
        host.set_shared_data(BINDINGS_KEY, b"garbage", None)
            .unwrap();
        let k = key_of(BindKind::RequestState, "o", "v");
        assert!(lookup(&host, k, 1).is_err());
        assert!(bind(&host, k, &b(0), 1).is_err());
        // A truncated entry is unreadable too.
        let mut bytes = encode(&[Entry {
            key: k.hash,
            expires_ms: 9,
            bound: b(1),
        }]);
        bytes.pop();
        host.set_shared_data(BINDINGS_KEY, &bytes, None).unwrap();
        assert!(lookup(&host, k, 1).is_err());
    }

    #[test]
    fn names_round_trip_and_a_name_too_long_is_not_bound() {
        let host = MockHost::new(0);
        let k = key_of(BindKind::Task, "o", "task-1");
        let bound = Bound {
            name: "é".repeat(MAX_BOUND_NAME_BYTES / 2),
            ..b(3)
        };
        bind(&host, k, &bound, 1).unwrap();
        assert_eq!(lookup(&host, k, 2).unwrap(), Some(bound));
        let long = Bound {
            name: "x".repeat(MAX_BOUND_NAME_BYTES + 1),
            ..b(3)
        };
        assert!(bind(&host, k, &long, 1).is_err());
    }
}
