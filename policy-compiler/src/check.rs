//! Semantic checks over a parsed policy. Reports every problem of a run at once.
//!
//! Errors: undefined and duplicate names (lists, classes, intents, rules, tool schemas); a class
//! that refers to itself or a later class, or uses `intent.outside`; type errors (a string field
//! compared with `<`, a number literal against a string field, `len` / `is` on something that is
//! not an argument, ...); header names that are not lowercase; regex syntax errors and regexes too
//! large for an automaton; argument paths checked against a `tool "x" { ... }` schema when the
//! rule's `when` pins the tool with `tool == "x"` (unknown argument, type mismatch); clamp bounds
//! in the wrong order; empty step-up group or defer service.
//!
//! Warnings: a rule that can never match (`false`, `tool == "a" and tool == "b"`,
//! `kind == http and tool == "x"`, ...), and a rule shadowed by a stricter enforce-mode rule whose
//! condition is the same or weaker (it can never decide).

use crate::ast::{
    CmpOp, CountSubject, DecisionSpec, EffectDef, Expr, FieldRef, Item, Lit, ModSpec, PathSegment,
    Policy, RuleDef, SetRef, Span, Spanned, VType,
};
use crate::diag::{Diagnostic, suggest};
use crate::syntax::expr::{arg_path_text, field_name};
use std::collections::{HashMap, HashSet};

mod lint;
mod protocol;
mod schema;
mod types;

use types::{Ty, field_ty, lit_ty, ty_word, vt_to_ty};

pub(crate) use lint::pinned_tool;
use schema::{SchemaHit, schema_lookup, schema_path_text, schema_type};

/// Parse and check source text: the policy (when it parsed) and every diagnostic, errors first
/// in source order, then warnings.
pub fn parse_and_check(src: &str) -> (Option<Policy>, Vec<Diagnostic>) {
    match crate::syntax::parse(src) {
        Ok(p) => {
            let d = check(&p);
            (Some(p), d)
        }
        Err(d) => (None, d),
    }
}

/// Check a parsed policy. Errors and warnings, sorted by position.
pub fn check(p: &Policy) -> Vec<Diagnostic> {
    let mut c = Checker::new(p);
    c.run();
    let mut d = c.diags;
    d.sort_by_key(|d| (d.span.start, !d.is_error()));
    d
}

struct Checker<'p> {
    p: &'p Policy,
    diags: Vec<Diagnostic>,
    lists: HashMap<&'p str, &'p crate::ast::ListDef>,
    classes: HashMap<&'p str, usize>,
    schemas: HashMap<&'p str, &'p crate::ast::ToolSchemaDef>,
}

impl<'p> Checker<'p> {
    fn new(p: &'p Policy) -> Self {
        Checker {
            p,
            diags: Vec::new(),
            lists: HashMap::new(),
            classes: HashMap::new(),
            schemas: HashMap::new(),
        }
    }

    fn err(&mut self, span: Span, msg: String) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(span, msg));
        let last = self.diags.len().saturating_sub(1);
        &mut self.diags[last]
    }

    fn run(&mut self) {
        self.names();
        let p = self.p;
        if let Some(v) = &p.pack.mcp_protocol
            && bundle::protocol::list(v.node).is_none()
        {
            let known: Vec<String> = bundle::protocol::VERSIONS
                .iter()
                .map(|l| format!("`{}`", l.version))
                .collect();
            self.err(
                v.span,
                format!("there is no `mcp_protocol` list version `{}`", v.node),
            )
            .hint = Some(format!(
                "this policyc knows versions {}; omit `mcp_protocol` for the newest",
                known.join(", ")
            ));
        }
        self.decision(&p.pack.default);
        self.decision(&p.pack.unknown_session);
        for (pos, item) in p.items.iter().enumerate() {
            match item {
                Item::List(l) => {
                    let tys: HashSet<_> = l
                        .values
                        .iter()
                        .map(|v| std::mem::discriminant(&v.node))
                        .collect();
                    if tys.len() > 1 {
                        self.err(
                            l.name.span,
                            format!("list `{}` mixes strings, numbers and booleans", l.name.node),
                        );
                    }
                }
                Item::Class(c) => {
                    self.expr(&c.when, Scope::Class(pos, &c.name.node), None);
                }
                Item::Intent(i) => {
                    for c in &i.classes {
                        self.class_ref(c, None);
                    }
                    self.decision(&i.outside);
                }
                Item::ToolSchema(t) => self.tool_schema(t),
                Item::Rule(r) => self.rule(r),
            }
        }
        let warnings = lint::rule_warnings(self.p);
        self.diags.extend(warnings);
        self.diags.extend(protocol::undecided(self.p));
    }

    /// Duplicate definitions; builds the name tables.
    fn names(&mut self) {
        let p = self.p;
        let mut seen: HashMap<(&str, &str), Span> = HashMap::new();
        let mut dup = |this: &mut Self, kind: &'static str, name: &'p Spanned<String>| {
            if let Some(first) = seen.get(&(kind, name.node.as_str())) {
                let first = *first;
                this.err(
                    name.span,
                    format!("{kind} `{}` is defined twice", name.node),
                )
                .hint = Some(format!("the first definition is on line {}", first.line));
                false
            } else {
                seen.insert((kind, name.node.as_str()), name.span);
                true
            }
        };
        for (pos, item) in p.items.iter().enumerate() {
            match item {
                Item::List(l) => {
                    if dup(self, "list", &l.name) {
                        self.lists.insert(&l.name.node, l);
                    }
                }
                Item::Class(c) => {
                    if c.name.node == crate::protocol::CLASS_NAME {
                        self.err(
                            c.name.span,
                            format!(
                                "`{}` is a built-in class and cannot be defined",
                                c.name.node
                            ),
                        )
                        .hint = Some(
                            "it is MCP protocol traffic (see docs/policy-language.md); name this class differently"
                                .to_owned(),
                        );
                    } else if dup(self, "class", &c.name) {
                        self.classes.insert(&c.name.node, pos);
                    }
                }
                Item::Intent(i) => {
                    dup(self, "intent", &i.name);
                }
                Item::ToolSchema(t) => {
                    if dup(self, "tool schema", &t.tool) {
                        self.schemas.insert(&t.tool.node, t);
                    }
                }
                Item::Rule(r) => {
                    if dup(self, "rule", &r.name)
                        && (r.name.node == "default" || r.name.node == "none")
                    {
                        self.err(
                            r.name.span,
                            format!("`{}` is reserved and cannot name a rule", r.name.node),
                        );
                    }
                }
            }
        }
    }

    /// Argument declarations: each once, `coerce` only where a conversion exists, and members
    /// declared only inside an `object`.
    fn tool_schema(&mut self, t: &crate::ast::ToolSchemaDef) {
        let mut seen = HashSet::new();
        for a in &t.args {
            let text = schema_path_text(&a.path.node);
            if !seen.insert(&a.path.node) {
                self.err(a.path.span, format!("argument `{text}` is declared twice"));
            }
            if a.coerce && matches!(a.ty, VType::Array | VType::Object | VType::Null) {
                self.err(
                    a.path.span,
                    format!(
                        "`coerce` converts to a string, a number or a bool, and `{text}` is declared `{}`",
                        a.ty.name()
                    ),
                )
                .hint = Some(format!("remove `coerce` after `{}`", a.ty.name()));
            }
            let parent = t.args.iter().find(|p| {
                p.path.node.len() < a.path.node.len()
                    && a.path.node.starts_with(&p.path.node)
                    && p.ty != VType::Object
            });
            if let Some(p) = parent {
                self.err(
                    a.path.span,
                    format!(
                        "`{text}` is declared inside `{}`, which is declared `{}`",
                        schema_path_text(&p.path.node),
                        p.ty.name()
                    ),
                )
                .hint = Some("only an `object` has members to declare".to_owned());
            }
        }
    }

    fn class_ref(&mut self, c: &Spanned<String>, before: Option<(usize, &str)>) {
        if c.node == crate::protocol::CLASS_NAME {
            // Built in, and decided before every class of the pack.
            return;
        }
        match self.classes.get(c.node.as_str()) {
            None => {
                let names: Vec<&str> = self
                    .classes
                    .keys()
                    .copied()
                    .chain([crate::protocol::CLASS_NAME])
                    .collect();
                let d = self.err(c.span, format!("undefined class `{}`", c.node));
                if let Some(s) = suggest(&c.node, names) {
                    d.hint = Some(format!("did you mean `{s}`?"));
                }
            }
            Some(&def_pos) => {
                if let Some((pos, name)) = before
                    && def_pos >= pos
                {
                    let msg = if c.node == name {
                        format!("class `{name}` refers to itself")
                    } else {
                        format!(
                            "class `{name}` refers to class `{}`, which is defined after it",
                            c.node
                        )
                    };
                    self.err(c.span, msg).hint =
                        Some("a class can only refer to classes defined above it".to_owned());
                }
            }
        }
    }

    fn decision(&mut self, d: &DecisionSpec) {
        if let Some((g, _)) = &d.step_up
            && g.trim().is_empty()
        {
            self.err(d.span, "a step_up needs an approver group".to_owned());
        }
        if let Some((s, _)) = &d.defer
            && s.trim().is_empty()
        {
            self.err(d.span, "a defer needs a context service name".to_owned());
        }
        let mut injects = d
            .modifications
            .iter()
            .filter(|m| matches!(m.node, ModSpec::InjectCredential(_)));
        if let (Some(_), Some(second)) = (injects.next(), injects.next()) {
            self.err(
                second.span,
                "a modify injects at most one credential (one request carries one minted token)"
                    .to_owned(),
            );
        }
        for m in &d.modifications {
            match &m.node {
                ModSpec::Clamp(_, lo, hi) if lo > hi => {
                    self.err(
                        m.span,
                        format!("clamp bounds are reversed: {lo} is greater than {hi}"),
                    )
                    .hint = Some(format!("write `{hi}..{lo}`"));
                }
                ModSpec::StripHeader(h) | ModSpec::SetHeader(h, _) => self.header_name(h, m.span),
                ModSpec::InjectCredential(n) => self.credential_name(n, m.span),
                _ => {}
            }
        }
    }

    /// A credential name as the plugin configuration spells it (`credentials.definitions`):
    /// 1 to 64 of `a-z`, `0-9`, `_`, `-`.
    fn credential_name(&mut self, n: &str, span: Span) {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            self.err(
                span,
                format!(
                    "credential name `{n}` must be 1 to 64 characters of `a-z`, `0-9`, `_` and `-`"
                ),
            );
        }
    }

    fn header_name(&mut self, h: &str, span: Span) {
        if h != h.to_ascii_lowercase() {
            self.err(span, format!("header name `{h}` is not lowercase"))
                .hint = Some(format!(
                "header names are lowercased before evaluation: write `{}`",
                h.to_ascii_lowercase()
            ));
        }
        if h.is_empty() {
            self.err(span, "empty header name".to_owned());
        }
    }

    fn rule(&mut self, r: &'p RuleDef) {
        let pinned = pinned_tool(&r.when);
        let schema = pinned.and_then(|t| self.schemas.get(t).copied());
        self.expr(&r.when, Scope::Rule, schema);
        self.decision(&r.decision);
        if let Some(s) = schema {
            for m in &r.decision.modifications {
                match &m.node {
                    ModSpec::Redact(path) | ModSpec::Drop(path) => {
                        self.arg_against_schema(path, m.span, s, None, true);
                    }
                    ModSpec::Clamp(path, _, _) => {
                        self.arg_against_schema(path, m.span, s, Some(Ty::Num), true)
                    }
                    _ => {}
                }
            }
        }
        for e in &r.effects {
            if let EffectDef::RevokeClass(c) | EffectDef::RevokePrincipalClass(c) = &e.node {
                self.class_ref(
                    &Spanned {
                        node: c.clone(),
                        span: e.span,
                    },
                    None,
                );
            }
        }
    }

    fn set_literals(&self, s: &'p SetRef) -> Option<Vec<&'p Spanned<Lit>>> {
        match s {
            SetRef::Inline(v) => Some(v.iter().collect()),
            SetRef::Named(n) => self
                .lists
                .get(n.node.as_str())
                .map(|l| l.values.iter().collect()),
        }
    }

    fn set_ref(&mut self, s: &SetRef) {
        if let SetRef::Named(n) = s
            && !self.lists.contains_key(n.node.as_str())
        {
            let names: Vec<&str> = self.lists.keys().copied().collect();
            let d = self.err(n.span, format!("undefined list `{}`", n.node));
            d.hint = Some(match suggest(&n.node, names) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("define it with `let {} = [...]`", n.node),
            });
        }
    }

    fn expr(
        &mut self,
        e: &'p Expr,
        scope: Scope<'_>,
        schema: Option<&'p crate::ast::ToolSchemaDef>,
    ) {
        match e {
            Expr::Const(_) => {}
            Expr::And(a, b) | Expr::Or(a, b) => {
                self.expr(a, scope, schema);
                self.expr(b, scope, schema);
            }
            Expr::Not(a) => self.expr(a, scope, schema),
            Expr::Cmp(f, op, lit) => {
                self.field(f);
                let ft = self.field_type(f, schema);
                let lt = lit_ty(&lit.node);
                let name = field_name(&f.node);
                match ft {
                    Ty::StrSet => {
                        self.err(
                            f.span,
                            format!("`{name}` is a set of strings and cannot be compared"),
                        )
                        .hint = Some(format!("write `{name} contains \"...\"`"));
                    }
                    Ty::Any => {}
                    _ if ft != lt => {
                        self.err(
                            lit.span,
                            format!(
                                "`{name}` is {} but `{}` is {}",
                                ty_word(ft),
                                crate::fmt::literal(&lit.node),
                                ty_word(lt)
                            ),
                        );
                    }
                    Ty::Str | Ty::Bool if !matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                        self.err(
                            f.span,
                            format!(
                                "`{name}` is {} and can only be compared with `==` or `!=`",
                                ty_word(ft)
                            ),
                        )
                        .hint = (ft == Ty::Str)
                            .then(|| "use `glob`, `prefix` or `matches` for patterns".to_owned());
                    }
                    _ => {}
                }
                if ft == Ty::Any && lt != Ty::Num && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                    self.err(
                        lit.span,
                        format!(
                            "`{}` is {} and cannot be compared with `{}`",
                            crate::fmt::literal(&lit.node),
                            ty_word(lt),
                            op.name()
                        ),
                    );
                }
                if let Lit::Str(s) = &lit.node {
                    let allowed: Option<&[&str]> = match &f.node {
                        FieldRef::Kind => Some(&["mcp", "http"]),
                        FieldRef::PrincipalAuth(_) => {
                            Some(&["none", "mtls", "jwt", "header", "node"])
                        }
                        _ => None,
                    };
                    if let Some(allowed) = allowed
                        && !allowed.contains(&s.as_str())
                    {
                        self.err(lit.span, format!("`{name}` is never `{s}`")).hint =
                            Some(format!(
                                "it is one of {}",
                                allowed
                                    .iter()
                                    .map(|a| format!("`{a}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                    }
                }
                self.arg_use(f, schema, None, Some(*op));
            }
            Expr::In(f, s) => {
                self.field(f);
                self.set_ref(s);
                let ft = self.field_type(f, schema);
                if ft == Ty::StrSet {
                    self.err(
                        f.span,
                        format!(
                            "`{}` is a set of strings; test it with `contains`",
                            field_name(&f.node)
                        ),
                    );
                }
                if let Some(values) = self.set_literals(s)
                    && matches!(ft, Ty::Str | Ty::Num | Ty::Bool)
                {
                    for v in values {
                        let lt = lit_ty(&v.node);
                        if lt != ft {
                            self.err(
                                v.span,
                                format!(
                                    "`{}` is {} but `{}` in the list is {}",
                                    field_name(&f.node),
                                    ty_word(ft),
                                    crate::fmt::literal(&v.node),
                                    ty_word(lt)
                                ),
                            );
                        }
                    }
                }
                self.arg_use(f, schema, None, None);
            }
            Expr::Glob(f, s) | Expr::Prefix(f, s) => {
                let word = if matches!(e, Expr::Glob(..)) {
                    "glob"
                } else {
                    "prefix"
                };
                self.field(f);
                self.set_ref(s);
                self.string_only(f, word, schema);
                if let Some(values) = self.set_literals(s) {
                    for v in values {
                        if !matches!(v.node, Lit::Str(_)) {
                            self.err(
                                v.span,
                                format!(
                                    "`{word}` patterns are strings, found `{}`",
                                    crate::fmt::literal(&v.node)
                                ),
                            );
                        }
                    }
                }
                self.arg_use(f, schema, Some(Ty::Str), None); // scalar types checked above
            }
            Expr::Matches(f, re) => {
                self.field(f);
                self.string_only(f, "matches", schema);
                self.regex(re);
                self.arg_use(f, schema, Some(Ty::Str), None); // scalar types checked above
            }
            Expr::IsType(f, _) => {
                self.field(f);
                if !matches!(f.node, FieldRef::Arg(_)) {
                    self.err(
                        f.span,
                        format!(
                            "`is` tests the type of an argument; `{}` is always {}",
                            field_name(&f.node),
                            ty_word(field_ty(&f.node))
                        ),
                    );
                }
                self.arg_use(f, schema, None, None);
            }
            Expr::Present(f) => {
                self.field(f);
                self.arg_use(f, schema, None, None);
            }
            Expr::Len(f, _, n) => {
                self.field(f);
                if !matches!(f.node, FieldRef::Arg(_)) {
                    self.err(
                        f.span,
                        format!(
                            "`len` applies to arguments, not to `{}`",
                            field_name(&f.node)
                        ),
                    );
                }
                if *n < 0.0 || n.fract() != 0.0 {
                    self.err(
                        f.span,
                        format!("`len(...)` is compared with a whole number, found `{n}`"),
                    );
                }
                if let (FieldRef::Arg(path), Some(s)) = (&f.node, schema)
                    && let Some(t) = schema_type(s, path)
                    && !matches!(t, VType::String | VType::Array | VType::Object)
                {
                    self.err(
                        f.span,
                        format!(
                            "`len` needs a string, array or object, but `{}` is declared `{}`",
                            arg_path_text(path),
                            t.name()
                        ),
                    );
                }
                self.arg_use(f, schema, None, None);
            }
            Expr::Contains(f, _) => {
                self.field(f);
                if matches!(field_ty(&f.node), Ty::Num | Ty::Bool | Ty::Str) {
                    let d = self.err(
                        f.span,
                        format!(
                            "`contains` tests membership in a set or an array, and `{}` is {}",
                            field_name(&f.node),
                            ty_word(field_ty(&f.node))
                        ),
                    );
                    if field_ty(&f.node) == Ty::Str {
                        d.hint = Some("for a substring write `glob \"*text*\"`".to_owned());
                    }
                }
                if let (FieldRef::Arg(path), Some(s)) = (&f.node, schema)
                    && let Some(t) = schema_type(s, path)
                    && t != VType::Array
                {
                    self.err(
                        f.span,
                        format!(
                            "`contains` needs an array, but `{}` is declared `{}`",
                            arg_path_text(path),
                            t.name()
                        ),
                    )
                    .hint = (t == VType::String)
                        .then(|| "for a substring write `glob \"*text*\"`".to_owned());
                }
                self.arg_use(f, schema, None, None);
            }
            Expr::InClass(c) | Expr::Seen(c) => {
                let before = match scope {
                    Scope::Class(pos, name) if matches!(e, Expr::InClass(_)) => Some((pos, name)),
                    _ => None,
                };
                self.class_ref(c, before);
            }
            Expr::Count(s, _, _, _) => {
                if let CountSubject::Class(c) = &s.node {
                    self.class_ref(
                        &Spanned {
                            node: c.clone(),
                            span: s.span,
                        },
                        None,
                    );
                }
            }
            Expr::Tainted(_) | Expr::Used(_) | Expr::PrincipalTainted(_) | Expr::Quarantined => {}
            Expr::OutsideIntent => {
                if let Scope::Class(_, name) = scope {
                    self.err(Span::default(), format!("class `{name}` uses `intent.outside`, which depends on the classes themselves"));
                    // Point at the class name instead of nowhere.
                    if let Some(Item::Class(c)) = self
                        .p
                        .items
                        .iter()
                        .find(|i| matches!(i, Item::Class(c) if c.name.node == name))
                        && let Some(last) = self.diags.last_mut()
                    {
                        last.span = c.name.span;
                    }
                }
            }
        }
    }

    fn field(&mut self, f: &Spanned<FieldRef>) {
        if let FieldRef::Header(h) = &f.node {
            self.header_name(h, f.span);
        }
    }

    fn field_type(&self, f: &Spanned<FieldRef>, schema: Option<&crate::ast::ToolSchemaDef>) -> Ty {
        match (&f.node, schema) {
            (FieldRef::Arg(path), Some(s)) => {
                schema_type(s, path).and_then(vt_to_ty).unwrap_or(Ty::Any)
            }
            _ => field_ty(&f.node),
        }
    }

    fn string_only(
        &mut self,
        f: &Spanned<FieldRef>,
        word: &str,
        schema: Option<&crate::ast::ToolSchemaDef>,
    ) {
        let ft = self.field_type(f, schema);
        if !matches!(ft, Ty::Str | Ty::Any) {
            self.err(
                f.span,
                format!(
                    "`{word}` applies to strings, but `{}` is {}",
                    field_name(&f.node),
                    ty_word(ft)
                ),
            );
        }
    }

    /// Check an argument path used in a rule whose tool has a schema.
    fn arg_use(
        &mut self,
        f: &Spanned<FieldRef>,
        schema: Option<&crate::ast::ToolSchemaDef>,
        want: Option<Ty>,
        _op: Option<CmpOp>,
    ) {
        if let (FieldRef::Arg(path), Some(s)) = (&f.node, schema) {
            // Scalar mismatches were reported through `field_type`; only unknown arguments and
            // array/object/null mismatches are left to report here.
            self.arg_against_schema(path, f.span, s, want, false);
        }
    }

    fn arg_against_schema(
        &mut self,
        path: &[PathSegment],
        span: Span,
        s: &crate::ast::ToolSchemaDef,
        want: Option<Ty>,
        scalar: bool,
    ) {
        if path.is_empty() {
            return;
        }
        match schema_lookup(s, path) {
            SchemaHit::Unknown => {
                let declared: Vec<String> = s
                    .args
                    .iter()
                    .map(|a| schema_path_text(&a.path.node))
                    .collect();
                let d = self.err(
                    span,
                    format!(
                        "tool `{}` has no argument `{}`",
                        s.tool.node,
                        arg_path_text(path)
                    ),
                );
                d.hint = Some(
                    match suggest(&arg_path_text(path), declared.iter().map(String::as_str)) {
                        Some(x) => format!("did you mean `{x}`?"),
                        None => format!(
                            "its schema declares {}",
                            if declared.is_empty() {
                                "no arguments".to_owned()
                            } else {
                                declared
                                    .iter()
                                    .map(|d| format!("`{d}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ),
                    },
                );
            }
            SchemaHit::Exact(t) => {
                if let (Some(want), Some(have)) = (want, vt_to_ty(t)) {
                    if scalar && want != have {
                        self.err(
                            span,
                            format!(
                                "`{}` is declared `{}` for tool `{}`, but is used as {}",
                                arg_path_text(path),
                                t.name(),
                                s.tool.node,
                                ty_word(want)
                            ),
                        );
                    }
                } else if want.is_some() && matches!(t, VType::Array | VType::Object | VType::Null)
                {
                    self.err(
                        span,
                        format!(
                            "`{}` is declared `{}` for tool `{}`, but is used as {}",
                            arg_path_text(path),
                            t.name(),
                            s.tool.node,
                            ty_word(want.unwrap_or(Ty::Any))
                        ),
                    );
                }
            }
            SchemaHit::Inside => {}
        }
    }

    fn regex(&mut self, re: &Spanned<String>) {
        if let Err(e) = regex_syntax::Parser::new().parse(&re.node) {
            let msg = e.to_string();
            let detail = msg
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ")
                .to_owned();
            self.err(re.span, format!("invalid regex `{}`: {detail}", re.node));
            return;
        }
        if let Err(e) = crate::interp::compile_regex(&re.node) {
            self.err(
                re.span,
                format!(
                    "regex `{}` cannot be compiled to an automaton: {e}",
                    re.node
                ),
            )
            .hint = Some(
                "simplify it, or avoid Unicode word boundaries (`\\b`); use `(?-u:\\b)`".to_owned(),
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Scope<'a> {
    Class(usize, &'a str),
    Rule,
}
