"""Two Envoy workers, one session. Every other e2e test runs one worker; Istio sidecars run two.
Each request here comes on a new connection, and the admin's per-worker connection counters say
which worker took it. A session's state lives in Envoy's shared data, so what one worker decided
holds on the other: a kill, and an approval token already used. The session's receipts stay one
chain (compare-and-swap on the session record), which verifies offline. Policy:
examples/policies/demo."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import portcullis_e2e as pe
from raw import RawMcp, Reply

WORKERS = 2
# A request lands on either worker about evenly; 24 tries all on one worker: odds 2^-24.
TRIES = 24


def _connections_per_worker(stack: pe.Stack) -> list[int]:
    """``listener.<MCP listener>.worker_N.downstream_cx_total`` for N = 0..WORKERS-1."""
    status, body = pe.http_get(f"http://127.0.0.1:{stack.ports['admin']}/stats?filter=downstream_cx_total")
    assert status == 200, body
    counts = [0] * WORKERS
    pattern = re.compile(rf"^listener\.127\.0\.0\.1_{stack.ports['envoy']}\.worker_(\d+)\.downstream_cx_total: (\d+)$")
    for line in body.decode().splitlines():
        m = pattern.match(line)
        if m:
            counts[int(m.group(1))] = int(m.group(2))
    return counts


class Tracked:
    """A raw MCP session on fresh connections that notes which worker took each request."""

    def __init__(self, stack: pe.Stack) -> None:
        self.stack = stack
        self.mcp = RawMcp(stack.mcp_url, fresh_connections=True)

    def send(self, request: Callable[[RawMcp], Reply]) -> tuple[Reply, int]:
        before = _connections_per_worker(self.stack)
        reply = request(self.mcp)
        after = _connections_per_worker(self.stack)
        grew = [w for w in range(WORKERS) if after[w] > before[w]]
        assert len(grew) == 1, (before, after)
        return reply, grew[0]

    def call(self, tool: str, args: dict[str, Any], extra: dict[str, str] | None = None) -> tuple[Reply, int]:
        return self.send(lambda m: m.call(tool, args, extra))


def test_one_session_over_two_workers_keeps_its_state_and_one_chain(stack: pe.Stack, keys: pe.Keys,
                                                                     demo_bundle: Path) -> None:
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle, concurrency=WORKERS)
    s = Tracked(stack)
    s.mcp.initialize()  # two requests (initialize, notifications/initialized): not tracked
    sid = s.mcp.session_id
    assert sid

    # Reads until both workers have served the session.
    served: set[int] = set()
    for _ in range(TRIES):
        r, w = s.call("read_file", {"path": "/repo/README.md"})
        assert (r.status, r.decided) == (200, ("ALLOW", "read_repo")), r.text
        served.add(w)
        if served == set(range(WORKERS)):
            break
    assert served == set(range(WORKERS)), "every request went to one worker"

    # An approval token is single-use on every worker.
    args = {"env": "production", "version": "v2.4.1"}
    first, _ = s.call("deploy", args)
    assert first.decided == ("STEP_UP", "production_deploy"), first.text
    req = first.message["error"]["data"]["approval_request"]
    token = pe.policyc("approve", "--digest", req["digest"], "--group", req["group"],
                       "--key", str(keys.path("approver", "key")), "--ttl", "15m").stdout.strip()
    approved, used_on = s.call("deploy", args, {"x-portcullis-approval": token})
    assert approved.status == 200 and approved.decided[0] == "ALLOW", approved.text
    replays: set[int] = set()
    for _ in range(TRIES):
        again, w = s.call("deploy", args, {"x-portcullis-approval": token})
        assert again.decided[0] != "ALLOW", f"replayed token accepted on worker {w}: {again.text}"
        replays.add(w)
        if used_on ^ 1 in replays:
            break
    assert used_on ^ 1 in replays, "no replay reached the other worker"

    # Untrusted content taints the session; secret access then kills it, on whichever worker.
    r, _ = s.call("fetch_url", {"url": "https://docs.example/x"})
    assert r.decided[0] == "ALLOW", r.text
    r, killed_on = s.call("get_secret", {"name": "prod-db"})
    assert r.decided == ("DENY", "secret_after_untrusted"), r.text
    after_kill: set[int] = set()
    for _ in range(TRIES):
        r, w = s.call("read_file", {"path": "/repo/README.md"})
        assert r.decided == ("DENY", "session:killed"), f"worker {w} let a killed session act: {r.text}"
        after_kill.add(w)
        if killed_on ^ 1 in after_kill:
            break
    assert killed_on ^ 1 in after_kill, "no request after the kill reached the other worker"
    s.mcp.close()

    # Both workers wrote into one chain: it verifies, as one session, with no gap or fork.
    stack.wait_attested()
    log = stack.files["access_log"]
    stack.stop()
    ok = pe.policyc("receipts", "verify", str(log), str(stack.checkpoint_receipts()),
                    "--pub", str(keys.path("receipt", "pub")), "--format", "json", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    [chain] = [c for c in report["sessions"] if c["session"] == sid]
    assert chain["first_seq"] == 1 and chain["receipts"] == chain["last_seq"] == chain["attested_through"], chain
    tool_calls = [line for line in pe.read_jsonl(log)
                  if line.get("session") == sid and line.get("rule") != "protocol_messages"]
    assert chain["receipts"] >= len(tool_calls) >= 6, (chain, len(tool_calls))
