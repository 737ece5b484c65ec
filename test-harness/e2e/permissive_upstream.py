"""A deliberately permissive HTTP/1.1 upstream for the hostile-request corpus
(test_hostile_requests.py): it parses every request the way the most lenient real servers do,
executes what it reads, and records what it EXECUTED, so a test can tell whether a request the
filter judged one way was read another way behind it.

How it reads a request (each is something a real server does):

- **JSON object keys** are matched case-insensitively with the last one winning, folded like Go's
  ``encoding/json`` (ASCII upper-casing; any other character ``c`` becomes
  ``unicode.ToUpper(unicode.ToLower(c))`` with simple case mappings, so U+017F 'ſ' folds to 'S',
  U+212A KELVIN SIGN to 'K' and U+0130 'İ' to 'I'), at every level it reads: the envelope
  (``jsonrpc``, ``method``, ``id``, ``params``), ``params.name``, ``params.arguments`` and the
  argument keys (recursively). A message with a (folded) ``method`` is executed as a request even
  when it also carries ``result`` or ``error``.
- **Prototypes**: the members of an argument object's ``__proto__`` object, or of its
  ``constructor.prototype``, are read as the object's own where it has none, as JavaScript reads
  them after ``Object.assign({}, defaults, args)`` or a recursive merge.
- **Bodies** framed by ``content-length`` or ``transfer-encoding: chunked`` (trailers recorded);
  ``content-encoding: gzip`` / ``x-gzip`` / ``deflate`` (zlib or raw) inflated, as express.json()
  does; a UTF-8 byte-order mark skipped; invalid UTF-8 replaced. Any body that parses as JSON is
  read as JSON, whatever its ``content-type``, on any path and with any method (a JSON-RPC body on a
  GET is executed). Any other body is also read as a form (``a=1&b=%41``, percent-decoded, ``+``
  as a space), whatever its ``content-type``, as servers that merge form fields into their
  parameters do.
- **Routes**: percent-decoding applied twice (``%252F`` and ``%2561`` count), overlong UTF-8
  read as the ASCII it encodes (``%C0%AE`` is ``.``, as IIS and older JVM decoders read it), ``\\`` read as
  ``/``, ``;params`` dropped from each segment (Servlet style), repeated slashes merged, dot
  segments resolved after decoding, a trailing dot on the last segment ignored, case folded to
  lower case, no trailing slash.
- **Rewrites**: an ``x-original-url`` or ``x-rewrite-url`` header replaces the path it routes on
  (Symfony before 3.4.7 / Zend / IIS URL Rewrite).
- **Charsets**: ``content-type: ...; charset=utf-16le`` (or any ``utf-*`` charset Python knows:
  UTF-16, UTF-32, UTF-7) decodes the body in that charset, as body-parser's json() does.
- **Methods**: upper-cased; on a POST, ``x-http-method-override`` / ``x-http-method`` /
  ``x-method-override`` or a ``_method`` query parameter replace it (express method-override,
  Rails, Laravel); the query decoded, and split on ``;`` as well as ``&`` (Python before 3.9.2);
  else a ``_method`` field of a form body (Rails, Symfony, Laravel) or a JSON object (Laravel).
- **Header names** are read as CGI maps them (Django, PHP, WSGI, Rack servers): ``_`` is ``-``, so
  ``x_forwarded_host`` is ``x-forwarded-host`` and ``x_http_method_override`` a method override,
  wherever the dashed spelling is absent.
- **Forwarded hosts**: ``x-forwarded-host`` (its first value), ``forwarded: host=``, ``x-host`` or
  ``x-original-host`` replace the host it serves, as a server behind a proxy it trusts does.
- **Hosts**: ``[::ffff:a.b.c.d]`` and the other IPv4-mapped spellings, IPv4-compatible
  ``[::a.b.c.d]`` and NAT64 ``[64:ff9b::a.b.c.d]`` (the network delivers them to the IPv4
  address), decimal / hex / octal / short IPv4 forms (``inet_aton``), a trailing dot, upper case:
  all read as the address they name. An absolute-form target's host wins over ``Host``.

Answers: JSON-RPC requests get valid JSON-RPC results (``initialize`` an InitializeResult and an
``mcp-session-id`` header, ``tools/list`` a tool list, ``tools/call`` a text content result,
anything else ``{}``); notifications and client responses alone get 202; a body-less GET on
``/mcp`` or ``/sse`` asking for an event stream gets 405 (no server-initiated stream); any other
request a small JSON document. Every answer carries ``x-permissive-upstream: 1`` (so a client
can tell an upstream answer from one Envoy or the filter made). What it cannot parse gets 400 (415
for an unknown content-encoding); it never crashes.

Every request but ``GET /healthz`` is appended as one JSON line to ``--record``: ``case`` (the
``x-hostile-case`` header), ``method``, ``effective_method``, ``raw_path``, ``route``, ``host``,
``host_ip``, ``headers``, ``framing``, ``trailers``, ``content_encoding``, ``body`` (after
inflating), ``form`` (its fields, for a body that is not JSON), ``status``, and ``messages``
(every JSON-RPC message it read: ``method``, ``id``, ``tool``, ``arguments`` with folded
lower-case keys, ``uri``, ``executed``) or null.

Run: ``python permissive_upstream.py --port 9090 --record FILE``. Stdlib only.
"""

from __future__ import annotations

import argparse
import codecs
import gzip
import ipaddress
import json
import os
import socket
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

_LOCK = threading.Lock()
MAX_BODY = 8 << 20
PROTOCOL = "2025-11-25"
STREAM_ROUTES = ("/mcp", "/sse")  # where a GET asks for the server's event stream
OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
TOOLS = [
    {"name": "read_file", "description": "read a file",
     "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}},
    {"name": "delete_branch", "description": "delete a branch",
     "inputSchema": {"type": "object", "properties": {"branch": {"type": "string"}}}},
    {"name": "query_rows", "description": "query rows",
     "inputSchema": {"type": "object", "properties": {"sql": {"type": "string"}, "limit": {"type": "number"}}}},
    {"name": "git_push", "description": "push a branch",
     "inputSchema": {"type": "object", "properties": {"branch": {"type": "string"},
                                                      "skip_checks": {"type": "boolean"}}}},
    {"name": "write_file", "description": "write a file",
     "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}}},
]


class BadRequest(Exception):
    """The request cannot be parsed: answer ``status`` with ``reason``."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


# -- JSON as Go's encoding/json matches keys ----------------------------------------------------

class Obj(list):
    """A JSON object as its (key, value) pairs in order, duplicates kept."""


def _simple_lower(c: str) -> str:
    low = c.lower()
    if len(low) == 1:
        return low
    return "i" if c == "\u0130" else c  # U+0130's simple lower-case mapping is 'i'


def _simple_upper(c: str) -> str:
    up = c.upper()
    return up if len(up) == 1 else c


def fold(key: str) -> str:
    """Go's ``foldName``: ASCII upper-cased, other runes ``ToUpper(ToLower(r))``."""
    return "".join(c.upper() if c < "\x80" else _simple_upper(_simple_lower(c)) for c in key)


def get(obj: Any, name: str) -> tuple[bool, Any]:
    """(found, value) of member ``name`` in ``obj``: case-insensitive (folded), last wins."""
    found, value, want = False, None, fold(name)
    if isinstance(obj, Obj):
        for key, val in obj:
            if fold(key) == want:
                found, value = True, val
    return found, value


def folded(value: Any) -> Any:
    """``value`` as this server's structs see it: objects keyed by the folded, lower-cased key
    (last wins), at every depth; and as a JavaScript server's merge reads it
    (``Object.assign({}, defaults, args)``, a recursive merge): the members of a ``__proto__``
    object, or of ``constructor.prototype``, are inherited, so read where the object has none."""
    if isinstance(value, Obj):
        out: dict[str, Any] = {}
        inherited: dict[str, Any] = {}
        for key, val in value:
            out[fold(key).lower()] = folded(val)
            if key == "__proto__" and isinstance(val, Obj):
                inherited.update(folded(val))
            if key == "constructor" and isinstance(val, Obj):
                found, proto = get(val, "prototype")
                if found and isinstance(proto, Obj):
                    inherited.update(folded(proto))
        for key, val in inherited.items():
            out.setdefault(key, val)
        return out
    if isinstance(value, list):
        return [folded(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """``value`` with objects as dicts keeping the keys as written (last duplicate wins)."""
    if isinstance(value, Obj):
        return {k: plain(v) for k, v in value}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def parse_json(text: str) -> Any:
    """JSON with objects as ``Obj`` pairs; raises ValueError."""
    return json.loads(text, object_pairs_hook=Obj)


# -- routes and hosts -------------------------------------------------------------------------

def _overlong(raw: bytes) -> bytes:
    """``raw`` with each overlong UTF-8 sequence (``C0 AE``, ``E0 80 AE``) read as the ASCII
    character it encodes, as decoders that accept overlong forms (IIS, older JVMs) read it."""
    out, i = bytearray(), 0
    while i < len(raw):
        b = raw[i]
        if b in (0xC0, 0xC1) and i + 1 < len(raw) and 0x80 <= raw[i + 1] <= 0xBF:
            out.append(((b & 0x1F) << 6 | (raw[i + 1] & 0x3F)) & 0x7F)
            i += 2
        elif b == 0xE0 and i + 2 < len(raw) and raw[i + 1] in (0x80, 0x81) and 0x80 <= raw[i + 2] <= 0xBF:
            out.append(((raw[i + 1] & 0x3F) << 6 | (raw[i + 2] & 0x3F)) & 0x7F)
            i += 3
        else:
            out.append(b)
            i += 1
    return bytes(out)


def route_of(raw_path: str) -> str:
    """The route this server dispatches on (see the module docstring)."""
    path = raw_path.split("#", 1)[0].split("?", 1)[0]
    lowered = path.lower()
    for scheme in ("http://", "https://"):
        if lowered.startswith(scheme):
            rest = path[len(scheme):]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    for _ in range(2):
        path = _overlong(unquote_to_bytes(path)).decode("utf-8", errors="replace")
    segments: list[str] = []
    for seg in path.replace("\\", "/").split("/"):
        seg = seg.split(";", 1)[0]
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    if segments:
        segments[-1] = segments[-1].rstrip(".")
        if not segments[-1]:
            segments.pop()
    return ("/" + "/".join(segments)).lower()


def host_of(authority: str) -> tuple[str, str | None]:
    """(host as written without port, lower-cased; the IP address it names or None)."""
    host = authority.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address):
            packed = ip.packed
            if ip.ipv4_mapped is not None:
                return host, str(ip.ipv4_mapped)
            if packed[:12] == bytes(12) and packed[12:] not in (bytes(4), b"\0\0\0\1"):
                return host, socket.inet_ntoa(packed[12:])  # IPv4-compatible ::a.b.c.d
            if packed[:12] == bytes.fromhex("0064ff9b0000000000000000"):
                return host, socket.inet_ntoa(packed[12:])  # NAT64 well-known prefix 64:ff9b::/96
        return host, str(ip)
    except ValueError:
        pass
    try:
        return host, socket.inet_ntoa(socket.inet_aton(host))  # 2852039166, 0xa9fea9fe, 169.254.43518
    except OSError:
        return host, None


# -- JSON-RPC -----------------------------------------------------------------------------------

def jsonrpc_items(doc: Any) -> list[Obj] | None:
    """The messages of a JSON-RPC body (object, or array of objects), or None when it is not one."""
    items = doc if isinstance(doc, list) and not isinstance(doc, Obj) else [doc]
    if not items or not all(isinstance(m, Obj) for m in items):
        return None
    if not any(get(m, "jsonrpc")[0] or get(m, "method")[0] for m in items):
        return None
    return items


def execute(msg: Obj) -> tuple[dict, dict | None]:
    """Read one message as this server does; (record, JSON-RPC response or None)."""
    has_method, method = get(msg, "method")
    has_id, mid = get(msg, "id")
    _, params = get(msg, "params")
    has_name, name = get(params, "name")
    has_args, args = get(params, "arguments")
    has_uri, uri = get(params, "uri")
    rec = {"method": method if has_method else None, "id": mid if has_id else None,
           "tool": name if has_name else None, "arguments": folded(args) if has_args else None,
           "uri": uri if has_uri else None, "executed": has_method and isinstance(method, str)}
    if not rec["executed"] or not has_id:
        return rec, None  # a notification, or a response the client posted back
    if method == "initialize":
        _, version = get(params, "protocolVersion")
        result: dict = {"protocolVersion": version if isinstance(version, str) else PROTOCOL,
                        "capabilities": {"tools": {"listChanged": False}},
                        "serverInfo": {"name": "permissive-upstream", "version": "1.0.0"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        text = f"executed {name} with {json.dumps(rec['arguments'], sort_keys=True)}"
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        result = {}
    return rec, {"jsonrpc": "2.0", "id": mid, "result": result}


# -- the server ---------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """Any method: reads, executes, records, answers."""

    protocol_version = "HTTP/1.1"
    record_path: str | None = None
    # Headers and body are written separately: without this, Nagle + delayed ACK hold every
    # answer on a kept-alive connection for ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log."""

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler dispatches to do_<METHOD as sent>: take every method, any case.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # -- reading --

    def _header(self, name: str, default: str | None = None) -> str | None:
        """A request header as CGI-style servers read it: ``name``, else its ``_`` spelling."""
        value = self.headers.get(name)
        if value is None:
            value = self.headers.get(name.replace("-", "_"))
        return default if value is None else value

    def _read_line(self) -> bytes:
        line = self.rfile.readline(65537)
        if not line.endswith(b"\n"):
            raise BadRequest("truncated chunked body")
        return line

    def _read_body(self) -> tuple[bytes, str, list[list[str]]]:
        te = self.headers.get_all("transfer-encoding") or []
        codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
        if codings:
            if codings[-1] != "chunked":
                raise BadRequest("transfer-encoding without chunked")
            body, trailers = bytearray(), []
            while True:
                size_text = self._read_line().split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadRequest("bad chunk size") from None
                if size == 0:
                    break
                if len(body) + size > MAX_BODY:
                    raise BadRequest("body too large", 413)
                body += self.rfile.read(size)
                self._read_line()
            while (line := self._read_line().rstrip(b"\r\n")):
                k, _, v = line.decode("latin-1").partition(":")
                trailers.append([k.strip().lower(), v.strip()])
            return bytes(body), "chunked", trailers
        lengths = {v.strip() for v in self.headers.get_all("content-length") or [] for v in v.split(",")}
        if not lengths:
            return b"", "none", []
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise BadRequest("bad content-length")
        length = int(next(iter(lengths)))
        if length > MAX_BODY:
            raise BadRequest("body too large", 413)
        return self.rfile.read(length), "content-length", []

    def _inflate(self, body: bytes) -> tuple[bytes, list[str]]:
        codings = [c.strip().lower() for v in self.headers.get_all("content-encoding") or []
                   for c in v.split(",") if c.strip()]
        for coding in reversed(codings):
            try:
                if coding in ("gzip", "x-gzip"):
                    body = gzip.decompress(body)
                elif coding == "deflate":
                    try:
                        body = zlib.decompress(body)
                    except zlib.error:
                        body = zlib.decompress(body, -15)
                elif coding != "identity":
                    raise BadRequest(f"unsupported content-encoding {coding}", 415)
            except (OSError, EOFError, zlib.error):
                raise BadRequest(f"body is not valid {coding}") from None
        return body, codings

    def _charset(self) -> str:
        """The body's charset: UTF-8 unless ``content-type`` names another Unicode one (as
        body-parser's json() accepts any ``utf-*`` charset, UTF-7 included)."""
        for param in (self.headers.get("content-type") or "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                charset = value.strip().strip('"').lower()
                # body-parser hands any `utf-` charset to iconv-lite, which knows UTF-7 too.
                if charset.startswith("utf-") and charset != "utf-8":
                    try:
                        return codecs.lookup(charset).name
                    except LookupError:
                        raise BadRequest(f"unsupported charset {charset}", 415) from None
        return "utf-8"

    # -- answering --

    def _reply(self, status: int, payload: bytes, ctype: str = "application/json",
               extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-permissive-upstream", "1")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command.upper() != "HEAD":
            self.wfile.write(payload)

    def _record(self, entry: dict) -> None:
        if self.record_path:
            with _LOCK, open(self.record_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def _handle(self) -> None:
        # The target exactly as sent: http.server collapses a leading `//` in self.path.
        parts = self.requestline.split(" ")
        self.raw_target = parts[1] if len(parts) == 3 else self.path
        entry: dict[str, Any] = {"at": time.time(), "case": self.headers.get("x-hostile-case"),
                                 "method": self.command, "raw_path": self.raw_target}
        try:
            self._serve(entry)
        except BadRequest as e:
            self.close_connection = True
            entry.update(status=e.status, error=str(e))
            self._record(entry)
            self._reply(e.status, json.dumps({"upstream": "permissive", "error": str(e)}).encode())
        except Exception as e:  # noqa: BLE001 - this server must answer whatever it is sent
            self.close_connection = True
            entry.update(status=400, error=f"{type(e).__name__}: {e}")
            self._record(entry)
            try:
                self._reply(400, json.dumps({"upstream": "permissive", "error": "bad request"}).encode())
            except OSError:
                pass

    def _serve(self, entry: dict[str, Any]) -> None:
        raw_body, framing, trailers = self._read_body()
        if self.command == "GET" and self.raw_target == "/healthz":
            self._reply(200, b"ok", "text/plain")
            return
        method = self.command.upper()
        target = self.raw_target
        # Split on `;` too, as Python before 3.9.2 and some Java containers do.
        raw_query = target.split("?", 1)[1] if "?" in target else ""
        query = dict(parse_qsl(raw_query.replace(";", "&"), keep_blank_values=True))
        effective = method
        if method == "POST":
            override = next((self._header(h) for h in OVERRIDE_HEADERS if self._header(h)), None)
            override = override or query.get("_method")
            if override:
                effective = override.strip().upper()
        authority = self.headers.get("host", "")
        if target.lower().startswith(("http://", "https://")):
            authority = target.split("//", 1)[1].split("/", 1)[0]  # RFC 9112 3.2.2: the target's host wins
        # Behind a trusting proxy the host is the one a forwarding header names (Express takes
        # the first of a list), as host-routed tenants and Rails' / Django's request.host read it.
        forwarded = next((v.split(";") for v in [self._header("forwarded", "").split(",")[0]] if v), [])
        named = (self._header("x-forwarded-host", "").split(",")[0].strip()
                 or next((p.split("=", 1)[1].strip().strip('"') for p in forwarded
                          if p.strip().lower().startswith("host=")), "")
                 or self._header("x-host", "") or self._header("x-original-host", ""))
        authority = named or authority
        host, host_ip = host_of(authority)
        # Symfony / Zend / IIS URL-rewrite style: the path to dispatch may come from a header.
        rewritten = self._header("x-original-url") or self._header("x-rewrite-url")
        entry.update(effective_method=effective, route=route_of(rewritten or target), host=host, host_ip=host_ip,
                     headers=[[k.lower(), v] for k, v in self.headers.items()], framing=framing,
                     trailers=trailers, content_encoding=None, body="", form=None, messages=None)
        body, codings = self._inflate(raw_body)
        entry["content_encoding"] = codings or None
        text = body.decode(self._charset(), errors="replace").lstrip("\ufeff")
        entry["body"] = text
        doc, is_json = None, False
        if text.strip():
            try:
                doc, is_json = parse_json(text), True
            except ValueError:
                if "json" in (self.headers.get("content-type") or "").lower():
                    raise BadRequest("body is not JSON") from None
        if text.strip() and not is_json:
            entry["form"] = parse_qsl(text, keep_blank_values=True)
        # `_method` in the body of a POST the headers and query did not override: a form's (Rails,
        # Symfony, Laravel) or a JSON object's (Laravel).
        body_method = dict(entry["form"] or []).get("_method")
        if is_json and isinstance(doc, Obj):
            found, value = next(((True, v) for k, v in doc if k == "_method"), (False, None))
            body_method = value if found and isinstance(value, str) else body_method
        if method == "POST" and effective == "POST" and body_method:
            effective = body_method.strip().upper()
            entry["effective_method"] = effective
        items = jsonrpc_items(doc) if is_json else None
        if items is not None:
            records, responses = [], []
            for msg in items:
                rec, resp = execute(msg)
                records.append(rec)
                if resp is not None:
                    responses.append(resp)
            entry["messages"] = records
            entry["json"] = plain(doc)
            extra = {}
            if any(r["method"] == "initialize" for r in records) and not self.headers.get("mcp-session-id"):
                extra["mcp-session-id"] = uuid.uuid4().hex
            entry["status"] = 200 if responses else 202
            self._record(entry)
            if not responses:
                self._reply(202, b"", extra=extra)
                return
            out = responses if isinstance(doc, list) and not isinstance(doc, Obj) else responses[0]
            self._reply(200, json.dumps(out).encode(), extra=extra)
            return
        if is_json:
            entry["json"] = plain(doc)
        if (effective == "GET" and not text and entry["route"] in STREAM_ROUTES
                and "text/event-stream" in (self.headers.get("accept") or "")):
            entry["status"] = 405
            self._record(entry)
            self._reply(405, json.dumps({"upstream": "permissive", "error": "no event stream"}).encode())
            return
        entry["status"] = 200
        self._record(entry)
        doc_out = {"upstream": "permissive", "method": effective, "route": entry["route"], "host": host,
                   "received_bytes": len(body)}
        self._reply(200, json.dumps(doc_out).encode())


def main() -> None:
    """Parse arguments and serve until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--record", default=os.environ.get("PERMISSIVE_RECORD"))
    args = ap.parse_args()
    Handler.record_path = args.record
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
