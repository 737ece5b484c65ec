//! Portcullis' VM against Cedar (`cedar-policy`) on equivalent policy sets and the same requests,
//! 10 .. 10,000 rules, in one run.
//!
//! The policy set is a tool allowlist by principal, action and resource with an argument
//! constraint: rule `i` allows agent `agent_{i % 50}` to `tools/call` tool `tool_{i}` when the
//! `path` argument starts with `/repo`; everything else is denied (both engines deny by default).
//! In Portcullis the constraint reads the argument (`args.path prefix "/repo"`), in Cedar a context
//! attribute (`context.path like "/repo*"`). Requests are built once, outside the timed loop, for
//! both engines: the timed part is the decision alone (Portcullis also builds its full owned
//! `Verdict` with matched rules and reasons; Cedar its `Response` with reasons and errors).
//!
//! Run: `cargo bench -p portcullis-benches --bench cedar -- --warm-up-time 1 --measurement-time 3`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "benchmark code: a failed setup aborts the run"
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::str::FromStr;

use bundle::action::Action;
use bundle::session::SessionState;
use bundle::verdict::Decision;
use bundle::{Bundle, Trust};
use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicySet, Request, RestrictedExpression,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const NOW: u64 = 1_800_000_000_000;
const AGENTS: usize = 50;

/// The Portcullis pack with `rules` allow rules (and the default deny).
fn portcullis_pack(rules: usize) -> String {
    let mut s = String::from(
        "pack \"cedar_equivalent\" {\n  version \"1.0.0\"\n  mode enforce\n  default deny \"not allowed\"\n}\n",
    );
    for i in 0..rules {
        writeln!(
            s,
            r#"rule allow_{i} {{ when identity.agent == "agent_{}" and operation == "tools/call" and tool == "tool_{i}" and args.path prefix "/repo" allow "in repo" }}"#,
            i % AGENTS
        )
        .unwrap();
    }
    s
}

/// The same allowlist as Cedar policies.
fn cedar_policies(rules: usize) -> String {
    let mut s = String::new();
    for i in 0..rules {
        writeln!(
            s,
            r#"@id("allow_{i}") permit(principal == Agent::"agent_{}", action == Action::"tools/call", resource == Tool::"tool_{i}") when {{ context.path like "/repo*" }};"#,
            i % AGENTS
        )
        .unwrap();
    }
    s
}

/// One request in both engines' forms and the decision both must reach.
struct Case {
    name: &'static str,
    action: Action,
    request: Request,
    allow: bool,
}

fn case(name: &'static str, agent: &str, tool: &str, path: &str, allow: bool) -> Case {
    let action: Action = serde_json::from_value(serde_json::json!({
        "kind": "mcp", "operation": "tools/call", "tool": tool,
        "arguments": {"path": path},
        "identity": {"agent": {"id": agent, "auth": "jwt"}}
    }))
    .unwrap();
    let context = Context::from_pairs([(
        "path".to_string(),
        RestrictedExpression::new_string(path.to_string()),
    )])
    .unwrap();
    let request = Request::new(
        EntityUid::from_str(&format!(r#"Agent::"{agent}""#)).unwrap(),
        EntityUid::from_str(r#"Action::"tools/call""#).unwrap(),
        EntityUid::from_str(&format!(r#"Tool::"{tool}""#)).unwrap(),
        context,
        None,
    )
    .unwrap();
    Case {
        name,
        action,
        request,
        allow,
    }
}

/// Requests valid for every pack size (tool_7 exists from 10 rules up; its agent is agent_7).
fn cases() -> Vec<Case> {
    vec![
        case("allowed", "agent_7", "tool_7", "/repo/src/main.rs", true),
        case("arg_denied", "agent_7", "tool_7", "/etc/passwd", false),
        case("wrong_principal", "agent_8", "tool_7", "/repo/a", false),
        case("unknown_tool", "agent_7", "not_in_pack", "/repo/a", false),
    ]
}

fn bench(c: &mut Criterion) {
    let session = SessionState::new(NOW);
    let authorizer = Authorizer::new();
    let entities = Entities::empty();
    let mut g = c.benchmark_group("vs_cedar");
    for n in [10usize, 100, 1_000, 10_000] {
        let src = portcullis_pack(n);
        let p = policy::syntax::parse(&src).unwrap_or_else(|d| panic!("{d:?}"));
        let bytes = policy::codegen::compile(&p).unwrap();
        let b = Bundle::from_bytes(&bytes, &Trust::AllowUnsigned).unwrap();
        let ps = PolicySet::from_str(&cedar_policies(n)).unwrap();
        // Cedar takes milliseconds per request at 10,000 rules: fewer samples keep the run short.
        g.sample_size(if n >= 1_000 { 10 } else { 50 });
        for c in cases() {
            // Both engines must reach the same decision, or the comparison means nothing.
            let v = b.evaluate(&c.action, &session, NOW);
            assert_eq!(
                v.decision == Decision::Allow,
                c.allow,
                "portcullis {} {n}",
                c.name
            );
            let r = authorizer.is_authorized(&c.request, &ps, &entities);
            assert_eq!(
                r.decision() == cedar_policy::Decision::Allow,
                c.allow,
                "cedar {} {n}",
                c.name
            );
            g.bench_with_input(
                BenchmarkId::new(format!("portcullis/{}", c.name), n),
                &c.action,
                |bch, a| bch.iter(|| black_box(b.evaluate(black_box(a), &session, NOW))),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("cedar/{}", c.name), n),
                &c.request,
                |bch, req| {
                    bch.iter(|| black_box(authorizer.is_authorized(black_box(req), &ps, &entities)))
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
