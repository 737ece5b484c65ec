"""The receipts timeline page (`policyc receipts timeline`, docs/receipts.md "Timeline page"),
from a real run: the README demo session (ALLOW, MODIFY, STEP_UP and the approved retry, DEFER
that no context service answers, DENY, a tainting tool result, a kill) plus a tool name that
attacks the reviewer's browser, through Envoy + Portcullis with the official MCP SDK client and
one W3C trace id. The page is built from Envoy's access log and its own log, as written, and
opened in headless Chromium: it renders every receipt verified, the hostile name stays text,
and the decision and tool filters work when clicked.

Set PORTCULLIS_TIMELINE_SCREENSHOT=docs/img/timeline.png to refresh the screenshot in the docs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest

import browser
import portcullis_e2e as pe
from agent import Agent
from demo import SCRIPT

TRACE = "0af7651916cd43dd8448eb211c80319c"
# A tool name chosen to run script in whatever page shows it; the pack denies it (unknown tool).
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


async def run_session(url: str, keys: pe.Keys) -> tuple[str | None, list[tuple[str, str | None]]]:
    """The demo script with the hostile call after the first; (session id, [(tool, decision)])."""
    seen = []
    script = [SCRIPT[0], (HOSTILE, {"x": 1}, "DENY", "hostile name"), *SCRIPT[1:]]
    headers = {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}
    async with Agent(url, intent="demo_task", headers=headers) as agent:
        for tool, args, _expected, _note in script:
            out = await agent.call(tool, args)
            seen.append((tool, out.decision))
            req = out.approval_request
            if req:
                token = pe.policyc("approve", "--digest", str(req["digest"]), "--group", str(req["group"]),
                                   "--key", str(keys.path("approver", "key")), "--ttl", "15m").stdout.strip()
                retry = await agent.call(tool, args, approval=token)
                seen.append((tool, retry.decision))
        return agent.session_id, seen


def test_timeline_page_of_a_real_session(gateway: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    session_id, seen = asyncio.run(run_session(gateway.mcp_url, keys))
    assert session_id
    assert [d for _, d in seen] == ["ALLOW", "DENY", "MODIFY", "STEP_UP", "ALLOW", "DENY", "DENY",
                                    "ALLOW", "DENY", "DENY"], seen
    gateway.wait_attested()
    gateway.stop()  # Envoy flushes its logs and signs what is left when it stops.
    logs = [str(p) for p in gateway.receipt_logs()]
    html = tmp_path / "timeline.html"
    run = pe.policyc("receipts", "timeline", *logs, "--trace", TRACE, "--pub",
                     str(keys.path("receipt", "pub")), "--html", str(html), check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"of trace `{TRACE}`" in run.stdout
    page = html.read_text()
    assert "<img" not in page

    # 1. As loaded: every receipt shown and verified; the script ran under the page's CSP.
    dom = browser.dump_dom(html.as_uri())
    assert '<body data-ready="1">' in dom, dom[:2000]
    assert "<img" not in dom, "the hostile tool name became an element"
    assert "&lt;img src=x onerror=" in dom
    assert 'id="verdict">Verified' in dom

    with browser.Page(html.as_uri(), tmp_path) as tab:
        assert tab.eval("document.title") != "pwned"
        rows = tab.eval("""Array.from(document.querySelectorAll('li.receipt')).map(r => ({
            decision: r.dataset.decision, tool: r.dataset.tool, trace: r.dataset.trace,
            verified: r.dataset.verified, session: r.closest('section.chain').querySelector('h2 code').textContent,
            seq: Number(r.querySelector('.seq').textContent.slice(1))}))""")
        mine = [r for r in rows if r["session"] == session_id]
        assert mine, rows
        assert all(r["verified"] == "1" for r in rows), [r for r in rows if r["verified"] != "1"]
        # Chain order within the session.
        assert [r["seq"] for r in mine] == sorted(r["seq"] for r in mine)
        calls = [(r["tool"], r["decision"]) for r in mine if r["tool"] in {t for t, _ in seen}]
        for expected in [("read_file", "ALLOW"), (HOSTILE, "DENY"), ("query_db", "MODIFY"), ("deploy", "STEP_UP"),
                         ("deploy", "ALLOW"), ("send_email", "DENY"), ("get_secret", "DENY")]:
            assert expected in calls, (expected, calls)
        text = "\n".join(tab.eval("Array.from(document.querySelectorAll('li.receipt')).map(r => r.innerText)"))
        for fact in ["approval", "release-managers", "taints added", "session after", "killed",
                     "result digest", "demo_task", "drift"]:
            assert fact in text, fact
        # Digests, targets and hashes are behind a disclosure, in the DOM but folded.
        folded = tab.eval("document.querySelector('li.receipt details.more').textContent")
        assert "action digest" in folded and ("signature" in folded or "attests" in folded), folded
        total = len(rows)
        assert tab.eval("document.getElementById('shown').textContent") == str(total)

        # 2. Click: only DENY.
        for d in ("ALLOW", "MODIFY", "STEP_UP", "DEFER", "none"):
            if tab.eval(f"!!document.querySelector('input[data-filter=decision][value={d}]')"):
                tab.click(f"input[data-filter=decision][value={d}]")
        visible = tab.eval("Array.from(document.querySelectorAll('li.receipt')).filter(r => !r.hidden)"
                           ".map(r => r.dataset.decision)")
        assert visible and set(visible) == {"DENY"}, visible
        assert visible.count("DENY") == sum(1 for r in rows if r["decision"] == "DENY")
        assert tab.eval("document.getElementById('shown').textContent") == str(len(visible))
        assert "decision=DENY" in tab.eval("location.hash")

        # 3. And only the tool `deploy` (tools: none, then deploy): nothing, since deploy was never denied.
        tab.click("button[data-all=tool][data-on='0']")
        tab.click("input[data-filter=tool][value=deploy]")
        assert tab.eval("document.getElementById('shown').textContent") == "0"
        # All decisions again: the STEP_UP and the approved retry.
        for d in ("ALLOW", "STEP_UP"):
            tab.click(f"input[data-filter=decision][value={d}]")
        visible = tab.eval("Array.from(document.querySelectorAll('li.receipt')).filter(r => !r.hidden)"
                           ".map(r => [r.dataset.tool, r.dataset.decision])")
        assert visible == [["deploy", "STEP_UP"], ["deploy", "ALLOW"]], visible

        # 4. The hostile tool name is a filter value like any other, and still only text.
        tab.click("button[data-all=tool][data-on='1']")
        label = tab.eval(f"Array.from(document.querySelectorAll('input[data-filter=tool]'))"
                         f".some(b => b.value === {json.dumps(HOSTILE)})")
        assert label is True
        assert tab.eval("document.querySelectorAll('img').length") == 0
        assert tab.eval("document.title") != "pwned"

    # 5. A filtered view from the URL fragment, as a reviewer would share it.
    dom = browser.dump_dom(html.as_uri() + "#decision=STEP_UP")
    shown = [chunk.split('data-decision="')[1].split('"')[0]
             for chunk in dom.split('<li class="receipt')[1:] if 'hidden=""' not in chunk.split(">")[0]]
    assert shown == ["STEP_UP"], shown

    # The screenshot for the docs: the agent's own calls (MCP protocol messages filtered out).
    tools = sorted({r["tool"] for r in rows if "/" not in r["tool"] and r["tool"] != "session event"})
    view = html.as_uri() + "#tool=" + ",".join(urllib.parse.quote(t, safe="") for t in tools)
    png = browser.screenshot(view, tmp_path / "timeline.png", 1280, 2300)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    target = os.environ.get("PORTCULLIS_TIMELINE_SCREENSHOT")
    if target:
        shutil.copyfile(png, pe.REPO / target)


def test_timeline_marks_a_tampered_real_log(gateway: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    """The same kind of log, with one DENY turned into ALLOW after the fact: the page says
    NOT VERIFIED and names the altered receipt; Chromium shows it."""
    asyncio.run(run_session(gateway.mcp_url, keys))
    gateway.wait_attested()
    gateway.stop()
    access, envoy_log = gateway.receipt_logs()
    lines = access.read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec.get("receipt") and '\\"tool\\":\\"get_secret\\"' in line:
            lines[i] = line.replace('\\"decision\\":\\"DENY\\"', '\\"decision\\":\\"ALLOW\\"', 1)
            break
    else:
        pytest.fail("no get_secret receipt in the access log")
    forged = tmp_path / "access.log"
    forged.write_text("\n".join(lines) + "\n")
    html = tmp_path / "timeline.html"
    run = pe.policyc("receipts", "timeline", str(forged), str(envoy_log), "--trace", TRACE, "--pub",
                     str(keys.path("receipt", "pub")), "--html", str(html), check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    dom = browser.dump_dom(html.as_uri())
    assert 'id="verdict">NOT VERIFIED' in dom
    bad = [chunk for chunk in dom.split('<li class="receipt')[1:] if 'data-verified="0"' in chunk.split(">")[0]]
    assert len(bad) == 1 and 'data-tool="get_secret"' in bad[0] and "altered" in bad[0], bad
