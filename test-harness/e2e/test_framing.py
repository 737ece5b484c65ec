"""Bodies framed other than by `content-length` get the same decisions. An agent speaking HTTP/2
(h2c, prior knowledge) sends DATA frames with `content-length` optional; an HTTP/1.1 agent may
send `transfer-encoding: chunked`. The filter's body buffering, its rewrite (MODIFY), its size
limit and its local replies (DENY) are checked here against what the upstream received. Every
other e2e test sends HTTP/1.1 with `content-length`. Policy: examples/policies/demo."""

from __future__ import annotations

import json
import re

import portcullis_e2e as pe
from raw import RawMcp, Reply


def _downstream_cx(stack: pe.Stack, version: str) -> int:
    """Downstream connections of the given HTTP version over every HTTP connection manager but
    the admin's (which the test's own stats requests reach over HTTP/1.1)."""
    status, body = pe.http_get(f"http://127.0.0.1:{stack.ports['admin']}/stats?filter=downstream_cx_{version}_total")
    assert status == 200, body
    return sum(int(m.group(1)) for m in re.finditer(rf"^http\.(?!admin\.)[^:]+\.downstream_cx_{version}_total: (\d+)$",
                                                    body.decode(), re.M))


def test_decisions_over_http2(gateway: pe.Stack) -> None:
    with RawMcp(gateway.mcp_url, http2=True) as mcp:
        mcp.initialize()
        read = mcp.call("read_file", {"path": "/repo/README.md"})
        clamped = mcp.call("query_db", {"sql": "select * from payroll", "limit": 500})
        big = mcp.call("read_file", {"path": "/repo/" + "d" * 20_000})
        denied = mcp.call("delete_branch", {"branch": "main"})
    assert _downstream_cx(gateway, "http2") >= 1 and _downstream_cx(gateway, "http1") == 0, \
        "the agent's connection was not HTTP/2"

    assert read.status == 200 and read.decided == ("ALLOW", "read_repo"), read.text
    assert "contents of /repo/README.md" in read.text

    # MODIFY: the tool ran with the clamped limit, and the body the upstream got is whole.
    assert clamped.decided == ("MODIFY", "bounded_queries"), clamped.text
    [(rec, msg)] = pe.tool_calls(gateway.upstream_requests(), "query_db")
    assert msg["params"]["arguments"] == {"sql": "select * from payroll", "limit": 100}
    length = pe.header(rec, "content-length")
    assert length is None or int(length) == len(rec["body"].encode()), (length, rec["body"])

    # A body over several DATA frames is read whole before the decision.
    assert big.status == 200 and big.decided[0] == "ALLOW", big.text[:300]
    [(_, msg)] = [(r, m) for r, m in pe.tool_calls(gateway.upstream_requests(), "read_file")
                  if len(m["params"]["arguments"]["path"]) > 100]
    assert msg["params"]["arguments"]["path"] == "/repo/" + "d" * 20_000

    # DENY: a JSON-RPC error to the agent, nothing upstream.
    assert denied.decided == ("DENY", "no_branch_deletion"), denied.text
    assert denied.error_code == -32040 and json.loads(denied.text)["error"]["data"]["rule"] == "no_branch_deletion"
    assert not pe.tool_calls(gateway.upstream_requests(), "delete_branch")


def _chunked(mcp: RawMcp, message: dict, chunk: int) -> Reply:
    """POST ``message`` with `transfer-encoding: chunked`, ``chunk`` bytes at a time."""
    body = json.dumps(message, separators=(",", ":")).encode()
    name = message.get("params", {}).get("name")
    r = mcp.http.post(mcp.url, content=iter([body[i:i + chunk] for i in range(0, len(body), chunk)]),
                      headers=mcp.headers(method=message["method"], name=name))
    return Reply(r.status_code, r.headers, r.text)


def _tool_call(name: str, arguments: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def test_decisions_on_chunked_bodies(gateway: pe.Stack) -> None:
    with RawMcp(gateway.mcp_url) as mcp:
        mcp.initialize()
        clamped = _chunked(mcp, _tool_call("query_db", {"sql": "select * from payroll", "limit": 500}), 7)
        denied = _chunked(mcp, _tool_call("delete_branch", {"branch": "main"}), 5)
        huge = _chunked(mcp, _tool_call("write_file", {"path": "/repo/big", "content": "x" * (5 << 20),
                                                       "branch": "deps/x"}), 64 << 10)

    assert clamped.decided == ("MODIFY", "bounded_queries"), clamped.text
    [(rec, msg)] = pe.tool_calls(gateway.upstream_requests(), "query_db")
    assert msg["params"]["arguments"] == {"sql": "select * from payroll", "limit": 100}
    length = pe.header(rec, "content-length")
    assert length is None or int(length) == len(rec["body"].encode()), (length, rec["body"])

    assert denied.decided == ("DENY", "no_branch_deletion") and denied.error_code == -32040, denied.text
    assert not pe.tool_calls(gateway.upstream_requests(), "delete_branch")

    # Over `limits.max_body_bytes` (4 MiB) with no length announced: refused once it is too big.
    assert huge.status == 413 and huge.error_code == -32600, (huge.status, huge.text[:300])
    assert not pe.tool_calls(gateway.upstream_requests(), "write_file")
