"""The AARM evidence report (issue 20, docs/aarm.md): one automated check per row of the AARM
testing protocol, each against a real Envoy with the filter (the e2e harness: portcullis_e2e),
the official MCP SDK client and the workbench MCP server.

For each row the report gives the requirement, the test, the expected and the observed result,
the receipts the check produced, verified with `policyc receipts verify` (and a timeline page of
the check's main session), and pass or fail. It is honest: a row the product does not meet yet
fails, and names the open issue. Such a *known gap* does not fail the run; any other failing row
does (exit 1), as does a row whose receipts do not verify.

Writes OUT/report.md, OUT/report.html (self-contained), OUT/report.json, OUT/timelines/*.html and
the raw logs under OUT/run/<row>/. OUT is $PORTCULLIS_EVIDENCE_OUT or out/evidence.
Run through scripts/evidence.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import credentials_stack as cs  # noqa: E402
import httpx  # noqa: E402
import jwt  # noqa: E402
import portcullis_e2e as pe  # noqa: E402
from agent import Agent, Outcome  # noqa: E402
from raw import RawMcp  # noqa: E402
from raw import Reply as RawReply  # noqa: E402
from raw import RawMcp  # noqa: E402

OUT = Path(os.environ.get("PORTCULLIS_EVIDENCE_OUT", pe.REPO / "out" / "evidence"))
DRIFT_POLICY = pe.REPO / "testdata" / "scenarios" / "policies" / "drift.pcl"


@dataclass
class Row:
    """One row of the report."""

    id: str
    req: str
    requirement: str
    test: str
    expected: str
    gap: str | None = None  # an open issue this row is known to fail on
    observed: str = ""
    passed: bool = False
    receipts: list[dict] = field(default_factory=list)
    verify: str = ""
    verified: bool | None = None
    timeline: str | None = None
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """PASS, FAIL (known gap: #N) or FAIL."""
        if self.passed:
            return "PASS"
        return f"FAIL (known gap, {self.gap})" if self.gap else "FAIL"


@dataclass
class Ctx:
    """What every check shares: keys and compiled bundles."""

    keys: pe.Keys
    demo: Path
    drift: Path
    credentials: Path


Check = Callable[[Ctx, pe.Stack, Row], tuple[bool, str]]
CHECKS: list[tuple[Row, Check]] = []


def check(id: str, req: str, requirement: str, test: str, expected: str, gap: str | None = None):
    """Register a check function for one row."""
    def wrap(fn: Check) -> Check:
        CHECKS.append((Row(id, req, requirement, test, expected, gap), fn))
        return fn
    return wrap


def agent_calls(url: str, calls: list[tuple[str, dict]], *, intent: str = "demo_task",
                headers: dict[str, str] | None = None) -> list[Outcome]:
    """One MCP session (official SDK client) making ``calls`` in order."""
    async def go() -> list[Outcome]:
        async with Agent(url, intent=intent, headers=headers) as agent:
            return [await agent.call(tool, args) for tool, args in calls]
    return asyncio.run(go())


def said(o: Outcome) -> str:
    """An outcome in a few words."""
    return f"{o.tool}: {o.decision} (rule `{o.rule}`)"


def gateway(s: pe.Stack, ctx: Ctx, bundle: Path | None = None, **kw) -> None:
    """Workbench behind the mcp-gateway Envoy."""
    s.workbench(json_response=kw.pop("json_response", False))
    s.envoy("mcp-gateway", ctx.keys, bundle or ctx.demo, **kw)


def tool_receipts(s: pe.Stack, n: int, what: Callable[[dict], bool] = lambda b: True) -> list[dict]:
    """Wait until the access log holds ``n`` tools/call receipts matching ``what``; their bodies."""
    def found() -> list[dict]:
        return [b for _, b in pe.tool_call_lines(s.access_log()) if what(b)]
    pe.wait_until(f"{n} tools/call receipt(s) in the access log", lambda: len(found()) >= n, None, 10)
    return found()


def tampered(log: Path, out: Path, old: str, new: str) -> Path:
    """A copy of ``log`` with the first ``old`` replaced by ``new`` (inside a receipt)."""
    text = log.read_text()
    if old not in text:
        raise pe.E2EError(f"nothing to tamper with: `{old}` is not in {log}")
    out.write_text(text.replace(old, new, 1))
    return out


def verify(ctx: Ctx, *logs: Path) -> subprocess.CompletedProcess[str]:
    """`policyc receipts verify` on ``logs`` with the run's receipt key."""
    return pe.policyc("receipts", "verify", *map(str, logs), "--pub", str(ctx.keys.path("receipt", "pub")),
                      check=False)


# -- R1 ------------------------------------------------------------------------------------------

@check("R1.1", "R1", "intercept every action before it executes",
       "an action the policy denies (`delete_branch`) is submitted through Envoy",
       "DENY, and the MCP server receives nothing for it")
def r1_denied_never_reaches(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx)
    [out] = agent_calls(s.mcp_url, [("delete_branch", {"branch": "main"})])
    sent = pe.tool_calls(s.upstream_requests(), "delete_branch")
    return (out.decision == "DENY" and not out.ok and not sent,
            f"{said(out)}; the MCP server received {len(sent)} delete_branch call(s)")


@check("R1.2", "R1", "intercept every action before it executes",
       "make the AARM system unavailable (the filter's bundle is corrupt) and submit an action the "
       "policy would allow (`read_file`)",
       "the action fails (refused with the filter's fail-closed answer); the MCP server receives nothing")
def r1_unavailable_fails(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    s.workbench(json_response=True)
    s.envoy("fault-behaviour", ctx.keys, ctx.demo, failure_policy="FAIL_CLOSED")
    with RawMcp(s.mcp_url) as mcp:
        init = mcp.initialize()
        mcp.session_id = mcp.session_id or "no-session"
        call = mcp.call("read_file", {"path": "/repo/README.md"})
    rule = (call.message or {}).get("error", {}).get("data", {}).get("rule") if call.error_code else None
    upstream = s.upstream_requests()
    ok = init.error_code == -32040 and call.error_code == -32040 and rule == "filter:config" and not upstream
    return ok, (f"initialize: JSON-RPC error {init.error_code}; read_file: JSON-RPC error {call.error_code} "
                f"rule `{rule}`; the MCP server received {len(upstream)} request(s)")


# -- R2 ------------------------------------------------------------------------------------------

@check("R2.1", "R2", "accumulate context: intent, prior actions, task thread",
       "in one session: fetch a page whose text carries an injected instruction (`fetch_url`), then "
       "read a secret (`get_secret`), then run the tests",
       "the fetch taints the session; the secret read is denied by `secret_after_untrusted` and kills "
       "the session; the test run is denied by `session:killed`")
def r2_context_composes(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx)
    f, g, t = agent_calls(s.mcp_url, [("fetch_url", {"url": "https://docs.example/release-notes"}),
                                      ("get_secret", {"name": "prod-db"}), ("run_tests", {})])
    ok = (f.decision == "ALLOW" and g.decision == "DENY" and g.rule == "secret_after_untrusted"
          and t.decision == "DENY" and t.rule == "session:killed")
    return ok, "; ".join(map(said, (f, g, t)))


@check("R2.2", "R2", "accumulate context: intent, prior actions, task thread",
       "after the session of the same verified agent (trusted `x-agent-id` header) was killed, the "
       "agent opens a new session and reads a file",
       "DENY: containment belongs to the agent, so a new session does not shed it")
def r2_kill_outlives_session(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    patch = {"identity": {"headers": {"agent": "x-agent-id"}}}
    gateway(s, ctx, values=None, patch=patch)
    who = {"x-agent-id": "spiffe://example.org/agent/evidence"}
    first = agent_calls(s.mcp_url, [("fetch_url", {"url": "https://docs.example/release-notes"}),
                                    ("get_secret", {"name": "prod-db"})], headers=who)
    killed = first[1].decision == "DENY" and first[1].rule == "secret_after_untrusted"
    # A raw client, so a refused `initialize` is an answer, not an exception: the new session's
    # `initialize`, then a call under a session id the agent never used.
    with RawMcp(s.mcp_url) as mcp:
        mcp.http.headers.update(who)
        init = mcp.initialize()
        mcp.session_id = mcp.session_id or "a-session-the-agent-never-used"
        again = mcp.call("read_file", {"path": "/repo/README.md"})
    rules = [error_rule(init), error_rule(again)]
    contained = init.error_code is not None and again.error_code is not None
    return (killed and contained,
            f"first session: {said(first[1])}; new session of the same agent: initialize denied "
            f"by `{rules[0]}`, read_file denied by `{rules[1]}`; read_file calls executed: "
            f"{len(pe.tool_calls(s.upstream_requests(), 'read_file'))}")


def error_rule(r: RawReply) -> str | None:
    """The rule of a JSON-RPC error answer from the filter."""
    m = r.message if isinstance(r.message, dict) else {}
    return ((m.get("error") or {}).get("data") or {}).get("rule")


# -- R3 ------------------------------------------------------------------------------------------

@check("R3.1", "R3", "evaluate each action against policy and its alignment with the stated intent",
       "under the declared intent `demo_task`, call a tool the intent names (`run_tests`) and one it "
       "does not (`write_file`, which the MCP server offers)",
       "`run_tests` ALLOW; `write_file` DENY by the intent's outside rule `intent:demo_task`")
def r3_intent(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx)
    a, b = agent_calls(s.mcp_url, [("run_tests", {}),
                                   ("write_file", {"path": "/repo/x", "content": "y", "branch": "main"})])
    ok = a.decision == "ALLOW" and b.decision == "DENY" and b.rule == "intent:demo_task"
    return ok, f"{said(a)}; {said(b)}; the MCP server received {len(pe.tool_calls(s.upstream_requests(), 'write_file'))} write_file call(s)"


# -- R4 ------------------------------------------------------------------------------------------

@check("R4.1", "R4", "five decisions: ALLOW, DENY, MODIFY, STEP_UP, DEFER",
       "one session calls `read_file`, `query_db` with limit 500, `deploy` to production, "
       "`send_email` to an outside address (a context service answers allow) and `delete_branch`",
       "ALLOW, MODIFY (limit clamped to 100 at the server), STEP_UP, DEFER (then resolved), DENY")
def r4_five(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    s.context_service("allow")
    gateway(s, ctx)
    outs = agent_calls(s.mcp_url, [("read_file", {"path": "/repo/README.md"}),
                                   ("query_db", {"sql": "select name from payroll", "limit": 500}),
                                   ("deploy", {"env": "production", "version": "v1"}),
                                   ("send_email", {"to": "x@outside.example", "subject": "s", "body": "b"}),
                                   ("delete_branch", {"branch": "main"})])
    decided = [b.get("decision") for b in tool_receipts(s, 6)]
    [(_, q)] = pe.tool_calls(s.upstream_requests(), "query_db")
    limit = q["params"]["arguments"]["limit"]
    ok = {"ALLOW", "MODIFY", "STEP_UP", "DEFER", "DENY"} <= set(decided) and limit == 100
    return ok, (f"agent saw: {', '.join(map(said, outs))}; receipts: {', '.join(map(str, decided))}; "
                f"query_db reached the server with limit {limit}")


@check("R4.2", "R4", "five decisions: ALLOW, DENY, MODIFY, STEP_UP, DEFER",
       "STEP_UP with no timely response: `deploy` to production is asked; the approval (1 s token) "
       "arrives only after it expired, and the agent retries with it",
       "the action never executes: STEP_UP, then DENY for the expired approval; the server receives no deploy")
def r4_step_up_timeout(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx)

    async def go() -> tuple[Outcome, Outcome]:
        async with Agent(s.mcp_url, intent="demo_task") as agent:
            asked = await agent.call("deploy", {"env": "production", "version": "v1"})
            req = asked.approval_request or {}
            token = pe.policyc("approve", "--digest", str(req.get("digest")), "--group", str(req.get("group")),
                               "--key", str(ctx.keys.path("approver", "key")), "--ttl", "1s").stdout.strip()
            await asyncio.sleep(2.2)
            late = await agent.call("deploy", {"env": "production", "version": "v1"}, approval=token)
            return asked, late

    asked, late = asyncio.run(go())
    sent = pe.tool_calls(s.upstream_requests(), "deploy")
    ok = asked.decision == "STEP_UP" and late.decision == "DENY" and not late.ok and not sent
    return ok, f"{said(asked)}; retry with the expired token: {said(late)} ({late.reason}); deploys executed: {len(sent)}"


@check("R4.3", "R4", "five decisions: ALLOW, DENY, MODIFY, STEP_UP, DEFER",
       "DEFER with no answer in time: `send_email` to an outside address is deferred to a context "
       "service that answers only after 3 s (the rule's timeout is 300 ms)",
       "DENY soon after the timeout, recorded as a resolved DEFER; the server receives no email")
def r4_defer_timeout(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    s.context_service("allow", delay_s=3.0)
    gateway(s, ctx)

    async def go() -> tuple[Outcome, float]:
        async with Agent(s.mcp_url, intent="demo_task") as agent:
            t0 = time.monotonic()
            out = await agent.call("send_email", {"to": "x@outside.example", "subject": "s", "body": "b"})
            return out, time.monotonic() - t0

    out, took = asyncio.run(go())
    resolved = tool_receipts(s, 1, lambda b: b.get("event") == "defer_resolved")
    sent = pe.tool_calls(s.upstream_requests(), "send_email")
    ok = out.decision == "DENY" and took < 2.5 and not sent and any(b.get("decision") == "DENY" for b in resolved)
    return ok, (f"{said(out)} ({out.reason}) {took:.2f} s after the call was sent; "
                f"defer_resolved receipts: {[b.get('decision') for b in resolved]}; emails sent: {len(sent)}")


# -- R5 ------------------------------------------------------------------------------------------

@check("R5.1", "R5", "a tamper-evident receipt for every evaluated action",
       "a session of five tool calls; the access log and Envoy's log are verified with the receipt key",
       "one receipt per tool call, carrying decision, rule, timestamp and bundle; the log verifies (exit 0)")
def r5_receipts(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx)
    calls = [("read_file", {"path": "/repo/README.md"}), ("run_tests", {}),
             ("query_db", {"sql": "select 1", "limit": 5}), ("delete_branch", {"branch": "x"}),
             ("list_dir", {"path": "/repo"})]
    agent_calls(s.mcp_url, calls)
    s.wait_attested()
    s.stop()
    lines = pe.tool_call_lines(s.access_log())
    complete = all(b.get("decision") and b.get("rule") and b.get("ts_ms") and b.get("bundle") for _, b in lines)
    v = verify(ctx, *s.receipt_logs())
    ok = len(lines) == len(calls) and complete and v.returncode == 0
    return ok, f"{len(lines)} tools/call receipt(s) for {len(calls)} calls, all fields present: {complete}; verify exit {v.returncode}: {v.stdout.strip().splitlines()[-1]}"


@check("R5.2", "R5", "a tamper-evident receipt for every evaluated action",
       "tamper with the policy hash (`bundle.hash`) in one receipt of the access log, then with a decision",
       "verification fails (exit 1) and names the receipt as `altered`, both times")
def r5_tamper(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx)
    agent_calls(s.mcp_url, [("read_file", {"path": "/repo/README.md"}), ("delete_branch", {"branch": "x"})])
    s.wait_attested()
    s.stop()
    access, envoy_log = s.receipt_logs()
    [(_, body)] = [lb for lb in pe.tool_call_lines(s.access_log()) if lb[1]["action"]["tool"] == "delete_branch"]
    h = body["bundle"]["hash"]
    results = []
    for name, old, new in (("bundle hash", f'\\"hash\\":\\"{h}\\"', f'\\"hash\\":\\"{"0" * 64}\\"'),
                           ("decision", '\\"decision\\":\\"DENY\\"', '\\"decision\\":\\"ALLOW\\"')):
        forged = tampered(access, s.dir / f"access-{name.replace(' ', '-')}.log", old, new)
        v = verify(ctx, forged, envoy_log)
        results.append((name, v.returncode, "altered" in v.stdout))
    ok = all(rc == 1 and altered for _, rc, altered in results)
    return ok, "; ".join(f"{n} changed: verify exit {rc}, altered reported: {a}" for n, rc, a in results)


# -- R6 ------------------------------------------------------------------------------------------

@check("R6.1", "R6", "every receipt cryptographically bound to an agent identity",
       "the agent is identified by a trusted source (here a header a trusted hop sets; mTLS and JWT "
       "are in test_identity.py); then the requester identity in its receipt is changed",
       "the receipt names the agent and how it was authenticated; after the change verification "
       "fails (exit 1, `altered`)")
def r6_identity(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx, patch={"identity": {"headers": {"agent": "x-agent-id", "human": "x-human-id"}}})
    who = {"x-agent-id": "spiffe://example.org/agent/evidence", "x-human-id": "alice@example.org"}
    agent_calls(s.mcp_url, [("delete_branch", {"branch": "x"})], headers=who)
    s.wait_attested()
    s.stop()
    [(_, body)] = pe.tool_call_lines(s.access_log())
    ident = body.get("identity") or {}
    named = (ident.get("agent") == {"auth": "header", "id": who["x-agent-id"]}
             and ident.get("human") == {"auth": "header", "id": who["x-human-id"]})
    access, envoy_log = s.receipt_logs()
    forged = tampered(access, s.dir / "access-identity.log", "spiffe://example.org/agent/evidence",
                      "spiffe://example.org/agent/someone-else")
    v = verify(ctx, forged, envoy_log)
    return (named and v.returncode == 1 and "altered" in v.stdout,
            f"receipt identity {json.dumps(ident)}; identity changed: verify exit {v.returncode}, altered reported: {'altered' in v.stdout}")


# -- R7 ------------------------------------------------------------------------------------------

@check("R7.1", "R7", "track distance from the stated intent and flag drift",
       "a session declaring intent `triage` reads a file, then keeps sending email (outside the intent); "
       "policy testdata/scenarios/policies/drift.pcl asks for approval when `session.drift > 0.6`",
       "drift in every receipt rises with each off-intent call; the call that crosses 0.6 gets STEP_UP (`drifted`)")
def r7_drift(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx, bundle=ctx.drift)
    mail = ("send_email", {"to": "a@b.example", "subject": "s", "body": "b"})
    outs = agent_calls(s.mcp_url, [("read_file", {"path": "/repo/README.md"}), *[mail] * 5], intent="triage")
    drift = [b.get("drift_milli") for b in tool_receipts(s, 6)]
    rising = all(isinstance(d, int) for d in drift) and drift == sorted(drift) and len(set(drift)) == len(drift)
    ok = rising and outs[-1].decision == "STEP_UP" and outs[-1].rule == "drifted" and drift[-1] > 600
    return ok, f"drift_milli per receipt {drift}; last call: {said(outs[-1])}"


# -- R8 ------------------------------------------------------------------------------------------

@check("R8.1", "R8", "export action telemetry in a standard format (OpenTelemetry)",
       "envoy-configs/otel: Envoy's OpenTelemetry access logger sends to an OTLP/gRPC collector; an "
       "allowed and a denied call are made",
       "one OTLP log record per call with `portcullis.decision`, `portcullis.rule` and the receipt; "
       "the exported receipts verify on their own")
def r8_otlp(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    from test_export import otlp_collector, start_otel_gateway, tool_record

    with otlp_collector() as (col, port):
        s.workbench(json_response=True)
        start_otel_gateway(s, ctx.keys, ctx.demo, port)
        with RawMcp(s.mcp_url) as mcp:
            mcp.initialize()
            mcp.call("read_file", {"path": "/repo/README.md"})
            mcp.call("delete_branch", {"branch": "release"})
        recs = col.wait("read_file and delete_branch records",
                        lambda rs: tool_record(rs, "read_file") and tool_record(rs, "delete_branch"))
    got = {}
    for tool in ("read_file", "delete_branch"):
        [rec] = tool_record(recs, tool)
        got[tool] = (rec["attributes"].get("portcullis.decision"), rec["attributes"].get("portcullis.rule"))
    exported = s.dir / "otlp-receipts.jsonl"
    exported.write_text("".join(json.dumps({"receipt": r["attributes"]["portcullis.receipt"]}) + "\n"
                                for r in recs if r["attributes"].get("portcullis.receipt") not in (None, "-")))
    v = verify(ctx, exported)
    ok = got == {"read_file": ("ALLOW", "read_repo"), "delete_branch": ("DENY", "no_branch_deletion")} and v.returncode == 0
    return ok, f"OTLP records: {got}; {len(recs)} record(s) in all; exported receipts verify: exit {v.returncode}"


# -- R9 ------------------------------------------------------------------------------------------

@check("R9.1", "R9", "least privilege of tool access at execution time",
       "under intent `demo_task`, the agent lists the tools (the server offers write_file, git_push, create_pr too)",
       "the list shows only tools the session may call: write_file, git_push and create_pr are hidden")
def r9_tools_list(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    gateway(s, ctx)

    async def go() -> list[str]:
        async with Agent(s.mcp_url, intent="demo_task") as agent:
            return await agent.list_tools()

    names = asyncio.run(go())
    hidden = {"write_file", "git_push", "create_pr"}
    return bool(names) and not hidden & set(names), f"tools/list answered {sorted(names)}"


@check("R9.2", "R9", "least-privilege scoping of agent credentials at execution time",
       "on envoy-configs/credentials, an agent reads a ticket carrying its standing credential (a JWT "
       "`jwt_authn` verified); then the credential the destination received is replayed for a write",
       "the destination receives a token minted for this action by the STS (audience the destination, "
       "read scope), never the agent's standing token; replayed for a write, it is refused for its scope")
def r9_credentials(ctx: Ctx, s: pe.Stack, row: Row) -> tuple[bool, str]:
    idp, _ = cs.start(s, ctx.keys, ctx.credentials)
    standing = idp.token("agent-1")
    proxy = f"http://127.0.0.1:{s.ports['envoy']}"
    with httpx.Client(proxy=proxy, timeout=10) as client:
        r = client.get(f"http://{cs.TICKETS}/tickets/1",
                       headers={"x-agent-run": "evidence-r9", "authorization": f"Bearer {standing}"})
    recs = s.upstream_requests("destination")
    got = (pe.header(recs[0], "authorization") or "").removeprefix("Bearer ") if recs else ""
    claims = jwt.decode(got, options={"verify_signature": False}) if got.count(".") == 2 else {}
    w = httpx.post(f"http://127.0.0.1:{s.ports['destination']}/tickets", json={"title": "x"},
                   headers={"host": cs.TICKETS, "authorization": f"Bearer {got}"}, timeout=10)
    ok = (r.status_code == 200 and bool(got) and got != standing
          and claims.get("aud") == cs.TICKETS and claims.get("scope") == cs.READ_SCOPE
          and w.status_code == 403)
    return ok, (f"read answered {r.status_code} ({r.headers.get('x-portcullis-decision')}); the destination "
                f"received {'the standing token' if got == standing else 'a minted token' if got else 'no token'}"
                f" with aud {claims.get('aud')!r}, scope {claims.get('scope')!r}; replayed for a write: "
                f"HTTP {w.status_code}")


# -- running and reporting -----------------------------------------------------------------------

def receipts_of_run(ctx: Ctx, s: pe.Stack, row: Row) -> None:
    """Verify the row's logs and list its receipts; a timeline page of its main session."""
    logs = [p for p in (s.files.get("access_log"), s.files.get("envoy_log")) if p is not None and p.exists()]
    if not logs:
        row.verify = "no logs"
        return
    v = pe.policyc("receipts", "verify", *map(str, logs), "--pub", str(ctx.keys.path("receipt", "pub")),
                   "--format", "json", check=False)
    try:
        report = json.loads(v.stdout)
    except json.JSONDecodeError:
        row.verify, row.verified = (v.stdout + v.stderr)[-500:], False
        return
    row.verified = bool(report.get("ok"))
    sessions = report.get("sessions", [])
    row.verify = (f"{report.get('receipts')} receipt(s) in {len(sessions)} session(s); "
                  + ("ok: every receipt is intact and attested" if row.verified
                     else f"FAILED: {len(report.get('findings', []))} finding(s): "
                     + "; ".join(f"{f['kind']}: {f['detail']}" for f in report.get("findings", [])[:5])))
    for sess in sessions:
        for a in sess.get("actions", []):
            row.receipts.append({"session": sess["session"], "seq": a["seq"], "event": a["event"],
                                 "decision": a.get("decision"), "rule": a.get("rule"), "what": a.get("what"),
                                 "signed": a.get("signed")})
    if sessions:
        main = max(sessions, key=lambda x: x["receipts"])["session"]
        page = OUT / "timelines" / f"{row.id}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        t = pe.policyc("receipts", "timeline", *map(str, logs), "--session", main, "--pub",
                       str(ctx.keys.path("receipt", "pub")), "--html", str(page), check=False)
        if page.exists():
            row.timeline = str(page.relative_to(OUT))
        elif t.returncode != 0:
            row.verify += f" (timeline: {t.stderr.strip()[:200]})"


def run_row(ctx: Ctx, row: Row, fn: Check) -> None:
    """Run one check in its own stack; never raises."""
    t0 = time.monotonic()
    run_dir = OUT / "run" / row.id
    shutil.rmtree(run_dir, ignore_errors=True)
    with pe.stack(run_dir) as s:
        try:
            row.passed, row.observed = fn(ctx, s, row)
            if any(p.alive() for p in s.procs) and "access_log" in s.files:
                s.wait_attested()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 (a check that breaks, pytest.fail included, is a failed row)
            row.passed = False
            row.observed = f"the check could not run: {type(e).__name__}: {e}"
            traceback.print_exc()
    receipts_of_run(ctx, s, row)
    if row.verified is False:
        row.passed = False
        row.observed += " — and the receipts of this run do not verify"
    row.seconds = time.monotonic() - t0


def esc(v: object) -> str:
    """HTML-escape anything (receipts carry agent-chosen names)."""
    return html.escape(str(v), quote=True)


def inline(v: object) -> str:
    """Escaped text with `code` spans as <code> (the escaping comes first, so a span holds text)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(v))


def receipts_cell(r: Row) -> str:
    """How many receipts a row produced and whether they verify."""
    if not r.receipts:
        return "none"
    return f"{len(r.receipts)}, {'verified' if r.verified else 'NOT verified'}"


def md(v: object) -> str:
    """A Markdown table cell."""
    return str(v).replace("|", "\\|").replace("\n", " ")


def write_markdown(rows: list[Row], meta: dict) -> str:
    """The report as Markdown."""
    out = ["# AARM evidence report", "",
           f"Portcullis {meta['commit']} on {meta['date']}, Envoy {meta['envoy']}, {meta['machine']}. "
           f"Generated by `scripts/evidence` in {meta['seconds']:.0f} s. Requirements and threats: docs/aarm.md.", "",
           f"**{meta['passed']} passed, {meta['failed']} failed** ({meta['known']} of the failures are known gaps "
           "with an open issue).", "",
           "| row | requirement | test | expected | observed | receipts | result |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = receipts_cell(r)
        out.append(f"| {r.id} | {md(r.req)}: {md(r.requirement)} | {md(r.test)} | {md(r.expected)} | {md(r.observed)} "
                   f"| {md(rec)} | **{md(r.status)}** |")
    out.append("")
    for r in rows:
        out += [f"## {r.id} {r.req}: {r.status}", "", f"- test: {r.test}", f"- expected: {r.expected}",
                f"- observed: {r.observed}", f"- receipts: {r.verify}"]
        if r.timeline:
            out.append(f"- timeline: [{r.timeline}]({r.timeline})")
        out += ["", "| session | seq | event | decision | rule | what | signed |", "|---|---|---|---|---|---|---|"]
        out += [f"| {md(x['session'])} | {x['seq']} | {x['event']} | {md(x['decision'] or '')} | {md(x['rule'] or '')} "
                f"| {md(x['what'] or '')} | {'yes' if x['signed'] else ''} |" for x in r.receipts]
        out.append("")
    return "\n".join(out) + "\n"


STYLE = """body{font:14px/1.45 system-ui,sans-serif;color:#1b1f24;max-width:1200px;margin:0 auto;padding:16px 20px}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid #d9dee3;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}code{font:12px ui-monospace,monospace}.PASS{color:#1a7f37;font-weight:700}
.FAIL{color:#cf222e;font-weight:700}.GAP{color:#9a6700;font-weight:700}.muted{color:#5b6570}
details{margin:4px 0 14px}summary{cursor:pointer}h2{font-size:16px;margin-top:22px}"""


def write_html(rows: list[Row], meta: dict) -> str:
    """The report as one self-contained HTML page (no script; CSP allows only its own style)."""
    style_hash = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'sha256-{style_hash}'; base-uri 'none'; form-action 'none'"

    def cls(r: Row) -> str:
        return "PASS" if r.passed else ("GAP" if r.gap else "FAIL")

    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
             f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
             f"<title>AARM evidence report</title><style>{STYLE}</style></head><body>",
             "<h1>AARM evidence report</h1>",
             f"<p class=\"muted\">Portcullis {esc(meta['commit'])} on {esc(meta['date'])}, Envoy {esc(meta['envoy'])}, "
             f"{esc(meta['machine'])}; generated by <code>scripts/evidence</code> in {meta['seconds']:.0f} s. "
             "Requirements and threats: docs/aarm.md.</p>",
             f"<p id=\"totals\"><b>{meta['passed']} passed, {meta['failed']} failed</b> ({meta['known']} of the "
             "failures are known gaps with an open issue).</p>",
             "<table><tr><th>row</th><th>requirement</th><th>test</th><th>expected</th><th>observed</th>"
             "<th>receipts</th><th>result</th></tr>"]
    for r in rows:
        parts.append(f'<tr id="row-{esc(r.id)}"><td><a href="#{esc(r.id)}">{esc(r.id)}</a></td>'
                     f"<td><b>{esc(r.req)}</b> {inline(r.requirement)}</td><td>{inline(r.test)}</td>"
                     f"<td>{inline(r.expected)}</td><td>{inline(r.observed)}</td><td>{esc(receipts_cell(r))}</td>"
                     f'<td class="{cls(r)}">{esc(r.status)}</td></tr>')
    parts.append("</table>")
    for r in rows:
        parts.append(f'<h2 id="{esc(r.id)}">{esc(r.id)} {esc(r.req)}: <span class="{cls(r)}">{esc(r.status)}</span></h2>'
                     f"<p><b>test</b> {inline(r.test)}<br><b>expected</b> {inline(r.expected)}<br>"
                     f"<b>observed</b> {inline(r.observed)}<br><b>receipts</b> {esc(r.verify)}"
                     + (f'<br><b>timeline</b> <a href="{esc(r.timeline)}">{esc(r.timeline)}</a>' if r.timeline else "")
                     + "</p>")
        parts.append(f"<details><summary>{len(r.receipts)} receipt(s)</summary><table><tr><th>session</th><th>seq</th>"
                     "<th>event</th><th>decision</th><th>rule</th><th>what</th><th>signed</th></tr>")
        for x in r.receipts:
            parts.append(f"<tr><td><code>{esc(x['session'])}</code></td><td>{x['seq']}</td><td>{esc(x['event'])}</td>"
                         f"<td>{esc(x['decision'] or '')}</td><td><code>{esc(x['rule'] or '')}</code></td>"
                         f"<td>{esc(x['what'] or '')}</td><td>{'yes' if x['signed'] else ''}</td></tr>")
        parts.append("</table></details>")
    parts.append("</body></html>\n")
    return "".join(parts)


def git_commit() -> str:
    """The commit the report is about (and `+dirty` for uncommitted changes)."""
    try:
        head = subprocess.run(["git", "-C", str(pe.REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(pe.REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str]) -> int:
    """Run every check (or those named in ``argv``), write the report; 0 unless a row that is not a
    known gap failed."""
    logging.getLogger("mcp.client.streamable_http").setLevel(logging.ERROR)
    t0 = time.monotonic()
    try:
        pe.require_artifacts()
        OUT.mkdir(parents=True, exist_ok=True)
        keys = pe.Keys.generate(OUT / "keys")
        ctx = Ctx(keys, pe.compile_bundle(pe.DEMO_POLICY, OUT / "bundles" / "demo.bundle", keys),
                  pe.compile_bundle(DRIFT_POLICY, OUT / "bundles" / "drift.bundle", keys),
                  pe.compile_bundle(cs.POLICY, OUT / "bundles" / "credentials.bundle", keys))
        envoy = subprocess.run([pe.envoy_binary(), "--version"], capture_output=True, text=True,
                               timeout=30).stdout.split("version:")[-1].strip().split("/")[1:2]
    except (pe.E2EError, OSError, subprocess.SubprocessError) as e:
        print(f"evidence: {e}", file=sys.stderr)
        return 2
    shutil.rmtree(OUT / "timelines", ignore_errors=True)
    rows = []
    for row, fn in CHECKS:
        if argv and row.id not in argv:
            continue
        print(f"[{row.id}] {row.test}", flush=True)
        run_row(ctx, row, fn)
        print(f"    {row.status}: {row.observed} [{row.seconds:.1f} s]", flush=True)
        rows.append(row)
    failed = [r for r in rows if not r.passed]
    meta = {"commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "envoy": envoy[0] if envoy else "unknown", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "seconds": time.monotonic() - t0, "passed": len(rows) - len(failed), "failed": len(failed),
            "known": sum(1 for r in failed if r.gap)}
    (OUT / "report.md").write_text(write_markdown(rows, meta))
    (OUT / "report.html").write_text(write_html(rows, meta))
    (OUT / "report.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) | {"status": r.status}
                                                                        for r in rows]}, indent=1))
    unexpected = [r.id for r in failed if not r.gap]
    print(f"\nreport: {OUT / 'report.md'} and {OUT / 'report.html'}")
    print(f"evidence: {meta['passed']} passed, {meta['failed']} failed "
          f"({meta['known']} known gap(s){'; unexpected: ' + ', '.join(unexpected) if unexpected else ''})")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
