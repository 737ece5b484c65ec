"""Least-privilege credentials per action (docs/credentials.md, AARM R9) against a real Envoy:
envoy-configs/credentials (jwt_authn verifying the agent's JWT, Portcullis, the egress router),
examples/policies/credentials, the test STS speaking RFC 8693 (sts_server.py) and a destination
that checks the minted token's audience and scope (credential_destination.py).

- the agent's own credential headers never reach a destination;
- a read gets a read-scoped token, and that token cannot write (the destination refuses it);
- a write gets a write-scoped token; the cache spares a second exchange;
- the STS down, or no verified JWT: DENY by `filter:credential`;
- the receipts carry the credential's id, audience and scope, and no log holds a token.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

import credentials_stack as cs
import portcullis_e2e as pe
from conftest import compile_or_fail
from credentials_stack import TICKETS, Idp

POLICY = cs.POLICY
RUN = {"x-agent-run": "credentials-run-1"}


@dataclass
class Proxy:
    stack: pe.Stack
    idp: Idp
    client: httpx.Client
    sts: pe.Proc

    def send(self, method: str, url: str, agent: str | None = "agent-1", **headers: str) -> httpx.Response:
        h = {**RUN, **headers}
        if agent:
            h["authorization"] = f"Bearer {self.idp.token(agent)}"
        return self.client.request(method, url, headers=h)

    def destination(self) -> list[dict]:
        return self.stack.upstream_requests("destination")

    def exchanges(self) -> list[dict]:
        return self.stack.upstream_requests("sts")

    def lines(self, n: int) -> list[dict]:
        return self.stack.wait_access_log(n)


@pytest.fixture(scope="module")
def credentials_bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_or_fail(POLICY, tmp_path_factory.mktemp("bundles") / "credentials.bundle", keys)


@pytest.fixture
def proxy(stack: pe.Stack, keys: pe.Keys, credentials_bundle: Path) -> Iterator[Proxy]:
    idp, sts = cs.start(stack, keys, credentials_bundle)
    with httpx.Client(proxy=f"http://127.0.0.1:{stack.ports['envoy']}", timeout=10) as client:
        yield Proxy(stack, idp, client, sts)


def bearer_of(rec: dict) -> str | None:
    v = pe.header(rec, "authorization")
    return v.removeprefix("Bearer ") if v else None


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_the_agents_own_credentials_never_reach_a_destination(proxy: Proxy) -> None:
    r = proxy.send("GET", "http://docs.example.com/guide", cookie="sid=agent-session",
                   **{"x-api-key": "k-123", "x-goog-api-key": "g-456", "proxy-authorization": "Basic cDpx"})
    assert r.status_code == 200, r.text
    assert r.headers.get("x-portcullis-decision") == "ALLOW"
    [rec] = proxy.destination()
    for h in ("authorization", "cookie", "x-api-key", "x-goog-api-key", "proxy-authorization"):
        assert pe.header(rec, h) is None, f"{h} reached the destination"
    assert proxy.exchanges() == [], "an ALLOW mints nothing"


def test_a_read_gets_a_read_token_that_cannot_write(proxy: Proxy) -> None:
    agent_token = proxy.idp.token("agent-1")
    r = proxy.send("GET", f"http://{TICKETS}/tickets/1")
    assert r.status_code == 200, r.text
    assert r.headers.get("x-portcullis-decision") == "MODIFY"
    assert r.json()["scope"] == "tickets.read"
    [rec] = proxy.destination()
    token = bearer_of(rec)
    assert token and token != agent_token
    c = claims(token)
    assert (c["aud"], c["scope"], c["sub"], c["act"]) == (TICKETS, "tickets.read", "agent-1", {"sub": "portcullis"})
    [ex] = proxy.exchanges()
    assert (ex["status"], ex["audience"], ex["scope"], ex["sub"]) == (200, TICKETS, "tickets.read", "agent-1")
    # AARM R9: the read's credential cannot write. Replayed straight at the destination, a POST
    # with it is refused for its scope.
    port = proxy.stack.ports["destination"]
    w = httpx.post(f"http://127.0.0.1:{port}/tickets", headers={"host": TICKETS, "authorization": f"Bearer {token}"},
                   json={"title": "x"})
    assert w.status_code == 403, w.text
    assert w.json()["error"] == "insufficient_scope"


def test_a_write_gets_a_write_token_and_the_cache_spares_a_second_exchange(proxy: Proxy) -> None:
    assert proxy.send("GET", f"http://{TICKETS}/tickets/1").status_code == 200
    assert proxy.send("GET", f"http://{TICKETS}/tickets/2").status_code == 200
    assert len(proxy.exchanges()) == 1, "the second read used the cached credential"
    r = proxy.send("POST", f"http://{TICKETS}/tickets", **{"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "tickets.write"
    assert [e["scope"] for e in proxy.exchanges()] == ["tickets.read", "tickets.write"]
    reads, write = proxy.destination()[:2], proxy.destination()[2]
    assert bearer_of(reads[0]) == bearer_of(reads[1])
    assert claims(bearer_of(write))["scope"] == "tickets.write"
    # Another agent (in its own run) never gets the first one's cached credential.
    r = proxy.send("GET", f"http://{TICKETS}/tickets/1", agent="agent-2", **{"x-agent-run": "credentials-run-2"})
    assert r.status_code == 200, r.text
    assert [e["sub"] for e in proxy.exchanges()] == ["agent-1", "agent-1", "agent-2"]
    # The counters say the same: three exchanges, one reuse, no failure.
    admin = proxy.stack.ports["admin"]
    counts = {k: pe.wasm_metric(admin, f"portcullis_credentials_{k}") for k in ("minted", "cached", "failed")}
    assert counts == {"minted": 3, "cached": 1, "failed": 0}, counts


def test_the_receipts_name_the_credential_and_nothing_holds_a_token(proxy: Proxy, keys: pe.Keys) -> None:
    agent_token = proxy.idp.token("agent-1")
    assert proxy.send("GET", f"http://{TICKETS}/tickets/1").status_code == 200
    assert proxy.send("GET", f"http://{TICKETS}/tickets/1").status_code == 200
    [line, cached_line] = proxy.lines(2)
    assert (line["decision"], line["rule"]) == ("MODIFY", "tickets_api")
    action, minted = pe.receipts_of(line)
    assert action["event"] == "action" and "credentials" not in action
    assert "inject_credential tickets" in action["modifications"]
    assert minted["event"] == "credential" and minted["decision"] == "MODIFY"
    token = bearer_of(proxy.destination()[0])
    jti = claims(token)["jti"]
    assert minted["credentials"] == [{"audience": TICKETS, "cached": False, "id": f"jti:{jti}",
                                      "name": "tickets", "scope": "tickets.read"}]
    assert pe.receipts_of(cached_line)[1]["credentials"][0]["cached"] is True
    time.sleep(1.0)  # Envoy's own log flushes too
    for f in (proxy.stack.files["access_log"], proxy.stack.files["envoy_log"]):
        text = Path(f).read_text()
        assert token not in text, f"the minted token is in {f}"
        assert agent_token not in text, f"the agent's token is in {f}"
        assert jti in text or f == proxy.stack.files["envoy_log"]
    v = pe.policyc("receipts", "verify", str(proxy.stack.files["access_log"]), "--pub",
                   str(keys.path("receipt", "pub")), check=False)
    assert v.returncode == 0, v.stdout + v.stderr


def test_sts_down_or_no_verified_jwt_denies_with_filter_credential(proxy: Proxy) -> None:
    r = proxy.send("GET", f"http://{TICKETS}/tickets/1", agent=None)
    assert r.status_code == 403, r.text
    assert r.json()["rule"] == "filter:credential"
    assert "verified JWT" in r.json()["reason"], r.text
    proxy.sts.stop()
    r = proxy.send("GET", f"http://{TICKETS}/tickets/1")
    assert r.status_code == 403, r.text
    assert r.headers.get("x-portcullis-decision") == "DENY"
    assert "filter:credential" in r.text
    assert proxy.destination() == [], "nothing reached the destination"
    lines = proxy.lines(2)
    for line in lines:
        assert (line["decision"], line["rule"]) == ("DENY", "filter:credential")
        last = pe.receipts_of(line)[-1]
        assert (last["event"], last["decision"], last["rule"]) == ("credential", "DENY", "filter:credential")
    assert "STS" in pe.receipts_of(lines[1])[-1]["reason"]
    assert pe.wasm_metric(proxy.stack.ports["admin"], "portcullis_credentials_failed") == 2


def test_the_config_validates(keys: pe.Keys, credentials_bundle: Path, tmp_path: Path) -> None:
    values = {"LISTEN_PORT": "10000", "ADMIN_PORT": "9901", "UPSTREAM_PORT": "8080", "STS_PORT": "8082",
              "WASM": str(pe.WASM), "ACCESS_LOG": str(tmp_path / "access.log"), "JWKS": json.dumps(Idp().jwks())}
    subst = pe.render.substitutions(str(credentials_bundle), str(keys.path("bundle", "pub")), None)
    written = pe.render.render("credentials", tmp_path, values, pe.render.plugin_config("credentials", subst))
    proc = subprocess.run([pe.envoy_binary(), "--mode", "validate", "-c", str(written["envoy"])],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
