//! The warning for MCP protocol traffic left to a refusing default: a pack written for MCP
//! actions whose default is DENY, STEP_UP or DEFER, where some message of the `mcp_protocol`
//! list (`bundle::protocol`) has no rule that can decide it forward (ALLOW or MODIFY, in enforce
//! or warn mode). Such a message would fall to the default: an agent's answer to a sampling
//! request is refused, and the server's call hangs until the client times out.
//!
//! "Can decide it" is judged on each rule's condition evaluated for that message with what the
//! message is known to carry: `kind` is `mcp`, `operation` is the message's; it has no `tool`,
//! no `prompt` or `resource` unless its method carries one, no arguments unless it carries them
//! (a client response carries its `result`), and it is never outside an intent. Every other
//! field, and the session, could be anything. A rule whose condition is false for every such
//! message cannot decide it. A pack none of whose rules can match any MCP action (an egress-only
//! pack: every rule requires `kind == http`) is not about MCP, and gets no warning.

use std::collections::HashMap;

use crate::ast::{
    ClassDef, CmpOp, DecisionSpec, Expr, FieldRef, Item, Lit, Policy, RuleDef, SetRef, Span,
};
use crate::diag::Diagnostic;
use bundle::protocol::ProtocolList;
use bundle::verdict::{Decision, Mode};

/// What a condition can be for the messages considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Can {
    /// False for every one of them.
    Never,
    /// True for every one of them.
    Always,
    /// Depends on what is not known.
    Maybe,
}

impl Can {
    fn and(self, b: Can) -> Can {
        match (self, b) {
            (Can::Never, _) | (_, Can::Never) => Can::Never,
            (Can::Always, Can::Always) => Can::Always,
            _ => Can::Maybe,
        }
    }
    fn or(self, b: Can) -> Can {
        match (self, b) {
            (Can::Always, _) | (_, Can::Always) => Can::Always,
            (Can::Never, Can::Never) => Can::Never,
            _ => Can::Maybe,
        }
    }
    fn not(self) -> Can {
        match self {
            Can::Never => Can::Always,
            Can::Always => Can::Never,
            Can::Maybe => Can::Maybe,
        }
    }
}

/// What is known of a field of the messages considered.
enum Known<'a> {
    /// This exact string.
    Is(&'a str),
    /// Absent (every test on it is false).
    Absent,
    /// Anything.
    Unknown,
}

/// The messages considered: MCP actions, with this operation (`None`: any).
struct Msg<'a> {
    operation: Option<&'a str>,
}

impl Msg<'_> {
    fn field(&self, f: &FieldRef) -> Known<'_> {
        let op = self.operation;
        let carries = |ops: &[&str]| op.is_none_or(|o| ops.contains(&o));
        match f {
            FieldRef::Kind => Known::Is("mcp"),
            FieldRef::Operation => op.map_or(Known::Unknown, Known::Is),
            FieldRef::Tool if op.is_some() => Known::Absent,
            FieldRef::Prompt if !carries(&["completion/complete"]) => Known::Absent,
            FieldRef::Resource
                if !carries(&[
                    "resources/subscribe",
                    "resources/unsubscribe",
                    "completion/complete",
                ]) =>
            {
                Known::Absent
            }
            FieldRef::Arg(_) if !carries(&["response", "completion/complete"]) => Known::Absent,
            _ => Known::Unknown,
        }
    }
}

struct Eval<'p> {
    policy: &'p Policy,
    classes: HashMap<&'p str, &'p ClassDef>,
    builtin: Option<ClassDef>,
}

impl<'p> Eval<'p> {
    fn set(&self, s: &'p SetRef) -> Vec<&'p Lit> {
        match s {
            SetRef::Inline(v) => v.iter().map(|l| &l.node).collect(),
            SetRef::Named(n) => self
                .policy
                .items
                .iter()
                .find_map(|i| match i {
                    Item::List(l) if l.name.node == n.node => {
                        Some(l.values.iter().map(|v| &v.node).collect())
                    }
                    _ => None,
                })
                .unwrap_or_default(),
        }
    }

    fn can(&self, e: &Expr, m: &Msg<'_>, depth: usize) -> Can {
        if depth > 64 {
            return Can::Maybe;
        }
        let d = depth.saturating_add(1);
        let known = |f: &FieldRef, test: &dyn Fn(&str) -> bool| match m.field(f) {
            Known::Is(v) => {
                if test(v) {
                    Can::Always
                } else {
                    Can::Never
                }
            }
            Known::Absent => Can::Never,
            Known::Unknown => Can::Maybe,
        };
        match e {
            Expr::Const(true) => Can::Always,
            Expr::Const(false) => Can::Never,
            Expr::And(a, b) => self.can(a, m, d).and(self.can(b, m, d)),
            Expr::Or(a, b) => self.can(a, m, d).or(self.can(b, m, d)),
            Expr::Not(a) => self.can(a, m, d).not(),
            Expr::Cmp(f, op, lit) => known(&f.node, &|v| match (&lit.node, op) {
                (Lit::Str(s), CmpOp::Eq) => v == s,
                (Lit::Str(s), CmpOp::Ne) => v != s,
                _ => false,
            }),
            Expr::In(f, s) => {
                let vals = self.set(s);
                known(&f.node, &|v| {
                    vals.iter().any(|l| matches!(l, Lit::Str(x) if x == v))
                })
            }
            Expr::Glob(f, s) | Expr::Prefix(f, s) => {
                let vals = self.set(s);
                let is_glob = matches!(e, Expr::Glob(..));
                known(&f.node, &|v| {
                    vals.iter().any(|l| match l {
                        Lit::Str(p) if is_glob => crate::interp::glob(p, v),
                        Lit::Str(p) => v.starts_with(p.as_str()),
                        _ => false,
                    })
                })
            }
            Expr::Matches(f, re) => known(&f.node, &|v| crate::interp::regex_match(&re.node, v)),
            Expr::IsType(f, _) | Expr::Present(f) | Expr::Len(f, ..) | Expr::Contains(f, _) => {
                match m.field(&f.node) {
                    Known::Absent => Can::Never,
                    _ => Can::Maybe,
                }
            }
            Expr::InClass(c) => {
                let def = if c.node == crate::protocol::CLASS_NAME {
                    self.builtin.as_ref()
                } else {
                    self.classes.get(c.node.as_str()).copied()
                };
                def.map_or(Can::Never, |def| self.can(&def.when, m, d))
            }
            // Protocol messages do not act: they are never outside an intent.
            Expr::OutsideIntent => {
                if m.operation.is_some() {
                    Can::Never
                } else {
                    Can::Maybe
                }
            }
            Expr::Tainted(_)
            | Expr::Used(_)
            | Expr::Seen(_)
            | Expr::Count(..)
            | Expr::PrincipalTainted(_)
            | Expr::Quarantined => Can::Maybe,
        }
    }
}

fn forwards(d: &DecisionSpec) -> bool {
    matches!(d.decision, Decision::Allow | Decision::Modify)
}

/// The warning, when the pack leaves protocol traffic to a refusing default.
pub(super) fn undecided(p: &Policy) -> Vec<Diagnostic> {
    if !matches!(
        p.pack.default.decision,
        Decision::Deny | Decision::StepUp | Decision::Defer
    ) {
        return Vec::new();
    }
    let Some(list) = bundle::protocol::list(crate::protocol::version(p)) else {
        return Vec::new(); // an unknown pinned version is an error already
    };
    let rules: Vec<&RuleDef> = p
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Rule(r) => Some(r),
            _ => None,
        })
        .collect();
    let eval = Eval {
        policy: p,
        classes: p
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Class(c) => Some((c.name.node.as_str(), c)),
                _ => None,
            })
            .collect(),
        builtin: crate::protocol::class(list.version),
    };
    let any_mcp = Msg { operation: None };
    if rules
        .iter()
        .all(|r| eval.can(&r.when, &any_mcp, 0) == Can::Never)
    {
        return Vec::new();
    }
    let deciding: Vec<&RuleDef> = rules
        .into_iter()
        .filter(|r| forwards(&r.decision) && r.mode.unwrap_or(p.pack.mode) != Mode::Audit)
        .collect();
    let decided = |op: &str| {
        let m = Msg {
            operation: Some(op),
        };
        deciding
            .iter()
            .any(|r| eval.can(&r.when, &m, 0) != Can::Never)
    };
    let left = left_out(list, decided);
    if left.is_empty() {
        return Vec::new();
    }
    let span = if p.pack.default.span == Span::default() {
        p.pack.name.span
    } else {
        p.pack.default.span
    };
    let names: Vec<String> = left.iter().map(|o| format!("`{o}`")).collect();
    vec![
        Diagnostic::warning(
            span,
            format!(
                "no rule allows MCP protocol messages {}, so they fall to the pack's default (`{}`)",
                names.join(", "),
                p.pack.default.decision.as_str().to_ascii_lowercase()
            ),
        )
        .with_hint(format!(
            "allow them in one rule: `rule mcp_protocol {{ when class mcp_protocol allow \"MCP protocol messages act on nothing\" }}` (list version {})",
            list.version
        )),
    ]
}

/// The list's operations no rule decides, in list order; the prefix families' known members,
/// collapsed to `notifications/*` when none of them is decided.
fn left_out(list: &ProtocolList, decided: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = list
        .operations
        .iter()
        .filter(|op| !decided(op))
        .map(|op| (*op).to_owned())
        .collect();
    for prefix in list.prefixes {
        let members: Vec<&str> = list
            .known_prefixed
            .iter()
            .copied()
            .filter(|m| m.starts_with(prefix))
            .collect();
        let missing: Vec<&str> = members.iter().copied().filter(|m| !decided(m)).collect();
        if !missing.is_empty() && missing.len() == members.len() {
            out.push(format!("{prefix}*"));
        } else {
            out.extend(missing.into_iter().map(str::to_owned));
        }
    }
    out
}
