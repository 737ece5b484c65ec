//! Policy source is untrusted input: parsing, checking, formatting and interpreting never panic
//! or overflow the stack, whatever the text.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code outside #[test] fns (clippy.toml exempts only those): a failure is a failed test"
)]

use policy::check::parse_and_check;
use policy::fmt::format_source;
use proptest::prelude::*;

mod common;

fn everything_on(src: &str) {
    let (p, _) = parse_and_check(src);
    if let Some(p) = p {
        let out = format_source(src).expect("a policy that parses formats");
        assert!(
            policy::syntax::parse(&out).is_ok(),
            "formatted text must parse:\n{out}"
        );
        let action = bundle::action::Action {
            operation: "tools/call".into(),
            tool: Some("x".into()),
            ..Default::default()
        };
        let _ = policy::interp::evaluate(&p, &action, &bundle::session::SessionState::default(), 0);
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let head = "pack \"p\" {}\nrule r { when ";
    for (open, close) in [("(", ")"), ("not ", "")] {
        let src = format!(
            "{head}{}true{} allow \"x\" }}",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        let (_, d) = parse_and_check(&src);
        assert!(d[0].message.contains("nested too deeply"), "{:?}", d[0]);
    }
    let src = format!("{head}true{} allow \"x\" }}", " and true".repeat(100_000));
    let (_, d) = parse_and_check(&src);
    assert!(d[0].message.contains("condition too large"), "{:?}", d[0]);
    // Within the limits, everything works.
    let src = format!(
        "{head}{}true{}{} allow \"x\" }}",
        "(".repeat(60),
        ")".repeat(60),
        " or false".repeat(200)
    );
    everything_on(&src);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(src in any::<String>()) {
        everything_on(&src);
    }

    #[test]
    fn mutated_policies_never_panic(
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..12, "[(){}\\[\\]\"#a-z0-9 .,=<>!*-]{0,6}"), 1..5)
    ) {
        let mut src: Vec<char> = common::EVERYTHING.chars().collect();
        for (at, del, ins) in cuts {
            let at = at.index(src.len().max(1)).min(src.len());
            let end = (at + del).min(src.len());
            src.splice(at..end, ins.chars());
        }
        let src: String = src.into_iter().collect();
        everything_on(&src);
    }
}
