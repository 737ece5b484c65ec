"""A DEFER context service on loopback: answers every POST with a fixed decision.

Portcullis calls a configured context service when a rule DEFERs an action (plugin config
``context_services``); the answer ``{"decision": "allow"|"deny", "reason": ...}`` resolves it.
Every call is appended as one JSON line (path, headers, body) to ``--record``. ``--delay`` makes
the answer late (to exercise the filter's timeout); ``GET /healthz`` answers ``ok``.

Run: ``python context_service.py --port 9300 --decision allow [--delay 0] [--record FILE]``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    """Answers with the configured decision."""

    protocol_version = "HTTP/1.1"
    decision = "deny"
    delay = 0.0
    record_path: str | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        """Health check."""
        self._reply(200, b"ok", "text/plain")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        """Record the call-out, wait ``delay``, answer the decision."""
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.record_path:
            entry = {"at": time.time(), "path": self.path,
                     "headers": [[k.lower(), v] for k, v in self.headers.items()],
                     "body": body.decode("utf-8", errors="replace")}
            with _LOCK, open(self.record_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        if self.delay > 0:
            time.sleep(self.delay)
        answer = {"decision": self.decision, "reason": f"context service says {self.decision}"}
        self._reply(200, json.dumps(answer).encode(), "application/json")

    def _reply(self, status: int, payload: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main() -> None:
    """Parse arguments and serve until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--decision", choices=("allow", "deny"), default="deny")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--record")
    args = ap.parse_args()
    Handler.decision, Handler.delay, Handler.record_path = args.decision, args.delay, args.record
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
