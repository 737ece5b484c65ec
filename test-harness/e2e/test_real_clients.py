"""Real MCP clients against real MCP servers, directly and through Envoy + Portcullis (issue #22,
item 7; docs/clients.md has the matrix and how to run it).

Clients: the TypeScript SDK (npm `@modelcontextprotocol/sdk`), the Python SDK (`mcp`) in `legacy`
and `auto` mode, and the fastmcp client. Servers: npm `@modelcontextprotocol/server-everything`
and a fastmcp server (clients/fastmcp_server.py) with SSE answers, JSON answers, and JSON behind
GZip middleware. Each cell runs its steps three times in one client process: directly, through
a gateway with the allow-all pack (testdata/policies/allow-all.pcl), and through one with a
realistic pack (policies/real_clients.pcl). The bar:
  - allow-all: every step's normalized result is identical to the direct one;
  - realistic: identical except the intended differences (`get-env` hidden from tools/list and
    its call answered -32040 promptly; a result over the gateway's default 4 MiB inspection limit
    replaced by -32044, never passed unread; a request naming the deleted session refused with
    404);
  - no hang (each step bounded; a hang fails naming the step) and no client warning or error.
One client per server runs every step; the others run a smoke subset (the CI budget).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import portcullis_e2e as pe
from conftest import POLICIES, compile_or_fail

CLIENTS_DIR = pe.HERE / "clients"
NODE_MODULES = CLIENTS_DIR / "node_modules"
ALLOW_ALL = pe.REPO / "testdata/policies/allow-all.pcl"
REALISTIC = POLICIES / "real_clients.pcl"
STEP_TIMEOUT_S = 15
# Results of several MiB pass an allow-all gateway that raised its inspection limit (as an operator
# serving such results must); the realistic gateway keeps the default 4 MiB.
LARGE_LIMIT = 8 * 1024 * 1024
DENIED_TOOL = "get-env"
PROMPT_MS = 5000  # a denial the client does not surface within this is a hang in all but name

FULL = ["list", "call", "denied", "sampling", "elicitation", "roots", "progress", "cancel",
        "subscribe", "large", "delete"]
SMOKE = ["list", "call", "denied"]

# server -> the clients that run every step there (the others run SMOKE). The fastmcp client and
# the Python SDK in auto mode are not full on SSE (the fastmcp client keeps the SDK's 1 MiB SSE
# event limit, below the large step) nor is auto anywhere: against a 2026-07-28 server it has no
# back-channel for sampling, elicitation and roots, by design of that protocol.
SERVERS = {"everything": {"ts", "py-legacy", "fastmcp"}, "fastmcp-sse": {"py-legacy", "ts"},
           "fastmcp-json": {"fastmcp", "py-legacy"}, "fastmcp-gzip": {"ts", "fastmcp"}}
CLIENTS = ["ts", "py-legacy", "py-auto", "fastmcp"]
CELLS = [(server, client) for server in SERVERS for client in CLIENTS]


def node() -> str:
    """The Node binary (scripts/setup needs it too, for npm ci)."""
    found = shutil.which("node")
    if not found:
        pytest.fail("node not found: the real-client matrix needs Node >= 18 (see scripts/setup)", pytrace=False)
    return found


def driver_argv(client: str, server: str) -> list[str]:
    """The command line of ``client``'s driver for ``server`` (without targets and steps)."""
    family = "everything" if server == "everything" else "fastmcp"
    if client == "ts":
        return [node(), str(CLIENTS_DIR / "ts_client.mjs"), "--server", family]
    kind = {"py-legacy": "mcp-legacy", "py-auto": "mcp-auto", "fastmcp": "fastmcp"}[client]
    return [pe.PYTHON, str(CLIENTS_DIR / "py_client.py"), "--client", kind, "--server", family]


@dataclass
class Gateways:
    """One server with the two gateways in front of it: target name -> MCP URL."""

    urls: dict[str, str] = field(default_factory=dict)
    envoy_logs: dict[str, Path] = field(default_factory=dict)


def start_server(stack: pe.Stack, server: str) -> tuple[pe.Proc, int]:
    """Start ``server`` on a free loopback port (not waiting for it)."""
    port = pe.free_port()
    if server == "everything":
        # A bare environment: its get-env tool returns the server's environment verbatim.
        argv = ["/usr/bin/env", "-i", f"PORT={port}", node(), str(CLIENTS_DIR / "everything_server.mjs")]
        return stack.start(server, argv), port
    mode = server.removeprefix("fastmcp-")
    return stack.start(server, [pe.PYTHON, str(CLIENTS_DIR / "fastmcp_server.py"), "--port", str(port),
                                "--mode", mode]), port


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def gateways(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateways]]:
    """Every server with an allow-all and a realistic gateway, all started at once (the fastmcp
    servers take seconds to import); stopped at the end of the module."""
    if not (NODE_MODULES / "@modelcontextprotocol/sdk").exists():
        pytest.fail(f"{NODE_MODULES} is missing the npm clients: run scripts/setup", pytrace=False)
    tmp = tmp_path_factory.mktemp("real-clients")
    bundles = {"allow": compile_or_fail(ALLOW_ALL, tmp / "allow-all.bundle", keys),
               "real": compile_or_fail(REALISTIC, tmp / "real-clients.bundle", keys)}
    out: dict[str, Gateways] = {}
    stacks: list[pe.Stack] = []
    try:
        waits = []
        for server in SERVERS:
            st = pe.Stack(tmp / server)
            stacks.append(st)
            proc, port = start_server(st, server)
            waits.append((f"{server} server", lambda p=port: listening(p), proc))
            gw = Gateways(urls={"direct": f"http://127.0.0.1:{port}/mcp"})
            for name, patch in (("allow", {"limits": {"max_body_bytes": LARGE_LIMIT}}), ("real", None)):
                # A stack of its own per gateway: Envoy's rendered files and log go in its folder.
                envoy_st = pe.Stack(tmp / server / name)
                stacks.append(envoy_st)
                envoy = envoy_st.envoy("mcp-gateway", keys, bundles[name], patch=patch, wait_ready=False,
                                       values={"UPSTREAM_PORT": str(port)})
                admin = envoy_st.ports["admin"]
                waits.append((f"{server} {name} gateway",
                              lambda a=admin: pe.http_get(f"http://127.0.0.1:{a}/ready")[0] == 200, envoy))
                gw.urls[name] = envoy_st.mcp_url
                gw.envoy_logs[name] = envoy.log
            out[server] = gw
        for what, check, proc in waits:
            pe.wait_until(what, check, proc)
        yield out
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        for st in stacks:
            st.stop()


# -- running a cell ---------------------------------------------------------------------------

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\b[0-9a-f]{32}\b")


def normalize(value: Any) -> Any:
    """A step result as compared: session ids and UUIDs masked, long strings as length + hash."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        if len(value) > 4096:
            return f"<{len(value)} chars sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]}>"
        return UUID.sub("<id>", value)
    return value


@dataclass
class Run:
    """What one driver process reported, per target."""

    steps: dict[str, dict[str, dict]]  # target -> step -> its line
    warnings: dict[str, list[str]]
    stderr: dict[str, list[str]]
    seconds: float


def run_cell(server: str, client: str, urls: dict[str, str], steps: list[str]) -> Run:
    """Run the driver once over every target; a driver that does not finish fails the test."""
    argv = driver_argv(client, server) + ["--steps", ",".join(steps), "--timeout", str(STEP_TIMEOUT_S)]
    for name, url in urls.items():
        argv += ["--target", f"{name}={url}"]
    budget = STEP_TIMEOUT_S * (len(steps) + 2) * len(urls)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=budget, cwd=CLIENTS_DIR,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        last = out.strip().splitlines()[-1:] or ["nothing"]
        pytest.fail(f"{client} x {server}: the driver hung past {budget}s; last line: {last[0][:300]}")
    run = Run({n: {} for n in urls}, {}, {}, time.monotonic() - t0)
    for line in proc.stdout.splitlines():
        item = json.loads(line)
        if "warnings" in item:
            run.warnings[item["target"]] = item["warnings"]
        else:
            run.steps[item["target"]][item["step"]] = item
    current = None
    for line in proc.stderr.splitlines():
        if line.startswith("== target "):
            current = line.removeprefix("== target ")
            run.stderr[current] = []
        elif line.strip():
            run.stderr.setdefault(current or "?", []).append(line)
    assert proc.returncode == 0, f"{client} x {server}: driver exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return run


def outcome(line: dict | None) -> Any:
    """A step's comparable outcome: its normalized result or error, or why it has none."""
    if line is None:
        return "missing (the driver never got to it)"
    if line.get("hang"):
        return f"HANG (no answer within {STEP_TIMEOUT_S}s)"
    if "error" in line:
        return {"error": normalize(line["error"])}
    return normalize(line.get("result"))


def intended(step: str, server: str, direct: Any) -> Any:
    """The realistic pack's intended outcome for ``step`` given the direct one."""
    if step == "list" and isinstance(direct, list):
        return [t for t in direct if t != DENIED_TOOL]
    if step == "denied":
        return {"error": {"code": -32040, "data": {"decision": "DENY", "rule": "no_environment"}}}
    if step == "delete" and isinstance(direct, dict):
        # After an allowed DELETE the session is a tombstone for Portcullis: a request naming it
        # is `missing` and gets the pack's unknown_session decision, DENY -32040 with HTTP 404
        # (the transport's "start a new session"), where the server itself says 404 or 400
        # (docs/filter.md, "Deleted").
        return {**direct, "after_delete": {"status": 404, "answer": -32040}}
    if step == "large" and server != "everything":
        # fastmcp sends the 3 MiB text twice (content and structuredContent): a message of about
        # 6.3 MB, over the default 4 MiB inspection limit: replaced, never passed unread.
        return "-32044"
    return direct


def check(server: str, client: str, run: Run, steps: list[str]) -> None:
    """Assert the bar for one cell; the message lists every difference, by target and step."""
    problems = []
    direct = run.steps["direct"]
    for target in ("allow", "real"):
        for step in steps:
            want = outcome(direct.get(step))
            got = outcome(run.steps[target].get(step))
            if target == "real":
                want = intended(step, server, want)
                if step == "denied" and isinstance(got, dict) and "error" in got:
                    # The SDKs word the message their own way ("MCP error -32040: ..."): the
                    # code and Portcullis' data are the contract, and the reason is in the text.
                    assert "the server's environment holds credentials" in got["error"].get("message", "")
                    got = {"error": {k: v for k, v in got["error"].items() if k != "message"}}
                if want == "-32044":
                    got = "-32044" if isinstance(got, dict) and got.get("error", {}).get("code") == -32044 else got
                if step == "denied" and (run.steps[target].get(step) or {}).get("ms", 0) > PROMPT_MS:
                    problems.append(f"{target}/{step}: the denial took {run.steps[target][step]['ms']} ms")
            if got != want:
                problems.append(f"{target}/{step}: direct {json.dumps(want)[:600]}\n"
                                f"    through {json.dumps(got)[:600]}")
    for target in ("direct", "allow", "real"):
        if run.warnings.get(target):
            problems.append(f"{target}: client warnings {run.warnings[target]}")
        if run.stderr.get(target):
            problems.append(f"{target}: client stderr {run.stderr[target][:10]}")
    for step in steps:
        line = direct.get(step) or {"hang": True}
        if "error" in line or line.get("hang"):  # then the comparison proves nothing
            problems.append(f"direct/{step}: the step fails without Portcullis: {json.dumps(line)[:600]}")
    assert not problems, f"{client} x {server} ({run.seconds:.1f}s):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize(("server", "client"), CELLS, ids=[f"{c}-x-{s}" for s, c in CELLS])
def test_real_client(server: str, client: str, gateways: dict[str, Gateways]) -> None:
    steps = FULL if client in SERVERS[server] else SMOKE
    run = run_cell(server, client, gateways[server].urls, steps)
    if os.environ.get("REAL_CLIENTS_DUMP"):
        print(json.dumps({t: {k: outcome(v) for k, v in s.items()} for t, s in run.steps.items()})[:20000])
    try:
        check(server, client, run, steps)
    except AssertionError as e:
        logs = "\n".join(f"--- {name} gateway, Envoy log tail:\n{tail(path)}"
                         for name, path in gateways[server].envoy_logs.items())
        raise AssertionError(f"{e}\n{logs}") from None


def tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
