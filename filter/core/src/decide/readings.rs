//! Judge a request as the strictest server would read it (`normalize::action_readings`).

use bundle::action::Action;
use bundle::layers::LayerOutcome;
use bundle::session::SessionState;
use bundle::verdict::{Decision, Verdict};

use crate::normalize;
use crate::policy::Policy;
use crate::rules::FilterRule;

/// The policy's verdict on `action` as the strictest server would read it: the request as sent,
/// and every other reading of it some server applies (`normalize::action_readings`: the path's
/// case, `;` parameters, trailing dots; method- and path-override headers). When a reading is
/// judged more strictly, its verdict decides, with a reason that says which reading it was: the
/// filter never judges a request as something looser than what a server may execute.
/// With a layered bundle it also returns what each applicable pack decided about the reading that
/// decides (empty for a single pack).
pub(super) fn strictest_reading(
    l: &Policy,
    action: &Action,
    state: &SessionState,
    now_ms: u64,
) -> (Verdict, Vec<LayerOutcome>) {
    let (verdict, layers) = l.bundle.evaluate_layered(action, state, now_ms);
    if verdict.decision == Decision::Deny {
        return (verdict, layers);
    }
    let Ok(alts) = normalize::action_readings(action, l.pack.reads_args) else {
        let reason = format!(
            "the request can be read more ways than the filter judges (method, path and host \
             overrides, path readings, query parameters; at most {})",
            normalize::MAX_READINGS
        );
        return (
            verdict.overruled(FilterRule::Refused.as_str(), reason),
            layers,
        );
    };
    let mut strictest: Option<((Verdict, Vec<LayerOutcome>), Action)> = None;
    for alt in alts {
        let v = l.bundle.evaluate_layered(&alt, state, now_ms);
        let current = strictest
            .as_ref()
            .map_or(verdict.decision, |((s, _), _)| s.decision);
        if v.0.decision > current {
            strictest = Some((v, alt));
        }
    }
    match strictest {
        None => (verdict, layers),
        Some(((mut v, layers), alt)) => {
            // The reading, as servers would execute it (the request as sent is in the receipt).
            v.reason = if alt.resource != action.resource {
                format!(
                    "the server resolves resource `{}` as `{}`: {}",
                    normalize::printable(action.resource.as_deref().unwrap_or_default()),
                    normalize::printable(alt.resource.as_deref().unwrap_or_default()),
                    v.reason
                )
            } else if alt.arguments != action.arguments {
                let moved = if (&alt.operation, &alt.target.host, &alt.target.path)
                    == (&action.operation, &action.target.host, &action.target.path)
                {
                    String::new()
                } else {
                    format!(", and some read the request as `{}`", read_as(&alt, action))
                };
                if let Some((sent, read)) = normalize::path_argument_readings(&action.arguments)
                    .iter()
                    .find(|r| **r == alt.arguments)
                    .and_then(|r| normalize::first_difference(&action.arguments, r))
                {
                    format!(
                        "the tool reads `{}` in the arguments as `{}`{moved}: {}",
                        normalize::printable(sent),
                        normalize::printable(read),
                        v.reason
                    )
                } else {
                    format!(
                        "{}{moved}: {}",
                        normalize::parameter_reading_reason(action, &alt.arguments),
                        v.reason
                    )
                }
            } else if alt.operation == "CONNECT" && action.operation != "CONNECT" {
                format!(
                    "the request switches protocols (`upgrade`), a tunnel to its host the filter \
                     cannot read, and is judged as CONNECT too: {}",
                    v.reason
                )
            } else {
                format!(
                    "some servers read this request as `{}`: {}",
                    read_as(&alt, action),
                    v.reason
                )
            };
            (v, layers)
        }
    }
}

/// A reading's method and target, for reasons: `OP /path`, or `OP host/path` when the reading
/// names another host (`x-forwarded-host`, `forwarded: host=`).
fn read_as(alt: &Action, sent: &Action) -> String {
    let host = if alt.target.host == sent.target.host {
        ""
    } else {
        alt.target.host.as_str()
    };
    format!(
        "{} {}{}",
        alt.operation,
        normalize::printable(host),
        normalize::printable(&alt.target.path)
    )
}
