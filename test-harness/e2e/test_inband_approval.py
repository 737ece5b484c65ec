"""STEP_UP answered in-band (docs/approvals.md, "In-band approval"): real Envoy + filter + the
approval service (approver/) + the workbench MCP server, the official Python SDK client with an
elicitation callback, and an approver who signs in and decides through the page in headless
Chromium. Screenshots of the page go to docs/img/."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import UrlElicitationRequiredError
from mcp_types import ElicitRequestURLParams, ElicitResult

import portcullis_e2e as pe
from agent import APPROVAL_REQUIRED, Agent
from browser import Page

URL_ELICITATION_REQUIRED = -32042
REPO = Path(__file__).resolve().parents[2]
APPROVER = REPO / "approver" / "approver.py"
IMG = REPO / "docs" / "img"
PROD = {"env": "production", "version": "v2.4.1"}
WHO = {"x-agent-id": "agent://release-bot", "x-human-id": "dana@corp.example"}
PASSWORDS = {"alice": "correct horse battery", "bob": "tr0ub4dor&3"}


def hashed(pw: str) -> str:
    sys.path.insert(0, str(APPROVER.parent))
    import approver  # noqa: PLC0415

    return approver.hash_password(pw)


def start_approver(stack: pe.Stack, keys: pe.Keys) -> dict:
    """Start approver/approver.py with alice (release-managers) and bob (ops); its config."""
    port = pe.free_port()
    ops = stack.dir / "ops"
    pe.policyc("keygen", "--out", str(ops))
    cfg = {
        "public_url": f"http://127.0.0.1:{port}",
        "policyc": str(pe.POLICYC),
        "decision_log": str(stack.dir / "decisions.jsonl"),
        "ttl_s": 600,
        "defer_group": "release-managers",
        "groups": {"release-managers": {"key_file": str(keys.path("approver", "key"))},
                   "ops": {"key_file": str(ops) + ".key"}},
        "approvers": [{"name": "alice", "groups": ["release-managers"], "password_scrypt": hashed(PASSWORDS["alice"])},
                      {"name": "bob", "groups": ["ops"], "password_scrypt": hashed(PASSWORDS["bob"])}],
    }
    path = stack.dir / "approver.json"
    path.write_text(json.dumps(cfg))
    proc = stack.start("approver", [pe.PYTHON, str(APPROVER), "serve", "--config", str(path), "--port", str(port)])
    pe.wait_until("approver", lambda: pe.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, proc)
    stack.ports["approver"] = port
    return cfg


def gateway_patch(cfg: dict, **more: object) -> dict:
    """The mcp-gateway plugin config with the approval service on the `approvals_context` cluster."""
    return {"approval_service": {"cluster": "approvals_context", "authority": "approvals.internal",
                                 "public_url": cfg["public_url"]},
            # A trusted hop names the agent and the human (here: the test), so the page shows them.
            "identity": {"headers": {"agent": "x-agent-id", "human": "x-human-id"}}, **more}


@pytest.fixture
def inband(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> pe.Stack:
    """Approver service + workbench + mcp-gateway Envoy with `approval_service` configured."""
    cfg = start_approver(stack, keys)
    stack.workbench()
    try:
        stack.envoy("mcp-gateway", keys, demo_bundle, values={"CONTEXT_PORT": str(stack.ports["approver"])},
                    patch=gateway_patch(cfg))
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    return stack


class App:
    """The agent application: its elicitation callback opens the URL for the human (here: the
    test, which drives the page) and records what it was given."""

    def __init__(self) -> None:
        self.seen: list[ElicitRequestURLParams] = []

    async def callback(self, context, params):  # the SDK's ElicitationFnT
        self.seen.append(params)
        return ElicitResult(action="accept")

    async def on_error(self, agent_out) -> ElicitRequestURLParams:
        """What a client does with URLElicitationRequiredError: hand each URL to the callback."""
        assert agent_out.error_code == URL_ELICITATION_REQUIRED, agent_out
        err = UrlElicitationRequiredError.from_error(
            type("E", (), {"code": agent_out.error_code, "message": agent_out.error_message,
                           "data": agent_out.error_data})())
        for e in err.elicitations:
            await self.callback(None, e)
        return err.elicitations[0]


def sign_in(page: Page, name: str) -> None:
    page.wait_for("document.querySelector('#signin') !== null")
    page.eval(f"document.querySelector('#name').value = {json.dumps(name)}; "
              f"document.querySelector('#password').value = {json.dumps(PASSWORDS[name])}; true")
    page.click("#signin")
    page.wait_for("location.pathname.startsWith('/approve/') && document.body.dataset.ready === '1' "
                  "&& document.querySelector('#arguments') !== null")


def shot(page: Page, name: str) -> None:
    page.call("Emulation.setDeviceMetricsOverride", width=1100, height=1500, deviceScaleFactor=1, mobile=False)
    data = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    IMG.mkdir(parents=True, exist_ok=True)
    (IMG / name).write_bytes(base64.b64decode(data))


def decide_in_browser(url: str, workdir: Path, name: str, button: str, screenshot: str | None = None,
                      reason: str = "") -> str:
    """Sign in as ``name`` at ``url`` and click ``button``; the page text after."""
    with Page(url, workdir) as page:
        sign_in(page, name)
        text = page.eval("document.body.innerText")
        if screenshot:
            shot(page, screenshot)
        if reason:
            page.eval(f"document.querySelector('input[name=reason]').value = {json.dumps(reason)}; true")
        page.click(f"#{button}")
        page.wait_for("document.querySelector('#status') && document.querySelector('#status').innerText !== 'pending'")
        after = page.eval("document.body.innerText")
        if screenshot:
            shot(page, screenshot.replace(".png", "-decided.png"))
        return text + "\n----\n" + after


def api(stack: pe.Stack, eid: str) -> dict:
    r = httpx2.get(f"http://127.0.0.1:{stack.ports['approver']}/api/elicitations/{eid}", timeout=5)
    return r.json()


def test_approve_through_the_page_then_retry_succeeds_once(inband: pe.Stack) -> None:
    app = App()

    async def go():
        async with Agent(inband.mcp_url, intent="demo_task", headers=WHO,
                         elicitation_callback=app.callback) as agent:
            fetched = await agent.call("fetch_url", {"url": "https://example.com/release-notes"})
            assert fetched.ok, fetched
            first = await agent.call("deploy", PROD)
            el = await app.on_error(first)
            again = await agent.call("deploy", PROD)
            seen_before = len(pe.tool_calls(inband.upstream_requests(), "deploy"))
            page_text = await asyncio.to_thread(decide_in_browser, el.url, inband.dir, "alice", "approve",
                                                "approver-page.png")
            approved = await agent.call("deploy", PROD)
            token = api(inband, el.elicitation_id)["token"]
            replayed = await agent.call("deploy", PROD, approval=token)
            return first, again, el, seen_before, page_text, approved, replayed

    first, again, el, seen_before, page_text, approved, replayed = asyncio.run(go())
    # The answer: a URL-mode elicitation, with the approval request beside it.
    assert first.decision == "STEP_UP" and first.rule == "production_deploy", first
    assert el.url == f"http://127.0.0.1:{inband.ports['approver']}/approve/{el.elicitation_id}"
    assert re.fullmatch(r"[0-9a-f]{32}", el.elicitation_id)
    assert first.approval_request["elicitation_id"] == el.elicitation_id
    assert app.seen and app.seen[0].url == el.url, "the callback received the URL"
    # Still pending: the same elicitation again; nothing reached the server.
    assert again.error_code == URL_ELICITATION_REQUIRED
    assert again.error_data["elicitations"][0]["elicitationId"] == el.elicitation_id
    assert seen_before == 0
    # The page showed what an approver needs.
    for needle in ("deploy", "production", "v2.4.1", "production deploys need a release manager",
                   "demo_task", "release-managers", first.approval_request["digest"], "Untrusted content",
                   "agent://release-bot", "dana@corp.example", "fetch_url", "untrusted_instruction",
                   "fetched_untrusted"):
        assert needle in page_text, (needle, page_text)
    assert "approved by alice" in page_text
    # The retry carried nothing; the filter fetched the token, verified it, allowed once.
    assert approved.ok and approved.decision == "ALLOW", approved
    assert "deployed v2.4.1 to production" in approved.text
    assert len(pe.tool_calls(inband.upstream_requests(), "deploy")) == 1
    assert not replayed.ok and replayed.decision == "DENY", replayed
    assert replayed.error_data.get("approval_error") == "replayed", replayed
    log = [json.loads(line) for line in (inband.dir / "decisions.jsonl").read_text().splitlines()]
    assert any(r["event"] == "approved" and r["by"] == "alice" for r in log), log


def test_deny_through_the_page_and_group_and_csrf_checks(inband: pe.Stack) -> None:
    app = App()
    args = {"env": "production", "version": "v9.9.9"}

    async def go():
        async with Agent(inband.mcp_url, intent="demo_task", elicitation_callback=app.callback) as agent:
            first = await agent.call("deploy", args)
            el = await app.on_error(first)
            # bob signs in but is not in release-managers: no buttons, and a forged POST fails.
            bob_text = await asyncio.to_thread(bob_cannot_decide, inband, el.url)
            text = await asyncio.to_thread(decide_in_browser, el.url, inband.dir / "alice", "alice", "deny",
                                           None, "not during the freeze")
            denied = await agent.call("deploy", args)
            return el, bob_text, text, denied

    el, bob_text, text, denied = asyncio.run(go())
    assert "not in group" in bob_text
    assert "denied by alice" in text
    assert not denied.ok and denied.decision == "DENY", denied
    assert denied.error_data.get("approval_error") == "denied_by_approver", denied
    assert "`alice`" in denied.reason and "not during the freeze" in denied.reason, denied.reason
    assert pe.tool_calls(inband.upstream_requests(), "deploy") == []
    assert api(inband, el.elicitation_id)["status"] == "denied"


def bob_cannot_decide(stack: pe.Stack, url: str) -> str:
    with Page(url, stack.dir / "bob") as page:
        sign_in(page, "bob")
        text = page.eval("document.body.innerText")
        assert page.eval("document.querySelector('#approve') === null")
    # A POST without the session's CSRF token is refused, signed in or not.
    base = f"http://127.0.0.1:{stack.ports['approver']}"
    with httpx2.Client(base_url=base, timeout=10) as c:
        login = c.get("/login")
        csrf = re.search(r"name='csrf' value='([0-9a-f]+)'", login.text).group(1)
        r = c.post("/login", data={"csrf": csrf, "name": "alice", "password": PASSWORDS["alice"], "next": "/"})
        assert r.status_code in (200, 303, 404), r.status_code
        eid = url.rsplit("/", 1)[1]
        forged = c.post(f"/approve/{eid}/decide", data={"decision": "approve", "csrf": "0" * 64})
        assert forged.status_code == 403, forged.text
    assert api(stack, eid)["status"] == "pending"
    return text


def test_client_without_elicitation_keeps_the_32041_error(inband: pe.Stack) -> None:
    async def go():
        async with Agent(inband.mcp_url, intent="demo_task") as agent:
            return await agent.call("deploy", PROD)

    out = asyncio.run(go())
    assert out.error_code == APPROVAL_REQUIRED, out
    assert "elicitations" not in out.error_data
    assert "policyc approve" in out.approval_request["approve_with"]
    assert "elicitation_id" not in out.approval_request


def test_2026_07_28_input_required_result_driven_by_the_sdk(stack: pe.Stack, keys: pe.Keys,
                                                             demo_bundle: Path) -> None:
    """MCP 2026-07-28 (stateless): the SDK receives an InputRequiredResult, its elicitation
    callback gets the URL (the human approves on the page), and the SDK's own retry carries the
    filter's requestState back; the server never sees that state."""
    cfg = start_approver(stack, keys)
    stack.workbench(json_response=True, stateless=True)
    stack.envoy("mcp-gateway", keys, demo_bundle, values={"CONTEXT_PORT": str(stack.ports["approver"])},
                patch=gateway_patch(cfg, session={"key": {"source": "header", "name": "x-agent-run"}}))
    urls: list[str] = []

    async def callback(context, params):
        urls.append(params.url)
        await asyncio.to_thread(decide_in_browser, params.url, stack.dir / "chromium", "alice", "approve")
        return ElicitResult(action="accept")

    async def go():
        async with Agent(stack.mcp_url, intent="demo_task", mode="2026-07-28",
                         headers={**WHO, "x-agent-run": "run-7"}, elicitation_callback=callback) as agent:
            return await agent.call("deploy", {"env": "production", "version": "v3.0.0"})

    out = asyncio.run(go())
    assert out.ok and out.decision == "ALLOW", out
    assert "deployed v3.0.0 to production" in out.text
    assert len(urls) == 1 and "/approve/" in urls[0], urls
    [(rec, msg)] = pe.tool_calls(stack.upstream_requests(), "deploy")
    assert "requestState" not in msg["params"] and "inputResponses" not in msg["params"], msg
    assert int(pe.header(rec, "content-length")) == len(rec["body"].encode())


def test_defer_uses_the_same_service_as_its_context_service(inband: pe.Stack) -> None:
    """The demo pack DEFERs mail to outside addresses to `approvals-context`, the same cluster:
    the first call is held for a human (denied with the page's URL), alice approves on the page,
    the retry is allowed once."""
    args = {"to": "partner@elsewhere.example", "subject": "Q3 numbers", "body": "attached"}

    async def go():
        async with Agent(inband.mcp_url, intent="demo_task", headers=WHO) as agent:
            held = await agent.call("send_email", args)
            url = re.search(r"(http://\S+/approve/\w+)", held.reason).group(1)
            text = await asyncio.to_thread(decide_in_browser, url, inband.dir / "defer", "alice", "approve")
            allowed = await agent.call("send_email", args)
            again = await agent.call("send_email", args)
            return held, text, allowed, again

    held, text, allowed, again = asyncio.run(go())
    assert not held.ok and held.error_code == -32045 and held.decision == "DENY", held
    assert "held for a human in group release-managers" in held.reason
    assert "Deferred action" in text and "send_email" in text and "subject" in text
    assert allowed.ok and allowed.decision == "ALLOW", allowed
    assert "sent 'Q3 numbers'" in allowed.text
    assert not again.ok, "one allow per decision"
    assert len(pe.tool_calls(inband.upstream_requests(), "send_email")) == 1
