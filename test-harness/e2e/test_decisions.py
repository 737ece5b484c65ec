"""Each decision as the agent (official SDK client) experiences it, and what the upstream MCP
server received — nothing at all for a refused action. Policy: examples/policies/demo."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import portcullis_e2e as pe
from agent import APPROVAL_REQUIRED, DENIED, Agent


def run(coro):
    """Run one async agent script."""
    return asyncio.run(coro)


def test_modify_clamps_the_query_limit(gateway: pe.Stack) -> None:
    async def go():
        async with Agent(gateway.mcp_url, intent="demo_task") as agent:
            return await agent.call("query_db", {"sql": "select * from payroll", "limit": 500})

    out = run(go())
    assert out.ok, out
    assert out.decision == "MODIFY"
    assert json.loads(out.text)["limit"] == 100, "the tool ran with the clamped limit"
    [(rec, msg)] = pe.tool_calls(gateway.upstream_requests(), "query_db")
    assert msg["params"]["arguments"] == {"sql": "select * from payroll", "limit": 100}
    assert int(pe.header(rec, "content-length")) == len(rec["body"].encode())


def test_step_up_then_approved_retry(gateway: pe.Stack, keys: pe.Keys) -> None:
    args = {"env": "production", "version": "v2.4.1"}

    async def go():
        async with Agent(gateway.mcp_url, intent="demo_task") as agent:
            first = await agent.call("deploy", args)
            assert first.approval_request, first
            seen_before = len(pe.tool_calls(gateway.upstream_requests(), "deploy"))
            req = first.approval_request
            token = pe.policyc("approve", "--digest", req["digest"], "--group", req["group"],
                               "--key", str(keys.path("approver", "key")), "--ttl", "15m").stdout.strip()
            forged = pe.policyc("approve", "--digest", req["digest"], "--group", req["group"],
                                "--key", str(keys.dir / "stranger.key"), "--ttl", "15m").stdout.strip()
            with_forged = await agent.call("deploy", args, approval=forged)
            approved = await agent.call("deploy", args, approval=token)
            replayed = await agent.call("deploy", args, approval=token)
            return first, seen_before, with_forged, approved, replayed

    first, seen_before, with_forged, approved, replayed = run(go())
    assert not first.ok and first.error_code == APPROVAL_REQUIRED
    assert first.decision == "STEP_UP" and first.rule == "production_deploy"
    req = first.approval_request
    assert len(req["digest"]) == 64 and req["group"] == "release-managers"
    assert "policyc approve" in req.get("approve_with", "")
    assert seen_before == 0, "nothing reached the server while approval was pending"
    assert not with_forged.ok and with_forged.decision == "DENY", "a token from an unknown key is refused"
    assert approved.ok and approved.decision == "ALLOW", approved
    assert "deployed v2.4.1 to production" in approved.text
    assert not replayed.ok and replayed.decision == "DENY", "a token works once"
    assert len(pe.tool_calls(gateway.upstream_requests(), "deploy")) == 1


@pytest.mark.parametrize("answer", ["allow", "deny", "nobody"])
def test_defer_resolved_by_context_service(answer: str, stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    stack.workbench()
    if answer != "nobody":
        stack.context_service(answer)
    stack.envoy("mcp-gateway", keys, demo_bundle)

    async def go():
        async with Agent(stack.mcp_url, intent="demo_task") as agent:
            return await agent.call("send_email", {"to": "x@outside.example", "subject": "hi", "body": "b"})

    out = run(go())
    sent = pe.tool_calls(stack.upstream_requests(), "send_email")
    if answer == "allow":
        assert out.ok, out
        assert len(sent) == 1
        [call] = stack.upstream_requests("context")
        assert call["path"] == "/decide"
        assert "send_email" in call["body"]
    else:
        assert not out.ok and out.decision == "DENY", out
        assert out.rule == "external_email"
        assert sent == []


def test_deny_sends_nothing_upstream(gateway: pe.Stack) -> None:
    async def go():
        async with Agent(gateway.mcp_url, intent="demo_task") as agent:
            return await agent.call("delete_branch", {"branch": "release"})

    out = run(go())
    assert not out.ok and out.error_code == DENIED
    assert out.error_data["reason"] == "deleting branches is not allowed"
    assert out.error_data.get("receipt_id")
    assert pe.tool_calls(gateway.upstream_requests(), "delete_branch") == []
    assert not pe.raw_mentions(gateway.upstream_requests(), "delete_branch")


def test_kill_lasts_for_the_session_only(gateway: pe.Stack) -> None:
    async def killed():
        async with Agent(gateway.mcp_url, intent="demo_task") as agent:
            fetched = await agent.call("fetch_url", {"url": "https://docs.example/x"})
            secret = await agent.call("get_secret", {"name": "prod-db"})
            later = [await agent.call(t, a) for t, a in
                     [("run_tests", {}), ("read_file", {"path": "/repo/a"})]]
            return fetched, secret, later

    async def fresh():
        async with Agent(gateway.mcp_url, intent="demo_task") as agent:
            return await agent.call("get_secret", {"name": "staging-db"})

    fetched, secret, later = run(killed())
    assert fetched.ok and fetched.decision == "ALLOW"
    assert not secret.ok and secret.rule == "secret_after_untrusted"
    for out in later:
        assert not out.ok and out.decision == "DENY" and out.rule == "session:killed", out
    # A new session is not affected by the other session's kill.
    other = run(fresh())
    assert other.ok and "sk-live-staging-db" in other.text
    names = [m["params"]["name"] for _, m in pe.tool_calls(gateway.upstream_requests())]
    assert names == ["fetch_url", "get_secret"]
    assert pe.tool_calls(gateway.upstream_requests(), "get_secret")[0][1]["params"]["arguments"] == {"name": "staging-db"}


def test_without_a_session_key_a_token_approves_once_and_anon_names_are_refused(
        gateway: pe.Stack, keys: pe.Keys) -> None:
    """A request with no mcp-session-id is decided on a fresh, unsaved session: its approval token
    is claimed process-wide, so the identical retry is refused (docs/approvals.md); and a session
    key named like a worker's anonymous chain is refused before anything is decided."""
    from raw import RawMcp  # noqa: PLC0415 (the raw client, no session)

    args = {"env": "production", "version": "v2.4.1"}
    intent = {"x-portcullis-intent": "demo_task"}
    with RawMcp(gateway.mcp_url) as mcp:
        first = mcp.call("deploy", args, intent)
        assert first.error_code == APPROVAL_REQUIRED, first.text
        req = first.message["error"]["data"]["approval_request"]
        token = pe.policyc("approve", "--digest", req["digest"], "--group", req["group"],
                           "--key", str(keys.path("approver", "key")), "--ttl", "15m").stdout.strip()
        approved = mcp.call("deploy", args, {**intent, "x-portcullis-approval": token})
        replayed = mcp.call("deploy", args, {**intent, "x-portcullis-approval": token})
        spoofed = mcp.call("read_file", {"path": "/repo/README.md"}, {"mcp-session-id": "anon/1-1"})
    assert approved.decided[0] == "ALLOW", approved.text
    assert replayed.error_code == -32040, replayed.text
    assert replayed.message["error"]["data"]["approval_error"] == "replayed", replayed.text
    assert len(pe.tool_calls(gateway.upstream_requests(), "deploy")) == 1, "the replay never reached the tool"
    # A refusal of bad input: 400, no receipt (nothing was decided), nothing upstream.
    assert spoofed.status == 400 and spoofed.headers.get("x-portcullis-decision") == "DENY", spoofed.text
    assert "reserved chain prefix" in spoofed.text, spoofed.text
    assert not pe.tool_calls(gateway.upstream_requests(), "read_file")
    # The three keyless actions are counted (on the next timer tick) and said in Envoy's log.
    admin = gateway.ports["admin"]
    pe.wait_until("portcullis_actions_untracked", lambda: pe.wasm_metric(admin, "portcullis_actions_untracked") == 3,
                  None, 10)
    log = gateway.files["envoy_log"].read_text(errors="replace")
    assert "decided without session state" in log
