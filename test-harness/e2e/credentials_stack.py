"""The per-action credentials stack (docs/credentials.md), shared by test_credentials.py and the
AARM evidence report (R9.2): envoy-configs/credentials (jwt_authn verifying the agent's JWT,
Portcullis, the egress router), examples/policies/credentials, the test STS speaking RFC 8693
(sts_server.py) and a destination that checks a minted token's audience and scope
(credential_destination.py)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
import jwt

import portcullis_e2e as pe

POLICY = pe.REPO / "examples/policies/credentials/policy.pcl"
TICKETS = "tickets.example.com"
READ_SCOPE, WRITE_SCOPE = "tickets.read", "tickets.write"


class Idp:
    """The agents' identity provider: an Ed25519 key, its JWKS, and agent tokens."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()

    def jwks(self) -> str:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "idp-1",
                                     "alg": "EdDSA", "use": "sig"}]})

    def token(self, agent: str) -> str:
        now = int(time.time())
        claims = {"iss": "https://idp.example.org", "aud": "portcullis", "sub": agent,
                  "jti": f"agent-token-{agent}", "iat": now, "exp": now + 600}
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "idp-1"})


def start(stack: pe.Stack, keys: pe.Keys, bundle: Path) -> tuple[Idp, pe.Proc]:
    """Start the STS, the destination and the credentials Envoy on ``stack``; the IdP and the STS
    process. The destination's port is ``stack.ports["destination"]``; what the STS and the
    destination saw is ``stack.upstream_requests("sts" | "destination")``."""
    idp = Idp()
    idp_jwks = stack.dir / "idp-jwks.json"
    idp_jwks.write_text(idp.jwks())
    sts_jwks = stack.dir / "sts-jwks.json"
    sts_port, dest_port = pe.free_port(), pe.free_port()
    stack.files["sts"] = stack.dir / "sts.jsonl"
    sts = stack.start("sts", [pe.PYTHON, str(pe.HERE / "sts_server.py"), "--port", str(sts_port),
                              "--idp-jwks", str(idp_jwks), "--jwks-out", str(sts_jwks),
                              "--audience", f"{TICKETS}={READ_SCOPE},{WRITE_SCOPE}",
                              "--record", str(stack.files["sts"])])
    pe.wait_until("sts", lambda: pe.http_get(f"http://127.0.0.1:{sts_port}/healthz")[0] == 200, sts)
    stack.files["destination"] = stack.dir / "destination.jsonl"
    dest = stack.start("destination", [pe.PYTHON, str(pe.HERE / "credential_destination.py"),
                                       "--port", str(dest_port), "--audience", TICKETS,
                                       "--sts-jwks", str(sts_jwks), "--read-scope", READ_SCOPE,
                                       "--write-scope", WRITE_SCOPE,
                                       "--record", str(stack.files["destination"])])
    pe.wait_until("destination", lambda: pe.http_get(f"http://127.0.0.1:{dest_port}/healthz")[0] == 200, dest)
    stack.ports["destination"] = dest_port
    stack.envoy("credentials", keys, bundle,
                values={"UPSTREAM_PORT": str(dest_port), "STS_PORT": str(sts_port), "JWKS": json.dumps(idp.jwks())})
    return idp, sts
