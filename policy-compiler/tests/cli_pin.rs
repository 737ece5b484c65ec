//! `policyc pin` and `policyc build --pins`, run as a user would: the pins are the digests the
//! filter computes (`bundle::pin`), they ship in the bundle (format version 4), and bad input is
//! refused with a message naming it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .expect("policyc runs")
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("policyc-pin-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(d: &Path, name: &str, v: &Value) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

const POLICY: &str = r#"
pack "p" {
  version "1"
  mode enforce
  default deny "no"
  unknown_session deny "lost"
}
rule protocol_messages {
  when class mcp_protocol
  allow "protocol"
}
rule changed {
  when tool.changed == true
  deny "changed"
}
"#;

#[test]
fn pins_are_the_filters_digests_and_ship_in_the_bundle() {
    let d = dir("ok");
    let read = json!({"name": "read_file", "description": "Read a file.",
                      "inputSchema": {"type": "object"}, "icons": [{"src": "x.png"}]});
    let write_tool = json!({"name": "write_file", "description": "Write a file."});
    // Each accepted input shape gives the same pins.
    let shapes = [
        json!({"tools": [read, write_tool]}),
        json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [write_tool, read]}}),
        json!([read, write_tool]),
    ];
    let mut outs = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let input = write(&d, &format!("tools{i}.json"), shape);
        let o = policyc(&["pin", s(&input), "--server", "files"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        outs.push(serde_json::from_slice::<Value>(&o.stdout).unwrap());
    }
    assert!(outs.iter().all(|o| *o == outs[0]), "{outs:?}");
    let hex = |t: &Value| hex::encode(bundle::pin::definition_digest(t).unwrap());
    assert_eq!(
        outs[0],
        json!({"pins": [
            {"server": "files", "name": "read_file", "sha256": hex(&read)},
            {"server": "files", "name": "write_file", "sha256": hex(&write_tool)},
        ]})
    );

    // Two servers' pins, built into one bundle.
    let pins_a = write(&d, "a.json", &outs[0]);
    let other = write(&d, "other.json", &json!({"tools": [read]}));
    let pins_b = d.join("b.json");
    let o = policyc(&["pin", s(&other), "--server", "docs", "-o", s(&pins_b)]);
    assert!(o.status.success());
    let policy = d.join("p.pcl");
    std::fs::write(&policy, POLICY).unwrap();
    let out = d.join("p.bundle");
    let o = policyc(&[
        "build",
        s(&policy),
        "-o",
        s(&out),
        "--pins",
        s(&pins_a),
        "--pins",
        s(&pins_b),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let built: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (built["format_version"].clone(), built["tool_pins"].clone()),
        (json!(bundle::format::FORMAT_VERSION), json!(3))
    );
    let b =
        bundle::Bundle::from_bytes(&std::fs::read(&out).unwrap(), &bundle::Trust::AllowUnsigned)
            .unwrap();
    let digest = bundle::pin::definition_digest(&read).unwrap();
    assert_eq!(b.tool_pin("files", "read_file"), Some(&digest));
    assert_eq!(b.tool_pin("docs", "read_file"), Some(&digest));
    assert_eq!(b.tool_pin("docs", "write_file"), None);

    // The same tool pinned twice is refused.
    let o = policyc(&[
        "build",
        s(&policy),
        "-o",
        s(&out),
        "--pins",
        s(&pins_a),
        "--pins",
        s(&pins_a),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is pinned twice"));
}

#[test]
fn bad_catalogues_are_refused_with_what_is_wrong() {
    let d = dir("bad");
    for (name, v, says) in [
        (
            "noname",
            json!({"tools": [{"description": "x"}]}),
            "tool 0 is not an object with a string `name`",
        ),
        (
            "twice",
            json!([{"name": "a"}, {"name": "a", "description": "b"}]),
            "tool `a` is defined twice",
        ),
        (
            "notools",
            json!({"result": {}}),
            "holds no tool definitions",
        ),
    ] {
        let input = write(&d, &format!("{name}.json"), &v);
        let o = policyc(&["pin", s(&input), "--server", "files"]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert!(o.stdout.is_empty(), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{name}: {err}");
    }
    // A pins file with a digest that is not 64 lowercase hex digits.
    let policy = d.join("p.pcl");
    std::fs::write(&policy, POLICY).unwrap();
    let bad = write(
        &d,
        "bad-pins.json",
        &json!({"pins": [{"server": "s", "name": "a", "sha256": "ABCD"}]}),
    );
    let o = policyc(&[
        "build",
        s(&policy),
        "-o",
        s(&d.join("x.bundle")),
        "--pins",
        s(&bad),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not 64 lowercase hex digits"));
}
