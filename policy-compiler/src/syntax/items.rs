//! Items: `let` lists, classes, intents, tool schemas and rules.

use super::lex::{
    self as lex, expected, kw, must_ident, must_kw, must_string, must_sym, number, sp, span,
    string, sym,
};
use super::{
    In, PErr, R, decision, duration, expr, implicit_deny, integer, join, literal_items, mode_kw,
    soft, string_list, u32_of, vtype,
};
use crate::ast::{
    ArgDecl, EffectDef, IntentDef, IntentLimits, ListDef, RuleDef, Span, Spanned, ToolSchemaDef,
};
use crate::diag::Diagnostic;
use bundle::session::Quarantine;
use bundle::verdict::RiskTier;

pub(super) fn list_def(i: In<'_>, start: Span) -> R<'_, ListDef> {
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

pub(super) fn class_def(i: In<'_>, start: Span) -> R<'_, crate::ast::ClassDef> {
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

pub(super) fn tier(i: In<'_>) -> R<'_, RiskTier> {
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

pub(super) fn intent_def(i: In<'_>, start: Span) -> R<'_, IntentDef> {
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

pub(super) fn tool_schema(i: In<'_>, start: Span) -> R<'_, ToolSchemaDef> {
    let (i, (tool, tspan)) = must_string(i, "the tool name as a string after `tool`")?;
    let (i, coerce) = match kw("coerce")(i) {
        Ok((rest, _)) => (rest, true),
        Err(_) => (i, false),
    };
    let (mut i, _) = must_sym(
        i,
        "{",
        " to start the tool's argument schema (or `coerce` before it)",
    )?;
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
                    coerce,
                    args,
                    span: join(start, &rest),
                },
            ));
        }
        let (rest, (path, pspan)) = expr::arg_path_required(i)?;
        let (rest, _) = must_sym(rest, ":", " after the argument path")?;
        let (rest, t) = vtype(rest)?;
        let (rest, arg_coerce) = match kw("coerce")(rest) {
            Ok((rest, _)) => (rest, true),
            Err(_) => (rest, false),
        };
        // Declarations name object members; the VM checks them on every call, and an index
        // would be read as a member name.
        if path
            .iter()
            .any(|s| matches!(s, crate::ast::PathSegment::Index(_)))
        {
            soft(
                Diagnostic::error(
                    pspan,
                    format!(
                        "`{}` indexes an array: a tool schema declares object members",
                        expr::arg_path_text(&path)
                    ),
                )
                .with_hint("declare the array itself, e.g. `args.items: array`"),
            );
        }
        let key_path = path
            .into_iter()
            .map(|s| match s {
                crate::ast::PathSegment::Key(k) => k,
                crate::ast::PathSegment::Index(n) => n.to_string(),
            })
            .collect();
        args.push(ArgDecl {
            path: Spanned {
                node: key_path,
                span: pspan,
            },
            ty: t,
            coerce: arg_coerce,
        });
        i = rest;
        if let Ok((rest, _)) = sym(",")(i) {
            i = rest;
        }
    }
}

pub(super) fn rule_def(i: In<'_>, start: Span) -> R<'_, RuleDef> {
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

pub(super) fn effect(i: In<'_>) -> R<'_, Spanned<EffectDef>> {
    let (i, _) = sp(i)?;
    let start = i;
    let (rest, e) = if let Ok((rest, _)) = kw("taint")(i) {
        let (rest, (t, _)) = must_string(rest, "the taint name as a string")?;
        (rest, EffectDef::Taint(t))
    } else if let Ok((rest, _)) = kw("revoke")(i) {
        if let Ok((rest, _)) = kw("tool")(rest) {
            let (rest, tool) = match string(rest) {
                Ok((rest, (t, _))) => (rest, Some(t)),
                Err(nom::Err::Error(_)) => (rest, None),
                Err(e) => return Err(e),
            };
            match kw("principal")(rest) {
                Ok((rest, _)) => (rest, EffectDef::RevokePrincipalTool(tool)),
                Err(_) => (rest, EffectDef::RevokeTool(tool)),
            }
        } else if let Ok((rest, _)) = kw("class")(rest) {
            let (rest, (c, _)) = must_ident(rest, "a class name after `revoke class`")?;
            match kw("principal")(rest) {
                Ok((rest, _)) => (rest, EffectDef::RevokePrincipalClass(c)),
                Err(_) => (rest, EffectDef::RevokeClass(c)),
            }
        } else {
            return Err(expected(rest, "`tool` or `class` after `revoke`"));
        }
    } else if let Ok((rest, _)) = kw("read_only")(i) {
        (rest, EffectDef::ReadOnly)
    } else if let Ok((rest, _)) = kw("kill")(i) {
        (rest, EffectDef::Kill)
    } else if let Ok((rest, _)) = kw("quarantine")(i) {
        match kw("read_only")(rest) {
            Ok((rest, _)) => (rest, EffectDef::Quarantine(Quarantine::ReadOnly)),
            Err(_) => (rest, EffectDef::Quarantine(Quarantine::Full)),
        }
    } else {
        return Err(expected(
            i,
            "an effect (`taint`, `revoke tool`, `revoke class`, `read_only`, `kill` or \
             `quarantine`)",
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
