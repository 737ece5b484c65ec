//! Checker tests: every error kind and both warning kinds, each named by what the user sees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code outside #[test] fns (clippy.toml exempts only those): a failure is a failed test"
)]

use policy::check::parse_and_check;
use policy::diag::{Diagnostic, Severity};

mod common;

const HEAD: &str = "pack \"p\" {}\n";
/// Decides MCP protocol traffic, so the packs under test do not also get the warning about it
/// (tested on its own in `protocol_traffic_left_to_the_default`).
const TAIL: &str = "\nrule protocol { when class mcp_protocol allow \"protocol\" }\n";

fn diags(body: &str) -> Vec<Diagnostic> {
    let src = format!("{HEAD}{body}{TAIL}");
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
fn injected_credentials_are_named_plainly_and_once() {
    one_error(
        "rule r { when true modify \"m\" { inject credential \"GitHub Token\" } }",
        "credential name `GitHub Token` must be 1 to 64 characters of `a-z`, `0-9`, `_` and `-`",
        None,
    );
    one_error(
        "rule r { when true modify \"m\" { inject credential \"a\"; inject credential \"b\" } }",
        "a modify injects at most one credential",
        None,
    );
    one_error(
        "rule r { when true modify \"m\" { inject \"a\" } }",
        "`credential` after `inject`",
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

/// The diagnostics of a whole file (no `TAIL`).
fn file_diags(src: &str) -> Vec<Diagnostic> {
    parse_and_check(src).1
}

#[test]
fn protocol_traffic_left_to_the_default() {
    let src = "pack \"p\" {\n  default deny \"not allowed\"\n}\nrule r { when tool == \"x\" allow \"ok\" }\nrule some { when kind == mcp and operation in [\"initialize\", \"ping\", \"notifications/initialized\"] allow \"some\" }\n";
    let d = file_diags(src);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].severity, Severity::Warning);
    assert_eq!(
        d[0].message,
        "no rule allows MCP protocol messages `response`, `server/discover`, `tools/list`, \
         `resources/list`, `resources/templates/list`, `prompts/list`, `completion/complete`, \
         `logging/setLevel`, `resources/subscribe`, `resources/unsubscribe`, \
         `subscriptions/listen`, `stream/open`, `session/delete`, `http/options`, \
         `notifications/cancelled`, `notifications/progress`, `notifications/roots/list_changed`, \
         so they fall to the pack's default (`deny`)"
    );
    assert!(
        d[0].hint
            .as_deref()
            .unwrap()
            .contains("when class mcp_protocol allow")
    );
    // It points at the default decision.
    let text = d[0].render("p.pcl", src);
    assert!(
        text.contains(" --> p.pcl:2:11\n  |\n2 |   default deny \"not allowed\"\n  |           ^^^^^^^^^^^^^^^^^^\n"),
        "{text}"
    );
    // No notification decided: the family is named once.
    let d = file_diags("pack \"p\" {}\nrule r { when tool == \"x\" allow \"ok\" }\n");
    assert!(
        d[0].message.contains("`notifications/*`"),
        "{}",
        d[0].message
    );
    assert!(d[0].message.contains("`initialize`"), "{}", d[0].message);

    // Decided in one line, by a rule in warn mode, or by MODIFY: nothing to say.
    for rule in [
        "rule m { when class mcp_protocol allow \"m\" }",
        "rule m mode warn { when kind == mcp and not (tool present) allow \"m\" }",
        "rule m { when class mcp_protocol modify \"m\" { remove_tools [\"x\"] } }",
    ] {
        let d = file_diags(&format!(
            "pack \"p\" {{}}\nrule r {{ when tool == \"x\" allow \"ok\" }}\n{rule}\n"
        ));
        assert!(d.is_empty(), "{rule}: {d:#?}");
    }
    // An audit-mode rule decides nothing; a rule that needs a tool cannot match a protocol message.
    for rule in [
        "rule m mode audit { when class mcp_protocol allow \"m\" }",
        "rule m { when class mcp_protocol and tool == \"x\" allow \"m\" }",
        "rule m { when class mcp_protocol and intent.outside allow \"m\" }",
    ] {
        let d = file_diags(&format!("pack \"p\" {{}}\n{rule}\n"));
        assert_eq!(d.len(), 1, "{rule}: {d:#?}");
    }
    // A pack that allows by default, or that is about HTTP egress only, is left alone.
    assert!(
        file_diags(
            "pack \"p\" { default allow \"ok\" }\nrule r { when tool == \"x\" deny \"no\" }\n"
        )
        .is_empty()
    );
    assert!(file_diags("pack \"p\" {}\nclass up risk low { when kind == http and operation == \"POST\" }\nrule r { when class up allow \"ok\" }\n").is_empty());
}

#[test]
fn mcp_protocol_is_built_in_and_versioned() {
    one_error(
        "class mcp_protocol risk low { when true }",
        "`mcp_protocol` is a built-in class and cannot be defined",
        None,
    );
    let d = file_diags(
        "pack \"p\" { mcp_protocol 9 }\nrule m { when class mcp_protocol allow \"m\" }\n",
    );
    let errors: Vec<_> = d.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{d:#?}");
    assert_eq!(
        errors[0].message,
        "there is no `mcp_protocol` list version `9`"
    );
    assert!(errors[0].hint.as_deref().unwrap().contains("versions `1`"));
    // Usable wherever a class is, and before every class of the pack.
    assert!(diags("class proto_or_read risk low { when class mcp_protocol or tool == \"read\" }\nintent i { allow class [mcp_protocol] }\nrule r { when session.seen(mcp_protocol) deny \"x\" then revoke class mcp_protocol }").iter().all(|d| !d.is_error()));
    one_error(
        "rule r { when class mcp_protocl allow \"x\" }",
        "undefined class `mcp_protocl`",
        Some("did you mean `mcp_protocol`?"),
    );
}

#[test]
fn tool_declarations_hold_at_request_time() {
    one_error(
        "tool \"t\" { args.items: array coerce }",
        "`coerce` converts to a string, a number or a bool, and `args.items` is declared `array`",
        None,
    );
    one_error(
        "tool \"t\" { args.page: string, args.page.limit: number }",
        "`args.page.limit` is declared inside `args.page`, which is declared `string`",
        None,
    );
    one_error(
        "tool \"t\" { args.items[0]: string }",
        "`args.items[0]` indexes an array: a tool schema declares object members",
        Some("args.items: array"),
    );
    // A tool-level `coerce` applies to what can be converted; members of objects are fine.
    assert!(diags("tool \"t\" coerce { args.items: array, args.page: object, args.page.limit: number coerce }").is_empty());
}
