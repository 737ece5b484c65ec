"""A TEST destination behind the credentials egress proxy (test_credentials.py), on loopback.

For the host named by ``--audience`` (a resource server, RFC 6750) it requires a bearer JWT
signed by the STS (public JWKS read from ``--sts-jwks``) whose ``aud`` is that host and whose
``scope`` carries ``--read-scope`` for GET / HEAD and ``--write-scope`` for every other method:
otherwise 401 ``invalid_token`` or 403 ``insufficient_scope`` (with ``WWW-Authenticate``). Any
other host is a plain site: it answers every request. Every request (method, host, path,
headers) is appended to ``--record`` as one JSON line, so a test can see which credentials
reached it. ``GET /healthz`` answers ``ok`` and is not recorded.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt

_LOCK = threading.Lock()
SAFE = {"GET", "HEAD", "OPTIONS"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    args: argparse.Namespace

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log."""

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > 0:
            self.rfile.read(length)
        if self.path == "/healthz":
            self._reply(200, {"ok": True})
            return
        host = (self.headers.get("host") or "").split(":")[0]
        if self.args.record:
            entry = {"at": time.time(), "method": self.command, "host": host, "path": self.path,
                     "headers": [[k.lower(), v] for k, v in self.headers.items()]}
            with _LOCK, open(self.args.record, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        if host != self.args.audience:
            self._reply(200, {"host": host, "path": self.path})
            return
        need = self.args.read_scope if self.command in SAFE else self.args.write_scope
        auth = self.headers.get_all("authorization") or []
        if len(auth) != 1 or not auth[0].startswith("Bearer "):
            self._deny(401, "invalid_token", "one bearer token is required")
            return
        try:
            jwks = json.loads(Path(self.args.sts_jwks).read_text())
            keys = {k["kid"]: jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(k)) for k in jwks["keys"]}
            token = auth[0].removeprefix("Bearer ")
            key = keys[jwt.get_unverified_header(token).get("kid")]
            claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=self.args.audience,
                                issuer=self.args.sts_issuer, options={"require": ["exp", "aud", "scope"]})
        except (jwt.PyJWTError, KeyError, ValueError) as e:
            self._deny(401, "invalid_token", f"the token is not valid here: {type(e).__name__}")
            return
        if need not in str(claims.get("scope", "")).split():
            self._deny(403, "insufficient_scope", f"{self.command} needs scope {need}", scope=need)
            return
        self._reply(200, {"host": host, "path": self.path, "sub": claims["sub"], "scope": claims["scope"]})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815 - stdlib names

    def _deny(self, status: int, error: str, why: str, scope: str | None = None) -> None:
        challenge = f'Bearer error="{error}", error_description="{why}"'
        if scope:
            challenge += f', scope="{scope}"'
        self._reply(status, {"error": error, "error_description": why}, [("www-authenticate", challenge)])

    def _reply(self, status: int, doc: dict, extra: list[tuple[str, str]] | None = None) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for k, v in extra or []:
            self.send_header(k, v)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--audience", required=True, help="the host this server guards")
    ap.add_argument("--sts-jwks", required=True)
    ap.add_argument("--sts-issuer", default="https://sts.example.org")
    ap.add_argument("--read-scope", required=True)
    ap.add_argument("--write-scope", required=True)
    ap.add_argument("--record")
    Handler.args = ap.parse_args()
    ThreadingHTTPServer(("127.0.0.1", Handler.args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
