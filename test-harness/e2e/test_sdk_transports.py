"""The official MCP SDK client through Envoy + Portcullis, in each transport the SDK speaks:
legacy handshake with SSE responses, legacy with JSON responses, and the 2026-07-28 stateless
protocol (no initialize, no Mcp-Session-Id: the session key is a configured header)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import portcullis_e2e as pe
from agent import DENIED, Agent


def _tools_log(stack: pe.Stack, n: int) -> list[dict]:
    """Access log lines of tools/call requests (waits until ``n`` are there)."""
    def calls() -> list[dict]:
        return [line for line, _ in pe.tool_call_lines(stack.access_log())]
    pe.wait_until(f"{n} tools/call access log lines", lambda: len(calls()) >= n, None, 10)
    return calls()


async def _allow_then_deny(url: str, **kw) -> tuple:
    async with Agent(url, **kw) as agent:
        tools = await agent.list_tools()
        ok = await agent.call("read_file", {"path": "/repo/README.md"})
        no = await agent.call("delete_branch", {"branch": "main"})
        return agent.session_id, tools, ok, no


@pytest.mark.parametrize("responses", ["sse", "json"])
def test_legacy_session(responses: str, stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    stack.workbench(json_response=responses == "json")
    stack.envoy("mcp-gateway", keys, demo_bundle)
    sid, tools, ok, no = asyncio.run(_allow_then_deny(stack.mcp_url, intent="demo_task", mode="legacy"))
    assert sid, "the server's Mcp-Session-Id reached the client through Envoy"
    # tools/list is filtered to what the session may call: the pack never allows delete_branch.
    assert "read_file" in tools and "delete_branch" not in tools, tools
    # ALLOW: the agent sees the real result, and the decision.
    assert ok.ok, ok
    assert "contents of /repo/README.md" in ok.text
    assert ok.decision == "ALLOW"
    assert ok.headers.get("x-portcullis-receipt"), "receipt header on the response"
    # DENY: a JSON-RPC error with the documented code and data.
    assert not no.ok
    assert no.error_code == DENIED, no
    assert no.decision == "DENY"
    assert no.rule == "no_branch_deletion"
    # Upstream got the allowed call (with Portcullis' receipt header) and never the denied one.
    records = stack.upstream_requests()
    calls = pe.tool_calls(records)
    assert [m["params"]["name"] for _, m in calls] == ["read_file"]
    assert pe.header(calls[0][0], "x-portcullis-receipt")
    assert pe.header(calls[0][0], "x-portcullis-decision") == "ALLOW"
    rules = [(line["decision"], line["rule"]) for line in _tools_log(stack, 2)]
    assert rules == [("ALLOW", "read_repo"), ("DENY", "no_branch_deletion")]


def test_stateless_2026_07_28(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    """2026-07-28: each POST stands alone; Portcullis keys the session on `x-agent-run`, so the
    taint from fetch_url and the kill from get_secret still carry across requests."""
    stack.workbench(json_response=True, stateless=True)
    stack.envoy("mcp-gateway", keys, demo_bundle,
                patch={"session": {"key": {"source": "header", "name": "x-agent-run"}}})

    async def go() -> tuple:
        async with Agent(stack.mcp_url, intent="demo_task", mode="2026-07-28",
                         headers={"x-agent-run": "run-42"}) as agent:
            ok = await agent.call("read_file", {"path": "/repo/src/lib.rs"})
            fetched = await agent.call("fetch_url", {"url": "https://docs.example/notes"})
            secret = await agent.call("get_secret", {"name": "prod-db"})
            after = await agent.call("run_tests", {})
            return agent.session_id, ok, fetched, secret, after

    sid, ok, fetched, secret, after = asyncio.run(go())
    assert sid is None, "stateless protocol: no Mcp-Session-Id"
    assert ok.ok and ok.decision == "ALLOW"
    assert fetched.ok and "IGNORE PREVIOUS INSTRUCTIONS" in fetched.text
    assert not secret.ok and secret.error_code == DENIED and secret.rule == "secret_after_untrusted"
    assert not after.ok and after.rule == "session:killed"
    names = [m["params"]["name"] for _, m in pe.tool_calls(stack.upstream_requests())]
    assert names == ["read_file", "fetch_url"]
    for rec in stack.upstream_requests():
        assert pe.header(rec, "mcp-protocol-version") == "2026-07-28"


def test_both_eras_side_by_side_on_one_route(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    """One route, one server, two clients at once: the SDK with the legacy handshake (its session is
    its Mcp-Session-Id) and the SDK speaking 2026-07-28 (stateless, `_meta` and routing headers on
    every request). Each gets its allowed call and its denial; neither era's rules leak into the
    other's (the 2026-07-28 requests pass the header/body checks; the legacy ones need none)."""
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle)

    async def one(mode: str, headers: dict[str, str]) -> tuple:
        async with Agent(stack.mcp_url, intent="demo_task", mode=mode, headers=headers) as agent:
            ok = await agent.call("read_file", {"path": f"/repo/{mode}.md"})
            no = await agent.call("delete_branch", {"branch": "main"})
            return agent.session_id, ok, no

    async def both() -> list:
        return await asyncio.gather(one("legacy", {}), one("2026-07-28", {"x-agent-run": "run-modern"}))

    (legacy_sid, legacy_ok, legacy_no), (modern_sid, modern_ok, modern_no) = asyncio.run(both())
    assert legacy_sid and modern_sid is None
    for ok, no in ((legacy_ok, legacy_no), (modern_ok, modern_no)):
        assert ok.ok and ok.decision == "ALLOW", ok
        assert not no.ok and no.error_code == DENIED and no.rule == "no_branch_deletion", no
    assert "/repo/legacy.md" in legacy_ok.text and "/repo/2026-07-28.md" in modern_ok.text
    calls = pe.tool_calls(stack.upstream_requests())
    by_version = {(pe.header(rec, "mcp-protocol-version"), m["params"]["arguments"]["path"]) for rec, m in calls}
    assert by_version == {("2025-11-25", "/repo/legacy.md"), ("2026-07-28", "/repo/2026-07-28.md")}, by_version
    for rec, m in calls:
        if pe.header(rec, "mcp-protocol-version") == "2026-07-28":
            # The stateless request reached the server with the routing headers the filter checked.
            assert pe.header(rec, "mcp-method") == "tools/call"
            assert pe.header(rec, "mcp-name") == "read_file"
            meta = m["params"]["_meta"]
            assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
            assert "io.modelcontextprotocol/clientCapabilities" in meta
        else:
            assert pe.header(rec, "mcp-session-id") == legacy_sid
    rules = sorted((line["decision"], line["rule"]) for line in _tools_log(stack, 4))
    assert rules == [("ALLOW", "read_repo"), ("ALLOW", "read_repo"),
                     ("DENY", "no_branch_deletion"), ("DENY", "no_branch_deletion")]
