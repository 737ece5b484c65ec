//! Layered packs from the compiler's side: the `layers.toml` manifest source (format in
//! `docs/layers.md`), assembling the signed packs into a layered bundle envelope, and the static
//! check that refuses packs whose rewrites can conflict.

use std::path::{Path, PathBuf};

use bundle::format::{DecisionDef, Program};
use bundle::layers::{Assign, Manifest, PackEntry, conflicts};
use bundle::verdict::{Mode, Modification};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Deserialize;

/// A whole `layers.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayersFile {
    /// The set's name (receipts write it as the bundle's pack).
    pub name: String,
    /// The set's version.
    pub version: String,
    /// Tabletop cases of the combination (relative to the manifest).
    #[serde(default)]
    pub tests: Option<PathBuf>,
    /// The packs, baseline first.
    #[serde(rename = "pack")]
    pub packs: Vec<PackSource>,
}

/// One `[[pack]]` of a `layers.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSource {
    /// The pack's id in the set.
    pub id: String,
    /// `enforce` (default), `warn` or `audit`.
    #[serde(default)]
    pub mode: Mode,
    /// Assignment rules (`{ agent = "..." }`, `namespace`, `workload`, `server`, `host`); none:
    /// every action (only the first pack, the baseline, has none).
    #[serde(default)]
    pub assign: Vec<Assign>,
    /// A policy source to compile here (signed with `sign`, or the build's `--sign` key).
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// Or a bundle its owner built and signed (`policyc build ... --sign`).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// The owner's public key file (required with `bundle`; with `source` it is the signing key's).
    #[serde(default)]
    pub owner_key: Option<PathBuf>,
    /// The secret key file `source` is signed with (default: the build's `--sign` key).
    #[serde(default)]
    pub sign: Option<PathBuf>,
    /// The pack's own tabletop tests (default: `tests.toml` next to `source`).
    #[serde(default)]
    pub tests: Option<PathBuf>,
}

/// A manifest read from disk, with the directory its paths are relative to.
pub struct Loaded {
    /// The manifest.
    pub file: LayersFile,
    /// Its directory.
    pub dir: PathBuf,
}

/// Read and parse a `layers.toml`.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let file: LayersFile = toml::from_str(&text)
        .map_err(|e| format!("`{}`: {}", path.display(), e.to_string().trim_end()))?;
    Ok(Loaded {
        file,
        dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
    })
}

/// One pack, compiled or read, signed by its owner.
pub struct BuiltPack {
    /// Its `[[pack]]` entry.
    pub src: PackSource,
    /// The signed single-pack bundle.
    pub bytes: Vec<u8>,
    /// The owner's key.
    pub owner: VerifyingKey,
    /// The decoded program (for the conflict check and the pack's own tests).
    pub program: Program,
    /// The checked policy, when the pack was compiled here (its tests run on the interpreter too).
    pub policy: Option<crate::ast::Policy>,
}

fn read_text(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
}

fn compile_source(path: &Path) -> Result<(crate::ast::Policy, Vec<u8>), String> {
    let src = read_text(path)?;
    let (policy, diags) = crate::check::parse_and_check(&src);
    let file = path.display().to_string();
    let errors: String = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.render(&file, &src))
        .collect();
    let policy = match policy {
        Some(p) if errors.is_empty() => p,
        _ => return Err(format!("`{file}` does not compile:\n{errors}")),
    };
    let bytes = crate::codegen::compile(&policy).map_err(|e| format!("`{file}`: {}", e.message))?;
    Ok((policy, bytes))
}

/// Compile or read every pack, each signed by (or verified against) its owner's key.
/// `default_key` signs `source` packs that name no `sign` key.
pub fn build_packs(m: &Loaded, default_key: Option<&SigningKey>) -> Result<Vec<BuiltPack>, String> {
    let mut out = Vec::with_capacity(m.file.packs.len());
    for p in &m.file.packs {
        let at = |rel: &Path| m.dir.join(rel);
        let built = match (&p.source, &p.bundle) {
            (Some(src), None) => {
                let key = match &p.sign {
                    Some(k) => bundle::keys::parse_signing_key(&read_text(&at(k))?)
                        .map_err(|e| format!("pack `{}`: `sign`: {e}", p.id))?,
                    None => default_key.cloned().ok_or_else(|| {
                        format!(
                            "pack `{}` has no key to be signed with: give it `sign = \"KEYFILE\"`, or build with `--sign`",
                            p.id
                        )
                    })?,
                };
                if let Some(o) = &p.owner_key {
                    let owner = bundle::keys::parse_verifying_key(&read_text(&at(o))?)
                        .map_err(|e| format!("pack `{}`: `owner_key`: {e}", p.id))?;
                    if owner != key.verifying_key() {
                        return Err(format!(
                            "pack `{}`: `owner_key` is not the public half of the key it is signed with",
                            p.id
                        ));
                    }
                }
                let (policy, unsigned) = compile_source(&at(src))?;
                let bytes = bundle::sign(&unsigned, &key)
                    .map_err(|e| format!("pack `{}`: cannot sign: {e}", p.id))?;
                let b = bundle::Bundle::from_bytes(
                    &bytes,
                    &bundle::Trust::Keys(vec![key.verifying_key()]),
                )
                .map_err(|e| format!("pack `{}`: the compiled bundle does not load: {e}", p.id))?;
                BuiltPack {
                    src: p.clone(),
                    bytes,
                    owner: key.verifying_key(),
                    program: b.program().clone(),
                    policy: Some(policy),
                }
            }
            (None, Some(file)) => {
                let Some(o) = &p.owner_key else {
                    return Err(format!(
                        "pack `{}` names a `bundle`: give its owner's public key as `owner_key`",
                        p.id
                    ));
                };
                let owner = bundle::keys::parse_verifying_key(&read_text(&at(o))?)
                    .map_err(|e| format!("pack `{}`: `owner_key`: {e}", p.id))?;
                let bytes = std::fs::read(at(file))
                    .map_err(|e| format!("cannot read `{}`: {e}", at(file).display()))?;
                let b = bundle::Bundle::from_bytes(&bytes, &bundle::Trust::Keys(vec![owner]))
                    .map_err(|e| {
                        format!(
                            "pack `{}`: `{}` is refused against its owner_key: {e}",
                            p.id,
                            file.display()
                        )
                    })?;
                BuiltPack {
                    src: p.clone(),
                    program: b.program().clone(),
                    bytes,
                    owner,
                    policy: None,
                }
            }
            _ => {
                return Err(format!(
                    "pack `{}` needs exactly one of `source` (a policy to compile) and `bundle` (a signed bundle)",
                    p.id
                ));
            }
        };
        out.push(built);
    }
    Ok(out)
}

/// Every rewrite a pack can ask for, with the rule (or built-in decision) that asks.
fn rewrites(p: &Program) -> Vec<(String, &Modification)> {
    let decisions: Vec<(String, &DecisionDef)> = p
        .rules
        .iter()
        .map(|r| (r.name.clone(), &r.decision))
        .chain([
            ("default".to_owned(), &p.default),
            ("session:unknown".to_owned(), &p.unknown_session),
        ])
        .chain(
            p.intents
                .iter()
                .map(|i| (format!("intent:{}", i.name), &i.outside)),
        )
        .collect();
    decisions
        .into_iter()
        .flat_map(|(who, d)| d.modifications.iter().map(move |m| (who.clone(), m)))
        .collect()
}

/// Pairs of enforce-mode packs whose rules can rewrite the same argument or header differently:
/// a request both apply to would be denied (`layers:conflict`), so the build refuses them.
pub fn static_conflicts(packs: &[BuiltPack]) -> Vec<String> {
    let mut out = Vec::new();
    let enforce: Vec<_> = packs
        .iter()
        .filter(|p| p.src.mode == Mode::Enforce)
        .map(|p| (p.src.id.as_str(), rewrites(&p.program)))
        .collect();
    for (i, (a, ra)) in enforce.iter().enumerate() {
        for (b, rb) in enforce.iter().skip(i.saturating_add(1)) {
            for (wa, ma) in ra {
                for (wb, mb) in rb.iter().filter(|(_, mb)| conflicts(ma, mb)) {
                    out.push(format!(
                        "packs `{a}` (rule `{wa}`: {}) and `{b}` (rule `{wb}`: {}) rewrite the same target differently; a request both apply to would be denied by `layers:conflict`",
                        describe(ma),
                        describe(mb)
                    ));
                }
            }
        }
    }
    out
}

fn describe(m: &Modification) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

/// The manifest of `packs` and the unsigned envelope around them.
pub fn assemble(m: &Loaded, packs: &[BuiltPack]) -> Result<Vec<u8>, String> {
    let manifest = Manifest {
        name: m.file.name.clone(),
        version: m.file.version.clone(),
        packs: packs
            .iter()
            .map(|p| {
                let hash = bundle::Bundle::from_bytes(&p.bytes, &bundle::Trust::AllowUnsigned)
                    .map(|b| hex::encode(b.info().content_hash))
                    .unwrap_or_default();
                PackEntry {
                    id: p.src.id.clone(),
                    mode: p.src.mode,
                    assign: p.src.assign.clone(),
                    owner: bundle::keys::key_id(&p.owner),
                    owner_key: bundle::keys::format_verifying_key(&p.owner),
                    hash,
                }
            })
            .collect(),
    };
    manifest
        .check(&bundle::Limits::default())
        .map_err(|e| e.to_string())?;
    let json = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let parts: Vec<&[u8]> = packs.iter().map(|p| p.bytes.as_slice()).collect();
    bundle::layers::encode_set(&json, &parts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    fn built(id: &str, mode: Mode, rules: &str) -> BuiltPack {
        let src = format!(
            "pack \"{id}\" {{\n  version \"1\"\n  mode enforce\n  default allow \"ok\"\n}}\n{rules}\n"
        );
        let ast = crate::syntax::parse(&src).unwrap();
        let bytes = crate::codegen::compile(&ast).unwrap();
        let b = bundle::Bundle::from_bytes(&bytes, &bundle::Trust::AllowUnsigned).unwrap();
        BuiltPack {
            src: PackSource {
                id: id.into(),
                mode,
                assign: Vec::new(),
                source: None,
                bundle: None,
                owner_key: None,
                sign: None,
                tests: None,
            },
            bytes,
            owner: bundle::keys::signing_key_from_seed([1; 32]).verifying_key(),
            program: b.program().clone(),
            policy: None,
        }
    }

    #[test]
    fn rewrites_of_one_header_with_different_values_are_a_static_conflict() {
        let a = built(
            "base",
            Mode::Enforce,
            "rule a { when kind == http modify \"tag\" { set_header \"x-team\" \"base\" } }",
        );
        let b = built(
            "team",
            Mode::Enforce,
            "rule b { when kind == http modify \"tag\" { set_header \"x-team\" \"payments\" } }",
        );
        let found = static_conflicts(&[a, b]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`base` (rule `a`"), "{}", found[0]);
    }

    #[test]
    fn equal_rewrites_and_audit_packs_do_not_conflict() {
        let rule = "rule a { when kind == http modify \"tag\" { set_header \"x-team\" \"base\" } }";
        let a = built("base", Mode::Enforce, rule);
        let same = built("team", Mode::Enforce, rule);
        assert!(static_conflicts(&[a, same]).is_empty());
        let a = built("base", Mode::Enforce, rule);
        let audit = built(
            "trial",
            Mode::Audit,
            "rule b { when kind == http modify \"tag\" { strip_header \"x-team\" } }",
        );
        assert!(static_conflicts(&[a, audit]).is_empty());
    }
}
