//! `policyc fmt [--check] FILE...`: rewrite policy files in canonical form. With `--check`, write
//! nothing and exit 1 when a file is not formatted. A file that does not parse is left alone and
//! its errors are printed (exit 1). Unreadable or unwritable files exit 2.

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Format};
use std::path::PathBuf;

/// Arguments of `policyc fmt`.
#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Policy files (`*.pcl`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Only report files that are not formatted; change nothing.
    #[arg(long)]
    pub check: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Run `policyc fmt`.
pub(crate) fn run(args: &FmtArgs) -> i32 {
    let mut code = EXIT_OK;
    let mut report = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read `{name}`: {e}");
                code = EXIT_USAGE;
                report.push(serde_json::json!({"file": name, "io_error": e.to_string()}));
                continue;
            }
        };
        match crate::fmt::format_source(&src) {
            Err(diags) => {
                if code == EXIT_OK {
                    code = EXIT_FAILED;
                }
                if args.format == Format::Text {
                    for d in &diags {
                        eprintln!("{}", d.render(&name, &src));
                    }
                }
                report.push(serde_json::json!({
                    "file": name, "formatted": false,
                    "diagnostics": diags.iter().map(|d| d.to_json(&name)).collect::<Vec<_>>(),
                }));
            }
            Ok(out) => {
                let changed = out != src;
                if args.check {
                    if changed {
                        if code == EXIT_OK {
                            code = EXIT_FAILED;
                        }
                        if args.format == Format::Text {
                            println!("not formatted: {name}");
                        }
                    }
                } else if changed {
                    if let Err(e) = std::fs::write(path, &out) {
                        eprintln!("error: cannot write `{name}`: {e}");
                        code = EXIT_USAGE;
                    } else if args.format == Format::Text {
                        println!("formatted: {name}");
                    }
                }
                report.push(serde_json::json!({"file": name, "formatted": !changed || !args.check, "changed": changed}));
            }
        }
    }
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::json!({"ok": code == EXIT_OK, "files": report})
        );
    }
    code
}
