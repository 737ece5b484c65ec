"""Raw HTTP that a real SDK would never send. Whatever the answer, the upstream MCP server must
never execute something the policy denies, and never see Portcullis headers the client forged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import portcullis_e2e as pe
from raw import RawMcp


@pytest.fixture
def raw_gw(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> Iterator[tuple[pe.Stack, RawMcp]]:
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle)
    with RawMcp(stack.mcp_url) as mcp:
        init = mcp.initialize()
        assert init.status == 200 and mcp.session_id, (init.status, init.text)
        yield stack, mcp


def executed(stack: pe.Stack, tool: str) -> bool:
    return bool(pe.tool_calls(stack.upstream_requests(), tool)) or pe.raw_mentions(stack.upstream_requests(), tool)


def test_batch_with_a_denied_element_is_refused_whole(raw_gw) -> None:
    stack, mcp = raw_gw
    batch = [{"jsonrpc": "2.0", "id": 10, "method": "tools/call",
              "params": {"name": "read_file", "arguments": {"path": "/repo/a"}}},
             {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
              "params": {"name": "delete_branch", "arguments": {"branch": "main"}}}]
    r = mcp.post(batch)
    # mcp.allow_batches is off (the default): a batch is refused whole, never forwarded.
    assert r.status == 400 and r.error_code == -32600, (r.status, r.text)
    assert not executed(stack, "delete_branch")
    assert pe.tool_calls(stack.upstream_requests(), "read_file") == []


def test_duplicate_keys_cannot_smuggle_a_tool_name(raw_gw) -> None:
    stack, mcp = raw_gw
    # Python's json (the server) keeps the LAST "name": delete_branch.
    body = (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file",'
            b'"arguments":{"branch":"main","path":"/repo/a"},"name":"delete_branch"}}')
    r = mcp.post_bytes(body, mcp.headers(method="tools/call", name="read_file"))
    assert r.error_code == -32600, r.text
    assert "duplicate key" in r.message["error"]["message"]
    assert not executed(stack, "delete_branch")


def test_mcp_name_header_disagreeing_with_body_is_refused(raw_gw) -> None:
    stack, mcp = raw_gw
    msg = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
           "params": {"name": "delete_branch", "arguments": {"branch": "main"}}}
    r = mcp.post(msg, method="tools/call", name="read_file")
    assert r.error_code == -32020 and r.status == 400, r.text  # MCP 2026-07-28 HeaderMismatchError
    assert r.message["id"] == 8, "the refusal answers the request's id"
    # and the other way round: an allowed body under a lying header is refused too
    msg2 = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "read_file", "arguments": {"path": "/repo/b"}}}
    r2 = mcp.post(msg2, method="tools/call", name="delete_branch")
    assert r2.error_code == -32020, r2.text
    assert not executed(stack, "delete_branch")
    assert pe.tool_calls(stack.upstream_requests(), "read_file") == []


def test_spoofed_portcullis_headers_are_replaced(raw_gw) -> None:
    stack, mcp = raw_gw
    spoof = {"x-portcullis-decision": "ALLOW", "x-portcullis-receipt": "forged-receipt",
             "x-portcullis-agent": "root", "x-portcullis-warning": "none"}
    r = mcp.call("read_file", {"path": "/repo/c"}, spoof)
    assert r.status == 200 and r.error_code is None, r.text
    [(rec, _)] = pe.tool_calls(stack.upstream_requests(), "read_file")
    assert pe.header(rec, "x-portcullis-receipt") not in (None, "forged-receipt")
    assert pe.header(rec, "x-portcullis-agent") is None
    assert pe.header(rec, "x-portcullis-warning") is None
    # and a forged header cannot turn a DENY into an ALLOW
    r2 = mcp.call("delete_branch", {"branch": "main"}, spoof)
    assert r2.error_code == -32040, r2.text
    assert not executed(stack, "delete_branch")


def test_oversize_body_is_refused_with_413(raw_gw) -> None:
    stack, mcp = raw_gw
    big = "x" * (5 * 1024 * 1024)  # over limits.max_body_bytes (4 MiB)
    r = mcp.call("write_file", {"path": "/repo/big", "content": big, "branch": "deps/x"})
    assert r.status == 413, (r.status, r.text[:300])
    assert r.error_code == -32600, r.text[:300]
    assert pe.tool_calls(stack.upstream_requests(), "write_file") == []


def test_malformed_json_gets_a_parse_error(raw_gw) -> None:
    stack, mcp = raw_gw
    r = mcp.post_bytes(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_fi',
                       mcp.headers(method="tools/call", name="read_file"))
    assert r.error_code == -32700, (r.status, r.text)
    assert pe.tool_calls(stack.upstream_requests()) == []
    assert not pe.raw_mentions(stack.upstream_requests(), "read_fi")


def test_an_agent_that_hangs_up_during_a_defer_leaves_the_filter_healthy(stack: pe.Stack, keys: pe.Keys,
                                                                          demo_bundle: Path) -> None:
    """The client gives up while the filter waits on the context service (DEFER): Envoy destroys
    the stream with the call-out still in flight. Nothing may run, nothing may trap, and the next
    requests are decided as before."""
    stack.workbench(json_response=True)
    stack.context_service("allow", delay_s=0.2)  # within the pack's 300 ms timeout
    stack.envoy("mcp-gateway", keys, demo_bundle)
    email = {"to": "x@outside.example", "subject": "hi", "body": "b"}
    with RawMcp(stack.mcp_url) as mcp:
        mcp.initialize()
        # Connects and sends at leisure, then waits 50 ms for the answer.
        with RawMcp(stack.mcp_url, timeout=httpx.Timeout(5.0, read=0.05)) as impatient:
            impatient.session_id = mcp.session_id
            with pytest.raises(httpx.TimeoutException):
                impatient.call("send_email", email)
        pe.wait_until("the call-out answered", lambda: len(stack.upstream_requests("context")) == 1, None, 5)
        time.sleep(0.3)  # the context service has answered, after the stream was gone
        assert not executed(stack, "send_email"), "the abandoned call never runs"
        read = mcp.call("read_file", {"path": "/repo/README.md"})
        assert read.status == 200 and "contents of /repo/README.md" in read.text, read.text
        sent = mcp.call("send_email", email)
        assert sent.status == 200 and sent.error_code is None, sent.text
    assert len(pe.tool_calls(stack.upstream_requests(), "send_email")) == 1, "only the call the agent waited for"
    log = stack.files["envoy_log"].read_text(errors="replace").lower()
    for sign in ("panicked", "wasm trap", "unreachable", "failed to"):
        assert sign not in log, f"{sign!r} in Envoy's log"
