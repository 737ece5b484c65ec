//! Parser tests: every construct of the grammar, and exact rendered errors (line, column, caret,
//! hint) for a few mistakes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code outside #[test] fns (clippy.toml exempts only those): a failure is a failed test"
)]

use bundle::verdict::{Decision, Mode, RiskTier};
use policy::ast::EffectDef as EffectSpec;
use policy::ast::Lit as Literal;
use policy::ast::PathSegment as PathStep;
use policy::ast::VType as ValueType;
use policy::ast::*;
use policy::syntax::parse;

mod common;
use common::EVERYTHING;

#[test]
fn parses_every_construct() {
    let p = parse(EVERYTHING).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(p.pack.name.node, "everything");
    assert_eq!(p.pack.version.node, "2.1.0");
    assert_eq!(p.pack.mode, Mode::Warn);
    assert_eq!(p.pack.default.decision, Decision::Allow);
    assert_eq!(
        p.pack.unknown_session.step_up,
        Some(("oncall".to_owned(), 120))
    );
    assert_eq!(p.items.len(), 10);

    let Item::List(l) = &p.items[0] else { panic!() };
    assert_eq!(l.values.len(), 2);
    let Item::List(l) = &p.items[1] else { panic!() };
    assert_eq!(l.values[1].node, Literal::Num(8443.0));
    let Item::Class(c) = &p.items[4] else {
        panic!()
    };
    assert_eq!((c.risk, c.readonly), (RiskTier::Critical, false));
    let Item::Intent(i) = &p.items[5] else {
        panic!()
    };
    assert_eq!(i.classes.len(), 2);
    assert_eq!(i.limits.max_actions, Some(10));
    assert_eq!(i.limits.max_approvals, Some(2));
    assert_eq!(i.limits.max_egress_bytes, Some(10 * 1024 * 1024));
    assert_eq!(i.limits.max_duration_ms, Some(30 * 60_000));
    assert_eq!(i.outside.defer, Some(("ctx".to_owned(), 250)));
    let Item::ToolSchema(t) = &p.items[6] else {
        panic!()
    };
    assert_eq!(t.args.len(), 4);
    assert_eq!(t.args[3].path.node, vec!["odd key".to_owned()]);
    assert_eq!(t.args[3].ty, ValueType::Bool);

    let Item::Rule(r) = &p.items[7] else { panic!() };
    assert_eq!(r.mode, Some(Mode::Audit));
    let text = format!("{:?}", r.when);
    for needle in [
        "Header(\"x-api-key\")",
        "Header(\"content-type\")",
        "Num(65536.0)",
        "Num(1000000.0)",
        "Num(900000.0)",
        "PrincipalAuth(Human)",
        "Str(\"jwt\")",
        "RiskDataClasses",
        "SessionDrift",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }

    let Item::Rule(r) = &p.items[8] else { panic!() };
    assert_eq!(
        r.effects.iter().map(|e| e.node.clone()).collect::<Vec<_>>(),
        vec![
            EffectSpec::Taint("x".into()),
            EffectSpec::RevokeTool(Some("deploy".into())),
            EffectSpec::RevokeTool(None),
            EffectSpec::RevokeClass("writes".into()),
            EffectSpec::ReadOnly,
            EffectSpec::Kill,
        ]
    );
    let text = format!("{:?}", r.when);
    assert!(
        text.contains("Count(Spanned { node: Subject(\"git_push\")"),
        "{text}"
    );
    assert!(text.contains("600000, Ge, 3"), "{text}");
    assert!(text.contains("OutsideIntent"));

    let Item::Rule(r) = &p.items[9] else { panic!() };
    let mods: Vec<ModSpec> = r
        .decision
        .modifications
        .iter()
        .map(|m| m.node.clone())
        .collect();
    assert_eq!(mods.len(), 7);
    assert_eq!(
        mods[0],
        ModSpec::Clamp(vec![PathStep::Key("limit".into())], 1.0, 100.0)
    );
    assert_eq!(mods[6], ModSpec::RemoveTools(vec!["admin_*".into()]));
    let text = format!("{:?}", r.when);
    assert!(
        text.contains("[Key(\"opts\"), Key(\"deep\"), Index(0), Key(\"k\")]"),
        "{text}"
    );
    assert!(text.contains("Num(-1.5)"));
}

#[test]
fn precedence_not_and_or() {
    let p = parse("pack \"p\" {}\nrule r { when not true and false or true allow \"x\" }").unwrap();
    let Item::Rule(r) = &p.items[0] else { panic!() };
    // ((not true) and false) or true
    assert_eq!(
        r.when,
        Expr::Or(
            Box::new(Expr::And(
                Box::new(Expr::Not(Box::new(Expr::Const(true)))),
                Box::new(Expr::Const(false))
            )),
            Box::new(Expr::Const(true))
        )
    );
}

#[test]
fn string_escapes() {
    let p = parse(r#"pack "a\"b\\c\n\t\u{e9}" {}"#).unwrap();
    assert_eq!(p.pack.name.node, "a\"b\\c\n\té");
}

#[test]
fn omitted_pack_fields_default_to_deny() {
    let p = parse("pack \"p\" {}").unwrap();
    assert_eq!(p.pack.default.decision, Decision::Deny);
    assert_eq!(p.pack.unknown_session.decision, Decision::Deny);
    assert_eq!(p.pack.mode, Mode::Enforce);
    assert!(p.items.is_empty());
}

fn rendered(src: &str) -> String {
    parse(src)
        .expect_err("should fail")
        .iter()
        .map(|d| d.render("policy.pcl", src))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn unknown_field_points_at_it_with_a_suggestion() {
    let src = "pack \"p\" {\n  version \"1\"\n}\n\nrule r {\n  when target.hots == \"x\"\n  deny \"no\"\n}\n";
    assert_eq!(
        rendered(src),
        "error: unknown field `target.hots`\n --> policy.pcl:6:8\n  |\n6 |   when target.hots == \"x\"\n  |        ^^^^^^^^^^^\n  = help: did you mean `target.host`?\n"
    );
}

#[test]
fn missing_brace_is_reported_where_it_is_missing() {
    let src = "pack \"p\" {}\nrule r\n  when tool == \"x\"\n  deny \"no\"\n}\n";
    assert_eq!(
        rendered(src),
        "error: expected `{` after the rule name, found `when`\n --> policy.pcl:3:3\n  |\n3 |   when tool == \"x\"\n  |   ^^^^\n"
    );
}

#[test]
fn value_errors_are_all_reported_before_the_syntax_error() {
    let src = "pack \"p\" {}\nrule r {\n  when tool == \"deploy\"\n  step_up \"a\" { group \"ops\" timeout 1500ms }\n}\nrule q {\n  when args.x > 10 andd tool == \"y\"\n  deny \"no\"\n}\n";
    assert_eq!(
        rendered(src),
        "error: a step_up timeout must be a positive whole number of seconds\n --> policy.pcl:4:37\n  |\n4 |   step_up \"a\" { group \"ops\" timeout 1500ms }\n  |                                     ^^^^^^\n  = help: write e.g. `timeout 90s` or `timeout 15m`\n\nerror: expected `and`, `or` or a decision (`allow`, `deny`, `modify`, `step_up`, `defer`), found `andd`\n --> policy.pcl:7:20\n  |\n7 |   when args.x > 10 andd tool == \"y\"\n  |                    ^^^^\n"
    );
}

#[test]
fn other_syntax_errors() {
    let cases: &[(&str, &str)] = &[
        ("rule r {}", "expected `pack` at the start of the file"),
        (
            "pack \"p\" { mode warn mode audit }",
            "duplicate `mode` in the pack header",
        ),
        (
            "pack \"p\" {}\nintent i { outside deny \"a\" outside deny \"b\" }",
            "duplicate `outside`",
        ),
        (
            "pack \"p\" {}\nrule r { when true defer \"d\" { service \"s\" timeout 0ms } }",
            "defer timeout must be positive",
        ),
        (
            "pack \"p\" {}\nrule r { when true modify \"m\" { clamp args.x 1s..2 } }",
            "clamp bounds are plain numbers",
        ),
        (
            "pack \"p\" { colour \"red\" }",
            "unknown pack field `colour`",
        ),
        (
            "pack \"p\" {}\nrule r { when tool == \"x\" deny \"open",
            "unterminated string",
        ),
        (
            "pack \"p\" {}\nrule r { when tool == \"\\q\" deny \"x\" }",
            "unknown escape `\\q`",
        ),
        (
            "pack \"p\" {}\nintent i { max duration 30 }",
            "expected a duration, found `30`",
        ),
        (
            "pack \"p\" {}\nintent i { max egress_bytes 10 }",
            "expected a size, found `10`",
        ),
        (
            "pack \"p\" {}\nrule r { when tool == \"x\" modify \"m\" { } }",
            "needs at least one modification",
        ),
        (
            "pack \"p\" {}\nrule r { when tool = \"x\" deny \"d\" }",
            "expected a test after `tool`",
        ),
        (
            "pack \"p\" {}\nrule r { when tool == bogus deny \"d\" }",
            "expected a value, found `bogus`",
        ),
        (
            "pack \"p\" {}\nfoo",
            "expected `let`, `class`, `intent`, `tool` or `rule`, found `foo`",
        ),
        ("pack \"p\" {}\npack \"q\" {}", "a file holds one pack"),
        (
            "pack \"p\" {}\nrule r { when len(args.x) > 5s deny \"d\" }",
            "expected a plain number",
        ),
        (
            "pack \"p\" {}\nrule r { when tool == \"x\" deny \"d\" then explode }",
            "expected an effect",
        ),
        (
            "pack \"p\" {}\nrule r { when session.count(tool \"x\", within 99999999999999999999h) > 1 deny \"d\" }",
            "is too large",
        ),
    ];
    for (src, want) in cases {
        let got = rendered(src);
        assert!(
            got.contains(want),
            "for {src:?}\nwanted {want:?}\ngot {got}"
        );
        assert!(got.contains(" --> policy.pcl:"), "{got}");
    }
}

#[test]
fn garbage_never_panics() {
    for src in [
        "",
        "pack",
        "pack \"",
        "pack \"p\" {",
        "\u{0}\u{ffff}",
        "pack \"p\" {} rule r { when ((((",
        "pack \"p\" {} let x = [1,",
    ] {
        assert!(parse(src).is_err(), "{src:?}");
    }
}
