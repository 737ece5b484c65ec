"""How a session ends, through Envoy (docs/filter.md, Sessions): idle past `session.idle_ttl_s` it
expires; above `session.max_sessions` the least recently used one is evicted; the client's MCP
`DELETE`, once the server accepts it, deletes it. Each way the filter logs a signed `session_end`,
and a later request naming the session is `missing`: the pack's `unknown_session` decision (the
demo pack denies, answered with HTTP 404 so the client starts a new session), never a fresh start
that would shed its history. The receipt chain goes on
through the end and verifies. Policy: examples/policies/demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import portcullis_e2e as pe
from raw import RawMcp

README = {"path": "/repo/README.md"}


def _ends(stack: pe.Stack) -> list[str]:
    return [r["body"]["session"] for r in pe.read_jsonl(stack.checkpoint_receipts())
            if r["body"]["event"] == "session_end"]


def _verify(stack: pe.Stack, keys: pe.Keys, log: Path) -> dict:
    ok = pe.policyc("receipts", "verify", str(log), str(stack.checkpoint_receipts()),
                    "--pub", str(keys.path("receipt", "pub")), "--format", "json", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    return json.loads(ok.stdout)


def test_an_idle_session_expires_and_cannot_act_again(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle, patch={"session": {"idle_ttl_s": 1},
                                                          "receipts": {"tick_ms": 200}})
    with RawMcp(stack.mcp_url) as mcp:
        mcp.initialize()
        assert mcp.call("read_file", README).decided == ("ALLOW", "read_repo")
        sid = mcp.session_id
        # The worker's timer expires it once it has been idle for over a second.
        pe.wait_until("the idle session's session_end", lambda: sid in _ends(stack), None, 10)
        late = mcp.call("read_file", README)
    assert late.error_code is not None and late.decided == ("DENY", "session:unknown"), late.text
    assert late.status == 404, "the transport's signal to start a new session"
    assert len(pe.tool_calls(stack.upstream_requests(), "read_file")) == 1, "the late call never reached the tool"
    stack.wait_attested()
    log = stack.files["access_log"]
    stack.stop()
    [chain] = [c for c in _verify(stack, keys, log)["sessions"] if c["session"] == sid]
    assert chain["ended"] and chain["first_seq"] == 1, chain
    events = [a["event"] for a in chain["actions"]]
    assert events.index("session_end") < len(events) - 1, "the refused call is chained after the end"


def test_the_least_recently_used_session_is_evicted_above_the_cap(stack: pe.Stack, keys: pe.Keys,
                                                                  demo_bundle: Path) -> None:
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle, patch={"session": {"max_sessions": 2}})
    with RawMcp(stack.mcp_url) as a, RawMcp(stack.mcp_url) as b, RawMcp(stack.mcp_url) as c:
        for m in (a, b):
            m.initialize()
            assert m.call("read_file", README).decided[0] == "ALLOW"
        time.sleep(0.01)
        assert a.call("read_file", README).decided[0] == "ALLOW"  # b is now the least recent
        c.initialize()  # a third session: b is evicted
        assert c.call("read_file", README).decided[0] == "ALLOW"
        pe.wait_until("b's session_end", lambda: b.session_id in _ends(stack), None, 10)
        assert a.call("read_file", README).decided[0] == "ALLOW", "the recently used session stays"
        evicted = b.call("read_file", README)
        ids = a.session_id, b.session_id, c.session_id
    assert evicted.decided == ("DENY", "session:unknown"), evicted.text
    assert evicted.status == 404, evicted.text
    assert _ends(stack) == [ids[1]], "only the least recently used session was evicted"
    stack.wait_attested()
    log = stack.files["access_log"]
    stack.stop()
    report = _verify(stack, keys, log)
    assert {c["session"] for c in report["sessions"] if c["ended"]} == {ids[1]}


def test_a_session_the_client_deletes_is_over(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    """MCP's `DELETE` ends the session at the server; the filter ends it too (signed
    `session_end`), so the id cannot be used again through Portcullis."""
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle)
    with RawMcp(stack.mcp_url) as mcp:
        mcp.initialize()
        assert mcp.call("read_file", README).decided[0] == "ALLOW"
        sid = mcp.session_id
        bye = mcp.http.delete(mcp.url, headers=mcp.headers(method=None))
        assert bye.status_code == 200, bye.text
        pe.wait_until("the deleted session's session_end", lambda: _ends(stack) == [sid], None, 10)
        late = mcp.call("read_file", README)
    assert late.decided == ("DENY", "session:unknown"), late.text
    assert late.status == 404, late.text
    stack.wait_attested()
    log = stack.files["access_log"]
    stack.stop()
    [chain] = [c for c in _verify(stack, keys, log)["sessions"] if c["session"] == sid]
    assert chain["ended"], chain


def test_with_require_initialize_a_killed_session_stays_dead_across_an_envoy_restart(
        stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    """Session records live in Envoy's memory, so a restart forgets them. By default the next
    request of a session is then a new session's first (docs/filter.md, Sessions); with
    `session.require_initialize` it is `missing`, because no `initialize` answer for that id
    passed through the new process. So a killed session is not revived, the agent has to start
    a new session, and the log across the restart verifies: the refusals are on the anonymous chain."""
    stack.workbench(json_response=True)
    patch = {"session": {"require_initialize": True}}
    envoy = stack.envoy("mcp-gateway", keys, demo_bundle, patch=patch)
    with RawMcp(stack.mcp_url) as mcp:
        mcp.initialize()
        assert mcp.call("fetch_url", {"url": "https://docs.example/x"}).decided[0] == "ALLOW"
        assert mcp.call("get_secret", {"name": "prod-db"}).decided == ("DENY", "secret_after_untrusted")
        assert mcp.call("read_file", README).decided == ("DENY", "session:killed")
        envoy.stop()
        stack.procs.remove(envoy)
        stack.envoy("mcp-gateway", keys, demo_bundle, patch=patch)
        mcp.url = stack.mcp_url  # the new process listens on another port
        after = mcp.call("read_file", README)
        assert after.decided == ("DENY", "session:unknown") and after.status == 404, after.text
        assert not pe.tool_calls(stack.upstream_requests(), "read_file"), "the killed session never read"
    with RawMcp(stack.mcp_url) as fresh:
        fresh.initialize()
        assert fresh.call("read_file", README).decided == ("ALLOW", "read_repo")
    log = stack.files["access_log"]
    stack.stop()
    _verify(stack, keys, log)
