"""A TEST security token service speaking OAuth 2.0 Token Exchange (RFC 8693) on loopback.

This is a protocol-faithful test server, not a product: no registry package that runs here
implements the server side of RFC 8693 (Authlib's ``authlib.oauth2.rfc8693`` is an empty module),
so the end-to-end tests (test_credentials.py) use this one. What it does, and checks:

- ``POST /token`` with ``content-type: application/x-www-form-urlencoded`` only (RFC 8693 §2.1);
  each parameter at most once;
- ``grant_type`` must be ``urn:ietf:params:oauth:grant-type:token-exchange``
  (else 400 ``unsupported_grant_type``);
- ``subject_token`` and ``subject_token_type`` (``...:token-type:jwt``) are required; the subject
  token must be a JWT signed by the identity provider (Ed25519 JWKS from ``--idp-jwks``), with
  the expected issuer and audience, not expired (else 400 ``invalid_request``, §2.2.2);
- ``requested_token_type``, when present, must be ``access_token`` or ``jwt``;
- ``audience`` is required here and must be one this STS serves (``--audience NAME=s1,s2``),
  else 400 ``invalid_target``; every ``scope`` token must be allowed for that audience, else 400
  ``invalid_scope``;
- it issues a JWT signed with its own Ed25519 key (public JWKS written to ``--jwks-out``):
  ``iss`` (``--issuer``), ``sub`` (the subject's), ``aud``, ``scope``, ``jti``, ``iat``,
  ``exp``, ``act`` (RFC 8693 §4.1: the actor, from ``--actor``), and answers (§2.2.1)
  ``access_token``, ``issued_token_type`` (``...:token-type:access_token``), ``token_type``
  ``Bearer``, ``expires_in``, ``scope``, with ``cache-control: no-store``.

Every exchange is appended to ``--record`` as one JSON line: status, audience, scope, subject,
the issued ``jti``; never a token. ``GET /healthz`` answers ``ok``.

Run: ``python sts_server.py --port 9300 --idp-jwks idp.json --jwks-out sts.json
--audience tickets.example.com=tickets.read,tickets.write --record sts.jsonl``.
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_LOCK = threading.Lock()


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def jwks_of(key: ed25519.Ed25519PrivateKey, kid: str) -> dict:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]}


def public_keys(jwks: dict) -> dict[str, object]:
    """kid -> public key, for every Ed25519 key of a JWKS."""
    return {k["kid"]: jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(k)) for k in jwks["keys"]}


class Sts:
    """The exchange itself (no HTTP), so its rules read in one place."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.idp_keys = public_keys(json.loads(Path(args.idp_jwks).read_text()))
        self.idp_issuer, self.idp_audience = args.idp_issuer, args.idp_audience
        self.issuer, self.actor, self.ttl = args.issuer, args.actor, args.ttl
        self.audiences: dict[str, set[str]] = {}
        for a in args.audience:
            name, _, scopes = a.partition("=")
            self.audiences[name] = set(filter(None, scopes.split(",")))
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.kid = "sts-1"
        Path(args.jwks_out).write_text(json.dumps(jwks_of(self.key, self.kid)))

    def subject(self, token: str) -> dict:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.idp_keys[kid]
            return jwt.decode(token, key, algorithms=["EdDSA"], issuer=self.idp_issuer,
                              audience=self.idp_audience, options={"require": ["exp", "sub", "iss"]})
        except (jwt.PyJWTError, KeyError) as e:
            raise OAuthError("invalid_request", f"the subject token is not valid: {type(e).__name__}") from e

    def exchange(self, form: dict[str, str]) -> tuple[dict, dict]:
        """(answer, record) for one token-exchange request."""
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise OAuthError("unsupported_grant_type", "only token exchange is served here")
        if not form.get("subject_token") or form.get("subject_token_type") != JWT_TYPE:
            raise OAuthError("invalid_request", "a JWT subject_token is required")
        if form.get("requested_token_type") not in (None, ACCESS_TOKEN_TYPE, JWT_TYPE):
            raise OAuthError("invalid_request", "only access tokens are issued")
        claims = self.subject(form["subject_token"])
        audience = form.get("audience", "")
        if audience not in self.audiences:
            raise OAuthError("invalid_target", f"audience {audience!r} is not served")
        scope = form.get("scope", "").split()
        if not scope or any(s not in self.audiences[audience] for s in scope):
            raise OAuthError("invalid_scope", f"scope {form.get('scope')!r} is not allowed for {audience!r}")
        now, jti = int(time.time()), str(uuid.uuid4())
        issued = {"iss": self.issuer, "sub": claims["sub"], "aud": audience, "scope": " ".join(scope),
                  "jti": jti, "iat": now, "exp": now + self.ttl, "act": {"sub": self.actor}}
        token = jwt.encode(issued, self.key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"})
        answer = {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                  "expires_in": self.ttl, "scope": " ".join(scope)}
        return answer, {"audience": audience, "scope": " ".join(scope), "sub": claims["sub"], "jti": jti}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sts: Sts
    record_path: str | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/healthz":
            self._reply(200, b"ok", "text/plain")
        else:
            self._reply(404, b"not found", "text/plain")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        record: dict = {"at": time.time(), "path": self.path}
        try:
            if self.path != "/token":
                raise OAuthError("invalid_request", "the token endpoint is /token", 404)
            ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
            parsed = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
            if any(len(v) != 1 for v in parsed.values()):
                raise OAuthError("invalid_request", "a parameter is repeated")
            form = {k: v[0] for k, v in parsed.items()}
            record["asked"] = {"audience": form.get("audience"), "scope": form.get("scope")}
            answer, facts = self.sts.exchange(form)
            record.update(status=200, **facts)
            self._record(record)
            self._reply(200, json.dumps(answer).encode(), "application/json")
        except (OAuthError, UnicodeDecodeError, ValueError) as e:
            err = e if isinstance(e, OAuthError) else OAuthError("invalid_request", "the body is not a form")
            record.update(status=err.status, error=err.error)
            self._record(record)
            doc = {"error": err.error, "error_description": err.description}
            self._reply(err.status, json.dumps(doc).encode(), "application/json")

    def _record(self, entry: dict) -> None:
        if self.record_path:
            with _LOCK, open(self.record_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def _reply(self, status: int, payload: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("cache-control", "no-store")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--idp-jwks", required=True, help="JWKS file of the identity provider (subject tokens)")
    ap.add_argument("--idp-issuer", default="https://idp.example.org")
    ap.add_argument("--idp-audience", default="portcullis")
    ap.add_argument("--jwks-out", required=True, help="where to write this STS's public JWKS")
    ap.add_argument("--issuer", default="https://sts.example.org")
    ap.add_argument("--actor", default="portcullis")
    ap.add_argument("--audience", action="append", default=[], metavar="NAME=SCOPE,SCOPE")
    ap.add_argument("--ttl", type=int, default=300)
    ap.add_argument("--record")
    args = ap.parse_args()
    Handler.sts = Sts(args)
    Handler.record_path = args.record
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
