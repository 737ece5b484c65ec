//! The bundle encoder: [`Program`] -> unsigned bundle bytes. Deterministic: the same program always
//! gives the same bytes (strings are pooled in first-use order, nothing depends on hash order).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::format::{
    ClassDef, DecisionDef, EffectDef, FORMAT_VERSION, FieldRef, Instr, IntentDef, JUMP_ACCEPT,
    JUMP_REJECT, Jump, Lit, MAGIC, MatcherDef, Pins, Pred, Program, RuleDef, ToolDef, cmp_tag,
    decision_tag, field_tag, kind_tag, mode_tag, op, risk_tag, vtype_tag,
};
use crate::verdict::{Modification, PathSegment};

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
    pool: Vec<String>,
    index: HashMap<String, u32>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        let idx = match self.index.get(s) {
            Some(i) => *i,
            None => {
                let i = u32::try_from(self.pool.len()).unwrap_or(u32::MAX);
                self.pool.push(s.to_owned());
                self.index.insert(s.to_owned(), i);
                i
            }
        };
        self.u32(idx);
    }
    fn strs(&mut self, v: &[String]) {
        self.len(v.len());
        for s in v {
            self.str(s);
        }
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u32(x);
            }
            None => self.u8(0),
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u64(x);
            }
            None => self.u8(0),
        }
    }

    fn path(&mut self, p: &[PathSegment]) {
        self.len(p.len());
        for seg in p {
            match seg {
                PathSegment::Key(k) => {
                    self.u8(0);
                    self.str(k);
                }
                PathSegment::Index(i) => {
                    self.u8(1);
                    self.u32(*i);
                }
            }
        }
    }

    fn decision(&mut self, d: &DecisionDef) {
        self.u8(decision_tag(d.decision));
        self.str(&d.reason);
        self.len(d.modifications.len());
        for m in &d.modifications {
            match m {
                Modification::RedactArg { path } => {
                    self.u8(1);
                    self.path(path);
                }
                Modification::DropArg { path } => {
                    self.u8(2);
                    self.path(path);
                }
                Modification::ClampArg { path, min, max } => {
                    self.u8(3);
                    self.path(path);
                    self.f64(*min);
                    self.f64(*max);
                }
                Modification::RedactSecrets => self.u8(4),
                Modification::StripHeader { name } => {
                    self.u8(5);
                    self.str(name);
                }
                Modification::SetHeader { name, value } => {
                    self.u8(6);
                    self.str(name);
                    self.str(value);
                }
                Modification::RemoveTools { patterns } => {
                    self.u8(7);
                    self.strs(patterns);
                }
                Modification::CoerceArg { path, value } => {
                    self.u8(8);
                    self.path(path);
                    self.str(&value.to_string());
                }
            }
        }
        match &d.step_up {
            Some(s) => {
                self.u8(1);
                self.str(&s.group);
                self.u32(s.timeout_s);
            }
            None => self.u8(0),
        }
        match &d.defer {
            Some(s) => {
                self.u8(1);
                self.str(&s.service);
                self.u32(s.timeout_ms);
            }
            None => self.u8(0),
        }
    }

    fn field(&mut self, f: &FieldRef) {
        self.u8(field_tag(f));
        match f {
            FieldRef::Header(h) => self.str(h),
            FieldRef::Arg(p) => self.path(p),
            _ => {}
        }
    }

    fn lit(&mut self, l: &Lit) {
        match l {
            Lit::Str(s) => {
                self.u8(0);
                self.str(s);
            }
            Lit::Num(n) => {
                self.u8(1);
                self.f64(*n);
            }
            Lit::Bool(b) => {
                self.u8(2);
                self.u8(u8::from(*b));
            }
        }
    }

    fn jump(&mut self, j: Jump) {
        self.u16(match j {
            Jump::To(i) => i,
            Jump::Accept => JUMP_ACCEPT,
            Jump::Reject => JUMP_REJECT,
        });
    }

    fn code(&mut self, code: &[Instr]) {
        self.len(code.len());
        for ins in code {
            self.pred(&ins.pred, ins.negated);
            self.jump(ins.on_true);
            self.jump(ins.on_false);
        }
    }

    /// The opcode byte (with [`op::NEGATED`] for a negated instruction), then the operands.
    fn pred(&mut self, p: &Pred, negated: bool) {
        let opcode = opcode(p);
        self.u8(if negated {
            opcode | op::NEGATED
        } else {
            opcode
        });
        match p {
            Pred::Const(b) => self.u8(u8::from(*b)),
            Pred::Cmp(f, c, l) => {
                self.field(f);
                self.u8(cmp_tag(*c));
                self.lit(l);
            }
            Pred::In(f, m) | Pred::Glob(f, m) | Pred::Prefix(f, m) | Pred::Matches(f, m) => {
                self.field(f);
                self.u32(*m);
            }
            Pred::Is(f, t) => {
                self.field(f);
                self.u8(vtype_tag(*t));
            }
            Pred::Present(f) => self.field(f),
            Pred::Len(f, c, n) => {
                self.field(f);
                self.u8(cmp_tag(*c));
                self.f64(*n);
            }
            Pred::Contains(f, s) => {
                self.field(f);
                self.str(s);
            }
            Pred::InClass(c) => self.u32(*c),
            Pred::Tainted(h) | Pred::Used(h) | Pred::Seen(h) => self.u64(*h),
            Pred::CountSubject(h, w, c, n) | Pred::CountClass(h, w, c, n) => {
                self.u64(*h);
                self.u64(*w);
                self.u8(cmp_tag(*c));
                self.u32(*n);
            }
            Pred::OutsideIntent => {}
        }
    }

    fn matcher(&mut self, m: &MatcherDef) {
        match m {
            MatcherDef::Set { strs, nums, bools } => {
                self.u8(1);
                self.strs(strs);
                self.len(nums.len());
                for n in nums {
                    self.f64(*n);
                }
                self.len(bools.len());
                for b in bools {
                    self.u8(u8::from(*b));
                }
            }
            MatcherDef::Globs(g) => {
                self.u8(2);
                self.strs(g);
            }
            MatcherDef::Prefixes(p) => {
                self.u8(3);
                self.strs(p);
            }
            MatcherDef::Regex { pattern, dfa } => {
                self.u8(4);
                self.str(pattern);
                self.len(dfa.len());
                self.out.extend_from_slice(dfa);
            }
        }
    }

    fn class(&mut self, c: &ClassDef) {
        self.str(&c.name);
        self.u8(risk_tag(c.risk));
        self.u8(u8::from(c.readonly));
        self.code(&c.code);
    }

    fn intent(&mut self, i: &IntentDef) {
        self.str(&i.name);
        self.len(i.classes.len());
        for c in &i.classes {
            self.u32(*c);
        }
        self.strs(&i.tools);
        self.strs(&i.hosts);
        self.strs(&i.data);
        self.opt_u32(i.max_actions);
        self.opt_u64(i.max_egress_bytes);
        self.opt_u64(i.max_duration_ms);
        self.opt_u32(i.max_approvals);
        self.decision(&i.outside);
    }

    fn pins(&mut self, p: &Pins) {
        self.u8(kind_tag(p.kind));
        self.strs(&p.operations);
        self.strs(&p.tools);
        self.strs(&p.hosts);
    }

    fn rule(&mut self, r: &RuleDef) {
        self.str(&r.name);
        self.u8(mode_tag(r.mode));
        self.decision(&r.decision);
        self.len(r.effects.len());
        for e in &r.effects {
            match e {
                EffectDef::Taint(t) => {
                    self.u8(1);
                    self.str(t);
                }
                EffectDef::RevokeTool(t) => {
                    self.u8(2);
                    match t {
                        Some(t) => {
                            self.u8(1);
                            self.str(t);
                        }
                        None => self.u8(0),
                    }
                }
                EffectDef::RevokeClass(c) => {
                    self.u8(3);
                    self.str(c);
                }
                EffectDef::ReadOnly => self.u8(4),
                EffectDef::Kill => self.u8(5),
            }
        }
        self.pins(&r.pins);
        self.code(&r.code);
    }

    fn tool(&mut self, t: &ToolDef) {
        self.str(&t.name);
        self.len(t.args.len());
        for a in &t.args {
            self.strs(&a.path);
            self.u8(vtype_tag(a.ty));
            self.u8(u8::from(a.coerce));
        }
    }
}

fn opcode(p: &Pred) -> u8 {
    match p {
        Pred::Const(_) => op::CONST,
        Pred::Cmp(..) => op::CMP,
        Pred::In(..) => op::IN,
        Pred::Glob(..) => op::GLOB,
        Pred::Prefix(..) => op::PREFIX,
        Pred::Matches(..) => op::MATCHES,
        Pred::Is(..) => op::IS,
        Pred::Present(_) => op::PRESENT,
        Pred::Len(..) => op::LEN,
        Pred::Contains(..) => op::CONTAINS,
        Pred::InClass(_) => op::IN_CLASS,
        Pred::Tainted(_) => op::TAINTED,
        Pred::Used(_) => op::USED,
        Pred::Seen(_) => op::SEEN,
        Pred::CountSubject(..) => op::COUNT_SUBJECT,
        Pred::CountClass(..) => op::COUNT_CLASS,
        Pred::OutsideIntent => op::OUTSIDE_INTENT,
    }
}

/// Encode a program as an unsigned bundle (sign it with [`crate::sign()`]).
pub fn encode(p: &Program) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(&p.pack);
    w.str(&p.version);
    w.u8(mode_tag(p.mode));
    w.decision(&p.default);
    w.decision(&p.unknown_session);
    w.u16(p.mcp_protocol.unwrap_or(0));
    w.len(p.matchers.len());
    for m in &p.matchers {
        w.matcher(m);
    }
    w.len(p.classes.len());
    for c in &p.classes {
        w.class(c);
    }
    w.len(p.intents.len());
    for i in &p.intents {
        w.intent(i);
    }
    w.len(p.rules.len());
    for r in &p.rules {
        w.rule(r);
    }
    w.len(p.tools.len());
    for t in &p.tools {
        w.tool(t);
    }
    let sections = std::mem::take(&mut w.out);
    let mut body = Vec::with_capacity(
        sections
            .len()
            .saturating_add(w.pool.len().saturating_mul(8)),
    );
    body.extend_from_slice(
        &u32::try_from(w.pool.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for s in &w.pool {
        body.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&sections);
    envelope(&body, None)
}

/// Wrap a body in the header, optionally with a signature block (`key_id`, signature bytes).
pub(crate) fn envelope(body: &[u8], sig: Option<(&str, &[u8; 64])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len().saturating_add(128));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(body));
    match sig {
        None => out.push(0),
        Some((key_id, s)) => {
            out.push(1);
            out.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(key_id.as_bytes());
            out.extend_from_slice(s);
        }
    }
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(body);
    out
}
