//! Checker tests: every error kind and both warning kinds, each named by what the user sees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code (clippy.toml exempts only #[test] fns)

use policy::check::parse_and_check;
use policy::diag::{Diagnostic, Severity};

mod common;

const HEAD: &str = "pack \"p\" {}\n";

fn diags(body: &str) -> Vec<Diagnostic> {
    let src = format!("{HEAD}{body}");
    let (_, d) = parse_and_check(&src);
    d
}

/// Exactly one error whose message contains `want` (and its hint contains `hint`, if given).
fn one_error(body: &str, want: &str, hint: Option<&str>) {
    let d = diags(body);
    let errors: Vec<&Diagnostic> = d.iter().filter(|d| d.is_error()).collect();
    assert_eq!(
        errors.len(),
        1,
        "for {body:?} wanted one error containing {want:?}, got {d:#?}"
    );
    assert!(
        errors[0].message.contains(want),
        "for {body:?} wanted {want:?}, got {:?}",
        errors[0].message
    );
    if let Some(h) = hint {
        let got = errors[0].hint.as_deref().unwrap_or("");
        assert!(
            got.contains(h),
            "for {body:?} wanted hint {h:?}, got {got:?}"
        );
    }
}

fn one_warning(body: &str, want: &str) {
    let d = diags(body);
    assert!(d.iter().all(|d| d.severity == Severity::Warning), "{d:#?}");
    assert_eq!(d.len(), 1, "for {body:?}: {d:#?}");
    assert!(
        d[0].message.contains(want),
        "for {body:?} wanted {want:?}, got {:?}",
        d[0].message
    );
}

#[test]
fn clean_packs_have_no_diagnostics() {
    let (_, d) = parse_and_check(common::EVERYTHING);
    assert!(d.iter().all(|d| !d.is_error()), "{d:#?}");
    assert!(diags("rule r { when tool == \"x\" allow \"ok\" }").is_empty());
}

#[test]
fn duplicate_names() {
    one_error(
        "let a = [\"x\"]\nlet a = [\"y\"]",
        "list `a` is defined twice",
        Some("line 2"),
    );
    one_error(
        "class c risk low { when true }\nclass c risk low { when true }",
        "class `c` is defined twice",
        None,
    );
    one_error(
        "intent i {}\nintent i {}",
        "intent `i` is defined twice",
        None,
    );
    one_error(
        "rule r { when true allow \"a\" }\nrule r { when tool == \"x\" allow \"b\" }",
        "rule `r` is defined twice",
        None,
    );
    one_error(
        "tool \"t\" {}\ntool \"t\" {}",
        "tool schema `t` is defined twice",
        None,
    );
    one_error(
        "tool \"t\" { args.a: string, args.a: number }",
        "argument `args.a` is declared twice",
        None,
    );
    one_error(
        "rule default { when true allow \"a\" }",
        "`default` is reserved",
        None,
    );
}

#[test]
fn undefined_names() {
    one_error(
        "let hosts = [\"a\"]\nrule r { when target.host in hostz allow \"a\" }",
        "undefined list `hostz`",
        Some("did you mean `hosts`?"),
    );
    one_error(
        "class reads risk low { when true }\nrule r { when class raeds allow \"a\" }",
        "undefined class `raeds`",
        Some("did you mean `reads`?"),
    );
    one_error(
        "rule r { when session.seen(nope) allow \"a\" }",
        "undefined class `nope`",
        None,
    );
    one_error(
        "rule r { when session.count(class nope, within 1m) > 1 allow \"a\" }",
        "undefined class `nope`",
        None,
    );
    one_error(
        "intent i { allow class [nope] }",
        "undefined class `nope`",
        None,
    );
    one_error(
        "rule r { when true deny \"a\" then revoke class nope }",
        "undefined class `nope`",
        None,
    );
}

#[test]
fn class_references() {
    one_error(
        "class a risk low { when class b }\nclass b risk low { when true }",
        "defined after it",
        Some("defined above it"),
    );
    one_error(
        "class a risk low { when class a }",
        "refers to itself",
        None,
    );
    one_error(
        "class a risk low { when intent.outside }",
        "uses `intent.outside`",
        None,
    );
}

#[test]
fn type_errors() {
    one_error(
        "rule r { when target.host < \"m\" allow \"a\" }",
        "can only be compared with `==` or `!=`",
        Some("glob"),
    );
    one_error(
        "rule r { when tool == 5 allow \"a\" }",
        "`tool` is a string but `5` is a number",
        None,
    );
    one_error(
        "rule r { when target.port == \"443\" allow \"a\" }",
        "`target.port` is a number but `\"443\"` is a string",
        None,
    );
    one_error(
        "rule r { when risk.secrets == \"yes\" allow \"a\" }",
        "is a boolean",
        None,
    );
    one_error(
        "rule r { when risk.data_classes == \"pii\" allow \"a\" }",
        "set of strings and cannot be compared",
        Some("contains"),
    );
    one_error(
        "rule r { when target.port in [\"443\"] allow \"a\" }",
        "in the list is a string",
        None,
    );
    one_error(
        "rule r { when target.port glob \"4*\" allow \"a\" }",
        "`glob` applies to strings",
        None,
    );
    one_error(
        "rule r { when tool glob [1] allow \"a\" }",
        "patterns are strings",
        None,
    );
    one_error(
        "rule r { when len(tool) > 3 allow \"a\" }",
        "`len` applies to arguments",
        None,
    );
    one_error(
        "rule r { when tool is string allow \"a\" }",
        "`is` tests the type of an argument",
        None,
    );
    one_error(
        "rule r { when tool contains \"x\" allow \"a\" }",
        "`contains` tests membership",
        Some("glob"),
    );
    one_error(
        "rule r { when kind == \"grpc\" allow \"a\" }",
        "`kind` is never `grpc`",
        None,
    );
    one_error(
        "rule r { when identity.agent_auth == \"oauth\" allow \"a\" }",
        "is never `oauth`",
        None,
    );
    one_error(
        "rule r { when args.x > \"a\" allow \"a\" }",
        "cannot be compared with `>`",
        None,
    );
    one_error(
        "let l = [\"a\", 1]",
        "mixes strings, numbers and booleans",
        None,
    );
}

#[test]
fn header_names_must_be_lowercase() {
    one_error(
        "rule r { when header[\"X-Key\"] present allow \"a\" }",
        "header name `X-Key` is not lowercase",
        Some("x-key"),
    );
    one_error(
        "rule r { when true modify \"m\" { strip_header \"Authorization\" } }",
        "not lowercase",
        None,
    );
}

#[test]
fn regex_errors() {
    one_error(
        "rule r { when tool matches \"(unclosed\" allow \"a\" }",
        "invalid regex `(unclosed`",
        None,
    );
    one_error(
        "rule r { when tool matches \"a{99999}{99999}\" allow \"a\" }",
        "regex",
        None,
    );
}

const SCHEMA: &str = "tool \"query_db\" { args.sql: string, args.limit: number, args.opts: object, args.tags: array }\n";

#[test]
fn arguments_are_checked_against_the_tool_schema() {
    one_error(
        &format!("{SCHEMA}rule r {{ when tool == \"query_db\" and args.limt > 10 deny \"a\" }}"),
        "tool `query_db` has no argument `args.limt`",
        Some("did you mean `args.limit`?"),
    );
    one_error(
        &format!(
            "{SCHEMA}rule r {{ when tool == \"query_db\" and args.limit == \"10\" deny \"a\" }}"
        ),
        "`args.limit` is a number but `\"10\"` is a string",
        None,
    );
    one_error(
        &format!(
            "{SCHEMA}rule r {{ when tool == \"query_db\" and args.limit glob \"1*\" deny \"a\" }}"
        ),
        "`glob` applies to strings",
        None,
    );
    one_error(
        &format!(
            "{SCHEMA}rule r {{ when tool == \"query_db\" and len(args.limit) > 1 deny \"a\" }}"
        ),
        "`len` needs a string, array or object",
        None,
    );
    one_error(
        &format!(
            "{SCHEMA}rule r {{ when tool == \"query_db\" and args.sql contains \"x\" deny \"a\" }}"
        ),
        "`contains` needs an array",
        None,
    );
    one_error(
        &format!(
            "{SCHEMA}rule r {{ when tool == \"query_db\" modify \"m\" {{ clamp args.sql 1..2 }} }}"
        ),
        "`args.sql` is declared `string` for tool `query_db`, but is used as a number",
        None,
    );
    one_error(
        &format!(
            "{SCHEMA}rule r {{ when tool in [\"query_db\"] modify \"m\" {{ redact args.nope }} }}"
        ),
        "has no argument `args.nope`",
        None,
    );
    // Inside a declared object or array, anything goes; without a pinned tool, nothing is checked.
    assert!(diags(&format!("{SCHEMA}rule r {{ when tool == \"query_db\" and args.opts.deep == 1 and args.tags[0] == \"x\" deny \"a\" }}")).is_empty());
    assert!(
        diags(&format!(
            "{SCHEMA}rule r {{ when args.limt > 10 deny \"a\" }}"
        ))
        .is_empty()
    );
}

#[test]
fn decision_parameters() {
    one_error(
        "rule r { when true modify \"m\" { clamp args.x 10..1 } }",
        "clamp bounds are reversed",
        Some("1..10"),
    );
    one_error(
        "rule r { when true step_up \"s\" { group \"\" timeout 1m } }",
        "needs an approver group",
        None,
    );
    one_error(
        "rule r { when true defer \"d\" { service \" \" timeout 1s } }",
        "needs a context service",
        None,
    );
}

#[test]
fn value_errors_from_the_parser_are_reported_together() {
    let d = diags(
        "rule r { when target.hots == \"a\" and identity.agnet == \"b\" allow \"a\" }\nintent i { max egress_bytes 99999999999999GiB }",
    );
    let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs[0].contains("unknown field `target.hots`"));
    assert!(msgs[1].contains("unknown field `identity.agnet`"));
    assert!(msgs[2].contains("too large"));
}

#[test]
fn rules_that_can_never_match() {
    one_warning(
        "rule r { when false deny \"a\" }",
        "can never match: its condition contains `false`",
    );
    one_warning(
        "rule r { when tool == \"a\" and tool == \"b\" deny \"a\" }",
        "`tool == \"a\"` and `tool == \"b\"` cannot both hold",
    );
    one_warning(
        "rule r { when kind == http and tool == \"x\" deny \"a\" }",
        "an HTTP action has no tool",
    );
    one_warning(
        "rule r { when risk.secrets == true and not risk.secrets == true deny \"a\" }",
        "cannot both hold",
    );
    // Different fields, or `or`, are fine.
    assert!(diags("rule r { when tool == \"a\" or tool == \"b\" deny \"a\" }").is_empty());
}

#[test]
fn rules_shadowed_by_a_stricter_rule() {
    one_warning(
        "rule open { when tool == \"deploy\" and args.env == \"prod\" allow \"a\" }\nrule closed { when tool == \"deploy\" deny \"b\" }",
        "rule `open` can never decide: rule `closed` matches whenever it does and is stricter (DENY)",
    );
    one_warning(
        "rule a { when tool == \"x\" step_up \"s\" { group \"g\" timeout 1m } }\nrule b { when tool == \"x\" deny \"d\" }",
        "rule `a` can never decide",
    );
    // A stricter rule in audit mode, or a narrower stricter rule, shadows nothing.
    assert!(diags("rule a { when tool == \"x\" allow \"a\" }\nrule b mode audit { when tool == \"x\" deny \"d\" }").is_empty());
    assert!(diags("rule a { when tool == \"x\" allow \"a\" }\nrule b { when tool == \"x\" and args.y == 1 deny \"d\" }").is_empty());
}

#[test]
fn example_packs_are_clean() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path().join("policy.pcl");
        let Ok(src) = std::fs::read_to_string(&path) else {
            continue;
        };
        let (_, d) = parse_and_check(&src);
        let errors: Vec<_> = d.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}
