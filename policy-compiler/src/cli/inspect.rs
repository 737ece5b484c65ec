//! `policyc inspect BUNDLE [--format json]`: header, hashes, rule table and disassembly. The
//! signature is not checked here (use `policyc verify`); the structure is fully verified.

use std::path::PathBuf;

use bundle::disasm::effect;
use serde_json::json;

use super::build::read_bytes;
use super::{EXIT_FAILED, EXIT_OK, Format};

/// Arguments of `policyc inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The bundle.
    pub bundle: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Run `policyc inspect`.
pub(crate) fn run(args: &InspectArgs) -> i32 {
    let bytes = match read_bytes(&args.bundle) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let b = match bundle::Bundle::from_bytes(&bytes, &bundle::Trust::AllowUnsigned) {
        Ok(b) => b,
        Err(e) => {
            match args.format {
                Format::Text => eprintln!("error: {}: {e}", args.bundle.display()),
                Format::Json => println!("{}", json!({"ok": false, "error": e.to_string()})),
            }
            return EXIT_FAILED;
        }
    };
    let text = bundle::disasm::disassemble(&b);
    match args.format {
        Format::Text => {
            println!(
                "{} bytes; signature not checked (use `policyc verify`)",
                bytes.len()
            );
            print!("{text}");
        }
        Format::Json => {
            let i = b.info();
            let p = b.program();
            let rules: Vec<_> = p
                .rules
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "mode": r.mode,
                        "decision": r.decision.decision,
                        "reason": r.decision.reason,
                        "effects": r.effects.iter().map(effect).collect::<Vec<_>>(),
                        "index": {
                            "kind": r.pins.kind,
                            "operations": r.pins.operations,
                            "tools": r.pins.tools,
                            "hosts": r.pins.hosts,
                        },
                        "instructions": r.code.len(),
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "ok": true,
                    "bytes": bytes.len(),
                    "format_version": i.format_version,
                    "pack": i.pack,
                    "version": i.version,
                    "mode": p.mode,
                    "content_hash": hex::encode(i.content_hash),
                    "key_id": i.key_id,
                    "classes": p.classes.iter().map(|c| json!({"name": c.name, "risk": c.risk, "readonly": c.readonly})).collect::<Vec<_>>(),
                    "intents": p.intents.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
                    "mcp_protocol": p.mcp_protocol,
                    "tools": p.tools.iter().map(|t| json!({
                        "name": t.name,
                        "args": t.args.iter().map(|a| json!({
                            "path": a.path,
                            "type": format!("{:?}", a.ty).to_ascii_lowercase(),
                            "coerce": a.coerce,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "matchers": p.matchers.len(),
                    "rules": rules,
                    "disassembly": text,
                })
            );
        }
    }
    EXIT_OK
}
