//! Intent drift (AARM R7): a running, deterministic, cheap distance between the intent a session
//! declared and the actions it takes. The exact formula is documented in `docs/filter.md`
//! ("Intent drift"); in short, every acting action under an intent scores
//!
//! ```text
//! d = 0.4 * lexical + 0.4 * outside + 0.2 * escalation          (each term in [0, 1])
//! drift' = drift + 0.3 * (d - drift)                            (exponential moving average)
//! ```
//!
//! - `lexical` = 1 - |S ∩ I| / |S|, with S the tokens of the action's subject (tool, resource,
//!   prompt or HTTP host) and I the tokens of the intent's name, tool globs, host globs, data
//!   scopes and in-scope class names; tokens are maximal ASCII-alphanumeric runs, lowercased,
//!   at most [`MAX_TOKENS`] per side (the rest ignored); an empty S scores 1.
//! - `outside` = 1 when the policy found the action outside the intent (`intent:<name>` matched).
//! - `escalation` = 1 when the action carries a secret, or a data class the intent does not list
//!   (only when it lists some), or is in a class of a higher risk tier than every class of the
//!   intent.
//!
//! Protocol messages (initialize, tools/list, ...), sessions without an intent in force and
//! actions of a session whose state is missing leave drift unchanged.

use bundle::Bundle;
use bundle::action::{Action, Kind};
use bundle::format::IntentDef;
use bundle::verdict::{RiskTier, Verdict};

use crate::normalize::Method;

/// Weight of the lexical term.
const W_LEXICAL: f32 = 0.4;
/// Weight of the out-of-scope term.
const W_OUTSIDE: f32 = 0.4;
/// Weight of the risk-escalation term.
const W_ESCALATION: f32 = 0.2;
/// Smoothing factor of the moving average.
const ALPHA: f32 = 0.3;
/// Tokens taken from each side (bounds the work per action).
pub(crate) const MAX_TOKENS: usize = 64;

/// Whether the action acts (the same split the VM uses for intent scoping).
fn is_acting(a: &Action) -> bool {
    match a.kind {
        Kind::Http => true,
        Kind::Mcp => Method::from_name(&a.operation).is_some_and(Method::acts),
    }
}

/// Lowercased ASCII-alphanumeric runs of `s`, appended to `out` (deduplicated, bounded).
fn tokens_into(s: &str, out: &mut Vec<String>) {
    for t in s.split(|c: char| !c.is_ascii_alphanumeric()) {
        if out.len() >= MAX_TOKENS {
            return;
        }
        if t.is_empty() {
            continue;
        }
        let t = t.to_ascii_lowercase();
        if !out.contains(&t) {
            out.push(t);
        }
    }
}

/// `1 - |S ∩ I| / |S|` (1 when S is empty).
pub(crate) fn lexical_distance(subject: &str, intent_tokens: &[String]) -> f32 {
    let mut s = Vec::new();
    tokens_into(subject, &mut s);
    if s.is_empty() {
        return 1.0;
    }
    let hit = s.iter().filter(|t| intent_tokens.contains(t)).count();
    let n = u16::try_from(s.len()).unwrap_or(u16::MAX);
    let hit = u16::try_from(hit).unwrap_or(u16::MAX);
    1.0 - f32::from(hit) / f32::from(n)
}

fn intent_tokens(bundle: &Bundle, intent: &IntentDef) -> Vec<String> {
    let mut out = Vec::new();
    tokens_into(&intent.name, &mut out);
    for s in intent.tools.iter().chain(&intent.hosts).chain(&intent.data) {
        tokens_into(s, &mut out);
    }
    for c in &intent.classes {
        if let Some(c) = usize::try_from(*c)
            .ok()
            .and_then(|i| bundle.program().classes.get(i))
        {
            tokens_into(&c.name, &mut out);
        }
    }
    out
}

fn class_tier(bundle: &Bundle, name: &str) -> RiskTier {
    bundle
        .program()
        .classes
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.risk)
        .unwrap_or_default()
}

fn escalates(bundle: &Bundle, intent: &IntentDef, action: &Action, verdict: &Verdict) -> bool {
    if action.risk.secrets {
        return true;
    }
    if !intent.data.is_empty()
        && action
            .risk
            .data_classes
            .iter()
            .any(|d| !intent.data.contains(d))
    {
        return true;
    }
    let ceiling = intent
        .classes
        .iter()
        .filter_map(|c| {
            usize::try_from(*c)
                .ok()
                .and_then(|i| bundle.program().classes.get(i))
        })
        .map(|c| c.risk)
        .max();
    match ceiling {
        Some(top) => verdict.classes.iter().any(|c| class_tier(bundle, c) > top),
        None => false,
    }
}

/// The score of one action in [0, 1], or `None` when it does not count (not acting, or no
/// intent in force that the pack defines).
pub(crate) fn action_score(bundle: &Bundle, action: &Action, verdict: &Verdict) -> Option<f32> {
    if !is_acting(action) {
        return None;
    }
    let name = verdict.intent.as_deref()?;
    let intent = bundle.program().intents.iter().find(|i| i.name == name)?;
    let lexical = lexical_distance(action.subject(), &intent_tokens(bundle, intent));
    let outside_rule = format!("intent:{name}");
    let outside = verdict.matched.iter().any(|m| m.rule == outside_rule);
    let esc = escalates(bundle, intent, action, verdict);
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    Some(W_LEXICAL * lexical + W_OUTSIDE * b(outside) + W_ESCALATION * b(esc))
}

/// The running drift after one more action scored `score`. A non-finite or out-of-range previous
/// value (only possible from a corrupted or hand-written session) restarts from 0.
pub(crate) fn next(drift: f32, score: f32) -> f32 {
    let prev = if drift.is_finite() {
        drift.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (prev + ALPHA * (score - prev)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_and_dedupe() {
        let mut t = Vec::new();
        tokens_into("Read_File read-file *.github.com", &mut t);
        assert_eq!(t, ["read", "file", "github", "com"]);
    }

    #[test]
    fn lexical_is_share_of_subject_tokens_not_in_intent() {
        let i: Vec<String> = ["read", "file", "git", "push"].map(String::from).to_vec();
        assert!((lexical_distance("read_file", &i) - 0.0).abs() < 1e-6);
        assert!((lexical_distance("send_email", &i) - 1.0).abs() < 1e-6);
        assert!((lexical_distance("write_file", &i) - 0.5).abs() < 1e-6);
        assert!((lexical_distance("", &i) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn moving_average_rises_toward_the_score_and_stays_in_range() {
        let mut d = 0.0;
        for _ in 0..4 {
            d = next(d, 0.8);
        }
        assert!(d > 0.6 && d < 0.8, "{d}");
        assert!((next(f32::NAN, 1.0) - 0.3).abs() < 1e-6);
        assert!((next(5.0, 1.0) - 1.0).abs() < 1e-6);
        let mut d = 0.9;
        for _ in 0..20 {
            d = next(d, 0.0);
        }
        assert!(d < 0.01);
    }
}
