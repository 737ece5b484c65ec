"""Send this, see this: MCP 2026-07-28 requests through a real Envoy running Portcullis with the
mcp-2026 pack (examples/policies/mcp-2026/README.md).

Generates throwaway keys, compiles and signs policy.pcl, starts the workbench MCP server
(stateless, JSON answers) and Envoy (envoy-configs/mcp-gateway, sessions keyed on `x-agent-run`)
on free loopback ports, sends each request below with the 2026-07-28 routing headers, and prints
what comes back: HTTP status, then the decision and rule (the `x-portcullis-decision` and
`x-portcullis-receipt` response headers on a forwarded request, `error.data` or `error.code` on a
refused one). Stops everything at the
end. Run: `.venv/bin/python examples/policies/mcp-2026/send.py` after `scripts/setup`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "test-harness" / "e2e"))
import portcullis_e2e as pe  # noqa: E402

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}


def call(tool: str, args: dict, **extra: object) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": META, **extra}}


# (what, body, extra headers; None for Mcp-Name means the body's name/taskId)
REQUESTS: list[tuple[str, dict, dict[str, str]]] = [
    ("server/discover", {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": META}}, {}),
    ("a call whose headers mirror the body", call("read_file", {"path": "/repo/README.md"}),
     {"mcp-param-path": "/repo/README.md"}),
    ("Mcp-Param-Path says another path than the body", call("read_file", {"path": "/repo/README.md"}),
     {"mcp-param-path": "/etc/shadow"}),
    ("the base64 sentinel in another case", call("read_file", {"path": "x"}),
     {"mcp-param-path": "=?BASE64?eA==?="}),
    ("_meta without clientCapabilities",
     {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
         "name": "read_file", "arguments": {"path": "/repo/README.md"},
         "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}, {}),
    ("a retry with a requestState the server never handed out",
     call("read_file", {"path": "/repo/README.md"}, requestState="forged", inputResponses={}), {}),
    ("tasks/get of a task never handed to this run",
     {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": "t-123", "_meta": META}}, {}),
]


def send(url: str, body: dict, extra: dict[str, str]) -> str:
    params = body["params"]
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2026-07-28", "mcp-method": body["method"], "x-agent-run": "run-1"}
    name = params.get("name") or params.get("taskId")
    if name:
        headers["mcp-name"] = name
    headers.update(extra)
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, got, text = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, got, text = e.code, dict(e.headers), e.read()
    answer = json.loads(text)
    err = answer.get("error")
    if err is None:
        receipt = pe.decode_receipt_header(got["x-portcullis-receipt"])
        rule = receipt.get("body", receipt).get("rule")
        return (f"{status} {got.get('x-portcullis-decision')} rule {rule}: "
                f"result members {sorted(answer['result'])}")
    data = err.get("data") or {}
    if "rule" in data:
        return f"{status} {data['decision']} rule {data['rule']}: {data['reason']}"
    return f"{status} error {err['code']}: {err['message']}"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="portcullis-mcp-2026-"))
    pe.require_artifacts()
    keys = pe.Keys.generate(work / "keys")
    bundle = pe.compile_bundle(HERE / "policy.pcl", work / "policy.bundle", keys)
    with pe.stack(work / "stack") as st:
        st.workbench(json_response=True, stateless=True)
        st.envoy("mcp-gateway", keys, bundle,
                 patch={"session": {"key": {"source": "header", "name": "x-agent-run"}}})
        for what, body, extra in REQUESTS:
            print(f"{what}\n  -> {send(st.mcp_url, body, extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
