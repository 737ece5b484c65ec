//! Lowering: checked AST -> [`bundle::format::Program`] (the bundle's in-memory model).
//!
//! Conditions become forward-only branch code: each leaf test jumps to the "true" or "false"
//! continuation of its context, so `and`, `or` and `not` cost nothing at run time and evaluation
//! short-circuits exactly like the reference interpreter. Each leaf records whether it sits
//! under an odd number of `not` (`Instr::negated`), which is how the VM evaluates an unknown test
//! in Kleene's logic without leaving the branch code. `class X` inside a class is inlined
//! when X is defined above (else it is `false`, as in the interpreter; the checker refuses it);
//! inside a rule it reads the class set computed before the rules run.
//! Every name the session stores is pre-hashed with `bundle::session::name_hash`.

use std::collections::HashMap;

use bundle::action::Kind;
use bundle::format::{
    ArgDef, ClassDef, CmpOp, DecisionDef, FieldRef, Instr, IntentDef, Jump, Lit, MatcherDef, Pins,
    Pred, Program, RuleDef, ToolDef,
};
use bundle::session::name_hash;
use bundle::verdict::{Defer, StepUp};

use crate::ast::{self, Expr, Item, SetRef, Span};
use crate::codegen::{CompileError, regex_dfa};

/// Largest instruction index a jump can encode (`0xFFFE`/`0xFFFF` are ACCEPT/REJECT).
const MAX_CODE: usize = 0xFFFD;

#[derive(Clone, Copy)]
enum Target {
    Label(usize),
    Accept,
    Reject,
}

struct Lowerer<'p> {
    lists: HashMap<&'p str, &'p [ast::Spanned<Lit>]>,
    classes: HashMap<&'p str, (usize, &'p ast::ClassDef)>,
    matchers: Vec<MatcherDef>,
    matcher_index: HashMap<String, u32>,
}

struct Code {
    /// Test, negated, on true, on false.
    instrs: Vec<(Pred, bool, Target, Target)>,
    labels: Vec<Option<usize>>,
}

fn err(span: Span, message: impl Into<String>) -> CompileError {
    CompileError {
        message: message.into(),
        span,
    }
}

/// Lower a decision spec.
pub(crate) fn decision(d: &ast::DecisionSpec) -> DecisionDef {
    DecisionDef {
        decision: d.decision,
        reason: d.reason.clone(),
        modifications: d
            .modifications
            .iter()
            .map(|m| m.node.to_modification())
            .collect(),
        step_up: d.step_up.as_ref().map(|(group, timeout_s)| StepUp {
            group: group.clone(),
            timeout_s: *timeout_s,
        }),
        defer: d.defer.as_ref().map(|(service, timeout_ms)| Defer {
            service: service.clone(),
            timeout_ms: *timeout_ms,
        }),
    }
}

impl Code {
    fn new() -> Self {
        Code {
            instrs: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len().saturating_sub(1)
    }
    fn place(&mut self, l: usize) {
        if let Some(slot) = self.labels.get_mut(l) {
            *slot = Some(self.instrs.len());
        }
    }
    fn finish(self, span: Span) -> Result<Vec<Instr>, CompileError> {
        if self.instrs.len() > MAX_CODE {
            return Err(err(span, "this condition is too large to compile"));
        }
        let resolve = |t: Target| -> Result<Jump, CompileError> {
            Ok(match t {
                Target::Accept => Jump::Accept,
                Target::Reject => Jump::Reject,
                Target::Label(l) => {
                    let at = self
                        .labels
                        .get(l)
                        .copied()
                        .flatten()
                        .ok_or_else(|| err(span, "internal error: unplaced label"))?;
                    Jump::To(u16::try_from(at).map_err(|_| err(span, "condition too large"))?)
                }
            })
        };
        self.instrs
            .iter()
            .map(|(pred, negated, t, f)| {
                Ok(Instr {
                    pred: pred.clone(),
                    negated: *negated,
                    on_true: resolve(*t)?,
                    on_false: resolve(*f)?,
                })
            })
            .collect()
    }
}

impl<'p> Lowerer<'p> {
    fn set_values(&self, s: &'p SetRef) -> Result<Vec<&'p Lit>, CompileError> {
        match s {
            SetRef::Inline(v) => Ok(v.iter().map(|l| &l.node).collect()),
            SetRef::Named(n) => self
                .lists
                .get(n.node.as_str())
                .map(|v| v.iter().map(|l| &l.node).collect())
                .ok_or_else(|| err(n.span, format!("unknown list `{}`", n.node))),
        }
    }

    fn matcher(&mut self, m: MatcherDef) -> u32 {
        let key = format!("{m:?}");
        if let Some(i) = self.matcher_index.get(&key) {
            return *i;
        }
        let i = u32::try_from(self.matchers.len()).unwrap_or(u32::MAX);
        self.matchers.push(m);
        self.matcher_index.insert(key, i);
        i
    }

    fn strings(vals: &[&Lit]) -> Vec<String> {
        vals.iter()
            .filter_map(|l| match l {
                Lit::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn leaf(&mut self, e: &'p Expr, in_class: bool, span: Span) -> Result<Pred, CompileError> {
        Ok(match e {
            Expr::Cmp(f, op, l) => Pred::Cmp(f.node.clone(), *op, l.node.clone()),
            Expr::In(f, s) => {
                let vals = self.set_values(s)?;
                let mut strs = Self::strings(&vals);
                strs.sort();
                strs.dedup();
                let mut nums: Vec<f64> = vals
                    .iter()
                    .filter_map(|l| match l {
                        Lit::Num(n) => Some(*n),
                        _ => None,
                    })
                    .collect();
                nums.sort_by(f64::total_cmp);
                nums.dedup_by(|a, b| a.to_bits() == b.to_bits());
                let mut bools: Vec<bool> = vals
                    .iter()
                    .filter_map(|l| match l {
                        Lit::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect();
                bools.sort();
                bools.dedup();
                Pred::In(
                    f.node.clone(),
                    self.matcher(MatcherDef::Set { strs, nums, bools }),
                )
            }
            Expr::Glob(f, s) => {
                let mut g = Self::strings(&self.set_values(s)?);
                let mut seen = std::collections::HashSet::new();
                g.retain(|x| seen.insert(x.clone()));
                Pred::Glob(f.node.clone(), self.matcher(MatcherDef::Globs(g)))
            }
            Expr::Prefix(f, s) => {
                let mut p = Self::strings(&self.set_values(s)?);
                p.sort();
                p.dedup();
                Pred::Prefix(f.node.clone(), self.matcher(MatcherDef::Prefixes(p)))
            }
            Expr::Matches(f, re) => {
                let dfa = regex_dfa(&re.node).map_err(|m| err(re.span, m))?;
                Pred::Matches(
                    f.node.clone(),
                    self.matcher(MatcherDef::Regex {
                        pattern: re.node.clone(),
                        dfa,
                    }),
                )
            }
            Expr::IsType(f, t) => Pred::Is(f.node.clone(), *t),
            Expr::Present(f) => Pred::Present(f.node.clone()),
            Expr::Len(f, op, n) => Pred::Len(f.node.clone(), *op, *n),
            Expr::Contains(f, s) => Pred::Contains(f.node.clone(), s.node.clone()),
            Expr::InClass(n) => {
                let (i, _) = self
                    .classes
                    .get(n.node.as_str())
                    .ok_or_else(|| err(n.span, format!("unknown class `{}`", n.node)))?;
                Pred::InClass(u32::try_from(*i).unwrap_or(u32::MAX))
            }
            Expr::Tainted(s) => Pred::Tainted(name_hash(&s.node)),
            Expr::PrincipalTainted(s) => Pred::PrincipalTainted(name_hash(&s.node)),
            Expr::Quarantined => Pred::Quarantined,
            Expr::Used(s) => Pred::Used(name_hash(&s.node)),
            Expr::Seen(c) => Pred::Seen(name_hash(&c.node)),
            Expr::Count(subject, within, op, n) => match &subject.node {
                ast::CountSubject::Subject(s) => Pred::CountSubject(name_hash(s), *within, *op, *n),
                ast::CountSubject::Class(c) => Pred::CountClass(name_hash(c), *within, *op, *n),
            },
            Expr::OutsideIntent => {
                if in_class {
                    return Err(err(span, "`intent.outside` cannot be used in a class"));
                }
                Pred::OutsideIntent
            }
            Expr::Const(b) => Pred::Const(*b),
            Expr::And(..) | Expr::Or(..) | Expr::Not(..) => {
                return Err(err(span, "internal error: not a leaf"));
            }
        })
    }

    /// Emit code for `e` that continues at `t` when it holds and at `f` when not. `neg`: `e`
    /// sits under an odd number of `not`. `stack` holds the indices of the classes being
    /// inlined, innermost last; `Some` means we are in a class.
    #[expect(
        clippy::too_many_arguments,
        reason = "one recursive emitter; the arguments are its context"
    )]
    fn emit(
        &mut self,
        code: &mut Code,
        e: &'p Expr,
        t: Target,
        f: Target,
        neg: bool,
        stack: Option<&mut Vec<usize>>,
        span: Span,
    ) -> Result<(), CompileError> {
        match e {
            Expr::And(a, b) => {
                let l = code.label();
                let mut stack = stack;
                self.emit(
                    code,
                    a,
                    Target::Label(l),
                    f,
                    neg,
                    stack.as_deref_mut(),
                    span,
                )?;
                code.place(l);
                self.emit(code, b, t, f, neg, stack, span)
            }
            Expr::Or(a, b) => {
                let l = code.label();
                let mut stack = stack;
                self.emit(
                    code,
                    a,
                    t,
                    Target::Label(l),
                    neg,
                    stack.as_deref_mut(),
                    span,
                )?;
                code.place(l);
                self.emit(code, b, t, f, neg, stack, span)
            }
            Expr::Not(a) => self.emit(code, a, f, t, !neg, stack, span),
            Expr::InClass(n) if stack.is_some() => {
                let Some(stack) = stack else { return Ok(()) };
                let name = n.node.as_str();
                let (idx, def) = *self
                    .classes
                    .get(name)
                    .ok_or_else(|| err(n.span, format!("unknown class `{name}`")))?;
                // Classes are decided in source order: a class can only see classes defined above
                // the one being decided. The checker refuses other references; should one reach
                // here, it reads as `false`, exactly as in the reference interpreter.
                let current = stack.last().copied().unwrap_or(0);
                if idx >= current {
                    code.instrs.push((Pred::Const(false), neg, t, f));
                    return Ok(());
                }
                stack.push(idx);
                self.emit(code, &def.when, t, f, neg, Some(&mut *stack), def.span)?;
                stack.pop();
                Ok(())
            }
            leaf => {
                let pred = self.leaf(leaf, stack.is_some(), span)?;
                code.instrs.push((pred, neg, t, f));
                Ok(())
            }
        }
    }

    fn condition(
        &mut self,
        e: &'p Expr,
        class: Option<usize>,
        span: Span,
    ) -> Result<Vec<Instr>, CompileError> {
        let mut code = Code::new();
        match class {
            Some(idx) => {
                let mut stack = vec![idx];
                self.emit(
                    &mut code,
                    e,
                    Target::Accept,
                    Target::Reject,
                    false,
                    Some(&mut stack),
                    span,
                )?;
            }
            None => self.emit(
                &mut code,
                e,
                Target::Accept,
                Target::Reject,
                false,
                None,
                span,
            )?,
        }
        code.finish(span)
    }
}

/// Collect what a rule's condition pins through its top-level `and` chain.
fn pins(e: &Expr, lists: &HashMap<&str, &[ast::Spanned<Lit>]>, out: &mut Pins) {
    let strings = |s: &SetRef| -> Option<Vec<String>> {
        let vals: Vec<&Lit> = match s {
            SetRef::Inline(v) => v.iter().map(|l| &l.node).collect(),
            SetRef::Named(n) => lists
                .get(n.node.as_str())?
                .iter()
                .map(|l| &l.node)
                .collect(),
        };
        let mut v: Vec<String> = vals
            .into_iter()
            .filter_map(|l| match l {
                Lit::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        // An empty list would read as "pins nothing"; the rule cannot match anyway.
        if v.is_empty() { None } else { Some(v) }
    };
    match e {
        Expr::And(a, b) => {
            pins(a, lists, out);
            pins(b, lists, out);
        }
        Expr::Cmp(f, CmpOp::Eq, l) => {
            let Lit::Str(s) = &l.node else { return };
            match f.node {
                FieldRef::Kind if out.kind.is_none() => {
                    out.kind = match s.as_str() {
                        "mcp" => Some(Kind::Mcp),
                        "http" => Some(Kind::Http),
                        _ => None,
                    };
                }
                FieldRef::Operation if out.operations.is_empty() => {
                    out.operations = vec![s.clone()]
                }
                FieldRef::Tool if out.tools.is_empty() => out.tools = vec![s.clone()],
                FieldRef::Host if out.hosts.is_empty() => out.hosts = vec![s.clone()],
                _ => {}
            }
        }
        Expr::In(f, set) => {
            let slot = match f.node {
                FieldRef::Operation => &mut out.operations,
                FieldRef::Tool => &mut out.tools,
                FieldRef::Host => &mut out.hosts,
                _ => return,
            };
            if slot.is_empty()
                && let Some(v) = strings(set)
            {
                *slot = v;
            }
        }
        _ => {}
    }
}

/// Lower a policy to the bundle's program model.
pub fn lower(policy: &ast::Policy) -> Result<Program, CompileError> {
    let mut lw = Lowerer {
        lists: HashMap::new(),
        classes: HashMap::new(),
        matchers: Vec::new(),
        matcher_index: HashMap::new(),
    };
    for item in &policy.items {
        if let Item::List(l) = item {
            lw.lists.insert(l.name.node.as_str(), l.values.as_slice());
        }
    }
    // The built-in `mcp_protocol` first (when used), then the pack's classes in source order.
    let all_classes = crate::protocol::classes(policy);
    let class_defs: Vec<&ast::ClassDef> = all_classes.iter().map(|c| c.as_ref()).collect();
    for (i, c) in class_defs.iter().enumerate() {
        lw.classes.entry(c.name.node.as_str()).or_insert((i, c));
    }
    let mut classes = Vec::new();
    for (idx, c) in class_defs.iter().enumerate() {
        let code = lw.condition(&c.when, Some(idx), c.span)?;
        classes.push(ClassDef {
            name: c.name.node.clone(),
            risk: c.risk,
            readonly: c.readonly,
            code,
        });
    }
    let mut intents = Vec::new();
    let mut rules = Vec::new();
    for item in &policy.items {
        match item {
            Item::Intent(i) => {
                let mut cls = Vec::new();
                for c in &i.classes {
                    let (idx, _) = lw
                        .classes
                        .get(c.node.as_str())
                        .ok_or_else(|| err(c.span, format!("unknown class `{}`", c.node)))?;
                    cls.push(u32::try_from(*idx).unwrap_or(u32::MAX));
                }
                let names = |v: &[ast::Spanned<String>]| v.iter().map(|s| s.node.clone()).collect();
                intents.push(IntentDef {
                    name: i.name.node.clone(),
                    classes: cls,
                    tools: names(&i.tools),
                    hosts: names(&i.hosts),
                    data: names(&i.data_scopes),
                    max_actions: i.limits.max_actions,
                    max_egress_bytes: i.limits.max_egress_bytes,
                    max_duration_ms: i.limits.max_duration_ms,
                    max_approvals: i.limits.max_approvals,
                    outside: decision(&i.outside),
                });
            }
            Item::Rule(r) => {
                let code = lw.condition(&r.when, None, r.span)?;
                let mut p = Pins::default();
                pins(&r.when, &lw.lists, &mut p);
                rules.push(RuleDef {
                    name: r.name.node.clone(),
                    mode: r.mode.unwrap_or(policy.pack.mode),
                    decision: decision(&r.decision),
                    effects: r.effects.iter().map(|e| e.node.clone()).collect(),
                    pins: p,
                    code,
                });
            }
            _ => {}
        }
    }
    Ok(Program {
        pack: policy.pack.name.node.clone(),
        version: policy.pack.version.node.clone(),
        mode: policy.pack.mode,
        default: decision(&policy.pack.default),
        unknown_session: decision(&policy.pack.unknown_session),
        mcp_protocol: crate::protocol::used(policy).then(|| crate::protocol::version(policy)),
        intent_header: policy.pack.intent_header,
        require_session_key: policy.pack.require_session_key,
        matchers: lw.matchers,
        classes,
        intents,
        rules,
        tools: tools(policy),
        // Pins come from a reviewed catalogue (`policyc build --pins`), not from the source.
        tool_pins: Vec::new(),
    })
}

/// The tool declarations, sorted by name; the first declaration of a tool wins (the checker
/// refuses a second one), as in the reference interpreter.
fn tools(policy: &ast::Policy) -> Vec<ToolDef> {
    let mut out: Vec<ToolDef> = Vec::new();
    for item in &policy.items {
        let Item::ToolSchema(s) = item else { continue };
        if out.iter().any(|t| t.name == s.tool.node) {
            continue;
        }
        out.push(ToolDef {
            name: s.tool.node.clone(),
            args: s
                .args
                .iter()
                .map(|a| ArgDef {
                    path: a.path.node.clone(),
                    ty: a.ty,
                    coerce: s.coerces(a),
                })
                .collect(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
