//! Warnings about rules: rules that can never match, and rules shadowed by a stricter rule.

use crate::ast::{CmpOp, Expr, FieldRef, Item, Lit, Policy, RuleDef, SetRef};
use crate::diag::Diagnostic;
use crate::fmt::expr as expr_text;
use crate::syntax::expr::field_name;
use bundle::verdict::Mode;
use std::collections::{HashMap, HashSet};

pub(super) fn rule_warnings(p: &Policy) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let rules: Vec<&RuleDef> = p
        .items
        .iter()
        .filter_map(|i| if let Item::Rule(r) = i { Some(r) } else { None })
        .collect();
    for r in &rules {
        if let Some(why) = never_matches(&r.when) {
            diags.push(Diagnostic::warning(
                r.name.span,
                format!("rule `{}` can never match: {why}", r.name.node),
            ));
        }
    }
    let conj: Vec<HashSet<String>> = rules.iter().map(|r| conjuncts(&r.when)).collect();
    for (i, r) in rules.iter().enumerate() {
        let r_mode = r.mode.unwrap_or(p.pack.mode);
        if r_mode != Mode::Enforce || never_matches(&r.when).is_some() {
            continue;
        }
        for (j, s) in rules.iter().enumerate() {
            if i == j || s.mode.unwrap_or(p.pack.mode) != Mode::Enforce {
                continue;
            }
            let (Some(ci), Some(cj)) = (conj.get(i), conj.get(j)) else {
                continue;
            };
            // `s` matches whenever `r` does when every conjunct of `s` is a conjunct of `r`.
            if cj.is_subset(ci) && s.decision.decision > r.decision.decision {
                diags.push(
                    Diagnostic::warning(r.name.span, format!(
                        "rule `{}` can never decide: rule `{}` matches whenever it does and is stricter ({})",
                        r.name.node, s.name.node, s.decision.decision.as_str()
                    ))
                    .with_hint(if r.effects.is_empty() {
                        "remove it, narrow the stricter rule, or run it in audit mode"
                    } else {
                        "its effects still apply; if they are all it is for, give it the stricter rule's decision"
                    }),
                );
                break;
            }
        }
    }
    diags
}

/// The top-level conjuncts of a condition (`a and (b and c)` -> {a, b, c}), as canonical text.
fn conjuncts(e: &Expr) -> HashSet<String> {
    let mut out = HashSet::new();
    fn walk(e: &Expr, out: &mut HashSet<String>) {
        match e {
            Expr::And(a, b) => {
                walk(a, out);
                walk(b, out);
            }
            Expr::Const(true) => {}
            other => {
                out.insert(expr_text(other));
            }
        }
    }
    walk(e, &mut out);
    out
}

fn conjunct_list(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::And(a, b) => {
            let mut v = conjunct_list(a);
            v.extend(conjunct_list(b));
            v
        }
        other => vec![other],
    }
}

/// The tool a condition pins with a top-level `tool == "x"` (or `tool in ["x"]`).
pub(crate) fn pinned_tool(e: &Expr) -> Option<&str> {
    conjunct_list(e).into_iter().find_map(|c| match c {
        Expr::Cmp(f, CmpOp::Eq, lit) if f.node == FieldRef::Tool => match &lit.node {
            Lit::Str(s) => Some(s.as_str()),
            _ => None,
        },
        Expr::In(f, SetRef::Inline(v)) if f.node == FieldRef::Tool && v.len() == 1 => {
            match v.first().map(|l| &l.node) {
                Some(Lit::Str(s)) => Some(s.as_str()),
                _ => None,
            }
        }
        _ => None,
    })
}

/// Why a condition can never hold, when that is visible from its top-level conjuncts.
fn never_matches(e: &Expr) -> Option<String> {
    let parts = conjunct_list(e);
    if parts.iter().any(|c| matches!(c, Expr::Const(false))) {
        return Some("its condition contains `false`".to_owned());
    }
    let mut pinned: HashMap<String, (String, String)> = HashMap::new();
    for c in &parts {
        if let Expr::Cmp(f, CmpOp::Eq, lit) = c
            && let (Lit::Str(v), false) = (&lit.node, matches!(f.node, FieldRef::Arg(_)))
        {
            let name = field_name(&f.node);
            let text = expr_text(c);
            if let Some((other, other_text)) = pinned.get(&name)
                && other != v
            {
                return Some(format!("`{other_text}` and `{text}` cannot both hold"));
            }
            pinned.insert(name, (v.clone(), text));
        }
    }
    if let Some((k, ktext)) = pinned.get("kind")
        && k == "http"
    {
        for f in ["tool", "resource", "prompt"] {
            if let Some((_, t)) = pinned.get(f) {
                return Some(format!(
                    "an HTTP action has no {f}: `{ktext}` and `{t}` cannot both hold"
                ));
            }
        }
        for c in &parts {
            if let Expr::Present(f) = c
                && matches!(
                    f.node,
                    FieldRef::Tool | FieldRef::Resource | FieldRef::Prompt
                )
            {
                return Some(format!("an HTTP action has no {}", field_name(&f.node)));
            }
        }
    }
    // `x` and `not x` at the top level.
    let texts: HashSet<String> = parts.iter().map(|c| expr_text(c)).collect();
    for c in &parts {
        if let Expr::Not(inner) = c {
            let t = expr_text(inner);
            if texts.contains(&t) {
                return Some(format!("`{t}` and `not {t}` cannot both hold"));
            }
        }
    }
    None
}
