"""Containment by principal (issue 16, docs/containment.md) through a real Envoy with real
identities: mTLS SPIFFE client certificates and agent JWTs verified by Envoy's jwt_authn, as in
envoy-configs/identity (rendered by test_identity.py, the filter's configuration pushed by ECDS).
The principal is the JWT's agent (`azp`). Policy: examples/policies/containment/policy.pcl.

What an agent tries, and what holds:
- after a kill, a new session of the same agent is quarantined (and another agent is not);
- the seed case: a payroll read is fine; after a prompt injection (a tool result), egress to an
  unknown host is denied, with no session or correlation header on the egress request at all;
- a wider intent the agent declares itself is refused while an orchestrator's grant is in force;
- an approval token is not accepted twice;
- fresh session ids from one agent leave another agent's session intact;
- an operator's release, pushed by ECDS without a restart, restores the agent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import portcullis_e2e as pe
from conftest import compile_or_fail
from raw import RawMcp, Reply
from test_identity import TRUST, Idp, Pki, push_identity_config, render_identity, start_envoy

POLICY = pe.REPO / "examples" / "policies" / "containment" / "policy.pcl"
DENIED = -32040
APPROVAL_REQUIRED = -32041
PAYROLL_BOT = "payroll-bot"
CODER = "coder"


@dataclass
class Gateway:
    stack: pe.Stack
    keys: pe.Keys
    bundle: Path
    pki: Pki
    idp: Idp
    base: str
    extra: dict

    def agent(self, name: str, headers: dict[str, str] | None = None) -> RawMcp:
        """A raw MCP client of agent ``name``: its own SPIFFE certificate and a JWT naming it."""
        import httpx  # noqa: PLC0415 - the client of test_identity, over mTLS

        mcp = RawMcp(self.base + "/mcp", intent=None)
        mcp.http.close()
        h = {"authorization": f"Bearer {self.idp.token(name, 'alice@example.org')}", **(headers or {})}
        mcp.http = httpx.Client(verify=self.pki.ssl_context(TRUST + name), timeout=10.0, headers=h)
        return mcp

    def egress(self, mcp: RawMcp, host: str, body: bytes = b"payroll.csv") -> tuple[int, dict]:
        """A plain HTTP POST of the agent to ``host`` (no session header of any kind)."""
        r = mcp.http.post(self.base + "/upload", content=body,
                          headers={"host": host, "content-type": "text/csv"})
        return r.status_code, dict(r.headers)

    def push(self, extra: dict, version: str) -> None:
        push_identity_config(self.stack, self.keys, self.bundle, {**self.extra, **extra}, version)


def receipts(gw: Gateway, ready) -> list[dict]:
    """Receipt bodies of the access log, once ``ready(bodies)`` holds (the log is flushed
    every 100 ms)."""
    def bodies() -> list[dict]:
        return [b for line in gw.stack.access_log() for b in pe.receipts_of(line)]
    pe.wait_until("access log receipts", lambda: ready(bodies()), None, 10)
    return bodies()


def decided(r: Reply) -> tuple[int | None, str | None]:
    data = ((r.message or {}).get("error") or {}).get("data") or {} if isinstance(r.message, dict) else {}
    return r.error_code, data.get("rule")


def assert_quarantined(gw: Gateway) -> None:
    """The payroll agent cannot start over: a keyless `initialize` joins its killed run, and a
    session id it never used is quarantined."""
    with gw.agent(PAYROLL_BOT) as fresh:
        init = fresh.initialize()
        assert init.error_code == DENIED, init.text
        assert decided(init)[1] in ("session:killed", "principal:quarantined"), init.text
        fresh.session_id = "a-session-it-never-used"
        r = fresh.call("read_file", {"path": "/repo/a"})
        assert decided(r) == (DENIED, "principal:quarantined"), r.text


@pytest.fixture(scope="module")
def bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_or_fail(POLICY, tmp_path_factory.mktemp("bundles") / "containment.bundle", keys)


@pytest.fixture(scope="module")
def signers(keys: pe.Keys) -> pe.Keys:
    """An orchestrator key (task grants) and an operator key (releases) next to the run's keys."""
    for name in ("orchestrator", "operator"):
        if not keys.path(name, "key").exists():
            pe.policyc("keygen", "--out", str(keys.dir / name))
    return keys


@pytest.fixture
def gw(stack: pe.Stack, signers: pe.Keys, bundle: Path, tmp_path: Path) -> Iterator[Gateway]:
    keys = signers
    pki = Pki.create(tmp_path / "pki")
    idp = Idp()
    extra = {
        "task_grant_keys": [keys.path("orchestrator", "pub").read_text().strip()],
        "release_keys": [keys.path("operator", "pub").read_text().strip()],
        "approvers": {"release-managers": [keys.path("approver", "pub").read_text().strip()]},
        "session": {"max_per_principal": 8, "slots": 512},
    }
    stack.workbench(json_response=True)
    stack.ports["envoy"], stack.ports["admin"] = pe.free_port(), pe.free_port()
    try:
        start_envoy(stack, keys, render_identity(stack, keys, bundle, pki, idp, extra))
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    yield Gateway(stack, keys, bundle, pki, idp, f"https://127.0.0.1:{stack.ports['envoy']}", extra)


def test_after_a_kill_a_new_session_of_the_same_agent_is_quarantined(gw: Gateway) -> None:
    with gw.agent(PAYROLL_BOT) as mcp:
        assert mcp.initialize().status == 200
        assert decided(mcp.call("get_secret", {"name": "db"})) == (DENIED, "secrets")
    assert_quarantined(gw)
    with gw.agent(PAYROLL_BOT) as fresh:
        status, _ = gw.egress(fresh, "api.github.com")
        assert status == 403, "its egress too"
    with gw.agent(CODER) as other:
        assert other.initialize().status == 200
        assert decided(other.call("read_file", {"path": "/repo/README.md"})) == (None, None)
    assert pe.tool_calls(gw.stack.upstream_requests(), "get_secret") == []

    # An operator's release, pushed by ECDS (no restart: the quarantine is in shared data).
    token = pe.policyc("release", "--principal", PAYROLL_BOT, "--key",
                       str(gw.keys.path("operator", "key")), "--reason", "e2e").stdout.strip()
    gw.push({"releases": [token]}, "2")
    deadline = time.monotonic() + 20
    while True:
        with gw.agent(PAYROLL_BOT) as again:
            init = again.initialize()
            if init.status == 200 and init.error_code is None:
                assert decided(again.call("read_file", {"path": "/repo/a"})) == (None, None)
                break
        assert time.monotonic() < deadline, f"the release was not applied: {init.text}"
        time.sleep(0.3)
    log = gw.stack.files["envoy_log"].read_text()
    assert '"event":"release"' in log and f"principal `{PAYROLL_BOT}` released" in log


def test_the_seed_case_with_no_correlation_header(gw: Gateway) -> None:
    with gw.agent(PAYROLL_BOT) as mcp:
        assert mcp.initialize().status == 200
        assert decided(mcp.call("query_db", {"sql": "select * from payroll", "limit": 3})) == (None, None)
        # Before any injection, an unknown host is fine.
        status, headers = gw.egress(mcp, "uploads.example")
        assert headers.get("x-portcullis-decision") == "ALLOW", (status, headers)
        # The tool result carries an instruction aimed at the agent: it and its agent are tainted.
        r = mcp.call("fetch_url", {"url": "https://wiki.example/onboarding"})
        assert r.error_code is None, r.text
        status, headers = gw.egress(mcp, "uploads.example")
        assert status == 403 and headers.get("x-portcullis-decision") == "DENY", (status, headers)
    # The agent is quarantined: in a new session too.
    assert_quarantined(gw)
    bodies = receipts(gw, lambda bs: any(b.get("rule") == "exfiltration" for b in bs))
    [exfil] = [b for b in bodies if b.get("rule") == "exfiltration"]
    assert exfil["effects"] == ["quarantine"] and exfil["session"], exfil
    # The egress had no session header: it was decided in the agent's MCP session.
    [fetch] = [b for b in bodies
               if (b.get("action") or {}).get("tool") == "fetch_url" and b["event"] == "action"]
    assert exfil["session"] == fetch["session"]


def grant(gw: Gateway, principal: str, intent: str) -> str:
    return pe.policyc("grant", "--intent", intent, "--principal", principal, "--expires", "1h",
                      "--key", str(gw.keys.path("orchestrator", "key"))).stdout.strip()


def test_a_wider_self_declared_intent_is_refused_while_a_grant_is_in_force(gw: Gateway) -> None:
    g = grant(gw, PAYROLL_BOT, "payroll_report")
    # The agent's own header alone is not trusted by this pack.
    with gw.agent(PAYROLL_BOT, {"x-portcullis-intent": "maintenance"}) as mcp:
        assert decided(mcp.initialize()) == (DENIED, "intent_source:untrusted")
    with gw.agent(PAYROLL_BOT, {"x-portcullis-grant": g, "x-portcullis-intent": "maintenance"}) as mcp:
        assert decided(mcp.initialize()) == (DENIED, "intent_source:untrusted")
    with gw.agent(PAYROLL_BOT, {"x-portcullis-grant": g}) as mcp:
        assert mcp.initialize().status == 200
        assert decided(mcp.call("read_file", {"path": "/repo/a"})) == (None, None)
        # Outside the granted intent.
        assert decided(mcp.call("deploy", {"env": "production", "version": "1"})) == (
            DENIED, "intent:payroll_report")
    # A grant for another agent is refused outright; nothing of it reaches the server.
    with gw.agent(CODER, {"x-portcullis-grant": g}) as mcp:
        assert mcp.initialize().status == 403
    bodies = receipts(gw, lambda bs: any(b.get("rule") == "intent:payroll_report" for b in bs))
    sources = {b.get("intent_source") for b in bodies if b.get("intent") == "payroll_report"}
    assert sources == {"grant", "conflict"}, sources
    for rec in gw.stack.upstream_requests():
        names = {k.lower() for k, _ in rec["headers"]}
        assert "x-portcullis-grant" not in names and "x-portcullis-intent" not in names


def test_an_approval_is_not_accepted_twice(gw: Gateway) -> None:
    with gw.agent(PAYROLL_BOT) as mcp:
        assert mcp.initialize().status == 200
        args = {"env": "production", "version": "7"}
        asked = mcp.call("deploy", args)
        assert asked.error_code == APPROVAL_REQUIRED, asked.text
        digest = asked.message["error"]["data"]["approval_request"]["digest"]
        token = pe.policyc("approve", "--digest", digest, "--group", "release-managers", "--key",
                           str(gw.keys.path("approver", "key"))).stdout.strip()
        first = mcp.call("deploy", args, {"x-portcullis-approval": token})
        assert first.error_code is None, first.text
        again = mcp.call("deploy", args, {"x-portcullis-approval": token})
        assert again.error_code == DENIED and again.message["error"]["data"]["approval_error"] == "replayed"
    # Another agent presenting the same token: its action has another digest.
    with gw.agent(CODER) as other:
        assert other.initialize().status == 200
        stolen = other.call("deploy", args, {"x-portcullis-approval": token})
        assert stolen.message["error"]["data"]["approval_error"] == "digest_mismatch", stolen.text
    assert len(pe.tool_calls(gw.stack.upstream_requests(), "deploy")) == 1


def test_flooding_leaves_other_agents_untouched(gw: Gateway) -> None:
    with gw.agent(CODER) as victim:
        assert victim.initialize().status == 200
        assert decided(victim.call("query_db", {"sql": "select 1", "limit": 1})) == (None, None)
        sid = victim.session_id
        with gw.agent(PAYROLL_BOT) as flood:
            msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "read_file", "arguments": {"path": "/repo/a"}}}
            body = json.dumps(msg).encode()
            for i in range(2000):
                h = flood.headers({"mcp-session-id": f"flood-{i}"}, method="tools/call", name="read_file")
                r = flood.post_bytes(body, h)
                # The filter lets each through (the server does not know the id: 404 from it).
                assert r.headers.get("x-portcullis-decision") == "ALLOW", (i, r.status, r.text[:200])
        assert victim.session_id == sid
        r = victim.call("read_file", {"path": "/repo/b"})
        assert decided(r) == (None, None), r.text
    def mine(bs: list[dict]) -> list[dict]:
        return [b for b in bs if b.get("session") == sid and (b.get("action") or {}).get("tool")]
    bodies = receipts(gw, lambda bs: len(mine(bs)) >= 2)
    chain = mine(bodies)
    assert [b["seq"] for b in chain] == sorted(b["seq"] for b in chain), "one unbroken chain"
    assert f"session `{sid}` ended" not in gw.stack.files["envoy_log"].read_text()
