"""Intent drift (AARM R7, issue 7) in a real Envoy with the official SDK client: a session that
declared the `triage` intent and keeps calling tools outside it drifts; every receipt carries the
running drift, and once it passes 0.6 the policy (`session.drift > 0.6`) asks for approval.
Policy: testdata/scenarios/policies/drift.pcl (formula: docs/filter.md, "Intent drift").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import portcullis_e2e as pe
from agent import APPROVAL_REQUIRED, Agent
from conftest import compile_or_fail

POLICY = Path(__file__).resolve().parents[2] / "testdata" / "scenarios" / "policies" / "drift.pcl"


@pytest.fixture(scope="module")
def bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_or_fail(POLICY, tmp_path_factory.mktemp("bundles") / "drift.bundle", keys)


def test_off_intent_calls_raise_drift_until_approval_is_required(stack: pe.Stack, keys: pe.Keys,
                                                                 bundle: Path) -> None:
    stack.workbench()
    stack.envoy("mcp-gateway", keys, bundle)

    async def run() -> list:
        async with Agent(stack.mcp_url, intent="triage", mode="legacy") as agent:
            out = [await agent.call("read_file", {"path": "/repo/README.md"})]
            for _ in range(5):
                out.append(await agent.call("send_email", {"to": "a@b.example", "subject": "s", "body": "b"}))
            return out

    outcomes = asyncio.run(run())
    assert [o.ok for o in outcomes] == [True, True, True, True, True, False], outcomes
    assert outcomes[-1].error_code == APPROVAL_REQUIRED and outcomes[-1].rule == "drifted", outcomes[-1]
    def drift() -> list[int]:
        return [body["drift_milli"] for _, body in pe.tool_call_lines(stack.access_log())]
    pe.wait_until("6 tools/call access log lines", lambda: len(drift()) >= 6, None, 10)
    # 0.4*lexical + 0.4*outside (+ escalation), moving average with factor 0.3 (docs/filter.md).
    assert drift() == [60, 282, 437, 546, 622, 676], drift()
