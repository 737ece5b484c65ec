"""Requests that would open a tunnel, through an Envoy configured to open them
(docs/filter-normalization.md, "Tunnels").

Envoy turns a request into a tunnel only where its connection manager lists the upgrade
(`upgrade_configs`; Istio's sidecars list `websocket` by default) and, for HTTP/2 websockets
(extended CONNECT, RFC 8441), where `http2_protocol_options.allow_connect` is set. The stock
mcp-gateway config has neither, so a request that asks to switch protocols never became a tunnel
in the other tests. Here both configs are rendered with both settings, and:

- on the MCP endpoint, an HTTP/1.1 upgrade (GET or a POST with a JSON-RPC body, any case of the
  header) is refused with 400 and never reaches the server: MCP over a tunnel would never be read;
- an HTTP/2 websocket reaches the filter as the HTTP/1.1 upgrade Envoy maps it to (`GET` with
  `upgrade: websocket`; Envoy removes `:protocol` and the CONNECT method before any filter), so it
  is judged as that upgrade: refused on the MCP endpoint, and on the egress proxy judged as the GET
  and as the CONNECT it becomes (egress.pcl: tunnels to known hosts on port 443 only);
- a plain HTTP/2 CONNECT on the egress proxy is judged as the HTTP/1.1 CONNECT is (test_egress.py),
  and an HTTP/2 CONNECT with a `:path` but no `:protocol` is refused by Envoy's codec itself;
- an upgrade that announces a body is refused (400) on any path: the filter decides an upgrade on
  its headers and never reads that body, which a server ignoring the upgrade would act on.

Policies: policies/resources.pcl (gateway), policies/egress.pcl (egress proxy).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

import hostile_corpus as hc
import portcullis_e2e as pe
from conftest import POLICIES, compile_or_fail

WEBSOCKET_HEADERS = "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
READ = hc.js({"jsonrpc": "2.0", "id": 3, "method": "resources/read",
              "params": {"uri": "file:///workspace/notes.txt"}})
RUN = (("x-agent-run", "upgrades-run"),)


def _in_connection_manager(stat_prefix: str, settings: str) -> Callable[[str], str]:
    """A ``yaml_edit`` adding ``settings`` (YAML at the connection manager's indentation) to the
    connection manager whose ``stat_prefix`` is given; fails if the template no longer has it."""
    anchor = f"          stat_prefix: {stat_prefix}\n"

    def edit(text: str) -> str:
        assert text.count(anchor) == 1, f"no single {anchor.strip()!r} in the rendered config"
        return text.replace(anchor, anchor + settings)

    return edit


ALLOW_CONNECT = "          http2_protocol_options:\n            allow_connect: true\n"
WEBSOCKETS = "          upgrade_configs:\n          - upgrade_type: websocket\n"


@pytest.fixture(scope="module")
def gateway(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pe.Stack]:
    """The workbench behind mcp-gateway with websocket upgrades (HTTP/1.1 and HTTP/2) enabled."""
    tmp = tmp_path_factory.mktemp("upgrades-gateway")
    bundle = compile_or_fail(POLICIES / "resources.pcl", tmp / "resources.bundle", keys)
    with pe.stack(tmp / "run") as stack:
        try:
            stack.workbench()
            stack.envoy("mcp-gateway", keys, bundle,
                        yaml_edit=_in_connection_manager("mcp_gateway", WEBSOCKETS + ALLOW_CONNECT))
        except pe.E2EError as e:
            pytest.fail(str(e), pytrace=False)
        yield stack


@pytest.fixture(scope="module")
def egress(keys: pe.Keys, egress_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pe.Stack]:
    """The egress upstream behind egress-proxy (CONNECT and websocket upgrades listed) with
    HTTP/2 websockets allowed too."""
    with pe.stack(tmp_path_factory.mktemp("upgrades-egress") / "run") as stack:
        try:
            stack.egress_upstream()
            stack.envoy("egress-proxy", keys, egress_bundle,
                        yaml_edit=_in_connection_manager("egress_proxy", ALLOW_CONNECT))
        except pe.E2EError as e:
            pytest.fail(str(e), pytrace=False)
        yield stack


def _new_access_log(stack: pe.Stack, before: int, n: int) -> list[dict]:
    """The ``n`` access log lines written after the first ``before``."""
    return stack.wait_access_log(before + n)[before:]


def _h2_stream(port: int, pseudo: list[tuple[str, str]], tag: str, payload: bytes = b"") -> hc.Answer:
    """One h2c stream with exactly the pseudo-headers ``pseudo`` (a CONNECT's, with or without
    ``:protocol``), the run and case headers, left open: a request that opens a tunnel sends no
    END_STREAM with its headers. When the answer is a 200 (the tunnel is open), ``payload`` goes
    through it and the stream is ended. The answer's body is what came back (through the tunnel,
    for an opened one); ``error`` says why there was none (a stream reset by Envoy's codec)."""
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    status, headers, data, error, done = 0, {}, bytearray(), "", False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=hc.TIMEOUT_S) as sock:
            conn.initiate_connection()
            conn.send_headers(1, [*pseudo, *RUN, (hc.TAG, tag)])
            while not done:
                sock.sendall(conn.data_to_send())
                chunk = sock.recv(65536)
                if not chunk:
                    error = "connection closed"
                    break
                for ev in conn.receive_data(chunk):
                    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
                        headers = {str(k).lower(): str(v) for k, v in ev.headers}
                        status = int(headers.get(":status", "0"))
                        if status == 200 and not ev.stream_ended:
                            conn.send_data(1, payload, end_stream=True)
                    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == 1:
                        data += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
                        done = True
                    elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == 1:
                        error, done = f"stream reset (error code {ev.error_code})", True
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        error, done = f"GOAWAY (error code {ev.error_code})", True
    except (OSError, h2.exceptions.H2Error) as e:
        error = f"{type(e).__name__}: {e}"
    return hc.Answer(status, headers, bytes(data), error)


def _extended_connect(authority: str, path: str, scheme: str = "http") -> list[tuple[str, str]]:
    """The pseudo-headers of an HTTP/2 websocket (RFC 8441)."""
    return [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", scheme), (":authority", authority),
            (":path", path)]


def _raw(request: str, body: bytes = b"") -> hc.Case:
    """A case sent as exactly these HTTP/1.1 bytes (``{tag}`` is where the case header goes)."""
    return hc.Case("raw", "/mcp", body or None, raw=request.encode() + body)


def test_an_upgrade_on_the_mcp_endpoint_is_refused(gateway: pe.Stack) -> None:
    """With websocket upgrades on, an upgrade on the MCP endpoint would open a tunnel the filter
    never reads: a GET stream and a POST whose JSON-RPC call the pack allows are both refused with
    400 (the POST in JSON-RPC form), in any case of the header's name and value and any spelling of
    the endpoint, and none reaches the server; without the upgrade the same requests do (controls).
    Each refusal is in the access log as DENY `filter:refused`, without a receipt (a refused request
    is never evaluated)."""
    port, before = gateway.ports["envoy"], len(gateway.access_log())
    post = ("POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            "accept: application/json, text/event-stream\r\n{connection}{{tag}}content-length: %d\r\n\r\n" % len(READ))
    get = "GET /mcp HTTP/1.1\r\nhost: gw\r\naccept: text/event-stream\r\n{connection}{{tag}}\r\n"
    upgrade = "connection: Upgrade\r\nupgrade: websocket\r\n" + WEBSOCKET_HEADERS
    shouted = "CONNECTION: UPGRADE\r\nUPGRADE: WebSocket\r\n" + WEBSOCKET_HEADERS
    refused = {
        "get websocket": (_raw(get.format(connection=upgrade)), "websocket"),
        "GET WEBSOCKET": (_raw(get.format(connection=shouted)), "WebSocket"),
        "post websocket": (_raw(post.format(path="/mcp", connection=upgrade), READ), "websocket"),
        "POST WEBSOCKET /MCP/": (_raw(post.format(path="/MCP/", connection=shouted), READ), "WebSocket"),
    }
    for tag, (case, proto) in refused.items():
        ans = hc.send(port, case, tag, "h1-raw")
        assert ans.status == 400 and not ans.from_upstream, (tag, ans.summary())
        assert ans.headers.get("x-portcullis-decision") == "DENY", (tag, ans.summary())
        doc = ans.json()
        reason = doc["error"]["message"] if tag.startswith(("post", "POST")) else doc["reason"]
        if tag.startswith(("post", "POST")):
            assert doc["jsonrpc"] == "2.0" and doc["error"]["code"] == -32600, (tag, doc)
        else:
            assert doc["error"] == "bad_request", (tag, doc)
        assert f"an MCP endpoint does not switch protocols (`upgrade: {proto}`)" in reason, (tag, doc)
    controls = {"get control": _raw(get.format(connection="connection: close\r\n")),
                "post control": _raw(post.format(path="/mcp", connection="connection: close\r\n"), READ)}
    for tag, case in controls.items():
        ans = hc.send(port, case, tag, "h1-raw")
        assert ans.status != 0 and ans.headers.get("x-portcullis-decision") == "ALLOW", (tag, ans.summary())
    tags = [pe.header(rec, hc.TAG) for rec in gateway.upstream_requests()]
    assert tags == list(controls), tags

    lines = _new_access_log(gateway, before, len(refused) + len(controls))
    assert [(ln["status"], ln["decision"], ln["rule"], ln["receipt"]) for ln in lines[:len(refused)]] == \
        [(400, "DENY", "filter:refused", None)] * len(refused), json.dumps(lines, indent=1)
    assert [ln["rule"] for ln in lines[len(refused):]] == ["protocol_messages", "workspace_reads"], lines


def test_an_http2_websocket_on_the_mcp_endpoint_is_refused(gateway: pe.Stack) -> None:
    """An HTTP/2 websocket (extended CONNECT) to the MCP endpoint, accepted by an Envoy with
    `allow_connect`: Envoy hands it to the filter as `GET /mcp` with `upgrade: websocket` (the
    access log says GET), and the filter refuses it as it refuses the HTTP/1.1 upgrade; the server
    never sees it. (The docs' "a CONNECT with a path is refused" is for a proxy that passes
    `:protocol` on; Envoy never does.)"""
    port, before = gateway.ports["envoy"], len(gateway.access_log())
    for tag, path in {"h2 websocket /mcp": "/mcp", "h2 websocket /Mcp;v=1": "/Mcp;v=1"}.items():
        ans = _h2_stream(port, _extended_connect("gw", path), tag)
        assert ans.status == 400 and ans.headers.get("x-portcullis-decision") == "DENY", (tag, ans.summary())
        assert "an MCP endpoint does not switch protocols (`upgrade: websocket`)" in ans.json()["reason"], ans.body
    assert [pe.header(rec, hc.TAG) for rec in gateway.upstream_requests() if "h2" in (pe.header(rec, hc.TAG) or "")] \
        == []
    lines = _new_access_log(gateway, before, 2)
    assert [(ln["method"], ln["protocol"], ln["status"], ln["rule"]) for ln in lines] == \
        [("GET", "HTTP/2", 400, "filter:refused")] * 2, lines


def test_an_http2_connect_is_judged_like_an_http1_connect(egress: pe.Stack) -> None:
    """A plain HTTP/2 CONNECT (no `:path`, no `:protocol`) on the egress proxy: a tunnel to a
    known host on 443 opens and carries bytes both ways; other hosts and ports are denied with a
    receipt and never reached. A CONNECT with a `:path` but no `:protocol` is malformed HTTP/2:
    Envoy's codec refuses it before any filter runs: it closes the connection, and the access log
    line has Envoy's reason and no decision. Only the tunnel reaches the host."""
    port, before = egress.ports["envoy"], len(egress.access_log())
    inner = b"GET /left-pad HTTP/1.1\r\nHost: registry.npmjs.org\r\nConnection: close\r\n\r\n"
    ans = _h2_stream(port, [(":method", "CONNECT"), (":authority", "registry.npmjs.org:443")], "h2 connect ok", inner)
    assert ans.status == 200 and ans.headers.get("x-portcullis-decision") == "ALLOW", ans.summary()
    assert pe.decode_receipt_header(ans.headers["x-portcullis-receipt"])["body"]["rule"] == "tunnels"
    assert b'"path": "/left-pad"' in ans.body, ans.body
    for authority in ("exfil.example:443", "registry.npmjs.org:8443"):
        ans = _h2_stream(port, [(":method", "CONNECT"), (":authority", authority)], f"h2 connect {authority}")
        assert ans.status == 403 and ans.json()["decision"] == "DENY", (authority, ans.summary())
        assert ans.json()["receipt_id"], ans.body
    ans = _h2_stream(port, [(":method", "CONNECT"), (":authority", "registry.npmjs.org:443"), (":path", "/x")],
                     "h2 connect with a path")
    assert ans.status == 0 and ans.error == "connection closed", ans.summary()
    received = egress.upstream_requests("egress")
    assert [(rec["host"], rec["path"]) for rec in received] == [("registry.npmjs.org", "/left-pad")], received
    lines = _new_access_log(egress, before, 4)
    assert [(ln["method"], ln["status"], ln["decision"], ln["rule"]) for ln in lines[:3]] == [
        ("CONNECT", 200, "ALLOW", "tunnels"), ("CONNECT", 403, "DENY", "default"),
        ("CONNECT", 403, "DENY", "default")], lines
    assert (lines[3]["response_code_details"], lines[3]["response_flags"], lines[3]["decision"]) == \
        ("http2.violation.of.messaging.rule", "DPE", None), lines[3]


def test_an_http2_websocket_is_judged_as_the_tunnel_it_opens(egress: pe.Stack) -> None:
    """An HTTP/2 websocket (extended CONNECT) on the egress proxy is judged as the HTTP/1.1
    upgrade Envoy maps it to: as its GET and as the CONNECT it becomes. egress.pcl allows GETs to
    api.github.com but tunnels only to port 443, so a websocket to api.github.com (port 80) is
    denied saying it switches protocols; one to registry.npmjs.org:443 is allowed and reaches the
    host as `GET /socket` with `upgrade: websocket` (the stand-in answers 200, not 101, so no
    tunnel follows); one to an unknown host is denied."""
    port = egress.ports["envoy"]
    ans = _h2_stream(port, _extended_connect("api.github.com", "/socket"), "h2 websocket port 80")
    assert ans.status == 403 and "switches protocols" in ans.json()["reason"], ans.summary()
    ans = _h2_stream(port, _extended_connect("exfil.example:443", "/socket", "https"), "h2 websocket exfil")
    assert ans.status == 403 and ans.json()["decision"] == "DENY", ans.summary()
    ans = _h2_stream(port, _extended_connect("registry.npmjs.org:443", "/socket", "https"), "h2 websocket 443")
    assert ans.status == 200 and ans.headers.get("x-portcullis-decision") == "ALLOW", ans.summary()
    received = [rec for rec in egress.upstream_requests("egress") if "websocket" in (pe.header(rec, hc.TAG) or "")]
    assert [(pe.header(rec, hc.TAG), rec["method"], rec["path"], pe.header(rec, "upgrade")) for rec in received] == \
        [("h2 websocket 443", "GET", "/socket", "websocket")], received


def test_without_allow_connect_envoy_refuses_an_http2_websocket(stack: pe.Stack, keys: pe.Keys,
                                                                egress_bundle: Path) -> None:
    """The shipped egress-proxy config lists websocket upgrades but not `allow_connect`: Envoy
    does not advertise extended CONNECT, and its codec refuses a `:protocol` pseudo-header itself
    (it closes the connection; the access log says `http2.invalid.header.field`, no decision).
    The filter never sees the request, and the host is never reached."""
    stack.egress_upstream()
    try:
        stack.envoy("egress-proxy", keys, egress_bundle)
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    ans = _h2_stream(stack.ports["envoy"], _extended_connect("registry.npmjs.org:443", "/socket", "https"),
                     "h2 websocket, stock config")
    assert ans.status == 0 and ans.error == "connection closed", ans.summary()
    [line] = stack.wait_access_log(1)
    assert (line["response_code_details"], line["response_flags"], line["decision"]) == \
        ("http2.invalid.header.field", "DPE", None), line
    assert stack.upstream_requests("egress") == []


def test_an_upgrade_that_carries_a_body_is_refused(egress: pe.Stack) -> None:
    """A POST that asks to switch protocols and announces a body (`content-length`): a server
    that switches reads the body as tunnel data, one that ignores the upgrade (HTTP lets it) as the
    request's body, and the filter, deciding an upgrade on its headers, reads neither. So it is
    refused (400), even where the pack allows both the POST and the tunnel (api.github.com:443): a
    grant `no_admin_grants` denies, or a JSON-RPC call, would otherwise be decided unread. (Before
    the refusal, Envoy 1.40 forwarded the headers and held the body until a 101 that never came:
    the server hung, waiting for the announced body.)

    A chunked body is Envoy's to hide: it removes `transfer-encoding` from an upgrade request, so
    the filter and the server see a POST without a body, and the chunks would only ever pass as
    tunnel data after a 101 (the stand-in answers 200: the grant never reaches it)."""
    port, before = egress.ports["envoy"], len(egress.access_log())
    head = ("POST http://api.github.com:443/orgs/acme/memberships HTTP/1.1\r\nhost: api.github.com:443\r\n"
            "content-type: application/json\r\nx-agent-run: upgrades-run\r\nconnection: Upgrade\r\n"
            "upgrade: websocket\r\n{tag}")
    grant = hc.js({"user": "bob", "role": "admin"})
    call = hc.js({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                  "params": {"name": "delete_branch", "arguments": {"branch": "main"}}})
    cases = {
        "upgrade with a grant": _raw(head + f"content-length: {len(grant)}\r\n\r\n", grant),
        "upgrade with a JSON-RPC call": _raw(head + f"content-length: {len(call)}\r\n\r\n", call),
    }
    for tag, case in cases.items():
        ans = hc.send(port, case, tag, "h1-raw")
        assert ans.status == 400 and ans.json()["error"] == "bad_request", (tag, ans.summary())
        assert "switches protocols" in ans.json()["reason"] and "body" in ans.json()["reason"], ans.body
    assert [rec for rec in egress.upstream_requests("egress") if pe.header(rec, hc.TAG) in cases] == []
    lines = _new_access_log(egress, before, len(cases))
    assert [(ln["status"], ln["decision"], ln["rule"]) for ln in lines] == \
        [(400, "DENY", "filter:refused")] * len(cases), lines

    chunked = _raw(head + "transfer-encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(grant), grant))
    ans = hc.send(port, chunked, "upgrade with a chunked grant", "h1-raw")
    assert ans.status == 200 and ans.body == b"", ans.summary()
    [rec] = [r for r in egress.upstream_requests("egress") if pe.header(r, hc.TAG) == "upgrade with a chunked grant"]
    assert rec["body"] == "" and pe.header(rec, "transfer-encoding") is None, rec
    assert pe.header(rec, "content-length") is None, rec
    [line] = _new_access_log(egress, before + len(cases), 1)
    assert (line["decision"], line["response_code_details"]) == ("ALLOW", "websocket_handshake_unsuccessful"), line
