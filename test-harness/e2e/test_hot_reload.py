"""File-based ECDS: swapping the bundle (atomic rename of the ECDS file) changes the policy of a
running Envoy. A client sends requests continuously; the next request after the swap sees the new
policy, and no request fails."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import portcullis_e2e as pe
from conftest import compile_or_fail, reload_policy
from raw import RawMcp


def test_swap_bundle_under_traffic(stack: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    v1 = compile_or_fail(reload_policy(tmp_path, 1, "allow"), tmp_path / "v1.bundle", keys)
    v2 = compile_or_fail(reload_policy(tmp_path, 2, "deny"), tmp_path / "v2.bundle", keys)
    stack.workbench(json_response=True)
    stack.envoy("hot-reload", keys, v1)

    results: list[tuple[float, int, int | None, str]] = []
    stop = threading.Event()
    failures: list[str] = []

    def client() -> None:
        with RawMcp(stack.mcp_url, intent=None) as mcp:
            init = mcp.initialize()
            if init.status != 200:
                failures.append(f"initialize: {init.status} {init.text[:200]}")
                return
            deadline = time.monotonic() + 40
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    r = mcp.call("run_tests", {})
                except Exception as e:  # noqa: BLE001 - any transport failure is a test failure
                    failures.append(f"request failed: {e!r}")
                    continue
                m = r.message if isinstance(r.message, dict) else {}
                rule = ((m.get("error") or {}).get("data") or {}).get("rule", "")
                results.append((time.monotonic(), r.status, r.error_code, rule))
                time.sleep(0.01)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    pe.wait_until("v1 traffic", lambda: len(results) >= 20 or bool(failures), None, 20)
    subst = pe.render.substitutions(str(v2), str(keys.path("bundle", "pub")), str(keys.path("approver", "pub")))
    values = {"WASM": str(pe.WASM), "FAILURE_POLICY": "FAIL_CLOSED"}
    pe.render.write_atomic(stack.files["ecds"], pe.render.ecds_document(
        pe.render.plugin_config("hot-reload", subst), values, "2"))
    pe.wait_until("v2 decisions", lambda: any(code == -32040 for _, _, code, _ in results[-5:]) or bool(failures),
                  None, 20)
    after_switch = len(results)
    pe.wait_until("more v2 traffic", lambda: len(results) >= after_switch + 20 or bool(failures), None, 20)
    stop.set()
    t.join(15)

    assert not failures, failures
    assert all(status == 200 for _, status, _, _ in results), {s for _, s, _, _ in results}
    outcomes = ["v2" if code == -32040 and rule == "tests_v2" else ("v1" if code is None else f"?{code}{rule}")
                for _, _, code, rule in results]
    assert "?" not in "".join(o[0] for o in outcomes), outcomes
    first_v2 = outcomes.index("v2")
    assert all(o == "v1" for o in outcomes[:first_v2])
    assert all(o == "v2" for o in outcomes[first_v2:]), "once the new bundle is in, it stays in"
    # v1 let run_tests through; v2 never did.
    assert len(pe.tool_calls(stack.upstream_requests(), "run_tests")) == first_v2
