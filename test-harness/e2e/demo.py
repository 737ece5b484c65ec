"""The README demo: one scripted agent session through a real Envoy running Portcullis.

Generates demo keys into out/demo/keys, compiles and signs examples/policies/demo/policy.pcl,
renders envoy-configs/mcp-gateway, starts the workbench MCP server and Envoy on free loopback
ports, drives the session with the official MCP SDK client (printing every decision as it
happens), stops everything, and verifies the receipts in Envoy's access log with
`policyc receipts verify`. Exit status 0 only if every action got the expected decision and the
receipt chain verifies. Run it through scripts/demo (which builds everything first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import portcullis_e2e as pe  # noqa: E402
from agent import Agent, Outcome  # noqa: E402

OUT = Path(os.environ.get("PORTCULLIS_DEMO_OUT", pe.REPO / "out" / "demo"))
COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
PAINT = {"ALLOW": "32", "MODIFY": "36", "STEP_UP": "33", "DEFER": "35", "DENY": "31"}

# (tool, arguments, expected decision, what the demo shows)
SCRIPT: list[tuple[str, dict, str, str]] = [
    ("read_file", {"path": "/repo/README.md"}, "ALLOW", "reading the repository"),
    ("query_db", {"sql": "select name, salary from payroll", "limit": 500}, "MODIFY",
     "a query for 500 rows is clamped"),
    ("deploy", {"env": "production", "version": "v2.4.1"}, "STEP_UP",
     "a production deploy needs a release manager"),
    ("send_email", {"to": "partner@outside.example", "subject": "payroll", "body": "see attached"}, "DENY",
     "mail to an outside address is DEFERred; no context service answers, so it is denied"),
    ("delete_branch", {"branch": "main"}, "DENY", "deleting a branch"),
    ("fetch_url", {"url": "https://docs.example/release-notes"}, "ALLOW",
     "fetching a page (its text carries an injected instruction; the session is tainted)"),
    ("get_secret", {"name": "prod-db"}, "DENY", "the injected instruction asks for a secret: kill"),
    ("run_tests", {}, "DENY", "anything after the kill"),
]


def rel(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(pe.REPO))
    except ValueError:
        return str(path)


def paint(decision: str | None) -> str:
    """The decision, coloured on a terminal."""
    text = decision or "?"
    return f"\033[{PAINT.get(text, '0')}m{text}\033[0m" if COLOR else text


def show(n: int, tool: str, args: dict, out: Outcome, note: str) -> None:
    """Print one action as the agent experienced it."""
    print(f"[{n}] {tool} {json.dumps(args)}")
    print(f"    {note}")
    rule = f" rule={out.rule}" if out.rule else ""
    print(f"    -> {paint(out.decision)}{rule}: {out.reason}")
    if out.ok:
        first = out.text.strip().splitlines()[0] if out.text.strip() else ""
        print(f"    result: {first[:110]}")
    else:
        print(f"    JSON-RPC error {out.error_code}: {out.error_message}")
    if out.receipt:
        seq = out.receipt.get("body", out.receipt).get("seq")
        print(f"    receipt: seq={seq} hash={str(out.receipt.get('hash', ''))[:16]}…")


async def session(url: str, keys: pe.Keys) -> list[str]:
    """Drive the scripted session; returns a list of problems (empty = as expected)."""
    problems: list[str] = []
    async with Agent(url, intent="demo_task") as agent:
        print(f"agent connected (legacy Streamable HTTP, Mcp-Session-Id {agent.session_id}), intent demo_task\n")
        for n, (tool, args, expected, note) in enumerate(SCRIPT, 1):
            out = await agent.call(tool, args)
            show(n, tool, args, out, note)
            if out.decision != expected:
                problems.append(f"{tool}: expected {expected}, got {out.decision} ({out.reason})")
            if tool == "query_db" and out.ok and '"limit": 500' in out.text:
                problems.append("query_db: the upstream still saw limit 500 (not clamped)")
            req = out.approval_request
            if expected == "STEP_UP" and req:
                print(f"    approval request: digest={req.get('digest')} group={req.get('group')}")
                token = pe.policyc("approve", "--digest", str(req.get("digest")), "--group",
                                   str(req.get("group")), "--key", str(keys.path("approver", "key")),
                                   "--ttl", "15m").stdout.strip()
                print(f"    a release manager approves: policyc approve --digest … -> token {token[:24]}…")
                retry = await agent.call(tool, args, approval=token)
                show(n, tool, args, retry, "retry carrying x-portcullis-approval")
                if retry.decision != "ALLOW" or not retry.ok:
                    problems.append(f"{tool} with approval: expected ALLOW, got {retry.decision} ({retry.reason})")
            elif expected == "STEP_UP":
                problems.append(f"{tool}: no approval_request in the STEP_UP answer")
            print()
        print("closing the session (the SDK sends DELETE; a killed session refuses that too)\n")
    return problems


def main() -> int:
    """Run the demo; 0 on success."""
    # The SDK logs a warning when its closing DELETE is refused; the demo says so itself.
    logging.getLogger("mcp.client.streamable_http").setLevel(logging.ERROR)
    try:
        pe.require_artifacts()
        keys = pe.Keys.generate(OUT / "keys")
        bundle = pe.compile_bundle(pe.DEMO_POLICY, OUT / "demo.bundle", keys)
        print(f"policy: {pe.DEMO_POLICY.relative_to(pe.REPO)} -> {bundle.relative_to(pe.REPO)} "
              f"({bundle.stat().st_size} bytes, signed with {keys.path('bundle', 'pub').name})")
        shutil.rmtree(OUT / "run", ignore_errors=True)  # logs of an earlier run would mix chains
        with pe.stack(OUT / "run") as s:
            s.workbench()
            s.envoy("mcp-gateway", keys, bundle)
            print(f"envoy: {s.mcp_url} -> workbench 127.0.0.1:{s.ports['workbench']} "
                  f"(config {s.files['envoy_yaml'].relative_to(pe.REPO)})\n")
            problems = asyncio.run(session(s.mcp_url, keys))
            log = s.files["access_log"]
            # ALLOW receipts are signed in batches; the filter's timer signs the unsigned tail of
            # each session within receipts.max_unsigned_ms (1 s in this config).
            print("waiting for the filter to sign a checkpoint over every session's last receipts ...")
            s.wait_attested()
        # Envoy flushed the access log when it stopped; checkpoints and session ends are in
        # Envoy's own log. The SOC command of the README reads both, as written.
        envoy_log = s.files["envoy_log"]
        lines = pe.read_jsonl(log)
        with_receipt = [line for line in lines if line.get("receipt")]
        print(f"access log: {rel(log)}: {len(lines)} lines, {len(with_receipt)} with a receipt; "
              f"{len(pe.read_jsonl(s.checkpoint_receipts()))} checkpoint receipt(s) in Envoy's log "
              f"{rel(envoy_log)}")
        pub = keys.path("receipt", "pub")
        verify = pe.policyc("receipts", "verify", str(log), str(envoy_log), "--pub", str(pub), check=False)
        print(f"$ policyc receipts verify {rel(log)} {rel(envoy_log)} --pub {rel(pub)}")
        print((verify.stdout + verify.stderr).replace(str(pe.REPO) + "/", "").rstrip())
        if verify.returncode != 0:
            problems.append(f"receipts verify exited {verify.returncode}")
            if "reordered" in verify.stdout:
                problems.append("note: Envoy writes a request's access-log line when its stream ENDS, so a "
                                "long-lived stream (the SDK's standalone GET) is logged after later actions; "
                                "the chain itself (seq + prev hash) fixes the order")
        if not with_receipt:
            problems.append("no receipt in the access log")
    except pe.E2EError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    if problems:
        print("\ndemo FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("\ndemo OK: every decision as expected, receipts verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
