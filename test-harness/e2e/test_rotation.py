"""Receipt signing key rotation in a running Envoy (docs/receipts.md, "Signing keys and rotation"):
the plugin configuration is swapped through file-based ECDS (envoy-configs/hot-reload) with a new
`signing_key` while an MCP session is open. The session's chain continues (next seq, prev = the
last hash) under the new key id; `policyc receipts verify` with the old and the new public key
verifies the whole log, and with only the new key reports the old receipts as `unknown_key`.
"""

from __future__ import annotations

import json
from pathlib import Path

import portcullis_e2e as pe
from conftest import compile_or_fail, reload_policy
from raw import RawMcp


def _patch(keys: pe.Keys, name: str) -> dict:
    return {"signing_key": {"env": None, "inline": keys.secret_line(name)},
            "receipts": {"checkpoint_every": 1}}


def _session_receipts(stack: pe.Stack, session: str) -> list[dict]:
    """Whole receipts (body, hash, sig) of ``session`` in the access log, in seq order."""
    out = []
    for line in stack.access_log():
        raw = line.get("receipt")
        if not raw or raw == "-":
            continue
        value = json.loads(raw)
        out.extend(r for r in (value if isinstance(value, list) else [value]) if r["body"]["session"] == session)
    return sorted(out, key=lambda r: r["body"]["seq"])


def test_key_rotation_mid_session_keeps_the_chain(stack: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    pe.policyc("keygen", "--out", str(keys.dir / "receipt2"))
    bundle = compile_or_fail(reload_policy(tmp_path, 1, "allow"), tmp_path / "v1.bundle", keys)
    stack.workbench(json_response=True)
    stack.envoy("hot-reload", keys, bundle, patch=_patch(keys, "receipt"))
    with RawMcp(stack.mcp_url, intent=None) as mcp:
        assert mcp.initialize().status == 200 and mcp.session_id
        for _ in range(3):
            assert mcp.call("run_tests", {}).error_code is None
        session = mcp.session_id

        def kid_of_next_call() -> str:
            r = mcp.call("run_tests", {})
            assert r.error_code is None, r.text
            return pe.decode_receipt_header(r.headers["x-portcullis-receipt"])["sig"]["kid"]

        first_kid = kid_of_next_call()  # before the swap: the old key
        subst = pe.render.substitutions(str(bundle), str(keys.path("bundle", "pub")),
                                        str(keys.path("approver", "pub")))
        values = {"WASM": str(pe.WASM), "FAILURE_POLICY": "FAIL_CLOSED"}
        pe.render.write_atomic(stack.files["ecds"], pe.render.ecds_document(
            pe.render.plugin_config("hot-reload", subst, _patch(keys, "receipt2")), values, "2"))
        # The swap takes effect within moments; until then the old key signs.
        pe.wait_until("receipts signed by the new key", lambda: kid_of_next_call() != first_kid, None, 20)
        for _ in range(2):
            assert mcp.call("run_tests", {}).error_code is None
    stack.stop()
    receipts = _session_receipts(stack, session)
    kids = [r["sig"]["kid"] for r in receipts]
    assert kids[0] == first_kid and kids[-1] != first_kid
    switch = next(i for i, k in enumerate(kids) if k != first_kid)
    assert all(k == first_kid for k in kids[:switch]) and len(set(kids[switch:])) == 1, kids
    # The chain did not restart at the rotation: next seq, prev = the previous receipt's hash.
    before, after = receipts[switch - 1], receipts[switch]
    assert after["body"]["seq"] == before["body"]["seq"] + 1
    assert after["body"]["prev"] == before["hash"]
    logs = [str(p) for p in stack.receipt_logs()]
    both = pe.policyc("receipts", "verify", *logs, "--pub", str(keys.path("receipt", "pub")),
                      "--pub", str(keys.path("receipt2", "pub")), check=False)
    assert both.returncode == 0, both.stdout + both.stderr
    only_new = pe.policyc("receipts", "verify", *logs, "--pub", str(keys.path("receipt2", "pub")), check=False)
    assert only_new.returncode == 1 and "unknown_key" in only_new.stdout, only_new.stdout
