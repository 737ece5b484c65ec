//! Builders for hand-written programs and actions (the bundle crate has no parser).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test support: each test binary uses some builders; a failed unwrap is a failed test"
)]

use bundle::action::{Action, Kind};
use bundle::format::*;
use bundle::verdict::{Decision, Mode};
use bundle::{Bundle, Trust};

pub fn dec(d: Decision, reason: &str) -> DecisionDef {
    DecisionDef {
        decision: d,
        reason: reason.to_owned(),
        modifications: vec![],
        step_up: None,
        defer: None,
    }
}

pub fn prog() -> Program {
    Program {
        pack: "t".into(),
        version: "1.0.0".into(),
        mode: Mode::Enforce,
        default: dec(Decision::Deny, "not allowed"),
        unknown_session: dec(Decision::Deny, "session lost"),
        mcp_protocol: None,
        intent_header: false,
        require_session_key: false,
        matchers: vec![],
        classes: vec![],
        intents: vec![],
        rules: vec![],
        tools: vec![],
        tool_pins: vec![],
    }
}

/// One-instruction condition.
pub fn when(p: Pred) -> Vec<Instr> {
    vec![Instr {
        pred: p,
        negated: false,
        on_true: Jump::Accept,
        on_false: Jump::Reject,
    }]
}

/// `a and b`.
pub fn and(a: Pred, b: Pred) -> Vec<Instr> {
    vec![
        Instr {
            pred: a,
            negated: false,
            on_true: Jump::To(1),
            on_false: Jump::Reject,
        },
        Instr {
            pred: b,
            negated: false,
            on_true: Jump::Accept,
            on_false: Jump::Reject,
        },
    ]
}

pub fn rule(name: &str, code: Vec<Instr>, d: DecisionDef) -> RuleDef {
    RuleDef {
        name: name.into(),
        mode: Mode::Enforce,
        decision: d,
        effects: vec![],
        pins: Pins::default(),
        code,
    }
}

pub fn tool_is(t: &str) -> Pred {
    Pred::Cmp(FieldRef::Tool, CmpOp::Eq, Lit::Str(t.into()))
}

pub fn call(tool: &str, args: serde_json::Value) -> Action {
    Action {
        kind: Kind::Mcp,
        operation: "tools/call".into(),
        tool: Some(tool.into()),
        arguments: args,
        ..Action::default()
    }
}

pub fn http(method: &str, host: &str, size: u64) -> Action {
    let mut a = Action {
        kind: Kind::Http,
        operation: method.into(),
        size,
        ..Action::default()
    };
    a.target.host = host.into();
    a.target.path = "/".into();
    a.target.scheme = "https".into();
    a.target.port = 443;
    a
}

pub fn load(p: &Program) -> Bundle {
    Bundle::from_bytes(&bundle::encode(p), &Trust::AllowUnsigned).unwrap()
}

pub fn regex_dfa(pattern: &str) -> Vec<u8> {
    use regex_automata::dfa::{StartKind, dense};
    let dfa = dense::Builder::new()
        .configure(dense::Config::new().start_kind(StartKind::Anchored))
        .build(&format!("(?:{pattern})\\z"))
        .unwrap();
    let (bytes, pad) = dfa.to_bytes_little_endian();
    bytes[pad..].to_vec()
}

/// A program that uses every section and opcode of format version 2 (the v2 golden): `rich_v1`
/// plus the `mcp_protocol` record, a tool declaration, a negated instruction and a `coerce_arg`.
pub fn rich() -> Program {
    use bundle::verdict::{Modification, PathSegment};
    let mut p = rich_v1();
    p.mcp_protocol = Some(1);
    p.tools = vec![ToolDef {
        name: "query_db".into(),
        args: vec![
            ArgDef {
                path: vec!["limit".into()],
                ty: VType::Number,
                coerce: true,
            },
            ArgDef {
                path: vec!["sql".into()],
                ty: VType::String,
                coerce: false,
            },
        ],
    }];
    // `tool == "query_db" and not (args.limit <= 20)`
    let limit = vec![PathSegment::Key("limit".into())];
    let mut rows = rule(
        "bounded_rows",
        vec![
            Instr {
                pred: tool_is("query_db"),
                negated: false,
                on_true: Jump::To(1),
                on_false: Jump::Reject,
            },
            Instr {
                pred: Pred::Cmp(FieldRef::Arg(limit.clone()), CmpOp::Le, Lit::Num(20.0)),
                negated: true,
                on_true: Jump::Reject,
                on_false: Jump::Accept,
            },
        ],
        DecisionDef {
            modifications: vec![Modification::CoerceArg {
                path: limit,
                value: serde_json::json!(20),
            }],
            ..dec(Decision::Modify, "a query returns at most 20 rows")
        },
    );
    rows.pins.tools = vec!["query_db".into()];
    p.rules.push(rows);
    p
}

/// [`rich`] with what format version 3 adds: the pack flags, the principal fields and predicates,
/// both `quarantine` effects and the principal-wide revocations
/// (`testdata/bundles/v3-rich.bundle`).
pub fn rich_v3() -> Program {
    use bundle::session::{Quarantine, name_hash};
    let mut p = rich();
    p.intent_header = true;
    p.require_session_key = true;
    // `principal.tainted("untrusted_instruction") and not principal.quarantined
    //  and principal.denials >= 3`
    let mut r = rule(
        "contain_agent",
        vec![
            Instr {
                pred: Pred::PrincipalTainted(name_hash("untrusted_instruction")),
                negated: false,
                on_true: Jump::To(1),
                on_false: Jump::Reject,
            },
            Instr {
                pred: Pred::Quarantined,
                negated: true,
                on_true: Jump::To(2),
                on_false: Jump::Reject,
            },
            Instr {
                pred: Pred::Cmp(FieldRef::PrincipalDenials, CmpOp::Ge, Lit::Num(3.0)),
                negated: false,
                on_true: Jump::Accept,
                on_false: Jump::Reject,
            },
        ],
        dec(Decision::Deny, "a tainted agent that keeps trying"),
    );
    r.effects = vec![
        EffectDef::Quarantine(Quarantine::ReadOnly),
        EffectDef::Quarantine(Quarantine::Full),
        EffectDef::RevokePrincipalTool(None),
        EffectDef::RevokePrincipalTool(Some("deploy".into())),
        EffectDef::RevokePrincipalClass("secret_read".into()),
    ];
    p.rules.push(r);
    p
}

/// [`rich_v3`] with what format version 4 adds: a rule on `tool.changed` and `tool.shadowed`, and
/// tool pins from a reviewed catalogue (`testdata/bundles/v4-rich.bundle`).
pub fn rich_v4() -> Program {
    use bundle::format::ToolPin;
    let mut p = rich_v3();
    // `tool.changed == true or not tool.shadowed == false`
    p.rules.push(rule(
        "changed_tool",
        vec![
            Instr {
                pred: Pred::Cmp(FieldRef::ToolChanged, CmpOp::Eq, Lit::Bool(true)),
                negated: false,
                on_true: Jump::Accept,
                on_false: Jump::To(1),
            },
            Instr {
                pred: Pred::Cmp(FieldRef::ToolShadowed, CmpOp::Eq, Lit::Bool(false)),
                negated: true,
                on_true: Jump::Reject,
                on_false: Jump::Accept,
            },
        ],
        dec(Decision::Deny, "the tool is not the one reviewed"),
    ));
    p.tool_pins = vec![
        ToolPin {
            server: "fs".into(),
            name: "read_file".into(),
            digest: [7; 32],
        },
        ToolPin {
            server: "fs".into(),
            name: "write_file\u{0435}".into(),
            digest: [9; 32],
        },
        ToolPin {
            server: "git".into(),
            name: "git_push".into(),
            digest: [1; 32],
        },
    ];
    p
}

/// [`rich_v4`] with what format version 5 adds: a rule whose MODIFY injects a credential
/// (`testdata/bundles/v5-rich.bundle`).
pub fn rich_v5() -> Program {
    use bundle::verdict::Modification;
    let mut p = rich_v4();
    let mut d = dec(
        Decision::Modify,
        "the issue tracker gets a per-action token",
    );
    d.modifications = vec![
        Modification::StripHeader {
            name: "cookie".into(),
        },
        Modification::InjectCredential {
            name: "tracker".into(),
        },
    ];
    p.rules
        .push(rule("tracker_token", when(tool_is("create_issue")), d));
    p
}

/// The program of the version-1 golden (`testdata/bundles/v1-rich.bundle`): every section and
/// most opcodes of format version 1.
pub fn rich_v1() -> Program {
    use bundle::verdict::{Defer, Modification, PathSegment, RiskTier, StepUp};
    let mut p = prog();
    p.matchers = vec![
        MatcherDef::Set {
            strs: vec!["list_dir".into(), "read_file".into()],
            nums: vec![1.0],
            bools: vec![],
        },
        MatcherDef::Globs(vec!["deps/*".into()]),
        MatcherDef::Prefixes(vec!["/repo".into()]),
        MatcherDef::Regex {
            pattern: "sk-[a-z]+".into(),
            dfa: regex_dfa("sk-[a-z]+"),
        },
    ];
    p.classes = vec![
        ClassDef {
            name: "repo_read".into(),
            risk: RiskTier::Low,
            readonly: true,
            code: when(Pred::In(FieldRef::Tool, 0)),
        },
        ClassDef {
            name: "secret_read".into(),
            risk: RiskTier::High,
            readonly: false,
            code: when(tool_is("get_secret")),
        },
    ];
    p.intents = vec![IntentDef {
        name: "dependency_update".into(),
        classes: vec![0],
        tools: vec!["git_push".into(), "create_pr".into()],
        hosts: vec!["registry.npmjs.org".into()],
        data: vec![],
        max_actions: Some(200),
        max_egress_bytes: Some(1 << 20),
        max_duration_ms: Some(1_800_000),
        max_approvals: Some(2),
        outside: dec(Decision::Deny, "outside the dependency_update task"),
    }];
    let mut push = rule(
        "bounded_push",
        and(
            tool_is("git_push"),
            Pred::Glob(FieldRef::Arg(vec![PathSegment::Key("branch".into())]), 1),
        ),
        dec(Decision::Allow, "pushing a deps branch"),
    );
    push.pins.tools = vec!["git_push".into()];
    let mut read = rule(
        "read_repo",
        when(Pred::InClass(0)),
        dec(Decision::Allow, "reading is fine"),
    );
    read.mode = Mode::Enforce;
    let mut secrets = rule(
        "secrets_after_injection",
        and(
            Pred::Tainted(bundle::session::name_hash("untrusted_instruction")),
            Pred::InClass(1),
        ),
        dec(
            Decision::Deny,
            "secret access after a tool returned instructions",
        ),
    );
    secrets.effects = vec![EffectDef::Kill, EffectDef::RevokeTool(None)];
    let mut deploy = rule(
        "prod_deploy",
        and(
            tool_is("deploy"),
            Pred::Cmp(
                FieldRef::Arg(vec![PathSegment::Key("env".into())]),
                CmpOp::Eq,
                Lit::Str("production".into()),
            ),
        ),
        DecisionDef {
            step_up: Some(StepUp {
                group: "release-managers".into(),
                timeout_s: 900,
            }),
            ..dec(
                Decision::StepUp,
                "production deploys need a release manager",
            )
        },
    );
    deploy.mode = Mode::Warn;
    deploy.pins.tools = vec!["deploy".into()];
    let mut redact = rule(
        "redact_keys",
        when(Pred::Matches(
            FieldRef::Arg(vec![PathSegment::Key("body".into())]),
            3,
        )),
        DecisionDef {
            modifications: vec![
                Modification::RedactArg {
                    path: vec![PathSegment::Key("body".into())],
                },
                Modification::ClampArg {
                    path: vec![PathSegment::Key("limit".into()), PathSegment::Index(0)],
                    min: 1.0,
                    max: 100.0,
                },
                Modification::SetHeader {
                    name: "x-a".into(),
                    value: "b".into(),
                },
            ],
            ..dec(Decision::Modify, "secrets are redacted")
        },
    );
    redact.effects = vec![EffectDef::Taint("secret".into())];
    let ctx = rule(
        "ask_context",
        when(Pred::Prefix(FieldRef::Path, 2)),
        DecisionDef {
            defer: Some(Defer {
                service: "ctx".into(),
                timeout_ms: 250,
            }),
            ..dec(Decision::Defer, "ask the context service")
        },
    );
    p.rules = vec![push, read, secrets, deploy, redact, ctx];
    p
}
