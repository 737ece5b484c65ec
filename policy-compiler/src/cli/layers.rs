//! Layered sets on the command line (docs/layers.md):
//! - `policyc build --manifest layers.toml -o set.bundle --sign KEYFILE`: compile or read each
//!   pack (each signed by its owner), refuse conflicting rewrites, write the signed envelope;
//! - `policyc test --manifest layers.toml`: each pack's own tests, then the combination;
//! - `policyc explain BUNDLE --action a.json`: every pack's verdict on one action, and why the
//!   winner won.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use bundle::PackSet;
use bundle::layers::{CONFLICT_RULE, LayerOutcome, NOT_ENFORCED_RULE};
use bundle::verdict::{Mode, Verdict};

use super::build::{BuildArgs, read_bytes, read_signing_key, read_text, write_bytes};
use super::keys::read_public_keys;
use super::test::PackRun;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Format};
use crate::layers;
use crate::tabletop::{self, CaseResult};

/// Run `policyc build --manifest`.
pub(super) fn build(manifest: &Path, args: &BuildArgs) -> Result<(), i32> {
    let Some(key_path) = &args.sign else {
        eprintln!(
            "error: a layered bundle must be signed: give `--sign KEYFILE` (the platform key the filter trusts)"
        );
        return Err(EXIT_USAGE);
    };
    let key = read_signing_key(key_path)?;
    let m = layers::load(manifest).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let packs = layers::build_packs(&m, Some(&key)).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })?;
    let conflicts = layers::static_conflicts(&packs);
    if !conflicts.is_empty() {
        for c in &conflicts {
            eprintln!("error: {c}");
        }
        return Err(EXIT_FAILED);
    }
    let unsigned = layers::assemble(&m, &packs).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })?;
    let bytes = bundle::layers::sign_set(&unsigned, &key).map_err(|e| {
        eprintln!("error: cannot sign the layered bundle: {e}");
        EXIT_FAILED
    })?;
    let set = PackSet::from_bytes(&bytes, &bundle::Trust::Keys(vec![key.verifying_key()]))
        .map_err(|e| {
            eprintln!("error: the layered bundle does not load (a compiler bug): {e}");
            EXIT_FAILED
        })?;
    write_bytes(&args.out, &bytes)?;
    let info = set.set_info();
    let hash = hex::encode(info.content_hash);
    match args.format {
        Format::Text => {
            println!(
                "built layered set `{}` {} -> {}: {} packs, {} bytes, sha256 {}, signed by {}",
                info.name,
                info.version,
                args.out.display(),
                set.layers().len(),
                bytes.len(),
                hash,
                info.key_id.as_deref().unwrap_or("?")
            );
            for l in set.layers() {
                println!(
                    "  pack `{}` {} ({}, {}): {} rules, sha256 {}, owner {}",
                    l.entry.id,
                    l.bundle.info().version,
                    l.entry.mode.as_str(),
                    assignment(&l.entry),
                    l.bundle.info().rules,
                    l.hash,
                    l.entry.owner
                );
            }
        }
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "out": args.out.display().to_string(),
                "name": info.name,
                "version": info.version,
                "bytes": bytes.len(),
                "content_hash": hash,
                "key_id": info.key_id,
                "packs": set.layers().iter().map(|l| serde_json::json!({
                    "id": l.entry.id,
                    "version": l.bundle.info().version,
                    "mode": l.entry.mode,
                    "assign": l.entry.assign,
                    "rules": l.bundle.info().rules,
                    "hash": l.hash,
                    "owner": l.entry.owner,
                })).collect::<Vec<_>>(),
            })
        ),
    }
    Ok(())
}

fn assignment(e: &bundle::layers::PackEntry) -> String {
    if e.assign.is_empty() {
        "every action".to_owned()
    } else {
        e.assign
            .iter()
            .map(bundle::layers::Assign::source)
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// `policyc test --manifest`: one run per pack that has tests, then the combination.
pub(super) fn test_runs(manifest: &Path) -> Result<Vec<PackRun>, String> {
    let mut m = layers::load(manifest)?;
    // Packs compiled here are signed with a throwaway key: the test checks decisions, not keys
    // (owners' secret keys need not be on the machine that runs the tests).
    for p in m.file.packs.iter_mut().filter(|p| p.source.is_some()) {
        p.sign = None;
        p.owner_key = None;
    }
    let throwaway = bundle::keys::signing_key_from_seed([7; 32]);
    let packs = layers::build_packs(&m, Some(&throwaway))?;
    let mut runs = Vec::new();
    for p in &packs {
        let tests = p.src.tests.as_ref().map(|t| m.dir.join(t)).or_else(|| {
            p.src
                .source
                .as_ref()
                .map(|s| m.dir.join(s).with_file_name("tests.toml"))
        });
        let Some(tests) = tests.filter(|t| t.exists()) else {
            continue;
        };
        let file = tabletop::load(&tests)?;
        let name = format!("{} (layer `{}`)", tests.display(), p.src.id);
        match &p.policy {
            Some(policy) => runs.push(super::test::run_pack(name, policy, &file)),
            // A pack built and signed by its owner: its bundle's VM is what runs.
            None => {
                let b = bundle::Bundle::from_bytes(&p.bytes, &bundle::Trust::AllowUnsigned)
                    .map_err(|e| format!("pack `{}`: {e}", p.src.id))?;
                let cases = tabletop::run_cases_with(&file, &|a, s, t| b.evaluate(a, s, t))
                    .into_iter()
                    .map(|r| (r, Vec::new()))
                    .collect();
                runs.push(PackRun {
                    pack: name,
                    diagnostics: Vec::new(),
                    fatal: None,
                    cases,
                    engines: "bundle VM (the owner's signed bundle)",
                });
            }
        }
    }
    let conflicts = layers::static_conflicts(&packs);
    let set = layers::assemble(&m, &packs).and_then(|b| {
        PackSet::from_bytes(&b, &bundle::Trust::AllowUnsigned).map_err(|e| e.to_string())
    });
    let name = format!(
        "{} (combination of {} packs)",
        manifest.display(),
        packs.len()
    );
    let set = match set {
        Ok(s) if conflicts.is_empty() => s,
        Ok(_) => {
            runs.push(fatal(name, conflicts.join("; ")));
            return Ok(runs);
        }
        Err(e) => {
            runs.push(fatal(name, e));
            return Ok(runs);
        }
    };
    if let Some(t) = &m.file.tests {
        let file = tabletop::load(&m.dir.join(t))?;
        runs.push(combination(name, &set, &file));
    }
    Ok(runs)
}

fn fatal(pack: String, why: String) -> PackRun {
    PackRun {
        pack,
        diagnostics: Vec::new(),
        fatal: Some(why),
        cases: Vec::new(),
        engines: "none",
    }
}

fn combination(pack: String, set: &PackSet, file: &tabletop::TestFile) -> PackRun {
    let cases = file
        .cases
        .iter()
        .map(|case| {
            let last: RefCell<Vec<LayerOutcome>> = RefCell::new(Vec::new());
            let eval = |a: &_, s: &_, t| {
                let (v, o) = set.evaluate_layered(a, s, t);
                *last.borrow_mut() = o;
                v
            };
            let verdict = tabletop::simulate(case, &eval).pop().unwrap_or_default();
            let mut expect = case.expect.clone();
            let want_pack = expect.pack.take();
            let mut mismatches = tabletop::check_expect(&expect, &verdict);
            if let Some(want) = want_pack {
                let outcomes = last.borrow();
                let got = outcomes
                    .iter()
                    .find(|o| o.winner)
                    .and_then(|o| set.layers().get(o.index))
                    .map_or("none", |l| l.entry.id.as_str());
                if got != want {
                    mismatches.push(format!("pack: expected `{want}`, got `{got}`"));
                }
            }
            (
                CaseResult {
                    name: case.name.clone(),
                    mismatches,
                    verdict,
                },
                Vec::new(),
            )
        })
        .collect();
    PackRun {
        pack,
        diagnostics: Vec::new(),
        fatal: None,
        cases,
        engines: "layered set (bundle VM per pack)",
    }
}

/// Arguments of `policyc explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The bundle (a layered set, or a single pack).
    pub bundle: PathBuf,
    /// The action, as JSON (the `Action` shape in docs/bundle-format.md).
    #[arg(long, value_name = "FILE")]
    pub action: PathBuf,
    /// The evaluation time in ms since the Unix epoch (default: the tabletop default).
    #[arg(long)]
    pub now_ms: Option<u64>,
    /// Trusted public key files; the bundle must be signed by one of them.
    #[arg(long = "pub", value_name = "KEYFILE", num_args = 1.., conflicts_with = "allow_unsigned")]
    pub keys: Vec<PathBuf>,
    /// Accept an unsigned bundle (signatures are not checked).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Run `policyc explain`.
pub(super) fn explain(args: &ExplainArgs) -> i32 {
    match explain_inner(args) {
        Ok(()) => EXIT_OK,
        Err(c) => c,
    }
}

/// Why the winner won, in one sentence.
fn why(set: &PackSet, v: &Verdict, outcomes: &[LayerOutcome]) -> String {
    if v.deciding_rule == CONFLICT_RULE {
        return format!(
            "applicable packs ask for conflicting rewrites, so the action is denied: {}",
            v.reason
        );
    }
    if v.deciding_rule == NOT_ENFORCED_RULE {
        return "no applicable pack runs in enforce mode: their decisions are recorded, and the action is allowed".to_owned();
    }
    let Some(w) = outcomes.iter().find(|o| o.winner) else {
        return "a single pack decides".to_owned();
    };
    let id = set
        .layers()
        .get(w.index)
        .map_or("?", |l| l.entry.id.as_str());
    let tied = outcomes
        .iter()
        .filter(|o| !o.winner && o.decision == w.decision)
        .filter(|o| {
            set.layers()
                .get(o.index)
                .is_some_and(|l| l.entry.mode == Mode::Enforce)
        })
        .count();
    format!(
        "`{id}` asks for {}, the strictest decision of the enforce-mode packs (DENY > STEP_UP > DEFER > MODIFY > ALLOW){}",
        w.decision.as_str(),
        if tied > 0 {
            "; on a tie the earlier pack in the manifest decides"
        } else {
            ""
        }
    )
}

fn explain_inner(args: &ExplainArgs) -> Result<(), i32> {
    let trust = if args.allow_unsigned {
        bundle::Trust::AllowUnsigned
    } else if args.keys.is_empty() {
        eprintln!("error: give `--pub KEYFILE` (trusted keys) or `--allow-unsigned`");
        return Err(EXIT_USAGE);
    } else {
        bundle::Trust::Keys(read_public_keys(&args.keys)?)
    };
    let set = PackSet::from_bytes(&read_bytes(&args.bundle)?, &trust).map_err(|e| {
        eprintln!("error: {}: {e}", args.bundle.display());
        EXIT_FAILED
    })?;
    let text = read_text(&args.action)?;
    let action: bundle::action::Action = serde_json::from_str(&text).map_err(|e| {
        eprintln!("error: `{}` is not an action: {e}", args.action.display());
        EXIT_USAGE
    })?;
    let now = args.now_ms.unwrap_or(tabletop::DEFAULT_NOW_MS);
    let state = bundle::session::SessionState::new(now);
    let (v, outcomes) = set.evaluate_layered(&action, &state, now);
    let reason = why(&set, &v, &outcomes);
    match args.format {
        Format::Text => {
            for (i, l) in set.layers().iter().enumerate() {
                let head = format!(
                    "pack `{}` {} ({})",
                    l.entry.id,
                    l.bundle.info().version,
                    l.entry.mode.as_str()
                );
                match outcomes.iter().find(|o| o.index == i) {
                    None if set.is_layered() => {
                        println!("{head}: not assigned ({})", assignment(&l.entry));
                    }
                    None => println!(
                        "{head}: {} by rule `{}`: {}",
                        v.decision.as_str(),
                        v.deciding_rule,
                        v.reason
                    ),
                    Some(o) => println!(
                        "{head}, assigned by {}: {} by rule `{}`: {}{}",
                        o.assigned,
                        o.decision.as_str(),
                        o.rule,
                        o.reason,
                        match (o.winner, l.entry.mode) {
                            (true, _) => "  <- wins",
                            (false, Mode::Audit) => "  (audit: recorded, never wins)",
                            (false, Mode::Warn) => "  (warn: the agent is told, never wins)",
                            (false, Mode::Enforce) => "",
                        }
                    ),
                }
            }
            println!(
                "decision: {} (rule `{}`): {reason}",
                v.decision.as_str(),
                v.deciding_rule
            );
        }
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "decision": v.decision,
                "rule": v.deciding_rule,
                "reason": v.reason,
                "why": reason,
                "layers": set.records(&outcomes),
                "verdict": v,
            })
        ),
    }
    Ok(())
}
