//! Tool pins (`docs/filter.md`, "Tool pins"; issue 18, items 2 and 4): the digest of each tool
//! definition an owner (the principal, or with none the session) was first offered, kept in their
//! own bounded shared-data slots, apart from session and principal records.
//!
//! **Slots.** [`PIN_SLOTS`] keys, `portcullis/pins/<slot in hex>`; an owner's record lives in one
//! of [`super::store::PROBES`] consecutive slots from its home slot, a salted hash of the owner
//! (the session layout's salt, domain-separated by the `pins\0` prefix, so an agent cannot aim at
//! another owner's slots). A record names its owner, and a record naming another is never read as
//! this one's. A new owner takes an empty probe, else the least recently written record (that
//! owner's pins are forgotten, and logged: its tools are pinned anew on their next list).
//!
//! **Fail closed.** A slot that cannot be read or decoded may hold this owner's pins: it is never
//! overwritten, and every tool of the owner is judged changed until it can be read. A record at
//! [`MAX_PINS_PER_OWNER`] tools pins no more: a tool it cannot pin is judged changed.
//!
//! **What a record holds** per tool (server, name): the digest first seen (the pin, unless the
//! bundle pins the tool: then the bundle's digest is the pin), the digest last listed (what a
//! `tools/call` is judged on), and per server whether the server announced a changed list
//! (`notifications/tools/list_changed`) since the owner last listed its tools.

use bundle::Bundle;
use bundle::pin::skeleton;
use serde::{Deserialize, Serialize};

use super::store::{EMPTY_SLOT_CAS, Layout};
use super::{Sessions, StoreFailed, retry_cas};
use crate::host::{Host, LogLevel, SharedDataError};
use crate::limits::{MAX_PINS_PER_OWNER, PIN_SLOTS};
use crate::policy::pins::ToolCheck;

/// The first bytes of a pin record (then its JSON).
const MAGIC: &[u8] = b"PTP1";

/// The shared-data key of a pin slot.
pub fn shared_key(slot: u32) -> String {
    format!("portcullis/pins/{slot:x}")
}

/// Whose pins a stream's tools are judged against: its principal, else its session (`None`:
/// neither is known, nothing is pinned).
pub(crate) fn owner(principal: Option<&str>, session: Option<&str>) -> Option<String> {
    match (principal, session) {
        (Some(p), _) => Some(format!("principal:{p}")),
        (None, Some(s)) => Some(format!("session:{s}")),
        (None, None) => None,
    }
}

/// One pinned tool of one server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pinned {
    server: String,
    name: String,
    /// The digest first seen, lowercase hex.
    pin: String,
    /// The digest last listed, lowercase hex.
    last: String,
}

/// One owner's pins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRecord {
    owner: String,
    /// Tools in the order they were first seen (what decides which of two confusable names
    /// shadows the other).
    tools: Vec<Pinned>,
    /// Servers that announced a changed tool list since the owner last listed their tools.
    #[serde(default)]
    stale: Vec<String>,
    /// When the record was last written (ms).
    seen_ms: u64,
}

impl PinRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // INVARIANT: a record of strings and numbers always serializes.
        out.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        out
    }

    fn decode(bytes: &[u8]) -> Option<PinRecord> {
        serde_json::from_slice(bytes.strip_prefix(MAGIC)?).ok()
    }

    fn find(&self, server: &str, name: &str) -> Option<(usize, &Pinned)> {
        self.tools
            .iter()
            .enumerate()
            .find(|(_, t)| t.server == server && t.name == name)
    }

    /// The first tool of another server whose name looks like `name`, recorded before position
    /// `before` (a tool not yet recorded: any).
    fn shadow_of(&self, server: &str, name: &str, before: usize) -> Option<&Pinned> {
        let sk = skeleton(name);
        self.tools
            .iter()
            .take(before)
            .find(|t| t.server != server && skeleton(&t.name) == sk)
    }
}

/// The owner's home slot and its probes.
fn probes(layout: &Layout, owner: &str) -> Vec<u32> {
    layout.principal_probes(&format!("pins\0{owner}"), PIN_SLOTS)
}

struct Slot {
    rec: PinRecord,
    slot: u32,
    cas: Option<u32>,
    /// The record this one replaces (another owner's), when it does.
    displaced: Option<String>,
}

/// Find `owner`'s record, or the slot a new one goes to.
fn scan(host: &dyn Host, layout: &Layout, owner: &str) -> Result<Slot, StoreFailed> {
    // (rank: 0 empty, 1 another owner's record; order), slot, cas, displaced owner
    type Candidate = ((u8, u64), u32, Option<u32>, Option<String>);
    let mut best: Option<Candidate> = None;
    for (i, slot) in probes(layout, owner).into_iter().enumerate() {
        let key = shared_key(slot);
        let (rank, cas, other) = match host.get_shared_data(&key) {
            Err(e) => {
                return Err(StoreFailed(format!(
                    "pin slot `{key}` cannot be read: {}",
                    e.0
                )));
            }
            Ok((None, cas)) => ((0, u64::try_from(i).unwrap_or(u64::MAX)), cas, None),
            Ok((Some(bytes), cas)) => match PinRecord::decode(&bytes) {
                Some(rec) if rec.owner == owner => {
                    return Ok(Slot {
                        rec,
                        slot,
                        cas,
                        displaced: None,
                    });
                }
                Some(rec) => ((1, rec.seen_ms), cas, Some(rec.owner)),
                None => return Err(StoreFailed(format!("pin slot `{key}` is unreadable"))),
            },
        };
        if best.as_ref().is_none_or(|(r, ..)| rank < *r) {
            best = Some((rank, slot, cas, other));
        }
    }
    let (_, slot, cas, displaced) =
        best.ok_or_else(|| StoreFailed(format!("no pin slot for `{owner}`")))?;
    Ok(Slot {
        rec: PinRecord {
            owner: owner.to_owned(),
            ..PinRecord::default()
        },
        slot,
        cas,
        displaced,
    })
}

/// The pin of (server, name): the bundle's, else the record's.
fn pin_of(bundle: &Bundle, rec_pin: Option<&str>, server: &str, name: &str) -> Option<String> {
    bundle
        .tool_pin(server, name)
        .map(hex::encode)
        .or_else(|| rec_pin.map(str::to_owned))
}

/// A tool of another server in the bundle's catalogue whose name looks like `name`.
fn bundle_shadow(bundle: &Bundle, server: &str, name: &str) -> Option<(String, String)> {
    let sk = skeleton(name);
    bundle
        .program()
        .tool_pins
        .iter()
        .find(|p| p.server != server && skeleton(&p.name) == sk)
        .map(|p| (p.server.clone(), p.name.clone()))
}

/// Judge every tool of a list from `server` (`(name, digest)`, digest `None` for an entry with
/// no definition to pin) against `rec`, pinning the new ones; returns one check per tool and
/// whether `rec` changed.
fn observe(
    bundle: &Bundle,
    rec: &mut PinRecord,
    server: &str,
    tools: &[(String, Option<[u8; 32]>)],
) -> (Vec<ToolCheck>, bool) {
    let mut changed_rec = false;
    if let Some(i) = rec.stale.iter().position(|s| s == server) {
        // This list is the re-check the announcement asked for.
        rec.stale.swap_remove(i);
        changed_rec = true;
    }
    let mut checks = Vec::with_capacity(tools.len());
    for (name, digest) in tools {
        let now = digest.map(hex::encode).unwrap_or_default();
        let mut check = ToolCheck::default();
        let pos = match rec.find(server, name) {
            Some((i, t)) => {
                if t.last != now {
                    changed_rec = true;
                }
                Some(i)
            }
            None if rec.tools.len() < MAX_PINS_PER_OWNER => {
                rec.tools.push(Pinned {
                    server: server.to_owned(),
                    name: name.clone(),
                    pin: pin_of(bundle, None, server, name).unwrap_or_else(|| now.clone()),
                    last: now.clone(),
                });
                changed_rec = true;
                Some(rec.tools.len().saturating_sub(1))
            }
            None => {
                check.why = Some(format!(
                    "no room to pin it: {MAX_PINS_PER_OWNER} tools are pinned already"
                ));
                None
            }
        };
        let rec_pin = pos.and_then(|i| rec.tools.get(i)).map(|t| t.pin.clone());
        if let Some(t) = pos.and_then(|i| rec.tools.get_mut(i)) {
            t.last.clone_from(&now);
        }
        let pin = pin_of(bundle, rec_pin.as_deref(), server, name);
        match pin {
            Some(p) if p != now => check.changed = Some((p, now)),
            Some(_) => {}
            None => check.changed = Some((String::new(), now)),
        }
        if check.why.is_some() && check.changed.is_none() {
            check.changed = Some((String::new(), digest.map(hex::encode).unwrap_or_default()));
        }
        check.shadowed = bundle_shadow(bundle, server, name).or_else(|| {
            rec.shadow_of(server, name, pos.unwrap_or(usize::MAX))
                .map(|t| (t.server.clone(), t.name.clone()))
        });
        checks.push(check);
    }
    (checks, changed_rec)
}

/// Judge a `tools/call` of `name` on `server` against `rec`: the definition last listed against
/// its pin; a changed list announced since is a definition nobody checked.
fn judge_call(bundle: &Bundle, rec: &PinRecord, server: &str, name: &str) -> ToolCheck {
    let mut check = ToolCheck::default();
    let found = rec.find(server, name);
    if rec.stale.iter().any(|s| s == server) {
        check.changed = Some((
            pin_of(bundle, found.map(|(_, t)| t.pin.as_str()), server, name).unwrap_or_default(),
            String::new(),
        ));
        check.why = Some(format!(
            "server `{server}` announced a changed tool list and it was not listed since"
        ));
    } else if let Some((_, t)) = found {
        let pin = pin_of(bundle, Some(&t.pin), server, name).unwrap_or_default();
        if pin != t.last {
            check.changed = Some((pin, t.last.clone()));
        }
    }
    check.shadowed = bundle_shadow(bundle, server, name).or_else(|| {
        rec.shadow_of(server, name, found.map_or(usize::MAX, |(i, _)| i))
            .map(|t| (t.server.clone(), t.name.clone()))
    });
    check
}

/// Every tool judged changed because the record cannot be read: `why`.
fn unreadable(n: usize, why: &str) -> Vec<ToolCheck> {
    (0..n)
        .map(|_| ToolCheck {
            changed: Some((String::new(), String::new())),
            why: Some(format!("its pins cannot be read: {why}")),
            shadowed: None,
        })
        .collect()
}

impl Sessions {
    /// The tools of a `tools/list` answer from `server` seen by `owner`: each judged against its
    /// pin (first seen ones are pinned now), in the order given.
    pub(crate) fn observe_tools(
        &self,
        host: &dyn Host,
        bundle: &Bundle,
        owner: &str,
        server: &str,
        tools: &[(String, Option<[u8; 32]>)],
    ) -> Vec<ToolCheck> {
        let Some(layout) = self.in_force.get(host) else {
            return unreadable(tools.len(), "no slot layout in shared data");
        };
        let mut out = Vec::new();
        let mut displaced = None;
        let r = retry_cas(|| {
            let Slot {
                mut rec,
                slot,
                cas,
                displaced: d,
            } = scan(host, &layout, owner).map_err(|e| SharedDataError::Other(e.0))?;
            let (checks, changed) = observe(bundle, &mut rec, server, tools);
            out = checks;
            if !changed {
                return Ok(());
            }
            rec.seen_ms = host.now_ms();
            host.set_shared_data(
                &shared_key(slot),
                &rec.encode(),
                Some(cas.unwrap_or(EMPTY_SLOT_CAS)),
            )?;
            displaced = d;
            Ok(())
        });
        if let Some(other) = displaced {
            host.log(
                LogLevel::Warn,
                &format!(
                    "portcullis: the tool pins of `{other}` were displaced by `{owner}`'s \
                     (every pin slot it may take was in use)"
                ),
            );
        }
        match r {
            Ok(()) => out,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "portcullis: tool pins of `{owner}`: {e}; every tool is judged changed"
                    ),
                );
                unreadable(tools.len(), &e.0)
            }
        }
    }

    /// A `tools/call` of `name` on `server` by `owner`, judged against the pin (read only).
    pub(crate) fn check_tool_call(
        &self,
        host: &dyn Host,
        bundle: &Bundle,
        owner: &str,
        server: &str,
        name: &str,
    ) -> ToolCheck {
        let read = self
            .in_force
            .get(host)
            .ok_or_else(|| StoreFailed("no slot layout in shared data".to_owned()))
            .and_then(|layout| scan(host, &layout, owner));
        match read {
            Ok(slot) => judge_call(bundle, &slot.rec, server, name),
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("portcullis: tool pins of `{owner}`: {e}; the call is judged changed"),
                );
                unreadable(1, &e.0).pop().unwrap_or_default()
            }
        }
    }

    /// `server` announced a changed tool list (`notifications/tools/list_changed`) to `owner`:
    /// until `owner` lists the tools again, a call of them is judged changed. An owner with no
    /// record has nothing pinned to re-check.
    pub(crate) fn tools_list_changed(&self, host: &dyn Host, owner: &str, server: &str) {
        let Some(layout) = self.in_force.get(host) else {
            return;
        };
        let r = retry_cas(|| {
            let Slot {
                mut rec,
                slot,
                cas,
                displaced,
            } = scan(host, &layout, owner).map_err(|e| SharedDataError::Other(e.0))?;
            if displaced.is_some()
                || cas.is_none()
                || rec.tools.is_empty()
                || rec.stale.iter().any(|s| s == server)
            {
                return Ok(());
            }
            rec.stale.push(server.to_owned());
            rec.seen_ms = host.now_ms();
            host.set_shared_data(&shared_key(slot), &rec.encode(), cas)?;
            Ok(())
        });
        if let Err(e) = r {
            // The record cannot be read or written: its calls are judged changed anyway when
            // it cannot be read; a write lost to contention is logged.
            host.log(
                LogLevel::Error,
                &format!("portcullis: tool pins of `{owner}`: a changed list not recorded: {e}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;
    use bundle::Trust;
    use bundle::format::{Program, ToolPin};
    use serde_json::json;

    fn bundle_with(pins: Vec<ToolPin>) -> Bundle {
        let p = Program {
            pack: "t".into(),
            version: "1".into(),
            mode: bundle::verdict::Mode::Enforce,
            default: bundle::format::DecisionDef {
                decision: bundle::verdict::Decision::Allow,
                reason: String::new(),
                modifications: vec![],
                step_up: None,
                defer: None,
            },
            unknown_session: bundle::format::DecisionDef {
                decision: bundle::verdict::Decision::Allow,
                reason: String::new(),
                modifications: vec![],
                step_up: None,
                defer: None,
            },
            mcp_protocol: None,
            intent_header: false,
            require_session_key: false,
            matchers: vec![],
            classes: vec![],
            intents: vec![],
            rules: vec![],
            tools: vec![],
            tool_pins: pins,
        };
        Bundle::from_bytes(&bundle::encode(&p), &Trust::AllowUnsigned).unwrap()
    }

    fn d(desc: &str) -> Option<[u8; 32]> {
        bundle::pin::definition_digest(&json!({"name": "x", "description": desc}))
    }

    fn list(names: &[(&str, &str)]) -> Vec<(String, Option<[u8; 32]>)> {
        names
            .iter()
            .map(|(n, desc)| ((*n).to_owned(), d(desc)))
            .collect()
    }

    #[test]
    fn first_list_pins_a_later_change_is_flagged_and_the_pin_stays() {
        let b = bundle_with(vec![]);
        let mut rec = PinRecord::default();
        let (c, changed) = observe(&b, &mut rec, "fs", &list(&[("read", "a"), ("write", "b")]));
        assert!(changed);
        assert!(
            c.iter()
                .all(|c| c.changed.is_none() && c.shadowed.is_none())
        );
        // The same list again changes nothing.
        let (c, changed) = observe(&b, &mut rec, "fs", &list(&[("read", "a"), ("write", "b")]));
        assert!(!changed);
        assert!(c.iter().all(|c| c.changed.is_none()));
        // A rug pull: `read` changes.
        let (c, _) = observe(
            &b,
            &mut rec,
            "fs",
            &list(&[("read", "evil"), ("write", "b")]),
        );
        let (old, new) = c[0].changed.clone().unwrap();
        assert_eq!(old, hex::encode(d("a").unwrap()));
        assert_eq!(new, hex::encode(d("evil").unwrap()));
        assert!(c[1].changed.is_none());
        // A call is judged on the definition last listed.
        assert!(judge_call(&b, &rec, "fs", "read").changed.is_some());
        assert!(judge_call(&b, &rec, "fs", "write").changed.is_none());
        // Seen again, the pin is still the first definition: it stays changed.
        let (c, _) = observe(&b, &mut rec, "fs", &list(&[("read", "evil")]));
        assert!(c[0].changed.is_some());
        // Back to the pinned definition: clean again.
        let (c, _) = observe(&b, &mut rec, "fs", &list(&[("read", "a")]));
        assert!(c[0].changed.is_none());
        assert!(judge_call(&b, &rec, "fs", "read").changed.is_none());
    }

    #[test]
    fn the_bundle_pin_wins_over_the_first_seen() {
        let b = bundle_with(vec![ToolPin {
            server: "fs".into(),
            name: "read".into(),
            digest: d("reviewed").unwrap(),
        }]);
        let mut rec = PinRecord::default();
        let (c, _) = observe(&b, &mut rec, "fs", &list(&[("read", "a")]));
        assert!(
            c[0].changed.is_some(),
            "first seen, but not the reviewed one"
        );
        let (c, _) = observe(&b, &mut rec, "fs", &list(&[("read", "reviewed")]));
        assert!(c[0].changed.is_none());
    }

    #[test]
    fn a_changed_list_announced_makes_calls_changed_until_the_next_list() {
        let b = bundle_with(vec![]);
        let mut rec = PinRecord::default();
        observe(&b, &mut rec, "fs", &list(&[("read", "a")]));
        rec.stale.push("fs".into());
        let c = judge_call(&b, &rec, "fs", "read");
        assert!(c.changed.is_some());
        assert!(c.why.unwrap().contains("announced a changed tool list"));
        // Another server's tools are not affected.
        assert!(judge_call(&b, &rec, "git", "push").changed.is_none());
        let (c, changed) = observe(&b, &mut rec, "fs", &list(&[("read", "a")]));
        assert!(changed && c[0].changed.is_none());
        assert!(judge_call(&b, &rec, "fs", "read").changed.is_none());
    }

    #[test]
    fn a_name_from_a_second_server_that_looks_like_a_first_one_is_shadowed() {
        let b = bundle_with(vec![]);
        let mut rec = PinRecord::default();
        observe(&b, &mut rec, "fs", &list(&[("read_file", "a")]));
        let (c, _) = observe(
            &b,
            &mut rec,
            "evil",
            &list(&[
                ("read_f\u{0456}le", "x"),
                ("Read_File", "y"),
                ("other", "z"),
            ]),
        );
        assert_eq!(c[0].shadowed, Some(("fs".into(), "read_file".into())));
        assert_eq!(c[1].shadowed, Some(("fs".into(), "read_file".into())));
        assert!(c[2].shadowed.is_none());
        // The first server's tool is not shadowed by the later one.
        assert!(judge_call(&b, &rec, "fs", "read_file").shadowed.is_none());
        assert!(
            judge_call(&b, &rec, "evil", "read_f\u{0456}le")
                .shadowed
                .is_some()
        );
        // A call of a name never listed from that server, confusable with a pinned one.
        assert!(judge_call(&b, &rec, "evil", "READ_FILE").shadowed.is_some());
    }

    #[test]
    fn a_full_record_pins_no_more_and_judges_the_rest_changed() {
        let b = bundle_with(vec![]);
        let mut rec = PinRecord::default();
        let many: Vec<(String, Option<[u8; 32]>)> = (0..=MAX_PINS_PER_OWNER)
            .map(|i| (format!("t{i}"), d("a")))
            .collect();
        let (c, _) = observe(&b, &mut rec, "fs", &many);
        assert_eq!(rec.tools.len(), MAX_PINS_PER_OWNER);
        assert!(c[..MAX_PINS_PER_OWNER].iter().all(|c| c.changed.is_none()));
        let last = c.last().unwrap();
        assert!(last.changed.is_some());
        assert!(last.why.as_ref().unwrap().contains("no room"));
    }

    #[test]
    fn records_round_trip_and_garbage_is_unreadable() {
        let b = bundle_with(vec![]);
        let mut rec = PinRecord {
            owner: "spiffe://a".into(),
            ..PinRecord::default()
        };
        observe(&b, &mut rec, "fs", &list(&[("read", "a")]));
        assert_eq!(PinRecord::decode(&rec.encode()), Some(rec));
        assert_eq!(PinRecord::decode(b"PTP1{"), None);
        assert_eq!(PinRecord::decode(b"{}"), None);
    }
}
