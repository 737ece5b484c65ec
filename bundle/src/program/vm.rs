//! The evaluator: one action + session state + time -> [`Verdict`], implementing the "Evaluation"
//! section of `docs/policy-language.md` over verified bytecode.
//!
//! Per evaluation: the declared argument types are checked (and coerced) first; classes run once
//! into two stack bitsets (certain and possible members); only rules the index returns are run;
//! matches are collected as borrowed [`Hit`]s and the owned [`Verdict`] is built at the end.
//! Work is bounded: every condition is forward-only and the whole evaluation has a step budget
//! (`Limits::max_steps`); running out denies with `vm:step_limit` (fail closed).
//!
//! A test can be *unknown* (a type error, [`T3::Unknown`]). A condition is then evaluated in
//! Kleene's three-valued logic without ever leaving the branch code: a run in "upper" mode sends
//! an unknown test the way that makes its (possibly negated) literal true, a run in "lower" mode
//! the other way. For a condition in negation normal form that is exactly "true or unknown"
//! (upper) and "true" (lower). A rule stricter than ALLOW runs in upper mode (unknown matches),
//! an ALLOW rule in lower mode (unknown does not).

use serde_json::Value;

use crate::action::{Action, AuthMethod, Kind};
use crate::limits::MAX_CLASSES;
use crate::program::argtypes::{self, ArgCheck};
use crate::program::builtin as b;
use crate::program::format::{
    CmpOp, DecisionDef, EffectDef, FieldRef, Instr, IntentDef, Jump, Lit, Pred, Role, VType,
};
use crate::program::index::Merge;
use crate::program::load::Bundle;
use crate::program::matchers::glob_match;
use crate::session::{Quarantine, SessionState, SessionStatus, name_hash};
use crate::verdict::{
    Decision, Effect, Mode, Modification, PathSegment, RiskTier, RuleMatch, Verdict,
};

/// Words of the per-evaluation class set: one bit for each of [`MAX_CLASSES`] classes.
const CLASS_WORDS: usize = 16;
const _: () = assert!(MAX_CLASSES == (CLASS_WORDS as u64) * 64);

/// The step budget ran out.
struct StepLimit;

/// The value of a test or condition in Kleene's three-valued logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T3 {
    False,
    True,
    /// A type error: the test does not apply to the value's type.
    Unknown,
}

impl From<bool> for T3 {
    fn from(b: bool) -> Self {
        if b { T3::True } else { T3::False }
    }
}

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
    /// A reason made for this evaluation (`args:type` names the argument), instead of `def`'s.
    reason: Option<String>,
}

impl Hit<'_> {
    fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or(&self.def.reason)
    }

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
    /// The arguments the policy reads: the action's, or their coerced copy.
    args: &'a Value,
    session: &'a SessionState,
    now_ms: u64,
    /// Classes the action is certainly in (its condition is true).
    classes: [u64; CLASS_WORDS],
    /// Classes the action may be in (true or unknown); a superset of `classes`.
    possible: [u64; CLASS_WORDS],
    intent_name: Option<&'a str>,
    intent: Option<&'a IntentDef>,
    outside: T3,
    steps: u32,
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

fn bit_set(set: &[u64; CLASS_WORDS], i: usize) -> bool {
    let (w, bit) = (i / 64, i % 64);
    set.get(w).is_some_and(|x| x & (1u64 << bit) != 0)
}

fn set_bit(set: &mut [u64; CLASS_WORDS], i: usize) {
    let (w, bit) = (i / 64, i % 64);
    if let Some(x) = set.get_mut(w) {
        *x |= 1u64 << bit;
    }
}

impl<'a> Ctx<'a> {
    /// The action is certainly in class `i`.
    fn has_class(&self, i: usize) -> bool {
        bit_set(&self.classes, i)
    }

    /// The action may be in class `i` (certainly, or its condition is unknown).
    fn may_have_class(&self, i: usize) -> bool {
        bit_set(&self.possible, i)
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
            FieldRef::Arg(p) if p.is_empty() && self.args.is_null() => Val::Absent,
            FieldRef::Arg(p) => arg(self.args, p).map_or(Val::Absent, json_val),
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
            FieldRef::PrincipalId => Val::Str(s.principal.id.as_deref().unwrap_or("")),
            FieldRef::PrincipalSessions => Val::Num(f64::from(s.principal.sessions)),
            FieldRef::PrincipalDenials => Val::Num(f64::from(s.principal.denials)),
            FieldRef::ToolChanged => Val::Bool(a.tool_state.changed),
            FieldRef::ToolShadowed => Val::Bool(a.tool_state.shadowed),
        }
    }

    fn matcher(&self, m: u32) -> Option<&'a crate::program::matchers::Matcher> {
        self.bundle.matchers.get(usize::try_from(m).ok()?)
    }

    /// A test's value. A field that is absent or `null` makes every test false (never unknown);
    /// a present value of a type the test does not apply to makes it unknown.
    fn pred(&self, p: &'a Pred) -> T3 {
        use T3::{False as F, True as T, Unknown as U};
        match p {
            Pred::Const(x) => (*x).into(),
            Pred::Cmp(f, op, lit) => match (self.field(f), lit) {
                (Val::Absent | Val::Json(Value::Null), _) => F,
                (Val::Str(a), Lit::Str(b)) => match op {
                    CmpOp::Eq => (a == b.as_str()).into(),
                    CmpOp::Ne => (a != b.as_str()).into(),
                    _ => F,
                },
                (Val::Num(a), Lit::Num(b)) => op.holds(&a, b).into(),
                (Val::Bool(a), Lit::Bool(b)) => match op {
                    CmpOp::Eq => (a == *b).into(),
                    CmpOp::Ne => (a != *b).into(),
                    _ => F,
                },
                _ => U,
            },
            Pred::In(f, m) => {
                let Some(m) = self.matcher(*m) else {
                    return F;
                };
                let (has_str, has_num, has_bool) = m.set_types();
                let (member, same_type) = match self.field(f) {
                    Val::Absent | Val::Json(Value::Null) => return F,
                    Val::Str(s) => (m.set_str(s), has_str),
                    Val::Num(n) => (m.set_num(n), has_num),
                    Val::Bool(x) => (m.set_bool(x), has_bool),
                    Val::Json(_) | Val::List(_) => (false, false),
                };
                if member {
                    T
                } else if same_type || !(has_str || has_num || has_bool) {
                    F
                } else {
                    U
                }
            }
            Pred::Glob(f, m) | Pred::Prefix(f, m) | Pred::Matches(f, m) => {
                let Some(m) = self.matcher(*m) else {
                    return F;
                };
                match self.field(f) {
                    Val::Str(s) => match p {
                        Pred::Glob(..) => m.glob(s),
                        Pred::Prefix(..) => m.prefix(s),
                        _ => m.regex(s),
                    }
                    .into(),
                    Val::Absent | Val::Json(Value::Null) => F,
                    _ if m.is_empty_list() => F,
                    _ => U,
                }
            }
            Pred::Is(f, t) => match (self.field(f), t) {
                (Val::Str(_), VType::String)
                | (Val::Num(_), VType::Number)
                | (Val::Bool(_), VType::Bool)
                | (Val::List(_), VType::Array) => T,
                (Val::Json(v), t) => matches!(
                    (v, t),
                    (Value::Array(_), VType::Array)
                        | (Value::Object(_), VType::Object)
                        | (Value::Null, VType::Null)
                )
                .into(),
                _ => F,
            },
            Pred::Present(f) => {
                (!matches!(self.field(f), Val::Absent | Val::Json(Value::Null))).into()
            }
            Pred::Len(f, op, n) => {
                let len = match self.field(f) {
                    Val::Str(s) => s.chars().count(),
                    Val::List(l) => l.len(),
                    Val::Json(Value::Array(v)) => v.len(),
                    Val::Json(Value::Object(o)) => o.len(),
                    Val::Absent | Val::Json(_) => return F,
                    Val::Num(_) | Val::Bool(_) => return U,
                };
                op.holds(&u64_f(u64::try_from(len).unwrap_or(u64::MAX)), n)
                    .into()
            }
            Pred::Contains(f, x) => match self.field(f) {
                Val::List(l) => l.iter().any(|e| e == x).into(),
                Val::Json(Value::Array(v)) => {
                    v.iter().any(|e| e.as_str() == Some(x.as_str())).into()
                }
                Val::Absent | Val::Json(Value::Null) => F,
                _ => U,
            },
            Pred::InClass(c) => match usize::try_from(*c) {
                Ok(c) if self.has_class(c) => T,
                Ok(c) if self.may_have_class(c) => U,
                _ => F,
            },
            Pred::Tainted(h) => self.session.tainted(*h).into(),
            Pred::Used(h) => self.session.used(*h).into(),
            Pred::Seen(h) => self.session.seen_class(*h).into(),
            Pred::CountSubject(h, w, op, n) => op
                .holds(&self.session.count_subject(*h, *w, self.now_ms), n)
                .into(),
            Pred::CountClass(h, w, op, n) => op
                .holds(&self.session.count_class(*h, *w, self.now_ms), n)
                .into(),
            Pred::OutsideIntent => self.outside,
            Pred::PrincipalTainted(h) => self.session.principal.tainted(*h).into(),
            Pred::Quarantined => self.session.principal.quarantined().into(),
        }
    }

    /// Run a condition. `upper`: an unknown test goes the way that makes its literal true (the
    /// result is "true or unknown"); else the other way (the result is "true"). Also returns
    /// whether a test was unknown (when none was, both modes give the same result).
    fn run(&mut self, code: &'a [Instr], upper: bool) -> Result<(bool, bool), StepLimit> {
        let mut pc = 0usize;
        let mut saw_unknown = false;
        loop {
            // INVARIANT: the verifier checked every jump goes to a later instruction in range.
            let Some(ins) = code.get(pc) else {
                return Ok((false, saw_unknown));
            };
            self.steps = self.steps.saturating_add(1);
            if self.steps > self.bundle.max_steps {
                return Err(StepLimit);
            }
            let next = match self.pred(&ins.pred) {
                T3::True => ins.on_true,
                T3::False => ins.on_false,
                // Version 1: a type error is false.
                T3::Unknown if self.bundle.type_errors_are_false => ins.on_false,
                T3::Unknown => {
                    saw_unknown = true;
                    if upper != ins.negated {
                        ins.on_true
                    } else {
                        ins.on_false
                    }
                }
            };
            match next {
                Jump::Accept => return Ok((true, saw_unknown)),
                Jump::Reject => return Ok((false, saw_unknown)),
                Jump::To(t) => pc = usize::from(t),
            }
        }
    }

    /// Whether an acting action is inside the intent in force, counting the classes it is
    /// certainly in (`possible == false`) or may be in (`possible == true`).
    fn inside(&self, intent: &IntentDef, possible: bool) -> bool {
        let a = self.action;
        let in_class = |c: usize| {
            if possible {
                self.may_have_class(c)
            } else {
                self.has_class(c)
            }
        };
        let in_scope = intent
            .classes
            .iter()
            .any(|c| usize::try_from(*c).is_ok_and(in_class))
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
    /// Whether the action is certainly in a `readonly` class (what exempts a write from a
    /// read-only session or quarantine; a class it only may be in does not).
    fn certainly_readonly(&self, cx: &Ctx<'_>) -> bool {
        self.prog
            .classes
            .iter()
            .enumerate()
            .any(|(i, c)| c.readonly && cx.has_class(i))
    }

    /// The declaration of a tool's argument types, if the pack has one.
    fn tool_def(&self, name: &str) -> Option<&crate::program::format::ToolDef> {
        let tools = &self.prog.tools;
        // INVARIANT: the verifier checked the declarations are sorted by name and unique.
        let i = tools.binary_search_by(|t| t.name.as_str().cmp(name)).ok()?;
        tools.get(i)
    }

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
        // 0. Declared argument types (`tools/call` only).
        let checked = match (action.kind, action.tool.as_deref()) {
            (Kind::Mcp, Some(tool)) if action.operation == "tools/call" => self
                .tool_def(tool)
                .map_or(ArgCheck::Ok, |t| argtypes::check(t, &action.arguments)),
            _ => ArgCheck::Ok,
        };
        let (args, coercions, mismatch) = match &checked {
            ArgCheck::Ok => (&action.arguments, None, None),
            ArgCheck::Coerced(args, mods) => (args, Some(mods.as_slice()), None),
            ArgCheck::Mismatch(reason) => (&action.arguments, None, Some(reason.as_str())),
        };
        let mut cx = Ctx {
            bundle: self,
            action,
            args,
            session,
            now_ms,
            classes: [0; CLASS_WORDS],
            possible: [0; CLASS_WORDS],
            intent_name: intent.map(|i| i.name.as_str()),
            intent,
            outside: T3::False,
            steps: 0,
        };
        let mut hits: Vec<Hit<'_>> = Vec::with_capacity(8);
        match self.collect(&mut cx, &mut hits, mismatch) {
            Ok(()) => self.resolve(&cx, hits, verdict_intent, coercions),
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

    fn collect<'a>(
        &'a self,
        cx: &mut Ctx<'a>,
        hits: &mut Vec<Hit<'a>>,
        mismatch: Option<&str>,
    ) -> Result<(), StepLimit> {
        let p = &self.prog;
        let a = cx.action;
        let s = cx.session;
        for (i, c) in p.classes.iter().enumerate() {
            let (certain, saw_unknown) = cx.run(&c.code, false)?;
            if certain {
                set_bit(&mut cx.classes, i);
                set_bit(&mut cx.possible, i);
            } else if saw_unknown && cx.run(&c.code, true)?.0 {
                set_bit(&mut cx.possible, i);
            }
        }
        if let Some(intent) = cx.intent
            && is_acting(a)
        {
            cx.outside = if cx.inside(intent, false) {
                T3::False
            } else if cx.inside(intent, true) {
                T3::Unknown
            } else {
                T3::True
            };
        }
        let enforce = |name: &'static str, def: &'a DecisionDef| Hit {
            name: Name::Static(name),
            def,
            mode: Mode::Enforce,
            effects: &[],
            reason: None,
        };
        if s.status == SessionStatus::Missing {
            hits.push(Hit {
                name: Name::Static(b::SESSION_UNKNOWN),
                def: &p.unknown_session,
                mode: p.mode,
                effects: &[],
                reason: None,
            });
        }
        if s.killed {
            hits.push(enforce(b::SESSION_KILLED, &self.builtins.killed));
        }
        match s.principal.quarantine {
            Quarantine::Full => hits.push(enforce(
                b::PRINCIPAL_QUARANTINED,
                &self.builtins.quarantined,
            )),
            Quarantine::ReadOnly if is_write(a) && !self.certainly_readonly(cx) => hits.push(
                enforce(b::PRINCIPAL_READ_ONLY, &self.builtins.principal_read_only),
            ),
            Quarantine::ReadOnly | Quarantine::None => {}
        }
        if a.intent_untrusted(p.intent_header) {
            hits.push(enforce(
                b::INTENT_UNTRUSTED,
                &self.builtins.intent_untrusted,
            ));
        }
        // A class the action may be in counts for a revocation (the stricter reading).
        let revoked = (!s.revoked_tools.is_empty() && s.tool_revoked(name_hash(a.subject())))
            || (!s.revoked_classes.is_empty()
                && self
                    .class_hashes
                    .iter()
                    .enumerate()
                    .any(|(i, h)| cx.may_have_class(i) && s.class_revoked(*h)));
        if revoked {
            hits.push(enforce(b::SESSION_REVOKED, &self.builtins.revoked));
        }
        let pv = &s.principal;
        let principal_revoked = (!pv.revoked_tools.is_empty()
            && pv.tool_revoked(name_hash(a.subject())))
            || (!pv.revoked_classes.is_empty()
                && self
                    .class_hashes
                    .iter()
                    .enumerate()
                    .any(|(i, h)| cx.may_have_class(i) && pv.class_revoked(*h)));
        if principal_revoked {
            hits.push(enforce(
                b::PRINCIPAL_REVOKED,
                &self.builtins.principal_revoked,
            ));
        }
        // Only a class the action is certainly in exempts it (the stricter reading).
        if s.read_only && is_write(a) && !self.certainly_readonly(cx) {
            hits.push(enforce(b::SESSION_READ_ONLY, &self.builtins.read_only));
        }
        let declared = match s.status {
            SessionStatus::New => a.declared_intent.as_deref(),
            _ => s.intent.as_deref(),
        };
        match (declared, cx.intent) {
            (Some(_), None) => hits.push(enforce(b::INTENT_UNKNOWN, &self.builtins.intent_unknown)),
            (_, Some(intent)) => {
                let outside = match cx.outside {
                    T3::True => true,
                    T3::Unknown => intent.outside.decision > Decision::Allow,
                    T3::False => false,
                };
                if outside {
                    hits.push(Hit {
                        name: Name::Intent(&intent.name),
                        def: &intent.outside,
                        mode: p.mode,
                        effects: &[],
                        reason: None,
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
        if let Some(reason) = mismatch {
            hits.push(Hit {
                name: Name::Static(b::ARGS_TYPE),
                def: &self.builtins.args_type,
                mode: p.mode,
                effects: &[],
                reason: Some(reason.to_owned()),
            });
        }
        for ri in Merge::new(self.index.candidates(a)) {
            let Some(r) = usize::try_from(ri).ok().and_then(|i| p.rules.get(i)) else {
                continue;
            };
            // Unknown matches a rule stricter than ALLOW, and not an ALLOW rule.
            let upper = r.decision.decision > Decision::Allow;
            if cx.run(&r.code, upper)?.0 {
                hits.push(Hit {
                    name: Name::Rule(&r.name),
                    def: &r.decision,
                    mode: r.mode,
                    effects: &r.effects,
                    reason: None,
                });
            }
        }
        if hits.iter().all(|h| h.mode == Mode::Audit) {
            hits.push(Hit {
                name: Name::Static(b::DEFAULT),
                def: &p.default,
                mode: p.mode,
                effects: &[],
                reason: None,
            });
        }
        Ok(())
    }

    fn resolve<'a>(
        &'a self,
        cx: &Ctx<'a>,
        mut hits: Vec<Hit<'a>>,
        intent: Option<String>,
        coercions: Option<&[Modification]>,
    ) -> Verdict {
        let a = cx.action;
        let enforced_max = |hits: &[Hit<'_>]| {
            hits.iter()
                .filter(|h| h.mode == Mode::Enforce)
                .map(|h| h.def.decision)
                .max()
                .unwrap_or(Decision::Allow)
        };
        let mut decision = enforced_max(&hits);
        let mut deciding = hits
            .iter()
            .position(|h| h.mode == Mode::Enforce && h.def.decision == decision);
        // 6. Approvals stop.
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
                reason: None,
            });
            decision = Decision::Deny;
        }
        // 7. Coercions: only an action that goes forward is rewritten.
        let coercions = coercions.filter(|_| decision <= Decision::Modify);
        if coercions.is_some() {
            hits.push(Hit {
                name: Name::Static(b::ARGS_COERCE),
                def: &self.builtins.args_coerce,
                mode: self.prog.mode,
                effects: &[],
                reason: None,
            });
            if self.prog.mode == Mode::Enforce && decision == Decision::Allow {
                decision = Decision::Modify;
                deciding = Some(hits.len().saturating_sub(1));
            }
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
                let e = e.effect(a);
                if !effects.contains(&e) {
                    effects.push(e);
                }
            }
        }
        let modifications = if decision == Decision::Modify {
            let coerced = coercions
                .filter(|_| self.prog.mode == Mode::Enforce)
                .unwrap_or_default();
            coerced
                .iter()
                .cloned()
                .chain(
                    hits.iter()
                        .filter(|h| h.mode == Mode::Enforce && h.def.decision == Decision::Modify)
                        .flat_map(|h| h.def.modifications.iter().cloned()),
                )
                .collect()
        } else {
            Vec::new()
        };
        let warnings = hits
            .iter()
            .filter(|h| h.mode == Mode::Warn && h.def.decision > Decision::Allow)
            .map(|h| format!("{}: {}", h.name(), h.reason()))
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
                    reason: h.reason().to_owned(),
                })
                .collect(),
            deciding_rule: deciding.map_or_else(|| b::NONE.to_owned(), Hit::name),
            reason: deciding.map(|h| h.reason().to_owned()).unwrap_or_default(),
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
