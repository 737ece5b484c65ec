//! `policyc render`, run as CI would: what it refuses and what it references. (The rendered
//! objects are checked against the Istio CRD schemas and loaded in a real Envoy by
//! test-harness/e2e/test_istio.py.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::Digest as _;

fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .output()
        .expect("policyc runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("policyc-j-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A signed bundle of `policy` in `dir` (key `dir/k.key`, `dir/k.pub`).
fn signed_bundle(dir: &Path, policy: &str) -> PathBuf {
    if !dir.join("k.key").exists() {
        assert!(
            policyc(&["keygen", "--out", s(&dir.join("k"))])
                .status
                .success()
        );
    }
    let src = dir.join("p.pcl");
    std::fs::write(&src, policy).unwrap();
    let out = dir.join("p.bundle");
    let o = policyc(&[
        "build",
        s(&src),
        "-o",
        s(&out),
        "--sign",
        s(&dir.join("k.key")),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    out
}

const SMALL: &str = r#"pack "small" {
  version "1.0.0"
  mode enforce
  default deny "no"
}

rule reads {
  when kind == http and operation == "GET"
  allow "reads"
}
"#;

/// A policy whose bundle is too big to inline in a Kubernetes object.
fn big_policy() -> String {
    let mut hosts = String::new();
    for i in 0..12_000 {
        let _ = write!(
            hosts,
            "\"h{i:06}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.example.com\", "
        );
    }
    format!(
        "pack \"big\" {{\n  version \"1.0.0\"\n  mode enforce\n  default deny \"no\"\n}}\n\n\
         let many = [{hosts}]\n\nrule r {{\n  when kind == http and target.host in many\n  allow \"known\"\n}}\n"
    )
}

const OCI: &str = "oci://registry.example.com/portcullis/filter:0.1.0";

#[test]
fn renders_an_envoyfilter_with_the_bundle_inline() {
    let d = scratch("inline");
    let b = signed_bundle(&d, SMALL);
    let o = policyc(&[
        "render",
        s(&b),
        "--target",
        "istio-envoyfilter",
        "--trusted-key",
        s(&d.join("k.pub")),
        "--wasm",
        OCI,
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let b64 = base64_of(&std::fs::read(&b).unwrap());
    assert!(out.contains(&b64), "the bundle travels inline");
    assert!(out.contains("kind: \"EnvoyFilter\""));
    assert!(out.contains("allow_on_headers_stop_iteration: true"));
    assert!(out.contains("failure_policy: \"FAIL_CLOSED\""));
    assert!(out.contains(OCI));
    let public = std::fs::read_to_string(d.join("k.pub")).unwrap();
    assert!(out.contains(public.trim()), "the signer's key is trusted");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn refuses_a_bundle_signed_by_another_key() {
    let d = scratch("untrusted");
    let b = signed_bundle(&d, SMALL);
    assert!(
        policyc(&["keygen", "--out", s(&d.join("other"))])
            .status
            .success()
    );
    let o = policyc(&[
        "render",
        s(&b),
        "--target",
        "ecds",
        "--trusted-key",
        s(&d.join("other.pub")),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(out.is_empty(), "nothing to apply");
    assert!(err.contains("refusing to render"), "{err}");
}

#[test]
fn refuses_a_plugin_config_that_sets_the_bundle() {
    let d = scratch("owned-keys");
    let b = signed_bundle(&d, SMALL);
    let cfg = d.join("cfg.json");
    std::fs::write(
        &cfg,
        r#"{"bundle":{"inline_base64":"AAAA"},"mcp":{"paths":[]}}"#,
    )
    .unwrap();
    let o = policyc(&[
        "render",
        s(&b),
        "--target",
        "ecds",
        "--trusted-key",
        s(&d.join("k.pub")),
        "--plugin-config",
        s(&cfg),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("sets `bundle`"));
}

#[test]
fn istio_targets_need_a_module_url() {
    let d = scratch("url");
    let b = signed_bundle(&d, SMALL);
    let pubkey = d.join("k.pub");
    let o = policyc(&[
        "render",
        s(&b),
        "--target",
        "istio-wasmplugin",
        "--trusted-key",
        s(&pubkey),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--wasm URL is required"));
    let o = policyc(&[
        "render",
        s(&b),
        "--target",
        "istio-wasmplugin",
        "--trusted-key",
        s(&pubkey),
        "--wasm",
        "/local/file.wasm",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_big_bundle_is_refused_inline_and_referenced_by_url_and_hash() {
    let d = scratch("big");
    let b = signed_bundle(&d, &big_policy());
    let bytes = std::fs::read(&b).unwrap();
    assert!(
        base64_of(&bytes).len() > 900 * 1024,
        "the test bundle is big enough"
    );
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let pubkey = d.join("k.pub");
    let base = [
        "render",
        s(&b),
        "--target",
        "istio-envoyfilter",
        "--trusted-key",
        s(&pubkey),
        "--wasm",
        OCI,
    ];
    let o = policyc(&base);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(out.is_empty());
    assert!(err.contains("--bundle-url URL --sha256"), "{err}");
    assert!(err.contains(&sha), "tells the user the hash to use: {err}");

    let url = "https://bundles.example.com/packs/big.bundle";
    let o = policyc(&[&base[..], &["--bundle-url", url, "--sha256", &sha]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.len() < 64 * 1024,
        "the object is small: {} bytes",
        out.len()
    );
    assert!(
        !out.contains(&base64_of(&bytes[..3000])),
        "no inline bundle"
    );
    assert!(out.contains(&sha));
    assert!(
        out.contains(r#"\"cluster\":\"outbound|443||bundles.example.com\""#),
        "{out}"
    );
    assert!(out.contains(r#"\"path\":\"/packs/big.bundle\""#));

    // A hash that is not this bundle's is refused: the filter would never accept the file.
    let wrong = "0".repeat(64);
    let o = policyc(&[&base[..], &["--bundle-url", url, "--sha256", &wrong]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("is not the sha256"));

    // An ECDS file is not a Kubernetes object: the big bundle goes inline.
    let o = policyc(&[
        "render",
        s(&b),
        "--target",
        "ecds",
        "--trusted-key",
        s(&pubkey),
    ]);
    assert!(o.status.success());
    assert!(text(&o).0.len() > bytes.len());
}
