"""Session records on etcd (`state.sessions: etcd`, issue 17 item 3, docs/state.md): the two
Envoys of envoy-configs/replicated and the 3-member etcd cluster of test_replicated.py, with no
identity configured (nothing is shared through a principal), and one MCP session id used through
both. Policy: testdata/policies/shared-sessions.pcl (a `session.actions` budget and a session
kill).

What holds:
- the budget trips on the call that crosses it, whichever replica gets it;
- the receipts of both access logs form one chain that `policyc receipts verify` accepts;
- a session kill on A is enforced on B;
- with every etcd member killed, a call is denied `filter:state_store`; when they return, the
  session goes on without a restart.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import portcullis_e2e as pe
from conftest import compile_or_fail
from etcd_cluster import EtcdCluster
from test_identity import Idp, Pki
from test_replicated import DENIED, Pair, Replica, decided

POLICY = pe.REPO / "testdata" / "policies" / "shared-sessions.pcl"
# The filter's view: no identity (Envoy still terminates mTLS and checks JWTs), sessions on etcd.
SHARED = {"identity": {"mtls": False},
          "state": {"backend": "etcd", "sessions": "etcd",
                    "etcd": {"cluster": "etcd", "prefix": "/portcullis/", "timeout_ms": 500}}}
READ = ("read_file", {"path": "/repo/a"})


class SessionPair(Pair):
    """A pair whose replicas may differ in their configuration (``per_replica[name]``)."""

    per_replica: dict[str, dict]

    def push(self, r: Replica, extra: dict | None = None, version: str = "1") -> Path:
        return super().push(r, {**self.per_replica.get(r.name, {}), **(extra or {})}, version)


def start_pair(stack: pe.Stack, keys: pe.Keys, bundle: Path, tmp_path: Path,
               per_replica: dict[str, dict]) -> SessionPair:
    """Two Envoys (a, b) in front of one workbench, sharing a 3-member etcd cluster."""
    pki = Pki.create(tmp_path / "pki")
    etcd = EtcdCluster.create(stack)
    stack.workbench(json_response=True)
    p = SessionPair(stack, keys, bundle, pki, Idp(), etcd, {})
    p.per_replica = per_replica
    for name in ("a", "b"):
        p.replicas.append(Replica(name, pe.free_port(), pe.free_port(), stack.dir / f"envoy-{name}"))
    for r in p.replicas:
        p.start(r)
    return p


@pytest.fixture(scope="module")
def bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_or_fail(POLICY, tmp_path_factory.mktemp("bundles") / "sessions.bundle", keys)


@pytest.fixture
def spair(stack: pe.Stack, keys: pe.Keys, bundle: Path, tmp_path: Path) -> Iterator[SessionPair]:
    try:
        yield start_pair(stack, keys, bundle, tmp_path, {"a": SHARED, "b": SHARED})
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)


def etcd_range(p: Pair, prefix: str) -> list[dict]:
    """The keys under ``prefix``, read through etcd's JSON gateway (``/v3/kv/range``)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()}).encode()
    port = p.etcd.client_ports[0]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v3/kv/range", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read()).get("kvs", [])


def chain(p: Pair, sid: str) -> list[tuple[str, dict]]:
    """(replica, receipt body) of session ``sid`` in both access logs, by seq."""
    out = [(r.name, b) for r in p.replicas for line in pe.read_jsonl(r.dir / "access.log")
           for b in pe.receipts_of(line) if b.get("session") == sid]
    return sorted(out, key=lambda x: x[1]["seq"])


def test_one_session_through_both_replicas_has_one_budget_and_one_chain(spair: SessionPair) -> None:
    with spair.agent(spair.a, "bot") as on_a, spair.agent(spair.b, "bot") as on_b:
        assert on_a.initialize().status == 200
        sid = on_b.session_id = on_a.session_id
        assert sid
        outcomes = []
        for i in range(12):
            outcomes.append(decided((on_a if i % 2 == 0 else on_b).call(*READ)))
            if outcomes[-1] != (None, None):
                break
        # `session.actions >= 6`: notifications/initialized (through A) and five calls pass;
        # the sixth call crosses it, here on B.
        assert outcomes == [(None, None)] * 5 + [(DENIED, "budget")], outcomes
        # And it holds on A too.
        assert decided(on_a.call(*READ)) == (DENIED, "budget")
    assert len(pe.tool_calls(spair.stack.upstream_requests(), "read_file")) == 5
    # The session's record in etcd carries a lease, so etcd forgets it once it is idle.
    [kv] = etcd_range(spair, "/portcullis/s/")
    assert int(kv.get("lease", 0)) != 0, kv
    # One chain: seq 1..n with no gap or repeat, sealed by both replicas.
    pe.wait_until("both access logs", lambda: len(chain(spair, sid)) >= 8, None, 10)
    receipts = chain(spair, sid)
    assert [b["seq"] for _, b in receipts] == list(range(1, len(receipts) + 1)), receipts
    assert {name for name, _ in receipts} == {"a", "b"}
    assert [b["rule"] for _, b in receipts if b.get("decision") == "DENY"] == ["budget", "budget"]
    for r in spair.replicas:
        spair.stop(r)  # Envoy flushes its access log on exit
    logs = [str(r.dir / "access.log") for r in spair.replicas]
    v = pe.policyc("receipts", "verify", *logs, "--pub", str(spair.keys.path("receipt", "pub")),
                   check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    assert sid in v.stdout, v.stdout


def test_a_session_kill_on_a_is_enforced_on_b_without_identities(spair: SessionPair) -> None:
    with spair.agent(spair.a, "bot") as on_a, spair.agent(spair.b, "bot") as on_b:
        assert on_a.initialize().status == 200
        on_b.session_id = on_a.session_id
        assert decided(on_b.call(*READ)) == (None, None)
        assert decided(on_a.call("get_secret", {"name": "db"})) == (DENIED, "secrets")
        assert decided(on_b.call(*READ)) == (DENIED, "session:killed")
        assert decided(on_a.call(*READ)) == (DENIED, "session:killed")
        # Another session of the same agent is not killed: the kill was the session's.
        with spair.agent(spair.b, "bot") as fresh:
            assert fresh.initialize().status == 200
            assert decided(fresh.call(*READ)) == (None, None)
    assert pe.tool_calls(spair.stack.upstream_requests(), "get_secret") == []


def test_every_member_killed_denies_the_session_and_it_recovers(spair: SessionPair) -> None:
    with spair.agent(spair.a, "bot") as on_a, spair.agent(spair.b, "bot") as on_b:
        assert on_a.initialize().status == 200
        on_b.session_id = on_a.session_id
        assert decided(on_b.call(*READ)) == (None, None)
        for m in spair.etcd.members:
            spair.etcd.kill(m)
        pe.wait_until("watches down", lambda: spair.watches(spair.a) == 0, None, 15)
        assert decided(on_a.call(*READ)) == (DENIED, "filter:state_store")
        assert decided(on_b.call(*READ)) == (DENIED, "filter:state_store")
        for m in spair.etcd.members:
            spair.etcd.start(m)
        for m in spair.etcd.members:
            spair.etcd.wait_healthy(m)
        pe.wait_until("watches back in sync",
                      lambda: all(spair.watches(r) >= 2 for r in spair.replicas), None, 30)
        deadline = time.monotonic() + 15
        while decided(on_a.call(*READ)) != (None, None):
            assert time.monotonic() < deadline, "the session did not recover"
            time.sleep(0.2)
        assert decided(on_b.call(*READ)) == (None, None)
    assert "state store" in spair.a.log()
    # The refused calls never reached the server: 1 before, 2 after.
    assert len(pe.tool_calls(spair.stack.upstream_requests(), "read_file")) == 3
    # The session's chain has no gap: the refusals are on the workers' anonymous chains.
    sid = on_a.session_id
    pe.wait_until("the chain", lambda: len(chain(spair, sid)) >= 4, None, 10)
    receipts = chain(spair, sid)
    assert [b["seq"] for _, b in receipts] == list(range(1, len(receipts) + 1)), receipts
