//! `policyc build|test --manifest` and `policyc explain` on the layered example
//! (`examples/policies/layers`), run as a user would: in a scratch copy, with fresh keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .expect("policyc runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A scratch copy of the example with the platform and payments keys and the payments bundle
/// built by its owner, as the example's README does.
fn example(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("policyc-layers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/layers"),
        &d,
    );
    std::fs::create_dir_all(d.join("keys")).unwrap();
    for k in ["platform", "payments"] {
        let o = policyc(&["keygen", "--out", s(&d.join("keys").join(k))]);
        assert!(o.status.success(), "{}", out(&o));
    }
    let o = policyc(&[
        "build",
        s(&d.join("payments/policy.pcl")),
        "-o",
        s(&d.join("payments.bundle")),
        "--sign",
        s(&d.join("keys/payments.key")),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    d
}

fn build(d: &Path) -> Output {
    policyc(&[
        "build",
        "--manifest",
        s(&d.join("layers.toml")),
        "-o",
        s(&d.join("acme.bundle")),
        "--sign",
        s(&d.join("keys/platform.key")),
    ])
}

#[test]
fn build_test_and_explain_the_example() {
    let d = example("ok");
    let o = build(&d);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("3 packs"), "{}", out(&o));

    let o = policyc(&["test", "--manifest", s(&d.join("layers.toml"))]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("12 passed, 0 failed"), "{}", out(&o));

    std::fs::write(
        d.join("paste.json"),
        r#"{"kind": "http", "operation": "POST",
            "target": {"host": "pastebin.com", "port": 443, "path": "/", "scheme": "https"},
            "identity": {"workload": {"id": "spiffe://c/ns/payments/sa/x", "auth": "mtls"}}}"#,
    )
    .unwrap();
    let explain = |key: &str| {
        policyc(&[
            "explain",
            s(&d.join("acme.bundle")),
            "--action",
            s(&d.join("paste.json")),
            "--pub",
            s(&d.join(key)),
            "--format",
            "json",
        ])
    };
    let o = explain("keys/platform.pub");
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "DENY");
    assert_eq!(v["rule"], "no_paste_sites");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[0]["pack"], "baseline");
    assert_eq!(layers[0]["winner"], true);
    assert_eq!(layers[1]["decision"], "ALLOW");
    assert!(
        v["why"]
            .as_str()
            .unwrap()
            .contains("`baseline` asks for DENY")
    );
    // Only the platform key vouches for the set.
    assert_eq!(explain("keys/payments.pub").status.code(), Some(1));
}

#[test]
fn a_wrong_combination_expectation_fails_the_run() {
    let d = example("wrong");
    let tests = std::fs::read_to_string(d.join("tests.toml")).unwrap();
    std::fs::write(
        d.join("tests.toml"),
        tests.replacen("pack = \"baseline\"", "pack = \"payments\"", 1),
    )
    .unwrap();
    let o = policyc(&["test", "--manifest", s(&d.join("layers.toml"))]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("pack: expected `payments`, got `baseline`"),
        "{}",
        out(&o)
    );
}

#[test]
fn a_pack_not_signed_by_its_owner_is_refused() {
    let d = example("owner");
    let o = policyc(&[
        "build",
        s(&d.join("payments/policy.pcl")),
        "-o",
        s(&d.join("payments.bundle")),
        "--sign",
        s(&d.join("keys/platform.key")),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = build(&d);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("refused against its owner_key"),
        "{}",
        out(&o)
    );
}

#[test]
fn conflicting_rewrites_are_refused_at_build_time() {
    let d = example("conflict");
    std::fs::write(
        d.join("dlp-trial/policy.pcl"),
        "pack \"dlp-trial\" {\n  version \"0.2.0\"\n  mode enforce\n  default allow \"ok\"\n}\n\
         rule keep_auth_for_chat {\n  when kind == http and target.host == \"hooks.slack.com\"\n  \
         modify \"chat gets a service token\" {\n    set_header \"authorization\" \"Bearer svc\"\n  }\n}\n",
    )
    .unwrap();
    let manifest = std::fs::read_to_string(d.join("layers.toml")).unwrap();
    std::fs::write(
        d.join("layers.toml"),
        manifest.replace("mode = \"audit\"", "mode = \"enforce\""),
    )
    .unwrap();
    let o = build(&d);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains("packs `baseline` (rule `no_credentials_to_chat`")
            && text.contains("`dlp-trial` (rule `keep_auth_for_chat`"),
        "{text}"
    );
    assert!(!d.join("acme.bundle").exists(), "nothing is written");
    // In audit mode the same pack's rewrite is never applied: no conflict.
    std::fs::write(d.join("layers.toml"), manifest).unwrap();
    assert_eq!(build(&d).status.code(), Some(0));
}
