//! Human-readable listing of a bundle: header, hashes, rule table and bytecode.

use std::fmt::Write as _;

use crate::program::format::{
    DecisionDef, EffectDef, FieldRef, Instr, Jump, Lit, MatcherDef, Pred,
};
use crate::program::load::Bundle;
use crate::verdict::PathSegment;

/// Render a bundle: header, hashes, matchers, classes, intents, rules with their bytecode.
pub fn disassemble(bundle: &Bundle) -> String {
    let mut o = String::new();
    let i = bundle.info();
    let p = bundle.program();
    let _ = writeln!(o, "bundle format v{}", i.format_version);
    let _ = writeln!(
        o,
        "pack {:?} version {:?} mode {:?}",
        i.pack, i.version, p.mode
    );
    let _ = writeln!(o, "content sha256 {}", hex::encode(i.content_hash));
    let _ = writeln!(
        o,
        "signed by {}",
        i.key_id.as_deref().unwrap_or("(unsigned)")
    );
    let _ = writeln!(o, "default {}", decision(&p.default));
    let _ = writeln!(o, "unknown_session {}", decision(&p.unknown_session));
    if let Some(v) = p.mcp_protocol {
        let _ = writeln!(o, "mcp_protocol list v{v}");
    }
    let _ = writeln!(o, "\nmatchers ({}):", p.matchers.len());
    for (n, m) in p.matchers.iter().enumerate() {
        let d = match m {
            MatcherDef::Set { strs, nums, bools } => format!("set {strs:?} {nums:?} {bools:?}"),
            MatcherDef::Globs(g) => format!("globs {g:?}"),
            MatcherDef::Prefixes(g) => format!("prefixes {g:?}"),
            MatcherDef::Regex { pattern, dfa } => {
                format!("regex {pattern:?} (dfa {} bytes)", dfa.len())
            }
        };
        let _ = writeln!(o, "  m{n}: {d}");
    }
    let _ = writeln!(o, "\nclasses ({}):", p.classes.len());
    for (n, c) in p.classes.iter().enumerate() {
        let _ = writeln!(
            o,
            "  c{n} {} risk {:?}{}",
            c.name,
            c.risk,
            if c.readonly { " readonly" } else { "" }
        );
        code(&mut o, &c.code);
    }
    let _ = writeln!(o, "\nintents ({}):", p.intents.len());
    for it in &p.intents {
        let _ = writeln!(
            o,
            "  {} classes {:?} tools {:?} hosts {:?} data {:?} max actions {:?} egress {:?} duration_ms {:?} approvals {:?} outside {}",
            it.name,
            it.classes,
            it.tools,
            it.hosts,
            it.data,
            it.max_actions,
            it.max_egress_bytes,
            it.max_duration_ms,
            it.max_approvals,
            decision(&it.outside)
        );
    }
    let _ = writeln!(o, "\nrules ({}):", p.rules.len());
    for (n, r) in p.rules.iter().enumerate() {
        let _ = writeln!(
            o,
            "  r{n} {} mode {:?} -> {}",
            r.name,
            r.mode,
            decision(&r.decision)
        );
        if !r.effects.is_empty() {
            let e: Vec<String> = r.effects.iter().map(effect).collect();
            let _ = writeln!(o, "     then {}", e.join(", "));
        }
        let pins = &r.pins;
        let _ = writeln!(
            o,
            "     index kind {:?} operations {:?} tools {:?} hosts {:?}",
            pins.kind, pins.operations, pins.tools, pins.hosts
        );
        code(&mut o, &r.code);
    }
    if !p.tools.is_empty() {
        let _ = writeln!(o, "\ntools ({}):", p.tools.len());
        for t in &p.tools {
            let _ = writeln!(o, "  {:?}", t.name);
            for a in &t.args {
                let mut path = String::from("args");
                for k in &a.path {
                    let _ = write!(path, "[{k:?}]");
                }
                let _ = writeln!(
                    o,
                    "     {path}: {}{}",
                    a.ty.name(),
                    if a.coerce { " coerce" } else { "" }
                );
            }
        }
    }
    if !p.tool_pins.is_empty() {
        let _ = writeln!(o, "\ntool pins ({}):", p.tool_pins.len());
        for t in &p.tool_pins {
            let _ = writeln!(
                o,
                "  {:?} {:?} sha256 {}",
                t.server,
                t.name,
                hex::encode(t.digest)
            );
        }
    }
    o
}

fn decision(d: &DecisionDef) -> String {
    let mut s = format!("{} {:?}", d.decision.as_str(), d.reason);
    for m in &d.modifications {
        let _ = write!(s, " {m:?}");
    }
    if let Some(x) = &d.step_up {
        let _ = write!(s, " group {:?} timeout {}s", x.group, x.timeout_s);
    }
    if let Some(x) = &d.defer {
        let _ = write!(s, " service {:?} timeout {}ms", x.service, x.timeout_ms);
    }
    s
}

/// How the disassembler and `policyc inspect` write a rule's effect (`taint "secret"`).
pub fn effect(e: &EffectDef) -> String {
    match e {
        EffectDef::Taint(t) => format!("taint {t:?}"),
        EffectDef::RevokeTool(Some(t)) => format!("revoke tool {t:?}"),
        EffectDef::RevokeTool(None) => "revoke tool".to_owned(),
        EffectDef::RevokeClass(c) => format!("revoke class {c}"),
        EffectDef::RevokePrincipalTool(Some(t)) => format!("revoke tool {t:?} principal"),
        EffectDef::RevokePrincipalTool(None) => "revoke tool principal".to_owned(),
        EffectDef::RevokePrincipalClass(c) => format!("revoke class {c} principal"),
        EffectDef::ReadOnly => "read_only".to_owned(),
        EffectDef::Kill => "kill".to_owned(),
        EffectDef::Quarantine(crate::session::Quarantine::ReadOnly) => {
            "quarantine read_only".to_owned()
        }
        EffectDef::Quarantine(_) => "quarantine".to_owned(),
    }
}

fn jump(j: Jump) -> String {
    match j {
        Jump::To(t) => format!("@{t}"),
        Jump::Accept => "ACCEPT".to_owned(),
        Jump::Reject => "REJECT".to_owned(),
    }
}

fn code(o: &mut String, code: &[Instr]) {
    for (n, ins) in code.iter().enumerate() {
        let _ = writeln!(
            o,
            "     {n:>4}: {:<48} ? {} : {}{}",
            pred(&ins.pred),
            jump(ins.on_true),
            jump(ins.on_false),
            // An unknown test of a negated instruction counts the other way (format v2).
            if ins.negated { "  (negated)" } else { "" }
        );
    }
}

fn field(f: &FieldRef) -> String {
    match f {
        FieldRef::Header(h) => format!("header[{h:?}]"),
        FieldRef::Arg(p) => {
            let mut s = String::from("args");
            for seg in p {
                match seg {
                    PathSegment::Key(k) => {
                        let _ = write!(s, "[{k:?}]");
                    }
                    PathSegment::Index(i) => {
                        let _ = write!(s, "[{i}]");
                    }
                }
            }
            s
        }
        named => named.name().unwrap_or_default().to_owned(),
    }
}

fn lit(l: &Lit) -> String {
    match l {
        Lit::Str(s) => format!("{s:?}"),
        Lit::Num(n) => format!("{n}"),
        Lit::Bool(b) => format!("{b}"),
    }
}

fn pred(p: &Pred) -> String {
    match p {
        Pred::Const(b) => format!("CONST {b}"),
        Pred::Cmp(f, c, l) => format!("CMP {} {} {}", field(f), c.name(), lit(l)),
        Pred::In(f, m) => format!("IN {} m{m}", field(f)),
        Pred::Glob(f, m) => format!("GLOB {} m{m}", field(f)),
        Pred::Prefix(f, m) => format!("PREFIX {} m{m}", field(f)),
        Pred::Matches(f, m) => format!("MATCHES {} m{m}", field(f)),
        Pred::Is(f, t) => format!("IS {} {}", field(f), t.name()),
        Pred::Present(f) => format!("PRESENT {}", field(f)),
        Pred::Len(f, c, n) => format!("LEN {} {} {n}", field(f), c.name()),
        Pred::Contains(f, s) => format!("CONTAINS {} {s:?}", field(f)),
        Pred::InClass(c) => format!("IN_CLASS c{c}"),
        Pred::Tainted(h) => format!("TAINTED #{h:016x}"),
        Pred::Used(h) => format!("USED #{h:016x}"),
        Pred::Seen(h) => format!("SEEN #{h:016x}"),
        Pred::CountSubject(h, w, c, n) => {
            format!("COUNT subject #{h:016x} within {w}ms {} {n}", c.name())
        }
        Pred::CountClass(h, w, c, n) => {
            format!("COUNT class #{h:016x} within {w}ms {} {n}", c.name())
        }
        Pred::OutsideIntent => "OUTSIDE_INTENT".into(),
        Pred::PrincipalTainted(h) => format!("PRINCIPAL_TAINTED #{h:016x}"),
        Pred::Quarantined => "QUARANTINED".into(),
    }
}
