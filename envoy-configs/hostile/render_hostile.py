#!/usr/bin/env python3
"""Render envoy-configs/hostile: ONE Envoy with two listeners, each Portcullis with its own VM and
its own pack, in front of test-harness/e2e/permissive_upstream.py (see README.md here).

    python3 envoy-configs/hostile/render_hostile.py --out out/ex/hostile \\
        --var ADMIN_PORT=9903 --var PERMISSIVE_PORT=10010 --var STRICT_PORT=10011 \\
        --var UPSTREAM_PORT=9090 --var WASM=$PWD/target/wasm32-wasip1/release/portcullis.wasm \\
        --var ACCESS_LOG=$PWD/out/ex/hostile/access.log \\
        --permissive-bundle out/ex/hostile_permissive.bundle --strict-bundle out/ex/hostile_strict.bundle \\
        --bundle-pub out/ex/bundle.pub

``plugin-config.json`` is filled once per pack (``{{bundle}}``, ``{{bundle_pub}}`` as in
``../render.py``) and embedded as ``${PERMISSIVE_PLUGIN_CONFIG}`` / ``${STRICT_PLUGIN_CONFIG}``.
``FAILURE_POLICY`` defaults to ``FAIL_CLOSED``; a missing ``${...}`` is an error. The receipt
signing key is never rendered (Envoy's environment ``PORTCULLIS_SIGNING_KEY``). Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import render as base  # noqa: E402  (envoy-configs/render.py)

PACKS = ("permissive", "strict")


def plugin_config(bundle: str, bundle_pub: str) -> str:
    """plugin-config.json with one pack's bundle and the trusted key filled in, compact."""
    subst = base.substitutions(bundle, bundle_pub, None)
    cfg = base._fill(json.loads((HERE / "plugin-config.json").read_text()), subst)
    return json.dumps(cfg, separators=(",", ":"))


def render(out: Path, values: dict[str, str], bundles: dict[str, str], bundle_pub: str) -> Path:
    """Write ``out/envoy.yaml``; ``bundles`` maps each pack to its signed bundle file."""
    out.mkdir(parents=True, exist_ok=True)
    vals = {"FAILURE_POLICY": "FAIL_CLOSED", **values}
    for pack in PACKS:
        vals[f"{pack.upper()}_PLUGIN_CONFIG"] = json.dumps(plugin_config(bundles[pack], bundle_pub))
    path = out / "envoy.yaml"
    path.write_text(string.Template((HERE / "envoy.yaml.tmpl").read_text()).substitute(vals))
    return path


def main(argv: list[str]) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description="render envoy-configs/hostile")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--permissive-bundle", required=True)
    ap.add_argument("--strict-bundle", required=True)
    ap.add_argument("--bundle-pub", required=True)
    args = ap.parse_args(argv)
    values = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--var `{item}` is not NAME=VALUE")
        values[name] = value
    try:
        path = render(args.out, values, {"permissive": args.permissive_bundle, "strict": args.strict_bundle},
                      args.bundle_pub)
    except KeyError as e:
        print(f"render_hostile: template needs --var {e.args[0]}=...", file=sys.stderr)
        return 2
    print(f"envoy: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
