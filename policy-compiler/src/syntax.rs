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
//!             | "unknown_session" decision
//!             | "mcp_protocol" integer
//!             | "intent_source" "header"
//!             | "session_key" "required" ;
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
//! tool_schema = "tool" string [ "coerce" ] "{" { arg_path ":" vtype [ "coerce" ] [","] } "}" ;
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
//!             | "inject" "credential" string
//!             | "remove_tools" string_list ;
//! effect      = "taint" string | "revoke" "tool" [ string ] [ "principal" ]
//!             | "revoke" "class" ident [ "principal" ]
//!             | "read_only" | "kill" | "quarantine" [ "read_only" ] ;
//!
//! expr        = or_expr ;
//! or_expr     = and_expr { "or" and_expr } ;
//! and_expr    = unary { "and" unary } ;
//! unary       = "not" unary | primary ;
//! primary     = "(" expr ")" | "true" | "false"
//!             | "class" ident                  (* `mcp_protocol` is built in *)
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
//! value       = literal | "mcp" | "http" | "none" | "mtls" | "jwt" | "header" | "node" ;
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

mod decision;
pub(crate) mod expr;
mod items;
pub(crate) mod lex;

use decision::decision;
use items::{class_def, intent_def, list_def, rule_def, tool_schema};

use crate::ast::{DecisionSpec, Item, Lit, Pack, Policy, Span, Spanned, VType};
use crate::diag::Diagnostic;
use bundle::verdict::{Decision, Mode};
use lex::{expected, ident, kw, must_kw, must_string, must_sym, number, sp, span, string, sym};
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
    expr::reset_nesting();
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
    let mut protocol: Option<Spanned<u16>> = None;
    let mut intent_header = None;
    let mut require_key = None;
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
                    mcp_protocol: protocol,
                    intent_header: intent_header.unwrap_or(false),
                    require_session_key: require_key.unwrap_or(false),
                    span: span(&start, &rest),
                },
            ));
        }
        let (rest, (field, fspan)) = match ident(i) {
            Ok(x) => x,
            Err(nom::Err::Error(_)) => {
                return Err(expected(
                    i,
                    "`version`, `mode`, `default`, `unknown_session`, `mcp_protocol`, \
                     `intent_source`, `session_key` or `}`",
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
            "mcp_protocol" => {
                dup(protocol.is_some());
                let (rest, (v, vspan)) = integer(
                    rest,
                    "the version of the `mcp_protocol` list (a whole number)",
                )?;
                let v = u16::try_from(v).unwrap_or_else(|_| {
                    soft(Diagnostic::error(
                        vspan,
                        format!("`mcp_protocol` version `{v}` is too large"),
                    ));
                    0
                });
                protocol = Some(Spanned {
                    node: v,
                    span: vspan,
                });
                rest
            }
            "intent_source" => {
                dup(intent_header.is_some());
                let (rest, _) = must_kw(
                    rest,
                    "header",
                    " after `intent_source` (task grants and JWT claims are always trusted)",
                )?;
                intent_header = Some(true);
                rest
            }
            "session_key" => {
                dup(require_key.is_some());
                let (rest, _) = must_kw(rest, "required", " after `session_key`")?;
                require_key = Some(true);
                rest
            }
            _ => {
                return Err(nom::Err::Failure(PErr {
                    span: fspan,
                    message: format!("unknown pack field `{field}`"),
                    hint: Some(
                        crate::diag::suggest(
                            &field,
                            [
                                "version",
                                "mode",
                                "default",
                                "unknown_session",
                                "mcp_protocol",
                                "intent_source",
                                "session_key",
                            ],
                        )
                        .map_or_else(
                            || {
                                "the pack header takes `version`, `mode`, `default`, \
                                 `unknown_session`, `mcp_protocol`, `intent_source` and \
                                 `session_key`"
                                    .to_owned()
                            },
                            |s| format!("did you mean `{s}`?"),
                        ),
                    ),
                }));
            }
        };
    }
}

pub(crate) fn implicit_deny(reason: &str) -> DecisionSpec {
    DecisionSpec {
        decision: Decision::Deny,
        reason: reason.to_owned(),
        modifications: Vec::new(),
        step_up: None,
        defer: None,
        span: Span::default(),
    }
}

pub(crate) fn mode_kw(i: In<'_>) -> R<'_, Mode> {
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

/// The span from `start` to the current position.
pub(crate) fn join(start: Span, end: &In<'_>) -> Span {
    Span {
        end: end.location_offset(),
        ..start
    }
}

/// Literals separated by commas up to `]` (the `[` is already consumed).
pub(crate) fn literal_items(mut i: In<'_>) -> R<'_, Vec<Spanned<Lit>>> {
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
pub(crate) fn string_list<'a>(i: In<'a>, what: &str) -> R<'a, Vec<Spanned<String>>> {
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
pub(crate) fn literal(i: In<'_>) -> R<'_, Spanned<Lit>> {
    if let Ok((rest, (s, sp_))) = string(i) {
        return Ok((
            rest,
            Spanned {
                node: Lit::Str(s),
                span: sp_,
            },
        ));
    }
    if let Ok((rest, s)) = kw("true")(i) {
        return Ok((
            rest,
            Spanned {
                node: Lit::Bool(true),
                span: s,
            },
        ));
    }
    if let Ok((rest, s)) = kw("false")(i) {
        return Ok((
            rest,
            Spanned {
                node: Lit::Bool(false),
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
            node: Lit::Num(value),
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

pub(crate) fn u32_of(v: u64, sp_: Span, what: &str) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| {
        soft(Diagnostic::error(
            sp_,
            format!("{what} `{v}` is too large (at most {})", u32::MAX),
        ));
        u32::MAX
    })
}

/// A value type name.
pub(crate) fn vtype(i: In<'_>) -> R<'_, VType> {
    for t in VType::ALL {
        if let Ok((r, _)) = kw(t.name())(i) {
            return Ok((r, *t));
        }
    }
    Err(expected(
        i,
        "a type (`string`, `number`, `bool`, `array`, `object` or `null`)",
    ))
}
