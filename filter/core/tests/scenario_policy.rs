//! The third and fourth engines of the scenario corpus: each scenario's policy evaluated by the
//! reference interpreter (`policy::interp`) and by the bundle VM on the action of every step
//! the policy alone decides, checked against the step's expected decision and rule (and the two
//! engines against each other). The action is built by the filter's own normalizer
//! (`filter_core::normalize`), the session evolves by `SessionState::record` as in the filter
//! and the tabletop simulator. Steps the policy alone cannot reproduce are skipped with a
//! reason, and so is the rest of their scenario (the session then differs from the filter's).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed test panics with the runner's report"
)]

use std::collections::BTreeMap;

use bundle::session::SessionState;
use bundle::{Bundle, Trust};
use filter_core::normalize::{RequestHead, normalize_mcp};
use testkit::format::{Expect, Scenario, Step};
use testkit::{Setup, corpus};

/// What the step expects of the decision: (decision, rule), from the receipt or filter state.
fn expected(e: &Expect) -> (Option<&str>, Option<&str>) {
    let fs = |k: &str| {
        e.filter_state
            .as_ref()
            .and_then(|m| m.get(k))
            .map(String::as_str)
    };
    let r = e.receipt.as_ref();
    (
        r.and_then(|r| r.decision.as_deref())
            .or_else(|| fs("wasm.portcullis.decision")),
        r.and_then(|r| r.rule.as_deref())
            .or_else(|| fs("wasm.portcullis.rule")),
    )
}

#[derive(Default)]
struct Tally {
    checked: usize,
    skipped: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn skip(&mut self, why: &'static str, n: usize) {
        *self.skipped.entry(why).or_default() += n;
    }
}

/// Why the whole scenario is not the policy's alone, if it is not.
fn scenario_skip(sc: &Scenario) -> Option<&'static str> {
    let cfg = |k: &str| sc.config.as_ref().and_then(|c| c.get(k)).is_some();
    if sc.policy.is_none() || sc.raw_config.is_some() {
        return Some("no policy or no usable configuration: the filter decides");
    }
    if sc.properties.is_some() || cfg("identity") {
        return Some("identity comes from the proxy, not the request");
    }
    if cfg("session") {
        return Some("session lifetime (eviction, expiry, require_initialize) is the filter's");
    }
    None
}

/// Why this step is not the policy's alone, if it is not.
fn step_skip(step: &Step) -> Option<&'static str> {
    let req = step.request.as_ref()?;
    if req.approval.is_some() {
        return Some("an approval token is judged by the filter");
    }
    if step.http_call_response.is_some() {
        return Some("a DEFER is resolved by a context service");
    }
    None
}

fn run(path: &std::path::Path, sc: &Scenario, t: &mut Tally) {
    let total = sc.steps.len();
    if let Some(why) = scenario_skip(sc) {
        return t.skip(why, total);
    }
    let setup = Setup::for_scenario(sc).unwrap();
    let norm = filter_core::parse_config(setup.plugin_config.as_bytes())
        .unwrap()
        .normalize_config();
    let src =
        std::fs::read_to_string(corpus::scenarios_dir().join(sc.policy.as_ref().unwrap())).unwrap();
    if src.contains("session.drift") {
        return t.skip(
            "the policy reads session.drift, which the filter computes",
            total,
        );
    }
    let ast = policy::syntax::parse(&src).unwrap();
    let vm = Bundle::from_bytes(
        &policy::codegen::compile(&ast).unwrap(),
        &Trust::AllowUnsigned,
    )
    .unwrap();
    let mut sessions: BTreeMap<String, SessionState> = BTreeMap::new();
    let mut now = setup.start_ms;
    for (i, step) in sc.steps.iter().enumerate() {
        now += step.advance_ms.unwrap_or(0);
        let Some(req) = &step.request else {
            t.skip("no request: a clock or timer step", 1);
            continue;
        };
        if let Some(why) = step_skip(step) {
            t.skip(why, 1);
            return t.skip(
                "after a step the policy alone cannot reproduce",
                total - i - 1,
            );
        }
        let (want_decision, want_rule) = step.expect.as_ref().map_or((None, None), expected);
        if want_rule.is_some_and(|r| r.starts_with("filter:")) {
            t.skip(
                "decided by the filter before the policy (refusal, configuration)",
                1,
            );
            continue;
        }
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let head = RequestHead {
            method: h(":method").unwrap_or_default(),
            scheme: h(":scheme").unwrap_or_default(),
            authority: h(":authority").unwrap_or_default(),
            path: h(":path").unwrap_or_default(),
            headers: headers.clone(),
        };
        let body = testkit::body_bytes(req.body.as_ref(), req.body_text.as_deref()).unwrap();
        let single_mcp_post = head.method == "POST"
            && norm.mcp_paths.contains(&head.path)
            && req.body.as_ref().is_some_and(serde_json::Value::is_object);
        if !single_mcp_post {
            t.skip("not one MCP message on the MCP path", 1);
            return t.skip(
                "after a step the policy alone cannot reproduce",
                total - i - 1,
            );
        }
        let Ok(mcp) = normalize_mcp(&head, body.as_deref().unwrap_or_default(), &norm) else {
            t.skip("refused by the normalizer: never reaches the policy", 1);
            continue;
        };
        let mut action = mcp.messages[0].action.clone();
        action.session_id = h("mcp-session-id");
        let state = match &action.session_id {
            Some(s) => sessions
                .entry(s.clone())
                .or_insert_with(|| SessionState::new(now)),
            None => &mut SessionState::new(now),
        };
        let vi = policy::interp::evaluate(&ast, &action, state, now);
        let vv = vm.evaluate(&action, state, now);
        let at = format!("{} step {i} `{}`", path.display(), step.label());
        if vi != vv {
            t.failures
                .push(format!("{at}: interpreter {vi:?}\n  != VM {vv:?}"));
        }
        if want_decision.is_none() && want_rule.is_none() {
            t.skip("no decision expected (recorded into the session only)", 1);
        } else {
            t.checked += 1;
            if let Some(d) = want_decision
                && vi.decision.as_str() != d
            {
                t.failures.push(format!(
                    "{at}: decision {} (rule `{}`: {}), expected {d}",
                    vi.decision.as_str(),
                    vi.deciding_rule,
                    vi.reason
                ));
            }
            if let Some(r) = want_rule
                && vi.deciding_rule != r
            {
                t.failures
                    .push(format!("{at}: rule `{}`, expected `{r}`", vi.deciding_rule));
            }
        }
        state.record(&action, &vi, vi.intent.as_deref(), now);
        if step.response.is_some() {
            // The filter judges what comes back (tool results, an initialize answer's intent):
            // the session may change in ways only the filter sees.
            return t.skip("after a response the filter judged", total - i - 1);
        }
    }
}

/// Steps the policy engines checked when this guard was last raised.
const CHECKED: usize = 30;

#[test]
fn every_scenario_policy_agrees_through_the_interpreter_and_the_vm() {
    let mut t = Tally::default();
    for (path, sc) in corpus::corpus().unwrap() {
        run(&path, &sc, &mut t);
    }
    let skipped: usize = t.skipped.values().sum();
    eprintln!(
        "policy engines: {} steps checked, {skipped} skipped: {:#?}",
        t.checked, t.skipped
    );
    assert!(t.failures.is_empty(), "{}", t.failures.join("\n"));
    // The corpus only grows: fewer checked steps means a scenario lost its expectations or a
    // skip reason swallowed steps it should not.
    assert!(
        t.checked >= CHECKED,
        "only {} steps checked, expected at least {CHECKED}",
        t.checked
    );
}

/// These engines can fail: a wrong expected decision or rule is reported.
#[test]
fn a_wrong_expected_decision_is_reported() {
    let path = corpus::scenarios_dir().join("deny_default.json");
    let mut v = corpus::load_json(&path).unwrap();
    let mut t = Tally::default();
    run(&path, &Scenario::from_json(&v).unwrap(), &mut t);
    assert!(t.checked >= 1 && t.failures.is_empty(), "{:?}", t.failures);
    v["steps"][0]["expect"]["receipt"]["decision"] = serde_json::json!("ALLOW");
    v["steps"][0]["expect"]["receipt"]["rule"] = serde_json::json!("read_repo");
    let mut t = Tally::default();
    run(&path, &Scenario::from_json(&v).unwrap(), &mut t);
    let all = t.failures.join("\n");
    assert!(all.contains("expected ALLOW"), "{all}");
    assert!(all.contains("expected `read_repo`"), "{all}");
}
