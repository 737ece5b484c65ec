"""A refused client response reaches the server as an error for its request (docs/filter.md,
"Client responses"; issue #22, item 1). Under a pack that refuses the client's answer to a
sampling request, the official Python SDK client against the fastmcp server: the tool call that
samples ends promptly with the server's error naming the denial, where before the server waited
out its own timeout. Drivers and server are the real-client matrix's (clients/, docs/clients.md).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import portcullis_e2e as pe
import test_real_clients as rc
from conftest import POLICIES, compile_or_fail

PACK = POLICIES / "no_client_responses.pcl"
PROMPT_S = 10.0


def test_a_refused_sampling_answer_fails_the_servers_call_at_once(
        stack: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    bundle = compile_or_fail(PACK, tmp_path / "no-responses.bundle", keys)
    server, port = rc.start_server(stack, "fastmcp-sse")
    pe.wait_until("the fastmcp server", lambda: rc.listening(port), server, 60)
    stack.envoy("mcp-gateway", keys, bundle, values={"UPSTREAM_PORT": str(port)})
    argv = rc.driver_argv("py-legacy", "fastmcp-sse") + [
        "--steps", "call,sampling", "--timeout", str(rc.STEP_TIMEOUT_S), "--target", f"gw={stack.mcp_url}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=rc.CLIENTS_DIR,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {item["step"]: item for item in map(json.loads, proc.stdout.splitlines()) if "step" in item}
    assert "result" in steps["call"], steps["call"]  # the gateway serves the session
    sampling = steps["sampling"]
    assert not sampling.get("hang"), f"the server's call hung: {sampling}"
    assert sampling["ms"] < PROMPT_S * 1000, sampling
    text = json.dumps(sampling)
    # The tool's failure carries the filter's error for the sampling request.
    assert "-32040" in text or "denied" in text, text
    assert "error" in sampling or "isError" in text, text
    stack.stop()
    log = stack.access_log()
    refused = [line for line in log if line.get("decision") == "DENY" and line.get("upstream_host")]
    assert refused, f"the refused answer is logged as a DENY that reached the server: {log}"
