//! `policyc keygen`, `policyc sign` and `policyc verify`: bundle signing keys and signatures.

use std::io::Write as _;
use std::path::PathBuf;

use rand_core::{OsRng, RngCore as _};

use super::build::{read_bytes, read_signing_key, read_text, write_bytes};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Format};

/// Arguments of `policyc keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Writes `NAME.key` (secret, mode 0600) and `NAME.pub`.
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `policyc sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The bundle to sign (unsigned, or signed: the signature is replaced).
    pub bundle: PathBuf,
    /// Secret key file.
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
    /// Where to write the signed bundle.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `policyc verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The bundle to verify.
    pub bundle: PathBuf,
    /// Trusted public key files (one or more).
    #[arg(long = "pub", value_name = "KEYFILE", required = true, num_args = 1..)]
    pub keys: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn with_ext(base: &std::path::Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn write_new(path: &std::path::Path, text: &str, secret: bool) -> Result<(), i32> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| {
        eprintln!("error: cannot create `{}`: {e}", path.display());
        EXIT_USAGE
    })?;
    f.write_all(text.as_bytes()).map_err(|e| {
        eprintln!("error: cannot write `{}`: {e}", path.display());
        EXIT_USAGE
    })
}

/// Run `policyc keygen`.
pub(crate) fn keygen(args: &KeygenArgs) -> i32 {
    let mut seed = [0u8; 32];
    if let Err(e) = OsRng.try_fill_bytes(&mut seed) {
        eprintln!("error: the operating system's random source failed: {e}");
        return EXIT_USAGE;
    }
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let key_path = with_ext(&args.out, ".key");
    let pub_path = with_ext(&args.out, ".pub");
    if pub_path.exists() || key_path.exists() {
        eprintln!(
            "error: `{}` or `{}` already exists; refusing to overwrite a key",
            key_path.display(),
            pub_path.display()
        );
        return EXIT_USAGE;
    }
    let secret = bundle::keys::format_signing_key(&sk) + "\n";
    let public = bundle::keys::format_verifying_key(&sk.verifying_key()) + "\n";
    if let Err(c) = write_new(&key_path, &secret, true) {
        return c;
    }
    if let Err(c) = write_new(&pub_path, &public, false) {
        return c;
    }
    let id = bundle::keys::key_id(&sk.verifying_key());
    match args.format {
        Format::Text => println!(
            "{id}\nwrote {} (secret, keep it out of repositories) and {}",
            key_path.display(),
            pub_path.display()
        ),
        Format::Json => println!(
            "{}",
            serde_json::json!({"key_id": id, "secret": key_path.display().to_string(), "public": pub_path.display().to_string()})
        ),
    }
    EXIT_OK
}

/// Run `policyc sign`.
pub(crate) fn sign(args: &SignArgs) -> i32 {
    let run = || -> Result<(), i32> {
        let bytes = read_bytes(&args.bundle)?;
        let key = read_signing_key(&args.key)?;
        let signed = bundle::sign(&bytes, &key).map_err(|e| {
            eprintln!("error: cannot sign `{}`: {e}", args.bundle.display());
            EXIT_FAILED
        })?;
        write_bytes(&args.out, &signed)?;
        let id = bundle::keys::key_id(&key.verifying_key());
        match args.format {
            Format::Text => println!(
                "signed {} with {id} -> {}",
                args.bundle.display(),
                args.out.display()
            ),
            Format::Json => println!(
                "{}",
                serde_json::json!({"ok": true, "key_id": id, "out": args.out.display().to_string()})
            ),
        }
        Ok(())
    };
    match run() {
        Ok(()) => EXIT_OK,
        Err(c) => c,
    }
}

pub(crate) fn read_public_keys(paths: &[PathBuf]) -> Result<Vec<ed25519_dalek::VerifyingKey>, i32> {
    paths
        .iter()
        .map(|p| {
            let text = read_text(p)?;
            bundle::keys::parse_verifying_key(&text).map_err(|e| {
                eprintln!("error: `{}` is not a public key file: {e}", p.display());
                EXIT_USAGE
            })
        })
        .collect()
}

/// Run `policyc verify`: exit 0 when the bundle is intact and signed by a trusted key, else 1.
pub(crate) fn verify(args: &VerifyArgs) -> i32 {
    let bytes = match read_bytes(&args.bundle) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let keys = match read_public_keys(&args.keys) {
        Ok(k) => k,
        Err(c) => return c,
    };
    match bundle::PackSet::from_bytes(&bytes, &bundle::Trust::Keys(keys)) {
        Ok(set) if set.is_layered() => {
            let s = set.set_info();
            let packs: Vec<_> = set
                .layers()
                .iter()
                .map(|l| (l.entry.id.clone(), l.entry.owner.clone(), l.hash.clone()))
                .collect();
            match args.format {
                Format::Text => {
                    println!(
                        "ok: layered set `{}` {} ({} packs, sha256 {}) signed by {}",
                        s.name,
                        s.version,
                        packs.len(),
                        hex::encode(s.content_hash),
                        s.key_id.as_deref().unwrap_or("?")
                    );
                    for (id, owner, hash) in &packs {
                        println!("  pack `{id}` (sha256 {hash}) signed by its owner {owner}");
                    }
                }
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"ok": true, "set": s.name, "version": s.version,
                        "content_hash": hex::encode(s.content_hash), "key_id": s.key_id,
                        "packs": packs.iter().map(|(id, owner, hash)| serde_json::json!(
                            {"id": id, "owner": owner, "content_hash": hash})).collect::<Vec<_>>()})
                ),
            }
            EXIT_OK
        }
        Ok(set) => {
            let i = set.info();
            match args.format {
                Format::Text => println!(
                    "ok: `{}` {} (format v{}, {} rules, sha256 {}) signed by {}",
                    i.pack,
                    i.version,
                    i.format_version,
                    i.rules,
                    hex::encode(i.content_hash),
                    i.key_id.as_deref().unwrap_or("?")
                ),
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"ok": true, "pack": i.pack, "version": i.version,
                        "format_version": i.format_version, "rules": i.rules,
                        "content_hash": hex::encode(i.content_hash), "key_id": i.key_id})
                ),
            }
            EXIT_OK
        }
        Err(e) => {
            match args.format {
                Format::Text => eprintln!("error: {}: {e}", args.bundle.display()),
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                ),
            }
            EXIT_FAILED
        }
    }
}
