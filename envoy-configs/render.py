#!/usr/bin/env python3
"""Render one envoy-configs/<folder> template into a runnable Envoy configuration.

Every folder holds ``envoy.yaml.tmpl`` (``${NAME}`` placeholders) and, when it loads Portcullis,
``plugin-config.json`` (the filter's plugin configuration, see docs/filter-config.md) whose string
values may contain ``{{bundle}}``, ``{{bundle_pub}}`` and ``{{approver_pub}}``. The renderer fills
those from files, serializes the plugin configuration compactly and embeds it as a JSON string.

    python3 envoy-configs/render.py mcp-gateway --out out/gw \\
        --var LISTEN_PORT=10000 --var ADMIN_PORT=9901 --var UPSTREAM_PORT=8080 \\
        --var WASM=$PWD/target/wasm32-wasip1/release/portcullis.wasm \\
        --var ACCESS_LOG=$PWD/out/gw/access.log \\
        --bundle out/demo.bundle --bundle-pub out/bundle.pub --approver-pub out/approver.pub

Writes ``OUT/envoy.yaml`` (and, for ``hot-reload``, ``OUT/ecds/portcullis.yaml``, the filter
configuration Envoy watches). ``FAILURE_POLICY`` defaults to ``FAIL_CLOSED``, ``CORS_ORIGIN``
(mcp-gateway) to the MCP Inspector's ``http://localhost:6274``. A missing ``${...}``
is an error, never an empty string. The receipt signing key is NOT rendered: Envoy passes its own
environment variable ``PORTCULLIS_SIGNING_KEY`` to the VM (``host_env_keys``).
Only the standard library is used, so this runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import string
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDERS = ("mcp-gateway", "egress-proxy", "hot-reload", "fault-behaviour", "credentials")
# The one browser origin the mcp-gateway allows unless --var CORS_ORIGIN=... says otherwise: the
# MCP Inspector's local web UI.
DEFAULT_CORS_ORIGIN = "http://localhost:6274"


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch (objects merge member by member, null deletes, else replace)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _fill(value: object, subst: dict[str, str]) -> object:
    if isinstance(value, str):
        for key, text in subst.items():
            value = value.replace("{{" + key + "}}", text)
        return value
    if isinstance(value, list):
        return [_fill(v, subst) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, subst) for k, v in value.items()}
    return value


def plugin_config(folder: str, subst: dict[str, str], patch: object | None = None,
                  raw: str | None = None) -> str:
    """The plugin configuration text for ``folder``: its plugin-config.json with placeholders
    filled and ``patch`` merged in, or ``raw`` verbatim (for deliberately broken configs)."""
    if raw is not None:
        return raw
    cfg = json.loads((HERE / folder / "plugin-config.json").read_text())
    if patch is not None:
        cfg = merge_patch(cfg, patch)
    cfg = _fill(cfg, subst)
    text = json.dumps(cfg, separators=(",", ":"))
    left = [p for p in ("{{bundle}}", "{{bundle_pub}}", "{{approver_pub}}") if p in text]
    if left:
        raise ValueError(f"plugin config for {folder} still has placeholders {left}: pass the files")
    return text


def key_line(path: str | None) -> str:
    """The first line of a key file, or '' when no file is given."""
    return Path(path).read_text().strip() if path else ""


def substitutions(bundle: str | None, bundle_pub: str | None, approver_pub: str | None) -> dict[str, str]:
    """Placeholder values read from the bundle and key files."""
    subst = {"bundle_pub": key_line(bundle_pub), "approver_pub": key_line(approver_pub)}
    subst["bundle"] = base64.b64encode(Path(bundle).read_bytes()).decode() if bundle else ""
    return subst


def ecds_document(plugin_cfg: str, values: dict[str, str], version: str) -> str:
    """The ECDS DiscoveryResponse (YAML) carrying the Portcullis Wasm filter configuration."""
    tmpl = string.Template((HERE / "hot-reload" / "ecds.yaml.tmpl").read_text())
    return tmpl.substitute({**values, "PLUGIN_CONFIG": json.dumps(plugin_cfg), "VERSION": json.dumps(version)})


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by rename, so a watcher never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def render(folder: str, out: Path, values: dict[str, str], plugin_cfg: str | None) -> dict[str, Path]:
    """Render ``folder`` into ``out``; returns the written paths by role."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown folder `{folder}`; expected one of {', '.join(FOLDERS)}")
    values = {"FAILURE_POLICY": "FAIL_CLOSED", "CORS_ORIGIN": DEFAULT_CORS_ORIGIN, **values}
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if folder == "hot-reload":
        ecds = out / "ecds" / "portcullis.yaml"
        values["ECDS_PATH"] = str(ecds)
        values["ECDS_DIR"] = str(ecds.parent)
        write_atomic(ecds, ecds_document(plugin_cfg or "", values, values.get("VERSION", "1")))
        written["ecds"] = ecds
    if plugin_cfg is not None:
        values["PLUGIN_CONFIG"] = json.dumps(plugin_cfg)
    tmpl = string.Template((HERE / folder / "envoy.yaml.tmpl").read_text())
    envoy_yaml = out / "envoy.yaml"
    envoy_yaml.write_text(tmpl.substitute(values))
    written["envoy"] = envoy_yaml
    return written


def main(argv: list[str]) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description="render an envoy-configs folder")
    ap.add_argument("folder", choices=FOLDERS)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--bundle", help="compiled, signed bundle file")
    ap.add_argument("--bundle-pub", help="public key file that signed the bundle")
    ap.add_argument("--approver-pub", help="public key file of the release-managers approver")
    ap.add_argument("--plugin-patch", help="JSON merge patch applied to plugin-config.json")
    ap.add_argument("--raw-plugin-config", help="use this exact plugin configuration text")
    args = ap.parse_args(argv)
    values = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--var `{item}` is not NAME=VALUE")
        values[name] = value
    subst = substitutions(args.bundle, args.bundle_pub, args.approver_pub)
    patch = json.loads(args.plugin_patch) if args.plugin_patch else None
    cfg = plugin_config(args.folder, subst, patch, args.raw_plugin_config)
    try:
        written = render(args.folder, args.out, values, cfg)
    except KeyError as e:
        print(f"render: template needs --var {e.args[0]}=...", file=sys.stderr)
        return 2
    for role, path in written.items():
        print(f"{role}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
