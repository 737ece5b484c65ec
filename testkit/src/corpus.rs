//! Where the scenario corpus lives and how a file of it is read.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::format::Scenario;

/// The repository root.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `testdata/scenarios`.
pub fn scenarios_dir() -> PathBuf {
    repo_root().join("testdata").join("scenarios")
}

/// Every `*.json` scenario file, sorted; files starting with `_` (work in progress) are left out.
pub fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.extension().is_some_and(|x| x == "json")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('_'))
    });
    files.sort();
    files
}

/// A scenario file's JSON, untyped (for tests that change one member before loading it).
pub fn load_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// A scenario file, typed: a member the format does not define is an error.
pub fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Scenario::from_text(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every scenario of the corpus with its path, in file order.
pub fn corpus() -> Result<Vec<(PathBuf, Scenario)>, String> {
    scenario_files()
        .into_iter()
        .map(|p| load(&p).map(|sc| (p, sc)))
        .collect()
}
