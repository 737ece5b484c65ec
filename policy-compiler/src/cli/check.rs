//! `policyc check FILE...`: parse and check policy files, print every error and warning.
//! Exit 0 when no file has errors (warnings allowed), 1 when one has, 2 when a file is unreadable.

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Format};
use crate::diag::Diagnostic;
use std::path::{Path, PathBuf};

/// Arguments of `policyc check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy files (`*.pcl`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// One checked file.
pub(crate) struct Checked {
    pub src: String,
    pub policy: Option<crate::ast::Policy>,
    pub diags: Vec<Diagnostic>,
}

impl Checked {
    pub(crate) fn errors(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }
    pub(crate) fn warnings(&self) -> usize {
        self.diags.len().saturating_sub(self.errors())
    }
    /// Every diagnostic rendered as text.
    pub(crate) fn render(&self, file: &Path) -> String {
        let name = file.display().to_string();
        self.diags
            .iter()
            .map(|d| d.render(&name, &self.src) + "\n")
            .collect()
    }
    pub(crate) fn json(&self, file: &Path) -> Vec<serde_json::Value> {
        let name = file.display().to_string();
        self.diags.iter().map(|d| d.to_json(&name)).collect()
    }
}

/// Read, parse and check one file. `Err` is an I/O error message.
pub(crate) fn check_file(path: &Path) -> Result<Checked, String> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let (policy, diags) = crate::check::parse_and_check(&src);
    Ok(Checked { src, policy, diags })
}

/// Run `policyc check`.
pub(crate) fn run(args: &CheckArgs) -> i32 {
    let mut code = EXIT_OK;
    let mut files = Vec::new();
    let (mut errors, mut warnings) = (0usize, 0usize);
    for path in &args.files {
        match check_file(path) {
            Err(e) => {
                eprintln!("error: {e}");
                code = EXIT_USAGE;
                files.push(serde_json::json!({"file": path.display().to_string(), "ok": false, "io_error": e}));
            }
            Ok(c) => {
                errors = errors.saturating_add(c.errors());
                warnings = warnings.saturating_add(c.warnings());
                if c.errors() > 0 && code == EXIT_OK {
                    code = EXIT_FAILED;
                }
                match args.format {
                    Format::Text => print!("{}", c.render(path)),
                    Format::Json => files.push(serde_json::json!({
                        "file": path.display().to_string(),
                        "ok": c.errors() == 0,
                        "diagnostics": c.json(path),
                    })),
                }
            }
        }
    }
    match args.format {
        Format::Text => {
            let n = args.files.len();
            let plural = |k: usize, w: &str| format!("{k} {w}{}", if k == 1 { "" } else { "s" });
            println!(
                "{}: {} checked, {}, {}",
                if code == EXIT_OK { "ok" } else { "failed" },
                plural(n, "file"),
                plural(errors, "error"),
                plural(warnings, "warning")
            );
        }
        Format::Json => println!(
            "{}",
            serde_json::json!({"ok": code == EXIT_OK, "errors": errors, "warnings": warnings, "files": files})
        ),
    }
    code
}
