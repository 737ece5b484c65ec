"""Headless Chromium for the end-to-end checks of pages Portcullis writes (the receipts timeline,
the evidence report): dump the DOM after the page's script ran, take a screenshot, and drive a
page through the Chrome DevTools Protocol (click, read) the way a reviewer's browser would.

Chromium is Debian's `chromium` (scripts/setup installs it); $CHROMIUM overrides. Pages are
opened from file:// with no network: every page checked here must be self-contained.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from portcullis_e2e import E2EError, Proc, wait_until

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--metrics-recording-only", "--hide-scrollbars", "--force-color-profile=srgb"]


def chromium_binary() -> str:
    """$CHROMIUM, else `chromium` (or `chromium-browser`) on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise E2EError("chromium not found: run scripts/setup (installs Debian's chromium)")


def _run(args: list[str], timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def dump_dom(url: str) -> str:
    """The page's DOM, serialized after its scripts ran (`--dump-dom`)."""
    proc = _run(["--virtual-time-budget=2000", "--dump-dom", url])
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise E2EError(f"chromium --dump-dom {url} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def screenshot(url: str, out: Path, width: int = 1280, height: int = 1600) -> Path:
    """A PNG of the page at ``width`` x ``height`` CSS pixels."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(["--virtual-time-budget=2000", f"--window-size={width},{height}",
                 f"--screenshot={out}", url])
    if proc.returncode != 0 or not out.exists():
        raise E2EError(f"chromium --screenshot {url} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return out


class Page:
    """One tab of a headless Chromium, driven over the DevTools Protocol."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.workdir = workdir
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = Proc("chromium", [chromium_binary(), *FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-port=0", "--remote-allow-origins=*", url],
                         workdir / "chromium.log")
        port_file = profile / "DevToolsActivePort"
        wait_until("chromium DevTools port", port_file.exists, self.proc, timeout=60)
        port = int(port_file.read_text().splitlines()[0])
        ws_url = None
        deadline = time.monotonic() + 30
        while ws_url is None and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            ws_url = next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
            if ws_url is None:
                time.sleep(0.1)
        if ws_url is None:
            self.proc.stop()
            raise E2EError(f"chromium opened no page:\n{self.proc.tail()}")
        self._conn = contextlib.ExitStack()
        self.ws = self._conn.enter_context(connect(ws_url, max_size=None, open_timeout=30))
        self.next_id = 0
        self.wait_for("document.body && document.body.dataset.ready === '1'")

    def close(self) -> None:
        """Close the connection and stop Chromium."""
        try:
            self._conn.close()
        finally:
            self.proc.stop()

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> dict:
        """One DevTools command; its result."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise E2EError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serializable)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise E2EError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        """Wait until ``expression`` is truthy in the page."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(expression):
                    return
            except E2EError:
                pass
            time.sleep(0.1)
        raise E2EError(f"page: `{expression}` not true after {timeout}s")

    def click(self, selector: str) -> None:
        """Click the element ``selector`` names, with a real mouse event at its centre."""
        box = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        if box is None:
            raise E2EError(f"no element {selector}")
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
