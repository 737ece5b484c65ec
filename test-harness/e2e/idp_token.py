"""A TEST identity provider for the credentials scenario (envoy-configs/credentials/README.md):
``keygen DIR`` writes an Ed25519 key (``DIR/idp.pem``) and its JWKS (``DIR/idp-jwks.json``);
``token DIR AGENT`` prints a JWT for AGENT that Envoy's jwt_authn accepts in that scenario
(issuer ``https://idp.example.org``, audience ``portcullis``, 10 minutes)."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def keygen(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    (d / "idp.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "idp-1", "alg": "EdDSA", "use": "sig"}]}
    (d / "idp-jwks.json").write_text(json.dumps(jwks))


def token(d: Path, agent: str) -> str:
    key = serialization.load_pem_private_key((d / "idp.pem").read_bytes(), password=None)
    now = int(time.time())
    claims = {"iss": "https://idp.example.org", "aud": "portcullis", "sub": agent,
              "jti": f"{agent}-{now}", "iat": now, "exp": now + 600}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "idp-1"})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "keygen":
        keygen(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "token":
        print(token(Path(sys.argv[2]), sys.argv[3]))
    else:
        sys.exit(__doc__)
