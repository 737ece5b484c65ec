//! Differential tests: the bundle VM must return exactly the reference interpreter's verdict.
//!
//! 1. Every tabletop case of every example pack (`examples/policies/*/tests.toml`), history
//!    included: each verdict of the simulated session, through both evaluators.
//! 2. proptest: random policies (ASTs over the whole expression language, classes referring to
//!    earlier classes and to the built-in `mcp_protocol`, intents with limits, every decision and
//!    effect kind, tool argument declarations with and without `coerce`) x random actions (with
//!    arguments of every JSON type, so tests hit type errors) x random sessions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap, expect or panic is a failed test"
)]

use std::path::Path;

use bundle::action::{Action, AuthMethod, IntentSource, Kind};
use bundle::session::{
    HistoryEntry, PrincipalView, Quarantine, SessionState, SessionStatus, name_hash,
};
use bundle::verdict::{Decision, Mode, RiskTier};
use bundle::{Bundle, Trust};
use policy::ast::EffectDef as EffectSpec;
use policy::ast::FieldRef as Field;
use policy::ast::Lit as Literal;
use policy::ast::PathSegment as PathStep;
use policy::ast::Role as PrincipalRole;
use policy::ast::VType as ValueType;
use policy::ast::*;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

fn vm(policy: &Policy) -> Bundle {
    let bytes = policy::codegen::compile(policy).unwrap();
    Bundle::from_bytes(&bytes, &Trust::AllowUnsigned).unwrap()
}

#[test]
fn every_tabletop_case_agrees() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut packs = 0;
    let mut cases = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let (src, tests) = (dir.join("policy.pcl"), dir.join("tests.toml"));
        if !src.exists() || !tests.exists() {
            continue;
        }
        let p = policy::syntax::parse(&std::fs::read_to_string(&src).unwrap()).unwrap();
        let file = policy::tabletop::load(&tests).unwrap();
        let b = vm(&p);
        for case in &file.cases {
            let want =
                policy::tabletop::simulate(case, &|a, s, t| policy::interp::evaluate(&p, a, s, t));
            let got = policy::tabletop::simulate(case, &|a, s, t| b.evaluate(a, s, t));
            assert_eq!(want, got, "{}: case `{}`", dir.display(), case.name);
            cases += 1;
        }
        packs += 1;
    }
    assert!(
        packs >= 1 && cases >= 10,
        "found {packs} packs, {cases} cases"
    );
}

// ---------------------------------------------------------------- random policies

const TOOLS: &[&str] = &[
    "read_file",
    "git_push",
    "deploy",
    "send_email",
    "get_secret",
];
const HOSTS: &[&str] = &["api.github.com", "exfil.example", "registry.npmjs.org", ""];
const STRS: &[&str] = &[
    "read_file",
    "git_push",
    "mcp",
    "http",
    "tools/call",
    "GET",
    "POST",
    "api.github.com",
    "a",
    "prod",
    "",
    "deps/x",
    "i0",
    "none",
    "mtls",
];
const GLOBS: &[&str] = &["*", "read_*", "*.example", "deps/?", "a*", "?", "*_*"];
const REGEXES: &[&str] = &["[a-z_]+", "deps/.*", "a|b", "[0-9]+", ".*\\.example"];
const CLASSES: &[&str] = &["c0", "c1", "c2"];
const TAINTS: &[&str] = &["secret", "untrusted_instruction"];

fn sp<T>(node: T) -> Spanned<T> {
    Spanned {
        node,
        span: Span::default(),
    }
}

fn string_field() -> impl Strategy<Value = Field> {
    select(vec![
        Field::Kind,
        Field::Operation,
        Field::Tool,
        Field::Resource,
        Field::Host,
        Field::Path,
        Field::Header("x-h".into()),
        Field::Principal(PrincipalRole::Agent),
        Field::PrincipalAuth(PrincipalRole::Agent),
        Field::SessionId,
        Field::Intent,
        Field::Arg(vec![PathStep::Key("a".into())]),
        Field::Arg(vec![PathStep::Key("tags".into()), PathStep::Index(0)]),
    ])
}

fn any_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        string_field(),
        select(vec![
            Field::Port,
            Field::RequestSize,
            Field::RiskSecrets,
            Field::RiskDataClasses,
            Field::SessionActions,
            Field::SessionEgressBytes,
            Field::SessionApprovals,
            Field::SessionElapsed,
            Field::SessionDrift,
            Field::PrincipalSessions,
            Field::PrincipalDenials,
            Field::PrincipalId,
            Field::ToolChanged,
            Field::ToolShadowed,
            Field::Arg(vec![]),
            Field::Arg(vec![PathStep::Key("n".into())]),
            Field::Arg(vec![PathStep::Key("tags".into())]),
        ]),
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        select(STRS).prop_map(|s| Literal::Str(s.to_owned())),
        (-2i32..300).prop_map(|n| Literal::Num(f64::from(n))),
        Just(Literal::Num(0.5)),
        any::<bool>().prop_map(Literal::Bool),
    ]
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ])
}

fn set_of(items: impl Strategy<Value = Literal> + 'static) -> impl Strategy<Value = SetRef> {
    prop_oneof![
        3 => proptest::collection::vec(items.prop_map(sp), 0..4).prop_map(SetRef::Inline),
        1 => Just(SetRef::Named(sp("l0".to_owned()))),
    ]
}

fn str_lit(pool: &'static [&'static str]) -> impl Strategy<Value = Literal> {
    select(pool).prop_map(|s| Literal::Str(s.to_owned()))
}

/// A leaf; `classes` = how many classes it may refer to, `in_rule` allows `intent.outside`.
fn leaf(classes: usize, in_rule: bool) -> BoxedStrategy<Expr> {
    let mut v: Vec<BoxedStrategy<Expr>> = vec![
        any::<bool>().prop_map(Expr::Const).boxed(),
        (any_field(), cmp_op(), literal())
            .prop_map(|(f, o, l)| Expr::Cmp(sp(f), o, sp(l)))
            .boxed(),
        (any_field(), set_of(literal()))
            .prop_map(|(f, s)| Expr::In(sp(f), s))
            .boxed(),
        (string_field(), set_of(str_lit(GLOBS)))
            .prop_map(|(f, s)| Expr::Glob(sp(f), s))
            .boxed(),
        (string_field(), set_of(str_lit(STRS)))
            .prop_map(|(f, s)| Expr::Prefix(sp(f), s))
            .boxed(),
        (string_field(), select(REGEXES))
            .prop_map(|(f, r)| Expr::Matches(sp(f), sp(r.to_owned())))
            .boxed(),
        (
            any_field(),
            select(vec![
                ValueType::String,
                ValueType::Number,
                ValueType::Bool,
                ValueType::Array,
                ValueType::Object,
                ValueType::Null,
            ]),
        )
            .prop_map(|(f, t)| Expr::IsType(sp(f), t))
            .boxed(),
        any_field().prop_map(|f| Expr::Present(sp(f))).boxed(),
        (any_field(), cmp_op(), 0u8..4)
            .prop_map(|(f, o, n)| Expr::Len(sp(f), o, f64::from(n)))
            .boxed(),
        (any_field(), select(STRS))
            .prop_map(|(f, s)| Expr::Contains(sp(f), sp(s.to_owned())))
            .boxed(),
        select(TAINTS)
            .prop_map(|t| Expr::Tainted(sp(t.to_owned())))
            .boxed(),
        select(TOOLS)
            .prop_map(|t| Expr::Used(sp(t.to_owned())))
            .boxed(),
        select(TAINTS)
            .prop_map(|t| Expr::PrincipalTainted(sp(t.to_owned())))
            .boxed(),
        Just(Expr::Quarantined).boxed(),
        select(CLASSES)
            .prop_map(|c| Expr::Seen(sp(c.to_owned())))
            .boxed(),
        (
            prop_oneof![
                select(TOOLS).prop_map(|t| CountSubject::Subject(t.to_owned())),
                select(CLASSES).prop_map(|c| CountSubject::Class(c.to_owned())),
            ],
            select(vec![1_000u64, 60_000]),
            cmp_op(),
            0u32..3,
        )
            .prop_map(|(s, w, o, n)| Expr::Count(sp(s), w, o, n))
            .boxed(),
    ];
    if classes > 0 {
        v.push(
            (0..classes)
                .prop_map(|i| Expr::InClass(sp(format!("c{i}"))))
                .boxed(),
        );
    }
    v.push(Just(Expr::InClass(sp("mcp_protocol".to_owned()))).boxed());
    if in_rule {
        v.push(Just(Expr::OutsideIntent).boxed());
    }
    proptest::strategy::Union::new(v).boxed()
}

fn expr(classes: usize, in_rule: bool) -> BoxedStrategy<Expr> {
    leaf(classes, in_rule)
        .prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|a| Expr::Not(Box::new(a))),
            ]
        })
        .boxed()
}

fn decision() -> impl Strategy<Value = DecisionSpec> {
    let path = || {
        select(vec![
            vec![PathStep::Key("a".into())],
            vec![PathStep::Key("n".into()), PathStep::Index(0)],
        ])
    };
    let modspec = prop_oneof![
        path().prop_map(|p| sp(ModSpec::Redact(p))),
        path().prop_map(|p| sp(ModSpec::Drop(p))),
        path().prop_map(|p| sp(ModSpec::Clamp(p, 1.0, 10.0))),
        Just(sp(ModSpec::RedactSecrets)),
        Just(sp(ModSpec::StripHeader("x-h".into()))),
        Just(sp(ModSpec::SetHeader("x-a".into(), "b".into()))),
        Just(sp(ModSpec::RemoveTools(vec!["get_*".into()]))),
        Just(sp(ModSpec::InjectCredential("tracker".into()))),
    ];
    (
        select(vec![
            Decision::Allow,
            Decision::Modify,
            Decision::Defer,
            Decision::StepUp,
            Decision::Deny,
        ]),
        select(vec!["reason one", "reason two"]),
        proptest::collection::vec(modspec, 1..3),
    )
        .prop_map(|(d, r, mods)| DecisionSpec {
            decision: d,
            reason: r.to_owned(),
            modifications: if d == Decision::Modify { mods } else { vec![] },
            step_up: (d == Decision::StepUp).then(|| ("approvers".to_owned(), 60)),
            defer: (d == Decision::Defer).then(|| ("ctx".to_owned(), 100)),
            span: Span::default(),
        })
}

fn mode() -> impl Strategy<Value = Mode> {
    select(vec![Mode::Audit, Mode::Warn, Mode::Enforce])
}

fn effect() -> impl Strategy<Value = Spanned<EffectSpec>> {
    select(vec![
        EffectSpec::Taint("secret".into()),
        EffectSpec::Taint("untrusted_instruction".into()),
        EffectSpec::RevokeTool(None),
        EffectSpec::RevokeTool(Some("deploy".into())),
        EffectSpec::RevokeClass("c0".into()),
        EffectSpec::ReadOnly,
        EffectSpec::Kill,
        EffectSpec::Quarantine(bundle::session::Quarantine::ReadOnly),
        EffectSpec::Quarantine(bundle::session::Quarantine::Full),
        EffectSpec::RevokePrincipalTool(None),
        EffectSpec::RevokePrincipalTool(Some("deploy".into())),
        EffectSpec::RevokePrincipalClass("c0".into()),
    ])
    .prop_map(sp)
}

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<Spanned<String>>> {
    subsequence(pool, 0..=pool.len())
        .prop_map(|v| v.into_iter().map(|s| sp(s.to_owned())).collect())
}

fn intent(name: &'static str, classes: usize) -> impl Strategy<Value = Item> {
    (
        subsequence(&CLASSES[..classes], 0..=classes),
        names(&["git_*", "read_file", "deploy"]),
        names(&["*.github.com", "registry.npmjs.org"]),
        names(&["pii"]),
        (
            proptest::option::of(0u32..20),
            proptest::option::of(0u64..3000),
            proptest::option::of(0u64..100_000),
            proptest::option::of(0u32..3),
        ),
        decision(),
    )
        .prop_map(
            move |(cls, tools, hosts, data, (ma, me, md, mp), outside)| {
                Item::Intent(IntentDef {
                    name: sp(name.to_owned()),
                    description: None,
                    classes: cls.into_iter().map(|c| sp(c.to_owned())).collect(),
                    tools,
                    hosts,
                    data_scopes: data,
                    limits: IntentLimits {
                        max_actions: ma,
                        max_egress_bytes: me,
                        max_duration_ms: md,
                        max_approvals: mp,
                    },
                    outside,
                    span: Span::default(),
                })
            },
        )
}

/// Declarations of `read_file` and `git_push` arguments (no member declared inside a non-object,
/// as the checker requires).
fn tool_schema(tool: &'static str) -> impl Strategy<Value = Item> {
    let vtype = select(vec![
        ValueType::String,
        ValueType::Number,
        ValueType::Bool,
        ValueType::Array,
        ValueType::Object,
    ]);
    let paths: Vec<Vec<String>> = vec![
        vec!["a".into()],
        vec!["n".into()],
        vec!["tags".into()],
        vec!["o".into(), "k".into()],
    ];
    (
        any::<bool>(),
        subsequence(paths, 0..=4),
        proptest::collection::vec((vtype, any::<bool>()), 4),
    )
        .prop_map(move |(coerce, paths, types)| {
            Item::ToolSchema(ToolSchemaDef {
                tool: sp(tool.to_owned()),
                coerce,
                args: paths
                    .into_iter()
                    .zip(types)
                    .map(|(path, (ty, coerce))| ArgDecl {
                        path: sp(path),
                        ty,
                        coerce,
                    })
                    .collect(),
                span: Span::default(),
            })
        })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (0usize..=3).prop_flat_map(|nclasses| {
        let classes: Vec<BoxedStrategy<Item>> = (0..nclasses)
            .map(|i| {
                (
                    expr(i, false),
                    select(vec![
                        RiskTier::Low,
                        RiskTier::Medium,
                        RiskTier::High,
                        RiskTier::Critical,
                    ]),
                    any::<bool>(),
                )
                    .prop_map(move |(when, risk, readonly)| {
                        Item::Class(ClassDef {
                            name: sp(format!("c{i}")),
                            risk,
                            readonly,
                            when,
                            span: Span::default(),
                        })
                    })
                    .boxed()
            })
            .collect();
        let rule = (
            expr(nclasses, true),
            proptest::option::of(mode()),
            decision(),
            proptest::collection::vec(effect(), 0..3),
        );
        (
            classes,
            proptest::collection::vec(rule, 1..6),
            proptest::collection::vec(literal().prop_map(sp), 0..4),
            intent("i0", nclasses),
            intent("i1", nclasses),
            (mode(), decision(), decision()),
            (
                proptest::option::weighted(0.8, tool_schema("read_file")),
                proptest::option::weighted(0.5, tool_schema("git_push")),
            ),
        )
            .prop_map(
                |(classes, rules, list, i0, i1, (pack_mode, default, unknown), schemas)| {
                    let mut items = vec![Item::List(ListDef {
                        name: sp("l0".into()),
                        values: list,
                        span: Span::default(),
                    })];
                    items.extend(schemas.0);
                    items.extend(classes);
                    items.extend(schemas.1);
                    items.push(i0);
                    items.push(i1);
                    for (n, (when, mode, decision, effects)) in rules.into_iter().enumerate() {
                        items.push(Item::Rule(RuleDef {
                            name: sp(format!("r{n}")),
                            mode,
                            when,
                            decision,
                            effects,
                            span: Span::default(),
                        }));
                    }
                    Policy {
                        pack: Pack {
                            name: sp("random".into()),
                            version: sp("0".into()),
                            mode: pack_mode,
                            default,
                            unknown_session: unknown,
                            mcp_protocol: None,
                            intent_header: pack_mode == Mode::Warn,
                            require_session_key: false,
                            span: Span::default(),
                        },
                        items,
                    }
                },
            )
    })
}

const NOW: u64 = 1_800_000_000_000;

fn action_strategy() -> BoxedStrategy<Action> {
    // Values of every JSON type, and strings a `coerce` converts (or almost does).
    let value = || -> BoxedStrategy<serde_json::Value> {
        prop_oneof![
            3 => select(STRS).prop_map(|s| serde_json::json!(s)),
            3 => (0i32..20).prop_map(|n| serde_json::json!(n)),
            1 => Just(serde_json::json!(null)),
            1 => any::<bool>().prop_map(|b| serde_json::json!(b)),
            2 => select(vec!["7", " 12 ", "2.5", "1e3", "true", "false", "+1", "0x10"])
                .prop_map(|s| serde_json::json!(s)),
            1 => (0i32..20).prop_map(|n| serde_json::json!([n])),
            1 => Just(serde_json::json!({"k": "v"})),
        ]
        .boxed()
    };
    let args: BoxedStrategy<serde_json::Value> = prop_oneof![
        1 => Just(serde_json::Value::Null),
        1 => Just(serde_json::json!(["not", "an", "object"])),
        6 => (
            proptest::option::of(value()),
            proptest::option::of(prop_oneof![
                (0i32..20).prop_map(|n| serde_json::json!([n])),
                value(),
            ]),
            proptest::option::of(prop_oneof![
                subsequence(STRS, 0..3).prop_map(|t| serde_json::json!(t)),
                value(),
            ]),
            proptest::option::of(prop_oneof![
                value().prop_map(|k| serde_json::json!({ "k": k })),
                value(),
            ]),
        )
            .prop_map(|(a, n, tags, o)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [("a", a), ("n", n), ("tags", tags), ("o", o)] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                serde_json::Value::Object(m)
            }),
    ]
    .boxed();
    (
        any::<bool>(),
        select(vec![
            "tools/call",
            "tools/call",
            "tools/list",
            "resources/read",
            "initialize",
            "response",
            "notifications/progress",
            "http/options",
        ]),
        select(vec!["GET", "POST", "CONNECT"]),
        proptest::option::of(select(TOOLS)),
        args,
        select(HOSTS),
        select(vec![0u16, 443, 8443]),
        (
            proptest::option::of(select(vec!["a", "prod"])),
            proptest::option::of(select(vec!["agent-1", "a"])),
            select(vec![AuthMethod::None, AuthMethod::Mtls, AuthMethod::Jwt]),
        ),
        (
            any::<bool>(),
            subsequence(&["credential", "pii"][..], 0..=2),
        ),
        proptest::option::of(select(vec!["i0", "i1", "nope"])),
        0u64..2000,
    )
        .prop_map(
            |(
                mcp,
                op_m,
                op_h,
                tool,
                arguments,
                host,
                port,
                (hdr, agent, auth),
                (secrets, dc),
                intent,
                size,
            )| {
                let mut a = Action {
                    kind: if mcp { Kind::Mcp } else { Kind::Http },
                    operation: if mcp { op_m } else { op_h }.to_owned(),
                    tool: if mcp && op_m == "tools/call" {
                        tool.map(str::to_owned)
                    } else {
                        None
                    },
                    arguments,
                    size,
                    declared_intent: intent.map(str::to_owned),
                    intent_source: [
                        IntentSource::None,
                        IntentSource::Grant,
                        IntentSource::Claim,
                        IntentSource::Header,
                        IntentSource::Conflict,
                    ]
                    .into_iter()
                    .nth(usize::try_from(size % 5).unwrap_or(0))
                    .unwrap_or_default(),
                    ..Action::default()
                };
                if !mcp || op_m == "resources/read" {
                    a.resource = (op_m == "resources/read" && mcp).then(|| "file:///a".to_owned());
                }
                a.target.host = host.to_owned();
                a.target.port = port;
                a.target.path = "/repo/x".into();
                if let Some(h) = hdr {
                    a.headers = vec![("x-h".into(), h.into())].into();
                }
                a.identity.agent.id = agent.map(str::to_owned);
                a.identity.agent.auth = auth;
                a.risk.secrets = secrets;
                a.risk.data_classes = dc.into_iter().map(str::to_owned).collect();
                // The tool flags, from values already drawn (both, either and neither occur).
                a.tool_state.changed = size % 3 == 0;
                a.tool_state.shadowed = port % 2 == 0;
                a
            },
        )
        .boxed()
}

/// A `tools/call` of a tool the random policies declare argument types for (so declared types,
/// coercions and `args:type` are exercised often, not only by chance).
fn declared_call_strategy() -> BoxedStrategy<Action> {
    (action_strategy(), select(vec!["read_file", "git_push"]))
        .prop_map(|(mut a, tool)| {
            a.kind = Kind::Mcp;
            a.operation = "tools/call".into();
            a.tool = Some(tool.into());
            a.resource = None;
            a
        })
        .boxed()
}

fn session_strategy() -> impl Strategy<Value = SessionState> {
    let hashes = |pool: &'static [&'static str]| {
        subsequence(pool, 0..=pool.len().min(3))
            .prop_map(|v| v.into_iter().map(name_hash).collect::<Vec<_>>())
    };
    (
        select(vec![
            SessionStatus::New,
            SessionStatus::Active,
            SessionStatus::Active,
            SessionStatus::Missing,
        ]),
        proptest::option::of(select(vec!["i0", "i1", "nope"])),
        (0u64..100_000, 0u32..20, 0u64..3000, 0u32..3),
        (hashes(TAINTS), hashes(TOOLS), hashes(CLASSES)),
        (prop::bool::weighted(0.15), prop::bool::weighted(0.1)),
        proptest::collection::vec((select(TOOLS), 0u16..8, 0u32..100_000), 0..6),
        select(vec![0.0f32, 0.25, 1.0]),
        (
            select(vec![
                Quarantine::None,
                Quarantine::None,
                Quarantine::ReadOnly,
                Quarantine::Full,
            ]),
            hashes(TAINTS),
            0u32..4,
            0u32..4,
            (hashes(TOOLS), hashes(CLASSES)),
        ),
    )
        .prop_map(
            |(
                status,
                intent,
                (age, actions, egress, approvals),
                (taints, rt, rc),
                (ro, killed),
                hist,
                drift,
                (quarantine, ptaints, psessions, pdenials, (prt, prc)),
            )| {
                SessionState {
                    intent_source: IntentSource::None,
                    status,
                    intent: intent.map(str::to_owned),
                    started_ms: NOW - age,
                    actions,
                    egress_bytes: egress,
                    approvals,
                    taints,
                    revoked_tools: rt,
                    revoked_classes: rc,
                    read_only: ro,
                    killed,
                    class_table: CLASSES.iter().map(|c| name_hash(c)).collect(),
                    history: hist
                        .into_iter()
                        .map(|(s, bits, at)| HistoryEntry {
                            at_ms: at,
                            subject: name_hash(s),
                            classes: bits,
                        })
                        .collect(),
                    drift,
                    principal: PrincipalView {
                        id: (psessions > 0).then(|| "spiffe://corp/agent".to_owned()),
                        quarantine,
                        taints: ptaints,
                        sessions: psessions,
                        denials: pdenials,
                        revoked_tools: prt,
                        revoked_classes: prc,
                    },
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_policies_agree(
        p in policy_strategy(),
        cases in proptest::collection::vec(
            (
                prop_oneof![action_strategy().boxed(), declared_call_strategy().boxed()],
                session_strategy().boxed(),
            ),
            1..6,
        ),
    ) {
        let b = vm(&p);
        for (a, s) in &cases {
            let want = policy::interp::evaluate(&p, a, s, NOW);
            let got = b.evaluate(a, s, NOW);
            prop_assert_eq!(&want, &got, "action {:?}\nsession {:?}\npolicy:\n{}", a, s, policy::fmt::format_policy(&p));
        }
    }

    /// Declared types with `coerce` on every argument, and calls whose arguments mostly convert:
    /// coercions meet every decision, mode and rule kind often.
    #[test]
    fn coerced_arguments_agree(
        p in coercing_policy_strategy(),
        cases in proptest::collection::vec((coercible_call_strategy(), session_strategy().boxed()), 1..4),
    ) {
        let b = vm(&p);
        for (a, s) in &cases {
            let want = policy::interp::evaluate(&p, a, s, NOW);
            let got = b.evaluate(a, s, NOW);
            prop_assert_eq!(&want, &got, "action {:?}\nsession {:?}\npolicy:\n{}", a, s, policy::fmt::format_policy(&p));
        }
    }
}

/// A random policy whose first item declares `read_file`'s arguments `a`, `n`, `tags` with
/// `coerce` and random scalar types.
fn coercing_policy_strategy() -> BoxedStrategy<Policy> {
    let scalar = || select(vec![ValueType::String, ValueType::Number, ValueType::Bool]);
    (policy_strategy(), scalar(), scalar(), scalar())
        .prop_map(|(mut p, a, n, tags)| {
            p.items
                .retain(|i| !matches!(i, Item::ToolSchema(t) if t.tool.node == "read_file"));
            let arg = |k: &str, ty| ArgDecl {
                path: sp(vec![k.to_owned()]),
                ty,
                coerce: true,
            };
            p.items.insert(
                0,
                Item::ToolSchema(ToolSchemaDef {
                    tool: sp("read_file".to_owned()),
                    coerce: false,
                    args: vec![arg("a", a), arg("n", n), arg("tags", tags)],
                    span: Span::default(),
                }),
            );
            p
        })
        .boxed()
}

/// `read_file` with arguments that convert between string, number and bool (or almost do).
fn coercible_call_strategy() -> BoxedStrategy<Action> {
    let value = || {
        select(vec![
            serde_json::json!("7"),
            serde_json::json!(" 12 "),
            serde_json::json!("2.5"),
            serde_json::json!("true"),
            serde_json::json!("false"),
            serde_json::json!("a"),
            serde_json::json!(7),
            serde_json::json!(0.5),
            serde_json::json!(true),
            serde_json::json!(null),
        ])
    };
    (
        declared_call_strategy(),
        proptest::option::of(value()),
        proptest::option::of(value()),
        proptest::option::of(value()),
    )
        .prop_map(|(mut a, x, n, tags)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [("a", x), ("n", n), ("tags", tags)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            a.tool = Some("read_file".into());
            a.arguments = serde_json::Value::Object(m);
            a
        })
        .boxed()
}
