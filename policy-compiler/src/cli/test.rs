//! `policyc test DIR|FILE...`: run the tabletop tests of policy packs. A DIR holds `policy.pcl` and
//! `tests.toml`; a FILE is either of them (the other is found next to it). Every case runs through
//! the reference interpreter AND through the compiled bundle's VM; a failed expectation or any
//! disagreement between the two (on any step of the case's history) fails the run (exit 1).

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Format};
use crate::tabletop::{self, CaseResult};
use bundle::verdict::Verdict;
use std::path::{Path, PathBuf};

/// Arguments of `policyc test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Pack directories, or their `policy.pcl` / `tests.toml`.
    #[arg(required_unless_present = "manifest")]
    pub paths: Vec<PathBuf>,
    /// A layered set's `layers.toml`: run each pack's own tests, then the manifest's `tests`
    /// (the combination) against the assembled set.
    #[arg(long, value_name = "LAYERS_TOML")]
    pub manifest: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn locate(p: &Path) -> (PathBuf, PathBuf) {
    if p.is_dir() {
        return (p.join("policy.pcl"), p.join("tests.toml"));
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    if p.extension().is_some_and(|e| e == "toml") {
        (dir.join("policy.pcl"), p.to_path_buf())
    } else {
        (p.to_path_buf(), dir.join("tests.toml"))
    }
}

/// The result of one pack (or of a layered set's combination).
pub(super) struct PackRun {
    pub(super) pack: String,
    pub(super) diagnostics: Vec<serde_json::Value>,
    pub(super) fatal: Option<String>,
    pub(super) cases: Vec<(CaseResult, Vec<String>)>,
    pub(super) engines: &'static str,
}

impl PackRun {
    fn failed(&self) -> bool {
        self.fatal.is_some()
            || self
                .cases
                .iter()
                .any(|(r, vm)| !r.passed() || !vm.is_empty())
    }
}

/// Run `policyc test`.
pub(crate) fn run(args: &TestArgs) -> i32 {
    let mut code = EXIT_OK;
    let mut runs = Vec::new();
    if let Some(m) = &args.manifest {
        match super::layers::test_runs(m) {
            Ok(r) => runs.extend(r),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
        if runs.iter().any(PackRun::failed) {
            code = EXIT_FAILED;
        }
    }
    for p in &args.paths {
        let (policy_path, tests_path) = locate(p);
        let checked = match super::check::check_file(&policy_path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                code = EXIT_USAGE;
                continue;
            }
        };
        let file = match tabletop::load(&tests_path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                code = EXIT_USAGE;
                continue;
            }
        };
        let pack = p.display().to_string();
        let Some(policy) = checked.policy.as_ref().filter(|_| checked.errors() == 0) else {
            if args.format == Format::Text {
                print!("{}", checked.render(&policy_path));
            }
            runs.push(PackRun {
                pack,
                diagnostics: checked.json(&policy_path),
                fatal: Some(format!(
                    "`{}` has {} error(s); no case was run",
                    policy_path.display(),
                    checked.errors()
                )),
                cases: Vec::new(),
                engines: "none",
            });
            code = EXIT_FAILED;
            continue;
        };
        let run = run_pack(pack, policy, &file);
        if (run.fatal.is_some()
            || run
                .cases
                .iter()
                .any(|(r, vm)| !r.passed() || !vm.is_empty()))
            && code == EXIT_OK
        {
            code = EXIT_FAILED;
        }
        runs.push(run);
    }
    match args.format {
        Format::Text => print_text(&runs),
        Format::Json => print_json(&runs, code),
    }
    code
}

pub(super) fn run_pack(
    pack: String,
    policy: &crate::ast::Policy,
    file: &tabletop::TestFile,
) -> PackRun {
    let interp = |a: &_, s: &_, t| crate::interp::evaluate(policy, a, s, t);
    let bundle = crate::codegen::compile(policy)
        .map_err(|e| format!("the bundle compiler refused the policy: {e}"))
        .and_then(|bytes| {
            bundle::Bundle::from_bytes(&bytes, &bundle::Trust::AllowUnsigned)
                .map_err(|e| format!("the compiled bundle does not load: {e}"))
        });
    let (fatal, engines) = match &bundle {
        Ok(_) => (None, "interpreter + bundle VM"),
        Err(e) => (Some(e.clone()), "interpreter only"),
    };
    let cases = file
        .cases
        .iter()
        .map(|case| {
            let iv = tabletop::simulate(case, &interp);
            let verdict = iv.last().cloned().unwrap_or_default();
            let result = CaseResult {
                name: case.name.clone(),
                mismatches: tabletop::check_expect(&case.expect, &verdict),
                verdict,
            };
            let mut vm_diff = Vec::new();
            if let Ok(b) = &bundle {
                let vv = tabletop::simulate(case, &|a, s, t| b.evaluate(a, s, t));
                for (step, (x, y)) in iv.iter().zip(vv.iter()).enumerate() {
                    if x != y {
                        let what = if step + 1 == iv.len() {
                            "the action".to_owned()
                        } else {
                            format!("history action {}", step + 1)
                        };
                        vm_diff.push(format!("interpreter and VM disagree on {what}:"));
                        vm_diff.extend(verdict_diff(x, y));
                        break;
                    }
                }
            }
            (result, vm_diff)
        })
        .collect();
    PackRun {
        pack,
        diagnostics: Vec::new(),
        fatal,
        cases,
        engines,
    }
}

/// One line per differing verdict field: `  decision: interpreter DENY, vm ALLOW`.
fn verdict_diff(x: &Verdict, y: &Verdict) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(x), serde_json::to_value(y))
    else {
        return vec!["  (verdicts differ)".to_owned()];
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "  {k}: interpreter {v}, vm {}",
                b.get(k).cloned().unwrap_or_default()
            )
        })
        .collect()
}

fn print_text(runs: &[PackRun]) {
    let (mut passed, mut failed) = (0usize, 0usize);
    for run in runs {
        println!(
            "pack {} ({} cases, {})",
            run.pack,
            run.cases.len(),
            run.engines
        );
        if let Some(f) = &run.fatal {
            println!("  FAIL  {f}");
            failed = failed.saturating_add(1);
        }
        for (r, vm) in &run.cases {
            if r.passed() && vm.is_empty() {
                passed = passed.saturating_add(1);
                println!("  ok    {}", r.name);
            } else {
                failed = failed.saturating_add(1);
                println!("  FAIL  {}", r.name);
                for m in r.mismatches.iter().chain(vm.iter()) {
                    println!("        {m}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
}

fn print_json(runs: &[PackRun], code: i32) {
    let packs: Vec<_> = runs
        .iter()
        .map(|run| {
            serde_json::json!({
                "pack": run.pack,
                "engines": run.engines,
                "error": run.fatal,
                "diagnostics": run.diagnostics,
                "cases": run.cases.iter().map(|(r, vm)| serde_json::json!({
                    "name": r.name,
                    "ok": r.passed() && vm.is_empty(),
                    "mismatches": r.mismatches,
                    "vm_disagreement": vm,
                    "verdict": r.verdict,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"ok": code == EXIT_OK, "packs": packs})
    );
}
