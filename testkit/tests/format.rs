//! The scenario format refuses what it does not define, and every file of the corpus loads.

use serde_json::json;
use testkit::{Scenario, corpus};

#[test]
fn every_scenario_file_loads() {
    let all = corpus::corpus().unwrap();
    assert!(
        all.len() >= 12,
        "expected at least 12 scenarios, found {}",
        all.len()
    );
}

/// A member the format does not define fails the file instead of being skipped.
#[test]
fn a_typo_in_a_scenario_file_is_refused() {
    let path = corpus::scenarios_dir().join("deny_default.json");
    let mut sc = corpus::load_json(&path).unwrap();
    assert!(Scenario::from_json(&sc).is_ok());
    sc["steps"][0]["request"]["trailer"] = json!([["grpc-status", "0"]]);
    let e = Scenario::from_json(&sc).unwrap_err();
    assert!(e.contains("unknown field `trailer`"), "{e}");
    sc["steps"][0]["request"]
        .as_object_mut()
        .unwrap()
        .remove("trailer");
    sc["steps"][0]["http_call_response"] = json!("timed out");
    assert!(Scenario::from_json(&sc).is_err(), "only \"timeout\"");
}

/// The same, through the loader a runner uses: a file on disk with an unknown member (here in an
/// expectation, where a typo would otherwise silently check nothing) does not load.
#[test]
fn a_file_with_an_unknown_member_does_not_load() {
    let path = corpus::scenarios_dir().join("deny_default.json");
    let mut sc = corpus::load_json(&path).unwrap();
    sc["steps"][0]["expect"]["recipt"] = json!({ "decision": "DENY" });
    let dir = std::env::temp_dir().join(format!("testkit-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("typo.json");
    std::fs::write(&file, sc.to_string()).unwrap();
    let e = corpus::load(&file).unwrap_err();
    assert!(e.contains("unknown field `recipt`"), "{e}");
    assert!(e.contains("typo.json"), "the error names the file: {e}");
}

#[test]
fn forbidden_combinations_are_refused() {
    let path = corpus::scenarios_dir().join("deny_default.json");
    let mut sc = corpus::load_json(&path).unwrap();
    sc["steps"][0]["request"]["body_text"] = json!("{}");
    let e = Scenario::from_json(&sc).unwrap_err();
    assert!(e.contains("both `body` and `body_text`"), "{e}");
}
