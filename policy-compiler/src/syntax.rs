//! The parser: policy source text -> [`ast::Policy`](crate::ast::Policy), with nom 8 and
//! nom_locate 5. After a keyword has committed to a construct, errors are fatal (`cut`), so they
//! point at the real problem ("expected `{` after the rule name") instead of backtracking to the
//! start of the item. Value errors that leave the syntax intact (an unknown field, an overflowing
//! size, a step-up timeout that is not whole seconds) are collected and parsing continues, so one
//! run reports all of them.
//!
//! The grammar (the same as `docs/policy-language.md`):
//!
//! ```ebnf
//! policy      = pack { item } ;
//! pack        = "pack" string "{" { pack_field } "}" ;
//! pack_field  = "version" string
//!             | "mode" mode
//!             | "default" decision
//!             | "unknown_session" decision ;
//! mode        = "audit" | "warn" | "enforce" ;
//! item        = list | class | intent | tool_schema | rule ;
//!
//! list        = "let" ident "=" "[" [ literal { "," literal } [ "," ] ] "]" ;
//! class       = "class" ident "risk" tier [ "readonly" ] "{" "when" expr "}" ;
//! tier        = "low" | "medium" | "high" | "critical" ;
//! intent      = "intent" ident "{" { intent_field } "}" ;
//! intent_field= "description" string
//!             | "allow" "class" "[" ident { "," ident } [","] "]"
//!             | "allow" "tool" string_list
//!             | "allow" "host" string_list
//!             | "allow" "data" string_list
//!             | "max" ( "actions" | "approvals" ) number
//!             | "max" "egress_bytes" size
//!             | "max" "duration" duration
//!             | "outside" decision ;
//! string_list = "[" [ string { "," string } [","] ] "]" ;
//! tool_schema = "tool" string "{" { arg_path ":" vtype [","] } "}" ;
//! rule        = "rule" ident [ "mode" mode ] "{" "when" expr decision [ "then" effect { "," effect } ] "}" ;
//!
//! decision    = "allow" string
//!             | "deny" string
//!             | "modify" string "{" modification { [";"] modification } [";"] "}"
//!             | "step_up" string "{" "group" string "timeout" duration "}"
//!             | "defer" string "{" "service" string "timeout" duration "}" ;
//! modification= "redact" arg_path | "drop" arg_path
//!             | "clamp" arg_path number ".." number
//!             | "redact_secrets"
//!             | "strip_header" string | "set_header" string string
//!             | "remove_tools" string_list ;
//! effect      = "taint" string | "revoke" "tool" [ string ] | "revoke" "class" ident
//!             | "read_only" | "kill" ;
//!
//! expr        = or_expr ;
//! or_expr     = and_expr { "or" and_expr } ;
//! and_expr    = unary { "and" unary } ;
//! unary       = "not" unary | primary ;
//! primary     = "(" expr ")" | "true" | "false"
//!             | "class" ident
//!             | "intent.outside"
//!             | "session.tainted" "(" string ")"
//!             | "session.used" "(" string ")"
//!             | "session.seen" "(" ident ")"
//!             | "session.count" "(" ( "tool" string | "class" ident ) "," "within" duration ")" cmp number
//!             | "len" "(" field ")" cmp number
//!             | field cmp value
//!             | field "in" set
//!             | field "glob" ( string | set )
//!             | field "prefix" ( string | set )
//!             | field "matches" string
//!             | field "is" vtype
//!             | field "present"
//!             | field "contains" string ;
//! set         = "[" [ literal { "," literal } [","] ] "]" | ident ;
//! cmp         = "==" | "!=" | "<" | "<=" | ">" | ">=" ;
//! value       = literal | "mcp" | "http" | "none" | "mtls" | "jwt" | "header" ;
//! vtype       = "string" | "number" | "bool" | "array" | "object" | "null" ;
//! field       = "kind" | "operation" | "tool" | "resource" | "prompt"
//!             | "target.host" | "target.port" | "target.path" | "target.query" | "target.scheme"
//!             | "target.server"
//!             | "identity." ( "agent" | "human" | "workload" ) [ "_auth" ]
//!             | "header." hname | "header" "[" string "]"
//!             | arg_path
//!             | "request.size" | "risk.secrets" | "risk.data_classes"
//!             | "session.id" | "trace.id" | "intent"
//!             | "session.actions" | "session.egress_bytes" | "session.approvals"
//!             | "session.elapsed" | "session.drift" ;
//! arg_path    = "args" { "." ident | "[" ( string | integer ) "]" } ;
//! literal     = string | number | size | duration | "true" | "false" ;
//! size        = integer ( "B" | "KB" | "KiB" | "MB" | "MiB" | "GB" | "GiB" ) ;
//! duration    = integer ( "ms" | "s" | "m" | "h" ) ;
//! string      = '"' { char | escape } '"' ;      (* escapes: \" \\ \n \t \u{HEX} *)
//! ident       = letter { letter | digit | "_" } ;
//! hname       = ( letter | digit | "-" | "_" ) { letter | digit | "-" | "_" } ;
//! comment     = "#" { any } newline | "//" { any } newline ;
//! ```

pub(crate) mod expr;
pub(crate) mod lex;

use crate::ast::{
    DecisionSpec, EffectSpec, IntentDef, IntentLimits, Item, ListDef, Literal, ModSpec, Pack,
    Policy, RuleDef, Span, Spanned, ToolSchemaDef, ValueType,
};
use crate::diag::Diagnostic;
use bundle::verdict::{Decision, Mode, RiskTier};
use lex::{
    expected, ident, kw, must_ident, must_kw, must_string, must_sym, number, sp, span, string, sym,
};
use nom::IResult;
use nom_locate::LocatedSpan;
use std::cell::RefCell;

pub(crate) type In<'a> = LocatedSpan<&'a str>;
pub(crate) type R<'a, T> = IResult<In<'a>, T, PErr>;

/// A parse error (recoverable inside `alt`, fatal once wrapped in `nom::Err::Failure`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PErr {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

impl PErr {
    pub(crate) fn at(i: &In<'_>, what: &str) -> Self {
        PErr {
            span: span(i, i),
            message: format!("expected {what}"),
            hint: None,
        }
    }
}

impl<'a> nom::error::ParseError<In<'a>> for PErr {
    fn from_error_kind(input: In<'a>, kind: nom::error::ErrorKind) -> Self {
        PErr::at(&input, kind.description())
    }
    fn append(_: In<'a>, _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

thread_local! {
    static SOFT: RefCell<Vec<Diagnostic>> = const { RefCell::new(Vec::new()) };
}

/// Record an error that does not stop parsing.
pub(crate) fn soft(d: Diagnostic) {
    SOFT.with(|s| s.borrow_mut().push(d));
}

/// A comment in the source (`# ...` or `// ...`), kept so the formatter can reprint it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    /// Byte offset of the `#` or `//`.
    pub offset: usize,
    /// The comment text, including its `#` or `//`, without the newline.
    pub text: String,
    /// Whether code precedes it on the same line (an end-of-line comment).
    pub trailing: bool,
}

/// Parse a policy file. On failure, every error found (at most one syntax error, which ends
/// parsing, after any value errors collected before it).
pub fn parse(src: &str) -> Result<Policy, Vec<Diagnostic>> {
    SOFT.with(|s| s.borrow_mut().clear());
    let result = policy(LocatedSpan::new(src));
    let mut diags = SOFT.with(|s| std::mem::take(&mut *s.borrow_mut()));
    match result {
        Ok((_, p)) if diags.is_empty() => Ok(p),
        Ok(_) => Err(diags),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            let mut d = Diagnostic::error(e.span, e.message);
            d.hint = e.hint;
            diags.push(d);
            Err(diags)
        }
        Err(nom::Err::Incomplete(_)) => {
            diags.push(Diagnostic::error(Span::default(), "unexpected end of file"));
            Err(diags)
        }
    }
}

/// Every comment in `src`, in order (strings are skipped, so a `#` inside a string is not one).
pub fn comments(src: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut line_has_code = false;
    let mut iter = src.char_indices().peekable();
    while let Some((pos, c)) = iter.next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                '\n' => {
                    in_string = false;
                    line_has_code = false;
                }
                _ => {}
            }
            continue;
        }
        let starts_comment = c == '#' || (c == '/' && iter.peek().is_some_and(|(_, n)| *n == '/'));
        if starts_comment {
            let rest = src.get(pos..).unwrap_or("");
            let len = rest.find('\n').unwrap_or(rest.len());
            out.push(Comment {
                offset: pos,
                text: rest.get(..len).unwrap_or("").trim_end().to_owned(),
                trailing: line_has_code,
            });
            while iter.peek().is_some_and(|(_, n)| *n != '\n') {
                iter.next();
            }
            continue;
        }
        match c {
            '\n' => line_has_code = false,
            '"' => {
                in_string = true;
                line_has_code = true;
            }
            c if c.is_whitespace() => {}
            _ => line_has_code = true,
        }
    }
    out
}

fn policy(i: In<'_>) -> R<'_, Policy> {
    let (i, pack) = pack(i)?;
    let mut items = Vec::new();
    let mut i = i;
    loop {
        let (rest, _) = sp(i)?;
        if rest.fragment().is_empty() {
            return Ok((rest, Policy { pack, items }));
        }
        let (rest, item) = item(rest)?;
        items.push(item);
        i = rest;
    }
}

fn pack(i: In<'_>) -> R<'_, Pack> {
    let (i, _) = sp(i)?;
    let start = i;
    let (i, _) = must_kw(
        i,
        "pack",
        " at the start of the file (`pack \"name\" { ... }`)",
    )?;
    let (i, (name, name_span)) = must_string(i, "the pack's name as a string")?;
    let (mut i, _) = must_sym(i, "{", " after the pack name")?;
    let mut version = None;
    let mut mode = None;
    let mut default = None;
    let mut unknown = None;
    loop {
        if let Ok((rest, _)) = sym("}")(i) {
            let version = version.unwrap_or_else(|| Spanned {
                node: String::new(),
                span: span(&rest, &rest),
            });
            let default = default.unwrap_or_else(|| implicit_deny("no rule allowed this action"));
            let unknown_session =
                unknown.unwrap_or_else(|| implicit_deny("the session state is missing"));
            return Ok((
                rest,
                Pack {
                    name: Spanned {
                        node: name,
                        span: name_span,
                    },
                    version,
                    mode: mode.unwrap_or_default(),
                    default,
                    unknown_session,
                    span: span(&start, &rest),
                },
            ));
        }
        let (rest, (field, fspan)) = match ident(i) {
            Ok(x) => x,
            Err(nom::Err::Error(_)) => {
                return Err(expected(
                    i,
                    "`version`, `mode`, `default`, `unknown_session` or `}`",
                ));
            }
            Err(e) => return Err(e),
        };
        let dup = |seen: bool| {
            if seen {
                soft(Diagnostic::error(
                    fspan,
                    format!("duplicate `{field}` in the pack header"),
                ));
            }
        };
        i = match field.as_str() {
            "version" => {
                dup(version.is_some());
                let (rest, (v, vspan)) = must_string(rest, "the version as a string")?;
                version = Some(Spanned {
                    node: v,
                    span: vspan,
                });
                rest
            }
            "mode" => {
                dup(mode.is_some());
                let (rest, m) = mode_kw(rest)?;
                mode = Some(m);
                rest
            }
            "default" => {
                dup(default.is_some());
                let (rest, d) = decision(rest)?;
                default = Some(d);
                rest
            }
            "unknown_session" => {
                dup(unknown.is_some());
                let (rest, d) = decision(rest)?;
                unknown = Some(d);
                rest
            }
            _ => {
                return Err(nom::Err::Failure(PErr {
                    span: fspan,
                    message: format!("unknown pack field `{field}`"),
                    hint: Some(
                        crate::diag::suggest(&field, ["version", "mode", "default", "unknown_session"])
                            .map_or_else(
                                || "the pack header takes `version`, `mode`, `default` and `unknown_session`".to_owned(),
                                |s| format!("did you mean `{s}`?"),
                            ),
                    ),
                }));
            }
        };
    }
}

fn implicit_deny(reason: &str) -> DecisionSpec {
    DecisionSpec {
        decision: Decision::Deny,
        reason: reason.to_owned(),
        modifications: Vec::new(),
        step_up: None,
        defer: None,
        span: Span::default(),
    }
}

fn mode_kw(i: In<'_>) -> R<'_, Mode> {
    if let Ok((r, _)) = kw("audit")(i) {
        return Ok((r, Mode::Audit));
    }
    if let Ok((r, _)) = kw("warn")(i) {
        return Ok((r, Mode::Warn));
    }
    if let Ok((r, _)) = kw("enforce")(i) {
        return Ok((r, Mode::Enforce));
    }
    Err(expected(i, "a mode (`audit`, `warn` or `enforce`)"))
}

fn item(i: In<'_>) -> R<'_, Item> {
    if let Ok((rest, s)) = kw("let")(i) {
        return list_def(rest, s).map(|(r, l)| (r, Item::List(l)));
    }
    if let Ok((rest, s)) = kw("class")(i) {
        return class_def(rest, s).map(|(r, c)| (r, Item::Class(c)));
    }
    if let Ok((rest, s)) = kw("intent")(i) {
        return intent_def(rest, s).map(|(r, c)| (r, Item::Intent(c)));
    }
    if let Ok((rest, s)) = kw("tool")(i) {
        return tool_schema(rest, s).map(|(r, c)| (r, Item::ToolSchema(c)));
    }
    if let Ok((rest, s)) = kw("rule")(i) {
        return rule_def(rest, s).map(|(r, c)| (r, Item::Rule(c)));
    }
    if let Ok((_, s)) = kw("pack")(i) {
        return Err(nom::Err::Failure(PErr {
            span: s,
            message: "a file holds one pack: a second `pack` header is not allowed".to_owned(),
            hint: None,
        }));
    }
    Err(expected(i, "`let`, `class`, `intent`, `tool` or `rule`"))
}

fn list_def(i: In<'_>, start: Span) -> R<'_, ListDef> {
    let (i, (name, nspan)) = must_ident(i, "the list's name after `let`")?;
    let (i, _) = must_sym(i, "=", " after the list name")?;
    let (i, _) = must_sym(i, "[", " to start the list")?;
    let (i, values) = literal_items(i)?;
    Ok((
        i,
        ListDef {
            name: Spanned {
                node: name,
                span: nspan,
            },
            values,
            span: join(start, &i),
        },
    ))
}

/// The span from `start` to the current position.
pub(crate) fn join(start: Span, end: &In<'_>) -> Span {
    Span {
        end: end.location_offset(),
        ..start
    }
}

/// Literals separated by commas up to `]` (the `[` is already consumed).
pub(crate) fn literal_items(mut i: In<'_>) -> R<'_, Vec<Spanned<Literal>>> {
    let mut out = Vec::new();
    loop {
        if let Ok((rest, _)) = sym("]")(i) {
            return Ok((rest, out));
        }
        let (rest, lit) = match literal(i) {
            Ok(x) => x,
            Err(nom::Err::Error(_)) => return Err(expected(i, "a string, number or `]`")),
            Err(e) => return Err(e),
        };
        out.push(lit);
        i = rest;
        if let Ok((rest, _)) = sym(",")(i) {
            i = rest;
        } else if sym("]")(i).is_err() {
            return Err(expected(i, "`,` or `]`"));
        }
    }
}

/// Strings separated by commas, in brackets.
fn string_list<'a>(i: In<'a>, what: &str) -> R<'a, Vec<Spanned<String>>> {
    let (mut i, _) = must_sym(i, "[", &format!(" to start the list of {what}"))?;
    let mut out = Vec::new();
    loop {
        if let Ok((rest, _)) = sym("]")(i) {
            return Ok((rest, out));
        }
        let (rest, (s, sspan)) = must_string(i, "a string or `]`")?;
        out.push(Spanned {
            node: s,
            span: sspan,
        });
        i = rest;
        if let Ok((rest, _)) = sym(",")(i) {
            i = rest;
        } else if sym("]")(i).is_err() {
            return Err(expected(i, "`,` or `]`"));
        }
    }
}

/// A literal: string, number (sizes and durations become bytes and milliseconds), true, false.
/// Recoverable when none starts here.
pub(crate) fn literal(i: In<'_>) -> R<'_, Spanned<Literal>> {
    if let Ok((rest, (s, sp_))) = string(i) {
        return Ok((
            rest,
            Spanned {
                node: Literal::Str(s),
                span: sp_,
            },
        ));
    }
    if let Ok((rest, s)) = kw("true")(i) {
        return Ok((
            rest,
            Spanned {
                node: Literal::Bool(true),
                span: s,
            },
        ));
    }
    if let Ok((rest, s)) = kw("false")(i) {
        return Ok((
            rest,
            Spanned {
                node: Literal::Bool(false),
                span: s,
            },
        ));
    }
    // Propagate fatal string errors (unterminated, bad escape).
    if let Err(e @ nom::Err::Failure(_)) = string(i) {
        return Err(e);
    }
    let (rest, n) = number(i)?;
    let value = match n.unit {
        None => n.value,
        Some(u) => {
            let mult = lex::size_multiplier(u)
                .or_else(|| lex::duration_multiplier(u))
                .unwrap_or(1);
            match n.int.and_then(|v| v.checked_mul(mult)) {
                Some(v) => v as f64,
                None => {
                    soft(Diagnostic::error(
                        n.span,
                        format!(
                            "`{}` is not a whole number of `{u}` or is too large",
                            n.text
                        ),
                    ));
                    0.0
                }
            }
        }
    };
    Ok((
        rest,
        Spanned {
            node: Literal::Num(value),
            span: n.span,
        },
    ))
}

/// A duration (`500ms`, `30s`, `15m`, `2h`) in milliseconds.
pub(crate) fn duration<'a>(i: In<'a>, what: &str) -> R<'a, (u64, Span)> {
    let (rest, n) = match number(i) {
        Ok(x) => x,
        Err(nom::Err::Error(_)) => {
            return Err(expected(i, &format!("{what} (a duration like `30s`)")));
        }
        Err(e) => return Err(e),
    };
    let Some(mult) = n.unit.and_then(lex::duration_multiplier) else {
        return Err(nom::Err::Failure(PErr {
            span: n.span,
            message: format!("expected a duration, found `{}`", n.text),
            hint: Some("write a unit: `500ms`, `30s`, `15m` or `2h`".to_owned()),
        }));
    };
    match n.int.and_then(|v| v.checked_mul(mult)) {
        Some(v) => Ok((rest, (v, n.span))),
        None => {
            soft(Diagnostic::error(
                n.span,
                format!(
                    "duration `{}` must be a whole number and is too large or negative otherwise",
                    n.text
                ),
            ));
            Ok((rest, (0, n.span)))
        }
    }
}

/// A plain non-negative integer.
pub(crate) fn integer<'a>(i: In<'a>, what: &str) -> R<'a, (u64, Span)> {
    let (rest, n) = match number(i) {
        Ok(x) => x,
        Err(nom::Err::Error(_)) => return Err(expected(i, what)),
        Err(e) => return Err(e),
    };
    match (n.int, n.unit) {
        (Some(v), None) => Ok((rest, (v, n.span))),
        _ => Err(nom::Err::Failure(PErr {
            span: n.span,
            message: format!("expected {what}, found `{}`", n.text),
            hint: None,
        })),
    }
}

fn u32_of(v: u64, sp_: Span, what: &str) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| {
        soft(Diagnostic::error(
            sp_,
            format!("{what} `{v}` is too large (at most {})", u32::MAX),
        ));
        u32::MAX
    })
}

fn class_def(i: In<'_>, start: Span) -> R<'_, crate::ast::ClassDef> {
    let (i, (name, nspan)) = must_ident(i, "the class name after `class`")?;
    let (i, _) = must_kw(
        i,
        "risk",
        " after the class name (`class NAME risk low { ... }`)",
    )?;
    let (i, risk) = tier(i)?;
    let (i, readonly) = match kw("readonly")(i) {
        Ok((r, _)) => (r, true),
        Err(_) => (i, false),
    };
    let (i, _) = must_sym(i, "{", " to start the class body")?;
    let (i, _) = must_kw(i, "when", " in the class body")?;
    let (i, when) = expr::expr(i)?;
    let (i, _) = must_sym(i, "}", " to end the class")?;
    Ok((
        i,
        crate::ast::ClassDef {
            name: Spanned {
                node: name,
                span: nspan,
            },
            risk,
            readonly,
            when,
            span: join(start, &i),
        },
    ))
}

fn tier(i: In<'_>) -> R<'_, RiskTier> {
    for (w, t) in [
        ("low", RiskTier::Low),
        ("medium", RiskTier::Medium),
        ("high", RiskTier::High),
        ("critical", RiskTier::Critical),
    ] {
        if let Ok((r, _)) = kw(w)(i) {
            return Ok((r, t));
        }
    }
    Err(expected(
        i,
        "a risk tier (`low`, `medium`, `high` or `critical`)",
    ))
}

fn intent_def(i: In<'_>, start: Span) -> R<'_, IntentDef> {
    let (i, (name, nspan)) = must_ident(i, "the intent name after `intent`")?;
    let (mut i, _) = must_sym(i, "{", " to start the intent body")?;
    let mut def = IntentDef {
        name: Spanned {
            node: name,
            span: nspan,
        },
        description: None,
        classes: Vec::new(),
        tools: Vec::new(),
        hosts: Vec::new(),
        data_scopes: Vec::new(),
        limits: IntentLimits::default(),
        outside: implicit_deny("outside the declared intent"),
        span: start,
    };
    let mut outside_seen = false;
    loop {
        if let Ok((rest, _)) = sym("}")(i) {
            def.span = join(start, &rest);
            return Ok((rest, def));
        }
        if let Ok((rest, _)) = kw("description")(i) {
            let (rest, (d, dspan)) = must_string(rest, "the description as a string")?;
            def.description = Some(Spanned {
                node: d,
                span: dspan,
            });
            i = rest;
        } else if let Ok((rest, _)) = kw("allow")(i) {
            if let Ok((rest, _)) = kw("class")(rest) {
                let (mut r, _) = must_sym(rest, "[", " to start the list of classes")?;
                loop {
                    if let Ok((rest, _)) = sym("]")(r) {
                        r = rest;
                        break;
                    }
                    let (rest, (c, cspan)) = must_ident(r, "a class name or `]`")?;
                    def.classes.push(Spanned {
                        node: c,
                        span: cspan,
                    });
                    r = rest;
                    if let Ok((rest, _)) = sym(",")(r) {
                        r = rest;
                    } else if sym("]")(r).is_err() {
                        return Err(expected(r, "`,` or `]`"));
                    }
                }
                i = r;
            } else if let Ok((rest, _)) = kw("tool")(rest) {
                let (rest, l) = string_list(rest, "tool globs")?;
                def.tools.extend(l);
                i = rest;
            } else if let Ok((rest, _)) = kw("host")(rest) {
                let (rest, l) = string_list(rest, "host globs")?;
                def.hosts.extend(l);
                i = rest;
            } else if let Ok((rest, _)) = kw("data")(rest) {
                let (rest, l) = string_list(rest, "data classes")?;
                def.data_scopes.extend(l);
                i = rest;
            } else {
                return Err(expected(
                    rest,
                    "`class`, `tool`, `host` or `data` after `allow`",
                ));
            }
        } else if let Ok((rest, _)) = kw("max")(i) {
            if let Ok((rest, _)) = kw("actions")(rest) {
                let (rest, (n, nsp)) = integer(rest, "a whole number of actions")?;
                def.limits.max_actions = Some(u32_of(n, nsp, "max actions"));
                i = rest;
            } else if let Ok((rest, _)) = kw("approvals")(rest) {
                let (rest, (n, nsp)) = integer(rest, "a whole number of approvals")?;
                def.limits.max_approvals = Some(u32_of(n, nsp, "max approvals"));
                i = rest;
            } else if let Ok((rest, _)) = kw("egress_bytes")(rest) {
                let (rest, n) = match number(rest) {
                    Ok(x) => x,
                    Err(nom::Err::Error(_)) => return Err(expected(rest, "a size like `10MB`")),
                    Err(e) => return Err(e),
                };
                let Some(mult) = n.unit.and_then(lex::size_multiplier) else {
                    return Err(nom::Err::Failure(PErr {
                        span: n.span,
                        message: format!("expected a size, found `{}`", n.text),
                        hint: Some("write a unit: `512B`, `64KiB`, `10MB`, `1GiB`, ...".to_owned()),
                    }));
                };
                let bytes = n.int.and_then(|v| v.checked_mul(mult)).unwrap_or_else(|| {
                    soft(Diagnostic::error(
                        n.span,
                        format!("size `{}` is not a whole number or is too large", n.text),
                    ));
                    0
                });
                def.limits.max_egress_bytes = Some(bytes);
                i = rest;
            } else if let Ok((rest, _)) = kw("duration")(rest) {
                let (rest, (ms, _)) = duration(rest, "the maximum duration")?;
                def.limits.max_duration_ms = Some(ms);
                i = rest;
            } else {
                return Err(expected(
                    rest,
                    "`actions`, `approvals`, `egress_bytes` or `duration` after `max`",
                ));
            }
        } else if let Ok((rest, ospan)) = kw("outside")(i) {
            if outside_seen {
                soft(Diagnostic::error(
                    ospan,
                    "duplicate `outside` in the intent",
                ));
            }
            outside_seen = true;
            let (rest, d) = decision(rest)?;
            def.outside = d;
            i = rest;
        } else {
            return Err(expected(
                i,
                "`description`, `allow`, `max`, `outside` or `}` in the intent",
            ));
        }
    }
}

fn tool_schema(i: In<'_>, start: Span) -> R<'_, ToolSchemaDef> {
    let (i, (tool, tspan)) = must_string(i, "the tool name as a string after `tool`")?;
    let (mut i, _) = must_sym(i, "{", " to start the tool's argument schema")?;
    let mut args = Vec::new();
    loop {
        if let Ok((rest, _)) = sym("}")(i) {
            return Ok((
                rest,
                ToolSchemaDef {
                    tool: Spanned {
                        node: tool,
                        span: tspan,
                    },
                    args,
                    span: join(start, &rest),
                },
            ));
        }
        let (rest, (path, pspan)) = expr::arg_path_required(i)?;
        let (rest, _) = must_sym(rest, ":", " after the argument path")?;
        let (rest, t) = vtype(rest)?;
        let key_path = path
            .into_iter()
            .map(|s| match s {
                crate::ast::PathStep::Key(k) => k,
                crate::ast::PathStep::Index(n) => n.to_string(),
            })
            .collect();
        args.push((
            Spanned {
                node: key_path,
                span: pspan,
            },
            t,
        ));
        i = rest;
        if let Ok((rest, _)) = sym(",")(i) {
            i = rest;
        }
    }
}

/// A value type name.
pub(crate) fn vtype(i: In<'_>) -> R<'_, ValueType> {
    for (w, t) in [
        ("string", ValueType::String),
        ("number", ValueType::Number),
        ("bool", ValueType::Bool),
        ("array", ValueType::Array),
        ("object", ValueType::Object),
        ("null", ValueType::Null),
    ] {
        if let Ok((r, _)) = kw(w)(i) {
            return Ok((r, t));
        }
    }
    Err(expected(
        i,
        "a type (`string`, `number`, `bool`, `array`, `object` or `null`)",
    ))
}

fn rule_def(i: In<'_>, start: Span) -> R<'_, RuleDef> {
    let (i, (name, nspan)) = must_ident(i, "the rule name after `rule`")?;
    let (i, mode) = match kw("mode")(i) {
        Ok((rest, _)) => {
            let (rest, m) = mode_kw(rest)?;
            (rest, Some(m))
        }
        Err(_) => (i, None),
    };
    let (i, _) = must_sym(i, "{", " after the rule name")?;
    let (i, _) = must_kw(i, "when", " at the start of the rule body")?;
    let (i, when) = expr::expr(i)?;
    let (i, decision) = match decision(i) {
        Ok(x) => x,
        Err(nom::Err::Failure(e)) if e.message.starts_with("expected a decision") => {
            return Err(expected(
                i,
                "`and`, `or` or a decision (`allow`, `deny`, `modify`, `step_up`, `defer`)",
            ));
        }
        Err(e) => return Err(e),
    };
    let mut effects = Vec::new();
    let mut i = i;
    if let Ok((rest, _)) = kw("then")(i) {
        i = rest;
        loop {
            let (rest, e) = effect(i)?;
            effects.push(e);
            i = rest;
            match sym(",")(i) {
                Ok((rest, _)) => i = rest,
                Err(_) => break,
            }
        }
    }
    let (i, _) = must_sym(i, "}", " to end the rule")?;
    Ok((
        i,
        RuleDef {
            name: Spanned {
                node: name,
                span: nspan,
            },
            mode,
            when,
            decision,
            effects,
            span: join(start, &i),
        },
    ))
}

fn effect(i: In<'_>) -> R<'_, Spanned<EffectSpec>> {
    let (i, _) = sp(i)?;
    let start = i;
    let (rest, e) = if let Ok((rest, _)) = kw("taint")(i) {
        let (rest, (t, _)) = must_string(rest, "the taint name as a string")?;
        (rest, EffectSpec::Taint(t))
    } else if let Ok((rest, _)) = kw("revoke")(i) {
        if let Ok((rest, _)) = kw("tool")(rest) {
            match string(rest) {
                Ok((rest, (t, _))) => (rest, EffectSpec::RevokeTool(Some(t))),
                Err(nom::Err::Error(_)) => (rest, EffectSpec::RevokeTool(None)),
                Err(e) => return Err(e),
            }
        } else if let Ok((rest, _)) = kw("class")(rest) {
            let (rest, (c, _)) = must_ident(rest, "a class name after `revoke class`")?;
            (rest, EffectSpec::RevokeClass(c))
        } else {
            return Err(expected(rest, "`tool` or `class` after `revoke`"));
        }
    } else if let Ok((rest, _)) = kw("read_only")(i) {
        (rest, EffectSpec::ReadOnly)
    } else if let Ok((rest, _)) = kw("kill")(i) {
        (rest, EffectSpec::Kill)
    } else {
        return Err(expected(
            i,
            "an effect (`taint`, `revoke tool`, `revoke class`, `read_only` or `kill`)",
        ));
    };
    Ok((
        rest,
        Spanned {
            node: e,
            span: span(&start, &rest),
        },
    ))
}

/// A decision with its reason and parameters.
pub(crate) fn decision(i: In<'_>) -> R<'_, DecisionSpec> {
    let (i, _) = sp(i)?;
    let start = i;
    let words = [
        ("allow", Decision::Allow),
        ("deny", Decision::Deny),
        ("modify", Decision::Modify),
        ("step_up", Decision::StepUp),
        ("defer", Decision::Defer),
    ];
    let Some((rest, d)) = words
        .iter()
        .find_map(|(w, d)| kw(w)(i).ok().map(|(r, _)| (r, *d)))
    else {
        return Err(expected(
            i,
            "a decision (`allow`, `deny`, `modify`, `step_up` or `defer`)",
        ));
    };
    let (rest, (reason, _)) = must_string(rest, "the decision's reason as a string")?;
    let mut spec = DecisionSpec {
        decision: d,
        reason,
        modifications: Vec::new(),
        step_up: None,
        defer: None,
        span: start_span(&start),
    };
    let rest = match d {
        Decision::Allow | Decision::Deny => rest,
        Decision::Modify => {
            let (mut r, _) = must_sym(rest, "{", " to list the modifications")?;
            loop {
                if let Ok((rr, close)) = sym("}")(r) {
                    if spec.modifications.is_empty() {
                        soft(Diagnostic::error(
                            close,
                            "a `modify` decision needs at least one modification",
                        ));
                    }
                    r = rr;
                    break;
                }
                let (rr, m) = modification(r)?;
                spec.modifications.push(m);
                r = rr;
                if let Ok((rr, _)) = sym(";")(r) {
                    r = rr;
                }
            }
            r
        }
        Decision::StepUp => {
            let (r, _) = must_sym(
                rest,
                "{",
                " (`step_up \"reason\" { group \"g\" timeout 15m }`)",
            )?;
            let (r, _) = must_kw(r, "group", " in the step_up parameters")?;
            let (r, (group, _)) = must_string(r, "the approver group as a string")?;
            let (r, _) = must_kw(r, "timeout", " after the approver group")?;
            let (r, (ms, tspan)) = duration(r, "the approval timeout")?;
            let (r, _) = must_sym(r, "}", " to end the step_up parameters")?;
            if ms == 0 || ms % 1000 != 0 {
                soft(
                    Diagnostic::error(
                        tspan,
                        "a step_up timeout must be a positive whole number of seconds",
                    )
                    .with_hint("write e.g. `timeout 90s` or `timeout 15m`"),
                );
            }
            spec.step_up = Some((group, u32_of(ms / 1000, tspan, "step_up timeout")));
            r
        }
        Decision::Defer => {
            let (r, _) = must_sym(
                rest,
                "{",
                " (`defer \"reason\" { service \"s\" timeout 500ms }`)",
            )?;
            let (r, _) = must_kw(r, "service", " in the defer parameters")?;
            let (r, (service, _)) = must_string(r, "the context service name as a string")?;
            let (r, _) = must_kw(r, "timeout", " after the context service")?;
            let (r, (ms, tspan)) = duration(r, "the defer timeout")?;
            let (r, _) = must_sym(r, "}", " to end the defer parameters")?;
            if ms == 0 {
                soft(Diagnostic::error(tspan, "a defer timeout must be positive"));
            }
            spec.defer = Some((service, u32_of(ms, tspan, "defer timeout")));
            r
        }
    };
    spec.span = join(spec.span, &rest);
    Ok((rest, spec))
}

fn start_span(i: &In<'_>) -> Span {
    span(i, i)
}

fn modification(i: In<'_>) -> R<'_, Spanned<ModSpec>> {
    let (i, _) = sp(i)?;
    let start = i;
    let (rest, m) = if let Ok((rest, _)) = kw("redact_secrets")(i) {
        (rest, ModSpec::RedactSecrets)
    } else if let Ok((rest, _)) = kw("redact")(i) {
        let (rest, (p, _)) = expr::arg_path_required(rest)?;
        (rest, ModSpec::Redact(p))
    } else if let Ok((rest, _)) = kw("drop")(i) {
        let (rest, (p, _)) = expr::arg_path_required(rest)?;
        (rest, ModSpec::Drop(p))
    } else if let Ok((rest, _)) = kw("clamp")(i) {
        let (rest, (p, _)) = expr::arg_path_required(rest)?;
        let (rest, lo) = match number(rest) {
            Ok(x) => x,
            Err(nom::Err::Error(_)) => {
                return Err(expected(rest, "the lower bound (`clamp args.x 1..100`)"));
            }
            Err(e) => return Err(e),
        };
        let (rest, _) = must_sym(rest, "..", " between the bounds (`1..100`)")?;
        let (rest, hi) = match number(rest) {
            Ok(x) => x,
            Err(nom::Err::Error(_)) => return Err(expected(rest, "the upper bound")),
            Err(e) => return Err(e),
        };
        for n in [&lo, &hi] {
            if n.unit.is_some() {
                soft(Diagnostic::error(
                    n.span,
                    format!("clamp bounds are plain numbers, found `{}`", n.text),
                ));
            }
        }
        (rest, ModSpec::Clamp(p, lo.value, hi.value))
    } else if let Ok((rest, _)) = kw("strip_header")(i) {
        let (rest, (h, _)) = must_string(rest, "the header name as a string")?;
        (rest, ModSpec::StripHeader(h))
    } else if let Ok((rest, _)) = kw("set_header")(i) {
        let (rest, (h, _)) = must_string(rest, "the header name as a string")?;
        let (rest, (v, _)) = must_string(rest, "the header value as a string")?;
        (rest, ModSpec::SetHeader(h, v))
    } else if let Ok((rest, _)) = kw("remove_tools")(i) {
        let (rest, l) = string_list(rest, "tool globs")?;
        (
            rest,
            ModSpec::RemoveTools(l.into_iter().map(|s| s.node).collect()),
        )
    } else {
        return Err(expected(
            i,
            "a modification (`redact`, `drop`, `clamp`, `redact_secrets`, `strip_header`, `set_header`, `remove_tools`) or `}`",
        ));
    };
    Ok((
        rest,
        Spanned {
            node: m,
            span: span(&start, &rest),
        },
    ))
}
