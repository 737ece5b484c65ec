"""The legacy HTTP+SSE transport (MCP 2024-11-05) through a real Envoy with the built .wasm: the
official Python SDK's `sse_client` against the workbench server's `sse_app` (GET /sse opens the
event stream, whose `endpoint` event names `POST /messages/?session_id=...`; every answer comes
back on the stream).

- The stream is read as an MCP stream (`mcp.legacy_paths`, default `["/messages", "/sse"]`): its
  `endpoint` event passes, and an answer on it is judged (a secret in a tool result redacted).
- Every message of one client is decided in the session its `session_id` names, so a taint and a
  kill hold from one message to the next (before, each message was a new, unsaved session).
- A denied call never reaches the server. The legacy client reads answers on the stream only, so
  it never sees the filter's refusal of its POST as the call's answer (the Python SDK's writer
  stops on the 403; the call fails when its read times out).

    .venv/bin/pytest test-harness/e2e/test_legacy_sse.py -q -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.sse import sse_client

import portcullis_e2e as pe
from conftest import compile_or_fail


def pack(name: str, rules: str) -> str:
    """A pack that denies by default and allows the MCP protocol, with ``rules``."""
    return f"""
pack "{name}" {{
  version "1.0.0"
  mode enforce
  default deny "not allowed"
  unknown_session deny "session state was lost"
}}

rule protocol_messages {{
  when class mcp_protocol
  allow "MCP protocol messages act on nothing"
}}
{rules}"""


# Allows every tool of the workbench and the protocol; redacts secrets in results.
RESULTS_PACK = pack("legacy_results", """
rule tools {
  when kind == mcp and operation == "tools/call" and tool != "delete_branch"
  allow "the workbench's tools are in scope"
}

rule secret_results {
  when operation == "tools/result" and risk.secrets == true
  modify "secrets in tool output are redacted" { redact_secrets }
}
""")


# Result rules that name their tools, and a taint a result carries into the next call.
TIED_PACK = pack("legacy_tied", """
rule no_branch_deletion {
  when tool == "delete_branch"
  deny "deleting branches is not allowed"
}

rule no_secret_after_injection {
  when kind == mcp and tool == "get_secret" and session.tainted("untrusted_instruction")
  deny "no secrets after untrusted instructions"
}

rule tools {
  when kind == mcp and operation == "tools/call"
  allow "the workbench's tools are in scope"
}

rule rows_withheld {
  when operation == "tools/result" and tool == "query_db"
  deny "query rows never reach the agent"
}

rule injected_result {
  when operation == "tools/result" and args.injection == true
  allow "tool output aimed instructions at the agent" then taint "untrusted_instruction"
}

rule results {
  when operation == "tools/result"
  allow "other results pass"
}
""")


def legacy_url(stack: pe.Stack) -> str:
    return f"http://127.0.0.1:{stack.ports['envoy']}/sse"


def start(stack: pe.Stack, keys: pe.Keys, bundle: Path) -> pe.Stack:
    stack.workbench(sse=True)
    try:
        stack.envoy("mcp-gateway", keys, bundle)
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    return stack


def text_of(result: object) -> str:
    return "".join(getattr(c, "text", "") for c in getattr(result, "content", []) or [])


async def session(url: str, calls: list[tuple[str, dict]], *, intent: str | None = None,
                  timeout: float = 4.0) -> list[object]:
    """One legacy client session: each call's result, or the exception it ended with."""
    headers = {"x-portcullis-intent": intent} if intent else None
    out: list[object] = []
    async with Client(sse_client(url, headers=headers, timeout=timeout), mode="legacy",
                      read_timeout_seconds=timeout) as client:
        for tool, args in calls:
            try:
                out.append(await client.call_tool(tool, args))
            except Exception as e:  # noqa: BLE001 - the outcome is the point
                out.append(e)
    return out


def messages_received(stack: pe.Stack) -> list[dict]:
    """The JSON-RPC messages the workbench received on its message endpoint."""
    out = []
    for rec in stack.upstream_requests():
        if rec.get("method") == "POST" and str(rec.get("path", "")).startswith("/messages"):
            out.append(json.loads(rec["body"]))
    return out


def test_a_result_on_the_legacy_stream_is_judged(stack: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    """The `endpoint` event passes (the client connects and calls), and the secret `get_secret`
    returns on the event stream is redacted before the client reads it."""
    policy = tmp_path / "legacy.pcl"
    policy.write_text(RESULTS_PACK)
    start(stack, keys, compile_or_fail(policy, tmp_path / "legacy.bundle", keys))
    [files, secret] = asyncio.run(session(legacy_url(stack), [("list_dir", {"path": "/repo"}),
                                                              ("get_secret", {"name": "prod-db"})]))
    assert not isinstance(files, Exception), files
    assert not isinstance(secret, Exception), secret
    text = text_of(secret)
    assert "sk-live" not in text and "[REDACTED]" in text, text


def test_a_taint_holds_across_legacy_messages(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    """The demo pack taints the session on `fetch_url` and kills it when a secret is read after:
    over the legacy transport both messages are in the session the client's `session_id` names,
    so `get_secret` is denied (it never reaches the server; the client, which reads answers on
    the stream only, gets none) and the session stays killed for any later message naming it.
    Each receipt names that session."""
    start(stack, keys, demo_bundle)
    fetched, secret = asyncio.run(session(
        legacy_url(stack),
        [("fetch_url", {"url": "https://example.com"}), ("get_secret", {"name": "prod-db"})],
        intent="demo_task"))
    assert not isinstance(fetched, Exception), fetched
    assert isinstance(secret, Exception), f"get_secret after an untrusted page was answered: {secret}"
    lines = pe.tool_call_lines(stack.wait_access_log(2))
    decided = [(b["action"]["tool"], b["decision"], b.get("rule")) for _, b in lines]
    assert decided == [("fetch_url", "ALLOW", "fetched_untrusted"),
                       ("get_secret", "DENY", "secret_after_untrusted")], decided
    sessions = {b["session"] for _, b in lines}
    assert len(sessions) == 1 and not next(iter(sessions)).startswith("anon/"), sessions
    sid = next(iter(sessions))
    # A later message of that session is refused: the session is killed.
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "read_file", "arguments": {"path": "/repo/README.md"}}}
    req = urllib.request.Request(f"http://127.0.0.1:{stack.ports['envoy']}/messages/?session_id={sid}",
                                 data=json.dumps(call).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    error = json.loads(body).get("error") or {}
    assert (error.get("code"), (error.get("data") or {}).get("rule")) == (-32040, "session:killed"), (status, body)
    tools = [m.get("params", {}).get("name") for m in messages_received(stack) if m.get("method") == "tools/call"]
    assert tools == ["fetch_url"], tools


def test_answers_on_the_legacy_stream_are_checked_as_the_answers_they_are(stack: pe.Stack, keys: pe.Keys,
                                                                         tmp_path: Path) -> None:
    """The stream opens without a session; its `endpoint` event names it. Each message the server
    accepts with 202 is handed over, so its answer on the stream is checked as that request's:
    the list filtered (`delete_branch` hidden), `query_db`'s rows withheld by a rule on its
    results, `fetch_url`'s page delivered (an output no request claims would be withheld as
    `query_db`'s could be), and the instruction in that page taints the session the endpoint
    named, so the `get_secret` after it is denied and never reaches the server."""
    policy = tmp_path / "tied.pcl"
    policy.write_text(TIED_PACK)
    start(stack, keys, compile_or_fail(policy, tmp_path / "tied.bundle", keys))

    async def run() -> tuple[list[str], list[object]]:
        out: list[object] = []
        async with Client(sse_client(legacy_url(stack), timeout=4.0), mode="legacy",
                          read_timeout_seconds=4.0) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            for tool, args in [("fetch_url", {"url": "https://example.com"}),
                               ("query_db", {"sql": "select 1", "limit": 1}),
                               ("get_secret", {"name": "prod-db"})]:
                try:
                    out.append(await client.call_tool(tool, args))
                except Exception as e:  # noqa: BLE001 - the outcome is the point
                    out.append(e)
        return names, out

    names, (fetched, rows, secret) = asyncio.run(run())
    assert "delete_branch" not in names and "fetch_url" in names, names
    assert not isinstance(fetched, Exception), fetched
    assert "fetched https://example.com" in text_of(fetched), fetched
    assert isinstance(rows, Exception) and "query rows never reach the agent" in str(rows), rows
    assert isinstance(secret, Exception), f"get_secret after an injected page was answered: {secret}"
    tools = [m.get("params", {}).get("name") for m in messages_received(stack) if m.get("method") == "tools/call"]
    assert tools == ["fetch_url", "query_db"], tools
