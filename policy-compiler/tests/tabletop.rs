//! Tabletop runner and `policyc` CLI tests: history is recorded like the filter does, failures
//! are reported with a diff, and the exit codes are the documented ones.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code outside #[test] fns (clippy.toml exempts only those): a failure is a failed test"
)]

use policy::tabletop::{self, Case};
use std::path::{Path, PathBuf};
use std::process::Command;

const POLICY: &str = r#"pack "t" { default deny "closed" }
intent work {
  allow tool ["read_file", "fetch_url", "get_secret"]
  max actions 3
}
rule reads { when tool == "read_file" allow "reads" }
rule fetch { when tool == "fetch_url" allow "fetch" then taint "untrusted" }
rule secret { when tool == "get_secret" allow "secret" }
rule secret_after_fetch { when tool == "get_secret" and session.tainted("untrusted") deny "no" then kill }
"#;

const TESTS: &str = r#"
[[case]]
name = "reading is allowed"
intent = "work"
[case.action]
kind = "mcp"
operation = "tools/call"
tool = "read_file"
[case.expect]
decision = "ALLOW"
rule = "reads"
matched = ["reads"]

[[case]]
name = "a secret after a fetch kills the session"
intent = "work"
history = [{ kind = "mcp", operation = "tools/call", tool = "fetch_url" }]
[case.action]
kind = "mcp"
operation = "tools/call"
tool = "get_secret"
[case.expect]
decision = "DENY"
rule = "secret_after_fetch"
effects = [{ effect = "kill" }]

[[case]]
name = "after the kill everything is denied"
intent = "work"
history = [
  { kind = "mcp", operation = "tools/call", tool = "fetch_url" },
  { kind = "mcp", operation = "tools/call", tool = "get_secret" },
]
[case.action]
kind = "mcp"
operation = "tools/call"
tool = "read_file"
[case.expect]
decision = "DENY"
rule = "session:killed"

[[case]]
name = "the intent's action limit stops the fourth action"
intent = "work"
history = [
  { kind = "mcp", operation = "tools/call", tool = "read_file" },
  { kind = "mcp", operation = "tools/call", tool = "read_file" },
  { kind = "mcp", operation = "tools/call", tool = "read_file" },
]
[case.action]
kind = "mcp"
operation = "tools/call"
tool = "read_file"
[case.expect]
decision = "DENY"
rule = "stop:max_actions"

[[case]]
name = "a lost session is denied"
session_status = "missing"
history = [{ kind = "mcp", operation = "tools/call", tool = "read_file" }]
[case.action]
kind = "mcp"
operation = "tools/call"
tool = "read_file"
[case.expect]
decision = "DENY"
matched = ["session:unknown", "reads"]
"#;

fn pack_dir(name: &str, policy: &str, tests: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policyc-tabletop-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.pcl"), policy).unwrap();
    std::fs::write(dir.join("tests.toml"), tests).unwrap();
    dir
}

#[test]
fn cases_pass_through_the_interpreter() {
    let p = policy::syntax::parse(POLICY).unwrap();
    let file = tabletop::parse(TESTS).unwrap();
    let results = tabletop::run_cases(&p, &file);
    assert_eq!(results.len(), 5);
    for r in &results {
        assert!(r.passed(), "{}: {:?}", r.name, r.mismatches);
    }
}

#[test]
fn history_is_one_second_apart_and_pins_the_declared_intent() {
    let file = tabletop::parse(TESTS).unwrap();
    let case: &Case = &file.cases[3];
    let seen = std::cell::RefCell::new(Vec::new());
    let p = policy::syntax::parse(POLICY).unwrap();
    let verdicts = tabletop::simulate(case, &|a, s, t| {
        seen.borrow_mut()
            .push((t, a.declared_intent.clone(), s.actions));
        policy::interp::evaluate(&p, a, s, t)
    });
    assert_eq!(verdicts.len(), 4);
    let now = tabletop::DEFAULT_NOW_MS;
    assert_eq!(
        *seen.borrow(),
        vec![
            (now - 3000, Some("work".to_owned()), 0),
            (now - 2000, None, 1),
            (now - 1000, None, 2),
            (now, None, 3),
        ]
    );
}

#[test]
fn a_wrong_expectation_is_reported_with_a_diff() {
    let p = policy::syntax::parse(POLICY).unwrap();
    let wrong = TESTS.replacen(
        "decision = \"ALLOW\"\nrule = \"reads\"",
        "decision = \"DENY\"\nrule = \"secret\"",
        1,
    );
    let results = tabletop::run_cases(&p, &tabletop::parse(&wrong).unwrap());
    assert_eq!(
        results[0].mismatches,
        vec![
            "decision: expected DENY, got ALLOW (rule `reads`: reads)".to_owned(),
            "rule: expected `secret`, got `reads`".to_owned(),
        ]
    );
    assert!(results[1..].iter().all(|r| r.passed()));
}

#[test]
fn malformed_test_files_are_refused() {
    let err = tabletop::parse("[[case]]\nname = \"x\"\nbogus = 1\n").unwrap_err();
    assert!(err.contains("bogus"), "{err}");
    let err = tabletop::parse("[[case]]\nname = \"x\"\n[case.action]\nkind = \"mcp\"\n[case.expect]\ndecision = \"MAYBE\"\n").unwrap_err();
    assert!(err.contains("MAYBE"), "{err}");
}

/// Expected effects and modifications are typed like the rest of the expectation: a member they
/// do not define (a typo) fails the file instead of silently checking nothing.
#[test]
fn a_typo_inside_an_expected_effect_or_modification_is_refused() {
    let case = |expect: &str| {
        format!(
            "[[case]]\nname = \"x\"\n[case.action]\nkind = \"mcp\"\n[case.expect]\ndecision = \"ALLOW\"\n{expect}\n"
        )
    };
    let ok = case(
        "effects = [{ effect = \"taint\", value = \"pii\" }, { effect = \"kill\" }]\n\
         modifications = [{ op = \"clamp_arg\", path = [\"limit\"], min = 1.0, max = 20.0 }]",
    );
    tabletop::parse(&ok).unwrap();
    for typo in [
        "effects = [{ effect = \"kill\", valu = 3 }]",
        "effects = [{ effect = \"taint\", value = \"pii\", vaule = \"x\" }]",
        "modifications = [{ op = \"clamp_arg\", path = [\"limit\"], min = 1.0, max = 20.0, maxx = 3 }]",
        "modifications = [{ op = \"redact_secrets\", path = [\"a\"] }]",
    ] {
        let err = tabletop::parse(&case(typo)).unwrap_err();
        assert!(err.contains("unknown field"), "{typo}: {err}");
    }
}

fn policyc(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn policyc_test_runs_interpreter_and_vm_and_sets_the_exit_code() {
    let dir = pack_dir("ok", POLICY, TESTS);
    let (code, out) = policyc(&["test", s(&dir)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("interpreter + bundle VM"), "{out}");
    assert!(out.contains("5 passed, 0 failed"), "{out}");

    let bad = pack_dir(
        "bad",
        POLICY,
        &TESTS.replacen("decision = \"ALLOW\"", "decision = \"DENY\"", 1),
    );
    let (code, out) = policyc(&["test", s(&bad.join("tests.toml"))]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  reading is allowed"), "{out}");
    assert!(out.contains("decision: expected DENY, got ALLOW"), "{out}");

    let (code, out) = policyc(&["test", "--format", "json", s(&dir)]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["packs"][0]["cases"].as_array().unwrap().len(), 5);

    let (code, _) = policyc(&["test", "/nonexistent/dir"]);
    assert_eq!(code, 2);
}

#[test]
fn policyc_check_and_fmt_exit_codes() {
    let dir = pack_dir("check", POLICY, TESTS);
    let (code, out) = policyc(&["check", s(&dir.join("policy.pcl"))]);
    assert_eq!(code, 0, "{out}");

    let broken = dir.join("broken.pcl");
    std::fs::write(
        &broken,
        "pack \"p\" {}\nrule r { when target.hots == \"a\" deny \"x\" }\n",
    )
    .unwrap();
    let (code, out) = policyc(&["check", s(&broken)]);
    assert_eq!(code, 1);
    assert!(out.contains("error: unknown field `target.hots`"), "{out}");
    assert!(out.contains("= help: did you mean `target.host`?"), "{out}");
    let (code, out) = policyc(&["check", "--format", "json", s(&broken)]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["files"][0]["diagnostics"][0]["line"], 2);
    assert_eq!(v["files"][0]["diagnostics"][0]["column"], 15);

    let (code, _) = policyc(&["check", "/nonexistent.pcl"]);
    assert_eq!(code, 2);

    // fmt --check fails on an unformatted file, fmt fixes it, then --check passes.
    let messy = dir.join("messy.pcl");
    std::fs::write(
        &messy,
        "pack \"p\" {}   rule r {when tool==\"x\" allow \"y\"}",
    )
    .unwrap();
    assert_eq!(policyc(&["fmt", "--check", s(&messy)]).0, 1);
    assert_eq!(policyc(&["fmt", s(&messy)]).0, 0);
    assert_eq!(policyc(&["fmt", "--check", s(&messy)]).0, 0);
    assert!(
        std::fs::read_to_string(&messy)
            .unwrap()
            .contains("rule r {\n  when tool == \"x\"\n  allow \"y\"\n}\n")
    );
    // A file with errors is never rewritten (an unknown field must not be formatted away).
    let before = std::fs::read_to_string(&broken).unwrap();
    assert_eq!(policyc(&["fmt", s(&broken)]).0, 1);
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), before);
    std::fs::write(&broken, "pack \"p\" {\n").unwrap();
    assert_eq!(policyc(&["fmt", s(&broken)]).0, 1);
}

#[test]
fn a_coerced_argument_is_expected_like_any_modification() {
    let policy = r#"pack "t" { default deny "closed" }
tool "query_rows" { args.limit: number coerce }
rule rows { when tool == "query_rows" allow "rows" }
rule clamp { when tool == "query_rows" and args.limit > 20 modify "at most 20" { clamp args.limit 1..20 } }
rule protocol { when class mcp_protocol allow "protocol" }
"#;
    let tests = r#"
[[case]]
name = "a limit sent as a string is converted, then clamped"
[case.action]
kind = "mcp"
operation = "tools/call"
tool = "query_rows"
arguments = { limit = "100" }
[case.expect]
decision = "MODIFY"
matched = ["rows", "clamp", "args:coerce"]
modifications = [
  { op = "coerce_arg", path = ["limit"], value = 100 },
  { op = "clamp_arg", path = ["limit"], min = 1.0, max = 20.0 },
]

[[case]]
name = "a client's answer to a sampling request is protocol traffic"
[case.action]
kind = "mcp"
operation = "response"
[case.expect]
decision = "ALLOW"
rule = "protocol"
"#;
    let dir = pack_dir("coerce", policy, tests);
    let (code, out) = policyc(&["test", s(&dir)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    // The expectation is exact: the converted value is compared as JSON.
    let wrong = pack_dir(
        "coerce-wrong",
        policy,
        &tests.replace("value = 100", "value = \"100\""),
    );
    let (code, out) = policyc(&["test", s(&wrong)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("modifications: expected"), "{out}");
}
