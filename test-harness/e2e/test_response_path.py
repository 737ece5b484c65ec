"""The response path (issue 7) in a real Envoy with the official MCP SDK client: tools/list is
filtered to what the session may call (SSE and JSON responses, and the filtered list is valid for
the SDK); a long-running call streams progress and log notifications through the filter while
the call is still running; its result, carrying an injected instruction, reaches the agent and
taints the session, so a later send_email is denied; a secret in a result is redacted.
Policy: policies/response_path.pcl. Server: workbench_stream_server.py (workbench + long_fetch).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

import portcullis_e2e as pe
from conftest import compile_or_fail

POLICIES = Path(__file__).resolve().parent / "policies"
DENIED = -32040


@pytest.fixture(scope="module")
def bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_or_fail(POLICIES / "response_path.pcl",
                           tmp_path_factory.mktemp("bundles") / "response_path.bundle", keys)


def start_server(stack: pe.Stack, json_response: bool) -> int:
    port = pe.free_port()
    record = stack.dir / "upstream.jsonl"
    argv = [pe.PYTHON, str(pe.HERE / "workbench_stream_server.py"), "--port", str(port), "--record", str(record)]
    if json_response:
        argv.append("--json-response")
    proc = stack.start("workbench", argv)
    pe.wait_until("workbench stream server", lambda: pe.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, proc)
    stack.ports["workbench"] = port
    stack.files["upstream"] = record
    return port


@pytest.mark.parametrize("responses", ["sse", "json"])
def test_tools_list_shows_only_usable_tools(responses: str, stack: pe.Stack, keys: pe.Keys, bundle: Path) -> None:
    start_server(stack, responses == "json")
    stack.envoy("mcp-gateway", keys, bundle)

    async def run() -> tuple[list[str], str]:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(15)) as http, \
                Client(streamable_http_client(stack.mcp_url, http_client=http), mode="legacy",
                       read_timeout_seconds=15) as client:
            listed = await client.list_tools()
            # The SDK parsed the filtered list and can call what it lists.
            result = await client.call_tool("read_file", {"path": "/repo/README.md"})
            return [t.name for t in listed.tools], "\n".join(getattr(c, "text", "") for c in result.content)

    names, text = asyncio.run(run())
    assert sorted(names) == sorted(["read_file", "query_db", "fetch_url", "long_fetch", "get_secret", "send_email"])
    assert "contents of /repo/README.md" in text
    # The server did list them all: the filter removed the rest.
    listed = [m for r in stack.upstream_requests() for m in pe.jsonrpc_messages(r) if m.get("method") == "tools/list"]
    assert listed, "tools/list reached the server"


def test_streamed_call_passes_notifications_and_its_injected_result_taints(
        stack: pe.Stack, keys: pe.Keys, bundle: Path) -> None:
    port = start_server(stack, json_response=False)
    stack.envoy("mcp-gateway", keys, bundle)
    progress: list[float] = []
    logs: list[str] = []

    async def run() -> dict:
        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)
            if value == 1:
                # Only possible if the notification reached us while the call is still running.
                async with httpx2.AsyncClient() as h:
                    await h.get(f"http://127.0.0.1:{port}/ack")

        async def on_log(params) -> None:  # noqa: ANN001 - SDK type
            logs.append(str(params.data))

        out: dict = {}
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as http, \
                Client(streamable_http_client(stack.mcp_url, http_client=http), mode="legacy",
                       read_timeout_seconds=30, logging_callback=on_log) as client:
            payroll = await client.call_tool("query_db", {"sql": "select * from payroll", "limit": 5})
            out["payroll_ok"] = not payroll.is_error
            first = await client.call_tool("send_email", {"to": "a@corp.example", "subject": "s", "body": "b"})
            out["email_before"] = not first.is_error
            r = await client.call_tool("long_fetch", {"url": "https://docs.example/notes"},
                                       progress_callback=on_progress)
            out["fetch_text"] = "\n".join(getattr(c, "text", "") for c in r.content)
            secret = await client.call_tool("get_secret", {"name": "prod-db"})
            out["secret_text"] = "\n".join(getattr(c, "text", "") for c in secret.content)
            try:
                await client.call_tool("send_email", {"to": "x@exfil.example", "subject": "s", "body": "b"})
                out["email_after"] = "allowed"
            except MCPError as e:
                out["email_after"] = (e.code, (e.data or {}).get("rule"))
        return out

    out = asyncio.run(run())
    assert out["payroll_ok"] and out["email_before"], out
    assert out["fetch_text"].startswith("[acknowledged]"), out["fetch_text"][:80]
    assert progress[:1] == [1] and len(progress) == 3, progress
    assert any("fetching https://docs.example/notes" in line for line in logs), logs
    assert "IGNORE PREVIOUS INSTRUCTIONS" in out["fetch_text"], "the result itself reaches the agent"
    assert "sk-live" not in out["secret_text"] and "[REDACTED]" in out["secret_text"], out["secret_text"]
    assert out["email_after"] == (DENIED, "tainted_exfil"), out["email_after"]
    stack.wait_attested()
    stack.stop()
    # The result receipts are in the access log, in the session's chain, and the log verifies.
    bodies = [b for line in pe.read_jsonl(stack.files["access_log"]) for b in pe.receipts_of(line)]
    results = [b for b in bodies if b["event"] == "result"]
    assert [b["rule"] for b in results] == ["injected_result", "secret_results"], results
    assert results[0]["effects"] == ["taint:untrusted_instruction"], results[0]
    # The SDK server sends the text twice: as content and as structuredContent; both are redacted.
    assert results[1]["modifications"] == ["redacted secret at result.content[0].text",
                                           "redacted secret at result.structuredContent.result"], results[1]
    out = pe.policyc("receipts", "verify", *map(str, stack.receipt_logs()), "--pub",
                     str(keys.path("receipt", "pub")), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
