//! Reference interpreter tests: one per rule of the "Evaluation" section of
//! `docs/policy-language.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code outside #[test] fns (clippy.toml exempts only those): a failure is a failed test"
)]

use bundle::action::{Action, Kind};
use bundle::session::{HistoryEntry, SessionState, SessionStatus, name_hash};
use bundle::verdict::{Decision, Effect, Mode, Modification, PathSegment, RiskTier, Verdict};
use policy::interp::evaluate;
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;

fn pol(src: &str) -> policy::ast::Policy {
    policy::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"))
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

fn http(method: &str, host: &str) -> Action {
    let mut a = Action {
        kind: Kind::Http,
        operation: method.into(),
        ..Action::default()
    };
    a.target.host = host.into();
    a
}

fn eval(src: &str, a: &Action) -> Verdict {
    evaluate(&pol(src), a, &SessionState::default(), NOW)
}

fn active() -> SessionState {
    SessionState {
        status: SessionStatus::Active,
        started_ms: NOW - 60_000,
        ..SessionState::default()
    }
}

fn rules(v: &Verdict) -> Vec<&str> {
    v.matched.iter().map(|m| m.rule.as_str()).collect()
}

#[test]
fn strictest_enforced_decision_wins_not_file_order() {
    let src = r#"pack "p" { default deny "d" }
rule a { when tool == "x" allow "a" }
rule b { when tool == "x" modify "m" { redact args.k } }
rule c { when tool == "x" deny "c" }
rule d { when tool == "x" step_up "s" { group "g" timeout 1m } }
rule e { when tool == "x" defer "e" { service "ctx" timeout 200ms } }"#;
    let v = eval(src, &call("x", json!({"k": 1})));
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "c");
    assert_eq!(v.reason, "c");
    assert_eq!(rules(&v), ["a", "b", "c", "d", "e"]);
    assert!(
        v.modifications.is_empty(),
        "modifications only when the decision is MODIFY"
    );
    assert_eq!(v.step_up, None);
    // Without the deny: STEP_UP > DEFER > MODIFY > ALLOW.
    let v = eval(
        &src.replace("rule c { when tool == \"x\" deny \"c\" }", ""),
        &call("x", json!({})),
    );
    assert_eq!(v.decision, Decision::StepUp);
    assert_eq!(
        v.step_up,
        Some(bundle::verdict::StepUp {
            group: "g".into(),
            timeout_s: 60
        })
    );
    let v = eval(
        &src.replace("rule c { when tool == \"x\" deny \"c\" }", "")
            .replace("step_up \"s\" { group \"g\" timeout 1m }", "allow \"s\""),
        &call("x", json!({})),
    );
    assert_eq!(v.decision, Decision::Defer);
    assert_eq!(
        v.defer,
        Some(bundle::verdict::Defer {
            service: "ctx".into(),
            timeout_ms: 200
        })
    );
}

#[test]
fn deciding_rule_is_the_first_enforced_match_with_the_decision() {
    let src = r#"pack "p" {}
rule first { when tool == "x" deny "one" }
rule second { when tool == "x" deny "two" }"#;
    let v = eval(src, &call("x", json!(null)));
    assert_eq!(
        (v.deciding_rule.as_str(), v.reason.as_str()),
        ("first", "one")
    );
}

#[test]
fn audit_records_but_never_decides_and_applies_no_effects() {
    let src = r#"pack "p" { default allow "open" }
rule watch mode audit { when tool == "x" deny "would deny" then kill }"#;
    let v = eval(src, &call("x", json!(null)));
    // Only an audit match: the default is added, and decides.
    assert_eq!(rules(&v), ["watch", "default"]);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.would_be, Decision::Deny);
    assert_eq!(v.deciding_rule, "default");
    assert!(v.effects.is_empty());
    assert!(v.warnings.is_empty());
    assert_eq!(v.matched[0].mode, Mode::Audit);
}

#[test]
fn warn_allows_with_a_warning_and_suppresses_the_default() {
    let src = r#"pack "p" { default deny "closed" }
rule soon mode warn { when tool == "x" deny "will be denied" then kill }"#;
    let v = eval(src, &call("x", json!(null)));
    assert_eq!(rules(&v), ["soon"], "a warn match means no default");
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.would_be, Decision::Deny);
    assert_eq!(v.deciding_rule, "none");
    assert_eq!(v.reason, "");
    assert_eq!(v.warnings, ["soon: will be denied"]);
    assert!(v.effects.is_empty(), "warn-mode effects are not applied");
    // A warn-mode ALLOW produces no warning.
    let v = eval(
        &src.replace("deny \"will be denied\"", "allow \"fine\""),
        &call("x", json!(null)),
    );
    assert!(v.warnings.is_empty());
}

#[test]
fn pack_mode_applies_to_rules_without_one_and_to_the_default() {
    let src = r#"pack "p" { mode audit default deny "closed" }
rule r { when tool == "x" deny "no" }
rule e mode enforce { when tool == "y" deny "no" }"#;
    let v = eval(src, &call("x", json!(null)));
    assert_eq!(rules(&v), ["r", "default"]);
    assert!(v.matched.iter().all(|m| m.mode == Mode::Audit));
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.would_be, Decision::Deny);
    let v = eval(src, &call("y", json!(null)));
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "e");
}

#[test]
fn default_only_when_nothing_enforced_or_warned() {
    let src = r#"pack "p" { default deny "closed" }
rule ok { when tool == "read" allow "fine" }"#;
    let v = eval(src, &call("read", json!(null)));
    assert_eq!(rules(&v), ["ok"]);
    assert_eq!(v.decision, Decision::Allow);
    let v = eval(src, &call("write", json!(null)));
    assert_eq!(rules(&v), ["default"]);
    assert_eq!(
        (v.decision, v.deciding_rule.as_str(), v.reason.as_str()),
        (Decision::Deny, "default", "closed")
    );
}

#[test]
fn modifications_of_every_enforced_modify_match_in_order() {
    let src = r#"pack "p" {}
rule a { when tool == "q" modify "a" { clamp args.limit 1..100 } }
rule b mode warn { when tool == "q" modify "b" { redact args.x } }
rule c { when tool == "q" modify "c" { drop args.y; strip_header "authorization" } }"#;
    let v = eval(src, &call("q", json!({"limit": 500})));
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(v.deciding_rule, "a");
    assert_eq!(
        v.modifications,
        vec![
            Modification::ClampArg {
                path: vec![PathSegment::Key("limit".into())],
                min: 1.0,
                max: 100.0
            },
            Modification::DropArg {
                path: vec![PathSegment::Key("y".into())]
            },
            Modification::StripHeader {
                name: "authorization".into()
            },
        ]
    );
    assert_eq!(v.warnings, ["b: b"]);
}

#[test]
fn effects_of_every_enforced_match_deduplicated_in_order() {
    let src = r#"pack "p" {}
rule a { when tool == "t" allow "a" then taint "secret", revoke tool }
rule b { when tool == "t" deny "b" then taint "secret", revoke tool "t", revoke class c, read_only, kill }
class c risk high { when tool == "t" }"#;
    let v = eval(src, &call("t", json!(null)));
    assert_eq!(
        v.effects,
        vec![
            Effect::Taint("secret".into()),
            Effect::RevokeTool("t".into()),
            Effect::RevokeClass("c".into()),
            Effect::ReadOnly,
            Effect::Kill,
        ]
    );
}

#[test]
fn revoke_tool_alone_names_the_subject() {
    let src = r#"pack "p" {}
rule a { when true deny "a" then revoke tool }"#;
    assert_eq!(
        eval(src, &call("deploy", json!(null))).effects,
        [Effect::RevokeTool("deploy".into())]
    );
    assert_eq!(
        eval(src, &http("POST", "exfil.example")).effects,
        [Effect::RevokeTool("exfil.example".into())]
    );
    let prompt = Action {
        operation: "prompts/get".into(),
        prompt: Some("summarize".into()),
        ..Action::default()
    };
    assert_eq!(
        eval(src, &prompt).effects,
        [Effect::RevokeTool("summarize".into())]
    );
}

#[test]
fn classes_and_risk() {
    let src = r#"pack "p" { default allow "ok" }
class reads risk low readonly { when tool glob "read_*" }
class files risk high { when tool glob "*_file" }
class dangerous risk critical { when class files and not class reads }"#;
    let v = eval(src, &call("read_file", json!(null)));
    assert_eq!(v.classes, ["reads", "files"]);
    assert_eq!(v.risk, RiskTier::High);
    let v = eval(src, &call("write_file", json!(null)));
    assert_eq!(v.classes, ["files", "dangerous"]);
    assert_eq!(v.risk, RiskTier::Critical);
    assert_eq!(eval(src, &call("x", json!(null))).risk, RiskTier::Low);
}

#[test]
fn missing_session_uses_unknown_session_in_pack_mode() {
    let src = r#"pack "p" { unknown_session deny "state lost" default allow "ok" }"#;
    let s = SessionState {
        status: SessionStatus::Missing,
        ..SessionState::default()
    };
    let v = evaluate(&pol(src), &call("x", json!(null)), &s, NOW);
    assert_eq!(rules(&v), ["session:unknown"]);
    assert_eq!(
        (v.decision, v.reason.as_str()),
        (Decision::Deny, "state lost")
    );
    let v = evaluate(
        &pol(&src.replace("{ unknown", "{ mode audit unknown")),
        &call("x", json!(null)),
        &s,
        NOW,
    );
    assert_eq!(rules(&v), ["session:unknown", "default"]);
    assert_eq!(v.decision, Decision::Allow);
}

#[test]
fn killed_revoked_and_read_only_sessions() {
    let src = r#"pack "p" { default allow "ok" }
class reads risk low readonly { when tool == "read_file" }
class net risk medium { when kind == http }"#;
    let p = pol(src);
    let killed = SessionState {
        killed: true,
        ..active()
    };
    let v = evaluate(&p, &call("read_file", json!(null)), &killed, NOW);
    assert_eq!(
        (v.decision, v.deciding_rule.as_str()),
        (Decision::Deny, "session:killed")
    );
    assert_eq!(v.reason, "the session was killed");

    let revoked = SessionState {
        revoked_tools: vec![name_hash("deploy")],
        ..active()
    };
    assert_eq!(
        evaluate(&p, &call("deploy", json!(null)), &revoked, NOW).deciding_rule,
        "session:revoked"
    );
    assert_eq!(
        evaluate(&p, &call("read_file", json!(null)), &revoked, NOW).decision,
        Decision::Allow
    );
    let revoked_class = SessionState {
        revoked_classes: vec![name_hash("net")],
        ..active()
    };
    assert_eq!(
        evaluate(&p, &http("GET", "a.example"), &revoked_class, NOW).deciding_rule,
        "session:revoked"
    );

    let ro = SessionState {
        read_only: true,
        ..active()
    };
    assert_eq!(
        evaluate(&p, &call("write_file", json!(null)), &ro, NOW).deciding_rule,
        "session:read_only"
    );
    assert_eq!(
        evaluate(&p, &call("read_file", json!(null)), &ro, NOW).decision,
        Decision::Allow,
        "readonly class"
    );
    assert_eq!(
        evaluate(&p, &http("GET", "a.example"), &ro, NOW).decision,
        Decision::Allow,
        "GET reads"
    );
    assert_eq!(
        evaluate(&p, &http("POST", "a.example"), &ro, NOW).deciding_rule,
        "session:read_only"
    );
    let list = Action {
        operation: "tools/list".into(),
        ..Action::default()
    };
    assert_eq!(
        evaluate(&p, &list, &ro, NOW).decision,
        Decision::Allow,
        "protocol messages are not writes"
    );
}

const INTENTS: &str = r#"pack "p" { default allow "ok" }
class reads risk low readonly { when tool == "read_file" }
intent fix {
  allow class [reads]
  allow tool ["git_*"]
  allow host ["*.npmjs.org"]
  allow data ["pii"]
  max actions 5
  max egress_bytes 1KB
  max duration 10m
  max approvals 1
  outside deny "not part of the fix"
}
rule deploy { when tool == "deploy" step_up "approve" { group "g" timeout 1m } }
rule outside_rule { when intent.outside and tool == "rm" deny "outside" }"#;

fn with_intent(a: Action) -> Action {
    Action {
        declared_intent: Some("fix".into()),
        intent_source: bundle::action::IntentSource::Grant,
        ..a
    }
}

#[test]
fn intents_scope_acting_operations() {
    let p = pol(INTENTS);
    let s = SessionState::default();
    let v = evaluate(&p, &with_intent(call("read_file", json!(null))), &s, NOW);
    assert_eq!(
        (v.decision, v.intent.as_deref()),
        (Decision::Allow, Some("fix")),
        "in a class"
    );
    assert_eq!(
        evaluate(&p, &with_intent(call("git_push", json!(null))), &s, NOW).decision,
        Decision::Allow,
        "tool glob"
    );
    assert_eq!(
        evaluate(&p, &with_intent(http("GET", "registry.npmjs.org")), &s, NOW).decision,
        Decision::Allow,
        "host glob"
    );
    let v = evaluate(&p, &with_intent(call("rm", json!(null))), &s, NOW);
    assert_eq!(rules(&v), ["intent:fix", "outside_rule"]);
    assert_eq!(
        (v.decision, v.deciding_rule.as_str(), v.reason.as_str()),
        (Decision::Deny, "intent:fix", "not part of the fix")
    );
    // Protocol messages are always in scope.
    let init = with_intent(Action {
        operation: "initialize".into(),
        ..Action::default()
    });
    assert_eq!(evaluate(&p, &init, &s, NOW).decision, Decision::Allow);
    // Data classes outside `allow data`.
    let mut a = with_intent(call("read_file", json!(null)));
    a.risk.data_classes = vec!["pii".into(), "credential".into()];
    assert_eq!(evaluate(&p, &a, &s, NOW).deciding_rule, "intent:fix");
}

#[test]
fn intent_is_pinned_after_the_first_action_and_unknown_intents_are_denied() {
    let p = pol(INTENTS);
    // An active session uses its pinned intent, whatever the action declares.
    let pinned = SessionState {
        intent: Some("fix".into()),
        ..active()
    };
    let mut a = call("rm", json!(null));
    a.declared_intent = Some("other".into());
    a.intent_source = bundle::action::IntentSource::Grant;
    let v = evaluate(&p, &a, &pinned, NOW);
    assert_eq!(
        (v.deciding_rule.as_str(), v.intent.as_deref()),
        ("intent:fix", Some("fix"))
    );
    // Declaring an intent the pack does not define.
    let v = evaluate(&p, &a, &SessionState::default(), NOW);
    assert_eq!(
        (v.deciding_rule.as_str(), v.intent.as_deref()),
        ("intent:unknown", None)
    );
    assert_eq!(
        v.reason,
        "the declared intent is not defined by this policy"
    );
    // No intent at all: `intent.outside` is false.
    let v = evaluate(&p, &call("rm", json!(null)), &SessionState::default(), NOW);
    assert_eq!((v.decision, v.intent.clone()), (Decision::Allow, None));
}

#[test]
fn stop_conditions() {
    let p = pol(INTENTS);
    let base = SessionState {
        intent: Some("fix".into()),
        ..active()
    };
    let read = call("read_file", json!(null));
    let s = SessionState {
        actions: 5,
        ..base.clone()
    };
    assert_eq!(
        evaluate(&p, &read, &s, NOW).deciding_rule,
        "stop:max_actions"
    );
    let s = SessionState {
        actions: 4,
        ..base.clone()
    };
    assert_eq!(evaluate(&p, &read, &s, NOW).decision, Decision::Allow);
    let mut post = http("GET", "registry.npmjs.org");
    post.size = 600;
    let s = SessionState {
        egress_bytes: 400,
        ..base.clone()
    };
    assert_eq!(
        evaluate(&p, &post, &s, NOW).decision,
        Decision::Allow,
        "400 + 600 = 1KB is not over"
    );
    let s = SessionState {
        egress_bytes: 401,
        ..base.clone()
    };
    assert_eq!(
        evaluate(&p, &post, &s, NOW).deciding_rule,
        "stop:max_egress_bytes"
    );
    let s = SessionState {
        started_ms: NOW - 600_001,
        ..base.clone()
    };
    assert_eq!(
        evaluate(&p, &read, &s, NOW).deciding_rule,
        "stop:max_duration"
    );
    let s = SessionState {
        started_ms: NOW - 600_000,
        ..base.clone()
    };
    assert_eq!(evaluate(&p, &read, &s, NOW).decision, Decision::Allow);
}

#[test]
fn approvals_stop_turns_step_up_into_deny() {
    let p = pol(INTENTS);
    let deploy = call("deploy", json!(null));
    let fresh = SessionState {
        intent: Some("fix".into()),
        ..active()
    };
    let v = evaluate(&p, &deploy, &fresh, NOW);
    // `deploy` is outside the intent too; make it inside to isolate the approvals stop.
    assert_eq!(v.decision, Decision::Deny);
    let p = pol(&INTENTS.replace(
        "allow tool [\"git_*\"]",
        "allow tool [\"git_*\", \"deploy\"]",
    ));
    let v = evaluate(&p, &deploy, &fresh, NOW);
    assert_eq!(
        (v.decision, v.deciding_rule.as_str()),
        (Decision::StepUp, "deploy")
    );
    let used = SessionState {
        approvals: 1,
        ..fresh
    };
    let v = evaluate(&p, &deploy, &used, NOW);
    assert_eq!(
        (v.decision, v.deciding_rule.as_str()),
        (Decision::Deny, "stop:max_approvals")
    );
    assert_eq!(rules(&v), ["deploy", "stop:max_approvals"]);
    assert_eq!(v.step_up, None);
    assert_eq!(v.reason, "the intent's approval limit was reached");
}

#[test]
fn absent_fields_make_every_comparison_false_including_not_equal() {
    let src = r#"pack "p" { default allow "ok" }
rule ne { when args.branch != "main" deny "ne" }
rule hdr { when header.x-team != "a" deny "hdr" }
rule neg { when not (args.branch == "main") deny "neg" }
rule res { when resource != "x" deny "res" }"#;
    let v = eval(src, &call("git_push", json!({})));
    assert_eq!(
        rules(&v),
        ["neg"],
        "only `not` turns an absent comparison true"
    );
    let v = eval(src, &call("git_push", json!({"branch": "dev"})));
    assert_eq!(rules(&v), ["ne", "neg"]);
    // null equals nothing and is not `present`.
    let src2 = r#"pack "p" { default allow "ok" }
rule p { when args.x present deny "p" }
rule n { when args.x is null deny "n" }
rule e { when args.x != "a" deny "e" }"#;
    assert_eq!(rules(&eval(src2, &call("t", json!({"x": null})))), ["n"]);
}

#[test]
fn values_compare_by_type() {
    let src = r#"pack "p" { default allow "ok" }
rule num { when args.n >= 10 deny "num" }
rule str_num { when args.s == 10 deny "str_num" }
rule str_num_allow { when args.s == 10 allow "str_num_allow" }
rule boolean { when args.b == true deny "bool" }
rule port { when target.port in [443, 8443] deny "port" }
rule size { when request.size > 1KiB deny "size" }"#;
    let v = eval(src, &call("t", json!({"n": 10.0, "s": "10", "b": true})));
    // `"10" == 10` is a type error: unknown, which matches the DENY rule and not the ALLOW one.
    assert_eq!(rules(&v), ["num", "str_num", "boolean"]);
    let mut h = http("POST", "a.example");
    h.target.port = 8443;
    h.size = 1025;
    assert_eq!(rules(&eval(src, &h)), ["port", "size"]);
}

#[test]
fn string_tests() {
    let src = r#"pack "p" { default allow "ok" }
let hosts = ["*.corp.example", "api.github.com"]
rule g { when target.host glob hosts deny "g" }
rule q { when target.host glob "a?i.github.com" deny "q" }
rule pre { when target.path prefix ["/v1/", "/v2/"] deny "pre" }
rule re { when target.path matches "/v[0-9]+/users" deny "re" }
rule len { when len(args.title) <= 3 deny "len" }
rule arr { when len(args.list) == 2 and args.list contains "b" deny "arr" }
rule obj { when len(args) == 2 deny "obj" }
rule dc { when risk.data_classes contains "pii" deny "dc" }"#;
    let mut h = http("GET", "api.github.com");
    h.target.path = "/v1/users".into();
    h.risk.data_classes = vec!["pii".into()];
    assert_eq!(rules(&eval(src, &h)), ["g", "q", "pre", "re", "dc"]);
    h.target.path = "/v1/users/1".into();
    assert_eq!(
        rules(&eval(src, &h)),
        ["g", "q", "pre", "dc"],
        "matches is a whole-value match"
    );
    let v = eval(src, &call("t", json!({"title": "héé", "list": ["a", "b"]})));
    assert_eq!(
        rules(&v),
        ["len", "arr", "obj"],
        "len counts characters, elements, members"
    );
}

#[test]
fn session_predicates() {
    let src = r#"pack "p" { default allow "ok" }
class pushes risk medium { when tool == "git_push" }
rule t { when session.tainted("secret") deny "t" }
rule u { when session.used("fetch_url") deny "u" }
rule s { when session.seen(pushes) deny "s" }
rule c { when session.count(tool "git_push", within 10s) >= 2 deny "c" }
rule cc { when session.count(class pushes, within 1h) >= 3 deny "cc" }
rule el { when session.elapsed > 30s and session.actions == 3 deny "el" }"#;
    let push = name_hash("git_push");
    let s = SessionState {
        taints: vec![name_hash("secret")],
        class_table: vec![name_hash("pushes")],
        history: vec![
            HistoryEntry {
                at_ms: 1_000,
                subject: push,
                classes: 1,
            },
            HistoryEntry {
                at_ms: 55_000,
                subject: push,
                classes: 1,
            },
            HistoryEntry {
                at_ms: 58_000,
                subject: push,
                classes: 1,
            },
            HistoryEntry {
                at_ms: 59_000,
                subject: name_hash("fetch_url"),
                classes: 0,
            },
        ],
        actions: 3,
        ..active()
    };
    let v = evaluate(&pol(src), &call("x", json!(null)), &s, NOW);
    assert_eq!(rules(&v), ["t", "u", "s", "c", "cc", "el"]);
    let v = evaluate(
        &pol(src),
        &call("x", json!(null)),
        &SessionState::default(),
        NOW,
    );
    assert_eq!(rules(&v), ["default"]);
}

#[test]
fn identity_headers_and_other_fields() {
    let src = r#"pack "p" { default allow "ok" }
rule id { when identity.agent == "bot" and identity.agent_auth == jwt and identity.human_auth == none deny "id" }
rule h { when header["content-type"] prefix "application/json" deny "h" }
rule k { when kind == http and operation == "PUT" and target.scheme == "https" deny "k" }
rule sid { when session.id == "s1" and trace.id present deny "sid" }"#;
    let mut a = http("PUT", "x.example");
    a.identity.agent.id = Some("bot".into());
    a.identity.agent.auth = bundle::action::AuthMethod::Jwt;
    a.headers = vec![(
        "content-type".into(),
        "application/json; charset=utf-8".into(),
    )]
    .into();
    a.target.scheme = "https".into();
    a.session_id = Some("s1".into());
    a.trace_id = Some("abc".into());
    assert_eq!(rules(&eval(src, &a)), ["id", "h", "k", "sid"]);
}

#[test]
fn classes_see_the_intent_in_force() {
    let src = r#"pack "p" { default allow "ok" }
intent fix { allow tool ["*"] }
class fixing risk high { when intent == "fix" }"#;
    let v = eval(src, &with_intent(call("x", json!(null))));
    assert_eq!(v.classes, ["fixing"]);
    assert_eq!(
        eval(src, &call("x", json!(null))).classes,
        Vec::<String>::new()
    );
}
