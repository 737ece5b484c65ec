//! Code generation: determinism, every example pack compiles and loads, compile errors, and the
//! bundle CLI (build, keygen, sign, verify, inspect, eval) end to end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap, expect or panic is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bundle::verdict::Decision;
use bundle::{Bundle, Trust};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().join("policy.pcl"))
        .filter(|p| p.exists())
        .collect();
    v.sort();
    v
}

fn compile(src: &str) -> Result<Vec<u8>, policy::codegen::CompileError> {
    let p = policy::syntax::parse(src).unwrap_or_else(|d| panic!("parse: {d:?}"));
    policy::codegen::compile(&p)
}

#[test]
fn same_source_gives_identical_bytes_and_every_example_loads() {
    let files = examples();
    assert!(!files.is_empty());
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let a = compile(&src).unwrap();
        let b = compile(&src).unwrap();
        assert_eq!(a, b, "{} compiles to different bytes", f.display());
        let bundle = Bundle::from_bytes(&a, &Trust::AllowUnsigned).unwrap();
        assert!(bundle.info().rules > 0);
    }
}

const SMALL: &str = r#"
pack "small" {
  version "0.1.0"
  mode enforce
  default deny "not allowed"
}

let safe = ["read_file", "list_dir"]

class reads risk low readonly {
  when kind == mcp and tool in safe
}

class reads_too risk medium {
  when class reads and args.path prefix "/repo"
}

rule read_repo {
  when class reads_too
  allow "reading the repository"
}

rule keys {
  when tool == "send_email" and args.body matches "sk-[a-z0-9]+"
  deny "no keys in email"
  then taint "secret", revoke tool
}
"#;

#[test]
fn small_policy_decides_and_indexes() {
    let bytes = compile(SMALL).unwrap();
    let b = Bundle::from_bytes(&bytes, &Trust::AllowUnsigned).unwrap();
    let keys = &b.program().rules[1];
    assert_eq!(keys.pins.tools, ["send_email"]);
    let act =
        |v: serde_json::Value| -> bundle::action::Action { serde_json::from_value(v).unwrap() };
    let s = bundle::session::SessionState::new(0);
    let v = b.evaluate(
        &act(serde_json::json!({"kind": "mcp", "operation": "tools/call", "tool": "read_file", "arguments": {"path": "/repo/x"}})),
        &s,
        0,
    );
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.classes, ["reads", "reads_too"]);
    let v = b.evaluate(
        &act(serde_json::json!({"kind": "mcp", "operation": "tools/call", "tool": "send_email", "arguments": {"body": "sk-abc123"}})),
        &s,
        0,
    );
    assert_eq!(v.deciding_rule, "keys");
    assert_eq!(
        v.effects,
        [
            bundle::verdict::Effect::Taint("secret".into()),
            bundle::verdict::Effect::RevokeTool("send_email".into())
        ]
    );
}

#[test]
fn compile_errors_point_at_the_problem() {
    let bad_regex = r#"
pack "c" { version "1" }
rule r { when tool matches "\\bword\\b" allow "x" }
"#;
    let e = compile(bad_regex).unwrap_err();
    assert!(
        e.message
            .starts_with("regex `\\bword\\b` cannot be compiled"),
        "{}",
        e.message
    );
    assert_eq!(e.span.line, 3);
}

#[test]
fn a_class_only_sees_classes_defined_above_it() {
    // The checker refuses the forward reference; compiled anyway, it reads as false, exactly as
    // in the reference interpreter (classes are decided in source order).
    let src = r#"
pack "c" { version "1" default allow "ok" }
class a risk low { when class b or tool == "x" }
class b risk low { when class a or true }
rule r { when class a deny "in a" }
"#;
    let (_, diags) = policy::check::parse_and_check(src);
    assert!(
        diags
            .iter()
            .any(|d| d.is_error() && d.message.contains("defined after it")),
        "{diags:?}"
    );
    let p = policy::syntax::parse(src).unwrap();
    let b = Bundle::from_bytes(
        &policy::codegen::compile(&p).unwrap(),
        &Trust::AllowUnsigned,
    )
    .unwrap();
    let s = bundle::session::SessionState::new(0);
    for tool in ["x", "y"] {
        let a: bundle::action::Action = serde_json::from_value(
            serde_json::json!({"kind": "mcp", "operation": "tools/call", "tool": tool}),
        )
        .unwrap();
        assert_eq!(
            b.evaluate(&a, &s, 0),
            policy::interp::evaluate(&p, &a, &s, 0),
            "tool {tool}"
        );
    }
}

fn policyc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_build_sign_verify_inspect_eval() {
    let dir = std::env::temp_dir().join(format!("policyc-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(p("small.pcl"), SMALL).unwrap();

    let (code, out, err) = policyc(&["keygen", "--out", &p("team")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ed25519:"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(p("team.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, _, err) = policyc(&["keygen", "--out", &p("team")]);
    assert_eq!(code, 2, "keygen must not overwrite a key: {err}");
    policyc(&["keygen", "--out", &p("other")]);

    let (code, out, err) = policyc(&["build", &p("small.pcl"), "-o", &p("small.bundle")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("built `small` 0.1.0"), "{out}");
    assert!(out.contains("unsigned"), "{out}");

    // unsigned bundle: verify fails with a clear message
    let (code, _, err) = policyc(&["verify", &p("small.bundle"), "--pub", &p("team.pub")]);
    assert_eq!(code, 1);
    assert!(err.contains("the bundle is not signed"), "{err}");

    let (code, _, err) = policyc(&[
        "sign",
        &p("small.bundle"),
        "--key",
        &p("team.key"),
        "-o",
        &p("signed.bundle"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = policyc(&[
        "verify",
        &p("signed.bundle"),
        "--pub",
        &p("other.pub"),
        &p("team.pub"),
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ok: `small` 0.1.0"), "{out}");
    let (code, _, err) = policyc(&["verify", &p("signed.bundle"), "--pub", &p("other.pub")]);
    assert_eq!(code, 1);
    assert!(err.contains("which is not a trusted key"), "{err}");

    // build --sign gives the same bytes as build + sign
    let (code, _, err) = policyc(&[
        "build",
        &p("small.pcl"),
        "-o",
        &p("direct.bundle"),
        "--sign",
        &p("team.key"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(p("direct.bundle")).unwrap(),
        std::fs::read(p("signed.bundle")).unwrap()
    );

    let (code, out, _) = policyc(&["inspect", &p("signed.bundle"), "--format", "json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["pack"], "small");
    assert_eq!(j["rules"][1]["name"], "keys");
    assert_eq!(j["rules"][1]["index"]["tools"][0], "send_email");
    assert!(
        j["disassembly"]
            .as_str()
            .unwrap()
            .contains("MATCHES args[\"body\"]")
    );

    std::fs::write(
        p("action.json"),
        r#"{"kind":"mcp","operation":"tools/call","tool":"send_email","arguments":{"body":"sk-abc"}}"#,
    )
    .unwrap();
    std::fs::write(
        p("session.json"),
        r#"{"status":"active","started_ms":1000,"revoked_tools":["send_email"]}"#,
    )
    .unwrap();
    let (code, out, err) = policyc(&[
        "eval",
        &p("signed.bundle"),
        "--action",
        &p("action.json"),
        "--now-ms",
        "5000",
        "--pub",
        &p("team.pub"),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: bundle::verdict::Verdict = serde_json::from_str(&out).unwrap();
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "keys");
    let (code, out, _) = policyc(&[
        "eval",
        &p("signed.bundle"),
        "--action",
        &p("action.json"),
        "--session",
        &p("session.json"),
        "--now-ms",
        "5000",
        "--pub",
        &p("team.pub"),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let v: bundle::verdict::Verdict = serde_json::from_str(&out).unwrap();
    assert_eq!(v.deciding_rule, "session:revoked");
    // unsigned bundle refused unless --allow-unsigned
    let (code, _, _) = policyc(&[
        "eval",
        &p("small.bundle"),
        "--action",
        &p("action.json"),
        "--pub",
        &p("team.pub"),
    ]);
    assert_eq!(code, 1);
    let (code, _, _) = policyc(&[
        "eval",
        &p("small.bundle"),
        "--action",
        &p("action.json"),
        "--allow-unsigned",
    ]);
    assert_eq!(code, 0);
    let (code, _, err) = policyc(&[
        "eval",
        &p("small.bundle"),
        "--action",
        &p("small.pcl"),
        "--allow-unsigned",
    ]);
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
