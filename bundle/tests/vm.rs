//! VM semantics against hand-written expectations (docs/policy-language.md, "Evaluation").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap, panic or index is a failed test"
)]

mod common;

use bundle::builtin;
use bundle::format::*;
use bundle::session::{SessionState, SessionStatus, name_hash};
use bundle::verdict::{Decision, Effect, Mode, Modification, PathSegment, RiskTier, StepUp};
use common::*;
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;

fn new_session() -> SessionState {
    SessionState::new(NOW)
}

fn active() -> SessionState {
    SessionState {
        status: SessionStatus::Active,
        started_ms: NOW - 10_000,
        ..SessionState::default()
    }
}

fn names(v: &bundle::verdict::Verdict) -> Vec<&str> {
    v.matched.iter().map(|m| m.rule.as_str()).collect()
}

#[test]
fn default_applies_only_when_nothing_enforced_or_warned() {
    let mut p = prog();
    p.rules
        .push(rule("r", when(tool_is("a")), dec(Decision::Allow, "ok")));
    let b = load(&p);
    let v = b.evaluate(&call("a", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(names(&v), ["r"]);
    assert_eq!(v.deciding_rule, "r");
    assert_eq!(v.reason, "ok");
    let v = b.evaluate(&call("b", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(names(&v), ["default"]);
    assert_eq!(v.reason, "not allowed");
}

#[test]
fn audit_match_does_not_suppress_default_and_does_not_decide() {
    let mut p = prog();
    let mut r = rule(
        "audited",
        when(tool_is("a")),
        dec(Decision::Deny, "would deny"),
    );
    r.mode = Mode::Audit;
    r.effects = vec![EffectDef::Kill];
    p.rules.push(r);
    p.default = dec(Decision::Allow, "default allow");
    let v = load(&p).evaluate(&call("a", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.would_be, Decision::Deny);
    assert_eq!(names(&v), ["audited", "default"]);
    assert_eq!(v.deciding_rule, "default");
    assert!(v.effects.is_empty(), "audit effects are not applied");
}

#[test]
fn warn_match_warns_and_allows() {
    let mut p = prog();
    let mut r = rule("w", when(tool_is("a")), dec(Decision::Deny, "careful"));
    r.mode = Mode::Warn;
    p.rules.push(r);
    let v = load(&p).evaluate(&call("a", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.would_be, Decision::Deny);
    assert_eq!(v.deciding_rule, "none");
    assert_eq!(v.reason, "");
    assert_eq!(v.warnings, ["w: careful"]);
    assert_eq!(names(&v), ["w"], "a warn match suppresses the default");
}

#[test]
fn strictness_not_file_order_and_deciding_rule_is_first_of_that_decision() {
    let mut p = prog();
    p.rules.push(rule(
        "allow_it",
        when(tool_is("a")),
        dec(Decision::Allow, "fine"),
    ));
    let su = DecisionDef {
        step_up: Some(StepUp {
            group: "g".into(),
            timeout_s: 60,
        }),
        ..dec(Decision::StepUp, "ask")
    };
    p.rules.push(rule("ask1", when(tool_is("a")), su.clone()));
    p.rules.push(rule("ask2", when(tool_is("a")), su));
    let v = load(&p).evaluate(&call("a", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::StepUp);
    assert_eq!(v.deciding_rule, "ask1");
    assert_eq!(
        v.step_up,
        Some(StepUp {
            group: "g".into(),
            timeout_s: 60
        })
    );
    assert_eq!(names(&v), ["allow_it", "ask1", "ask2"]);
}

#[test]
fn modifications_from_every_enforced_modify_and_only_when_modify_wins() {
    let mut p = prog();
    let m1 = DecisionDef {
        modifications: vec![Modification::RedactArg {
            path: vec![PathSegment::Key("a".into())],
        }],
        ..dec(Decision::Modify, "m1")
    };
    let m2 = DecisionDef {
        modifications: vec![Modification::RedactSecrets],
        ..dec(Decision::Modify, "m2")
    };
    p.rules.push(rule("m1", when(tool_is("a")), m1));
    p.rules.push(rule("m2", when(Pred::Const(true)), m2));
    p.rules
        .push(rule("d", when(tool_is("b")), dec(Decision::Deny, "no")));
    let b = load(&p);
    let v = b.evaluate(&call("a", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(v.modifications.len(), 2);
    assert_eq!(v.modifications[1], Modification::RedactSecrets);
    let v = b.evaluate(&call("b", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::Deny);
    assert!(v.modifications.is_empty());
}

#[test]
fn effects_dedup_in_order_and_revoke_tool_alone_names_the_subject() {
    let mut p = prog();
    let mut r1 = rule("r1", when(tool_is("x")), dec(Decision::Deny, "no"));
    r1.effects = vec![EffectDef::Taint("t".into()), EffectDef::RevokeTool(None)];
    let mut r2 = rule("r2", when(Pred::Const(true)), dec(Decision::Allow, "ok"));
    r2.effects = vec![
        EffectDef::RevokeTool(Some("x".into())),
        EffectDef::ReadOnly,
        EffectDef::Taint("t".into()),
    ];
    p.rules = vec![r1, r2];
    let v = load(&p).evaluate(&call("x", json!({})), &new_session(), NOW);
    assert_eq!(
        v.effects,
        [
            Effect::Taint("t".into()),
            Effect::RevokeTool("x".into()),
            Effect::ReadOnly
        ]
    );
}

#[test]
fn missing_fields_make_every_comparison_false_including_ne() {
    let mut p = prog();
    let ne = Pred::Cmp(
        FieldRef::Arg(vec![PathSegment::Key("env".into())]),
        CmpOp::Ne,
        Lit::Str("prod".into()),
    );
    p.rules.push(rule(
        "ne",
        when(ne.clone()),
        dec(Decision::Allow, "not prod"),
    ));
    let not_ne = vec![Instr {
        pred: ne,
        negated: true,
        on_true: Jump::Reject,
        on_false: Jump::Accept,
    }];
    p.rules
        .push(rule("not_ne", not_ne, dec(Decision::Allow, "negated")));
    let b = load(&p);
    let v = b.evaluate(&call("deploy", json!({})), &new_session(), NOW);
    assert_eq!(names(&v), ["not_ne"]);
    let v = b.evaluate(&call("deploy", json!({"env": "dev"})), &new_session(), NOW);
    assert_eq!(names(&v), ["ne"]);
    // A value of another type makes the test unknown: neither `env != "prod"` nor
    // `not (env != "prod")` holds, so neither ALLOW rule matches.
    let v = b.evaluate(&call("deploy", json!({"env": 3})), &new_session(), NOW);
    assert_eq!(names(&v), ["default"]);
}

#[test]
fn value_predicates() {
    let arg = |k: &str| FieldRef::Arg(vec![PathSegment::Key(k.into())]);
    let mut p = prog();
    p.matchers = vec![
        MatcherDef::Set {
            strs: vec!["a".into(), "b".into()],
            nums: vec![5.0],
            bools: vec![],
        },
        MatcherDef::Globs(vec!["deps/*".into(), "x?".into()]),
        MatcherDef::Prefixes(vec!["/etc".into()]),
        MatcherDef::Regex {
            pattern: "[0-9]+".into(),
            dfa: regex_dfa("[0-9]+"),
        },
    ];
    let cases: Vec<(&str, Pred)> = vec![
        ("in_str", Pred::In(arg("s"), 0)),
        ("in_num", Pred::In(arg("n"), 0)),
        ("glob", Pred::Glob(arg("s"), 1)),
        ("prefix", Pred::Prefix(arg("s"), 2)),
        ("regex", Pred::Matches(arg("s"), 3)),
        ("lt", Pred::Cmp(arg("n"), CmpOp::Lt, Lit::Num(10.0))),
        ("len", Pred::Len(arg("s"), CmpOp::Ge, 3.0)),
        ("len_arr", Pred::Len(arg("l"), CmpOp::Eq, 2.0)),
        ("contains", Pred::Contains(arg("l"), "pii".into())),
        ("is_arr", Pred::Is(arg("l"), VType::Array)),
        ("present", Pred::Present(arg("z"))),
        ("bool", Pred::Cmp(arg("f"), CmpOp::Eq, Lit::Bool(true))),
    ];
    for (name, pred) in cases {
        p.rules
            .push(rule(name, when(pred), dec(Decision::Allow, name)));
    }
    let b = load(&p);
    let run = |args| {
        let v = b.evaluate(&call("t", args), &new_session(), NOW);
        v.matched
            .iter()
            .map(|m| m.rule.clone())
            .filter(|r| r != "default")
            .collect::<Vec<_>>()
    };
    assert_eq!(run(json!({"s": "a", "n": 5})), ["in_str", "in_num", "lt"]);
    assert_eq!(run(json!({"s": "deps/lodash", "n": 11})), ["glob", "len"]);
    assert_eq!(run(json!({"s": "xy"})), ["glob"]);
    assert_eq!(run(json!({"s": "/etc/passwd"})), ["prefix", "len"]);
    assert_eq!(run(json!({"s": "12345"})), ["regex", "len"]);
    assert_eq!(
        run(json!({"s": "12a"})),
        ["len"],
        "regex is a whole-value match"
    );
    assert_eq!(
        run(json!({"l": ["pii", "x"], "f": true})),
        ["len_arr", "contains", "is_arr", "bool"]
    );
    assert_eq!(
        run(json!({"z": null})),
        Vec::<String>::new(),
        "null is not present"
    );
    assert_eq!(run(json!({"z": 0})), ["present"]);
    assert_eq!(
        run(json!({"s": "日本語"})),
        ["len"],
        "len counts characters"
    );
}

#[test]
fn classes_risk_and_in_class() {
    let mut p = prog();
    p.classes = vec![
        ClassDef {
            name: "low".into(),
            risk: RiskTier::Low,
            readonly: true,
            code: when(Pred::Const(true)),
        },
        ClassDef {
            name: "crit".into(),
            risk: RiskTier::Critical,
            readonly: false,
            code: when(tool_is("rm")),
        },
    ];
    p.rules.push(rule(
        "crit_rule",
        when(Pred::InClass(1)),
        dec(Decision::Deny, "critical"),
    ));
    let b = load(&p);
    let v = b.evaluate(&call("rm", json!({})), &new_session(), NOW);
    assert_eq!(v.classes, ["low", "crit"]);
    assert_eq!(v.risk, RiskTier::Critical);
    assert_eq!(v.deciding_rule, "crit_rule");
    let v = b.evaluate(&call("ls", json!({})), &new_session(), NOW);
    assert_eq!(v.classes, ["low"]);
    assert_eq!(v.risk, RiskTier::Low);
}

#[test]
fn session_builtins_in_table_order() {
    let mut p = prog();
    p.classes = vec![ClassDef {
        name: "reads".into(),
        risk: RiskTier::Low,
        readonly: true,
        code: when(tool_is("read")),
    }];
    p.rules.push(rule(
        "ok",
        when(Pred::Const(true)),
        dec(Decision::Allow, "ok"),
    ));
    p.unknown_session = dec(Decision::Deny, "lost");
    let b = load(&p);
    // missing
    let s = SessionState {
        status: SessionStatus::Missing,
        ..SessionState::default()
    };
    let v = b.evaluate(&call("x", json!({})), &s, NOW);
    assert_eq!(names(&v), ["session:unknown", "ok"]);
    assert_eq!(v.deciding_rule, "session:unknown");
    assert_eq!(v.reason, "lost");
    // killed + revoked
    let mut s = active();
    s.killed = true;
    s.revoked_tools.push(name_hash("x"));
    let v = b.evaluate(&call("x", json!({})), &s, NOW);
    assert_eq!(
        names(&v),
        [builtin::SESSION_KILLED, builtin::SESSION_REVOKED, "ok"]
    );
    assert_eq!(v.deciding_rule, builtin::SESSION_KILLED);
    assert_eq!(v.reason, builtin::KILLED_REASON);
    // revoked class
    let mut s = active();
    s.revoked_classes.push(name_hash("reads"));
    let v = b.evaluate(&call("read", json!({})), &s, NOW);
    assert_eq!(v.deciding_rule, builtin::SESSION_REVOKED);
    // read-only: writes denied, readonly classes and GETs allowed
    let mut s = active();
    s.read_only = true;
    assert_eq!(
        b.evaluate(&call("write", json!({})), &s, NOW).deciding_rule,
        builtin::SESSION_READ_ONLY
    );
    assert_eq!(
        b.evaluate(&call("read", json!({})), &s, NOW).decision,
        Decision::Allow
    );
    assert_eq!(
        b.evaluate(&http("GET", "h", 0), &s, NOW).decision,
        Decision::Allow
    );
    assert_eq!(
        b.evaluate(&http("POST", "h", 0), &s, NOW).decision,
        Decision::Deny
    );
}

fn intent_prog() -> Program {
    let mut p = prog();
    p.classes = vec![ClassDef {
        name: "reads".into(),
        risk: RiskTier::Low,
        readonly: true,
        code: when(tool_is("read_file")),
    }];
    p.intents = vec![IntentDef {
        name: "deps".into(),
        classes: vec![0],
        tools: vec!["git_*".into()],
        hosts: vec!["*.npmjs.org".into()],
        data: vec!["public".into()],
        max_actions: Some(10),
        max_egress_bytes: Some(1000),
        max_duration_ms: Some(60_000),
        max_approvals: Some(1),
        outside: dec(Decision::Deny, "outside deps"),
    }];
    p.rules.push(rule(
        "ok",
        when(Pred::Const(true)),
        dec(Decision::Allow, "ok"),
    ));
    p
}

#[test]
fn intents_scope_acting_operations() {
    let b = load(&intent_prog());
    let mut a = call("git_push", json!({}));
    a.declared_intent = Some("deps".into());
    a.intent_source = bundle::action::IntentSource::Grant;
    let v = b.evaluate(&a, &new_session(), NOW);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.intent.as_deref(), Some("deps"));
    let mut s = active();
    s.intent = Some("deps".into());
    let v = b.evaluate(&call("read_file", json!({})), &s, NOW);
    assert_eq!(v.decision, Decision::Allow);
    let v = b.evaluate(&call("send_email", json!({})), &s, NOW);
    assert_eq!(v.deciding_rule, "intent:deps");
    assert_eq!(v.reason, "outside deps");
    // protocol messages are always in scope
    let mut list = call("x", json!({}));
    list.tool = None;
    list.operation = "tools/list".into();
    assert_eq!(b.evaluate(&list, &s, NOW).decision, Decision::Allow);
    // hosts for HTTP
    assert_eq!(
        b.evaluate(&http("GET", "registry.npmjs.org", 0), &s, NOW)
            .decision,
        Decision::Allow
    );
    assert_eq!(
        b.evaluate(&http("GET", "exfil.example", 0), &s, NOW)
            .deciding_rule,
        "intent:deps"
    );
    // data classes must be allowed
    let mut a = call("git_push", json!({}));
    a.risk.data_classes = vec!["pii".into()];
    assert_eq!(b.evaluate(&a, &s, NOW).deciding_rule, "intent:deps");
    // unknown intent
    let mut a = call("git_push", json!({}));
    a.declared_intent = Some("nope".into());
    a.intent_source = bundle::action::IntentSource::Grant;
    let v = b.evaluate(&a, &new_session(), NOW);
    assert_eq!(v.deciding_rule, builtin::INTENT_UNKNOWN);
    assert_eq!(v.intent, None);
}

#[test]
fn stop_conditions() {
    let b = load(&intent_prog());
    let mut s = active();
    s.intent = Some("deps".into());
    s.actions = 10;
    assert_eq!(
        b.evaluate(&call("git_push", json!({})), &s, NOW)
            .deciding_rule,
        "stop:max_actions"
    );
    let mut s = active();
    s.intent = Some("deps".into());
    s.egress_bytes = 900;
    assert_eq!(
        b.evaluate(&http("POST", "registry.npmjs.org", 100), &s, NOW)
            .decision,
        Decision::Allow
    );
    assert_eq!(
        b.evaluate(&http("POST", "registry.npmjs.org", 101), &s, NOW)
            .deciding_rule,
        "stop:max_egress_bytes"
    );
    let mut s = active();
    s.intent = Some("deps".into());
    s.started_ms = NOW - 60_001;
    assert_eq!(
        b.evaluate(&call("git_push", json!({})), &s, NOW)
            .deciding_rule,
        "stop:max_duration"
    );
}

#[test]
fn approvals_stop_turns_step_up_into_deny() {
    let mut p = intent_prog();
    p.rules.push(rule(
        "ask",
        when(tool_is("git_push")),
        DecisionDef {
            step_up: Some(StepUp {
                group: "g".into(),
                timeout_s: 5,
            }),
            ..dec(Decision::StepUp, "ask")
        },
    ));
    let b = load(&p);
    let mut s = active();
    s.intent = Some("deps".into());
    let v = b.evaluate(&call("git_push", json!({})), &s, NOW);
    assert_eq!(v.decision, Decision::StepUp);
    s.approvals = 1;
    let v = b.evaluate(&call("git_push", json!({})), &s, NOW);
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "stop:max_approvals");
    assert_eq!(v.step_up, None);
    assert_eq!(names(&v), ["ok", "ask", "stop:max_approvals"]);
}

#[test]
fn session_history_predicates() {
    let mut p = prog();
    p.rules.push(rule(
        "tainted",
        when(Pred::Tainted(name_hash("secret"))),
        dec(Decision::Allow, "a"),
    ));
    p.rules.push(rule(
        "used",
        when(Pred::Used(name_hash("read_file"))),
        dec(Decision::Allow, "b"),
    ));
    p.rules.push(rule(
        "seen",
        when(Pred::Seen(name_hash("reads"))),
        dec(Decision::Allow, "c"),
    ));
    p.rules.push(rule(
        "count",
        when(Pred::CountSubject(
            name_hash("read_file"),
            5_000,
            CmpOp::Ge,
            2,
        )),
        dec(Decision::Allow, "d"),
    ));
    let b = load(&p);
    let mut s = active();
    s.taints.push(name_hash("secret"));
    s.class_table.push(name_hash("reads"));
    for at in [1_000u32, 6_000, 8_000] {
        s.history.push(bundle::session::HistoryEntry {
            at_ms: at,
            subject: name_hash("read_file"),
            classes: 1,
        });
    }
    // now = started + 10 s: entries at 6 s and 8 s are within 5 s
    let v = b.evaluate(&call("x", json!({})), &s, NOW);
    assert_eq!(names(&v), ["tainted", "used", "seen", "count"]);
    s.history.remove(1);
    let v = b.evaluate(&call("x", json!({})), &s, NOW);
    assert_eq!(names(&v), ["tainted", "used", "seen"]);
}

#[test]
fn rule_index_visits_pinned_and_wildcard_rules_in_table_order() {
    let mut p = prog();
    let mut by_tool = rule("by_tool", when(tool_is("a")), dec(Decision::Allow, "t"));
    by_tool.pins.tools = vec!["a".into()];
    let mut by_host = rule(
        "by_host",
        when(Pred::Cmp(FieldRef::Host, CmpOp::Eq, Lit::Str("h".into()))),
        dec(Decision::Allow, "h"),
    );
    by_host.pins.hosts = vec!["h".into()];
    let mut by_op = rule(
        "by_op",
        when(Pred::Cmp(
            FieldRef::Operation,
            CmpOp::Eq,
            Lit::Str("GET".into()),
        )),
        dec(Decision::Allow, "o"),
    );
    by_op.pins.operations = vec!["GET".into()];
    let mut mcp_only = rule(
        "mcp_wild",
        when(Pred::Const(true)),
        dec(Decision::Allow, "m"),
    );
    mcp_only.pins.kind = Some(bundle::action::Kind::Mcp);
    let wild = rule("wild", when(Pred::Const(true)), dec(Decision::Allow, "w"));
    p.rules = vec![wild, by_op, mcp_only, by_host, by_tool];
    let b = load(&p);
    assert_eq!(
        names(&b.evaluate(&call("a", json!({})), &new_session(), NOW)),
        ["wild", "mcp_wild", "by_tool"]
    );
    assert_eq!(
        names(&b.evaluate(&http("GET", "h", 0), &new_session(), NOW)),
        ["wild", "by_op", "by_host"]
    );
    assert_eq!(
        names(&b.evaluate(&http("PUT", "z", 0), &new_session(), NOW)),
        ["wild"]
    );
}

#[test]
fn step_budget_exhaustion_denies() {
    let mut p = prog();
    for i in 0..10 {
        p.rules.push(rule(
            &format!("r{i}"),
            when(Pred::Const(true)),
            dec(Decision::Allow, "ok"),
        ));
    }
    let bytes = bundle::encode(&p);
    let limits = bundle::Limits {
        max_steps: 5,
        ..bundle::Limits::default()
    };
    let b = bundle::Bundle::from_bytes_with_limits(&bytes, &bundle::Trust::AllowUnsigned, &limits)
        .unwrap();
    let v = b.evaluate(&call("a", json!({})), &new_session(), NOW);
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, builtin::VM_STEP_LIMIT);
    // the default budget is enough
    let b = load(&p);
    assert_eq!(
        b.evaluate(&call("a", json!({})), &new_session(), NOW)
            .decision,
        Decision::Allow
    );
}

#[test]
fn rich_program_decides_as_written() {
    let b = load(&rich());
    let mut s = active();
    let v = b.evaluate(&call("git_push", json!({"branch": "deps/lodash"})), &s, NOW);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.deciding_rule, "bounded_push");
    let v = b.evaluate(&call("deploy", json!({"env": "production"})), &s, NOW);
    assert_eq!(
        v.decision,
        Decision::Allow,
        "a warn match suppresses the default and does not block"
    );
    assert_eq!(v.would_be, Decision::StepUp);
    assert_eq!(
        v.warnings,
        ["prod_deploy: production deploys need a release manager"]
    );
    s.taints.push(name_hash("untrusted_instruction"));
    let v = b.evaluate(&call("get_secret", json!({"name": "x"})), &s, NOW);
    assert_eq!(
        v.effects,
        [Effect::Kill, Effect::RevokeTool("get_secret".into())]
    );
    assert_eq!(v.risk, RiskTier::High);
    let v = b.evaluate(
        &call("send_email", json!({"body": "sk-abc", "limit": [500]})),
        &s,
        NOW,
    );
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(names(&v), ["redact_keys"]);
    assert_eq!(v.modifications.len(), 3);
    assert_eq!(v.effects, [Effect::Taint("secret".into())]);
    let mut a = call("x", json!({}));
    a.tool = None;
    a.target.path = "/repo/a".into();
    let v = b.evaluate(&a, &s, NOW);
    assert_eq!(v.decision, Decision::Defer);
    assert_eq!(v.defer.as_ref().map(|d| d.timeout_ms), Some(250));
    // `query_db` declares `args.limit: number coerce`: "100" is evaluated as 100, so the
    // negated `args.limit <= 20` holds; the coercion comes first in the modifications.
    let s = active();
    let v = b.evaluate(&call("query_db", json!({"limit": "100"})), &s, NOW);
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(names(&v), ["bounded_rows", "args:coerce"]);
    assert_eq!(v.deciding_rule, "bounded_rows");
    let limit = vec![PathSegment::Key("limit".into())];
    assert_eq!(
        v.modifications,
        [
            Modification::CoerceArg {
                path: limit.clone(),
                value: json!(100)
            },
            Modification::CoerceArg {
                path: limit,
                value: json!(20)
            },
        ]
    );
    let v = b.evaluate(&call("query_db", json!({"limit": 5, "sql": 1})), &s, NOW);
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "args:type");
    assert_eq!(
        v.reason,
        "argument `args.sql` of tool `query_db` is a number, but the policy declares it `string`"
    );
}
