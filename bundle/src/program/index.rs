//! The rule index: rules grouped by what their condition pins (tool, else host, else operation,
//! else kind), so an evaluation visits only rules that can match the action. A rule that pins
//! nothing is a wildcard and is visited for every action (of its kind, when it pins one).

use std::collections::HashMap;

use crate::action::{Action, Kind};
use crate::program::format::RuleDef;

/// Rule indices (ascending) per key.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleIndex {
    by_tool: HashMap<String, Vec<u32>>,
    by_host: HashMap<String, Vec<u32>>,
    by_op: HashMap<String, Vec<u32>>,
    wild_mcp: Vec<u32>,
    wild_http: Vec<u32>,
    wild_any: Vec<u32>,
}

fn push(map: &mut HashMap<String, Vec<u32>>, keys: &[String], i: u32) {
    for k in keys {
        let v = map.entry(k.clone()).or_default();
        // INVARIANT: rules are added in ascending order; a key listed twice adds the rule once.
        if v.last() != Some(&i) {
            v.push(i);
        }
    }
}

impl RuleIndex {
    pub(crate) fn build(rules: &[RuleDef]) -> RuleIndex {
        let mut ix = RuleIndex::default();
        for (i, r) in rules.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let p = &r.pins;
            if !p.tools.is_empty() {
                push(&mut ix.by_tool, &p.tools, i);
            } else if !p.hosts.is_empty() {
                push(&mut ix.by_host, &p.hosts, i);
            } else if !p.operations.is_empty() {
                push(&mut ix.by_op, &p.operations, i);
            } else {
                match p.kind {
                    Some(Kind::Mcp) => ix.wild_mcp.push(i),
                    Some(Kind::Http) => ix.wild_http.push(i),
                    None => ix.wild_any.push(i),
                }
            }
        }
        ix
    }

    /// The candidate lists for an action; each is ascending and no rule is in two of them.
    pub(crate) fn candidates<'a>(&'a self, a: &Action) -> [&'a [u32]; 5] {
        const EMPTY: &[u32] = &[];
        let tool = a
            .tool
            .as_deref()
            .and_then(|t| self.by_tool.get(t))
            .map_or(EMPTY, Vec::as_slice);
        let host = self
            .by_host
            .get(a.target.host.as_str())
            .map_or(EMPTY, Vec::as_slice);
        let op = self
            .by_op
            .get(a.operation.as_str())
            .map_or(EMPTY, Vec::as_slice);
        let kind = match a.kind {
            Kind::Mcp => self.wild_mcp.as_slice(),
            Kind::Http => self.wild_http.as_slice(),
        };
        [tool, host, op, kind, &self.wild_any]
    }
}

/// Merge ascending, disjoint lists into one ascending walk without allocating.
pub(crate) struct Merge<'a, const N: usize> {
    lists: [&'a [u32]; N],
}

impl<'a, const N: usize> Merge<'a, N> {
    pub(crate) fn new(lists: [&'a [u32]; N]) -> Self {
        Merge { lists }
    }
}

impl<const N: usize> Iterator for Merge<'_, N> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let mut best: Option<(usize, u32)> = None;
        for (li, l) in self.lists.iter().enumerate() {
            if let Some(&v) = l.first()
                && best.is_none_or(|(_, b)| v < b)
            {
                best = Some((li, v));
            }
        }
        let (li, v) = best?;
        if let Some(l) = self.lists.get_mut(li) {
            *l = l.get(1..).unwrap_or_default();
        }
        Some(v)
    }
}
