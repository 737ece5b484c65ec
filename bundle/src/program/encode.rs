//! The bundle encoder: [`Program`] -> unsigned bundle bytes. Deterministic: the same program always
//! gives the same bytes (strings are pooled in first-use order, nothing depends on hash order).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::program::format::{
    ClassDef, DecisionDef, EffectDef, FORMAT_VERSION, FieldRef, Instr, IntentDef, Jump, Lit, MAGIC,
    MatcherDef, Pins, Pred, Program, RuleDef, ToolDef,
};
use crate::program::wire::{JUMP_ACCEPT, JUMP_REJECT, Wire, op};
use crate::session::Quarantine;
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
    fn tag<T: Wire>(&mut self, v: &T) {
        self.u8(v.tag());
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
            self.tag(seg);
            match seg {
                PathSegment::Key(k) => self.str(k),
                PathSegment::Index(i) => self.u32(*i),
            }
        }
    }

    fn decision(&mut self, d: &DecisionDef) {
        self.tag(&d.decision);
        self.str(&d.reason);
        self.len(d.modifications.len());
        for m in &d.modifications {
            self.tag(m);
            match m {
                Modification::RedactArg { path } | Modification::DropArg { path } => {
                    self.path(path);
                }
                Modification::ClampArg { path, min, max } => {
                    self.path(path);
                    self.f64(*min);
                    self.f64(*max);
                }
                Modification::RedactSecrets => {}
                Modification::StripHeader { name } | Modification::InjectCredential { name } => {
                    self.str(name)
                }
                Modification::SetHeader { name, value } => {
                    self.str(name);
                    self.str(value);
                }
                Modification::RemoveTools { patterns } => self.strs(patterns),
                Modification::CoerceArg { path, value } => {
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
        self.tag(f);
        match f {
            FieldRef::Header(h) => self.str(h),
            FieldRef::Arg(p) => self.path(p),
            _ => {}
        }
    }

    fn lit(&mut self, l: &Lit) {
        self.tag(l);
        match l {
            Lit::Str(s) => self.str(s),
            Lit::Num(n) => self.f64(*n),
            Lit::Bool(b) => self.u8(u8::from(*b)),
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
        let opcode = op::of(p);
        self.u8(if negated {
            opcode | op::NEGATED
        } else {
            opcode
        });
        match p {
            Pred::Const(b) => self.u8(u8::from(*b)),
            Pred::Cmp(f, c, l) => {
                self.field(f);
                self.tag(c);
                self.lit(l);
            }
            Pred::In(f, m) | Pred::Glob(f, m) | Pred::Prefix(f, m) | Pred::Matches(f, m) => {
                self.field(f);
                self.u32(*m);
            }
            Pred::Is(f, t) => {
                self.field(f);
                self.tag(t);
            }
            Pred::Present(f) => self.field(f),
            Pred::Len(f, c, n) => {
                self.field(f);
                self.tag(c);
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
                self.tag(c);
                self.u32(*n);
            }
            Pred::PrincipalTainted(h) => self.u64(*h),
            Pred::OutsideIntent | Pred::Quarantined => {}
        }
    }

    fn matcher(&mut self, m: &MatcherDef) {
        self.tag(m);
        match m {
            MatcherDef::Set { strs, nums, bools } => {
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
            MatcherDef::Globs(g) | MatcherDef::Prefixes(g) => self.strs(g),
            MatcherDef::Regex { pattern, dfa } => {
                self.str(pattern);
                self.len(dfa.len());
                self.out.extend_from_slice(dfa);
            }
        }
    }

    fn class(&mut self, c: &ClassDef) {
        self.str(&c.name);
        self.tag(&c.risk);
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
        self.tag(&p.kind);
        self.strs(&p.operations);
        self.strs(&p.tools);
        self.strs(&p.hosts);
    }

    fn rule(&mut self, r: &RuleDef) {
        self.str(&r.name);
        self.tag(&r.mode);
        self.decision(&r.decision);
        self.len(r.effects.len());
        for e in &r.effects {
            self.tag(e);
            match e {
                EffectDef::Taint(t)
                | EffectDef::RevokeClass(t)
                | EffectDef::RevokePrincipalClass(t) => self.str(t),
                EffectDef::RevokeTool(Some(t)) | EffectDef::RevokePrincipalTool(Some(t)) => {
                    self.u8(1);
                    self.str(t);
                }
                EffectDef::RevokeTool(None) | EffectDef::RevokePrincipalTool(None) => self.u8(0),
                EffectDef::ReadOnly | EffectDef::Kill => {}
                EffectDef::Quarantine(q) => self.u8(quarantine_byte(*q)),
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
            self.tag(&a.ty);
            self.u8(u8::from(a.coerce));
        }
    }
}

/// The byte after a `quarantine` effect's tag: 1 read-only, 2 full.
pub(crate) fn quarantine_byte(q: Quarantine) -> u8 {
    match q {
        Quarantine::None => 0,
        Quarantine::ReadOnly => 1,
        Quarantine::Full => 2,
    }
}

/// Bit 0 of the pack flags (version 3): `intent_source header`.
pub(crate) const FLAG_INTENT_HEADER: u8 = 1;
/// Bit 1 of the pack flags (version 3): `session_key required`.
pub(crate) const FLAG_REQUIRE_SESSION_KEY: u8 = 2;

fn pack_flags(p: &Program) -> u8 {
    let mut f = 0;
    if p.intent_header {
        f |= FLAG_INTENT_HEADER;
    }
    if p.require_session_key {
        f |= FLAG_REQUIRE_SESSION_KEY;
    }
    f
}

/// Encode a program as an unsigned bundle (sign it with [`crate::sign()`]).
pub fn encode(p: &Program) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(&p.pack);
    w.str(&p.version);
    w.tag(&p.mode);
    w.decision(&p.default);
    w.decision(&p.unknown_session);
    w.u16(p.mcp_protocol.unwrap_or(0));
    w.u8(pack_flags(p));
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
    // Version 4: the tool pins, an optional last section (written only when there are pins).
    if !p.tool_pins.is_empty() {
        w.len(p.tool_pins.len());
        for t in &p.tool_pins {
            w.str(&t.server);
            w.str(&t.name);
            w.out.extend_from_slice(&t.digest);
        }
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
