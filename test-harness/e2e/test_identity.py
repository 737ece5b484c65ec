"""Identity binding (AARM R6) end to end in a real Envoy: mTLS with SPIFFE client certificates and
an agent JWT verified by Envoy's jwt_authn, both generated here. The receipt (from Envoy's access
log) names human, agent and workload and how each was authenticated; two agents are told apart;
an unauthenticated request gets what the policy says (testdata/policies/identity.pcl: deny); and a
client cannot forge identity or receipts through headers.

Config: envoy-configs/identity/ (envoy.yaml.tmpl + plugin-config.json), rendered here.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

import portcullis_e2e as pe
from conftest import compile_or_fail
from raw import RawMcp

CONFIG = pe.REPO / "envoy-configs" / "identity"
POLICY = pe.REPO / "testdata" / "policies" / "identity.pcl"
ISSUER = "https://idp.example.org"
AUDIENCE = "portcullis"
TRUST = "spiffe://example.org/ns/agents/sa/"
DENIED = -32040


# -- PKI and tokens, generated per run ------------------------------------------------------------

def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, issuer_name: x509.Name, issuer_key, public_key, *, ca: bool,
          sans: list[x509.GeneralName]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name)
         .public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    """A CA, the Envoy server certificate, and client certificates by SPIFFE id."""

    dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]
    _ca_key: object
    _ca_name: x509.Name

    @classmethod
    def create(cls, d: Path) -> Pki:
        d.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portcullis-e2e-ca")])
        ca = _cert("portcullis-e2e-ca", ca_name, ca_key, ca_key.public_key(), ca=True, sans=[])
        ca_cert = _pem(d / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        skey = ec.generate_private_key(ec.SECP256R1())
        server = _cert("envoy", ca_name, ca_key, skey.public_key(), ca=False,
                       sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        pki = cls(d, ca_cert, _pem(d / "server.pem", server.public_bytes(serialization.Encoding.PEM)),
                  _pem(d / "server.key", _key_pem(skey)), {}, ca_key, ca_name)
        return pki

    def client(self, spiffe_id: str) -> tuple[Path, Path]:
        """A client certificate whose only URI SAN is ``spiffe_id`` (cached)."""
        if spiffe_id not in self.clients:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(spiffe_id.rsplit("/", 1)[-1], self._ca_name, self._ca_key, key.public_key(),
                         ca=False, sans=[x509.UniformResourceIdentifier(spiffe_id)])
            n = len(self.clients)
            self.clients[spiffe_id] = (
                _pem(self.dir / f"client{n}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                _pem(self.dir / f"client{n}.key", _key_pem(key)))
        return self.clients[spiffe_id]

    def ssl_context(self, spiffe_id: str | None) -> ssl.SSLContext:
        """A client TLS context trusting the CA, presenting ``spiffe_id``'s certificate (if any)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        if spiffe_id is not None:
            cert, key = self.client(spiffe_id)
            ctx.load_cert_chain(str(cert), str(key))
        return ctx


class Idp:
    """An identity provider's Ed25519 signing key and its JWKS (inline in Envoy's jwt_authn)."""

    def __init__(self, kid: str = "idp-1") -> None:
        self.kid = kid
        self.key = ed25519.Ed25519PrivateKey.generate()

    def jwks(self) -> str:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid,
                                     "alg": "EdDSA", "use": "sig"}]})

    def token(self, agent: str, human: str, **extra: object) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": agent, "azp": agent, "act": {"sub": human},
                  "iat": now, "exp": now + 600, **extra}
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


# -- the stack --------------------------------------------------------------------------------

@dataclass
class IdentityGateway:
    stack: pe.Stack
    pki: Pki
    idp: Idp
    url: str

    def client(self, spiffe_id: str | None, token: str | None = None,
               extra: dict[str, str] | None = None) -> RawMcp:
        """A raw MCP client over mTLS as ``spiffe_id``, sending ``token`` as a bearer JWT."""
        mcp = RawMcp(self.url, intent=None)
        headers = dict(extra or {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        mcp.http.close()
        mcp.http = httpx.Client(verify=self.pki.ssl_context(spiffe_id), timeout=10.0, headers=headers)
        return mcp

    def receipts(self, n_lines: int) -> list[dict]:
        """Receipt bodies of the access log once it has ``n_lines`` lines."""
        lines = self.stack.wait_access_log(n_lines)
        return [b for line in lines for b in pe.receipts_of(line)]


def push_identity_config(stack: pe.Stack, keys: pe.Keys, bundle: Path, extra: dict | None = None,
                         version: str = "1") -> None:
    """Write (or replace, atomically) the ECDS file carrying the filter's configuration:
    envoy-configs/identity/plugin-config.json with ``extra``'s members added. Envoy applies a
    replacement without a restart."""
    subst = pe.render.substitutions(str(bundle), str(keys.path("bundle", "pub")), None)
    cfg = {**json.loads((CONFIG / "plugin-config.json").read_text()), **(extra or {})}
    text = json.dumps(pe.render._fill(cfg, subst), separators=(",", ":"))
    ecds = stack.dir / "envoy-identity" / "ecds" / "portcullis.yaml"
    values = {"WASM": str(pe.WASM), "FAILURE_POLICY": "FAIL_CLOSED"}
    pe.render.write_atomic(ecds, pe.render.ecds_document(text, values, version))
    stack.files["ecds"] = ecds


def render_identity(stack: pe.Stack, keys: pe.Keys, bundle: Path, pki: Pki, idp: Idp,
                    extra: dict | None = None) -> Path:
    """envoy-configs/identity rendered into the stack's dir (the filter's configuration, with
    ``extra``, in the ECDS file); returns envoy.yaml."""
    out = stack.dir / "envoy-identity"
    out.mkdir(parents=True, exist_ok=True)
    push_identity_config(stack, keys, bundle, extra)
    ecds = stack.files["ecds"]
    values = {
        "ADMIN_PORT": str(stack.ports["admin"]), "LISTEN_PORT": str(stack.ports["envoy"]),
        "SERVER_CERT": str(pki.server_cert), "SERVER_KEY": str(pki.server_key),
        "CLIENT_CA": str(pki.ca_cert), "ACCESS_LOG": str(out / "access.log"),
        "JWKS": json.dumps(idp.jwks()), "ECDS_PATH": str(ecds), "ECDS_DIR": str(ecds.parent),
        "UPSTREAM_PORT": str(stack.ports["workbench"]),
    }
    yaml_path = out / "envoy.yaml"
    yaml_path.write_text(string.Template((CONFIG / "envoy.yaml.tmpl").read_text()).substitute(values))
    stack.files["access_log"] = out / "access.log"
    stack.files["envoy_yaml"] = yaml_path
    return yaml_path


def start_envoy(stack: pe.Stack, keys: pe.Keys, yaml_path: Path) -> None:
    argv = [pe.envoy_binary(), "-c", str(yaml_path), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "warning", "--file-flush-interval-msec", "100", "--component-log-level", "wasm:info"]
    proc = stack.start("envoy-identity", argv, {"PORTCULLIS_SIGNING_KEY": keys.secret_line("receipt")})
    stack.files["envoy_log"] = proc.log
    admin = stack.ports["admin"]
    pe.wait_until("envoy /ready", lambda: pe.http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, proc)


@pytest.fixture(scope="module")
def identity_bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_or_fail(POLICY, tmp_path_factory.mktemp("bundles") / "identity.bundle", keys)


@pytest.fixture
def gw(stack: pe.Stack, keys: pe.Keys, identity_bundle: Path, tmp_path: Path) -> Iterator[IdentityGateway]:
    pki = Pki.create(tmp_path / "pki")
    idp = Idp()
    stack.workbench(json_response=True)
    stack.ports["envoy"], stack.ports["admin"] = pe.free_port(), pe.free_port()
    try:
        start_envoy(stack, keys, render_identity(stack, keys, identity_bundle, pki, idp))
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    yield IdentityGateway(stack, pki, idp, f"https://127.0.0.1:{stack.ports['envoy']}/mcp")


def principal(body: dict, who: str) -> tuple[str | None, str]:
    p = (body.get("identity") or {}).get(who) or {}
    return p.get("id"), p.get("auth")


def tool_receipts(bodies: list[dict], tool: str) -> list[dict]:
    return [b for b in bodies if (b.get("action") or {}).get("tool") == tool]


# -- tests ------------------------------------------------------------------------------------

def test_receipt_names_human_agent_and_workload_with_their_auth(gw: IdentityGateway, keys: pe.Keys) -> None:
    agent_a = TRUST + "agent-a"
    with gw.client(agent_a, gw.idp.token("agent-a", "alice@example.org")) as mcp:
        init = mcp.initialize()
        assert init.status == 200 and mcp.session_id, (init.status, init.text)
        r = mcp.call("read_file", {"path": "/repo/README.md"})
        assert r.status == 200 and r.error_code is None, r.text
        assert r.headers.get("x-portcullis-decision") == "ALLOW"
    [body] = tool_receipts(gw.receipts(3), "read_file")
    assert principal(body, "agent") == ("agent-a", "jwt")
    assert principal(body, "human") == ("alice@example.org", "jwt")
    assert principal(body, "workload") == (agent_a, "mtls")
    assert body["decision"] == "ALLOW" and body["rule"] == "jwt_agents"
    # The receipt in the response header is the same, and the log verifies.
    header = pe.decode_receipt_header(r.headers["x-portcullis-receipt"])
    assert header["body"]["identity"] == body["identity"]
    gw.stack.wait_attested()
    gw.stack.stop()
    out = pe.policyc("receipts", "verify", str(gw.stack.files["access_log"]), "--pub",
                     str(keys.path("receipt", "pub")), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    show = pe.policyc("receipts", "show", str(gw.stack.files["access_log"]), "--session", body["session"])
    assert f"agent agent-a (jwt), human alice@example.org (jwt), workload {agent_a} (mtls)" in show.stdout


def test_two_agents_get_distinct_identities(gw: IdentityGateway) -> None:
    for name, human in (("agent-a", "alice@example.org"), ("agent-b", "bob@example.org")):
        with gw.client(TRUST + name, gw.idp.token(name, human)) as mcp:
            assert mcp.initialize().status == 200
            r = mcp.call("read_file", {"path": f"/repo/{name}.md"})
            assert r.error_code is None, r.text
    bodies = tool_receipts(gw.receipts(6), "read_file")
    assert len(bodies) == 2
    ids = [(principal(b, "agent"), principal(b, "human"), principal(b, "workload")) for b in bodies]
    assert sorted(ids) == [
        (("agent-a", "jwt"), ("alice@example.org", "jwt"), (TRUST + "agent-a", "mtls")),
        (("agent-b", "jwt"), ("bob@example.org", "jwt"), (TRUST + "agent-b", "mtls")),
    ]
    assert bodies[0]["session"] != bodies[1]["session"]


def test_unauthenticated_agent_is_denied_by_the_policy(gw: IdentityGateway) -> None:
    # A valid workload certificate but no JWT: jwt_authn lets it through (allow_missing) and the
    # pack's default decides.
    with gw.client(TRUST + "agent-a") as mcp:
        init = mcp.initialize()
        assert init.error_code == DENIED, (init.status, init.text)
        data = init.message["error"]["data"]
        assert data["decision"] == "DENY" and data["rule"] == "default", data
        r = mcp.call("read_file", {"path": "/repo/README.md"})
        assert r.error_code == DENIED, r.text
    assert gw.stack.upstream_requests() == [], "nothing reached the MCP server"
    bodies = [b for b in gw.receipts(3) if b.get("action")]
    assert bodies and all(b["decision"] == "DENY" for b in bodies)
    for b in bodies:
        assert principal(b, "agent") == (None, "none")
        assert principal(b, "human") == (None, "none")
        assert principal(b, "workload") == (TRUST + "agent-a", "mtls")


def test_a_token_envoy_cannot_verify_never_reaches_the_filter(gw: IdentityGateway) -> None:
    forged = Idp("idp-1").token("agent-a", "alice@example.org")  # same kid, another key
    with gw.client(TRUST + "agent-a", forged) as mcp:
        r = mcp.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "read_file", "arguments": {"path": "/x"}}})
        assert r.status == 401, (r.status, r.text)
    assert gw.stack.upstream_requests() == []


def test_no_client_certificate_no_connection(gw: IdentityGateway) -> None:
    with gw.client(None, gw.idp.token("agent-a", "alice@example.org")) as mcp:
        with pytest.raises(httpx.TransportError):
            mcp.initialize()
    assert gw.stack.upstream_requests() == []


SPOOFED = {
    "x-portcullis-agent": "root-agent",
    "x-portcullis-human": "ceo@example.org",
    "x-portcullis-workload": TRUST + "admin",
    "x-portcullis-decision": "ALLOW (forged)",
    "x-portcullis-receipt": "eyJmb3JnZWQiOnRydWV9",
    "x-forwarded-client-cert": f"By=spiffe://example.org/ns/gw/sa/envoy;URI={TRUST}admin",
}


def test_headers_cannot_forge_identity_or_receipts(gw: IdentityGateway) -> None:
    # Without a JWT, identity headers do not authenticate anyone: still denied.
    with gw.client(TRUST + "agent-b", extra=SPOOFED) as mcp:
        assert mcp.initialize().error_code == DENIED
    assert gw.stack.upstream_requests() == []
    # With a JWT, the request is allowed, and identity comes only from the JWT and certificate.
    with gw.client(TRUST + "agent-b", gw.idp.token("agent-b", "bob@example.org"), extra=SPOOFED) as mcp:
        assert mcp.initialize().status == 200
        r = mcp.call("read_file", {"path": "/repo/README.md"})
        assert r.error_code is None, r.text
    bodies = [b for b in gw.receipts(4) if b.get("action")]
    for b in bodies:
        assert principal(b, "workload") == (TRUST + "agent-b", "mtls")
        if b["decision"] == "ALLOW":
            assert principal(b, "agent") == ("agent-b", "jwt")
            assert principal(b, "human") == ("bob@example.org", "jwt")
    assert "root-agent" not in json.dumps(bodies) and "ceo@example.org" not in json.dumps(bodies)
    # Upstream: no client-sent x-portcullis-* value, Envoy's own client-cert header, and the
    # receipt header is the filter's (a real receipt), not the client's.
    [(rec, _)] = pe.tool_calls(gw.stack.upstream_requests(), "read_file")
    for name, value in SPOOFED.items():
        if name != "x-forwarded-client-cert":
            assert pe.header(rec, name) != value, name
    assert pe.header(rec, "x-portcullis-agent") is None
    assert [v for k, v in rec["headers"] if k.lower() == "x-portcullis-decision"] == ["ALLOW"]
    xfcc = pe.header(rec, "x-forwarded-client-cert") or ""
    assert f"URI={TRUST}agent-b" in xfcc and "admin" not in xfcc, xfcc
    upstream_receipt = pe.decode_receipt_header(pe.header(rec, "x-portcullis-receipt"))
    assert upstream_receipt["body"]["action"]["tool"] == "read_file"
    assert pe.header(rec, "authorization") is None, "jwt_authn consumed the token (forward: false)"
