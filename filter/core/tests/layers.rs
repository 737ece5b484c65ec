//! The module layering of `filter/core` (see `src/lib.rs`): each top-level module imports only
//! modules of a lower layer, so the crate's folder list reads as its pipeline and no import cycle
//! can come back unnoticed. Test modules (`#[cfg(test)] mod tests`) and comments are not counted.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
#![allow(clippy::panic, reason = "test code: a panic is a failed test")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every top-level module and its layer; a module may import modules of lower layers only.
const LAYERS: [(&str, u8); 21] = [
    ("host", 0),
    ("limits", 0),
    ("bench", 0),
    ("rules", 0),
    ("normalize", 0),
    ("metrics", 1),
    ("config", 1),
    ("respond", 1),
    ("error", 2),
    ("identity", 2),
    ("policy", 2),
    ("approve", 2),
    ("session", 3),
    ("credentials", 3),
    ("decide", 4),
    ("results", 4),
    ("root", 5),
    ("stream", 6),
    // Test support and the crate root may use anything.
    ("mock", 7),
    ("lib", 7),
    ("layers", 7),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/layers.rs"))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::<module>` paths the non-test code of `text` names.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some((_, after)) = rest.split_once("crate::") {
            rest = after;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn imports_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    assert!(all.len() > 30, "the walk found only {} files", all.len());
    let mut wrong = Vec::new();
    for f in &all {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(f).unwrap();
        for m in imports(&text) {
            if m != top && layer(&m) >= layer(&top) {
                wrong.push(format!("{} imports crate::{m}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}
