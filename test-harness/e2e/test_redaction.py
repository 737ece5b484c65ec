"""Redaction (AARM T9) in a real Envoy: a tools/call carrying secrets in its arguments yields
receipts and log lines with no secret value anywhere (the whole access log, Envoy's own log with
the checkpoint receipts, the receipt header), while the receipt's action digest still proves the
action: recomputed here from the original request's bytes, independently of the Rust code, it
matches; with any other secret, or the same arguments spelled otherwise, it does not. Policy: the demo pack.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import portcullis_e2e as pe
from raw import RawMcp


def canonical(value: object) -> bytes:
    """docs/receipts.md "Canonical form" (Python's json with sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def action_digest(body: dict, arguments_text: bytes) -> str:
    """docs/receipts.md "The action digest" (version 2), from a receipt body and the arguments'
    text exactly as the agent sent it. Absent body members read as null (format 2 leaves them
    out); the digest object itself keeps its nulls."""
    assert body["v"] == 2, body
    a = body["action"]
    t = a["target"]
    ident = {p: {"auth": body["identity"][p]["auth"], "id": body["identity"][p].get("id")}
             for p in ("agent", "human", "workload")}
    obj = {"arguments_sha256": hashlib.sha256(arguments_text).hexdigest(), "v": 2,
           "kind": a["kind"], "operation": a["operation"], "tool": a.get("tool"),
           "resource": a.get("resource"), "prompt": a.get("prompt"),
           "target": {"host": t["host"], "port": t["port"], "path": t["path"], "query": "",
                      "scheme": t["scheme"], "server": t["server"]},
           "identity": ident, "session_id": body["session"]}
    if a["kind"] == "http":
        obj["size"] = a["size"]
    return hashlib.sha256(canonical(obj)).hexdigest()


def sent_text(arguments: dict) -> bytes:
    """The arguments' text inside the body RawMcp sent (``json.dumps`` with compact separators
    serializes a nested value exactly as it does on its own)."""
    return json.dumps(arguments, separators=(",", ":")).encode()


def test_secrets_in_arguments_never_reach_receipts_or_logs(stack: pe.Stack, keys: pe.Keys,
                                                           demo_bundle: Path) -> None:
    # One value a secret detector recognizes, one it cannot (random text): neither may be logged.
    detectable = "sk-live-" + secrets.token_hex(16)
    opaque = "opaque-" + secrets.token_hex(12)
    stack.workbench(json_response=True)
    stack.envoy("mcp-gateway", keys, demo_bundle)
    calls = [("read_file", {"path": "/repo/README.md", "note": opaque}),
             ("run_tests", {"suite": "unit", "env": {"API_KEY": detectable}})]
    replies = []
    with RawMcp(stack.mcp_url) as mcp:
        assert mcp.initialize().status == 200 and mcp.session_id
        for tool, args in calls:
            replies.append(mcp.call(tool, args))
    stack.wait_attested()
    stack.stop()  # flush every log
    # 1. No secret value in any log line, receipt header, or checkpoint receipt.
    logs = [stack.files["access_log"], stack.files["envoy_log"], stack.checkpoint_receipts()]
    for path in logs:
        text = path.read_text(errors="replace")
        assert detectable not in text and opaque not in text, f"secret in {path}"
    for r in replies:
        header = r.headers.get("x-portcullis-receipt")
        if header:
            decoded = json.dumps(pe.decode_receipt_header(header))
            assert detectable not in decoded and opaque not in decoded
    # 2. The receipts still name the actions and prove them: the digest of the original action
    #    (with the secret) matches; the same action with another value does not.
    lines = pe.read_jsonl(stack.files["access_log"])
    bodies = {b["action"]["tool"]: b for _, b in pe.tool_call_lines(lines)}
    assert set(bodies) == {"read_file", "run_tests"}, bodies.keys()
    for tool, args in calls:
        body = bodies[tool]
        assert sorted(args) == body["action"]["arg_keys"], "key names only"
        assert action_digest(body, sent_text(args)) == body["action"]["digest"], tool
        other = json.loads(json.dumps(args).replace(opaque, "x").replace(detectable, "x"))
        assert action_digest(body, sent_text(other)) != body["action"]["digest"]
        # The digest binds the text: the same value spelled otherwise is another digest.
        assert action_digest(body, json.dumps(args).encode()) != body["action"]["digest"]
    assert bodies["run_tests"]["action"]["secrets"] is True, "the detector saw the key, without logging it"
    # 3. And the log verifies.
    out = pe.policyc("receipts", "verify", *map(str, stack.receipt_logs()), "--pub",
                     str(keys.path("receipt", "pub")), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
