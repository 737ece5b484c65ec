//! Runtime matchers built once at load time from the bundle's [`MatcherDef`]s: sorted string sets
//! (binary search), glob lists, prefix lists and regex DFAs (`regex-automata` dense DFAs loaded with
//! the checked `from_bytes`).

mod glob;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::{Anchored, Input};

use crate::error::LoadError;
use crate::program::format::MatcherDef;

pub use glob::glob_match;

/// A matcher ready for evaluation.
#[derive(Clone, Debug)]
pub(crate) enum Matcher {
    /// Exact membership.
    Set {
        strs: Vec<String>,
        nums: Vec<f64>,
        bools: Vec<bool>,
    },
    /// Any glob.
    Globs(Vec<String>),
    /// Any prefix.
    Prefixes(Vec<String>),
    /// Whole-value regex.
    Regex(Box<dense::DFA<Vec<u32>>>),
}

/// Load a DFA from bytes at any alignment: copy into a 4-byte aligned window of a fresh buffer,
/// then use the checked deserializer.
fn load_dfa(bytes: &[u8]) -> Result<dense::DFA<Vec<u32>>, LoadError> {
    let bad = |why: &str| LoadError::invalid(format!("a regex automaton is invalid: {why}"));
    let mut buf = vec![0u8; bytes.len().saturating_add(4)];
    let off = buf.as_ptr().align_offset(4);
    let end = off.checked_add(bytes.len()).ok_or_else(|| bad("size"))?;
    let window = buf.get_mut(off..end).ok_or_else(|| bad("alignment"))?;
    window.copy_from_slice(bytes);
    let (dfa, used) = dense::DFA::from_bytes(window).map_err(|e| bad(&e.to_string()))?;
    if used != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    if matches!(dfa.start_kind(), StartKind::Unanchored) {
        return Err(bad("it cannot search anchored"));
    }
    Ok(dfa.to_owned())
}

impl Matcher {
    pub(crate) fn build(def: &MatcherDef) -> Result<Matcher, LoadError> {
        Ok(match def {
            MatcherDef::Set { strs, nums, bools } => Matcher::Set {
                strs: strs.clone(),
                nums: nums.clone(),
                bools: bools.clone(),
            },
            MatcherDef::Globs(g) => Matcher::Globs(g.clone()),
            MatcherDef::Prefixes(p) => Matcher::Prefixes(p.clone()),
            MatcherDef::Regex { dfa, .. } => Matcher::Regex(Box::new(load_dfa(dfa)?)),
        })
    }

    pub(crate) fn set_str(&self, s: &str) -> bool {
        match self {
            Matcher::Set { strs, .. } => strs.binary_search_by(|x| x.as_str().cmp(s)).is_ok(),
            _ => false,
        }
    }

    pub(crate) fn set_num(&self, n: f64) -> bool {
        match self {
            Matcher::Set { nums, .. } => nums.contains(&n),
            _ => false,
        }
    }

    pub(crate) fn set_bool(&self, b: bool) -> bool {
        match self {
            Matcher::Set { bools, .. } => bools.contains(&b),
            _ => false,
        }
    }

    /// Whether a set has any string, any number, any boolean.
    pub(crate) fn set_types(&self) -> (bool, bool, bool) {
        match self {
            Matcher::Set { strs, nums, bools } => {
                (!strs.is_empty(), !nums.is_empty(), !bools.is_empty())
            }
            _ => (false, false, false),
        }
    }

    /// A glob or prefix list without patterns (it matches nothing, whatever the value).
    pub(crate) fn is_empty_list(&self) -> bool {
        match self {
            Matcher::Globs(l) | Matcher::Prefixes(l) => l.is_empty(),
            _ => false,
        }
    }

    pub(crate) fn glob(&self, s: &str) -> bool {
        match self {
            Matcher::Globs(g) => g.iter().any(|p| glob_match(p, s)),
            _ => false,
        }
    }

    pub(crate) fn prefix(&self, s: &str) -> bool {
        match self {
            Matcher::Prefixes(p) => p.iter().any(|p| s.starts_with(p.as_str())),
            _ => false,
        }
    }

    /// Whole-value match. A search error (which a verified DFA does not produce for an anchored
    /// search) counts as no match.
    pub(crate) fn regex(&self, s: &str) -> bool {
        match self {
            Matcher::Regex(dfa) => {
                let input = Input::new(s).anchored(Anchored::Yes);
                matches!(dfa.try_search_fwd(&input), Ok(Some(m)) if m.offset() == s.len())
            }
            _ => false,
        }
    }
}
