"""MCP resource URIs through a real Envoy in front of an MCP server (the workbench), judged as the
server resolves them (docs/filter-normalization.md, "A resource as the server resolves it").

A server opening `file:///workspace/../etc/passwd` opens /etc/passwd: it removes dot segments,
also spelled as escapes (`%2E%2E`), and merges repeated slashes. So the pack's
`resource prefix "file:///workspace/"` must hold against every such spelling: the filter also
judges the URI as resolved, and the strictest verdict decides. A URI whose path servers read two
ways (an encoded `/`, `\\` or NUL, a `\\`, a double-encoded escape, a malformed escape) is refused
outright (400, JSON-RPC -32602). Policy: policies/resources.pcl.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import portcullis_e2e as pe
from conftest import POLICIES, compile_or_fail, start_gateway
from raw import RawMcp

# Spellings of a path out of /workspace/ that servers resolve to /etc/passwd (or above the
# workspace): denied by `outside_workspace`, the reason naming the resolved URI when the URI as
# sent still starts with file:///workspace/.
TRAVERSALS = {
    "file:///workspace/../etc/passwd": "file:///etc/passwd",
    "file:///workspace/%2E%2E/etc/passwd": "file:///etc/passwd",
    "file:///workspace/%2e%2E/%2e%2e/etc/passwd": "file:///etc/passwd",
    "file:///workspace/.%2E/etc/passwd": "file:///etc/passwd",
    "file:///workspace//../etc/passwd": "file:///etc/passwd",
    "file:///workspace/sub/../../etc/shadow": "file:///etc/shadow",
}
# Outside the prefix as sent already: denied, whatever the resolution says.
OUTSIDE = ["FILE:///workspace/../etc/passwd", "file:////workspace/../../etc/passwd",
           "file://localhost/workspace/../etc/passwd", "file:///etc/passwd"]
# Paths servers read two ways: refused before the policy (400, -32602), whatever the pack says.
TWO_WAY = {
    "file:///workspace/..%2Fetc/passwd": "encoded `/`",
    "file:///workspace/%2Fetc/passwd": "encoded `/`",
    "file:///workspace/%5C../etc/passwd": "encoded `/`, `\\`",
    "file:///workspace/..%5c..%5cetc/passwd": "encoded `/`, `\\`",
    "file:///workspace/%252E%252E/etc/passwd": "double-encoded",
    "file:///workspace/..\\..\\etc\\passwd": "contains `\\`",
    "file:///workspace\\..\\etc\\passwd": "contains `\\`",
    "file:///workspace/%00/../x": "NUL",
    "file:///workspace/%zz": "malformed percent-escape",
}
# Inside the workspace however resolved: allowed and forwarded as sent.
INSIDE = ["file:///workspace/notes.txt", "file:///workspace/./sub/../notes.txt", "file:///workspace/%6Eotes.txt"]


@pytest.fixture
def gateway(stack: pe.Stack, keys: pe.Keys, tmp_path: Path) -> pe.Stack:
    """The workbench behind the mcp-gateway Envoy with policies/resources.pcl."""
    bundle = compile_or_fail(POLICIES / "resources.pcl", tmp_path / "resources.bundle", keys)
    return start_gateway(stack, keys, bundle)


def _read(mcp: RawMcp, uri: str) -> tuple[int, dict]:
    """resources/read of ``uri`` with the matching mcp-method / mcp-name headers; (status, the
    JSON-RPC answer, with ``decided``: the receipt header's decision and rule)."""
    msg = {"jsonrpc": "2.0", "id": mcp.new_id(), "method": "resources/read", "params": {"uri": uri}}
    r = mcp.post(msg, method="resources/read", name=uri)
    assert isinstance(r.message, dict), (uri, r.status, r.text[:300])
    return r.status, {**r.message, "decided": r.decided}


def test_a_resource_is_judged_as_the_server_resolves_it(gateway: pe.Stack) -> None:
    """Every traversal out of /workspace/ is denied with the resolved URI in the reason, every
    two-way path is refused with -32602 naming the problem, workspace reads pass; the server
    receives the workspace reads only, and the access log has a receipt for each denial (the URI
    as sent in its action) and a `filter:refused` line without one for each refusal."""
    with RawMcp(gateway.mcp_url, intent=None) as mcp:
        mcp.initialize()
        for uri, resolved in TRAVERSALS.items():
            status, answer = _read(mcp, uri)
            assert status == 200 and answer["decided"] == ("DENY", "outside_workspace"), (uri, answer)
            assert answer["error"]["code"] == -32040, (uri, answer)
            assert f"the server resolves resource `{uri}` as `{resolved}`" in answer["error"]["message"], answer
        for uri in OUTSIDE:
            status, answer = _read(mcp, uri)
            assert status == 200 and answer["decided"] == ("DENY", "outside_workspace"), (uri, answer)
            assert answer["error"]["code"] == -32040, (uri, answer)
        for uri, why in TWO_WAY.items():
            status, answer = _read(mcp, uri)
            assert status == 400 and answer["decided"] == (None, None), (uri, answer)
            assert answer["error"]["code"] == -32602, (uri, answer)
            assert why in answer["error"]["message"] and uri in answer["error"]["message"], (uri, answer)
        for uri in INSIDE:
            status, answer = _read(mcp, uri)
            assert answer["decided"] == ("ALLOW", "workspace_reads"), (uri, answer)
            # The workbench serves no resources: its own "unknown resource" answer proves the read got there.
            assert "Unknown resource" in answer["error"]["message"], (uri, answer)

    reads = [m["params"]["uri"] for rec in gateway.upstream_requests() for m in pe.jsonrpc_messages(rec)
             if m.get("method") == "resources/read"]
    assert reads == INSIDE, reads

    # initialize, notifications/initialized, then one line per read.
    lines = gateway.wait_access_log(2 + len(TRAVERSALS) + len(OUTSIDE) + len(TWO_WAY) + len(INSIDE))[2:]
    denied = [pe.receipts_of(line) for line in lines if line["rule"] == "outside_workspace"]
    assert [r[0]["action"]["resource"] for r in denied] == [*TRAVERSALS, *OUTSIDE], denied
    assert all(r[0]["decision"] == "DENY" for r in denied), denied
    refused = [line for line in lines if line["rule"] == "filter:refused"]
    assert len(refused) == len(TWO_WAY) and all(line["status"] == 400 and not line["receipt"] for line in refused), \
        json.dumps(refused, indent=1)
