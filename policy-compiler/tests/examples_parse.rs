//! Every example pack in `examples/policies/` parses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code outside #[test] fns (clippy.toml exempts only those): a failure is a failed test"
)]

use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

#[test]
fn every_example_pack_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path().join("policy.pcl");
        let Ok(src) = std::fs::read_to_string(&path) else {
            continue;
        };
        n += 1;
        if let Err(diags) = policy::syntax::parse(&src) {
            let text: String = diags
                .iter()
                .map(|d| d.render(&path.display().to_string(), &src))
                .collect();
            panic!("{text}");
        }
    }
    assert!(n >= 1, "no example packs found");
}
