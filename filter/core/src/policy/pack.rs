//! What a pack reads, worked out once when it loads: the request and response paths ask these on
//! every request, and each is a query on the compiled program, not on the filter's state.

use bundle::action::{Action, Kind};
use bundle::format::{DecisionDef, FieldRef, Instr, Pred, Program, RuleDef};
use bundle::verdict::{Decision, Modification, PathSegment};

use crate::normalize::{Method, fold_key};

/// The answers the filter needs about its pack.
#[derive(Clone, Debug, Default)]
pub(crate) struct PackReads {
    /// The pack can act on tool results ([`reads_results`]); when not, tool results pass
    /// without being held or read.
    pub results: bool,
    /// The pack reads byte counts (`request.size`, `session.egress_bytes`, an intent's
    /// `max egress_bytes`): a body whose length is not declared is then read to count it.
    pub byte_counts: bool,
    /// The argument member names the pack reads (conditions and rewrites, any depth), as
    /// `(folded, as written)`: a request naming one of them in another case is refused.
    pub arg_names: Vec<(String, String)>,
    /// A condition of the pack reads arguments (`args...` in a rule or class): only then can a
    /// plain HTTP request's query fields, read as arguments, change a verdict, so only then are
    /// they judged as readings (`normalize/query.rs`).
    pub reads_args: bool,
    /// The pack's rule names (a decision by one of them is not the default's).
    pub rule_names: Vec<String>,
    /// Rules that allow depending on arguments (list filtering keeps their tools).
    pub arg_allows: ArgAllows,
    /// The pack can decide STEP_UP (a rule, an intent's outside decision, the default): an HTTP
    /// request body is then read, so an approval binds it (`body_sha256` in the digest).
    pub step_up: bool,
    /// The pack's rules whose condition reads `tool.changed`: only one of them can keep a
    /// changed tool (`tool:changed`).
    pub on_changed: Vec<String>,
    /// The pack's rules whose condition reads `tool.shadowed` (`tool:shadowed`).
    pub on_shadowed: Vec<String>,
    /// The tools named by rules that can match a tool result ([`result_tools`]): an answer the
    /// filter cannot tie to its call is judged as a result of each (`results::Inspector`).
    pub result_tools: Vec<String>,
}

impl PackReads {
    /// Ask every question of `p` once.
    pub(crate) fn of(p: &Program) -> PackReads {
        PackReads {
            results: reads_results(p),
            byte_counts: counts_bytes(p),
            arg_names: arg_names(p),
            reads_args: fields(p).any(|f| matches!(f, FieldRef::Arg(_))),
            rule_names: p.rules.iter().map(|r| r.name.clone()).collect(),
            arg_allows: ArgAllows::of(p),
            step_up: steps_up(p),
            on_changed: rules_reading(p, &FieldRef::ToolChanged),
            on_shadowed: rules_reading(p, &FieldRef::ToolShadowed),
            result_tools: result_tools(p),
        }
    }

    /// What every pack of a set reads together: the filter must read what any of them reads.
    pub(crate) fn of_all<'a>(packs: impl Iterator<Item = &'a Program>) -> PackReads {
        let mut all = PackReads::default();
        for p in packs {
            // Every member named: a member added to `PackReads` must say how packs combine.
            let PackReads {
                results,
                byte_counts,
                arg_names,
                reads_args,
                rule_names,
                arg_allows,
                step_up,
                on_changed,
                on_shadowed,
                result_tools,
            } = PackReads::of(p);
            all.results |= results;
            all.byte_counts |= byte_counts;
            all.step_up |= step_up;
            all.reads_args |= reads_args;
            for n in arg_names {
                if !all.arg_names.iter().any(|(_, k)| *k == n.1) {
                    all.arg_names.push(n);
                }
            }
            all.rule_names.extend(rule_names);
            all.arg_allows.rules.extend(arg_allows.rules);
            all.on_changed.extend(on_changed);
            all.on_shadowed.extend(on_shadowed);
            for t in result_tools {
                if !all.result_tools.contains(&t) {
                    all.result_tools.push(t);
                }
            }
        }
        all
    }

    /// Whether `rule` is one of the pack's own rules (not its default, an intent's outside
    /// decision or a built-in check).
    pub(crate) fn is_pack_rule(&self, rule: &str) -> bool {
        self.rule_names.iter().any(|r| r == rule)
    }
}

/// The names of the rules of `p` whose condition reads `field`.
fn rules_reading(p: &Program, field: &FieldRef) -> Vec<String> {
    p.rules
        .iter()
        .filter(|r| r.code.iter().any(|i| pred_field(&i.pred) == Some(field)))
        .map(|r| r.name.clone())
        .collect()
}

/// Whether any decision of `p` is STEP_UP.
fn steps_up(p: &Program) -> bool {
    let up = |d: &DecisionDef| d.decision == Decision::StepUp;
    up(&p.default)
        || up(&p.unknown_session)
        || p.rules.iter().any(|r| up(&r.decision))
        || p.intents.iter().any(|i| up(&i.outside))
}

/// The field a condition reads, if it reads one.
fn pred_field(p: &Pred) -> Option<&FieldRef> {
    match p {
        Pred::Cmp(x, ..)
        | Pred::In(x, _)
        | Pred::Glob(x, _)
        | Pred::Prefix(x, _)
        | Pred::Matches(x, _)
        | Pred::Is(x, _)
        | Pred::Present(x)
        | Pred::Len(x, ..)
        | Pred::Contains(x, _) => Some(x),
        _ => None,
    }
}

/// Every field the conditions of a pack read (rules and classes).
fn fields(p: &Program) -> impl Iterator<Item = &FieldRef> {
    p.rules
        .iter()
        .flat_map(|r| r.code.iter())
        .chain(p.classes.iter().flat_map(|c| c.code.iter()))
        .filter_map(|i| pred_field(&i.pred))
}

/// The member names of an argument path (its array indexes aside).
fn keys(path: &[PathSegment]) -> impl Iterator<Item = &str> {
    path.iter().filter_map(|seg| match seg {
        PathSegment::Key(k) => Some(k.as_str()),
        PathSegment::Index(_) => None,
    })
}

/// Whether a pack reads byte counts: an intent with `max egress_bytes`, or a condition on
/// `request.size` or `session.egress_bytes`.
fn counts_bytes(p: &Program) -> bool {
    p.intents.iter().any(|i| i.max_egress_bytes.is_some())
        || fields(p).any(|f| matches!(f, FieldRef::RequestSize | FieldRef::SessionEgressBytes))
}

/// Every argument member name the pack reads: keys of `args.` paths in conditions (rules and
/// classes), in MODIFY rewrites and in argument declarations, at any depth, with their folded
/// form.
fn arg_names(p: &Program) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str| {
        if !names.iter().any(|(_, n)| n == k) {
            names.push((fold_key(k).into_owned(), k.to_owned()));
        }
    };
    for f in fields(p) {
        if let FieldRef::Arg(path) = f {
            keys(path).for_each(&mut add);
        }
    }
    let decisions = p
        .rules
        .iter()
        .map(|r| &r.decision)
        .chain([&p.default, &p.unknown_session])
        .chain(p.intents.iter().map(|i| &i.outside));
    for d in decisions {
        for m in &d.modifications {
            if let Modification::RedactArg { path }
            | Modification::DropArg { path }
            | Modification::ClampArg { path, .. }
            | Modification::CoerceArg { path, .. } = m
            {
                keys(path).for_each(&mut add);
            }
        }
    }
    // Declared argument types (`tool "x" { args.limit: number }`) are read too.
    for a in p.tools.iter().flat_map(|t| t.args.iter()) {
        a.path.iter().map(String::as_str).for_each(&mut add);
    }
    names
}

/// Whether the pack can say anything about a tool result. A result only matters through a rule
/// that matches its `tools/result` action (effects such as `taint`, or a MODIFY) or a MODIFY from
/// the default, unknown-session or intent-outside decision. A rule whose condition pins the
/// operation to others, or pins the kind to `http`, never matches a result (the compiler
/// guarantees pins are sound). When nothing can match, every inspection would end with "no effect,
/// nothing changed", so the filter does not hold tool results at all (no buffering, no session
/// read on the response path).
pub(crate) fn reads_results(p: &Program) -> bool {
    let modifies = |d: &DecisionDef| d.decision == Decision::Modify;
    p.rules.iter().any(can_match_results)
        || modifies(&p.default)
        || modifies(&p.unknown_session)
        || p.intents.iter().any(|i| modifies(&i.outside))
}

/// Whether rule `r` can match a `tools/result` action: not pinned to other operations, nor to
/// plain HTTP.
fn can_match_results(r: &RuleDef) -> bool {
    r.pins.kind != Some(Kind::Http)
        && (r.pins.operations.is_empty()
            || r.pins.operations.iter().any(|o| Method::ToolsResult.is(o)))
}

/// The tools pinned by rules that can match a tool result, each once.
fn result_tools(p: &Program) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in p
        .rules
        .iter()
        .filter(|r| can_match_results(r))
        .flat_map(|r| &r.pins.tools)
    {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// The rules that could allow a call depending on its arguments (conditions that read `args`):
/// what a tool list must not hide on a call without arguments (`results::Cx::keeps`).
#[derive(Clone, Debug, Default)]
pub(crate) struct ArgAllows {
    /// `(operations, tools)` pinned by each such rule (empty: any).
    rules: Vec<(Vec<String>, Vec<String>)>,
}

impl ArgAllows {
    /// The argument-dependent rules of a pack that do not deny.
    fn of(p: &Program) -> Self {
        let reads_args = |code: &[Instr]| {
            code.iter()
                .any(|i| matches!(pred_field(&i.pred), Some(FieldRef::Arg(_))))
        };
        let rules = p
            .rules
            .iter()
            .filter(|r| r.decision.decision != Decision::Deny && r.pins.kind != Some(Kind::Http))
            .filter(|r| reads_args(&r.code))
            .map(|r| (r.pins.operations.clone(), r.pins.tools.clone()))
            .collect();
        ArgAllows { rules }
    }

    /// Whether one of the rules can match a call like `a` (its operation and tool).
    pub(crate) fn covers(&self, a: &Action) -> bool {
        let name = a
            .tool
            .as_deref()
            .or(a.prompt.as_deref())
            .or(a.resource.as_deref());
        self.rules.iter().any(|(ops, tools)| {
            (ops.is_empty() || ops.contains(&a.operation))
                && (tools.is_empty() || name.is_some_and(|n| tools.iter().any(|t| t == n)))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::{reads_results, result_tools};

    fn bundle(rules: &str) -> bundle::Bundle {
        let src = format!(
            "pack \"p\" {{\n  version \"1.0.0\"\n  mode enforce\n  default deny \"no\"\n}}\n{rules}\n"
        );
        let ast = policy::syntax::parse(&src).unwrap();
        let unsigned = policy::codegen::compile(&ast).unwrap();
        let key = bundle::keys::signing_key_from_seed([1; 32]);
        let signed = bundle::sign(&unsigned, &key).unwrap();
        let trust = bundle::Trust::Keys(vec![key.verifying_key()]);
        bundle::Bundle::from_bytes(&signed, &trust).unwrap()
    }

    fn reads(rules: &str) -> bool {
        reads_results(bundle(rules).program())
    }

    #[test]
    fn the_tools_result_rules_name_are_those_an_untied_answer_is_judged_as() {
        let b = bundle(
            "rule c { when kind == mcp and operation == \"tools/call\" and tool == \"a\" allow \"ok\" }\n\
             rule r { when operation == \"tools/result\" and tool == \"b\" deny \"no\" }\n\
             rule t { when tool in [\"c\", \"b\"] allow \"ok\" then taint \"x\" }\n\
             rule h { when kind == http and tool == \"d\" allow \"ok\" }",
        );
        assert_eq!(result_tools(b.program()), ["b", "c"]);
    }

    #[test]
    fn only_a_rule_or_decision_that_can_see_a_result_makes_results_worth_holding() {
        // Pinned to other operations or to HTTP: a result can never match.
        assert!(!reads(
            "rule t { when kind == mcp and operation == \"tools/call\" and tool == \"a\" allow \"ok\" }\n\
             rule h { when kind == http and target.host == \"x.example\" allow \"ok\" }"
        ));
        // A tool pinned without an operation matches the tool's results too.
        assert!(reads(
            "rule t { when tool == \"fetch_url\" and args.injection == true deny \"no\" }"
        ));
        // The result operation itself.
        assert!(reads(
            "rule r { when operation == \"tools/result\" deny \"no\" then taint \"x\" }"
        ));
        // A rule that pins nothing (here: only an argument) is visited for every action.
        assert!(reads("rule w { when args.limit > 5 deny \"no\" }"));
    }
}
