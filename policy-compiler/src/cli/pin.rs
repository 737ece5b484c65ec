//! `policyc pin TOOLS.json --server NAME [-o PINS.json]`: pin a reviewed catalogue of tool
//! definitions. The input is a `tools/list` result (`{"tools": [...]}`), a whole JSON-RPC answer
//! (`{"result": {"tools": [...]}}`) or an array of tool definitions; the output is a pins file
//! (`{"pins": [{"server", "name", "sha256"}]}`, sorted) that `policyc build --pins` ships in the
//! bundle (format version 4). The digest is the filter's (`bundle::pin::definition_digest`,
//! docs/filter.md "Tool pins").

use std::path::{Path, PathBuf};

use bundle::format::ToolPin;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::build::{read_text, write_bytes};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// Arguments of `policyc pin`.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// The reviewed tool definitions: a `tools/list` result, a JSON-RPC answer carrying one, or
    /// an array of tool definitions.
    pub tools: PathBuf,
    /// The MCP server that offers them (`target.server`: the route's `mcp.server_name`).
    #[arg(long)]
    pub server: String,
    /// Write the pins file here (default: standard output).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// One pin of a pins file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinEntry {
    pub server: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the canonical definition.
    pub sha256: String,
}

/// A pins file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinsFile {
    pub pins: Vec<PinEntry>,
}

/// The tool definitions in `v`.
fn definitions(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        Value::Object(o) => o
            .get("tools")
            .or_else(|| o.get("result").and_then(|r| r.get("tools")))
            .and_then(Value::as_array),
        _ => None,
    }
}

/// The pins of `tools` (from `what`) for `server`, sorted by name; an error names the entry.
pub(crate) fn pin_tools(server: &str, v: &Value, what: &str) -> Result<Vec<PinEntry>, String> {
    let tools = definitions(v).ok_or_else(|| {
        format!(
            "`{what}` holds no tool definitions: expected a `tools/list` result \
             (`{{\"tools\": [...]}}`), a JSON-RPC answer carrying one, or an array of tools"
        )
    })?;
    let mut out: Vec<PinEntry> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let digest = bundle::pin::definition_digest(t)
            .ok_or_else(|| format!("`{what}`: tool {i} is not an object with a string `name`"))?;
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if out.iter().any(|p| p.name == name) {
            return Err(format!("`{what}`: tool `{name}` is defined twice"));
        }
        out.push(PinEntry {
            server: server.to_owned(),
            name,
            sha256: hex::encode(digest),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Read pins files and merge them into the bundle's pins: sorted by (server, name); the same
/// tool pinned twice is an error.
pub(crate) fn read_pins(paths: &[PathBuf]) -> Result<Vec<ToolPin>, i32> {
    let mut pins: Vec<ToolPin> = Vec::new();
    for path in paths {
        let text = read_text(path)?;
        let file: PinsFile = serde_json::from_str(&text).map_err(|e| {
            eprintln!(
                "error: `{}` is not a pins file (from `policyc pin`): {e}",
                path.display()
            );
            EXIT_FAILED
        })?;
        for p in file.pins {
            let digest = hex::decode(&p.sha256)
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .filter(|_| p.sha256.bytes().all(|b| !b.is_ascii_uppercase()))
                .ok_or_else(|| {
                    eprintln!(
                        "error: `{}`: the pin of tool `{}` is not 64 lowercase hex digits",
                        path.display(),
                        p.name
                    );
                    EXIT_FAILED
                })?;
            if pins
                .iter()
                .any(|q| q.server == p.server && q.name == p.name)
            {
                eprintln!(
                    "error: `{}`: tool `{}` of server `{}` is pinned twice",
                    path.display(),
                    p.name,
                    p.server
                );
                return Err(EXIT_FAILED);
            }
            pins.push(ToolPin {
                server: p.server,
                name: p.name,
                digest,
            });
        }
    }
    pins.sort_by(|a, b| (&a.server, &a.name).cmp(&(&b.server, &b.name)));
    Ok(pins)
}

/// Run `policyc pin`.
pub(crate) fn run(args: &PinArgs) -> i32 {
    match pin(args) {
        Ok(()) => EXIT_OK,
        Err(code) => code,
    }
}

fn pin(args: &PinArgs) -> Result<(), i32> {
    if args.server.is_empty() {
        eprintln!("error: `--server` names the MCP server the tools belong to");
        return Err(EXIT_USAGE);
    }
    let what = args.tools.display().to_string();
    let text = read_text(&args.tools)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        eprintln!("error: `{what}` is not JSON: {e}");
        EXIT_FAILED
    })?;
    let pins = pin_tools(&args.server, &v, &what).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })?;
    let n = pins.len();
    let mut json = serde_json::to_string_pretty(&PinsFile { pins }).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })?;
    json.push('\n');
    match &args.out {
        Some(out) => {
            write_bytes(out, json.as_bytes())?;
            eprintln!(
                "pinned {n} tools of server `{}` -> {}",
                args.server,
                display(out)
            );
        }
        None => print!("{json}"),
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
