"""Envoy's JSON access log: one line per action carrying decision, rule and receipt; the
receipt chain verifies offline with `policyc receipts verify`, and tampering is caught."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import portcullis_e2e as pe
from agent import Agent

SESSION = [("read_file", {"path": "/repo/README.md"}, "ALLOW", "read_repo"),
           ("query_db", {"sql": "select 1", "limit": 1000}, "MODIFY", "bounded_queries"),
           ("delete_branch", {"branch": "main"}, "DENY", "no_branch_deletion"),
           ("fetch_url", {"url": "https://docs.example/x"}, "ALLOW", "fetched_untrusted"),
           ("get_secret", {"name": "prod-db"}, "DENY", "secret_after_untrusted"),
           ("run_tests", {}, "DENY", "session:killed")]


def _run_session(stack: pe.Stack) -> str | None:
    async def go():
        async with Agent(stack.mcp_url, intent="demo_task") as agent:
            for tool, args, _, _ in SESSION:
                await agent.call(tool, args)
            return agent.session_id
    return asyncio.run(go())


def _verify(log: Path, keys: pe.Keys):
    return pe.policyc("receipts", "verify", str(log), "--pub", str(keys.path("receipt", "pub")), check=False)


def test_access_log_receipts_verify_and_tampering_is_caught(gateway: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    _run_session(gateway)
    log = gateway.files["access_log"]
    gateway.stop()  # Envoy flushes its access log on exit
    lines = pe.read_jsonl(log)
    calls = [line for line in lines if line.get("mcp_method") == "tools/call"]
    assert [(c["decision"], c["rule"]) for c in calls] == [(d, r) for _, _, d, r in SESSION]
    for c in calls:
        receipt = json.loads(c["receipt"])
        assert receipt, c
    # The chain is intact.
    ok = _verify(log, keys)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Alter one decision: caught.
    altered = tmp_path / "altered.log"
    text = log.read_text().splitlines()
    idx = next(i for i, line in enumerate(text) if json.loads(line).get("rule") == "no_branch_deletion")
    text[idx] = text[idx].replace('\\"DENY\\"', '\\"ALLOW\\"')
    assert text[idx] != log.read_text().splitlines()[idx], "the receipt JSON names the decision"
    altered.write_text("\n".join(text) + "\n")
    bad = _verify(altered, keys)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    # Drop one line: caught.
    dropped = tmp_path / "dropped.log"
    text = log.read_text().splitlines()
    del text[idx]
    dropped.write_text("\n".join(text) + "\n")
    gap = _verify(dropped, keys)
    assert gap.returncode == 1, gap.stdout + gap.stderr
    # A different key does not verify it.
    foreign = _verify_with(log, keys.path("stranger", "pub"))
    assert foreign.returncode == 1, foreign.stdout + foreign.stderr


def _verify_with(log: Path, pub: Path):
    return pe.policyc("receipts", "verify", str(log), "--pub", str(pub), check=False)
