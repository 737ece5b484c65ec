"""A trapped VM never lets a request through unfiltered (real Envoy 1.40, V8).

The filter is built with the test-only cargo feature `fault-injection` into target/fault (never
the release module): it panics - a real `unreachable` trap in V8 - when a request carries
`x-portcullis-fault: trap` (in on_http_request_headers) or `trap-body` (in on_http_request_body).
The Envoy config is envoy-configs/fault-behaviour with the demo pack.

What Envoy 1.40 does, observed and asserted here:
- the trapping request: 503, empty body, access log `response_code_details` = `wasm_fail_stream`,
  never forwarded (under every failure_policy);
- FAIL_CLOSED: every later request on the worker gets the same 503, for good; upstream gets nothing;
- FAIL_RELOAD: later requests get that 503 until Envoy reloads the VM (about a second, its default
  backoff), then requests are filtered again - a denied tool still denied, an allowed one allowed;
  sessions survive (their state lives in Envoy's shared data, not in the VM);
- FAIL_OPEN: every later request passes UNFILTERED (a denied tool reaches the server). Never use it.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

import portcullis_e2e as pe
from raw import Reply, RawMcp

FAULT_WASM = Path(os.environ.get("PORTCULLIS_FAULT_WASM",
                                 pe.REPO / "target/fault/wasm32-wasip1/release/portcullis.wasm"))
FAULT_BUILD = ["cargo", "build", "-p", "portcullis-filter-wasm", "--target", "wasm32-wasip1", "--release",
               "--features", "fault-injection"]
RELOAD_DEADLINE_S = 30.0  # how long FAIL_RELOAD may take to bring the VM back before the test fails


@pytest.fixture(scope="session")
def fault_wasm(artifacts: None) -> Path:
    """The fault-injection .wasm in target/fault, (re)built from the current sources first: cargo
    does nothing when it is fresh, and takes a few minutes the first time."""
    if "PORTCULLIS_FAULT_WASM" in os.environ:
        return FAULT_WASM
    env = {**os.environ, "CARGO_TARGET_DIR": str(pe.REPO / "target/fault")}
    proc = subprocess.run(FAULT_BUILD, cwd=pe.REPO, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=1800)
    if proc.returncode != 0 or not FAULT_WASM.exists():
        pytest.fail(f"could not build the fault-injection filter (CARGO_TARGET_DIR=target/fault "
                    f"{' '.join(FAULT_BUILD)}):\n{proc.stderr[-3000:]}", pytrace=False)
    return FAULT_WASM


def _start(stack: pe.Stack, keys: pe.Keys, bundle: Path, wasm: Path, policy: str) -> None:
    stack.workbench(json_response=True)
    try:
        stack.envoy("fault-behaviour", keys, bundle, failure_policy=policy, values={"WASM": str(wasm)},
                    patch={"bundle": {"inline_base64": "{{bundle}}"}})
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)


def _filtered_session(stack: pe.Stack) -> RawMcp:
    """A session through the working filter: allowed read_file passes, delete_branch is denied."""
    mcp = RawMcp(stack.mcp_url)
    init = mcp.initialize()
    assert init.status == 200 and mcp.session_id, (init.status, init.text[:300])
    _assert_filtered(stack, mcp)
    return mcp


def _assert_filtered(stack: pe.Stack, mcp: RawMcp) -> None:
    before = len(pe.tool_calls(stack.upstream_requests(), "read_file"))
    read = mcp.call("read_file", {"path": "/repo/a"})
    assert read.status == 200 and read.error_code is None, (read.status, read.text[:300])
    assert "contents of /repo/a" in read.text
    assert len(pe.tool_calls(stack.upstream_requests(), "read_file")) == before + 1
    denied = mcp.call("delete_branch", {"branch": "main"})
    assert denied.error_code == -32040, (denied.status, denied.text[:300])
    assert denied.message["error"]["data"]["rule"] == "no_branch_deletion"


def _trap(mcp: RawMcp, where: str) -> Reply:
    # The trapping request asks for a denied tool: if it slipped through, upstream would show it.
    return mcp.call("delete_branch", {"branch": "trap"}, {"x-portcullis-fault": where})


def _is_vm_failure(r: Reply) -> bool:
    """Envoy's answer for a stream whose VM failed: bare 503, no body (no JSON-RPC from us)."""
    return r.status == 503 and r.text == ""


def _failed_lines(stack: pe.Stack, n: int) -> list[dict]:
    lines = stack.wait_access_log(n)
    return [line for line in lines if line.get("response_code_details") == "wasm_fail_stream"]


@pytest.mark.parametrize("where", ["trap", "trap-body"])
def test_fail_closed_trap_fails_every_later_request(where: str, stack: pe.Stack, keys: pe.Keys,
                                                    demo_bundle: Path, fault_wasm: Path) -> None:
    _start(stack, keys, demo_bundle, fault_wasm, "FAIL_CLOSED")
    mcp = _filtered_session(stack)
    seen = len(stack.upstream_requests())

    trapped = _trap(mcp, where)
    assert _is_vm_failure(trapped), (trapped.status, trapped.text[:300])
    assert "panicked at" in stack.files["envoy_log"].read_text(errors="replace")

    later = [mcp.call("read_file", {"path": "/repo/b"}), mcp.call("delete_branch", {"branch": "main"}),
             mcp.call("run_tests", {})]
    with RawMcp(stack.mcp_url) as fresh:
        later.append(fresh.initialize())
        later.append(fresh.call("read_file", {"path": "/repo/c"}))
    time.sleep(2.0)  # longer than FAIL_RELOAD's backoff: FAIL_CLOSED must not come back
    later.append(mcp.call("read_file", {"path": "/repo/d"}))
    mcp.close()
    for r in later:
        assert _is_vm_failure(r), (r.status, r.text[:300])
    assert len(stack.upstream_requests()) == seen, "nothing reaches the MCP server after the trap"
    assert pe.tool_calls(stack.upstream_requests(), "delete_branch") == []
    # 4 lines before the trap; then the trap, 3 calls, a fresh initialize + notification + call, 1 call.
    assert len(_failed_lines(stack, 4 + 8)) == 8


@pytest.mark.parametrize("where", ["trap", "trap-body"])
def test_fail_reload_fails_until_reload_then_filters_again(where: str, stack: pe.Stack, keys: pe.Keys,
                                                           demo_bundle: Path, fault_wasm: Path) -> None:
    _start(stack, keys, demo_bundle, fault_wasm, "FAIL_RELOAD")
    mcp = _filtered_session(stack)
    seen = len(stack.upstream_requests())

    trapped = _trap(mcp, where)
    assert _is_vm_failure(trapped), (trapped.status, trapped.text[:300])

    # Probe with a denied tool until the VM is back: each answer is either the VM-failure 503 or the
    # filter's denial; never the tool's result.
    failures, deadline = 0, time.monotonic() + RELOAD_DEADLINE_S
    while True:
        r = mcp.call("delete_branch", {"branch": "main"})
        if not _is_vm_failure(r):
            break
        failures += 1
        assert len(stack.upstream_requests()) == seen, "a request passed while the VM was down"
        assert time.monotonic() < deadline, f"FAIL_RELOAD did not bring the VM back in {RELOAD_DEADLINE_S}s"
        time.sleep(0.1)
    assert failures >= 1, "the request right after the trap must fail too (the VM is reloaded later)"
    assert r.error_code == -32040 and r.message["error"]["data"]["rule"] == "no_branch_deletion", \
        (r.status, r.text[:300])
    assert len(stack.upstream_requests()) == seen

    # Reloaded: the old session is still known and filtered; a new one is filtered too.
    _assert_filtered(stack, mcp)
    mcp.close()
    with RawMcp(stack.mcp_url) as fresh:
        init = fresh.initialize()
        assert init.status == 200 and fresh.session_id, (init.status, init.text[:300])
        _assert_filtered(stack, fresh)
    assert pe.tool_calls(stack.upstream_requests(), "delete_branch") == [], "a denied tool reached the server"


def test_fail_open_passes_everything_unfiltered_after_a_trap(stack: pe.Stack, keys: pe.Keys,
                                                            demo_bundle: Path, fault_wasm: Path) -> None:
    """Documents why FAIL_OPEN must not be used: after one trap, a denied tool reaches the server."""
    _start(stack, keys, demo_bundle, fault_wasm, "FAIL_OPEN")
    mcp = _filtered_session(stack)

    trapped = _trap(mcp, "trap")
    assert _is_vm_failure(trapped), (trapped.status, trapped.text[:300])
    assert pe.tool_calls(stack.upstream_requests(), "delete_branch") == [], "the trapping request itself is dropped"

    time.sleep(2.0)  # FAIL_OPEN does not reload the VM either: still unfiltered after this
    r = mcp.call("delete_branch", {"branch": "main"})
    mcp.close()
    assert r.status == 200 and r.error_code is None and "deleted main" in r.text, (r.status, r.text[:300])
    assert [m["params"]["arguments"] for _, m in pe.tool_calls(stack.upstream_requests(), "delete_branch")] \
        == [{"branch": "main"}]
    # No decision, no receipt: the access log line of the passed request carries none.
    last = stack.wait_access_log(4 + 1 + 1)[-1]
    assert last.get("response_code_details") == "via_upstream" and last.get("decision") in (None, "", "-"), last


def test_release_module_cannot_be_made_to_trap(fault_wasm: Path) -> None:
    """The trap hook exists only in the test build: the release .wasm never reads the header."""
    assert b"x-portcullis-fault" in fault_wasm.read_bytes()
    assert b"x-portcullis-fault" not in pe.WASM.read_bytes(), f"{pe.WASM} was built with fault-injection"
