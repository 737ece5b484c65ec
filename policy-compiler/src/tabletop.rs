//! Tabletop tests: a `tests.toml` next to a `policy.pcl` lists cases ("given this intent and this
//! history, this request is decided so, by this rule"). Each case is simulated exactly as the
//! filter would run it: every history action is evaluated and recorded into the session with
//! [`SessionState::record`], one second apart before the case's `now_ms`, then the action is
//! evaluated and compared with the expectation. The format is in `docs/policy-language.md`,
//! "Tabletop tests".

use crate::ast::Policy;
use bundle::action::{Action, IntentSource};
use bundle::session::{SessionState, SessionStatus};
use bundle::verdict::{Decision, Effect, Modification, Verdict};
use serde::Deserialize;
use std::path::Path;

fn trusted_source() -> IntentSource {
    IntentSource::Grant
}

/// `now_ms` of a case that does not set one (2027-01-15T08:00:00Z).
pub const DEFAULT_NOW_MS: u64 = 1_800_000_000_000;
/// Milliseconds between consecutive history actions.
pub const HISTORY_STEP_MS: u64 = 1_000;

/// A whole `tests.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The cases, in file order.
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
}

/// Whether the session exists when the action arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseSession {
    /// A new session (after the history, if any).
    #[default]
    New,
    /// The session's state is gone when the action arrives (evicted or expired).
    Missing,
}

/// One tabletop case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, in words.
    pub name: String,
    /// Intent declared on the first action of the session.
    #[serde(default)]
    pub intent: Option<String>,
    /// Where `intent` comes from: `grant` (default: a task grant the filter verified),
    /// `claim`, `header` (the agent's own header: only trusted with `intent_source header`) or
    /// `conflict`.
    #[serde(default = "trusted_source")]
    pub intent_source: IntentSource,
    /// Evaluation time of the action (history actions are 1 s apart before it).
    #[serde(default)]
    pub now_ms: Option<u64>,
    /// `new` (default) or `missing`: with `missing`, the state built by the history is dropped
    /// before the action, as when the filter evicted it.
    #[serde(default)]
    pub session_status: CaseSession,
    /// Prior actions of the session, oldest first.
    #[serde(default)]
    pub history: Vec<Action>,
    /// The action under test.
    pub action: Action,
    /// What must happen.
    pub expect: Expect,
}

/// The expectation of a case. Only `decision` is required; every other field given must match.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The enforced decision.
    pub decision: Decision,
    /// The deciding rule (`none` when nothing was enforced).
    #[serde(default)]
    pub rule: Option<String>,
    /// Exactly the matched rules, in table order.
    #[serde(default)]
    pub matched: Option<Vec<String>>,
    /// Exactly the session effects.
    #[serde(default, deserialize_with = "strict::list")]
    pub effects: Option<Vec<Effect>>,
    /// Exactly the modifications.
    #[serde(default, deserialize_with = "strict::list")]
    pub modifications: Option<Vec<Modification>>,
    /// Exactly the warnings.
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
    /// The pack whose decision won (combination tests of a layered set only).
    #[serde(default)]
    pub pack: Option<String>,
}

/// The outcome of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// One line per field that differs from the expectation (`decision: expected DENY, got ALLOW`).
    pub mismatches: Vec<String>,
    /// The verdict of the action under test.
    pub verdict: Verdict,
}

impl CaseResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Read and parse a `tests.toml`. The error is a readable sentence with the TOML position.
pub fn load(path: &Path) -> Result<TestFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("`{}`: {e}", path.display()))
}

/// Parse the text of a `tests.toml`.
pub fn parse(text: &str) -> Result<TestFile, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

/// Simulate a case with an evaluator (`interp::evaluate` or a bundle's VM): evaluate and record
/// each history action, then evaluate the action. Returns every verdict, the action's last.
pub fn simulate(
    case: &Case,
    eval: &dyn Fn(&Action, &SessionState, u64) -> Verdict,
) -> Vec<Verdict> {
    let now = case.now_ms.unwrap_or(DEFAULT_NOW_MS);
    let n = u64::try_from(case.history.len()).unwrap_or(u64::MAX);
    let mut session = SessionState::default();
    let mut verdicts = Vec::new();
    let mut first = true;
    let mut declare = |a: &Action| -> Action {
        let mut a = a.clone();
        if first && a.declared_intent.is_none() {
            a.declared_intent = case.intent.clone();
            a.intent_source = case.intent_source;
        }
        first = false;
        a
    };
    for (k, a) in case.history.iter().enumerate() {
        let back = n.saturating_sub(u64::try_from(k).unwrap_or(0));
        let t = now.saturating_sub(back.saturating_mul(HISTORY_STEP_MS));
        let a = declare(a);
        let v = eval(&a, &session, t);
        session.record(&a, &v, v.intent.as_deref(), t);
        verdicts.push(v);
    }
    if case.session_status == CaseSession::Missing {
        session = SessionState {
            status: SessionStatus::Missing,
            ..SessionState::default()
        };
    }
    let a = declare(&case.action);
    verdicts.push(eval(&a, &session, now));
    verdicts
}

/// Compare a verdict with a case's expectation.
pub fn check_expect(expect: &Expect, v: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    if expect.decision != v.decision {
        out.push(format!(
            "decision: expected {}, got {} (rule `{}`: {})",
            expect.decision.as_str(),
            v.decision.as_str(),
            v.deciding_rule,
            v.reason
        ));
    }
    if let Some(r) = &expect.rule
        && *r != v.deciding_rule
    {
        out.push(format!("rule: expected `{r}`, got `{}`", v.deciding_rule));
    }
    let got_matched: Vec<String> = v.matched.iter().map(|m| m.rule.clone()).collect();
    if let Some(m) = &expect.matched
        && *m != got_matched
    {
        out.push(format!("matched: expected {m:?}, got {got_matched:?}"));
    }
    let json = |x: &dyn erased::Ser| x.json();
    if let Some(e) = &expect.effects
        && *e != v.effects
    {
        out.push(format!(
            "effects: expected {}, got {}",
            json(e),
            json(&v.effects)
        ));
    }
    if let Some(m) = &expect.modifications
        && *m != v.modifications
    {
        out.push(format!(
            "modifications: expected {}, got {}",
            json(m),
            json(&v.modifications)
        ));
    }
    if let Some(w) = &expect.warnings
        && *w != v.warnings
    {
        out.push(format!("warnings: expected {w:?}, got {:?}", v.warnings));
    }
    if expect.pack.is_some() {
        out.push(
            "pack: only the combination tests of a layered set (`policyc test --manifest`) can expect a pack"
                .to_owned(),
        );
    }
    if !out.is_empty() && expect.matched.is_none() {
        out.push(format!("(matched: {got_matched:?})"));
    }
    out
}

mod strict {
    //! Expected effects and modifications are the bundle's own wire types: tagged enums that,
    //! like any serde enum, skip members they do not read. An expectation is stricter: each
    //! element is read, written back, and a member of the input that the value does not carry
    //! (`maxx` for `max`, `valu` for `value`) is an error instead of a check silently not made.

    use serde::de::{DeserializeOwned, Error as _};
    use serde::{Deserialize, Deserializer, Serialize};
    use serde_json::Value;

    pub(super) fn list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned + Serialize,
    {
        let Some(raw) = Option::<Vec<Value>>::deserialize(d)? else {
            return Ok(None);
        };
        raw.into_iter()
            .map(|item| {
                let typed = T::deserialize(&item).map_err(D::Error::custom)?;
                let written = serde_json::to_value(&typed).map_err(D::Error::custom)?;
                if let (Value::Object(given), Value::Object(kept)) = (&item, &written)
                    && let Some(extra) = given.keys().find(|k| !kept.contains_key(*k))
                {
                    return Err(D::Error::custom(format!(
                        "unknown field `{extra}` in `{item}`"
                    )));
                }
                Ok(typed)
            })
            .collect::<Result<Vec<T>, D::Error>>()
            .map(Some)
    }
}

mod erased {
    /// Render any serializable value as compact JSON for a diff line.
    pub(super) trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

/// Run every case of a test file through the reference interpreter.
pub fn run_cases(policy: &Policy, file: &TestFile) -> Vec<CaseResult> {
    run_cases_with(file, &|a, s, t| crate::interp::evaluate(policy, a, s, t))
}

/// Run every case of a test file through any evaluator.
pub fn run_cases_with(
    file: &TestFile,
    eval: &dyn Fn(&Action, &SessionState, u64) -> Verdict,
) -> Vec<CaseResult> {
    file.cases
        .iter()
        .map(|case| {
            let verdict = simulate(case, eval).pop().unwrap_or_default();
            CaseResult {
                name: case.name.clone(),
                mismatches: check_expect(&case.expect, &verdict),
                verdict,
            }
        })
        .collect()
}
