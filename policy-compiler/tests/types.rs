//! Types at request time, through both engines (the reference interpreter and the compiled
//! bundle's VM, which must agree): declared argument types (`args:type`, `coerce` and
//! `args:coerce`), type errors in conditions (unknown never skips a rule stricter than ALLOW),
//! and the built-in class `mcp_protocol`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure is a failed test"
)]

use bundle::action::{Action, Kind};
use bundle::session::{SessionState, SessionStatus};
use bundle::verdict::{Decision, Modification, PathSegment, Verdict};
use bundle::{Bundle, Trust};
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;

/// Evaluate with both engines, require the same verdict, return it.
fn both(src: &str, a: &Action) -> Verdict {
    both_in(src, a, &SessionState::default())
}

fn both_in(src: &str, a: &Action, s: &SessionState) -> Verdict {
    let (p, diags) = policy::check::parse_and_check(src);
    let p = p.unwrap_or_else(|| panic!("{diags:?}"));
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
    let want = policy::interp::evaluate(&p, a, s, NOW);
    let bytes = policy::codegen::compile(&p).unwrap();
    let got = Bundle::from_bytes(&bytes, &Trust::AllowUnsigned)
        .unwrap()
        .evaluate(a, s, NOW);
    assert_eq!(want, got, "interpreter and VM disagree");
    want
}

fn call(tool: &str, args: serde_json::Value) -> Action {
    Action {
        kind: Kind::Mcp,
        operation: "tools/call".into(),
        tool: Some(tool.into()),
        arguments: args,
        ..Action::default()
    }
}

fn mcp(operation: &str) -> Action {
    Action {
        kind: Kind::Mcp,
        operation: operation.into(),
        ..Action::default()
    }
}

fn rules(v: &Verdict) -> Vec<&str> {
    v.matched.iter().map(|m| m.rule.as_str()).collect()
}

fn key(k: &str) -> Vec<PathSegment> {
    vec![PathSegment::Key(k.into())]
}

/// The pack of issue 22: a declared number and a clamp.
const ROWS: &str = r#"pack "p" { default deny "no" }
tool "query_rows" { args.limit: number }
rule rows { when tool == "query_rows" allow "rows" }
rule clamp { when tool == "query_rows" and args.limit > 20 modify "at most 20" { clamp args.limit 1..20 } }
"#;

#[test]
fn a_number_sent_as_a_string_no_longer_skips_the_clamp() {
    let v = both(ROWS, &call("query_rows", json!({"limit": 100})));
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(
        v.modifications,
        [Modification::ClampArg {
            path: key("limit"),
            min: 1.0,
            max: 20.0
        }]
    );
    // Declared `number`, sent as a string: refused, with a reason the agent can act on.
    let v = both(ROWS, &call("query_rows", json!({"limit": "100"})));
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "args:type");
    assert_eq!(
        v.reason,
        "argument `args.limit` of tool `query_rows` is a string, but the policy declares it `number`"
    );
    // Not given (absent or null) is not a type error.
    for args in [json!({}), json!({"limit": null})] {
        assert_eq!(
            both(ROWS, &call("query_rows", args)).decision,
            Decision::Allow
        );
    }
    // A member on the way that is not an object.
    let src = ROWS
        .replace("args.limit: number", "args.page.limit: number")
        .replace("args.limit", "args.page.limit");
    let v = both(&src, &call("query_rows", json!({"page": "2"})));
    assert_eq!(
        v.reason,
        "argument `args.page` of tool `query_rows` is a string, but the policy declares it `object`"
    );
}

#[test]
fn coerce_converts_evaluates_and_forwards_the_declared_type() {
    let src = ROWS.replace("args.limit: number", "args.limit: number coerce");
    let v = both(&src, &call("query_rows", json!({"limit": "100"})));
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(rules(&v), ["rows", "clamp", "args:coerce"]);
    assert_eq!(v.deciding_rule, "clamp");
    // The conversion first, so the clamp applies to the number.
    assert_eq!(
        v.modifications,
        [
            Modification::CoerceArg {
                path: key("limit"),
                value: json!(100)
            },
            Modification::ClampArg {
                path: key("limit"),
                min: 1.0,
                max: 20.0
            },
        ]
    );
    // Within bounds: the conversion alone turns ALLOW into MODIFY, decided by `args:coerce`.
    let v = both(&src, &call("query_rows", json!({"limit": " 5 "})));
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(v.deciding_rule, "args:coerce");
    assert_eq!(
        v.modifications,
        [Modification::CoerceArg {
            path: key("limit"),
            value: json!(5)
        }]
    );
    // What does not convert is refused.
    let v = both(&src, &call("query_rows", json!({"limit": "a hundred"})));
    assert_eq!(v.deciding_rule, "args:type");
    // A refused action is not rewritten.
    let deny = format!(
        "{src}rule big {{ when tool == \"query_rows\" and args.limit > 50 deny \"too many\" }}\n"
    );
    let v = both(&deny, &call("query_rows", json!({"limit": "100"})));
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "big");
    assert!(v.modifications.is_empty());
    assert!(!rules(&v).contains(&"args:coerce"));
}

#[test]
fn tool_level_coerce_and_the_other_conversions() {
    let src = r#"pack "p" { default allow "ok" }
tool "deploy" coerce { args.env: string, args.dry_run: bool, args.replicas: number }
"#;
    let v = both(
        src,
        &call(
            "deploy",
            json!({"env": 7, "dry_run": "false", "replicas": "3"}),
        ),
    );
    assert_eq!(
        v.modifications,
        [
            Modification::CoerceArg {
                path: key("env"),
                value: json!("7")
            },
            Modification::CoerceArg {
                path: key("dry_run"),
                value: json!(false)
            },
            Modification::CoerceArg {
                path: key("replicas"),
                value: json!(3)
            },
        ]
    );
    // "yes" is not a bool; an array is not a string.
    for args in [json!({"dry_run": "yes"}), json!({"env": ["prod"]})] {
        assert_eq!(both(src, &call("deploy", args)).deciding_rule, "args:type");
    }
}

#[test]
fn declared_types_follow_the_pack_mode_and_only_judge_calls() {
    let audit = ROWS
        .replace("default deny \"no\"", "mode audit default deny \"no\"")
        .replace("args.limit: number", "args.limit: number coerce");
    // Audit: recorded, nothing enforced, nothing rewritten.
    let v = both(&audit, &call("query_rows", json!({"limit": "x"})));
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.would_be, Decision::Deny);
    // (`"x" > 20` is unknown too: the MODIFY rule matches, in audit mode.)
    assert_eq!(rules(&v), ["args:type", "rows", "clamp", "default"]);
    let v = both(&audit, &call("query_rows", json!({"limit": "100"})));
    assert!(v.modifications.is_empty());
    assert!(rules(&v).contains(&"args:coerce"));
    // Warn: the agent is told.
    let warn = audit.replace("mode audit", "mode warn");
    let v = both(&warn, &call("query_rows", json!({"limit": "3"})));
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(
        v.warnings,
        ["args:coerce: arguments were converted to the types the policy declares for this tool"]
    );
    // A tool result carries the result, not the call's arguments: not type-checked.
    let mut result = call("query_rows", json!({"text": "rows", "limit": "x"}));
    result.operation = "tools/result".into();
    assert!(!rules(&both(ROWS, &result)).contains(&"args:type"));
}

/// Each test of a DENY, MODIFY and an ALLOW rule on a value of the wrong type.
#[test]
fn a_type_error_matches_a_restricting_rule_and_never_an_allow_rule() {
    let src = r#"pack "p" { default allow "ok" }
rule gt { when args.limit > 20 deny "gt" }
rule not_le { when not (args.limit <= 20) deny "not_le" }
rule ok_le { when args.limit <= 20 allow "ok_le" }
rule ok_not_gt { when not (args.limit > 20) allow "ok_not_gt" }
rule clamp { when args.limit > 20 modify "clamp" { clamp args.limit 1..20 } }
rule with_false { when args.limit > 20 and tool == "other" deny "with_false" }
rule with_true { when args.limit > 20 or tool == "other" step_up "with_true" { group "g" timeout 1m } }
"#;
    let v = both(src, &call("t", json!({"limit": "5"})));
    assert_eq!(
        rules(&v),
        ["gt", "not_le", "clamp", "with_true"],
        "unknown `and` false is false; unknown `or` false stays unknown"
    );
    let v = both(src, &call("t", json!({"limit": 5})));
    assert_eq!(rules(&v), ["ok_le", "ok_not_gt"]);
    // Absent and null are not type errors: every comparison on them is false.
    // (`not` turns a false comparison true, as always.)
    for args in [json!({}), json!({"limit": null})] {
        assert_eq!(rules(&both(src, &call("t", args))), ["not_le", "ok_not_gt"]);
    }
}

#[test]
fn every_test_that_does_not_apply_to_the_type_is_unknown() {
    let src = r#"pack "p" { default allow "ok" }
rule g { when args.path glob "/etc/*" deny "g" }
rule p { when args.path prefix "/etc" deny "p" }
rule m { when args.path matches "/etc/.*" deny "m" }
rule i { when args.env in ["prod", "staging"] deny "i" }
rule c { when args.tags contains "admin" deny "c" }
rule l { when len(args.title) > 72 deny "l" }
"#;
    let v = both(
        src,
        &call(
            "t",
            json!({"path": ["/etc/passwd"], "env": 1, "tags": "admin", "title": 100}),
        ),
    );
    assert_eq!(rules(&v), ["g", "p", "m", "i", "c", "l"]);
    let v = both(
        src,
        &call(
            "t",
            json!({"path": "/home", "env": "dev", "tags": ["user"], "title": "short"}),
        ),
    );
    assert_eq!(rules(&v), ["default"]);
}

#[test]
fn a_class_decided_by_a_type_error_counts_only_where_it_restricts() {
    let src = r#"pack "p" { default deny "no" }
class big risk high { when args.limit > 20 }
class small risk low readonly { when args.limit <= 20 }
intent report {
  allow class [small]
}
rule big_deny { when class big step_up "big" { group "g" timeout 1m } }
rule small_ok { when class small allow "small" }
"#;
    let mut a = call("q", json!({"limit": "5"}));
    a.declared_intent = Some("report".into());
    a.intent_source = bundle::action::IntentSource::Grant;
    let v = both(src, &a);
    // `big` matches the STEP_UP rule; `small` does not allow, and does not put the call inside
    // the intent; neither is listed as a class of the action.
    assert_eq!(rules(&v), ["intent:report", "big_deny"]);
    assert_eq!(v.decision, Decision::Deny);
    assert!(v.classes.is_empty());
    // A read-only session is not lifted by a class the call may be in.
    let s = SessionState {
        status: SessionStatus::Active,
        read_only: true,
        intent: Some("report".into()),
        ..SessionState::default()
    };
    assert!(rules(&both_in(src, &a, &s)).contains(&"session:read_only"));
    a.arguments = json!({"limit": 5});
    let v = both_in(src, &a, &s);
    assert_eq!(rules(&v), ["small_ok"]);
    assert_eq!(v.classes, ["small"]);
}

#[test]
fn mcp_protocol_allows_the_protocol_in_one_line() {
    let src = r#"pack "p" { default deny "no" }
rule protocol { when class mcp_protocol allow "protocol messages act on nothing" }
"#;
    for op in [
        "response",
        "notifications/initialized",
        "notifications/cancelled",
        "ping",
        "initialize",
        "server/discover",
        "tools/list",
        "resources/templates/list",
        "completion/complete",
        "logging/setLevel",
        "resources/subscribe",
        "subscriptions/listen",
        "stream/open",
        "session/delete",
        "http/options",
    ] {
        let v = both(src, &mcp(op));
        assert_eq!(v.decision, Decision::Allow, "{op}");
        assert_eq!(v.classes, ["mcp_protocol"], "{op}");
    }
    for op in [
        "tools/call",
        "resources/read",
        "prompts/get",
        "tools/result",
    ] {
        assert_eq!(both(src, &mcp(op)).deciding_rule, "default", "{op}");
    }
    // A plain HTTP OPTIONS is not MCP.
    let mut h = mcp("OPTIONS");
    h.kind = Kind::Http;
    assert_eq!(both(src, &h).deciding_rule, "default");
    // The bundle records the list version; a pack that does not use the class has none.
    let p = policy::syntax::parse(src).unwrap();
    let b = Bundle::from_bytes(
        &policy::codegen::compile(&p).unwrap(),
        &Trust::AllowUnsigned,
    )
    .unwrap();
    assert_eq!(b.program().mcp_protocol, Some(bundle::protocol::LATEST));
    assert_eq!(b.program().classes[0].name, "mcp_protocol");
    let pinned = src.replace("default deny \"no\"", "default deny \"no\" mcp_protocol 1");
    let p = policy::syntax::parse(&pinned).unwrap();
    assert_eq!(policy::protocol::version(&p), 1);
    let p = policy::syntax::parse("pack \"p\" {}\nrule r { when true allow \"x\" }").unwrap();
    let b = Bundle::from_bytes(
        &policy::codegen::compile(&p).unwrap(),
        &Trust::AllowUnsigned,
    )
    .unwrap();
    assert_eq!(b.program().mcp_protocol, None);
    assert!(b.program().classes.is_empty());
}
