//! Formatter tests: idempotence and round trip (parse(fmt(x)) == x modulo spans) on the example
//! packs, on a pack using every construct, and on generated ASTs (proptest).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code outside #[test] fns (clippy.toml exempts only those): a failure is a failed test"
)]

use bundle::verdict::{Decision, Mode, RiskTier};
use policy::ast::EffectDef as EffectSpec;
use policy::ast::FieldRef as Field;
use policy::ast::Lit as Literal;
use policy::ast::PathSegment as PathStep;
use policy::ast::Role as PrincipalRole;
use policy::ast::VType as ValueType;
use policy::ast::*;
use policy::fmt::{format_policy, format_source};
use policy::syntax::parse;
use proptest::prelude::*;
use std::path::PathBuf;

mod common;

/// Debug text of a value with every `Span { .. }` removed, for equality modulo spans.
fn without_spans<T: std::fmt::Debug>(x: &T) -> String {
    let s = format!("{x:?}");
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("Span {") {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').map_or(rest.len(), |j| i + j + 1);
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

fn assert_round_trip(src: &str) {
    let original = parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    let once = format_source(src).unwrap();
    let reparsed =
        parse(&once).unwrap_or_else(|d| panic!("formatted text does not parse: {d:?}\n{once}"));
    assert_eq!(
        without_spans(&original),
        without_spans(&reparsed),
        "AST changed by formatting:\n{once}"
    );
    let twice = format_source(&once).unwrap();
    assert_eq!(once, twice, "formatting is not idempotent");
}

#[test]
fn example_packs_round_trip() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let Ok(src) = std::fs::read_to_string(entry.unwrap().path().join("policy.pcl")) else {
            continue;
        };
        assert_round_trip(&src);
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn every_construct_round_trips() {
    assert_round_trip(common::EVERYTHING);
}

#[test]
fn comments_are_kept_before_their_item() {
    let src = "# top\npack \"p\" {}\n\n# about r\nrule r { when true allow \"x\" } # trailing\n# about q\nrule q {\n  # inside\n  when false deny \"y\"\n}\n# the end\n";
    let out = format_source(src).unwrap();
    assert_eq!(
        out,
        "# top\npack \"p\" {\n  mode enforce\n  default deny \"no rule allowed this action\"\n  unknown_session deny \"the session state is missing\"\n}\n\n# about r\nrule r {\n  when true\n  allow \"x\"\n}\n\n# trailing\n# about q\n# inside\nrule q {\n  when false\n  deny \"y\"\n}\n\n# the end\n"
    );
    assert_eq!(format_source(&out).unwrap(), out);
}

#[test]
fn canonical_forms() {
    let src = "pack \"p\" { }\nrule r { when not (tool == \"a\") and (tool == \"b\" and tool == \"c\") or session.elapsed > 900000 and request.size > 65536 and tool glob [\"x\"] and header[\"x-y\"] present\n step_up \"s\" { group \"g\" timeout 3600s } }";
    let out = format_source(src).unwrap();
    assert!(
        out.contains(
            "  when (not (tool == \"a\") and (tool == \"b\" and tool == \"c\"))\n    or (session.elapsed > 15m and request.size > 64KiB and tool glob \"x\" and header.x-y present)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("step_up \"s\" { group \"g\" timeout 1h }"),
        "{out}"
    );
}

// ---- generated ASTs ----

fn sp<T>(node: T) -> Spanned<T> {
    Spanned {
        node,
        span: Span::default(),
    }
}

fn ident() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b1", "reads", "x_y", "Upper", "list2"]).prop_map(str::to_owned)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/_.*?-]{0,8}",
        any::<String>().prop_map(|s| s.chars().take(6).collect()),
        Just("quote\"back\\slash\nnl\ttab #hash".to_owned()),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1000i32..1000).prop_map(|n| f64::from(n) / 4.0),
        (0u32..5_000_000).prop_map(f64::from)
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        text().prop_map(Literal::Str),
        number().prop_map(Literal::Num),
        any::<bool>().prop_map(Literal::Bool)
    ]
}

fn path() -> impl Strategy<Value = Vec<PathStep>> {
    prop::collection::vec(
        prop_oneof![
            ident().prop_map(PathStep::Key),
            text().prop_map(PathStep::Key),
            (0u32..50).prop_map(PathStep::Index)
        ],
        0..3,
    )
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        prop::sample::select(vec![
            Field::Kind,
            Field::Operation,
            Field::Tool,
            Field::Resource,
            Field::Prompt,
            Field::Host,
            Field::Port,
            Field::Path,
            Field::Query,
            Field::Scheme,
            Field::Server,
            Field::Principal(PrincipalRole::Agent),
            Field::PrincipalAuth(PrincipalRole::Workload),
            Field::RequestSize,
            Field::RiskSecrets,
            Field::RiskDataClasses,
            Field::SessionId,
            Field::TraceId,
            Field::Intent,
            Field::SessionActions,
            Field::SessionEgressBytes,
            Field::SessionApprovals,
            Field::SessionElapsed,
            Field::SessionDrift,
            Field::ToolChanged,
            Field::ToolShadowed,
        ]),
        text().prop_map(Field::Header),
        path().prop_map(Field::Arg),
    ]
}

fn cmp() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ])
}

fn set() -> impl Strategy<Value = SetRef> {
    prop_oneof![
        prop::collection::vec(literal().prop_map(sp), 0..3).prop_map(SetRef::Inline),
        ident().prop_map(|n| SetRef::Named(sp(n))),
    ]
}

fn vtype() -> impl Strategy<Value = ValueType> {
    prop::sample::select(vec![
        ValueType::String,
        ValueType::Number,
        ValueType::Bool,
        ValueType::Array,
        ValueType::Object,
        ValueType::Null,
    ])
}

fn atom() -> impl Strategy<Value = Expr> {
    prop_oneof![
        any::<bool>().prop_map(Expr::Const),
        (field(), cmp(), literal()).prop_map(|(f, o, l)| Expr::Cmp(sp(f), o, sp(l))),
        (field(), set()).prop_map(|(f, s)| Expr::In(sp(f), s)),
        (field(), set()).prop_map(|(f, s)| Expr::Glob(sp(f), s)),
        (field(), set()).prop_map(|(f, s)| Expr::Prefix(sp(f), s)),
        (field(), text()).prop_map(|(f, s)| Expr::Matches(sp(f), sp(s))),
        (field(), vtype()).prop_map(|(f, t)| Expr::IsType(sp(f), t)),
        field().prop_map(|f| Expr::Present(sp(f))),
        (field(), cmp(), number()).prop_map(|(f, o, n)| Expr::Len(sp(f), o, n)),
        (field(), text()).prop_map(|(f, s)| Expr::Contains(sp(f), sp(s))),
        ident().prop_map(|c| Expr::InClass(sp(c))),
        text().prop_map(|t| Expr::Tainted(sp(t))),
        text().prop_map(|t| Expr::Used(sp(t))),
        ident().prop_map(|c| Expr::Seen(sp(c))),
        (
            prop_oneof![
                text().prop_map(CountSubject::Subject),
                ident().prop_map(CountSubject::Class)
            ],
            1u64..10_000_000,
            cmp(),
            any::<u32>()
        )
            .prop_map(|(s, w, o, n)| Expr::Count(sp(s), w, o, n)),
        Just(Expr::OutsideIntent),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    atom().prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Expr::Not(Box::new(a))),
        ]
    })
}

fn modspec() -> impl Strategy<Value = ModSpec> {
    prop_oneof![
        path().prop_map(ModSpec::Redact),
        path().prop_map(ModSpec::Drop),
        (path(), number(), number()).prop_map(|(p, a, b)| ModSpec::Clamp(p, a, b)),
        Just(ModSpec::RedactSecrets),
        text().prop_map(ModSpec::StripHeader),
        (text(), text()).prop_map(|(a, b)| ModSpec::SetHeader(a, b)),
        prop::collection::vec(text(), 0..3).prop_map(ModSpec::RemoveTools),
        text().prop_map(ModSpec::InjectCredential),
    ]
}

fn decision() -> impl Strategy<Value = DecisionSpec> {
    let base = |decision, reason| DecisionSpec {
        decision,
        reason,
        modifications: vec![],
        step_up: None,
        defer: None,
        span: Span::default(),
    };
    prop_oneof![
        text().prop_map(move |r| base(Decision::Allow, r)),
        text().prop_map(move |r| base(Decision::Deny, r)),
        (text(), prop::collection::vec(modspec().prop_map(sp), 1..4)).prop_map(move |(r, m)| {
            DecisionSpec {
                modifications: m,
                ..base(Decision::Modify, r)
            }
        }),
        (text(), text(), 1u32..100_000).prop_map(move |(r, g, t)| DecisionSpec {
            step_up: Some((g, t)),
            ..base(Decision::StepUp, r)
        }),
        (text(), text(), 1u32..100_000_000).prop_map(move |(r, s, t)| DecisionSpec {
            defer: Some((s, t)),
            ..base(Decision::Defer, r)
        }),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop::sample::select(vec![Mode::Audit, Mode::Warn, Mode::Enforce])
}

fn effect() -> impl Strategy<Value = EffectSpec> {
    prop_oneof![
        text().prop_map(EffectSpec::Taint),
        prop::option::of(text()).prop_map(EffectSpec::RevokeTool),
        ident().prop_map(EffectSpec::RevokeClass),
        Just(EffectSpec::ReadOnly),
        Just(EffectSpec::Kill),
    ]
}

fn strings() -> impl Strategy<Value = Vec<Spanned<String>>> {
    prop::collection::vec(text().prop_map(sp), 0..3)
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        (ident(), prop::collection::vec(literal().prop_map(sp), 0..4)).prop_map(|(n, v)| {
            Item::List(ListDef {
                name: sp(n),
                values: v,
                span: Span::default(),
            })
        }),
        (
            ident(),
            prop::sample::select(vec![
                RiskTier::Low,
                RiskTier::Medium,
                RiskTier::High,
                RiskTier::Critical
            ]),
            any::<bool>(),
            expr()
        )
            .prop_map(|(n, risk, readonly, when)| Item::Class(ClassDef {
                name: sp(n),
                risk,
                readonly,
                when,
                span: Span::default()
            })),
        (
            ident(),
            prop::option::of(text()),
            prop::collection::vec(ident().prop_map(sp), 0..3),
            (strings(), strings(), strings()),
            (
                prop::option::of(any::<u32>()),
                prop::option::of(0u64..1 << 40),
                prop::option::of(0u64..1 << 40),
                prop::option::of(any::<u32>())
            ),
            decision()
        )
            .prop_map(
                |(n, d, classes, (tools, hosts, data), (a, e, du, ap), outside)| {
                    Item::Intent(IntentDef {
                        name: sp(n),
                        description: d.map(sp),
                        classes,
                        tools,
                        hosts,
                        data_scopes: data,
                        limits: IntentLimits {
                            max_actions: a,
                            max_egress_bytes: e,
                            max_duration_ms: du,
                            max_approvals: ap,
                        },
                        outside,
                        span: Span::default(),
                    })
                }
            ),
        (
            text(),
            any::<bool>(),
            prop::collection::vec(
                (
                    prop::collection::vec(text(), 0..3).prop_map(sp),
                    vtype(),
                    any::<bool>()
                ),
                0..3
            )
        )
            .prop_map(|(t, coerce, args)| Item::ToolSchema(ToolSchemaDef {
                tool: sp(t),
                coerce,
                args: args
                    .into_iter()
                    .map(|(path, ty, coerce)| ArgDecl { path, ty, coerce })
                    .collect(),
                span: Span::default()
            })),
        (
            ident(),
            prop::option::of(mode()),
            expr(),
            decision(),
            prop::collection::vec(effect().prop_map(sp), 0..3)
        )
            .prop_map(|(n, m, when, decision, effects)| {
                Item::Rule(RuleDef {
                    name: sp(n),
                    mode: m,
                    when,
                    decision,
                    effects,
                    span: Span::default(),
                })
            }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        text(),
        text(),
        mode(),
        decision(),
        decision(),
        prop::option::of(0u16..4),
        prop::collection::vec(item(), 0..5),
    )
        .prop_map(
            |(name, version, mode, default, unknown_session, protocol, items)| Policy {
                pack: Pack {
                    intent_header: name.len() % 2 == 0,
                    require_session_key: name.len() % 3 == 0,
                    name: sp(name),
                    version: sp(version),
                    mode,
                    default,
                    unknown_session,
                    mcp_protocol: protocol.map(sp),
                    span: Span::default(),
                },
                items,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_policies_round_trip(p in policy()) {
        let text = format_policy(&p);
        let back = parse(&text).map_err(|d| TestCaseError::fail(format!("{d:?}\n{text}")))?;
        prop_assert_eq!(without_spans(&p), without_spans(&back), "{}", text);
        prop_assert_eq!(format_policy(&back), text);
    }
}

#[test]
fn hash_and_slashes_inside_strings_are_not_comments() {
    let src = "pack \"p#1\" {}\n// slash comment\nrule r { when target.path glob \"//x#y\" allow \"a # b\" }\n";
    let out = format_source(src).unwrap();
    assert!(out.contains("pack \"p#1\" {"), "{out}");
    assert!(out.contains("// slash comment\nrule r {"), "{out}");
    assert!(
        out.contains("when target.path glob \"//x#y\"\n  allow \"a # b\""),
        "{out}"
    );
    assert_eq!(policy::syntax::comments(src).len(), 1);
}
