"""Browser agents through the mcp-gateway (issue: browser clients were blocked): Envoy's CORS filter,
placed before Portcullis, answers a preflight from the allowed origin, and every answer to that
origin carries the CORS headers, Portcullis's own denials included, so a page reads the JSON-RPC
error instead of failing on CORS. Another origin gets no CORS headers. Policy: the demo pack.
"""

from __future__ import annotations

from pathlib import Path

import httpx

import portcullis_e2e as pe
from raw import RawMcp

ORIGIN = "https://agent.example"


def test_preflights_and_denials_carry_the_configured_cors_headers(
        stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle, values={"CORS_ORIGIN": ORIGIN})
    pre = httpx.options(stack.mcp_url, headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, mcp-session-id"}, timeout=10)
    assert pre.status_code == 200, pre.text
    assert pre.headers.get("access-control-allow-origin") == ORIGIN
    assert "POST" in pre.headers.get("access-control-allow-methods", "")
    assert "mcp-session-id" in pre.headers.get("access-control-allow-headers", "")

    with RawMcp(stack.mcp_url) as mcp:
        assert mcp.initialize().status == 200 and mcp.session_id
        allowed = mcp.call("read_file", {"path": "/repo/README.md"}, {"origin": ORIGIN})
        denied = mcp.call("delete_branch", {"branch": "main"}, {"origin": ORIGIN})
        stranger = mcp.call("delete_branch", {"branch": "main"}, {"origin": "https://evil.example"})
    assert allowed.headers.get("x-portcullis-decision") == "ALLOW"
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    # The filter's local answer (JSON-RPC error, HTTP 200) is readable by the page.
    assert denied.error_code == -32040, denied.text
    assert denied.headers.get("x-portcullis-decision") == "DENY"
    assert denied.headers.get("access-control-allow-origin") == ORIGIN
    assert "x-portcullis-decision" in denied.headers.get("access-control-expose-headers", "")
    assert stranger.error_code == -32040
    assert "access-control-allow-origin" not in stranger.headers
