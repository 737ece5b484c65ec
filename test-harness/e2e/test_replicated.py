"""One state across replicas and restarts (issue 17, docs/state.md): two Envoys (A and B,
envoy-configs/replicated) in front of the same MCP server, sharing a real 3-member etcd cluster
on loopback. Identities as in envoy-configs/identity (mTLS SPIFFE workloads, agent JWTs); policy:
examples/policies/containment/policy.pcl.

What holds:
- a quarantine decided on A is enforced on B (and how long it takes: p50/p99, printed and written
  to the run's dir as propagation.json);
- an approval token used on A is refused on B;
- after both Envoys restart, the quarantine still holds;
- one etcd member killed changes nothing;
- every member killed: a principal the cache does not know and an approval are denied
  (`filter:state_store`), a known one is decided on the cache, a kill made meanwhile still
  holds locally; when the members return, the filter recovers without a restart and the kill
  reaches the other replica.
"""

from __future__ import annotations

import json
import os
import statistics
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import portcullis_e2e as pe
from conftest import compile_or_fail
from etcd_cluster import EtcdCluster
from raw import RawMcp, Reply
from test_identity import TRUST, Idp, Pki

CONFIG = pe.REPO / "envoy-configs" / "replicated"
POLICY = pe.REPO / "examples" / "policies" / "containment" / "policy.pcl"
DENIED = -32040
APPROVAL_REQUIRED = -32041
# Agents killed on A while B is watched, for the propagation figures (a smoke in CI; raise it
# for BENCHMARKS.md).
PROPAGATION_SAMPLES = int(os.environ.get("PORTCULLIS_PROPAGATION_SAMPLES", "20"))


def decided(r: Reply) -> tuple[int | None, str | None]:
    data = ((r.message or {}).get("error") or {}).get("data") or {} if isinstance(r.message, dict) else {}
    return r.error_code, data.get("rule")


@dataclass
class Replica:
    name: str
    port: int
    admin: int
    dir: Path
    proc: pe.Proc | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace") if self.proc else ""


@dataclass
class Pair:
    stack: pe.Stack
    keys: pe.Keys
    bundle: Path
    pki: Pki
    idp: Idp
    etcd: EtcdCluster
    extra: dict
    replicas: list[Replica] = field(default_factory=list)

    @property
    def a(self) -> Replica:
        return self.replicas[0]

    @property
    def b(self) -> Replica:
        return self.replicas[1]

    def agent(self, r: Replica, name: str, headers: dict[str, str] | None = None) -> RawMcp:
        mcp = RawMcp(r.base + "/mcp", intent=None)
        mcp.http.close()
        # One service name in front of both replicas, as a Kubernetes Service gives them: the
        # action's target (in an approval's digest) is the same whichever replica serves it.
        h = {"authorization": f"Bearer {self.idp.token(name, 'alice@example.org')}",
             "host": "mcp-gateway.example", **(headers or {})}
        mcp.http = httpx.Client(verify=self.pki.ssl_context(TRUST + name), timeout=10.0, headers=h)
        return mcp

    def push(self, r: Replica, extra: dict | None = None, version: str = "1") -> Path:
        """Write (or replace: Envoy applies it without a restart) replica ``r``'s ECDS file."""
        subst = pe.render.substitutions(str(self.bundle), str(self.keys.path("bundle", "pub")), None)
        cfg = {**json.loads((CONFIG / "plugin-config.json").read_text()), **self.extra, **(extra or {})}
        text = json.dumps(pe.render._fill(cfg, subst), separators=(",", ":"))
        ecds = r.dir / "ecds" / "portcullis.yaml"
        pe.render.write_atomic(ecds, pe.render.ecds_document(
            text, {"WASM": str(pe.WASM), "FAILURE_POLICY": "FAIL_CLOSED"}, version))
        return ecds

    def render(self, r: Replica) -> Path:
        r.dir.mkdir(parents=True, exist_ok=True)
        ecds = self.push(r)
        ports = self.etcd.client_ports
        values = {
            "NODE_ID": f"portcullis-{r.name}", "ADMIN_PORT": str(r.admin), "LISTEN_PORT": str(r.port),
            "SERVER_CERT": str(self.pki.server_cert), "SERVER_KEY": str(self.pki.server_key),
            "CLIENT_CA": str(self.pki.ca_cert), "ACCESS_LOG": str(r.dir / "access.log"),
            "JWKS": json.dumps(self.idp.jwks()), "ECDS_PATH": str(ecds), "ECDS_DIR": str(ecds.parent),
            "UPSTREAM_PORT": str(self.stack.ports["workbench"]),
            "ETCD_PORT_1": str(ports[0]), "ETCD_PORT_2": str(ports[1]), "ETCD_PORT_3": str(ports[2]),
        }
        out = r.dir / "envoy.yaml"
        out.write_text(string.Template((CONFIG / "envoy.yaml.tmpl").read_text()).substitute(values))
        return out

    def start(self, r: Replica) -> None:
        argv = [pe.envoy_binary(), "-c", str(self.render(r)), "--concurrency", "2",
                "--disable-hot-restart", "--log-level", "warning", "--file-flush-interval-msec", "100",
                "--component-log-level", "wasm:info", "--base-id", str(r.admin)]
        r.proc = self.stack.start(f"envoy-{r.name}", argv,
                                  {"PORTCULLIS_SIGNING_KEY": self.keys.secret_line("receipt")})
        pe.wait_until(f"envoy {r.name} /ready",
                      lambda: pe.http_get(f"http://127.0.0.1:{r.admin}/ready")[0] == 200, r.proc)
        # Both workers read etcd and hold a watch.
        pe.wait_until(f"envoy {r.name} in sync with etcd", lambda: self.watches(r) >= 2, r.proc, 30)

    def stop(self, r: Replica) -> None:
        if r.proc is not None:
            r.proc.stop()
            r.proc = None

    def watches(self, r: Replica) -> int:
        status, body = pe.http_get(f"http://127.0.0.1:{r.admin}/stats?filter=portcullis_state_store_watches")
        if status != 200:
            return 0
        for line in body.decode().splitlines():
            if line.strip().endswith("portcullis_state_store_watches: 0"):
                return 0
            if "portcullis_state_store_watches:" in line:
                return int(line.rsplit(":", 1)[1])
        return 0


@pytest.fixture(scope="module")
def bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_or_fail(POLICY, tmp_path_factory.mktemp("bundles") / "replicated.bundle", keys)


@pytest.fixture
def pair(stack: pe.Stack, keys: pe.Keys, bundle: Path, tmp_path: Path) -> Iterator[Pair]:
    pki = Pki.create(tmp_path / "pki")
    try:
        etcd = EtcdCluster.create(stack)
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    if not keys.path("operator", "key").exists():
        pe.policyc("keygen", "--out", str(keys.dir / "operator"))
    extra = {"approvers": {"release-managers": [keys.path("approver", "pub").read_text().strip()]},
             "release_keys": [keys.path("operator", "pub").read_text().strip()]}
    stack.workbench(json_response=True)
    p = Pair(stack, keys, bundle, pki, Idp(), etcd, extra)
    for name in ("a", "b"):
        p.replicas.append(Replica(name, pe.free_port(), pe.free_port(), stack.dir / f"envoy-{name}"))
    try:
        for r in p.replicas:
            p.start(r)
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    yield p


def kill_on(p: Pair, r: Replica, agent: str) -> tuple[float, float]:
    """The agent asks for a secret on replica ``r``: killed, and its principal quarantined.
    Returns how long two answers of A's own took (s): a step-up (no call-out) and the kill (which
    waits for etcd to have the quarantine)."""
    with p.agent(r, agent) as mcp:
        assert mcp.initialize().status == 200
        t0 = time.monotonic()
        assert mcp.call("deploy", {"env": "production", "version": "1"}).error_code == APPROVAL_REQUIRED
        t1 = time.monotonic()
        assert decided(mcp.call("get_secret", {"name": "db"})) == (DENIED, "secrets")
        return t1 - t0, time.monotonic() - t1


def quarantined_on(p: Pair, r: Replica, agent: str) -> Reply:
    with p.agent(r, agent) as mcp:
        mcp.session_id = "a-session-it-never-used"
        return mcp.call("read_file", {"path": "/repo/a"})


def test_a_quarantine_decided_on_one_replica_is_enforced_on_the_other(pair: Pair) -> None:
    delays: list[float] = []
    reads: list[float] = []
    kills: list[float] = []
    for i in range(PROPAGATION_SAMPLES):
        agent = f"agent-{i}"
        with pair.agent(pair.b, agent) as on_b:
            assert on_b.initialize().status == 200
            assert decided(on_b.call("read_file", {"path": "/repo/a"})) == (None, None)
            read, kill = kill_on(pair, pair.a, agent)
            reads.append(read)
            kills.append(kill)
            # A answered after etcd had the quarantine: from here, B's watch delivers it.
            t0 = time.monotonic()
            while True:
                r = on_b.call("read_file", {"path": "/repo/a"})
                if decided(r) == (DENIED, "principal:quarantined"):
                    delays.append(time.monotonic() - t0)
                    break
                assert decided(r) == (None, None), r.text
                assert time.monotonic() - t0 < 5, "the quarantine did not reach B in 5 s"
    assert pe.tool_calls(pair.stack.upstream_requests(), "get_secret") == []
    ms = sorted(d * 1000 for d in delays)
    figures = {"samples": len(ms), "p50_ms": statistics.median(ms),
               "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))], "max_ms": ms[-1],
               # The same agent on A, same run: a step-up answered by A (no call-out) and the kill
               # (its quarantine written to etcd before the answer).
               "step_up_p50_ms": statistics.median(reads) * 1000,
               "kill_p50_ms": statistics.median(kills) * 1000}
    (pair.stack.dir / "propagation.json").write_text(json.dumps(figures))
    print(f"\nquarantine propagation A -> B: {figures}")
    # Another agent is untouched on both.
    with pair.agent(pair.b, "coder") as other:
        assert other.initialize().status == 200


def test_a_token_used_on_one_replica_is_refused_on_the_other(pair: Pair) -> None:
    args = {"env": "production", "version": "7"}
    with pair.agent(pair.a, "payroll-bot") as on_a:
        assert on_a.initialize().status == 200
        asked = on_a.call("deploy", args)
        assert asked.error_code == APPROVAL_REQUIRED, asked.text
        digest = asked.message["error"]["data"]["approval_request"]["digest"]
        token = pe.policyc("approve", "--digest", digest, "--group", "release-managers", "--key",
                           str(pair.keys.path("approver", "key"))).stdout.strip()
        assert on_a.call("deploy", args, {"x-portcullis-approval": token}).error_code is None
        # The same agent, the same MCP session (the server knows it), on the other replica: the
        # action's digest is the same, and B's own record never saw the token.
        with pair.agent(pair.b, "payroll-bot") as on_b:
            on_b.session_id = on_a.session_id
            again = on_b.call("deploy", args, {"x-portcullis-approval": token})
            assert again.error_code == DENIED, again.text
            assert again.message["error"]["data"]["approval_error"] == "replayed", again.text
    assert len(pe.tool_calls(pair.stack.upstream_requests(), "deploy")) == 1
    # B's chain says what happened: the decision it sealed, then the refusal that replaced it.
    def events() -> list[str]:
        lines = pe.read_jsonl(pair.b.dir / "access.log")
        return [b.get("event") for line in lines for b in pe.receipts_of(line)]
    pe.wait_until("B's state_store receipt", lambda: "state_store" in events(), None, 5)


def test_after_both_envoys_restart_the_quarantine_holds(pair: Pair) -> None:
    kill_on(pair, pair.a, "payroll-bot")
    for r in pair.replicas:
        pair.stop(r)
    for r in pair.replicas:
        pair.start(r)
    for r in pair.replicas:
        assert decided(quarantined_on(pair, r, "payroll-bot")) == (DENIED, "principal:quarantined")
    with pair.agent(pair.b, "coder") as other:
        assert other.initialize().status == 200


def test_a_release_pushed_to_one_replica_lifts_the_quarantine_on_both(pair: Pair) -> None:
    kill_on(pair, pair.a, "payroll-bot")
    pe.wait_until("quarantine on B",
                  lambda: decided(quarantined_on(pair, pair.b, "payroll-bot"))
                  == (DENIED, "principal:quarantined"), None, 5)
    time.sleep(1.1)  # a release lifts quarantines imposed before its second
    token = pe.policyc("release", "--principal", "payroll-bot", "--key",
                       str(pair.keys.path("operator", "key")), "--reason", "e2e").stdout.strip()
    # Only A's configuration carries it; B learns it from etcd, and checks its signature.
    pair.push(pair.a, {"releases": [token]}, "2")

    def served(r: Replica) -> bool:
        with pair.agent(r, "payroll-bot") as mcp:
            init = mcp.initialize()
            return init.status == 200 and init.error_code is None
    pe.wait_until("the release on A", lambda: served(pair.a), None, 20)
    pe.wait_until("the release on B, from etcd", lambda: served(pair.b), None, 10)


def test_one_etcd_member_killed_changes_nothing(pair: Pair) -> None:
    pair.etcd.kill(pair.etcd.members[0])
    # Envoy's health check takes it out of rotation; a watch on it moves to another member.
    time.sleep(2.0)
    pe.wait_until("watches back in sync", lambda: all(pair.watches(r) >= 2 for r in pair.replicas),
                  None, 15)
    kill_on(pair, pair.a, "payroll-bot")
    pe.wait_until("quarantine on B",
                  lambda: decided(quarantined_on(pair, pair.b, "payroll-bot"))
                  == (DENIED, "principal:quarantined"), None, 5)
    with pair.agent(pair.b, "coder") as other:
        assert other.initialize().status == 200


def test_every_member_killed_fails_closed_and_recovers(pair: Pair) -> None:
    with pair.agent(pair.a, "coder") as known:
        assert known.initialize().status == 200
        for m in pair.etcd.members:
            pair.etcd.kill(m)
        pe.wait_until("watches down", lambda: pair.watches(pair.a) == 0, None, 15)
        # A principal A's cache knows is decided on the cache.
        assert decided(known.call("read_file", {"path": "/repo/a"})) == (None, None)
        # One it does not know may be quarantined elsewhere: denied.
        with pair.agent(pair.a, "stranger") as stranger:
            assert decided(stranger.initialize()) == (DENIED, "filter:state_store")
        # A kill still holds on A (the quarantine is local, and waits in the outbox).
        assert decided(known.call("get_secret", {"name": "db"})) == (DENIED, "secrets")
        assert decided(quarantined_on(pair, pair.a, "coder")) == (DENIED, "principal:quarantined")
    for m in pair.etcd.members:
        pair.etcd.start(m)
    for m in pair.etcd.members:
        pair.etcd.wait_healthy(m)
    # Recovered without a restart: in sync again, a new principal is served, and the kill made
    # during the outage reached B from A's outbox.
    pe.wait_until("watches back in sync", lambda: all(pair.watches(r) >= 2 for r in pair.replicas),
                  None, 30)
    with pair.agent(pair.a, "stranger") as stranger:
        assert stranger.initialize().status == 200
    pe.wait_until("the outage's kill on B",
                  lambda: decided(quarantined_on(pair, pair.b, "coder"))
                  == (DENIED, "principal:quarantined"), None, 10)
    assert "state store" in pair.a.log()
