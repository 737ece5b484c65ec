//! Finding (and if needed building) the Portcullis `.wasm` the tests run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::host::FilterModule;

/// The command that builds the filter.
pub const BUILD_COMMAND: &str =
    "cargo build -p portcullis-filter-wasm --target wasm32-wasip1 --release";

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Where the release build of the filter lands:
/// `$CARGO_TARGET_DIR` (or `<workspace>/target`) `/wasm32-wasip1/release/portcullis.wasm`.
pub fn default_wasm_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target
        .join("wasm32-wasip1")
        .join("release")
        .join("portcullis.wasm")
}

fn newest_source_mtime(root: &Path) -> Option<SystemTime> {
    let mut newest: Option<SystemTime> = None;
    let mut stack: Vec<PathBuf> = ["filter/wasm", "filter/core", "bundle"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    stack.push(root.join("Cargo.lock"));
    stack.push(root.join("Cargo.toml"));
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                for e in entries.flatten() {
                    let p = e.path();
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with('.') || name == "target" || name == "tests" {
                        continue;
                    }
                    stack.push(p);
                }
            }
            continue;
        }
        let relevant = path
            .extension()
            .is_some_and(|e| e == "rs" || e == "toml" || e == "lock");
        if relevant && let Ok(m) = meta.modified() {
            newest = Some(newest.map_or(m, |n| n.max(m)));
        }
    }
    newest
}

/// The path of the filter `.wasm`, built fresh.
///
/// `PORTCULLIS_WASM=<path>` uses that file as is. Otherwise the release build is used when it
/// is newer than the sources of `filter/wasm`, `filter/core` and `bundle` (and the workspace
/// `Cargo.toml` / `Cargo.lock`); when it is missing
/// or stale the function runs [`BUILD_COMMAND`] and fails with its output if that fails.
pub fn filter_wasm() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PORTCULLIS_WASM") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("PORTCULLIS_WASM={} is not a file", p.display());
        }
        return Ok(p);
    }
    let path = default_wasm_path();
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let sources = newest_source_mtime(&workspace_root());
    let fresh = match (built, sources) {
        (Some(b), Some(s)) => b >= s,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if fresh {
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "-p",
            "portcullis-filter-wasm",
            "--target",
            "wasm32-wasip1",
            "--release",
        ])
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("running `{BUILD_COMMAND}`"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "building the filter failed; run `{BUILD_COMMAND}` in {} to see why:\n{}",
            workspace_root().display(),
            tail.join("\n")
        );
    }
    if !path.is_file() {
        bail!(
            "`{BUILD_COMMAND}` succeeded but {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// The filter compiled once per test process (metered), shared by every test in it.
pub fn filter_module() -> Result<&'static FilterModule> {
    static MODULE: OnceLock<std::result::Result<FilterModule, String>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            filter_wasm()
                .and_then(|p| FilterModule::from_file(&p))
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}
