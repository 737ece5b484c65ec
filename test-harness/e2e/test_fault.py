"""A filter that cannot work never lets a request through: a corrupt bundle, a bundle signed by
a key the config does not trust, or a plugin configuration that is not even JSON. With
FAIL_CLOSED and with FAIL_RELOAD, every request is refused and the MCP server sees nothing.

These cases exercise the filter's own fail-closed path for a plugin that cannot configure; a real
VM trap under each failure_policy is tested in test_trap.py (test-only fault-injection build)."""

from __future__ import annotations

from pathlib import Path

import pytest

import portcullis_e2e as pe
from raw import RawMcp

BROKEN = ["corrupt-bundle", "untrusted-signer", "not-json"]


def _start(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path, broken: str, policy: str) -> None:
    stack.workbench(json_response=True)
    if broken == "corrupt-bundle":  # fault-behaviour/plugin-config.json as shipped
        stack.envoy("fault-behaviour", keys, demo_bundle, failure_policy=policy)
    elif broken == "untrusted-signer":
        stranger = keys.path("stranger", "pub").read_text().strip()
        stack.envoy("fault-behaviour", keys, demo_bundle, failure_policy=policy,
                    patch={"bundle": {"inline_base64": "{{bundle}}"}, "trusted_bundle_keys": [stranger]})
    else:
        stack.envoy("fault-behaviour", keys, demo_bundle, failure_policy=policy,
                    raw_plugin_config="bundle: yes please")


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", "FAIL_RELOAD"])
@pytest.mark.parametrize("broken", BROKEN)
def test_broken_filter_refuses_everything(broken: str, policy: str, stack: pe.Stack, keys: pe.Keys,
                                          demo_bundle: Path) -> None:
    try:
        _start(stack, keys, demo_bundle, broken, policy)
    except pe.E2EError as e:
        # Envoy refusing to start at all with a broken filter is also fail-closed; say so.
        pytest.fail(f"envoy did not start with a {broken} plugin config ({policy}): {e}")
    with RawMcp(stack.mcp_url) as mcp:
        answers = [mcp.initialize()]
        mcp.session_id = mcp.session_id or "no-session"
        answers += [mcp.call("read_file", {"path": "/repo/a"}) for _ in range(3)]
        answers.append(mcp.call("delete_branch", {"branch": "main"}))
    for r in answers:
        # The filter's documented fail-closed answer: JSON-RPC -32040, rule `filter:config`.
        assert r.error_code == -32040, (broken, policy, r.status, r.text[:300])
        assert r.message["error"]["data"]["rule"] == "filter:config"
    assert stack.upstream_requests() == [], "nothing reached the MCP server"
