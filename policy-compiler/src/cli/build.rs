//! `policyc build POLICY.pcl -o out.bundle [--sign KEYFILE] [--pins PINS.json ...]`: parse,
//! check, compile, add the reviewed tool pins, sign, write.
//! `policyc build --manifest layers.toml -o out.bundle --sign KEYFILE`: a layered bundle
//! (`cli/layers.rs`).

use std::path::PathBuf;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Format};
use crate::diag::Diagnostic;

/// Arguments of `policyc build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The policy source file.
    #[arg(required_unless_present = "manifest")]
    pub policy: Option<PathBuf>,
    /// Build a layered bundle from this manifest (`layers.toml`, docs/layers.md) instead.
    #[arg(long, value_name = "LAYERS_TOML", conflicts_with = "policy")]
    pub manifest: Option<PathBuf>,
    /// Where to write the bundle.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Sign the bundle with this secret key file (from `policyc keygen`).
    #[arg(long, value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,
    /// Ship the tool pins of this file (from `policyc pin`) in the bundle; repeatable.
    #[arg(long, value_name = "PINS")]
    pub pins: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub(crate) fn read_text(path: &std::path::Path) -> Result<String, i32> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read `{}`: {e}", path.display());
        EXIT_USAGE
    })
}

pub(crate) fn read_bytes(path: &std::path::Path) -> Result<Vec<u8>, i32> {
    std::fs::read(path).map_err(|e| {
        eprintln!("error: cannot read `{}`: {e}", path.display());
        EXIT_USAGE
    })
}

pub(crate) fn write_bytes(path: &std::path::Path, bytes: &[u8]) -> Result<(), i32> {
    std::fs::write(path, bytes).map_err(|e| {
        eprintln!("error: cannot write `{}`: {e}", path.display());
        EXIT_USAGE
    })
}

pub(crate) fn read_signing_key(path: &std::path::Path) -> Result<ed25519_dalek::SigningKey, i32> {
    let text = read_text(path)?;
    bundle::keys::parse_signing_key(&text).map_err(|e| {
        eprintln!("error: `{}` is not a secret key file: {e}", path.display());
        EXIT_USAGE
    })
}

fn report(diags: &[Diagnostic], file: &str, src: &str, format: Format) {
    match format {
        Format::Text => {
            for d in diags {
                eprint!("{}", d.render(file, src));
            }
        }
        Format::Json => {
            let v: Vec<_> = diags.iter().map(|d| d.to_json(file)).collect();
            println!("{}", serde_json::json!({ "ok": false, "diagnostics": v }));
        }
    }
}

/// Run `policyc build`.
pub(crate) fn run(args: &BuildArgs) -> i32 {
    match build(args) {
        Ok(()) => EXIT_OK,
        Err(code) => code,
    }
}

fn build(args: &BuildArgs) -> Result<(), i32> {
    let Some(policy_path) = &args.policy else {
        return match &args.manifest {
            Some(m) => super::layers::build(m, args),
            None => Err(EXIT_USAGE),
        };
    };
    let file = policy_path.display().to_string();
    let src = read_text(policy_path)?;
    let key = args.sign.as_deref().map(read_signing_key).transpose()?;
    let (policy, diags) = crate::check::parse_and_check(&src);
    let policy = match policy {
        Some(p) if !diags.iter().any(Diagnostic::is_error) => p,
        _ => {
            report(&diags, &file, &src, args.format);
            return Err(EXIT_FAILED);
        }
    };
    if args.format == Format::Text {
        // warnings do not stop the build; in JSON mode they are left to `policyc check`
        report(&diags, &file, &src, args.format);
    }
    let tool_pins = super::pin::read_pins(&args.pins)?;
    let mut program = crate::lower::lower(&policy).map_err(|e| {
        report(
            &[Diagnostic::error(e.span, e.message)],
            &file,
            &src,
            args.format,
        );
        EXIT_FAILED
    })?;
    program.tool_pins = tool_pins;
    let unsigned = bundle::encode(&program);
    let bytes = match &key {
        Some(k) => bundle::sign(&unsigned, k).map_err(|e| {
            eprintln!("error: cannot sign the bundle: {e}");
            EXIT_FAILED
        })?,
        None => unsigned,
    };
    let loaded =
        bundle::Bundle::from_bytes(&bytes, &bundle::Trust::AllowUnsigned).map_err(|e| {
            eprintln!("error: the compiled bundle does not load (a compiler bug): {e}");
            EXIT_FAILED
        })?;
    write_bytes(&args.out, &bytes)?;
    let info = loaded.info();
    match args.format {
        Format::Text => println!(
            "built `{}` {} -> {}: {} rules, {} bytes, sha256 {}, {}{}{}",
            info.pack,
            info.version,
            args.out.display(),
            info.rules,
            bytes.len(),
            hex::encode(info.content_hash),
            info.key_id
                .as_deref()
                .map_or_else(|| "unsigned".to_owned(), |k| format!("signed by {k}")),
            loaded
                .program()
                .mcp_protocol
                .map_or_else(String::new, |v| format!(", mcp_protocol list v{v}")),
            match loaded.program().tool_pins.len() {
                0 => String::new(),
                n => format!(", {n} tool pins"),
            }
        ),
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "out": args.out.display().to_string(),
                "pack": info.pack,
                "version": info.version,
                "rules": info.rules,
                "bytes": bytes.len(),
                "content_hash": hex::encode(info.content_hash),
                "key_id": info.key_id,
                "format_version": info.format_version,
                "mcp_protocol": loaded.program().mcp_protocol,
                "tool_pins": loaded.program().tool_pins.len(),
            })
        ),
    }
    Ok(())
}
