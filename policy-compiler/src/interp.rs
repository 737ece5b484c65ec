//! The tree-walking reference interpreter: the "Evaluation" section of `docs/policy-language.md`,
//! written to be obviously right rather than fast. It is the oracle the bytecode VM is tested
//! against (`tests/differential.rs`), and what `policyc test` runs every tabletop case through.
//!
//! Conditions are evaluated in Kleene's three-valued logic ([`T3`]): a test on a value of a type
//! it does not apply to is unknown, and each use of a condition reads unknown as its stricter
//! side (a rule stricter than ALLOW matches, an ALLOW rule does not; see "Type errors").

use crate::ast::{
    ClassDef, CmpOp, CountSubject, DecisionSpec, EffectDef, Expr, FieldRef, IntentDef, Item, Lit,
    PathSegment, Policy, Role, RuleDef, SetRef, VType,
};
use bundle::action::{Action, Kind};
use bundle::builtin as b;
use bundle::session::{Quarantine, SessionState, SessionStatus, name_hash};
use bundle::verdict::{Decision, Defer, Effect, Mode, RiskTier, RuleMatch, StepUp, Verdict};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

mod logic;
mod types;

pub use logic::T3;
use types::{TypeCheck, check_types, find_schema};

/// A class and whether the action is in it.
struct ClassValue<'c> {
    def: &'c ClassDef,
    value: T3,
}

/// Evaluate one action against a policy. Never panics; see the module docs.
pub fn evaluate(policy: &Policy, action: &Action, session: &SessionState, now_ms: u64) -> Verdict {
    let pack_mode = policy.pack.mode;

    // The intent in force: for a new session the one the action declares, else the pinned one.
    let intent_name: Option<String> = match session.status {
        SessionStatus::New => action.declared_intent.clone(),
        _ => session.intent.clone(),
    };
    let intent_def = intent_name.as_deref().and_then(|n| find_intent(policy, n));
    let verdict_intent = match session.status {
        SessionStatus::New => intent_def.map(|d| d.name.node.clone()),
        _ => session.intent.clone(),
    };
    // 0. Declared argument types (`tools/call` only).
    let schema = match (action.kind, action.tool.as_deref()) {
        (Kind::Mcp, Some(tool)) if action.operation == "tools/call" => find_schema(policy, tool),
        _ => None,
    };
    let checked = schema.map_or(TypeCheck::Ok, |s| check_types(s, &action.arguments));
    let (args, coercions, mismatch) = match &checked {
        TypeCheck::Ok => (&action.arguments, Vec::new(), None),
        TypeCheck::Coerced(args, mods) => (args, mods.clone(), None),
        TypeCheck::Mismatch(reason) => (&action.arguments, Vec::new(), Some(reason.clone())),
    };

    // 1. Classes, in order (the built-in `mcp_protocol` first when used). A class's `when` may
    // refer to classes before it.
    let class_defs: Vec<Cow<'_, ClassDef>> = crate::protocol::classes(policy);
    let mut classes: Vec<ClassValue<'_>> = Vec::new();
    for c in &class_defs {
        let ctx = Ctx {
            policy,
            action,
            args,
            session,
            now_ms,
            classes: &classes,
            intent: intent_def,
            evaluating_classes: true,
        };
        let value = ctx.eval(&c.when);
        classes.push(ClassValue { def: c, value });
    }
    // The verdict lists the classes the action is certainly in (unknown is not enough).
    let certain: Vec<&ClassDef> = classes
        .iter()
        .filter(|c| c.value == T3::True)
        .map(|c| c.def)
        .collect();
    let risk = certain
        .iter()
        .map(|c| c.risk)
        .max()
        .unwrap_or(RiskTier::Low);

    let ctx = Ctx {
        policy,
        action,
        args,
        session,
        now_ms,
        classes: &classes,
        intent: intent_def,
        evaluating_classes: false,
    };

    // 2. Built-in checks.
    let mut matches: Vec<Match<'_>> = Vec::new();
    if session.status == SessionStatus::Missing {
        matches.push(Match::spec(
            b::SESSION_UNKNOWN,
            &policy.pack.unknown_session,
            pack_mode,
        ));
    }
    if session.killed {
        matches.push(Match::builtin(b::SESSION_KILLED, b::KILLED_REASON));
    }
    match session.principal.quarantine {
        Quarantine::Full => matches.push(Match::builtin(
            b::PRINCIPAL_QUARANTINED,
            b::PRINCIPAL_QUARANTINED_REASON,
        )),
        Quarantine::ReadOnly if writes(action) && !certain.iter().any(|c| c.readonly) => matches
            .push(Match::builtin(
                b::PRINCIPAL_READ_ONLY,
                b::PRINCIPAL_READ_ONLY_REASON,
            )),
        Quarantine::ReadOnly | Quarantine::None => {}
    }
    if action.intent_untrusted(policy.pack.intent_header) {
        matches.push(Match::builtin(
            b::INTENT_UNTRUSTED,
            b::INTENT_UNTRUSTED_REASON,
        ));
    }
    // Revoked: a class the action may be in counts (the stricter reading).
    let subject_revoked = session.tool_revoked(name_hash(action.subject()));
    let class_revoked = classes
        .iter()
        .any(|c| c.value != T3::False && session.class_revoked(name_hash(&c.def.name.node)));
    if subject_revoked || class_revoked {
        matches.push(Match::builtin(b::SESSION_REVOKED, b::REVOKED_REASON));
    }
    // The same for what was revoked for the principal, in every session.
    let pv = &session.principal;
    let principal_revoked = pv.tool_revoked(name_hash(action.subject()))
        || classes
            .iter()
            .any(|c| c.value != T3::False && pv.class_revoked(name_hash(&c.def.name.node)));
    if principal_revoked {
        matches.push(Match::builtin(
            b::PRINCIPAL_REVOKED,
            b::PRINCIPAL_REVOKED_REASON,
        ));
    }
    // Read-only: only a class the action is certainly in exempts it.
    if session.read_only && writes(action) && !certain.iter().any(|c| c.readonly) {
        matches.push(Match::builtin(b::SESSION_READ_ONLY, b::READ_ONLY_REASON));
    }
    match (&intent_name, intent_def) {
        (Some(_), None) => {
            matches.push(Match::builtin(b::INTENT_UNKNOWN, b::INTENT_UNKNOWN_REASON))
        }
        (_, Some(def)) => {
            if ctx.outside_intent().matches(def.outside.decision) {
                let name = format!("{}{}", b::INTENT_PREFIX, def.name.node);
                matches.push(Match::spec_owned(name, &def.outside, pack_mode));
            }
            let l = &def.limits;
            if l.max_actions.is_some_and(|m| session.actions >= m) {
                matches.push(Match::builtin(b::STOP_MAX_ACTIONS, b::MAX_ACTIONS_REASON));
            }
            if l.max_egress_bytes
                .is_some_and(|m| session.egress_bytes.saturating_add(action.egress_bytes()) > m)
            {
                matches.push(Match::builtin(
                    b::STOP_MAX_EGRESS_BYTES,
                    b::MAX_EGRESS_BYTES_REASON,
                ));
            }
            if l.max_duration_ms
                .is_some_and(|m| session.elapsed_ms(now_ms) > m)
            {
                matches.push(Match::builtin(b::STOP_MAX_DURATION, b::MAX_DURATION_REASON));
            }
        }
        (None, None) => {}
    }
    if let Some(reason) = mismatch {
        matches.push(Match {
            name: b::ARGS_TYPE.to_owned(),
            decision: Decision::Deny,
            mode: pack_mode,
            reason: Cow::Owned(reason),
            spec: None,
            effects: &[],
        });
    }

    // 3. Rules, in source order.
    for item in &policy.items {
        if let Item::Rule(r) = item
            && ctx.eval(&r.when).matches(r.decision.decision)
        {
            matches.push(Match::rule(r, pack_mode));
        }
    }

    // 4. Default.
    if !matches
        .iter()
        .any(|m| matches!(m.mode, Mode::Enforce | Mode::Warn))
    {
        matches.push(Match::spec(b::DEFAULT, &policy.pack.default, pack_mode));
    }

    // 5. Resolution.
    let enforced = || matches.iter().filter(|m| m.mode == Mode::Enforce);
    let mut decision = enforced()
        .map(|m| m.decision)
        .max()
        .unwrap_or(Decision::Allow);
    let would_be = matches
        .iter()
        .map(|m| m.decision)
        .max()
        .unwrap_or(Decision::Allow);
    let deciding = enforced().find(|m| m.decision == decision);
    let warnings = matches
        .iter()
        .filter(|m| m.mode == Mode::Warn && m.decision > Decision::Allow)
        .map(|m| format!("{}: {}", m.name, m.reason))
        .collect();
    let modifications = if decision == Decision::Modify {
        enforced()
            .filter(|m| m.decision == Decision::Modify)
            .filter_map(|m| m.spec)
            .flat_map(|s| s.modifications.iter().map(|x| x.node.to_modification()))
            .collect()
    } else {
        Vec::new()
    };
    let mut effects: Vec<Effect> = Vec::new();
    for m in enforced() {
        for e in m.effects {
            let e = e.node.effect(action);
            if !effects.contains(&e) {
                effects.push(e);
            }
        }
    }
    let mut verdict = Verdict {
        decision,
        would_be,
        matched: matches.iter().map(Match::to_rule_match).collect(),
        deciding_rule: deciding.map_or_else(|| b::NONE.to_owned(), |m| m.name.clone()),
        reason: deciding.map_or_else(String::new, |m| m.reason.to_string()),
        modifications,
        effects,
        step_up: None,
        defer: None,
        warnings,
        classes: certain.iter().map(|c| c.name.node.clone()).collect(),
        risk,
        intent: verdict_intent,
    };
    if let Some(spec) = deciding.and_then(|m| m.spec) {
        if decision == Decision::StepUp {
            verdict.step_up = spec.step_up.as_ref().map(|(g, t)| StepUp {
                group: g.clone(),
                timeout_s: *t,
            });
        }
        if decision == Decision::Defer {
            verdict.defer = spec.defer.as_ref().map(|(s, t)| Defer {
                service: s.clone(),
                timeout_ms: *t,
            });
        }
    }

    // 6. Approvals stop.
    if decision == Decision::StepUp
        && intent_def
            .and_then(|d| d.limits.max_approvals)
            .is_some_and(|m| session.approvals >= m)
    {
        decision = Decision::Deny;
        verdict.matched.push(RuleMatch {
            rule: b::STOP_MAX_APPROVALS.to_owned(),
            decision: Decision::Deny,
            mode: Mode::Enforce,
            reason: b::MAX_APPROVALS_REASON.to_owned(),
        });
        verdict.decision = decision;
        verdict.would_be = Decision::Deny;
        verdict.deciding_rule = b::STOP_MAX_APPROVALS.to_owned();
        verdict.reason = b::MAX_APPROVALS_REASON.to_owned();
        verdict.step_up = None;
    }

    // 7. Coercions: only an action that goes forward (ALLOW or MODIFY) is rewritten.
    if !coercions.is_empty() && decision <= Decision::Modify {
        verdict.matched.push(RuleMatch {
            rule: b::ARGS_COERCE.to_owned(),
            decision: Decision::Modify,
            mode: pack_mode,
            reason: b::ARGS_COERCE_REASON.to_owned(),
        });
        verdict.would_be = verdict.would_be.max(Decision::Modify);
        match pack_mode {
            Mode::Enforce => {
                if decision == Decision::Allow {
                    verdict.decision = Decision::Modify;
                    verdict.deciding_rule = b::ARGS_COERCE.to_owned();
                    verdict.reason = b::ARGS_COERCE_REASON.to_owned();
                }
                let rest = std::mem::take(&mut verdict.modifications);
                verdict.modifications = coercions.into_iter().chain(rest).collect();
            }
            Mode::Warn => {
                verdict
                    .warnings
                    .push(format!("{}: {}", b::ARGS_COERCE, b::ARGS_COERCE_REASON))
            }
            Mode::Audit => {}
        }
    }
    verdict
}

fn find_intent<'p>(policy: &'p Policy, name: &str) -> Option<&'p IntentDef> {
    policy.items.iter().find_map(|i| match i {
        Item::Intent(d) if d.name.node == name => Some(d),
        _ => None,
    })
}

/// Whether a read-only session refuses this action (absent a `readonly` class).
fn writes(action: &Action) -> bool {
    match action.kind {
        Kind::Mcp => action.operation == "tools/call",
        Kind::Http => !matches!(action.operation.as_str(), "GET" | "HEAD" | "OPTIONS"),
    }
}

/// Whether intents judge this action (protocol messages are always in scope).
fn acting(action: &Action) -> bool {
    match action.kind {
        Kind::Mcp => matches!(
            action.operation.as_str(),
            "tools/call" | "resources/read" | "prompts/get"
        ),
        Kind::Http => true,
    }
}

/// One matched rule or built-in, before resolution.
struct Match<'p> {
    name: String,
    decision: Decision,
    mode: Mode,
    reason: Cow<'p, str>,
    spec: Option<&'p DecisionSpec>,
    effects: &'p [crate::ast::Spanned<EffectDef>],
}

impl<'p> Match<'p> {
    fn builtin(name: &str, reason: &'p str) -> Self {
        Match {
            name: name.to_owned(),
            decision: Decision::Deny,
            mode: Mode::Enforce,
            reason: Cow::Borrowed(reason),
            spec: None,
            effects: &[],
        }
    }
    fn spec(name: &str, spec: &'p DecisionSpec, mode: Mode) -> Self {
        Self::spec_owned(name.to_owned(), spec, mode)
    }
    fn spec_owned(name: String, spec: &'p DecisionSpec, mode: Mode) -> Self {
        Match {
            name,
            decision: spec.decision,
            mode,
            reason: Cow::Borrowed(&spec.reason),
            spec: Some(spec),
            effects: &[],
        }
    }
    fn rule(r: &'p RuleDef, pack_mode: Mode) -> Self {
        Match {
            name: r.name.node.clone(),
            decision: r.decision.decision,
            mode: r.mode.unwrap_or(pack_mode),
            reason: Cow::Borrowed(&r.decision.reason),
            spec: Some(&r.decision),
            effects: &r.effects,
        }
    }
    fn to_rule_match(&self) -> RuleMatch {
        RuleMatch {
            rule: self.name.clone(),
            decision: self.decision,
            mode: self.mode,
            reason: self.reason.to_string(),
        }
    }
}

/// A field's value: absent, or a JSON value.
enum Val<'a> {
    Absent,
    Str(&'a str),
    Owned(Json),
    Json(&'a Json),
}

impl Val<'_> {
    fn json(&self) -> Option<Json> {
        match self {
            Val::Absent => None,
            Val::Str(s) => Some(Json::String((*s).to_owned())),
            Val::Owned(j) => Some(j.clone()),
            Val::Json(j) => Some((*j).clone()),
        }
    }
}

struct Ctx<'a> {
    policy: &'a Policy,
    action: &'a Action,
    /// The arguments the rules read: the action's, or their coerced copy.
    args: &'a Json,
    session: &'a SessionState,
    now_ms: u64,
    /// The classes decided so far (all of them once rules run), with their values.
    classes: &'a [ClassValue<'a>],
    intent: Option<&'a IntentDef>,
    /// Evaluating a class's `when`: `intent.outside` is false there (it depends on the classes;
    /// the checker refuses it).
    evaluating_classes: bool,
}

fn num(n: impl Into<f64>) -> Val<'static> {
    serde_json::Number::from_f64(n.into()).map_or(Val::Absent, |n| Val::Owned(Json::Number(n)))
}

impl<'a> Ctx<'a> {
    /// `class NAME`: the class's value (false for a class not decided yet or undefined).
    fn in_class(&self, name: &str) -> T3 {
        self.classes
            .iter()
            .find(|c| c.def.name.node == name)
            .map_or(T3::False, |c| c.value)
    }

    /// `intent.outside`: an acting action outside the intent in force (false when none). It is
    /// unknown when the action is inside only through a class it may be in.
    fn outside_intent(&self) -> T3 {
        let Some(def) = self.intent else {
            return T3::False;
        };
        if self.evaluating_classes || !acting(self.action) {
            return T3::False;
        }
        let a = self.action;
        let by_name = a
            .tool
            .as_deref()
            .is_some_and(|t| def.tools.iter().any(|g| glob(&g.node, t)))
            || (a.kind == Kind::Http && def.hosts.iter().any(|g| glob(&g.node, &a.target.host)));
        let by_class = def
            .classes
            .iter()
            .map(|c| self.in_class(&c.node))
            .fold(T3::False, |acc, v| acc.or(|| v));
        let data_ok = def.data_scopes.is_empty()
            || a.risk
                .data_classes
                .iter()
                .all(|d| def.data_scopes.iter().any(|s| s.node == *d));
        T3::from(by_name)
            .or(|| by_class)
            .and(|| data_ok.into())
            .not()
    }

    fn field(&self, f: &FieldRef) -> Val<'a> {
        let a = self.action;
        let s = self.session;
        match f {
            FieldRef::Kind => Val::Str(a.kind.as_str()),
            FieldRef::Operation => Val::Str(&a.operation),
            FieldRef::Tool => a.tool.as_deref().map_or(Val::Absent, Val::Str),
            FieldRef::Resource => a.resource.as_deref().map_or(Val::Absent, Val::Str),
            FieldRef::Prompt => a.prompt.as_deref().map_or(Val::Absent, Val::Str),
            // Target fields are always present ("" and 0 for an MCP action without them).
            FieldRef::Host => Val::Str(&a.target.host),
            FieldRef::Port => num(a.target.port),
            FieldRef::Path => Val::Str(&a.target.path),
            FieldRef::Query => Val::Str(&a.target.query),
            FieldRef::Scheme => Val::Str(&a.target.scheme),
            FieldRef::Server => Val::Str(&a.target.server),
            FieldRef::Principal(r) => principal(a, *r).id.as_deref().map_or(Val::Absent, Val::Str),
            FieldRef::PrincipalAuth(r) => Val::Str(principal(a, *r).auth.as_str()),
            FieldRef::Header(h) => a.header(h).map_or(Val::Absent, Val::Str),
            FieldRef::Arg(p) => lookup(self.args, p).map_or(Val::Absent, Val::Json),
            FieldRef::RequestSize => num(a.size as f64),
            FieldRef::RiskSecrets => Val::Owned(Json::Bool(a.risk.secrets)),
            FieldRef::RiskDataClasses => Val::Owned(Json::Array(
                a.risk
                    .data_classes
                    .iter()
                    .map(|d| Json::String(d.clone()))
                    .collect(),
            )),
            FieldRef::SessionId => a.session_id.as_deref().map_or(Val::Absent, Val::Str),
            FieldRef::TraceId => a.trace_id.as_deref().map_or(Val::Absent, Val::Str),
            FieldRef::Intent => Val::Str(self.intent.map_or("", |d| d.name.node.as_str())),
            FieldRef::SessionActions => num(s.actions),
            FieldRef::SessionEgressBytes => num(s.egress_bytes as f64),
            FieldRef::SessionApprovals => num(s.approvals),
            FieldRef::SessionElapsed => num(s.elapsed_ms(self.now_ms) as f64),
            FieldRef::SessionDrift => num(s.drift),
            FieldRef::PrincipalId => Val::Str(s.principal.id.as_deref().unwrap_or("")),
            FieldRef::PrincipalSessions => num(s.principal.sessions),
            FieldRef::PrincipalDenials => num(s.principal.denials),
            FieldRef::ToolChanged => Val::Owned(Json::Bool(a.tool_state.changed)),
            FieldRef::ToolShadowed => Val::Owned(Json::Bool(a.tool_state.shadowed)),
        }
    }

    fn set_values(&self, set: &'a SetRef) -> Vec<&'a Lit> {
        match set {
            SetRef::Inline(v) => v.iter().map(|l| &l.node).collect(),
            SetRef::Named(n) => self
                .policy
                .items
                .iter()
                .find_map(|i| match i {
                    Item::List(l) if l.name.node == n.node => {
                        Some(l.values.iter().map(|l| &l.node).collect())
                    }
                    _ => None,
                })
                .unwrap_or_default(),
        }
    }

    /// The field's value, `None` when it is absent or `null` (every test on it is false).
    fn given(&self, f: &FieldRef) -> Option<Json> {
        self.field(f).json().filter(|v| !v.is_null())
    }

    fn eval(&self, e: &Expr) -> T3 {
        match e {
            Expr::Const(b) => (*b).into(),
            Expr::And(x, y) => self.eval(x).and(|| self.eval(y)),
            Expr::Or(x, y) => self.eval(x).or(|| self.eval(y)),
            Expr::Not(x) => self.eval(x).not(),
            Expr::Cmp(f, op, lit) => self
                .given(&f.node)
                .map_or(T3::False, |v| compare(&v, *op, &lit.node)),
            Expr::In(f, set) => {
                let Some(v) = self.given(&f.node) else {
                    return T3::False;
                };
                let values = self.set_values(set);
                if values.iter().any(|l| compare(&v, CmpOp::Eq, l) == T3::True) {
                    T3::True
                } else if values.is_empty() || values.iter().any(|l| same_type(&v, l)) {
                    T3::False
                } else {
                    T3::Unknown
                }
            }
            Expr::Glob(f, set) | Expr::Prefix(f, set) => {
                let patterns: Vec<&str> = self
                    .set_values(set)
                    .into_iter()
                    .filter_map(|l| match l {
                        Lit::Str(p) => Some(p.as_str()),
                        _ => None,
                    })
                    .collect();
                match self.given(&f.node) {
                    None => T3::False,
                    Some(Json::String(v)) => patterns
                        .iter()
                        .any(|p| match e {
                            Expr::Glob(..) => glob(p, &v),
                            _ => v.starts_with(p),
                        })
                        .into(),
                    Some(_) if patterns.is_empty() => T3::False,
                    Some(_) => T3::Unknown,
                }
            }
            Expr::Matches(f, re) => match self.given(&f.node) {
                None => T3::False,
                Some(Json::String(v)) => regex_match(&re.node, &v).into(),
                Some(_) => T3::Unknown,
            },
            Expr::IsType(f, t) => self
                .field(&f.node)
                .json()
                .is_some_and(|v| type_of(&v) == *t)
                .into(),
            Expr::Present(f) => self.given(&f.node).is_some().into(),
            Expr::Len(f, op, n) => {
                let len = match self.given(&f.node) {
                    Some(Json::String(s)) => s.chars().count(),
                    Some(Json::Array(a)) => a.len(),
                    Some(Json::Object(o)) => o.len(),
                    None => return T3::False,
                    Some(_) => return T3::Unknown,
                };
                op.holds(&(len as f64), n).into()
            }
            Expr::Contains(f, s) => match self.given(&f.node) {
                Some(Json::Array(a)) => {
                    a.iter().any(|v| v.as_str() == Some(s.node.as_str())).into()
                }
                None => T3::False,
                Some(_) => T3::Unknown,
            },
            Expr::InClass(c) => self.in_class(&c.node),
            Expr::Tainted(t) => self.session.tainted(name_hash(&t.node)).into(),
            Expr::Used(t) => self.session.used(name_hash(&t.node)).into(),
            Expr::Seen(c) => self.session.seen_class(name_hash(&c.node)).into(),
            Expr::Count(subject, window, op, n) => {
                let count = match &subject.node {
                    CountSubject::Subject(t) => {
                        self.session
                            .count_subject(name_hash(t), *window, self.now_ms)
                    }
                    CountSubject::Class(c) => {
                        self.session.count_class(name_hash(c), *window, self.now_ms)
                    }
                };
                op.holds(&count, n).into()
            }
            Expr::OutsideIntent => self.outside_intent(),
            Expr::PrincipalTainted(t) => self.session.principal.tainted(name_hash(&t.node)).into(),
            Expr::Quarantined => self.session.principal.quarantined().into(),
        }
    }
}

fn principal(a: &Action, r: Role) -> &bundle::action::Principal {
    match r {
        Role::Agent => &a.identity.agent,
        Role::Human => &a.identity.human,
        Role::Workload => &a.identity.workload,
    }
}

/// Follow an argument path into the arguments (`args` alone is the whole arguments value, absent
/// when it is `null`).
fn lookup<'j>(args: &'j Json, path: &[PathSegment]) -> Option<&'j Json> {
    if path.is_empty() && args.is_null() {
        return None;
    }
    let mut cur = args;
    for step in path {
        cur = match (step, cur) {
            (PathSegment::Key(k), Json::Object(o)) => o.get(k)?,
            (PathSegment::Index(n), Json::Array(a)) => a.get(usize::try_from(*n).ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn type_of(v: &Json) -> VType {
    match v {
        Json::Null => VType::Null,
        Json::Bool(_) => VType::Bool,
        Json::Number(_) => VType::Number,
        Json::String(_) => VType::String,
        Json::Array(_) => VType::Array,
        Json::Object(_) => VType::Object,
    }
}

/// Whether a value has a literal's type.
fn same_type(v: &Json, lit: &Lit) -> bool {
    matches!(
        (v, lit),
        (Json::String(_), Lit::Str(_))
            | (Json::Number(_), Lit::Num(_))
            | (Json::Bool(_), Lit::Bool(_))
    )
}

/// `value OP literal` for a given (present, non-null) value: strings and booleans by
/// (in)equality (an ordering is false), numbers as f64; a value of another type is unknown.
fn compare(v: &Json, op: CmpOp, lit: &Lit) -> T3 {
    match (v, lit) {
        (Json::String(a), Lit::Str(b)) => match op {
            CmpOp::Eq => (a == b).into(),
            CmpOp::Ne => (a != b).into(),
            _ => T3::False,
        },
        (Json::Bool(a), Lit::Bool(b)) => match op {
            CmpOp::Eq => (a == b).into(),
            CmpOp::Ne => (a != b).into(),
            _ => T3::False,
        },
        (Json::Number(a), Lit::Num(b)) => a.as_f64().is_some_and(|a| op.holds(&a, b)).into(),
        _ => T3::Unknown,
    }
}

/// Glob over characters: `*` any run (including none), `?` exactly one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `*`: O(len(p) * len(t)) worst case.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<String, Option<regex_automata::dfa::regex::Regex>>> =
        RefCell::new(HashMap::new());
}

/// Whole-value regex match (the pattern must match all of `text`). A pattern that does not
/// compile matches nothing (the checker refuses such policies).
pub fn regex_match(pattern: &str, text: &str) -> bool {
    REGEX_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let re = cache
            .entry(pattern.to_owned())
            .or_insert_with(|| compile_regex(pattern).ok());
        re.as_ref().is_some_and(|re| re.is_match(text))
    })
}

/// Compile a pattern for whole-value matching: `\A(?:PATTERN)\z`.
pub(crate) fn compile_regex(pattern: &str) -> Result<regex_automata::dfa::regex::Regex, String> {
    regex_automata::dfa::regex::Regex::builder()
        .thompson(
            regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(REGEX_DFA_LIMIT)),
        )
        .dense(
            regex_automata::dfa::dense::Config::new()
                .dfa_size_limit(Some(REGEX_DFA_LIMIT))
                .determinize_size_limit(Some(REGEX_DFA_LIMIT)),
        )
        .build(&format!(r"\A(?:{pattern})\z"))
        .map_err(|e| e.to_string())
}

/// Size limit of one regex's DFA, in bytes (the checker refuses larger ones).
pub(crate) const REGEX_DFA_LIMIT: usize = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics() {
        assert!(glob("deps/*", "deps/lodash"));
        assert!(glob("deps/*", "deps/"));
        assert!(!glob("deps/*", "dep/x"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*.corp.example", "x.y.corp.example"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
        assert!(glob("é?", "éü"));
    }

    #[test]
    fn regex_is_whole_value() {
        assert!(regex_match("a|ab", "ab"));
        assert!(!regex_match("b", "abc"));
        assert!(regex_match("(?i)select.*", "SELECT 1"));
        assert!(!regex_match("(", "("));
    }
}
