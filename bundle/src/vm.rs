//! The evaluator: one action + session state + time -> [`Verdict`], implementing the "Evaluation"
//! section of `docs/policy-language.md` over verified bytecode.
//!
//! Per evaluation: classes run once into a stack bitset; only rules the index returns are run;
//! matches are collected as borrowed [`Hit`]s and the owned [`Verdict`] is built at the end.
//! Work is bounded: every condition is forward-only and the whole evaluation has a step budget
//! (`Limits::max_steps`); running out denies with `vm:step_limit` (fail closed).

use serde_json::Value;

use crate::action::{Action, AuthMethod, Kind};
use crate::builtin as b;
use crate::format::{
    CmpOp, DecisionDef, EffectDef, FieldRef, Instr, IntentDef, Jump, Lit, Pred, Role, VType,
};
use crate::index::Merge;
use crate::load::Bundle;
use crate::matchers::glob_match;
use crate::session::{SessionState, SessionStatus, name_hash};
use crate::verdict::{Decision, Effect, Mode, PathSegment, RiskTier, RuleMatch, Verdict};

/// Words of the per-evaluation class set.
const CLASS_WORDS: usize = 16;
/// Most classes a bundle may have (bits of the per-evaluation class set); a bundle with more is
/// refused at load whatever `Limits::max_classes` says.
pub(crate) const MAX_CLASSES: u64 = 1024;
const _: () = assert!(MAX_CLASSES == (CLASS_WORDS as u64) * 64);

/// The step budget ran out.
struct StepLimit;

enum Name<'a> {
    Static(&'static str),
    Rule(&'a str),
    Intent(&'a str),
}

/// One match, borrowed from the bundle until the verdict is built.
struct Hit<'a> {
    name: Name<'a>,
    def: &'a DecisionDef,
    mode: Mode,
    effects: &'a [EffectDef],
}

impl Hit<'_> {
    fn name(&self) -> String {
        match &self.name {
            Name::Static(s) => (*s).to_owned(),
            Name::Rule(s) => (*s).to_owned(),
            Name::Intent(s) => format!("{}{s}", b::INTENT_PREFIX),
        }
    }
}

/// A field's value as the language sees it.
enum Val<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
    /// A JSON argument that is an array, an object or null.
    Json(&'a Value),
    /// `risk.data_classes`.
    List(&'a [String]),
    Absent,
}

struct Ctx<'a> {
    bundle: &'a Bundle,
    action: &'a Action,
    session: &'a SessionState,
    now_ms: u64,
    classes: [u64; CLASS_WORDS],
    intent_name: Option<&'a str>,
    intent: Option<&'a IntentDef>,
    outside: bool,
    steps: u32,
}

fn cmp_f64(a: f64, op: CmpOp, b: f64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

fn cmp_u32(a: u32, op: CmpOp, b: u32) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

fn json_val(v: &Value) -> Val<'_> {
    match v {
        Value::String(s) => Val::Str(s),
        Value::Number(n) => n.as_f64().map_or(Val::Absent, Val::Num),
        Value::Bool(x) => Val::Bool(*x),
        other => Val::Json(other),
    }
}

fn arg<'a>(mut v: &'a Value, path: &[PathSegment]) -> Option<&'a Value> {
    for seg in path {
        v = match seg {
            PathSegment::Key(k) => v.as_object()?.get(k)?,
            PathSegment::Index(i) => v.as_array()?.get(usize::try_from(*i).ok()?)?,
        };
    }
    Some(v)
}

fn opt(s: Option<&str>) -> Val<'_> {
    s.map_or(Val::Absent, Val::Str)
}

fn u64_f(n: u64) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "numbers compare as f64 by definition"
    )]
    let f = n as f64;
    f
}

/// Whether an action acts (as opposed to a protocol message) for intent scoping.
pub(crate) fn is_acting(a: &Action) -> bool {
    match a.kind {
        Kind::Http => true,
        Kind::Mcp => matches!(
            a.operation.as_str(),
            "tools/call" | "resources/read" | "prompts/get"
        ),
    }
}

impl<'a> Ctx<'a> {
    fn has_class(&self, i: usize) -> bool {
        let (w, bit) = (i / 64, i % 64);
        self.classes.get(w).is_some_and(|x| x & (1u64 << bit) != 0)
    }

    fn set_class(&mut self, i: usize) {
        let (w, bit) = (i / 64, i % 64);
        if let Some(x) = self.classes.get_mut(w) {
            *x |= 1u64 << bit;
        }
    }

    fn field(&self, f: &'a FieldRef) -> Val<'a> {
        let a = self.action;
        let s = self.session;
        let principal = |r: Role| match r {
            Role::Agent => &a.identity.agent,
            Role::Human => &a.identity.human,
            Role::Workload => &a.identity.workload,
        };
        match f {
            FieldRef::Kind => Val::Str(a.kind.as_str()),
            FieldRef::Operation => Val::Str(&a.operation),
            FieldRef::Tool => opt(a.tool.as_deref()),
            FieldRef::Resource => opt(a.resource.as_deref()),
            FieldRef::Prompt => opt(a.prompt.as_deref()),
            FieldRef::Host => Val::Str(&a.target.host),
            FieldRef::Port => Val::Num(f64::from(a.target.port)),
            FieldRef::Path => Val::Str(&a.target.path),
            FieldRef::Query => Val::Str(&a.target.query),
            FieldRef::Scheme => Val::Str(&a.target.scheme),
            FieldRef::Server => Val::Str(&a.target.server),
            FieldRef::Principal(r) => opt(principal(*r).id.as_deref()),
            FieldRef::PrincipalAuth(r) => Val::Str(auth_str(principal(*r).auth)),
            FieldRef::Header(h) => opt(a.header(h)),
            // `args` alone is the whole arguments value, absent when there are none (null).
            FieldRef::Arg(p) if p.is_empty() && a.arguments.is_null() => Val::Absent,
            FieldRef::Arg(p) => arg(&a.arguments, p).map_or(Val::Absent, json_val),
            FieldRef::RequestSize => Val::Num(u64_f(a.size)),
            FieldRef::RiskSecrets => Val::Bool(a.risk.secrets),
            FieldRef::RiskDataClasses => Val::List(&a.risk.data_classes),
            FieldRef::SessionId => opt(a.session_id.as_deref()),
            FieldRef::TraceId => opt(a.trace_id.as_deref()),
            FieldRef::Intent => Val::Str(self.intent_name.unwrap_or("")),
            FieldRef::SessionActions => Val::Num(f64::from(s.actions)),
            FieldRef::SessionEgressBytes => Val::Num(u64_f(s.egress_bytes)),
            FieldRef::SessionApprovals => Val::Num(f64::from(s.approvals)),
            FieldRef::SessionElapsed => Val::Num(u64_f(s.elapsed_ms(self.now_ms))),
            FieldRef::SessionDrift if s.drift.is_nan() => Val::Absent,
            FieldRef::SessionDrift => Val::Num(f64::from(s.drift)),
        }
    }

    fn matcher(&self, m: u32) -> Option<&'a crate::matchers::Matcher> {
        self.bundle.matchers.get(usize::try_from(m).ok()?)
    }

    fn pred(&self, p: &'a Pred) -> bool {
        match p {
            Pred::Const(x) => *x,
            Pred::Cmp(f, op, lit) => match (self.field(f), lit) {
                (Val::Str(a), Lit::Str(b)) => match op {
                    CmpOp::Eq => a == b.as_str(),
                    CmpOp::Ne => a != b.as_str(),
                    _ => false,
                },
                (Val::Num(a), Lit::Num(b)) => cmp_f64(a, *op, *b),
                (Val::Bool(a), Lit::Bool(b)) => match op {
                    CmpOp::Eq => a == *b,
                    CmpOp::Ne => a != *b,
                    _ => false,
                },
                _ => false,
            },
            Pred::In(f, m) => {
                let Some(m) = self.matcher(*m) else {
                    return false;
                };
                match self.field(f) {
                    Val::Str(s) => m.set_str(s),
                    Val::Num(n) => m.set_num(n),
                    Val::Bool(x) => m.set_bool(x),
                    _ => false,
                }
            }
            Pred::Glob(f, m) => match (self.field(f), self.matcher(*m)) {
                (Val::Str(s), Some(m)) => m.glob(s),
                _ => false,
            },
            Pred::Prefix(f, m) => match (self.field(f), self.matcher(*m)) {
                (Val::Str(s), Some(m)) => m.prefix(s),
                _ => false,
            },
            Pred::Matches(f, m) => match (self.field(f), self.matcher(*m)) {
                (Val::Str(s), Some(m)) => m.regex(s),
                _ => false,
            },
            Pred::Is(f, t) => match (self.field(f), t) {
                (Val::Str(_), VType::String)
                | (Val::Num(_), VType::Number)
                | (Val::Bool(_), VType::Bool)
                | (Val::List(_), VType::Array) => true,
                (Val::Json(v), t) => matches!(
                    (v, t),
                    (Value::Array(_), VType::Array)
                        | (Value::Object(_), VType::Object)
                        | (Value::Null, VType::Null)
                ),
                _ => false,
            },
            Pred::Present(f) => !matches!(self.field(f), Val::Absent | Val::Json(Value::Null)),
            Pred::Len(f, op, n) => {
                let len = match self.field(f) {
                    Val::Str(s) => s.chars().count(),
                    Val::List(l) => l.len(),
                    Val::Json(Value::Array(v)) => v.len(),
                    Val::Json(Value::Object(o)) => o.len(),
                    _ => return false,
                };
                cmp_f64(u64_f(u64::try_from(len).unwrap_or(u64::MAX)), *op, *n)
            }
            Pred::Contains(f, x) => match self.field(f) {
                Val::List(l) => l.iter().any(|e| e == x),
                Val::Json(Value::Array(v)) => v.iter().any(|e| e.as_str() == Some(x.as_str())),
                _ => false,
            },
            Pred::InClass(c) => usize::try_from(*c).is_ok_and(|c| self.has_class(c)),
            Pred::Tainted(h) => self.session.tainted(*h),
            Pred::Used(h) => self.session.used(*h),
            Pred::Seen(h) => self.session.seen_class(*h),
            Pred::CountSubject(h, w, op, n) => {
                cmp_u32(self.session.count_subject(*h, *w, self.now_ms), *op, *n)
            }
            Pred::CountClass(h, w, op, n) => {
                cmp_u32(self.session.count_class(*h, *w, self.now_ms), *op, *n)
            }
            Pred::OutsideIntent => self.outside,
        }
    }

    fn run(&mut self, code: &'a [Instr]) -> Result<bool, StepLimit> {
        let mut pc = 0usize;
        loop {
            // INVARIANT: the verifier checked every jump goes to a later instruction in range.
            let Some(ins) = code.get(pc) else {
                return Ok(false);
            };
            self.steps = self.steps.saturating_add(1);
            if self.steps > self.bundle.max_steps {
                return Err(StepLimit);
            }
            let next = if self.pred(&ins.pred) {
                ins.on_true
            } else {
                ins.on_false
            };
            match next {
                Jump::Accept => return Ok(true),
                Jump::Reject => return Ok(false),
                Jump::To(t) => pc = usize::from(t),
            }
        }
    }

    /// Whether an acting action is inside the intent in force.
    fn inside(&self, intent: &IntentDef) -> bool {
        let a = self.action;
        let in_scope = intent
            .classes
            .iter()
            .any(|c| usize::try_from(*c).is_ok_and(|c| self.has_class(c)))
            || a.tool
                .as_deref()
                .is_some_and(|t| intent.tools.iter().any(|g| glob_match(g, t)))
            || (a.kind == Kind::Http && intent.hosts.iter().any(|g| glob_match(g, &a.target.host)));
        let data_ok =
            intent.data.is_empty() || a.risk.data_classes.iter().all(|d| intent.data.contains(d));
        in_scope && data_ok
    }
}

fn auth_str(m: AuthMethod) -> &'static str {
    m.as_str()
}

fn is_write(a: &Action) -> bool {
    match a.kind {
        Kind::Mcp => a.operation == "tools/call",
        Kind::Http => !matches!(a.operation.as_str(), "GET" | "HEAD" | "OPTIONS"),
    }
}

impl Bundle {
    /// Evaluate one action against this bundle. Never panics; bounded work.
    pub fn evaluate(&self, action: &Action, session: &SessionState, now_ms: u64) -> Verdict {
        let intent_name = match session.status {
            SessionStatus::New => action.declared_intent.as_deref(),
            _ => session.intent.as_deref(),
        };
        let intent = intent_name.and_then(|n| self.prog.intents.iter().find(|i| i.name == n));
        let verdict_intent = match session.status {
            SessionStatus::New => intent.map(|i| i.name.clone()),
            _ => session.intent.clone(),
        };
        let mut cx = Ctx {
            bundle: self,
            action,
            session,
            now_ms,
            classes: [0; CLASS_WORDS],
            intent_name: intent.map(|i| i.name.as_str()),
            intent,
            outside: false,
            steps: 0,
        };
        let mut hits: Vec<Hit<'_>> = Vec::with_capacity(8);
        match self.collect(&mut cx, &mut hits) {
            Ok(()) => self.resolve(&cx, hits, verdict_intent),
            Err(StepLimit) => {
                let def = &self.builtins.step_limit;
                Verdict {
                    decision: Decision::Deny,
                    would_be: Decision::Deny,
                    matched: vec![RuleMatch {
                        rule: b::VM_STEP_LIMIT.to_owned(),
                        decision: Decision::Deny,
                        mode: Mode::Enforce,
                        reason: def.reason.clone(),
                    }],
                    deciding_rule: b::VM_STEP_LIMIT.to_owned(),
                    reason: def.reason.clone(),
                    intent: verdict_intent,
                    ..Verdict::default()
                }
            }
        }
    }

    fn collect<'a>(&'a self, cx: &mut Ctx<'a>, hits: &mut Vec<Hit<'a>>) -> Result<(), StepLimit> {
        let p = &self.prog;
        let a = cx.action;
        let s = cx.session;
        for (i, c) in p.classes.iter().enumerate() {
            if cx.run(&c.code)? {
                cx.set_class(i);
            }
        }
        if let Some(intent) = cx.intent {
            cx.outside = is_acting(a) && !cx.inside(intent);
        }
        let enforce = |name: &'static str, def: &'a DecisionDef| Hit {
            name: Name::Static(name),
            def,
            mode: Mode::Enforce,
            effects: &[],
        };
        if s.status == SessionStatus::Missing {
            hits.push(Hit {
                name: Name::Static(b::SESSION_UNKNOWN),
                def: &p.unknown_session,
                mode: p.mode,
                effects: &[],
            });
        }
        if s.killed {
            hits.push(enforce(b::SESSION_KILLED, &self.builtins.killed));
        }
        let revoked = (!s.revoked_tools.is_empty() && s.tool_revoked(name_hash(a.subject())))
            || (!s.revoked_classes.is_empty()
                && self
                    .class_hashes
                    .iter()
                    .enumerate()
                    .any(|(i, h)| cx.has_class(i) && s.class_revoked(*h)));
        if revoked {
            hits.push(enforce(b::SESSION_REVOKED, &self.builtins.revoked));
        }
        if s.read_only
            && is_write(a)
            && !p
                .classes
                .iter()
                .enumerate()
                .any(|(i, c)| c.readonly && cx.has_class(i))
        {
            hits.push(enforce(b::SESSION_READ_ONLY, &self.builtins.read_only));
        }
        let declared = match s.status {
            SessionStatus::New => a.declared_intent.as_deref(),
            _ => s.intent.as_deref(),
        };
        match (declared, cx.intent) {
            (Some(_), None) => hits.push(enforce(b::INTENT_UNKNOWN, &self.builtins.intent_unknown)),
            (_, Some(intent)) => {
                if cx.outside {
                    hits.push(Hit {
                        name: Name::Intent(&intent.name),
                        def: &intent.outside,
                        mode: p.mode,
                        effects: &[],
                    });
                }
                if intent.max_actions.is_some_and(|m| s.actions >= m) {
                    hits.push(enforce(b::STOP_MAX_ACTIONS, &self.builtins.max_actions));
                }
                if intent
                    .max_egress_bytes
                    .is_some_and(|m| s.egress_bytes.saturating_add(a.egress_bytes()) > m)
                {
                    hits.push(enforce(b::STOP_MAX_EGRESS_BYTES, &self.builtins.max_egress));
                }
                if intent
                    .max_duration_ms
                    .is_some_and(|m| s.elapsed_ms(cx.now_ms) > m)
                {
                    hits.push(enforce(b::STOP_MAX_DURATION, &self.builtins.max_duration));
                }
            }
            (None, None) => {}
        }
        for ri in Merge::new(self.index.candidates(a)) {
            let Some(r) = usize::try_from(ri).ok().and_then(|i| p.rules.get(i)) else {
                continue;
            };
            if cx.run(&r.code)? {
                hits.push(Hit {
                    name: Name::Rule(&r.name),
                    def: &r.decision,
                    mode: r.mode,
                    effects: &r.effects,
                });
            }
        }
        if hits.iter().all(|h| h.mode == Mode::Audit) {
            hits.push(Hit {
                name: Name::Static(b::DEFAULT),
                def: &p.default,
                mode: p.mode,
                effects: &[],
            });
        }
        Ok(())
    }

    fn resolve<'a>(
        &'a self,
        cx: &Ctx<'a>,
        mut hits: Vec<Hit<'a>>,
        intent: Option<String>,
    ) -> Verdict {
        let a = cx.action;
        let mut decision = hits
            .iter()
            .filter(|h| h.mode == Mode::Enforce)
            .map(|h| h.def.decision)
            .max()
            .unwrap_or(Decision::Allow);
        let mut deciding = hits
            .iter()
            .position(|h| h.mode == Mode::Enforce && h.def.decision == decision);
        if decision == Decision::StepUp
            && cx
                .intent
                .and_then(|i| i.max_approvals)
                .is_some_and(|m| cx.session.approvals >= m)
        {
            deciding = Some(hits.len());
            hits.push(Hit {
                name: Name::Static(b::STOP_MAX_APPROVALS),
                def: &self.builtins.max_approvals,
                mode: Mode::Enforce,
                effects: &[],
            });
            decision = Decision::Deny;
        }
        let would_be = hits
            .iter()
            .map(|h| h.def.decision)
            .max()
            .unwrap_or(Decision::Allow);
        let deciding = deciding.and_then(|i| hits.get(i));
        let mut effects: Vec<Effect> = Vec::new();
        for h in hits.iter().filter(|h| h.mode == Mode::Enforce) {
            for e in h.effects {
                let e = match e {
                    EffectDef::Taint(t) => Effect::Taint(t.clone()),
                    EffectDef::RevokeTool(Some(t)) => Effect::RevokeTool(t.clone()),
                    EffectDef::RevokeTool(None) => Effect::RevokeTool(a.subject().to_owned()),
                    EffectDef::RevokeClass(c) => Effect::RevokeClass(c.clone()),
                    EffectDef::ReadOnly => Effect::ReadOnly,
                    EffectDef::Kill => Effect::Kill,
                };
                if !effects.contains(&e) {
                    effects.push(e);
                }
            }
        }
        let modifications = if decision == Decision::Modify {
            hits.iter()
                .filter(|h| h.mode == Mode::Enforce && h.def.decision == Decision::Modify)
                .flat_map(|h| h.def.modifications.iter().cloned())
                .collect()
        } else {
            Vec::new()
        };
        let warnings = hits
            .iter()
            .filter(|h| h.mode == Mode::Warn && h.def.decision > Decision::Allow)
            .map(|h| format!("{}: {}", h.name(), h.def.reason))
            .collect();
        let mut classes = Vec::new();
        let mut risk = RiskTier::Low;
        for (i, c) in self.prog.classes.iter().enumerate() {
            if cx.has_class(i) {
                classes.push(c.name.clone());
                risk = risk.max(c.risk);
            }
        }
        Verdict {
            decision,
            would_be,
            matched: hits
                .iter()
                .map(|h| RuleMatch {
                    rule: h.name(),
                    decision: h.def.decision,
                    mode: h.mode,
                    reason: h.def.reason.clone(),
                })
                .collect(),
            deciding_rule: deciding.map_or_else(|| b::NONE.to_owned(), Hit::name),
            reason: deciding.map(|h| h.def.reason.clone()).unwrap_or_default(),
            modifications,
            effects,
            step_up: match (decision, deciding) {
                (Decision::StepUp, Some(h)) => h.def.step_up.clone(),
                _ => None,
            },
            defer: match (decision, deciding) {
                (Decision::Defer, Some(h)) => h.def.defer.clone(),
                _ => None,
            },
            warnings,
            classes,
            risk,
            intent,
        }
    }
}
