//! Decisions (`allow`, `deny`, `modify {..}`, `step_up {..}`, `defer {..}`) and modifications.

use super::lex::{expected, kw, must_kw, must_string, must_sym, number, sp, span, sym};
use super::{In, R, duration, expr, join, soft, string_list, u32_of};
use crate::ast::{DecisionSpec, ModSpec, Span, Spanned};
use crate::diag::Diagnostic;
use bundle::verdict::Decision;

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
    } else if let Ok((rest, _)) = kw("inject")(i) {
        let (rest, _) = must_kw(
            rest,
            "credential",
            " after `inject` (`inject credential \"NAME\"`)",
        )?;
        let (rest, (name, _)) = must_string(rest, "the credential's name as a string")?;
        (rest, ModSpec::InjectCredential(name))
    } else if let Ok((rest, _)) = kw("remove_tools")(i) {
        let (rest, l) = string_list(rest, "tool globs")?;
        (
            rest,
            ModSpec::RemoveTools(l.into_iter().map(|s| s.node).collect()),
        )
    } else {
        return Err(expected(
            i,
            "a modification (`redact`, `drop`, `clamp`, `redact_secrets`, `strip_header`, `set_header`, `inject credential`, `remove_tools`) or `}`",
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

fn start_span(i: &In<'_>) -> Span {
    span(i, i)
}
