"""`receipts.header: id` in a real Envoy: the agent's response carries only the receipt id (the
hex hash, 64 characters) and the access log carries the whole receipt with that hash, which still
verifies offline. Policy: the demo pack.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import portcullis_e2e as pe
from raw import RawMcp


def test_the_id_header_names_the_logged_receipt(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> None:
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle, patch={"receipts": {"header": "id"}})
    with RawMcp(stack.mcp_url) as mcp:
        assert mcp.initialize().status == 200 and mcp.session_id
        reply = mcp.call("read_file", {"path": "/repo/README.md"})
    assert reply.headers.get("x-portcullis-decision") == "ALLOW"
    receipt_id = reply.headers.get("x-portcullis-receipt")
    assert receipt_id and re.fullmatch(r"[0-9a-f]{64}", receipt_id), receipt_id
    stack.wait_attested()
    stack.stop()  # flush every log
    logged = []
    for line in stack.access_log():
        raw = line.get("receipt")
        value = json.loads(raw) if isinstance(raw, str) and raw.startswith(("{", "[")) else None
        logged += value if isinstance(value, list) else [value] if value else []
    match = [r for r in logged if r.get("hash") == receipt_id]
    assert len(match) == 1, "the header names exactly one logged receipt"
    assert match[0]["body"]["action"]["tool"] == "read_file"
    out = pe.policyc("receipts", "verify", *map(str, stack.receipt_logs()), "--pub",
                     str(keys.path("receipt", "pub")), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
