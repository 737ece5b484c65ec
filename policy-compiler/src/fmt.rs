//! The canonical formatter: AST -> text. Parsing the output gives the same AST (spans aside), and
//! formatting is idempotent: `fmt(parse(fmt(x))) == fmt(x)`.
//!
//! Layout: the pack header, then items in source order separated by one blank line; two-space
//! indentation; one field per line in blocks; a `when` longer than [`MAX_WIDTH`] columns is broken
//! before each top-level `and` (or `or`). Comments (`#` and `//`) are kept: each is printed on its
//! own line before the item it precedes; a comment written inside an item or at the end of a line
//! moves to just above that item. Optional syntax is normalized: `glob ["x"]` prints as
//! `glob "x"`, `header["x-y"]` as `header.x-y`, omitted pack fields are written out with their
//! defaults (except `mcp_protocol`, written only when pinned), durations in the largest exact
//! unit (`900000ms` -> `15m`).

use crate::ast::{
    CountSubject, DecisionSpec, EffectDef, Expr, FieldRef, IntentDef, Item, Lit, ModSpec, Policy,
    RuleDef, SetRef, Spanned,
};
use crate::syntax::expr::{arg_path_text, field_name, quote};
use bundle::verdict::{Decision, Mode, RiskTier};
use std::fmt::Write as _;

/// Lines longer than this break their `when` condition at top-level `and` / `or`.
pub const MAX_WIDTH: usize = 100;

/// Format a policy (without comments).
pub fn format_policy(p: &Policy) -> String {
    format_with_comments(p, &[], "")
}

/// Parse and format source text, keeping its comments.
pub fn format_source(src: &str) -> Result<String, Vec<crate::diag::Diagnostic>> {
    let p = crate::syntax::parse(src)?;
    let comments = crate::syntax::comments(src);
    Ok(format_with_comments(&p, &comments, src))
}

fn format_with_comments(p: &Policy, comments: &[crate::syntax::Comment], src: &str) -> String {
    let mut out = String::new();
    let mut next_comment = 0usize;
    // Print the comments that start before `limit` (byte offset in `src`).
    let mut flush = |out: &mut String, limit: usize, item_start: usize| {
        let mut prev_end: Option<usize> = None;
        while let Some(c) = comments.get(next_comment).filter(|c| c.offset < limit) {
            if let Some(pe) = prev_end {
                let between = src.get(pe..c.offset).unwrap_or("");
                if between.trim().is_empty() && between.matches('\n').count() >= 2 && !c.trailing {
                    out.push('\n');
                }
            }
            out.push_str(&c.text);
            out.push('\n');
            prev_end = Some(c.offset.saturating_add(c.text.len()));
            next_comment = next_comment.saturating_add(1);
        }
        if prev_end.is_some() {
            // A blank line after a comment block that was separated from the item in the source.
            if let Some(pe) = prev_end {
                let between = src.get(pe..item_start).unwrap_or("");
                if between.trim().is_empty() && between.matches('\n').count() >= 2 {
                    out.push('\n');
                }
            }
        }
    };
    let item_span = |i: &Item| match i {
        Item::List(x) => x.span,
        Item::Class(x) => x.span,
        Item::Intent(x) => x.span,
        Item::ToolSchema(x) => x.span,
        Item::Rule(x) => x.span,
    };
    flush(&mut out, p.pack.span.end, p.pack.span.start);
    pack(&mut out, p);
    let mut prev: Option<&Item> = None;
    for item in &p.items {
        // Consecutive `let` lists written without a blank line between them stay together.
        let grouped = match (prev, item) {
            (Some(Item::List(a)), Item::List(b)) => src
                .get(a.span.end..b.span.start)
                .is_some_and(|between| between.matches('\n').count() == 1),
            _ => false,
        };
        if !grouped {
            out.push('\n');
        }
        prev = Some(item);
        let sp = item_span(item);
        flush(&mut out, sp.end, sp.start);
        match item {
            Item::List(l) => {
                let vals: Vec<String> = l.values.iter().map(|v| literal(&v.node)).collect();
                let one = format!("let {} = [{}]\n", l.name.node, vals.join(", "));
                if one.len() <= MAX_WIDTH.saturating_add(1) {
                    out.push_str(&one);
                } else {
                    let _ = writeln!(out, "let {} = [", l.name.node);
                    for v in vals {
                        let _ = writeln!(out, "  {v},");
                    }
                    out.push_str("]\n");
                }
            }
            Item::Class(c) => {
                let ro = if c.readonly { " readonly" } else { "" };
                let _ = writeln!(out, "class {} risk {}{ro} {{", c.name.node, tier(c.risk));
                when(&mut out, &c.when);
                out.push_str("}\n");
            }
            Item::Intent(i) => intent(&mut out, i),
            Item::ToolSchema(t) => {
                let c = if t.coerce { " coerce" } else { "" };
                let _ = writeln!(out, "tool {}{c} {{", quote(&t.tool.node));
                for a in &t.args {
                    let steps: Vec<crate::ast::PathSegment> = a
                        .path
                        .node
                        .iter()
                        .map(|k| crate::ast::PathSegment::Key(k.clone()))
                        .collect();
                    let c = if a.coerce { " coerce" } else { "" };
                    let _ = writeln!(out, "  {}: {}{c},", arg_path_text(&steps), a.ty.name());
                }
                out.push_str("}\n");
            }
            Item::Rule(r) => rule(&mut out, r),
        }
    }
    // Comments after the last item.
    let rest: Vec<&crate::syntax::Comment> =
        comments.get(next_comment..).unwrap_or(&[]).iter().collect();
    if !rest.is_empty() {
        out.push('\n');
        for c in rest {
            out.push_str(&c.text);
            out.push('\n');
        }
    }
    out
}

fn pack(out: &mut String, p: &Policy) {
    let _ = writeln!(out, "pack {} {{", quote(&p.pack.name.node));
    if !p.pack.version.node.is_empty() {
        let _ = writeln!(out, "  version {}", quote(&p.pack.version.node));
    }
    let _ = writeln!(out, "  mode {}", mode(p.pack.mode));
    let _ = writeln!(out, "  default {}", decision(&p.pack.default));
    let _ = writeln!(
        out,
        "  unknown_session {}",
        decision(&p.pack.unknown_session)
    );
    // Written only when pinned: its default is "the newest list", which has no number of its own.
    if let Some(v) = &p.pack.mcp_protocol {
        let _ = writeln!(out, "  mcp_protocol {}", v.node);
    }
    if p.pack.intent_header {
        out.push_str("  intent_source header\n");
    }
    if p.pack.require_session_key {
        out.push_str("  session_key required\n");
    }
    out.push_str("}\n");
}

fn intent(out: &mut String, i: &IntentDef) {
    let _ = writeln!(out, "intent {} {{", i.name.node);
    if let Some(d) = &i.description {
        let _ = writeln!(out, "  description {}", quote(&d.node));
    }
    if !i.classes.is_empty() {
        let names: Vec<&str> = i.classes.iter().map(|c| c.node.as_str()).collect();
        let _ = writeln!(out, "  allow class [{}]", names.join(", "));
    }
    for (word, list) in [
        ("tool", &i.tools),
        ("host", &i.hosts),
        ("data", &i.data_scopes),
    ] {
        if list.is_empty() {
            continue;
        }
        let one = format!("  allow {word} {}", string_list(list));
        if one.chars().count() <= MAX_WIDTH {
            out.push_str(&one);
            out.push('\n');
        } else {
            let _ = writeln!(out, "  allow {word} [");
            for s in list {
                let _ = writeln!(out, "    {},", quote(&s.node));
            }
            out.push_str("  ]\n");
        }
    }
    let l = &i.limits;
    if let Some(n) = l.max_actions {
        let _ = writeln!(out, "  max actions {n}");
    }
    if let Some(n) = l.max_approvals {
        let _ = writeln!(out, "  max approvals {n}");
    }
    if let Some(n) = l.max_egress_bytes {
        let _ = writeln!(out, "  max egress_bytes {}", size(n));
    }
    if let Some(n) = l.max_duration_ms {
        let _ = writeln!(out, "  max duration {}", duration(n));
    }
    let _ = writeln!(out, "  outside {}", decision(&i.outside));
    out.push_str("}\n");
}

fn rule(out: &mut String, r: &RuleDef) {
    let m = r
        .mode
        .map(|m| format!(" mode {}", mode(m)))
        .unwrap_or_default();
    let _ = writeln!(out, "rule {}{m} {{", r.name.node);
    when(out, &r.when);
    decision_lines(out, &r.decision);
    if !r.effects.is_empty() {
        let effects: Vec<String> = r.effects.iter().map(|e| effect(&e.node)).collect();
        let _ = writeln!(out, "  then {}", effects.join(", "));
    }
    out.push_str("}\n");
}

fn when(out: &mut String, e: &Expr) {
    let one = format!("  when {}", expr(e));
    if one.chars().count() <= MAX_WIDTH {
        out.push_str(&one);
        out.push('\n');
        return;
    }
    // Break the left spine of the top-level `and` (or `or`) chain.
    let (word, parts) = match e {
        Expr::And(..) => ("and", spine(e, true)),
        Expr::Or(..) => ("or", spine(e, false)),
        _ => {
            out.push_str(&one);
            out.push('\n');
            return;
        }
    };
    let mut first = true;
    for part in parts {
        let text = child(part, if word == "and" { PREC_AND } else { PREC_OR }, !first);
        if first {
            let _ = writeln!(out, "  when {text}");
        } else {
            let _ = writeln!(out, "    {word} {text}");
        }
        first = false;
    }
}

/// The operands of a left-associated chain of `and` (or `or`): `((a and b) and c)` -> [a, b, c].
fn spine(e: &Expr, and: bool) -> Vec<&Expr> {
    match (e, and) {
        (Expr::And(l, r), true) | (Expr::Or(l, r), false) => {
            let mut v = spine(l, and);
            v.push(r);
            v
        }
        _ => vec![e],
    }
}

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_NOT: u8 = 3;
const PREC_ATOM: u8 = 4;

fn prec(e: &Expr) -> u8 {
    match e {
        Expr::Or(..) => PREC_OR,
        Expr::And(..) => PREC_AND,
        Expr::Not(..) => PREC_NOT,
        _ => PREC_ATOM,
    }
}

/// Print `e` as an operand of an operator of precedence `p`; `right` operands of a binary
/// operator need parentheses at equal precedence (the parser associates to the left).
fn child(e: &Expr, p: u8, right: bool) -> String {
    let ep = prec(e);
    // Beyond what parsing needs: `(a and b) or c` and `not (x == 1)` read better.
    let clarity = (p == PREC_OR && ep == PREC_AND)
        || (p == PREC_NOT
            && !matches!(
                e,
                Expr::Not(_)
                    | Expr::Const(_)
                    | Expr::InClass(_)
                    | Expr::Tainted(_)
                    | Expr::Used(_)
                    | Expr::Seen(_)
                    | Expr::OutsideIntent
                    | Expr::PrincipalTainted(_)
                    | Expr::Quarantined
            ));
    if clarity || ep < p || (right && ep == p && p != PREC_NOT) {
        format!("({})", expr(e))
    } else {
        expr(e)
    }
}

/// An expression on one line, with the fewest parentheses that parse back to the same tree.
pub fn expr(e: &Expr) -> String {
    match e {
        Expr::Const(b) => b.to_string(),
        Expr::And(l, r) => format!(
            "{} and {}",
            child(l, PREC_AND, false),
            child(r, PREC_AND, true)
        ),
        Expr::Or(l, r) => format!(
            "{} or {}",
            child(l, PREC_OR, false),
            child(r, PREC_OR, true)
        ),
        Expr::Not(x) => format!("not {}", child(x, PREC_NOT, false)),
        Expr::Cmp(f, op, v) => format!(
            "{} {} {}",
            field_name(&f.node),
            op.name(),
            value(&f.node, &v.node)
        ),
        Expr::In(f, s) => format!("{} in {}", field_name(&f.node), set(s, false)),
        Expr::Glob(f, s) => format!("{} glob {}", field_name(&f.node), set(s, true)),
        Expr::Prefix(f, s) => format!("{} prefix {}", field_name(&f.node), set(s, true)),
        Expr::Matches(f, r) => format!("{} matches {}", field_name(&f.node), quote(&r.node)),
        Expr::IsType(f, t) => format!("{} is {}", field_name(&f.node), t.name()),
        Expr::Present(f) => format!("{} present", field_name(&f.node)),
        Expr::Len(f, op, n) => format!("len({}) {} {}", field_name(&f.node), op.name(), number(*n)),
        Expr::Contains(f, s) => format!("{} contains {}", field_name(&f.node), quote(&s.node)),
        Expr::InClass(c) => format!("class {}", c.node),
        Expr::Tainted(t) => format!("session.tainted({})", quote(&t.node)),
        Expr::Used(t) => format!("session.used({})", quote(&t.node)),
        Expr::Seen(c) => format!("session.seen({})", c.node),
        Expr::Count(s, w, op, n) => {
            let subject = match &s.node {
                CountSubject::Subject(t) => format!("tool {}", quote(t)),
                CountSubject::Class(c) => format!("class {c}"),
            };
            format!(
                "session.count({subject}, within {}) {} {n}",
                duration(*w),
                op.name()
            )
        }
        Expr::OutsideIntent => "intent.outside".to_owned(),
        Expr::PrincipalTainted(t) => format!("principal.tainted({})", quote(&t.node)),
        Expr::Quarantined => "principal.quarantined".to_owned(),
    }
}

fn value(f: &FieldRef, v: &Lit) -> String {
    match (f, v) {
        (FieldRef::Kind, Lit::Str(s)) if s == "mcp" || s == "http" => s.clone(),
        (FieldRef::PrincipalAuth(_), Lit::Str(s))
            if ["none", "mtls", "jwt", "header", "node"].contains(&s.as_str()) =>
        {
            s.clone()
        }
        (FieldRef::SessionElapsed, Lit::Num(n)) if is_whole(*n) && *n > 0.0 => duration(*n as u64),
        (FieldRef::RequestSize | FieldRef::SessionEgressBytes, Lit::Num(n))
            if is_whole(*n)
                && *n >= 1000.0
                && ((*n as u64).is_multiple_of(1000) || (*n as u64).is_multiple_of(1024)) =>
        {
            size(*n as u64)
        }
        _ => literal(v),
    }
}

fn is_whole(n: f64) -> bool {
    n.fract() == 0.0 && n.abs() < 9.0e15
}

fn set(s: &SetRef, single_as_string: bool) -> String {
    match s {
        SetRef::Named(n) => n.node.clone(),
        SetRef::Inline(v) => match v.as_slice() {
            [
                Spanned {
                    node: Lit::Str(one),
                    ..
                },
            ] if single_as_string => quote(one),
            _ => format!(
                "[{}]",
                v.iter()
                    .map(|l| literal(&l.node))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// A literal as source text.
pub fn literal(l: &Lit) -> String {
    match l {
        Lit::Str(s) => quote(s),
        Lit::Num(n) => number(*n),
        Lit::Bool(b) => b.to_string(),
    }
}

fn number(n: f64) -> String {
    if is_whole(n) {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn string_list(l: &[Spanned<String>]) -> String {
    format!(
        "[{}]",
        l.iter()
            .map(|s| quote(&s.node))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Milliseconds in the largest unit that divides them exactly.
pub fn duration(ms: u64) -> String {
    for (unit, mult) in [("h", 3_600_000u64), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms.is_multiple_of(mult) {
            return format!("{}{unit}", ms / mult);
        }
    }
    format!("{ms}ms")
}

/// Bytes in the largest unit that divides them exactly.
pub fn size(bytes: u64) -> String {
    for (unit, mult) in [
        ("GiB", 1_073_741_824u64),
        ("GB", 1_000_000_000),
        ("MiB", 1_048_576),
        ("MB", 1_000_000),
        ("KiB", 1_024),
        ("KB", 1_000),
    ] {
        if bytes != 0 && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    format!("{bytes}B")
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Audit => "audit",
        Mode::Warn => "warn",
        Mode::Enforce => "enforce",
    }
}

fn tier(t: RiskTier) -> &'static str {
    match t {
        RiskTier::Low => "low",
        RiskTier::Medium => "medium",
        RiskTier::High => "high",
        RiskTier::Critical => "critical",
    }
}

fn decision(d: &DecisionSpec) -> String {
    let reason = quote(&d.reason);
    match d.decision {
        Decision::Allow => format!("allow {reason}"),
        Decision::Deny => format!("deny {reason}"),
        Decision::Modify => {
            let mods: Vec<String> = d
                .modifications
                .iter()
                .map(|m| modification(&m.node))
                .collect();
            format!("modify {reason} {{ {} }}", mods.join("; "))
        }
        Decision::StepUp => {
            let (g, t) = d.step_up.clone().unwrap_or_default();
            format!(
                "step_up {reason} {{ group {} timeout {} }}",
                quote(&g),
                duration(u64::from(t).saturating_mul(1000))
            )
        }
        Decision::Defer => {
            let (s, t) = d.defer.clone().unwrap_or_default();
            format!(
                "defer {reason} {{ service {} timeout {} }}",
                quote(&s),
                duration(u64::from(t))
            )
        }
    }
}

/// A rule's decision: on one line, or as a block when that line would be too long.
fn decision_lines(out: &mut String, d: &DecisionSpec) {
    let one = format!("  {}", decision(d));
    if one.chars().count() <= MAX_WIDTH || matches!(d.decision, Decision::Allow | Decision::Deny) {
        out.push_str(&one);
        out.push('\n');
        return;
    }
    let word = match d.decision {
        Decision::Modify => "modify",
        Decision::StepUp => "step_up",
        _ => "defer",
    };
    let _ = writeln!(out, "  {word} {} {{", quote(&d.reason));
    match d.decision {
        Decision::Modify => {
            for m in &d.modifications {
                let _ = writeln!(out, "    {}", modification(&m.node));
            }
        }
        Decision::StepUp => {
            let (g, t) = d.step_up.clone().unwrap_or_default();
            let _ = writeln!(out, "    group {}", quote(&g));
            let _ = writeln!(
                out,
                "    timeout {}",
                duration(u64::from(t).saturating_mul(1000))
            );
        }
        _ => {
            let (sv, t) = d.defer.clone().unwrap_or_default();
            let _ = writeln!(out, "    service {}", quote(&sv));
            let _ = writeln!(out, "    timeout {}", duration(u64::from(t)));
        }
    }
    out.push_str("  }\n");
}

fn modification(m: &ModSpec) -> String {
    match m {
        ModSpec::Redact(p) => format!("redact {}", arg_path_text(p)),
        ModSpec::Drop(p) => format!("drop {}", arg_path_text(p)),
        ModSpec::Clamp(p, lo, hi) => format!(
            "clamp {} {}..{}",
            arg_path_text(p),
            number(*lo),
            number(*hi)
        ),
        ModSpec::RedactSecrets => "redact_secrets".to_owned(),
        ModSpec::StripHeader(h) => format!("strip_header {}", quote(h)),
        ModSpec::SetHeader(h, v) => format!("set_header {} {}", quote(h), quote(v)),
        ModSpec::InjectCredential(n) => format!("inject credential {}", quote(n)),
        ModSpec::RemoveTools(p) => format!(
            "remove_tools [{}]",
            p.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn effect(e: &EffectDef) -> String {
    match e {
        EffectDef::Taint(t) => format!("taint {}", quote(t)),
        EffectDef::RevokeTool(Some(t)) => format!("revoke tool {}", quote(t)),
        EffectDef::RevokeTool(None) => "revoke tool".to_owned(),
        EffectDef::RevokeClass(c) => format!("revoke class {c}"),
        EffectDef::RevokePrincipalTool(Some(t)) => format!("revoke tool {} principal", quote(t)),
        EffectDef::RevokePrincipalTool(None) => "revoke tool principal".to_owned(),
        EffectDef::RevokePrincipalClass(c) => format!("revoke class {c} principal"),
        EffectDef::ReadOnly => "read_only".to_owned(),
        EffectDef::Kill => "kill".to_owned(),
        EffectDef::Quarantine(bundle::session::Quarantine::ReadOnly) => {
            "quarantine read_only".to_owned()
        }
        EffectDef::Quarantine(_) => "quarantine".to_owned(),
    }
}
