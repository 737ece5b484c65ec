//! `policyc grant` and `policyc release`, run as a user would: the tokens they print verify with
//! the library the filter uses, and bad input is refused with exit 2 and nothing on stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bundle::grant::GrantError;
use bundle::keys::{format_signing_key, signing_key_from_seed};

const P: &str = "spiffe://corp.example/ns/agents/sa/payroll-bot";

fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .expect("policyc runs")
}

fn key_file(name: &str, seed: u8) -> PathBuf {
    let d = std::env::temp_dir().join(format!("policyc-tokens-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join(format!("{name}.key"));
    std::fs::write(
        &path,
        format_signing_key(&signing_key_from_seed([seed; 32])),
    )
    .unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok_json(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn grant_mints_a_token_the_filter_accepts() {
    let key = key_file("orchestrator", 41);
    let pk = signing_key_from_seed([41; 32]).verifying_key();
    let v = ok_json(&policyc(&[
        "grant",
        "--intent",
        "payroll_report",
        "--principal",
        P,
        "--expires",
        "1h",
        "--key",
        s(&key),
        "--run",
        "run-42",
        "--tools",
        "read_*, query_db",
        "--hosts",
        "*.corp.example",
        "--format",
        "json",
    ]));
    let issued = v["issued_s"].as_u64().unwrap();
    assert_eq!(v["expires_s"].as_u64().unwrap(), issued + 3600);
    assert_eq!(v["header"], "x-portcullis-grant");
    let token = v["token"].as_str().unwrap();
    let g = bundle::grant::verify(token, &[pk], P, issued + 1).unwrap();
    assert_eq!(g.grant_id, v["grant_id"].as_str().unwrap());
    assert_eq!(g.intent, "payroll_report");
    assert_eq!(g.run.as_deref(), Some("run-42"));
    assert_eq!(
        g.tools,
        Some(vec!["read_*".to_owned(), "query_db".to_owned()])
    );
    assert_eq!(v["tools"], serde_json::json!(["read_*", "query_db"]));
    assert_eq!(g.key_id, v["key_id"].as_str().unwrap());
    assert!(g.allows_tool("read_file") && !g.allows_tool("write_file"));
    assert!(g.allows_host("API.corp.example") && !g.allows_host("evil.example"));
    assert_eq!(
        bundle::grant::verify(token, &[pk], P, issued + 3600),
        Err(GrantError::Expired)
    );
    assert_eq!(
        bundle::grant::verify(token, &[pk], "spiffe://corp.example/other", issued),
        Err(GrantError::WrongPrincipal)
    );
}

#[test]
fn grant_text_output_is_the_token_alone_and_fresh_each_time() {
    let key = key_file("orchestrator-text", 42);
    let pk = signing_key_from_seed([42; 32]).verifying_key();
    let args = [
        "grant",
        "--intent",
        "triage",
        "--principal",
        P,
        "--expires",
        "90",
        "--key",
        s(&key),
        "--issued-at",
        "1763700000",
    ];
    let a = policyc(&args);
    let b = policyc(&args);
    assert_eq!(a.status.code(), Some(0));
    let (ta, tb) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    assert_eq!(ta.lines().count(), 1);
    let ga = bundle::grant::verify(ta.trim(), &[pk], P, 1_763_700_010).unwrap();
    let gb = bundle::grant::verify(tb.trim(), &[pk], P, 1_763_700_010).unwrap();
    assert_eq!((ga.issued_s, ga.expires_s), (1_763_700_000, 1_763_700_090));
    assert_eq!((ga.run, ga.tools, ga.hosts), (None, None, None));
    assert_ne!(ga.grant_id, gb.grant_id, "a fresh nonce each time");
}

#[test]
fn grant_refuses_bad_input() {
    let key = key_file("orchestrator-bad", 43);
    let base = |extra: &[&str]| {
        let mut v = vec![
            "grant".to_owned(),
            "--intent".into(),
            "triage".into(),
            "--principal".into(),
            P.into(),
        ];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let k = s(&key);
    let many_tools = vec!["t"; 65].join(",");
    let long_run = "r".repeat(257);
    for (args, says) in [
        (base(&["--expires", "8d", "--key", k]), "--expires 8d"),
        (base(&["--expires", "0", "--key", k]), "--expires 0"),
        (base(&["--expires", "soon", "--key", k]), "--expires soon"),
        (
            base(&["--expires", "1h", "--key", k, "--tools", "a,,b"]),
            "empty entry",
        ),
        (
            base(&["--expires", "1h", "--key", k, "--tools", &many_tools]),
            "`tools` has more than 64 entries",
        ),
        (
            base(&["--expires", "1h", "--key", k, "--run", &long_run]),
            "`run` is longer than 256 bytes",
        ),
        (
            base(&["--expires", "1h", "--key", "/nonexistent.key"]),
            "/nonexistent.key",
        ),
        (base(&["--key", k]), "--expires"),
    ] {
        let o = policyc(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let o = policyc(&[
        "grant",
        "--intent",
        "",
        "--principal",
        P,
        "--expires",
        "1h",
        "--key",
        k,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`intent` must not be empty"));
}

#[test]
fn release_mints_a_token_the_filter_accepts() {
    let key = key_file("operator", 51);
    let pk = signing_key_from_seed([51; 32]).verifying_key();
    let v = ok_json(&policyc(&[
        "release",
        "--principal",
        P,
        "--key",
        s(&key),
        "--reason",
        "INC-2291 cleaned up",
        "--format",
        "json",
    ]));
    let issued = v["issued_s"].as_u64().unwrap();
    assert_eq!(v["config"], "releases");
    let r = bundle::release::verify(v["token"].as_str().unwrap(), &[pk], issued).unwrap();
    assert_eq!(r.release_id, v["release_id"].as_str().unwrap());
    assert_eq!(r.principal, P);
    assert_eq!(r.issued_s, issued);
    assert_eq!(r.reason.as_deref(), Some("INC-2291 cleaned up"));
    assert_eq!(r.key_id, v["key_id"].as_str().unwrap());
    // Another operator's key does not verify it.
    let other = signing_key_from_seed([52; 32]).verifying_key();
    assert_eq!(
        bundle::release::verify(v["token"].as_str().unwrap(), &[other], issued),
        Err(bundle::release::ReleaseError::UnknownKey)
    );
    // Text output: the token alone, without a reason.
    let o = policyc(&[
        "release",
        "--principal",
        P,
        "--key",
        s(&key),
        "--issued-at",
        "1763700000",
    ]);
    let t = String::from_utf8(o.stdout).unwrap();
    assert_eq!(t.lines().count(), 1);
    let r = bundle::release::verify(t.trim(), &[pk], 1_763_700_000).unwrap();
    assert_eq!((r.issued_s, r.reason), (1_763_700_000, None));
}

#[test]
fn release_refuses_bad_input() {
    let key = key_file("operator-bad", 53);
    let long = "x".repeat(257);
    for (args, says) in [
        (
            vec!["release", "--principal", "", "--key", s(&key)],
            "`principal` must not be empty",
        ),
        (
            vec![
                "release",
                "--principal",
                P,
                "--key",
                s(&key),
                "--reason",
                &long,
            ],
            "`reason` is longer than 256 bytes",
        ),
        (
            vec!["release", "--principal", P, "--key", "/nonexistent.key"],
            "/nonexistent.key",
        ),
        (vec!["release", "--key", s(&key)], "--principal"),
    ] {
        let o = policyc(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
