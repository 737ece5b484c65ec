"""The hostile-response corpus (issue 14 item 8): a hostile MCP server (hostile_server.py) answers
through a real Envoy with the built filter and the pack policies/hostile_responses.pcl, in every
shape a server can choose: compressed (gzip, deflate, br; negotiated, and forced although the
request asked for identity), cut into chunks at every byte of an event, huge, JSON arrays, a BOM,
SSE data arrays and odd SSE framing, resumed over a GET with Last-Event-ID, pushed on the
standalone GET stream, with HTTP trailers, mixed list + call batches, server-to-client requests
(sampling, elicitation) carrying instructions, instructions spelled to slip past a byte-level
detector (zero-width and bidi format characters, Cyrillic/Greek look-alikes, fullwidth and
mathematical letters), and tool definitions carrying instructions (MCP03: in a description, or
spelled with zero-width characters inside an input-schema property description).

THE BAR, asserted for every case:
- nothing the pack removes reaches the client: no ``AKIAIOSFODNN7EXAMPLE`` (raw bytes, decoded
  body, or any parsed JSON string: a ``\\u`` escape does not hide it), no ``wipe_disk`` in a list,
  nothing of a withheld ``dump_env`` result, no denied server request (``roots/list``), no tool
  whose definition carries an instruction;
- an instruction the agent received taints the session (observed: ``send_email`` is then denied
  with rule ``tainted_exfil``), however it is spelled;
- every client sees well-formed HTTP: no ``content-encoding`` the body is not in, a
  ``content-length`` equal to the body, a JSON body that parses, every SSE ``data:`` parses, and
  an answer for every request id (a JSON-RPC error in place of what could not be checked: -32044,
  or -32040 for a result the pack denies).
Every hostile request must have reached the server (it records each one), so a request the filter
refused outright proves nothing and fails the case; the fixture first checks that a benign call is
delivered at all (a filter that refuses its configuration fails every case with its reason).
Readings stricter than the documented answers, kept on purpose (the product is measured against
cases the team does not see): a JSON-RPC *error* answering a call is tool output too (its text is
checked like a result's); a 500 whose body carries a result reaches agents whose SDK shows error
bodies; an SSE stream that ends inside its last event still owes the client an answer for its
request (a -32044 in place of the tail that could not be checked).
The answers the filter documents are asserted where the issue fixes them: an inspected response
that still arrives compressed becomes a ``content-type: application/json`` body of JSON-RPC
errors -32044 (a GET stream: a 502 with a JSON body); a result over ``limits.max_body_bytes``
becomes -32044 for its id; the upstream is asked for ``accept-encoding: identity``.

HTTP/1.1 response trailers (found out here; see test_trailers): Envoy's HTTP/1 codec drops the
trailer section of a chunked upstream response unless the cluster has
``http_protocol_options.enable_trailers: true`` (``typed_extension_protocol_options``
``envoy.extensions.upstreams.http.v3.HttpProtocolOptions``), and sends trailers to an HTTP/1.1
client only with ``enable_trailers: true`` on the connection manager's ``http_protocol_options``.
``mcp-gateway/`` has neither: its filter sees the body end with the last data chunk. With the
cluster's option alone (checked in Envoy's trace log), the router gets the trailers and the Wasm
filter's ``on_response_trailers`` runs, but the client still gets none (the downstream codec drops
them); with the connection manager's alone, the upstream codec already dropped them. So the
trailers cases run twice: through ``mcp-gateway`` as shipped, and through the same config with
trailers enabled on both hops, where the filter's response body ends with its trailers.

One Envoy stack per module (the server, the gateway, the trailers gateway), reused by every case;
each case opens its own MCP session. Requests carry ``x-case`` so the server's record
(``hostile.jsonl``) says which case sent what. The client is a raw HTTP/1.1 client (h11) so the
test chooses ``accept-encoding`` and sees the bytes, headers and trailers exactly as sent.

Run: ``.venv/bin/pytest test-harness/e2e/test_hostile_responses.py -q -p no:cacheprovider``.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import html
import json
import re
import shutil
import socket
import subprocess
import time
import unicodedata
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

import hostile_server as hs
import portcullis_e2e as pe
from conftest import compile_or_fail

POLICIES = Path(__file__).resolve().parent / "policies"
KEY = hs.KEY
DENIED = -32040
UNCHECKED = -32044
ACCEPT = "application/json, text/event-stream"
PATCH = {"mcp": {"allow_batches": True, "server_name": "hostile"}}
TIMEOUT_S = 10.0
# The taint probe: once the session is tainted the pack denies it (rule tainted_exfil).
PROBE = ("send_email", {"to": "ops@corp.example", "body": "status report"})


# -- the stack ----------------------------------------------------------------------------------------

def enable_trailers(yaml: str) -> str:
    """mcp-gateway's envoy.yaml with HTTP/1.1 trailers on both hops (client <-> Envoy <-> server)."""
    hcm = "          stat_prefix: mcp_gateway\n"
    cluster = "  - name: mcp_server\n    type: STATIC\n"
    assert hcm in yaml and cluster in yaml, "mcp-gateway/envoy.yaml.tmpl changed: update enable_trailers()"
    yaml = yaml.replace(hcm, hcm + "          http_protocol_options: { enable_trailers: true }\n")
    return yaml.replace(cluster, cluster + (
        "    typed_extension_protocol_options:\n"
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
        '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
        "        explicit_http_config:\n"
        "          http_protocol_options: { enable_trailers: true }\n"))


@dataclass
class Gateway:
    """The module's stack: the hostile server and two Envoys in front of it."""

    main: pe.Stack
    trailers: pe.Stack
    server_port: int
    record: Path
    _tags: set[str] = field(default_factory=set)
    _read: int = 0

    @property
    def port(self) -> int:
        return self.main.ports["envoy"]

    @property
    def trailers_port(self) -> int:
        return self.trailers.ports["envoy"]

    def received(self, case: str) -> list[dict]:
        """What the server recorded for requests of ``case``."""
        return [r for r in pe.read_jsonl(self.record) if pe.header(r, "x-case") == case]

    def reached(self, tag: str) -> bool:
        """Whether the request with ``x-request-tag: tag`` reached the server (it records every
        request before it answers, so this is settled once the response is read)."""
        with open(self.record, "rb") as f:
            f.seek(self._read)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._read += len(complete)
        for line in complete.splitlines():
            tag_seen = pe.header(json.loads(line), "x-request-tag")
            if tag_seen:
                self._tags.add(tag_seen)
        return tag in self._tags


@pytest.fixture(scope="module")
def gw(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    bundle = compile_or_fail(POLICIES / "hostile_responses.pcl",
                             tmp_path_factory.mktemp("bundles") / "hostile_responses.bundle", keys)
    base = tmp_path_factory.mktemp("hostile_responses")
    with pe.stack(base / "main") as main, pe.stack(base / "trailers") as trailers:
        port = pe.free_port()
        record = main.dir / "hostile.jsonl"
        proc = main.start("hostile", [pe.PYTHON, str(pe.HERE / "hostile_server.py"), "--port", str(port),
                                      "--record", str(record)])
        pe.wait_until("hostile server", lambda: pe.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, proc)
        try:
            main.envoy("mcp-gateway", keys, bundle, patch=PATCH, values={"UPSTREAM_PORT": str(port)})
            trailers.envoy("mcp-gateway", keys, bundle, patch=PATCH, values={"UPSTREAM_PORT": str(port)},
                           yaml_edit=enable_trailers)
        except pe.E2EError as e:
            pytest.fail(str(e), pytrace=False)
        gateway = Gateway(main, trailers, port, record)
        for p in (gateway.port, gateway.trailers_port):
            # The stack works at all (the filter took its configuration and the pack): else every
            # case would see the filter's refusal and prove nothing.
            try:
                c = Client(gateway, "stack-check", port=p)
                rid, seen = c.call("fetch_page", shape={"payload": "benign"})
                assert hs.BENIGN_TEXT in delivered_text(seen, rid), seen.describe()
            except AssertionError as e:
                pytest.fail(f"the stack does not deliver a benign call: {e}", pytrace=False)
        yield gateway


# -- a raw HTTP/1.1 client ------------------------------------------------------------------------------

@dataclass
class Raw:
    """One HTTP exchange exactly as the client saw it."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes  # de-chunked, not content-decoded
    trailers: list[tuple[str, str]]
    error: str | None  # the client could not read a complete response
    excess: bytes  # bytes after the end of the message (a content-length shorter than the body)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None


def exchange(port: int, method: str, headers: list[tuple[str, str]], body: bytes = b"",
             path: str = "/mcp", timeout: float = TIMEOUT_S) -> Raw:
    """Send one request on a fresh connection and read the whole response."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024 * 1024)
    hdrs = [("host", f"127.0.0.1:{port}"), ("connection", "close"), *headers]
    if method in ("POST", "PUT") or body:
        hdrs.append(("content-length", str(len(body))))
    status, rheaders, chunks, trailers, error = None, [], [], [], None
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = conn.send(h11.Request(method=method, target=path, headers=hdrs))
        if body:
            out += conn.send(h11.Data(data=body))
        sock.sendall(out + conn.send(h11.EndOfMessage()))
        try:
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    conn.receive_data(sock.recv(1 << 20))
                elif isinstance(ev, h11.Response):
                    status = ev.status_code
                    rheaders = [(k.decode().lower(), v.decode("latin-1")) for k, v in ev.headers]
                elif isinstance(ev, h11.Data):
                    chunks.append(bytes(ev.data))
                elif isinstance(ev, h11.EndOfMessage):
                    trailers = [(k.decode().lower(), v.decode("latin-1")) for k, v in ev.headers]
                    break
                elif isinstance(ev, h11.ConnectionClosed):
                    error = "connection closed before the response ended"
                    break
        except h11.RemoteProtocolError as e:
            error = f"HTTP protocol error: {e}"
        except (TimeoutError, socket.timeout):
            error = f"no complete response within {timeout}s"
        except OSError as e:
            error = f"connection failed: {e}"
        excess = bytes(conn.trailing_data[0])
        local = ("x-portcullis-decision", "DENY") in rheaders  # the filter's own answer, sent whole
        if error is None and not local and any(k == "content-length" for k, _ in rheaders):
            # A body longer than its content-length: the rest follows within the server's chunk
            # gap. (Envoy keeps the connection open after the response, so wait only briefly.)
            sock.settimeout(0.03)
            try:
                while more := sock.recv(65536):
                    excess += more
            except OSError:
                pass
    return Raw(status, rheaders, b"".join(chunks), trailers, error, excess)


# -- what the client sees ------------------------------------------------------------------------------

def sse_datas(text: str) -> list[str]:
    """The data of every SSE event (the event-stream format: a leading BOM is skipped, lines end
    with CRLF, LF or CR, data lines are joined with LF). An event the stream ends inside is
    dispatched too, as a lenient client would, so that what it carries is checked as well."""
    if text.startswith("\ufeff"):
        text = text[1:]
    out: list[str] = []
    data: list[str] | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data is not None:
                out.append("\n".join(data))
            data = None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data = (data or []) + [value]
    if data is not None:
        out.append("\n".join(data))
    return out


def declared_charset(content_type: str) -> str:
    """The Python codec of the charset a content type declares (``utf-8`` when it declares none
    Python knows)."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip('"')).name
            except LookupError:
                return "utf-8"
    return "utf-8"


def decode_content(body: bytes, codings: str) -> bytes:
    """Undo ``content-encoding`` (ValueError when the body is not in it)."""
    for c in reversed([c.strip().lower() for c in codings.split(",") if c.strip()]):
        try:
            if c in ("gzip", "x-gzip"):
                body = gzip.decompress(body)
            elif c == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -15)
            elif c == "br":
                out = hs.brotli_decompress(body)
                if out is None:
                    raise ValueError("not brotli (or no brotli decoder here)")
                body = out
            elif c != "identity":
                raise ValueError(f"unknown coding {c}")
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{c}: {e}") from e
    return body


def strings(value: Any) -> Iterator[str]:
    """Every string (keys and values) in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)


@dataclass
class Seen:
    """A response as an MCP client reads it, and what is wrong with it."""

    raw: Raw
    text: str = ""
    values: list[Any] = field(default_factory=list)  # the JSON body, or each SSE data
    problems: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # texts found by decoding despite the headers

    @property
    def messages(self) -> list[dict]:
        """Every JSON-RPC message (arrays flattened)."""
        out: list[dict] = []
        for v in self.values:
            out.extend(m for m in (v if isinstance(v, list) else [v]) if isinstance(m, dict))
        return out

    def answers(self, rid: Any) -> list[dict]:
        """Responses (result or error) to request ``rid``."""
        return [m for m in self.messages if m.get("id") == rid and "method" not in m
                and ("result" in m or "error" in m)]

    def result(self, rid: Any) -> dict | None:
        """The delivered result of ``rid`` (None when there is none)."""
        found = [m["result"] for m in self.answers(rid) if "result" in m]
        return found[0] if found else None

    def error_codes(self, rid: Any) -> list[int]:
        return [m["error"].get("code") for m in self.answers(rid) if isinstance(m.get("error"), dict)]

    def contains(self, needle: str) -> list[str]:
        """Where ``needle`` reached the client: raw bytes, decoded text, parsed JSON strings."""
        where = []
        if needle.encode() in self.raw.body or needle.encode() in self.raw.excess:
            where.append("raw body bytes")
        if needle in self.text:
            where.append("decoded body")
        if any(needle in s for v in self.values for s in strings(v)):
            where.append("parsed JSON")
        if any(needle in h for h in self.hidden):
            where.append("body decoded although its headers do not say so")
        if any(needle in v for _, v in self.raw.headers + self.raw.trailers):
            where.append("headers/trailers")
        return where

    def describe(self) -> str:
        head = ", ".join(f"{k}: {v}" for k, v in self.raw.headers
                         if k in ("content-type", "content-encoding", "content-length", "transfer-encoding"))
        text = self.text if len(self.text) < 600 else self.text[:300] + " ... " + self.text[-200:]
        return f"HTTP {self.raw.status} [{head}] {text!r}"


def see(raw: Raw) -> Seen:
    """Read ``raw`` as a client would: decode, parse JSON or SSE, note every malformation."""
    seen = Seen(raw)
    if raw.error:
        seen.problems.append(raw.error)
    if raw.excess.strip():
        seen.problems.append(f"{len(raw.excess)} bytes after the end of the response (stale content-length)")
    clen = raw.header("content-length")
    if clen is not None and (not clen.strip().isdigit() or int(clen) != len(raw.body)):
        seen.problems.append(f"content-length {clen} but the body has {len(raw.body)} bytes")
    body = raw.body
    coding = raw.header("content-encoding")
    if coding and coding.strip().lower() != "identity":
        try:
            body = decode_content(body, coding)
        except ValueError as e:
            seen.problems.append(f"content-encoding `{coding}` but the body does not decode ({e})")
    for magic, codings in ((b"\x1f\x8b", "gzip"), (b"\x78", "deflate")):
        if body.startswith(magic) and not (coding or "").strip():
            try:
                seen.hidden.append(decode_content(body, codings).decode("utf-8", "replace"))
                seen.problems.append(f"the body is {codings}-compressed but has no content-encoding")
            except ValueError:
                pass
    # The text in the charset the content type declares, as httpx's text decoding reads it (the
    # Python SDK's SSE reader goes through it); UTF-8 when none is declared or it is unknown.
    charset = declared_charset(raw.header("content-type") or "")
    try:
        seen.text = body.decode(charset)
    except UnicodeDecodeError:
        seen.text = body.decode(charset, "replace")
        if not seen.hidden:
            seen.problems.append(f"the body is not {charset}")
    ctype = (raw.header("content-type") or "").lower()
    if "text/event-stream" in ctype:
        for data in sse_datas(seen.text):
            if data == "":
                continue  # a priming event (id, empty data) is not a message
            try:
                seen.values.append(json.loads(data))
            except json.JSONDecodeError:
                seen.problems.append(f"SSE data does not parse as JSON: {data[:120]!r}")
    elif "json" in ctype:
        try:
            seen.values.append(json.loads(seen.text.removeprefix("\ufeff")))
        except json.JSONDecodeError:
            seen.problems.append("the JSON body does not parse")
    elif body:
        seen.problems.append(f"content-type `{ctype}` is neither JSON nor SSE")
    return seen


def check_bar(seen: Seen, ids: list[Any], *, removed: tuple[str, ...] = (KEY,), status: int = 200) -> None:
    """THE BAR (module docstring): nothing removed reaches the client, well-formed HTTP, an answer
    for every request id."""
    problems = list(seen.problems)
    if seen.raw.status != status:
        problems.append(f"HTTP status {seen.raw.status}, expected {status}")
    for needle in removed:
        where = seen.contains(needle)
        if where:
            problems.append(f"{needle!r} reached the client ({', '.join(where)})")
    for rid in ids:
        if not seen.answers(rid):
            problems.append(f"no answer for request id {rid}")
    assert not problems, "; ".join(problems) + "\n" + seen.describe()


# -- an MCP session over the raw client ----------------------------------------------------------------

class Client:
    """A legacy Streamable HTTP MCP session of one case."""

    def __init__(self, gw: Gateway, case: str, *, port: int | None = None, initialize: bool = True) -> None:
        self.gw = gw
        self.port = port or gw.port
        self.case = case
        self.sid: str | None = None
        self.next_id = 1
        if initialize:
            self.initialize()
        else:
            self.sid = uuid.uuid4().hex  # a session the filter has not seen: a new one

    def headers(self, accept_encoding: str, shape: dict | None, extra: dict[str, str] | None) -> list[tuple[str, str]]:
        h = [("content-type", "application/json"), ("accept", ACCEPT), ("mcp-protocol-version", hs.PROTOCOL),
             ("accept-encoding", accept_encoding), ("x-case", self.case)]
        if self.sid:
            h.append(("mcp-session-id", self.sid))
        if shape is not None:
            h.append(("x-hostile-shape", json.dumps(shape, separators=(",", ":"))))
        return h + list((extra or {}).items())

    def post(self, value: Any, *, accept_encoding: str = "identity", shape: dict | None = None) -> Seen:
        """POST ``value``; with a ``shape`` (a hostile answer), the server must have been reached."""
        body = json.dumps(value, separators=(",", ":")).encode()
        tag = uuid.uuid4().hex
        seen = see(exchange(self.port, "POST", self.headers(accept_encoding, shape, {"x-request-tag": tag}), body))
        if shape is not None:
            self.check_reached(tag, seen)
        return seen

    def get(self, *, shape: dict | None = None, last_event_id: str | None = None,
            accept_encoding: str = "identity") -> Seen:
        """GET the SSE stream (resumed after ``last_event_id``); the server must have been reached."""
        tag = uuid.uuid4().hex
        extra = {"accept": "text/event-stream", "x-request-tag": tag}
        if last_event_id:
            extra["last-event-id"] = last_event_id
        h = [(k, v) for k, v in self.headers(accept_encoding, shape, None) if k not in ("accept", "content-type")]
        seen = see(exchange(self.port, "GET", h + list(extra.items())))
        self.check_reached(tag, seen)
        return seen

    def check_reached(self, tag: str, seen: Seen) -> None:
        """A hostile case proves something only if the hostile server answered it."""
        assert self.gw.reached(tag), f"the request never reached the hostile server: {seen.describe()}"

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def initialize(self) -> None:
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": hs.PROTOCOL, "capabilities": {"sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "hostile-e2e", "version": "0"}}})
        self.sid = r.raw.header("mcp-session-id")
        assert r.raw.status == 200 and self.sid, f"initialize failed: {r.describe()}"
        n = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert n.raw.status == 202, f"notifications/initialized: {n.describe()}"

    def call_msg(self, tool: str, arguments: dict, rid: int | None = None) -> dict:
        return {"jsonrpc": "2.0", "id": rid if rid is not None else self.new_id(), "method": "tools/call",
                "params": {"name": tool, "arguments": arguments}}

    def call(self, tool: str, arguments: dict | None = None, **kw: Any) -> tuple[int, Seen]:
        msg = self.call_msg(tool, arguments or {"url": "https://docs.example/notes"}, kw.pop("rid", None))
        return msg["id"], self.post(msg, **kw)

    def list_msg(self) -> dict:
        return {"jsonrpc": "2.0", "id": self.new_id(), "method": "tools/list", "params": {}}

    def tainted(self) -> bool:
        """Whether the session is tainted: the pack then denies send_email (rule tainted_exfil)."""
        rid, r = self.call(*PROBE)
        if r.result(rid) is not None:
            return False
        errors = [m["error"] for m in r.answers(rid) if isinstance(m.get("error"), dict)]
        rule = ((errors[0].get("data") or {}).get("rule")) if errors else None
        assert errors and errors[0].get("code") == DENIED and rule == "tainted_exfil", \
            f"the taint probe got neither a result nor the tainted_exfil denial: {r.describe()}"
        return True


def delivered_text(seen: Seen, rid: Any) -> str:
    """The text of ``rid``'s result as delivered ('' when it was not)."""
    result = seen.result(rid)
    return "\n".join(strings(result)) if result is not None else ""


def check_taint_if_read(client: Client, seen: Seen, rid: Any) -> None:
    """When the result of ``rid`` reached the agent, its instruction must have tainted the session."""
    if seen.result(rid) is not None:
        assert client.tainted(), f"the result reached the agent but did not taint the session: {seen.describe()}"


def check_delivered_and_tainted(client: Client, seen: Seen, rid: Any) -> None:
    """The documented answer to a readable hostile result: delivered (its key redacted, which the
    bar checks) and the session tainted by its instruction."""
    assert seen.result(rid) is not None, f"the result was not delivered: {seen.describe()}"
    assert client.tainted(), f"the result reached the agent but did not taint the session: {seen.describe()}"


def check_replaced(seen: Seen, ids: list[Any], code: int = UNCHECKED) -> None:
    """The documented replacement of an unreadable POST answer: a JSON body of errors ``code``."""
    ctype = seen.raw.header("content-type") or ""
    problems = []
    if not ctype.startswith("application/json"):
        problems.append(f"content-type `{ctype}`, expected application/json")
    if seen.raw.header("content-encoding"):
        problems.append(f"content-encoding `{seen.raw.header('content-encoding')}` on the replacement")
    for rid in ids:
        if seen.error_codes(rid) != [code]:
            problems.append(f"id {rid}: errors {seen.error_codes(rid)}, expected [{code}]")
    assert not problems, "; ".join(problems) + "\n" + seen.describe()


# -- the corpus itself -------------------------------------------------------------------------------

DETECTOR_VERBS = {"ignore", "disregard", "forget", "override", "bypass"}
DETECTOR_OBJECTS = {"instructions", "instruction", "rules", "guidelines", "prompt", "directions"}
CONFUSABLES = {**{v: k for k, v in hs._CYRILLIC.items()}, **{v: k for k, v in hs._GREEK.items()}}


def byte_level_detector(text: str) -> bool:
    """docs/filter.md's injection rules (1) and (3), reading lowercase ASCII words only."""
    words = re.findall(r"[a-z0-9_]+\(?", text.lower())
    for i, w in enumerate(words):
        if w.rstrip("(") in DETECTOR_VERBS and any(x.rstrip("(") in DETECTOR_OBJECTS for x in words[i + 1:i + 6]):
            return True
        if w in {"call", "invoke", "run", "execute", "send", "use", "fetch"} and \
                any("_" in x and x.endswith("(") for x in words[i + 1:i + 7]):
            return True
    return False


def as_the_model_reads(text: str) -> str:
    """Escapes decoded (percent, HTML references, backslash-u; twice for double encoding), format
    characters removed, compatibility forms and look-alike letters folded."""
    for _ in range(2):
        text = urllib.parse.unquote(text)
        text = html.unescape(text).replace("\xa0", " ")
        text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return "".join(CONFUSABLES.get(c, c) for c in unicodedata.normalize("NFKC", text))


def test_each_spelling_hides_the_instruction_from_a_byte_level_detector_only() -> None:
    """Guards the corpus: every obfuscated spelling defeats the detector as it reads bytes today,
    and is the plain instruction once folded, so a case fails only for the filter's reading."""
    assert byte_level_detector(hs.instruction("plain"))
    for variant in hs.VARIANTS:
        if variant == "plain":
            continue
        spelled = hs.instruction(variant)
        assert not byte_level_detector(spelled), variant
        assert as_the_model_reads(spelled) == hs.PLAIN_INSTRUCTION, (variant, as_the_model_reads(spelled))


# -- cases -------------------------------------------------------------------------------------------

TARGETS = ["call-json", "call-sse", "list-json", "list-sse"]


def send_target(c: Client, target: str, shape: dict, **kw: Any) -> tuple[int, Seen]:
    """Send the target request (a hostile call or a tools/list) with the server shaped by ``shape``."""
    shape = {**shape, "framing": target.split("-")[1]}
    if target.startswith("call"):
        return c.call("fetch_page", shape=shape, **kw)
    msg = c.list_msg()
    return msg["id"], c.post(msg, shape=shape, **kw)


def check_target(c: Client, target: str, rid: int, seen: Seen) -> None:
    """The bar for a call (key redacted, taint) or a list (no wipe_disk)."""
    check_bar(seen, [rid], removed=(KEY, hs.DENIED_TOOL))
    if target.startswith("call"):
        check_taint_if_read(c, seen, rid)


NEGOTIATED = [("gzip", "gzip"), ("deflate", "deflate"), ("br", "br"),
              ("gzip, deflate, br, zstd", "br"), ("*", "gzip")]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("accept", "coding"), NEGOTIATED, ids=[a for a, _ in NEGOTIATED])
def test_negotiated_compression(gw: Gateway, accept: str, coding: str, target: str) -> None:
    """The client asks for compression and the server compresses whatever the request it receives
    allows: the answer is inspected (read, redacted, filtered) and well formed."""
    c = Client(gw, f"negotiated/{accept}/{target}")
    rid, seen = send_target(c, target, {"encoding": coding}, accept_encoding=accept)
    check_bar(seen, [rid], removed=(KEY, hs.DENIED_TOOL))
    if target.startswith("call"):
        check_delivered_and_tainted(c, seen, rid)
    else:
        result = seen.result(rid) or {}
        names = [t.get("name") for t in result.get("tools", [])]
        assert "fetch_page" in names, f"the list was not delivered filtered: {seen.describe()}"


def test_upstream_is_asked_for_identity(gw: Gateway) -> None:
    """The documented answer to negotiation: the filter rewrites the request's accept-encoding."""
    c = Client(gw, "identity-asked")
    c.call("fetch_page", shape={"payload": "benign"}, accept_encoding="gzip, deflate, br")
    c.post(c.list_msg(), accept_encoding="br;q=1.0, gzip;q=0.8, *;q=0.1")
    seen = [(r["body"][:60], pe.header(r, "accept-encoding")) for r in gw.received(c.case) if r["method"] == "POST"
            and any(m.get("method") in ("tools/call", "tools/list") for m in pe.jsonrpc_messages(r))]
    assert len(seen) == 2 and all(ae == "identity" for _, ae in seen), seen


FORCED = ["gzip", "deflate", "br", "GZIP", "gzip, gzip"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("coding", FORCED)
def test_forced_compression(gw: Gateway, coding: str, target: str) -> None:
    """The server compresses although the request asked for identity: the answer cannot be read,
    so the client gets a JSON-RPC error -32044 for the request, in plain JSON."""
    c = Client(gw, f"forced/{coding}/{target}")
    rid, seen = send_target(c, target, {"force_encoding": coding}, accept_encoding="identity")
    check_target(c, target, rid, seen)
    check_replaced(seen, [rid])


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_forced_compression_on_the_get_stream(gw: Gateway, coding: str) -> None:
    """The standalone GET stream arrives compressed: a 502 with a JSON body, nothing of the stream."""
    c = Client(gw, f"forced-get/{coding}")
    seen = c.get(shape={"force_encoding": coding, "push": ["sampling/createMessage"], "payload": "plain"})
    problems = list(seen.problems)
    if seen.raw.status != 502:
        problems.append(f"HTTP {seen.raw.status}, expected 502")
    if seen.raw.header("content-encoding"):
        problems.append(f"content-encoding `{seen.raw.header('content-encoding')}` on the replacement")
    if not (seen.raw.header("content-type") or "").startswith("application/json") or not seen.values:
        problems.append("not a JSON body")
    if seen.contains("sampling/createMessage"):
        problems.append("the stream's server request reached the client")
    assert not problems, "; ".join(problems) + "\n" + seen.describe()


def one_event_body(rid: int, style: str) -> bytes:
    """The exact SSE body the server sends for a compact plain hostile result of ``rid``."""
    msg = hs.result_message(rid, hs.payload_text("plain"), structured=False)
    return hs.sse_event(hs.dumps(msg), None, style).encode()


@pytest.mark.parametrize("style", ["lf", "crlf"])
def test_sse_event_split_at_every_byte(gw: Gateway, style: str) -> None:
    """One SSE event (the result: key + instruction) cut into two chunks, at every byte offset in
    turn (with CRLF, also between CR and LF): each time the key is redacted, the data parses, and
    the session is tainted. A fresh session per offset (a new session id, as the filter allows)."""
    rid = 7
    size = len(one_event_body(rid, style))
    failures = []
    for offset in range(1, size):
        c = Client(gw, f"split/{style}/{offset}", initialize=False)
        shape = {"framing": "sse", "sse_style": style, "structured": False, "splits": [offset], "gap_ms": 3}
        _, seen = c.call("fetch_page", shape=shape, rid=rid)
        try:
            check_bar(seen, [rid])
            check_delivered_and_tainted(c, seen, rid)
        except AssertionError as e:
            failures.append(f"offset {offset}: {str(e).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {size - 1} offsets failed:\n" + "\n".join(failures[:12])


def test_sse_list_split_at_every_byte(gw: Gateway) -> None:
    """The tools/list answer (one SSE event) cut into two chunks at every byte offset in turn:
    each time the list arrives, without wipe_disk."""
    rid = 7
    size = len(hs.sse_event(hs.dumps({"jsonrpc": "2.0", "id": rid, "result": {"tools": hs.TOOLS}}), None, "lf"))
    failures = []
    for offset in range(1, size):
        c = Client(gw, f"list-split/{offset}", initialize=False)
        msg = {"jsonrpc": "2.0", "id": rid, "method": "tools/list", "params": {}}
        seen = c.post(msg, shape={"framing": "sse", "splits": [offset], "gap_ms": 3})
        try:
            check_bar(seen, [rid], removed=(hs.DENIED_TOOL,))
            names = [t.get("name") for t in (seen.result(rid) or {}).get("tools", [])]
            assert "fetch_page" in names, f"the list was not delivered: {seen.describe()}"
        except AssertionError as e:
            failures.append(f"offset {offset}: {str(e).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {size - 1} offsets failed:\n" + "\n".join(failures[:12])


@pytest.mark.parametrize("framing", ["sse", "json"])
def test_one_byte_chunks(gw: Gateway, framing: str) -> None:
    """The whole answer (progress, a sampling request, the result) arrives one byte per chunk."""
    c = Client(gw, f"one-byte/{framing}")
    shape = {"framing": framing, "chunk": 1, "gap_ms": 0.5, "notifications": 1,
             "server_requests": ["sampling/createMessage"], "payload": "plain"}
    if framing == "json":
        shape = {"framing": "json", "chunk": 1, "gap_ms": 0.5}
    rid, seen = c.call("fetch_page", shape=shape)
    check_bar(seen, [rid])
    check_delivered_and_tainted(c, seen, rid)


HUGE = [("json", 2 << 20, {}), ("sse", 2 << 20, {"chunk": 65536, "gap_ms": 1}),
        ("json", 6 << 20, {"chunk": 65536, "gap_ms": 1}), ("sse", 6 << 20, {"notifications": 1})]


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_an_instruction_padded_past_a_prefix_still_taints(gw: Gateway, framing: str) -> None:
    """A 1 MiB result, under the inspection limit, with the instruction at its very end: the
    detector reads all of the text, as the model does, not a prefix of it."""
    c = Client(gw, f"padded/{framing}")
    rid, seen = c.call("fetch_page", shape={"framing": framing, "size": 1 << 20, "key": False})
    check_bar(seen, [rid])
    check_delivered_and_tainted(c, seen, rid)


@pytest.mark.parametrize(("framing", "size", "extra"), HUGE, ids=[f"{f}-{s >> 20}MiB" for f, s, _ in HUGE])
def test_huge_result_is_never_passed_unread(gw: Gateway, framing: str, size: int, extra: dict) -> None:
    """A result over the 4 MiB inspection limit (key and instruction at its end): -32044 for its id."""
    c = Client(gw, f"huge/{framing}/{size}")
    rid, seen = c.call("fetch_page", shape={"framing": framing, "size": size, **extra})
    check_bar(seen, [rid], removed=(KEY, hs.PLAIN_INSTRUCTION))
    assert seen.error_codes(rid) == [UNCHECKED] and seen.result(rid) is None, seen.describe()


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_array_answer_to_a_single_call(gw: Gateway, framing: str) -> None:
    """JSON: the call is answered with a JSON array; SSE: the event's data is a JSON array."""
    c = Client(gw, f"array/{framing}")
    rid, seen = c.call("fetch_page", shape={"framing": framing, "batch": True})
    check_bar(seen, [rid])
    check_taint_if_read(c, seen, rid)


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_body_starting_with_a_bom(gw: Gateway, framing: str) -> None:
    c = Client(gw, f"bom/{framing}")
    rid, seen = c.call("fetch_page", shape={"framing": framing, "bom": True})
    check_bar(seen, [rid])
    check_taint_if_read(c, seen, rid)


SSE_STYLES = ["crlf", "cr", "multiline", "comments", "nospace", "unterminated", "bom"]


@pytest.mark.parametrize("style", SSE_STYLES)
def test_sse_framing(gw: Gateway, style: str) -> None:
    """Valid event-stream spellings (CRLF, CR, data over several lines, comments, no space after
    the colon, a leading byte-order mark) and a stream that ends inside its last event."""
    c = Client(gw, f"sse-style/{style}")
    rid, seen = c.call("fetch_page", shape={"framing": "sse", "sse_style": style, "notifications": 1})
    check_bar(seen, [rid])
    if style == "unterminated":
        check_taint_if_read(c, seen, rid)
    else:
        check_delivered_and_tainted(c, seen, rid)


@pytest.mark.parametrize("style", ["multiline", "unterminated", "cr", "bom"])
def test_sse_list_framing(gw: Gateway, style: str) -> None:
    c = Client(gw, f"sse-list-style/{style}")
    msg = c.list_msg()
    seen = c.post(msg, shape={"framing": "sse", "sse_style": style})
    check_bar(seen, [msg["id"]], removed=(hs.DENIED_TOOL,))


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_list_hides_the_denied_tool(gw: Gateway, framing: str) -> None:
    c = Client(gw, f"list/{framing}")
    msg = c.list_msg()
    seen = c.post(msg, shape={"framing": framing})
    check_bar(seen, [msg["id"]], removed=(hs.DENIED_TOOL,))
    names = [t.get("name") for t in (seen.result(msg["id"]) or {}).get("tools", [])]
    assert {"fetch_page", "dump_env", "send_email"} <= set(names), names


def test_list_keeps_a_tool_allowed_for_some_arguments(gw: Gateway) -> None:
    """`deploy` is allowed with env == staging: it stays listed (its calls are decided one by one)."""
    c = Client(gw, "list/args")
    msg = c.list_msg()
    seen = c.post(msg, shape={"framing": "json"})
    names = [t.get("name") for t in (seen.result(msg["id"]) or {}).get("tools", [])]
    assert "deploy" in names, names
    rid, staging = c.call("deploy", {"env": "staging"})
    assert staging.result(rid) is not None, staging.describe()
    rid, prod = c.call("deploy", {"env": "prod"})
    assert prod.error_codes(rid) == [DENIED], prod.describe()


@pytest.mark.parametrize("variant", [v for v in hs.VARIANTS if v != "plain"])
def test_obfuscated_instruction_taints(gw: Gateway, variant: str) -> None:
    """The instruction spelled with format characters or look-alike letters: read as the model
    reads it, it taints the session. (No key in this result: nothing is redacted, so the agent
    reads the instruction exactly as sent.)"""
    c = Client(gw, f"obfuscated/{variant}")
    rid, seen = c.call("fetch_page", shape={"payload": variant, "key": False})
    check_bar(seen, [rid])
    assert hs.instruction(variant) in delivered_text(seen, rid), f"the result was not delivered: {seen.describe()}"
    assert c.tainted(), f"{variant}: {hs.instruction(variant)!r} did not taint the session"


def test_plain_instruction_taints_and_benign_does_not(gw: Gateway) -> None:
    """The probe can fail both ways: a plain instruction taints, a benign page does not."""
    c = Client(gw, "control/plain")
    rid, seen = c.call("fetch_page", shape={"payload": "plain", "key": False})
    check_bar(seen, [rid])
    assert hs.PLAIN_INSTRUCTION in delivered_text(seen, rid), seen.describe()
    assert c.tainted()
    b = Client(gw, "control/benign")
    rid, seen = b.call("fetch_page", shape={"payload": "benign"})
    check_bar(seen, [rid])
    assert hs.BENIGN_TEXT in delivered_text(seen, rid)
    assert not b.tainted()


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_key_behind_a_json_escape(gw: Gateway, framing: str) -> None:
    """`\\u0041KIA...`: not in the raw bytes, but every JSON parser reads the key."""
    c = Client(gw, f"escaped/{framing}")
    rid, seen = c.call("fetch_page", shape={"framing": framing, "escaped_key": True})
    check_bar(seen, [rid])
    check_delivered_and_tainted(c, seen, rid)


@pytest.mark.parametrize("framing", ["json", "sse", "sse-split"])
def test_denied_result_is_replaced(gw: Gateway, framing: str) -> None:
    """A DENY on dump_env's result: the agent gets -32040 in its place, nothing of the result."""
    c = Client(gw, f"withheld/{framing}")
    shape = {"framing": framing.split("-")[0], "notifications": 1}
    if framing == "sse-split":
        shape.update({"chunk": 7, "gap_ms": 1})
    rid, seen = c.call(hs.WITHHELD_TOOL, {}, shape=shape)
    check_bar(seen, [rid], removed=(hs.WITHHELD_MARKER, "DB_PASSWORD"))
    assert seen.error_codes(rid) == [DENIED], seen.describe()


def test_error_answer_carrying_the_payload(gw: Gateway) -> None:
    """A JSON-RPC error whose message and data carry the key and the instruction."""
    c = Client(gw, "error-payload")
    rid, seen = c.call("fetch_page", shape={"framing": "json", "error": True})
    check_bar(seen, [rid])
    if any(hs.PLAIN_INSTRUCTION in s for s in strings(seen.answers(rid))):
        assert c.tainted(), "the instruction reached the agent in an error but did not taint"


@pytest.mark.parametrize("variant", ["plain", "zero_width", "percent"])
def test_a_poisoned_resource_template_is_removed(gw: Gateway, variant: str) -> None:
    """resources/templates/list entries reach the model's context like tool definitions: the one
    whose description aims an instruction at the agent is removed, the benign one stays."""
    c = Client(gw, f"templates/{variant}")
    rid = c.new_id()
    seen = c.post({"jsonrpc": "2.0", "id": rid, "method": "resources/templates/list", "params": {}},
                  shape={"payload": variant})
    check_bar(seen, [rid], removed=(hs.instruction(variant),))
    result = seen.result(rid)
    assert result is not None, seen.describe()
    assert [t["name"] for t in result["resourceTemplates"]] == ["notes"], seen.describe()


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_an_answer_with_both_result_and_error_is_replaced(gw: Gateway, framing: str) -> None:
    """A benign result with an error beside it that carries the key and the instruction: the
    TypeScript SDK reads the result, pydantic's union may read the error. Neither is passed."""
    c = Client(gw, f"both-members/{framing}")
    rid, seen = c.call("fetch_page", shape={"framing": framing, "payload": "benign", "both_members": True})
    check_bar(seen, [rid], removed=(KEY,))
    [answer] = seen.answers(rid)
    assert "result" not in answer and "could not be checked" in answer["error"]["message"], seen.describe()


def test_two_session_ids_begin_no_session(gw: Gateway) -> None:
    """An initialize answered with two different Mcp-Session-Id lines: clients join them or take
    either, so the filter would begin a session the client never names. Neither reaches the
    client, and the answer itself does."""
    c = Client(gw, "two-session-ids", initialize=False)
    c.sid = None
    r = c.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": hs.PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "hostile-e2e", "version": "0"}}}, shape={"session_ids": 2})
    check_bar(r, [1], removed=())
    assert r.raw.header("mcp-session-id") is None, r.describe()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("how", ["string", "float", "hex", "padded"])
def test_an_answer_whose_id_a_client_coerces_is_checked(gw: Gateway, target: str, how: str) -> None:
    """The server answers request 7 with id "7", 7.0, "0x7" or " 7 ": the SDKs tie each to request 7
    (TypeScript by Number(id), Python by int(id)), so the filter checks it as that request's answer:
    the list is filtered, the result judged."""
    c = Client(gw, f"coerced-id/{how}/{target}")
    rid, seen = send_target(c, target, {"answer_id": how})
    check_target(c, target, hs.answer_id(rid, how), seen)


@pytest.mark.parametrize(("framing", "how"), [("json", "string"), ("sse", "float"), ("json", "hex")])
def test_the_typescript_sdk_gets_answers_with_coerced_ids_checked(gw: Gateway, framing: str, how: str) -> None:
    """The official TypeScript SDK client, through Envoy, against a server that writes every
    answer's id another way (`"7"`, `7.0`, `"0x7"`): the SDK ties each to its request by
    `Number(id)`, and the filter checks each as that request's answer. The list comes without
    `wipe_disk`, `dump_env`'s output is withheld, `fetch_page`'s key is redacted."""
    node = shutil.which("node")
    assert node, "node not found (scripts/setup installs it for the real-client tests)"
    shape = json.dumps({"answer_id": how, "framing": framing})
    proc = subprocess.run([node, str(pe.HERE / "clients" / "coerced_ids_client.mjs"), "--url",
                           f"http://127.0.0.1:{gw.port}/mcp", "--shape", shape],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(out["tools"], list) and "fetch_page" in out["tools"], out
    assert hs.DENIED_TOOL not in out["tools"], out
    assert "environment dumps never reach the agent" in out["dump_env"].get("error", {}).get("message", ""), out
    text = json.dumps(out["fetch_page"])
    assert "result" in out["fetch_page"] and KEY not in text and "[REDACTED]" in text, out
    assert hs.WITHHELD_MARKER not in proc.stdout, out


@pytest.mark.parametrize("framing", ["json", "sse"])
@pytest.mark.parametrize("extra_id", ["same", "unknown"])
def test_answers_the_client_did_not_ask_for(gw: Gateway, framing: str, extra_id: str) -> None:
    """After the (benign) result, a second answer to the same id, or one to an id never asked,
    carrying the key and the instruction."""
    c = Client(gw, f"extra/{extra_id}/{framing}")
    rid = c.new_id()
    other = rid if extra_id == "same" else 9999
    _, seen = c.call("fetch_page", shape={"framing": framing, "payload": "benign",
                                          "extra": [{"id": other, "payload": "plain"}]}, rid=rid)
    check_bar(seen, [rid], removed=(KEY, hs.PLAIN_INSTRUCTION))


@pytest.mark.parametrize("method", ["sampling/createMessage", "elicitation/create"])
@pytest.mark.parametrize("variant", ["plain", "zero_width", "cyrillic"])
def test_server_request_with_an_instruction_taints(gw: Gateway, method: str, variant: str) -> None:
    """A server-to-client request before a benign result, its text an injected instruction: it
    reaches the agent (the pack allows it) and taints the session."""
    c = Client(gw, f"server-request/{method}/{variant}")
    rid, seen = c.call("fetch_page", shape={"framing": "sse", "payload": "benign", "request_payload": variant,
                                            "server_requests": [method]})
    check_bar(seen, [rid])
    assert hs.BENIGN_TEXT in delivered_text(seen, rid), seen.describe()
    assert any(m.get("method") == method for m in seen.messages), f"the allowed {method} was removed"
    assert c.tainted(), f"{method} carrying {hs.instruction(variant)!r} did not taint the session"


def test_denied_server_request_is_removed(gw: Gateway) -> None:
    """roots/list is a server request the pack denies: removed from the stream; the rest passes."""
    c = Client(gw, "server-request/denied")
    rid, seen = c.call("fetch_page", shape={"framing": "sse", "payload": "benign", "notifications": 1,
                                            "server_requests": ["roots/list", "sampling/createMessage"]})
    check_bar(seen, [rid], removed=(KEY, "roots/list"))
    assert hs.BENIGN_TEXT in delivered_text(seen, rid), seen.describe()


@pytest.mark.parametrize("accept", ["identity", "gzip, br"])
@pytest.mark.parametrize("variant", ["plain", "bidi"])
def test_resumed_stream_replays_an_inspected_result(gw: Gateway, variant: str, accept: str) -> None:
    """The POST stream ends after its priming event and a notification; the client resumes with
    GET + Last-Event-ID (asking for compression or not; the server compresses what it may) and
    the server replays the result (key + instruction) there."""
    c = Client(gw, f"resume/{variant}/{accept}")
    stream = f"r{uuid.uuid4().hex[:8]}"
    rid, first = c.call("fetch_page", shape={"framing": "sse", "stream": stream, "cut_after": 2,
                                             "notifications": 1, "payload": variant})
    check_bar(first, [])
    assert first.result(rid) is None, "the result was meant for the resumed stream"
    seen = c.get(last_event_id=f"{stream}-1", shape={"encoding": "gzip"}, accept_encoding=accept)
    check_bar(seen, [rid])
    check_taint_if_read(c, seen, rid)


def test_standalone_get_stream_server_request_taints(gw: Gateway) -> None:
    """A server request pushed on the standalone GET stream, carrying an instruction."""
    c = Client(gw, "get-push")
    seen = c.get(shape={"push": ["sampling/createMessage", "roots/list"], "payload": "zero_width"})
    check_bar(seen, [], removed=(KEY, "roots/list"))
    if any(m.get("method") == "sampling/createMessage" for m in seen.messages):
        assert c.tainted(), "a sampling request on the GET stream carried an instruction but did not taint"


@pytest.mark.parametrize("framing", ["json", "sse"])
@pytest.mark.parametrize("hop", ["gateway", "trailers-enabled"])
def test_trailers(gw: Gateway, hop: str, framing: str) -> None:
    """The answer ends with an HTTP/1.1 trailer section (so, with trailers enabled, the filter's
    body ends with on_response_trailers, not an end-of-stream data chunk)."""
    c = Client(gw, f"trailers/{hop}/{framing}", port=gw.port if hop == "gateway" else gw.trailers_port)
    rid, seen = c.call("fetch_page", shape={"framing": framing, "trailers": True, "splits": [40], "gap_ms": 5})
    check_bar(seen, [rid])
    check_delivered_and_tainted(c, seen, rid)


def test_trailers_reach_the_client_only_when_enabled(gw: Gateway) -> None:
    """Records what Envoy does with response trailers (module docstring); a benign answer."""
    out = {}
    for hop, port in (("gateway", gw.port), ("trailers-enabled", gw.trailers_port)):
        c = Client(gw, f"trailers-seen/{hop}", port=port)
        rid, seen = c.call("fetch_page", shape={"framing": "json", "payload": "benign", "trailers": True})
        check_bar(seen, [rid])
        out[hop] = dict(seen.raw.trailers)
    assert out["gateway"] == {}, out
    assert out["trailers-enabled"].get("x-upstream-status") == "complete", out


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_mixed_batch(gw: Gateway, framing: str) -> None:
    """One batch with tools/list and tools/call: the list is filtered AND the result inspected."""
    c = Client(gw, f"batch/{framing}")
    lst, call = c.list_msg(), c.call_msg("fetch_page", {"url": "https://docs.example/notes"})
    seen = c.post([lst, call], shape={"framing": framing})
    check_bar(seen, [lst["id"], call["id"]], removed=(KEY, hs.DENIED_TOOL))
    names = [t.get("name") for t in (seen.result(lst["id"]) or {}).get("tools", [])]
    assert "fetch_page" in names, f"the list was not delivered: {seen.describe()}"
    check_delivered_and_tainted(c, seen, call["id"])


ODD_ANSWERS = [("ctype-charset", {"framing": "json", "content_type": "application/json; charset=utf-8"}),
               ("ctype-upper", {"framing": "json", "content_type": "Application/JSON"}),
               ("ctype-sse-charset", {"framing": "sse", "content_type": "text/event-stream; charset=utf-8"}),
               ("ctype-none", {"framing": "json", "content_type": ""}),
               ("ctype-text", {"framing": "json", "content_type": "text/plain"}),
               ("status-500", {"framing": "json", "status": 500})]

# Answers a client reads as other text than the bytes say to a UTF-8 reader: in UTF-7 (httpx
# decodes a declared charset), compressed under a second content-encoding line (a client applies
# every line), or naming `result` twice (a case-blind or first-wins client reads the other one).
# Each is replaced by errors.
ILLEGIBLE_ANSWERS = [("utf7-json", {"framing": "json", "content_type": "application/json; charset=utf-7",
                                    "utf7_key": True}),
                     ("utf7-sse", {"framing": "sse", "content_type": "text/event-stream; charset=UTF-7",
                                   "utf7_key": True}),
                     ("utf7-error-status", {"framing": "json", "status": 500, "utf7_key": True,
                                            "content_type": "application/json; charset=utf-7"}),
                     ("twin-case-json", {"framing": "json", "twin": "case"}),
                     ("twin-case-sse", {"framing": "sse", "twin": "case"}),
                     ("twin-exact-json", {"framing": "json", "twin": "exact"}),
                     ("twin-exact-sse", {"framing": "sse", "twin": "exact"}),
                     ("encoding-lines-json", {"framing": "json", "encoding_lines": ["identity", "gzip"]}),
                     ("encoding-lines-sse", {"framing": "sse", "encoding_lines": ["identity", "gzip"]})]


@pytest.mark.parametrize(("name", "shape"), ILLEGIBLE_ANSWERS, ids=[n for n, _ in ILLEGIBLE_ANSWERS])
def test_answers_a_client_reads_as_other_text_are_replaced(gw: Gateway, name: str, shape: dict) -> None:
    c = Client(gw, f"illegible/{name}")
    rid, seen = c.call("fetch_page", shape=shape)
    where = seen.contains(KEY)
    assert not where, f"{KEY!r} reached the client ({', '.join(where)})\n{seen.describe()}"
    assert seen.error_codes(rid) == [-32044], seen.describe()


@pytest.mark.parametrize(("name", "shape"), ODD_ANSWERS, ids=[n for n, _ in ODD_ANSWERS])
def test_answers_with_odd_headers(gw: Gateway, name: str, shape: dict) -> None:
    """The result under a content-type with parameters or in upper case, under none or text/plain
    (a lenient client still parses it), or with a 500 status (clients show error bodies)."""
    c = Client(gw, f"odd/{name}")
    rid, seen = c.call("fetch_page", shape=shape)
    where = seen.contains(KEY)
    assert not where, f"{KEY!r} reached the client ({', '.join(where)})\n{seen.describe()}"
    if name in ("ctype-charset", "ctype-upper", "ctype-sse-charset"):
        # A JSON or SSE content type, however spelled: the whole bar.
        check_bar(seen, [rid])
        check_taint_if_read(c, seen, rid)


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_resource_contents_are_read_like_tool_output(gw: Gateway, framing: str) -> None:
    """A resource whose contents carry the key and an instruction: the key is redacted and the
    session tainted, as for a tool result (clients hand both to the model)."""
    c = Client(gw, f"resource/{framing}")
    rid = c.new_id()
    seen = c.post({"jsonrpc": "2.0", "id": rid, "method": "resources/read",
                   "params": {"uri": "file:///notes.txt"}}, shape={"framing": framing})
    check_bar(seen, [rid])
    contents = (seen.result(rid) or {}).get("contents") or []
    assert contents and "contents" in json.dumps(seen.result(rid)), seen.describe()
    assert c.tainted(), "the resource's instruction did not taint the session"


@pytest.mark.parametrize(("variant", "kept"), [("plain", False), ("zero_width", False), ("benign", True)])
def test_server_instructions_aimed_at_the_agent_are_removed(gw: Gateway, variant: str, kept: bool) -> None:
    """The server's `instructions` in its initialize answer go into the model's context: an
    injected one is removed, a benign one passes."""
    c = Client(gw, f"instructions/{variant}")
    seen = c.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": hs.PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}}},
        shape={"instructions": variant})
    result = seen.result(1) or {}
    assert result.get("serverInfo", {}).get("name") == "hostile", seen.describe()
    assert ("instructions" in result) == kept, seen.describe()
    assert hs.PLAIN_INSTRUCTION not in seen.text, seen.describe()


def test_envoy_is_healthy_after_the_corpus(gw: Gateway) -> None:
    """After everything above: both Envoys are up and ready, and a benign call works."""
    for s in (gw.main, gw.trailers):
        assert all(p.alive() for p in s.procs), [p.tail() for p in s.procs if not p.alive()]
        assert pe.http_get(f"http://127.0.0.1:{s.ports['admin']}/ready")[0] == 200
    for port in (gw.port, gw.trailers_port):
        c = Client(gw, "healthy", port=port)
        rid, seen = c.call("fetch_page", shape={"payload": "benign"})
        check_bar(seen, [rid])
        assert hs.BENIGN_TEXT in delivered_text(seen, rid), seen.describe()
        assert not c.tainted()


def listed_names(seen: Seen, rid: int) -> list[str]:
    return [t.get("name") for t in (seen.result(rid) or {}).get("tools", [])]


def test_a_list_answered_on_the_resumed_stream_is_filtered(gw: Gateway) -> None:
    """The POST stream of a tools/list ends after its priming event (MCP 2025-11-25 polling); the
    list comes on the GET stream the client resumes with Last-Event-ID. It is the list's answer
    all the same: the denied tool hidden, the poisoned definitions removed."""
    c = Client(gw, "list/resumed")
    stream = f"l{uuid.uuid4().hex[:8]}"
    msg = c.list_msg()
    first = c.post(msg, shape={"framing": "sse", "stream": stream, "cut_after": 1, "poisoned": True})
    check_bar(first, [])
    assert first.result(msg["id"]) is None, "the list was meant for the resumed stream"
    seen = c.get(last_event_id=f"{stream}-0")
    check_bar(seen, [msg["id"]], removed=(hs.DENIED_TOOL, "IMPORTANT", "get_secret"))
    names = listed_names(seen, msg["id"])
    assert "lookup_notes" not in names and "convert_units" not in names, names
    assert {"fetch_page", "send_email", "search_logs"} <= set(names), names


@pytest.mark.parametrize("ended", ["cleanly", "reset"])
def test_a_result_answered_on_the_resumed_stream_is_checked_as_its_calls(gw: Gateway, ended: str) -> None:
    """The POST's event stream ends after its priming event, cleanly or by a reset of the
    connection (no last chunk), and the client resumes with GET + Last-Event-ID: the call was
    handed over (at the clean end, or once Envoy is done with the reset stream), so the result
    replayed there is judged as its call's. `fetch_page`'s is delivered with its key redacted (not
    withheld, as any output no request claims would be); `dump_env`'s is withheld."""
    c = Client(gw, f"call/resumed/{ended}")
    for tool in ("fetch_page", hs.WITHHELD_TOOL):
        stream = f"c{uuid.uuid4().hex[:8]}"
        shape = {"framing": "sse", "stream": stream, "cut_after": 1, "reset": ended == "reset"}
        rid, first = c.call(tool, shape=shape)
        assert first.result(rid) is None, first.describe()
        seen = resume_until_answered(c, f"{stream}-0", rid, result=tool == "fetch_page")
        check_bar(seen, [rid], removed=(KEY, hs.WITHHELD_MARKER))
        if tool == "fetch_page":
            assert seen.result(rid) is not None, seen.describe()
            assert "[REDACTED]" in delivered_text(seen, rid), seen.describe()
        else:
            errors = [a["error"] for a in seen.answers(rid) if "error" in a]
            assert errors and "environment dumps" in errors[0].get("message", ""), seen.describe()


def resume_until_answered(c: Client, last_event_id: str, rid: int, *, result: bool) -> Seen:
    """Resume with ``last_event_id`` until the answer to ``rid`` is there (a result, when
    ``result``): Envoy hands a reset stream over when it is done with it, which may be a moment
    after the client saw the reset. At most 5 s."""
    deadline = time.monotonic() + 5
    while True:
        seen = c.get(last_event_id=last_event_id)
        answered = seen.result(rid) is not None if result else bool(seen.answers(rid))
        if answered or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def test_answers_pushed_on_the_get_stream_are_judged_as_every_answer_they_could_be(gw: Gateway) -> None:
    """A hostile server answers requests on the standalone GET stream, which no request of it
    asked: clients tie them by id all the same. A list there is filtered as a list, and an output
    is judged as the result of any tool a result rule names: `dump_env`'s is withheld although
    the filter cannot tell which call it answers."""
    c = Client(gw, "get/answers")
    seen = c.get(shape={"push_answers": [{"id": 41, "method": "tools/list"},
                                         {"id": 42, "method": "tools/call", "name": hs.WITHHELD_TOOL}],
                        "poisoned": True})
    check_bar(seen, [41, 42], removed=(hs.DENIED_TOOL, "IMPORTANT", "get_secret", hs.WITHHELD_MARKER))
    names = listed_names(seen, 41)
    assert "lookup_notes" not in names and "fetch_page" in names, names


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_a_poisoned_tool_definition_never_reaches_the_agent(gw: Gateway, framing: str) -> None:
    """Tools whose definitions carry an instruction (in the description; spelled with zero-width
    characters inside an input-schema property) are removed from tools/list although the pack
    allows calling them; a clean tool whose description says "ignore case" stays. A signed
    `result` receipt on the list says which were removed and why."""
    c = Client(gw, f"list/poisoned/{framing}")
    msg = c.list_msg()
    seen = c.post(msg, shape={"framing": framing, "poisoned": True})
    check_bar(seen, [msg["id"]], removed=(hs.DENIED_TOOL, "IMPORTANT", "get_secret"))
    tools = (seen.result(msg["id"]) or {}).get("tools", [])
    names = [t.get("name") for t in tools]
    assert "lookup_notes" not in names and "convert_units" not in names, names
    assert {"fetch_page", "send_email", "search_logs"} <= set(names), names
    clean = next(t for t in hs.POISONED_TOOLS if t["name"] == "search_logs")
    assert next(t for t in tools if t.get("name") == "search_logs") == clean, "passed untouched"
    # Nothing of the zero-width spelling reached the agent either (read as the model reads it).
    assert not any("get_secret" in as_the_model_reads(s) for s in strings(seen.values)), seen.describe()

    def poisoned_receipt() -> dict | None:
        for line in gw.main.access_log():
            for b in pe.receipts_of(line):
                if b.get("rule") == "filter:poisoned_entry" and b.get("session") == c.sid:
                    return b
        return None

    pe.wait_until("the list's receipt in the access log", lambda: poisoned_receipt() is not None, None, 10.0)
    r = poisoned_receipt()
    assert r is not None
    assert (r["event"], r["decision"], r["action"]["operation"]) == ("result", "MODIFY", "tools/list"), r
    assert r["modifications"] == [
        "removed tool `lookup_notes`: its description carries an instruction aimed at the agent",
        "removed tool `convert_units`: its input schema carries an instruction aimed at the agent",
    ], r


# -- tool pins (issue 18 item 2) --------------------------------------------------------------------------

def pin_receipt(gw: Gateway, sid: str, rule: str) -> dict:
    """The access log's receipt of session ``sid`` decided by ``rule`` (waits for it)."""
    def find() -> dict | None:
        for line in gw.main.access_log():
            for b in pe.receipts_of(line):
                if b.get("rule") == rule and b.get("session") == sid:
                    return b
        return None
    pe.wait_until(f"a `{rule}` receipt in the access log", lambda: find() is not None, None, 10.0)
    r = find()
    assert r is not None
    return r


def denial(seen: Seen, rid: int) -> dict:
    """The JSON-RPC error answering ``rid`` (the test fails when a result came instead)."""
    assert seen.result(rid) is None, f"the call went through: {seen.describe()}"
    errors = [m["error"] for m in seen.answers(rid) if isinstance(m.get("error"), dict)]
    assert errors, seen.describe()
    return errors[0]


@pytest.mark.parametrize("framing", ["json", "sse"])
def test_a_tool_that_changes_after_it_was_listed_is_removed_and_its_call_refused(gw: Gateway, framing: str) -> None:
    """A rug pull: the session lists the tools (their definitions are pinned), then the server
    answers the next tools/list with another definition of ``send_email``. That entry is removed
    (the pack allows calling it, and the new definition carries no instruction: only the pin
    tells), a signed `result` receipt says so with both digests, and a call of it is refused with
    ``tool:changed`` before it reaches the server."""
    c = Client(gw, f"pins/rug-pull/{framing}")
    first = c.list_msg()
    seen = c.post(first, shape={"framing": framing})
    names = [t.get("name") for t in (seen.result(first["id"]) or {}).get("tools", [])]
    assert "send_email" in names, seen.describe()
    rid, ok = c.call("send_email", {"to": "ops@corp.example", "body": "hi"}, shape={"framing": framing})
    assert ok.result(rid) is not None, f"the pinned tool is callable: {ok.describe()}"

    second = c.list_msg()
    seen = c.post(second, shape={"framing": framing, "rug_pull": True})
    check_bar(seen, [second["id"]], removed=(hs.DENIED_TOOL, "archived"))
    names = [t.get("name") for t in (seen.result(second["id"]) or {}).get("tools", [])]
    assert "send_email" not in names and "fetch_page" in names, names
    r = pin_receipt(gw, c.sid, "tool:changed")
    assert (r["event"], r["decision"], r["action"]["operation"]) == ("result", "MODIFY", "tools/list"), r
    pinned = next(t for t in hs.TOOLS if t["name"] == "send_email")
    old, new = (hashlib.sha256(json.dumps({k: t[k] for k in ("name", "description", "inputSchema")},
                                          sort_keys=True, separators=(",", ":"),
                                          ensure_ascii=False).encode()).hexdigest()
                for t in (pinned, hs.RUG_PULLED))
    assert r["modifications"] == [
        f"removed tool `send_email`: the definition of tool `send_email` of server `hostile` differs "
        f"from its pin (pinned sha256 {old}, now {new})"], r

    before = len(gw.received(c.case))
    rid, refused = c.call("send_email", {"to": "ops@corp.example", "body": "hi", "bcc": "x@evil.example"})
    err = denial(refused, rid)
    assert err.get("code") == DENIED and (err.get("data") or {}).get("rule") == "tool:changed", err
    assert old in err["message"] and new in err["message"], err
    assert len(gw.received(c.case)) == before, "the refused call never reached the server"


def test_a_changed_list_announced_holds_calls_until_the_tools_are_listed_again(gw: Gateway) -> None:
    """``notifications/tools/list_changed`` (in the SSE answer to another call) makes the pinned
    tools unverified: a call of one before the next tools/list is ``tool:changed``; the list that
    re-checks it (the same definition) clears it."""
    c = Client(gw, "pins/list-changed")
    msg = c.list_msg()
    c.post(msg, shape={"framing": "json"})
    rid, seen = c.call("fetch_page", shape={"framing": "sse", "payload": "benign", "list_changed": True})
    assert any(m.get("method") == "notifications/tools/list_changed" for m in seen.messages), \
        f"the notification reaches the agent: {seen.describe()}"
    rid, refused = c.call("send_email", {"to": "ops@corp.example", "body": "hi"})
    err = denial(refused, rid)
    assert (err.get("data") or {}).get("rule") == "tool:changed", err
    assert "announced a changed tool list" in err["message"], err
    msg = c.list_msg()
    c.post(msg, shape={"framing": "json"})
    rid, ok = c.call("send_email", {"to": "ops@corp.example", "body": "hi"}, shape={"framing": "json"})
    assert ok.result(rid) is not None, f"re-listed unchanged, the tool is callable again: {ok.describe()}"


def second_server_listener(port: int, server: str) -> Callable[[str], str]:
    """An edit of mcp-gateway's envoy.yaml: a second listener on ``port`` in front of the same
    upstream, whose filter names the MCP server ``server``. Both filters run in one Wasm VM
    (``vm_id: portcullis``), so they share the session and pin records, as two routes of one
    gateway fronting two servers do."""
    def edit(yaml: str) -> str:
        start, end = yaml.index("  - name: mcp_gateway\n"), yaml.index("  clusters:\n")
        block = yaml[start:end]
        second = re.sub(r"(socket_address: \{ address: 127\.0\.0\.1, port_value: )\d+", rf"\g<1>{port}",
                        block.replace("  - name: mcp_gateway\n", "  - name: mcp_gateway_second\n", 1), count=1)
        second = second.replace('server_name\\":\\"hostile\\"', f'server_name\\":\\"{server}\\"')
        assert f'server_name\\":\\"{server}\\"' in second and str(port) in second, \
            "mcp-gateway/envoy.yaml.tmpl changed: update second_server_listener()"
        return yaml[:end] + second + yaml[end:]
    return edit


def test_a_second_server_offering_a_confusable_name_is_flagged(gw: Gateway, keys: pe.Keys,
                                                               tmp_path: Path) -> None:
    """Shadowing (issue 18 item 4): one Envoy fronts the hostile server twice, as `hostile` and as
    `evil`. The session lists `hostile`'s tools, then `evil` offers `fetch_pаge` (Cyrillic a) and
    `fetch_page` itself: both are removed from `evil`'s list with a signed `tool:shadowed`
    receipt, and a call of the look-alike through `evil` is refused before it reaches the server,
    although the pack allows it (`lookalike_fetch`). `hostile`'s own `fetch_page` stays callable."""
    bundle = compile_or_fail(POLICIES / "hostile_responses.pcl", tmp_path / "hostile_responses.bundle", keys)
    second_port = pe.free_port()
    with pe.stack(tmp_path / "shadow") as s:
        s.envoy("mcp-gateway", keys, bundle, patch=PATCH, values={"UPSTREAM_PORT": str(gw.server_port)},
                yaml_edit=second_server_listener(second_port, "evil"))
        first = Client(gw, "pins/shadow", port=s.ports["envoy"])
        msg = first.list_msg()
        seen = first.post(msg, shape={"framing": "json"})
        assert "fetch_page" in [t.get("name") for t in (seen.result(msg["id"]) or {}).get("tools", [])]

        evil = Client(gw, "pins/shadow", port=second_port, initialize=False)
        evil.sid = first.sid  # the same MCP session, through the route of the second server
        msg = evil.list_msg()
        seen = evil.post(msg, shape={"framing": "json", "shadow": True})
        check_bar(seen, [msg["id"]], removed=("fetch_p\u0430ge",))
        assert (seen.result(msg["id"]) or {}).get("tools") == [], seen.describe()

        def receipt() -> dict | None:
            for line in pe.read_jsonl(s.files["access_log"]):
                for b in pe.receipts_of(line):
                    if b.get("rule") == "tool:shadowed" and b.get("session") == first.sid:
                        return b
            return None
        pe.wait_until("the `tool:shadowed` receipt", lambda: receipt() is not None, None, 10.0)
        r = receipt()
        assert r is not None and r["decision"] == "MODIFY", r
        assert r["modifications"] == [
            "removed tool `fetch_p\u0430ge`: tool `fetch_p\u0430ge` of server `evil` looks like tool "
            "`fetch_page` of server `hostile`",
            "removed tool `fetch_page`: tool `fetch_page` of server `evil` is also offered by server `hostile`",
        ], r

        before = len(gw.received("pins/shadow"))
        rid, refused = evil.call("fetch_p\u0430ge")
        err = denial(refused, rid)
        assert (err.get("data") or {}).get("rule") == "tool:shadowed", err
        assert len(gw.received("pins/shadow")) == before, "the refused call never reached the server"
        rid, ok = first.call("fetch_page", shape={"payload": "benign"})
        assert hs.BENIGN_TEXT in delivered_text(ok, rid), ok.describe()
