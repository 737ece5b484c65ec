"""The hostile-request corpus (issue #13 item 7) as data, and the wire clients that send it.

Each ``Case`` is one request an attacking agent could send: a method, a request target
(origin-form path, or an absolute ``http://`` URL as a forward-proxy client sends), an authority,
headers and a body. ``test_hostile_requests.py`` sends every case through a real Envoy with
Portcullis to ``permissive_upstream.py`` over each of its transports:

| transport | framing |
|---|---|
| ``h1`` | HTTP/1.1, ``content-length`` |
| ``h1-chunked`` | HTTP/1.1, ``transfer-encoding: chunked`` (the body in 3-4 chunks) |
| ``h1-trailers`` | HTTP/1.1 chunked, the last chunk followed by a trailer section |
| ``h2`` | HTTP/2 with prior knowledge (h2c), ``content-length``, END_STREAM on the last DATA frame |
| ``h2-trailers`` | h2c, no ``content-length``, DATA frames without END_STREAM, then trailers (HEADERS, END_STREAM) |
| ``h1-raw`` | the case's exact HTTP/1.1 bytes (framing attacks: duplicate ``content-length``, ...) |

Body-less cases go over ``h1`` and ``h2`` only. The bar every case must meet is in the test
module; ``expect`` is the filter's documented answer where the design names one.

Cases are tagged on the wire with an ``x-hostile-case`` header, so the upstream's record of what
it executed can be matched to the request that caused it.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import select
import socket
import zlib
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

BODY_TRANSPORTS = ("h1", "h1-chunked", "h1-trailers", "h2", "h2-trailers")
BODYLESS_TRANSPORTS = ("h1", "h2")
HOST = "tools.example"  # every request names this host unless the case says otherwise
SECRET = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example access key id
METADATA = "169.254.169.254"
TAG = "x-hostile-case"
TIMEOUT_S = 5.0


# -- building bodies ------------------------------------------------------------------------------

def js(value: Any) -> bytes:
    """Compact JSON bytes (non-ASCII written as UTF-8, not escaped)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def call(tool: str, arguments: dict[str, Any], mid: int = 7) -> dict[str, Any]:
    """A tools/call request."""
    return {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


DENIED = call("delete_branch", {"branch": "main"})
DENIED_BODY = js(DENIED)
DENIED_PARAMS = '{"name":"delete_branch","arguments":{"branch":"main"}}'
ALLOWED_PARAMS = '{"name":"read_file","arguments":{"path":"/repo/README.md"}}'
BENIGN = call("read_file", {"path": "/repo/README.md"}, 3)
BENIGN_BODY = js(BENIGN)


def env(members: str, mid: int = 7) -> bytes:
    """A JSON-RPC envelope written by hand (so duplicate and oddly spelled keys survive)."""
    return ('{"jsonrpc":"2.0","id":%d,%s}' % (mid, members)).encode()


def utf7_run(text: str) -> str:
    """``text`` as one UTF-7 base64 run (``+...-``): ASCII letters a UTF-8 reader takes as they
    are, and a UTF-7 reader as ``text``."""
    return "+" + base64.b64encode(text.encode("utf-16-be")).decode().rstrip("=") + "-"


def gz(body: bytes) -> bytes:
    """gzip, with a fixed mtime (deterministic bytes)."""
    return gzip.compress(body, mtime=0)


# -- cases ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One hostile request. ``target``: origin-form path or absolute ``http://`` URL, sent as is.
    ``authority``: the Host header / ``:authority`` (default tools.example, or the absolute URL's
    host). ``expect``: the documented answer status(es), when the design names one. ``raw``: exact
    HTTP/1.1 bytes for framing attacks, with ``{tag}`` where the case tag header goes. ``attack``:
    sent straight to the permissive upstream (no Envoy), it makes the upstream execute something
    the strict pack denies (the test checks that its detector sees it); False for controls."""

    id: str
    target: str
    body: bytes | None = None
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str | None = "application/json"
    authority: str | None = None
    expect: tuple[int, ...] | None = None
    expect_jsonrpc: int | None = None
    transports: tuple[str, ...] | None = None
    raw: bytes | None = None
    why: str = ""
    attack: bool = True

    @property
    def wire_transports(self) -> tuple[str, ...]:
        """The transports this case is sent over."""
        if self.transports is not None:
            return self.transports
        if self.raw is not None:
            return ("h1-raw",)
        return BODY_TRANSPORTS if self.body is not None else BODYLESS_TRANSPORTS

    @property
    def host(self) -> str:
        """The authority sent."""
        if self.authority is not None:
            return self.authority
        if self.target.startswith("http://"):
            return self.target[len("http://"):].split("/", 1)[0]
        return HOST

    @property
    def path(self) -> str:
        """The path (and query) part of the target, for HTTP/2's ``:path``."""
        if self.target.startswith("http://"):
            rest = self.target[len("http://"):]
            return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return self.target


def _mcp(id_: str, body: bytes, target: str = "/mcp", **kw: Any) -> Case:
    return Case(id_, target, body, **kw)


def _cases() -> list[Case]:
    c: list[Case] = []
    add = c.append

    # Controls: the plain denied call, allowed call, denied egress path (must pass today).
    add(_mcp("control-denied-call", DENIED_BODY, why="delete_branch on /mcp: denied by the pack"))
    add(_mcp("control-allowed-call", js(BENIGN), why="read_file on /mcp: allowed", attack=False))
    add(Case("control-admin-post", "http://tools.example/admin/users", js({"user": "x"}),
             why="POST to /admin through the egress route: denied by no_admin"))
    add(Case("control-admin-get", "/admin", method="GET", why="GET /admin: denied by no_admin"))

    # MCP path spellings a server reads as its MCP endpoint (POST, denied call).
    for path in ["/MCP", "/Mcp/", "//mcp", "/mcp;v=1", "/mcp.", "/%6dcp", "/mcp/", "/./mcp",
                 "/mcp?x=1", "/a/../mcp", "/%2e/mcp", "/.%2e/mcp", "/mcp/%2e", "/;x=1/mcp", "/%4dCP",
                 "/%256dcp", "/mcp%2F", "/mcp%252F", "/MCP;v=1.", "http://tools.example/MCP",
                 "http://TOOLS.EXAMPLE/%6dcp/"]:
        add(_mcp(f"mcp-path {path}", DENIED_BODY, path, why=f"server reads {path} as /mcp"))
    for method in ["post", "Post", "pOsT"]:
        add(_mcp(f"mcp-method-case {method}", DENIED_BODY, "/mcp", method=method,
                 why="methods compare case-insensitively on servers that upper-case them"))
    add(_mcp("mcp-method-case post /MCP", DENIED_BODY, "/MCP", method="post"))

    # Other methods on the MCP path, carrying the denied call.
    for method in ["PUT", "PATCH", "put", "QUERY", "PROPFIND"]:
        add(_mcp(f"mcp-method {method}", DENIED_BODY, method=method, expect=(405,),
                 why=f"{method} with a JSON-RPC body: a lenient server executes the body"))
    for method in ["GET", "DELETE", "HEAD", "OPTIONS", "get"]:
        add(_mcp(f"mcp-method {method} with body", DENIED_BODY, method=method, expect=(400,),
                 why=f"{method} with a JSON-RPC body: the filter judges the headers, the server the body"))

    # The legacy HTTP+SSE transport: messages are POSTed to a separate endpoint.
    add(_mcp("legacy /messages?sessionId", DENIED_BODY, "/messages?sessionId=abc"))
    add(_mcp("legacy /messages/?session_id", DENIED_BODY, "/messages/?session_id=abc"))
    add(_mcp("legacy /sse", DENIED_BODY, "/sse"))

    # JSON-RPC on a non-MCP path, through the egress route with body inspection.
    for target in ["http://tools.example/api/rpc", "/api/rpc", "/x"]:
        add(Case(f"egress-jsonrpc {target}", target, DENIED_BODY))
    for ctype in ["text/plain", None, "application/x-www-form-urlencoded", "application/json-rpc"]:
        add(Case(f"egress-jsonrpc content-type {ctype}", "/api/rpc", DENIED_BODY, content_type=ctype,
                 why="a body not declared JSON is still JSON to the server"))
    add(Case("egress-jsonrpc with BOM text/plain", "/api/rpc", b"\xef\xbb\xbf" + DENIED_BODY,
             content_type="text/plain"))
    add(Case("egress-jsonrpc /admin ping", "/admin/rpc", js({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
             why="a JSON-RPC body does not make /admin any less /admin"))
    add(Case("egress-jsonrpc write_file", "/api/rpc", js(call("write_file", {"path": "/repo/x", "content": "y"}))))

    # Key smuggling: keys that collide after case folding, or are spelled non-canonically.
    smuggle = {
        "Method beside method": env('"method":"ping","Method":"tools/call","params":%s' % DENIED_PARAMS),
        "escaped \\u004dethod": env('"method":"ping","\\u004dethod":"tools/call","params":%s' % DENIED_PARAMS),
        "METHOD first": env('"METHOD":"tools/call","method":"ping","params":%s,"mEthod":"tools/call"'
                            % DENIED_PARAMS),
        "Name beside name": env('"method":"tools/call","params":{"name":"read_file",'
                                '"arguments":{"path":"/repo/a"},"Name":"delete_branch"}'),
        "escaped \\u004eame": env('"method":"tools/call","params":{"name":"read_file",'
                                  '"arguments":{"path":"/repo/a"},"\\u004eame":"delete_branch"}'),
        "PARAMS beside params": env('"method":"tools/call","params":%s,"PARAMS":%s'
                                    % (ALLOWED_PARAMS, DENIED_PARAMS)),
        "param\u017f (long s) beside params": env('"method":"tools/call","params":%s,"param\u017f":%s'
                                                  % (ALLOWED_PARAMS, DENIED_PARAMS)),
        "escaped param\\u017f beside params": env('"method":"tools/call","params":%s,"param\\u017f":%s'
                                                  % (ALLOWED_PARAMS, DENIED_PARAMS)),
        "lone Params": env('"method":"tools/call","Params":%s' % DENIED_PARAMS),
        "lone param\u017f": env('"method":"tools/call","param\u017f":%s' % DENIED_PARAMS),
        "lone NAME": env('"method":"tools/call","params":{"NAME":"delete_branch","arguments":{"branch":"main"}}'),
        "lone Arguments read_file": env('"method":"tools/call","params":{"name":"read_file",'
                                        '"Arguments":{"path":"/etc/shadow"}}'),
        "lone Arguments query_rows": env('"method":"tools/call","params":{"name":"query_rows",'
                                         '"Arguments":{"sql":"select *","limit":500}}'),
        "arguments beside ARGUMENTS": env('"method":"tools/call","params":{"name":"read_file",'
                                          '"arguments":{"path":"/repo/a"},"ARGUMENTS":{"path":"/etc/shadow"}}'),
        "lone Method with result": env('"result":{},"Method":"tools/call","Params":%s' % DENIED_PARAMS),
        "lone JSONRPC": ('{"JSONRPC":"2.0","id":7,"method":"tools/call","params":%s}' % DENIED_PARAMS).encode(),
        "limit beside LIMIT": js(call("query_rows", {"sql": "select *", "limit": 5, "LIMIT": 500})),
        "limit beside l\u0130mit (dotted I)": js(call("query_rows", {"sql": "select *", "limit": 5,
                                                                     "l\u0130mit": 500})),
        "lone LIMIT": js(call("query_rows", {"sql": "select *", "LIMIT": 500})),
        "limit twice": env('"method":"tools/call","params":{"name":"query_rows",'
                           '"arguments":{"sql":"select *","limit":5,"limit":500}}'),
        "limit as string": js(call("query_rows", {"sql": "select *", "limit": "500"})),
        "limit NaN": env('"method":"tools/call","params":{"name":"query_rows","arguments":{"limit":NaN}}'),
        "s\u212aip_checks (Kelvin)": js(call("git_push", {"branch": "main", "s\u212aip_checks": True})),
        "\u017fkip_checks (long s)": js(call("git_push", {"branch": "main", "\u017fkip_checks": True})),
        "sk\u0130p_checks (dotted I)": js(call("git_push", {"branch": "main", "sk\u0130p_checks": True})),
        "SKIP_CHECKS": js(call("git_push", {"branch": "main", "SKIP_CHECKS": True})),
        # A prototype member: JSON.parse keeps it as data; a JavaScript server's merge of the
        # arguments (`Object.assign({}, defaults, args)`) reads its members as the object's own.
        "__proto__ skip_checks": env('"method":"tools/call","params":{"name":"git_push","arguments":'
                                     '{"branch":"main","__proto__":{"skip_checks":true}}}'),
        "\\u005f_proto__ skip_checks": env('"method":"tools/call","params":{"name":"git_push","arguments":'
                                            '{"branch":"main","\\u005f_proto__":{"skip_checks":true}}}'),
        "constructor.prototype skip_checks": env('"method":"tools/call","params":{"name":"git_push",'
                                                 '"arguments":{"branch":"main","constructor":'
                                                 '{"prototype":{"skip_checks":true}}}}'),
        "skip_checks false then SKIP_CHECKS true": js(call("git_push", {"branch": "main", "skip_checks": False,
                                                                      "SKIP_CHECKS": True})),
    }
    for name, body in smuggle.items():
        add(_mcp(f"keys {name} @mcp", body, why="the server folds keys, last wins"))
        add(Case(f"keys {name} @egress", "/api/rpc", body, why="the same body on a non-MCP path"))

    # A path in the arguments: inside /repo/ as sent, outside it as the file system opens it.
    for path in ["/repo/../etc/passwd", "/repo/./docs/../../etc/shadow", "/repo/..\\..\\etc\\passwd",
                 "/repo/docs/../.."]:
        add(_mcp(f"read_file {path}", js(call("read_file", {"path": path})),
                 why="the file system resolves dot segments"))
    add(_mcp("read_file /repo/docs/../README.md", js(call("read_file", {"path": "/repo/docs/../README.md"})),
             why="still under /repo/ once resolved", attack=False))

    # A URL in the arguments: the metadata address as the tool's HTTP client reads it.
    for url in ["HTTP://169.254.169.254/latest", "http://0xA9FEA9FE/latest", "http://2852039166/latest",
                "http://0251.0376.0251.0376/latest", "http://169.254.43518/latest",
                "http://[::ffff:a9fe:a9fe]/latest", "http://me@169.254.169.254./latest",
                "http://%31%36%39.254.169.254/latest", "http://good.example\\@169.254.169.254/latest"]:
        add(_mcp(f"fetch_url {url}", js(call("fetch_url", {"url": url})),
                 why="the HTTP client reads this host as the metadata address"))
        add(_mcp(f"resources/read {url}", js({"jsonrpc": "2.0", "id": 7, "method": "resources/read",
                                              "params": {"uri": url}}),
                 why="the server's HTTP client reads this host as the metadata address"))

    # A host alone in the arguments: the metadata address as the tool's resolver reads it.
    for host in ["0xA9FEA9FE", "2852039166", "169.254.43518", "0251.0376.0251.0376", "169.254.169.254.",
                 "::ffff:a9fe:a9fe", "[::ffff:169.254.169.254]", "0xa9fea9fe:80", "[64:ff9b::a9fe:a9fe]:80"]:
        add(_mcp(f"connect_host {host}", js(call("connect_host", {"host": host})),
                 why="the resolver reads this host as the metadata address"))

    # Compressed request bodies (the server inflates them as express.json() does).
    add(_mcp("gzip @mcp", gz(DENIED_BODY), headers=(("content-encoding", "gzip"),), expect=(415,)))
    add(_mcp("deflate @mcp", zlib.compress(DENIED_BODY), headers=(("content-encoding", "deflate"),), expect=(415,)))
    add(_mcp("x-gzip @mcp", gz(DENIED_BODY), headers=(("content-encoding", "x-gzip"),), expect=(415,)))
    add(_mcp("GZIP upper-case @mcp", gz(DENIED_BODY), headers=(("content-encoding", "GZIP"),), expect=(415,)))
    add(Case("gzip @egress json", "/api/rpc", gz(DENIED_BODY), headers=(("content-encoding", "gzip"),),
             expect=(415,)))
    add(Case("gzip @egress text/plain", "/api/rpc", gz(DENIED_BODY), content_type="text/plain",
             headers=(("content-encoding", "gzip"),), expect=(415,)))
    add(Case("deflate @egress no content-type", "/api/rpc", zlib.compress(DENIED_BODY), content_type=None,
             headers=(("content-encoding", "deflate"),), expect=(415,)))
    add(Case("gzip @egress secret", "/upload", gz(js({"note": f"key {SECRET}"})),
             headers=(("content-encoding", "gzip"),), expect=(415,)))
    add(Case("gzip, identity @egress", "/api/rpc", gz(DENIED_BODY), content_type="text/plain",
             headers=(("content-encoding", "gzip, identity"),), expect=(415,)))

    # Egress paths with two readings, against `target.path prefix "/admin"` on tools.example.
    for path in ["/%2561dmin", "/%252e%252e/admin", "//admin", "/x/..//admin", "/ADMIN", "/Admin/",
                 "/admin;x=1", "/admin.", "/x/%2e%2e/admin", "/;x=1/admin", "/..;/admin", "/%61dmin",
                 "/ad%6Din", "/x/%252e%252e/admin", "/%2e%2e/admin", "/ADMIN/users", "/admin%2Fusers",
                 "/%2Fadmin", "/Adm%69n.", "http://tools.example/ADMIN", "http://TOOLS.EXAMPLE./admin",
                 "http://tools.example:80//admin"]:
        add(Case(f"egress-path GET {path}", path, method="GET", content_type=None))
    add(Case("egress-path POST /ADMIN", "/ADMIN", js({"op": "drop"})))
    add(Case("egress-path POST //admin", "//admin/users", js({"op": "drop"})))

    # Host spellings of the metadata address, against `target.host == "169.254.169.254"`.
    for host in [METADATA, f"{METADATA}.", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]",
                 "[::FFFF:A9FE:A9FE]", "[0:0:0:0:0:ffff:a9fe:a9fe]", "[::ffff:169.254.169.254]:80",
                 "[::169.254.169.254]", "[::a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b::169.254.169.254]",
                 "2852039166", "0xa9fea9fe", "169.254.43518", "0251.0376.0251.0376"]:
        add(Case(f"host absolute {host}", f"http://{host}/latest/meta-data/", method="GET", content_type=None))
    for host in ["[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]"]:
        add(Case(f"host header {host}", "/latest/meta-data/", method="GET", content_type=None, authority=host))
    add(Case("host absolute [::ffff:a9fe:a9fe] POST", "http://[::ffff:a9fe:a9fe]/latest/api/token",
             js({"ttl": 21600})))

    # JSON-RPC batches.
    batch = js([call("read_file", {"path": "/repo/a"}, 10), call("delete_branch", {"branch": "main"}, 11)])
    add(_mcp("batch allowed+denied @mcp", batch))
    add(Case("batch allowed+denied @egress", "/api/rpc", batch))
    add(_mcp("batch ping+denied @mcp", js([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, DENIED])))
    add(_mcp("batch notification+denied @mcp",
             js([{"jsonrpc": "2.0", "method": "notifications/initialized"}, DENIED])))

    # A secret-like value (AWS example key) where the risk scan may not look.
    add(_mcp("secret in arguments", js(call("read_file", {"path": "/repo/a", "note": SECRET}))))
    add(_mcp("secret in _meta", js({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "read_file", "arguments": {"path": "/repo/a"}, "_meta": {"progressToken": SECRET}}})))
    add(_mcp("secret in notification params", js({"jsonrpc": "2.0", "method": "notifications/message",
                                                   "params": {"level": "info", "data": f"key {SECRET}"}})))
    add(_mcp("secret in notifications/initialized _meta", js({
        "jsonrpc": "2.0", "method": "notifications/initialized", "params": {"_meta": {"k": SECRET}}})))
    add(_mcp("secret in ping params", js({"jsonrpc": "2.0", "id": 7, "method": "ping",
                                         "params": {"_meta": {"k": SECRET}}})))
    add(_mcp("secret as id", js({"jsonrpc": "2.0", "id": SECRET, "method": "ping"})))
    add(_mcp("secret escaped in arguments", env('"method":"tools/call","params":{"name":"read_file",'
                                                '"arguments":{"path":"/repo/a","n":"AKI\\u0041IOSFODNN7EXAMPLE"}}')))
    add(Case("secret in egress body", "/upload", js({"note": f"key {SECRET}"})))
    add(Case("secret in egress query", f"/upload?key={SECRET}", method="GET", content_type=None))
    add(Case("secret in egress path", f"/upload/{SECRET}", method="GET", content_type=None))
    add(Case("secret in egress query escaped", "/upload?key=AKIA%49OSFODNN7EXAMPLE", method="GET", content_type=None))
    add(Case("secret in egress header", "/upload", method="GET", content_type=None,
             headers=(("x-note", f"key {SECRET}"),)))
    add(_mcp("secret in mcp-param header", js(call("read_file", {"path": "/repo/a"})),
             headers=(("mcp-param-note", SECRET),)))
    add(Case("secret in egress body text/plain", "/upload", f"key={SECRET}".encode(), content_type="text/plain"))
    # Escaped secrets: what the server decodes is a key, whatever the bytes on the wire spell.
    escaped = "AKIA%49OSFODNN7EXAMPLE"
    add(Case("secret in egress form body escaped", "/upload", f"key={escaped}".encode(),
             content_type="application/x-www-form-urlencoded"))
    add(Case("secret in egress unlabelled form body escaped", "/upload", f"a=1&key={escaped}".encode(),
             content_type=None))
    add(Case("secret in egress json url escaped", "/upload",
             js({"callback": f"https://hooks.example/?key={escaped}"})))
    add(Case("secret in egress json url double escaped", "/upload",
             js({"callback": "https://hooks.example/?key=AKIA%2549OSFODNN7EXAMPLE"})))
    add(_mcp("secret in mcp argument escaped",
             js(call("read_file", {"path": f"/repo/README.md?key={escaped}"}))))
    add(Case("escaped text without a secret (control)", "/upload", b"rate=100%25&sum=a%2Bb",
             content_type="application/x-www-form-urlencoded", attack=False))

    # HTTP/1.1 framing the filter and the server could count differently (Envoy's codec decides).
    def raw(id_: str, head: str, body: bytes = DENIED_BODY, attack: bool = True) -> None:
        text = head.replace("{n}", str(len(body))).replace("\n", "\r\n")
        add(Case(id_, "/mcp", body, raw=text.encode() + body, attack=attack))
    base = "POST /mcp HTTP/1.1\nhost: tools.example\ncontent-type: application/json\n{tag}connection: close\n"
    raw("framing content-length twice", base + "content-length: {n}\ncontent-length: {n}\n\n")
    # (the permissive upstream refuses conflicting lengths itself: not an attack on it)
    raw("framing content-length conflicting", base + "content-length: {n}\ncontent-length: 2\n\n", attack=False)
    raw("framing content-length list", base + "content-length: {n}, {n}\n\n")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(DENIED_BODY), DENIED_BODY)
    add(Case("framing transfer-encoding + content-length", "/mcp", DENIED_BODY,
             raw=(base.replace("\n", "\r\n") + "transfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n").encode()
             + chunked))
    add(Case("framing transfer-encoding CHUNKED", "/mcp", DENIED_BODY,
             raw=(base.replace("\n", "\r\n") + "transfer-encoding: CHUNKED\r\n\r\n").encode() + chunked))
    add(Case("framing expect 100-continue", "/mcp", DENIED_BODY,
             raw=(base.replace("\n", "\r\n") + f"expect: 100-continue\r\ncontent-length: {len(DENIED_BODY)}\r\n\r\n"
                  ).encode() + DENIED_BODY))
    add(Case("framing chunk extension", "/mcp", DENIED_BODY,
             raw=(base.replace("\n", "\r\n") + "transfer-encoding: chunked\r\n\r\n").encode()
             + b"%x;ext=1\r\n%s\r\n0\r\n\r\n" % (len(DENIED_BODY), DENIED_BODY)))

    add(Case("framing two host headers", "/api/rpc", DENIED_BODY, raw=(
        "POST /api/rpc HTTP/1.1\r\nhost: tools.example\r\nhost: 169.254.169.254\r\ncontent-type: application/json\r\n"
        f"{{tag}}connection: close\r\ncontent-length: {len(DENIED_BODY)}\r\n\r\n").encode() + DENIED_BODY))
    add(Case("framing absolute-form host differs from Host", "http://169.254.169.254/latest/meta-data/",
             method="GET", raw=b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nhost: tools.example\r\n"
                                 b"{tag}connection: close\r\n\r\n"))
    add(Case("framing websocket upgrade with body", "/mcp", DENIED_BODY, raw=(
        base.replace("\n", "\r\n").replace("connection: close", "connection: Upgrade")
        + f"upgrade: websocket\r\ncontent-length: {len(DENIED_BODY)}\r\n\r\n").encode() + DENIED_BODY))

    # Headers that disagree with the body, or change the method the server executes.
    # MCP 2026-07-28's HeaderMismatchError: -32020 with 400.
    add(_mcp("mcp-method header ping, body tools/call", DENIED_BODY, headers=(("mcp-method", "ping"),),
             expect_jsonrpc=-32020))
    add(_mcp("mcp-name header read_file, body delete_branch", DENIED_BODY,
             headers=(("mcp-method", "tools/call"), ("mcp-name", "read_file")), expect_jsonrpc=-32020))
    add(_mcp("x-http-method-override PUT @mcp", DENIED_BODY, headers=(("x-http-method-override", "PUT"),)))
    add(Case("x-http-method-override DELETE @egress", "/api/items/1", js({"id": 1}),
             headers=(("x-http-method-override", "DELETE"),), why="no_http_delete: the server deletes"))
    add(Case("x-method-override DELETE @egress", "/api/items/1", js({"id": 1}),
             headers=(("x-method-override", "DELETE"),)))
    add(Case("_method=DELETE query @egress", "/api/items/1?_method=DELETE", js({"id": 1})))
    # `_method` as servers read any query parameter: escapes decoded, a raw `;` a separator.
    add(Case("_method=%44ELETE query @egress", "/api/items/1?_method=%44ELETE", js({"id": 1})))
    add(Case("_m%65thod=DELETE query @egress", "/api/items/1?_m%65thod=DELETE", js({"id": 1})))
    add(Case("x=1;_method=DELETE query @egress", "/api/items/1?x=1;_method=DELETE", js({"id": 1})))
    # A forwarding header naming another host: servers behind a proxy they trust serve that one.
    for name, value in [("x-forwarded-host", "169.254.169.254"), ("x-forwarded-host", "0xA9FEA9FE"),
                        ("forwarded", 'for=192.0.2.1;host="169.254.169.254"'), ("x-host", "169.254.169.254:80"),
                        ("x-forwarded-host", "[::ffff:a9fe:a9fe]")]:
        add(Case(f"{name}: {value} @egress", "http://tools.example/api/items", js({"id": 1}),
                 headers=((name, value),)))
    # `_method` in the body: a form's (Rails, Symfony, Laravel), a JSON object's (Laravel).
    add(Case("_method=DELETE form body @egress", "/api/items/1", b"id=1&_method=DELETE",
             content_type="application/x-www-form-urlencoded"))
    add(Case("%5Fmethod=delete form body @egress", "/api/items/1", b"id=1&%5Fmethod=delete",
             content_type="application/x-www-form-urlencoded"))
    add(Case("_method DELETE json body @egress", "/api/items/1", js({"id": 1, "_method": "DELETE"})))
    add(Case("x-http-method-override DELETE @/admin", "/admin/users/1", js({"id": 1}),
             headers=(("x-http-method-override", "DELETE"),)))

    # Overlong UTF-8 escapes: `%C0%AE` is `.` and `%C0%AF` `/` to decoders that accept them.
    for target in ["/public/%c0%ae%c0%ae/admin/users", "/%C0%AE%C0%AE/admin", "/public/..%c0%afadmin",
                   "/public/%e0%80%ae%e0%80%ae/admin"]:
        add(Case(f"overlong {target}", target, method="GET", content_type=None, expect=(400,)))

    # Header names with `_`: CGI-style servers (Django, PHP, WSGI, Rack) read them as the `-`
    # name, so each is a host, method or path override to them; the filter refuses them (400).
    for name, value, target, method in [
        ("x_forwarded_host", "169.254.169.254", "http://tools.example/api/items", "POST"),
        ("x_http_method_override", "DELETE", "/api/items/1", "POST"),
        ("x_method_override", "DELETE", "/api/items/1", "POST"),
        ("x_original_url", "/admin/users", "/public", "GET"),
        ("x_rewrite_url", "/admin", "/public", "POST"),
    ]:
        add(Case(f"{name}: {value} @egress", target, js({"id": 1}) if method == "POST" else None,
                 method=method, content_type="application/json" if method == "POST" else None,
                 headers=((name, value),), expect=(400,)))

    # Path rewrites by header (Symfony / Zend / IIS): the server routes on the header.
    add(Case("x-original-url /admin", "/public", method="GET", content_type=None,
             headers=(("x-original-url", "/admin/users"),)))
    add(Case("x-rewrite-url /admin", "/public", js({"op": "drop"}), headers=(("x-rewrite-url", "/admin"),)))

    # A body in another Unicode charset (body-parser's json() decodes any utf-* charset).
    for target in ["/mcp", "/api/rpc"]:
        add(Case(f"charset utf-16le {target}", target, DENIED_BODY.decode().encode("utf-16-le"),
                 content_type="application/json; charset=utf-16le"))
    add(Case("charset utf-16 text/plain /api/rpc", "/api/rpc", DENIED_BODY.decode().encode("utf-16"),
             content_type="text/plain; charset=utf-16"))

    # UTF-7, which body-parser also decodes: every byte is ASCII, so the filter parses the body,
    # but the server reads a second `name` (last wins) hidden in what the filter read as a path.
    hidden = '"},"name":"delete_branch","x":{"y":"'
    utf7 = env('"method":"tools/call","params":{"name":"read_file","arguments":{"path":"%s"}}' % utf7_run(hidden))
    for target in ["/mcp", "/api/rpc"]:
        for spelling in ["utf-7", "UTF-7", '"utf-7"']:
            add(Case(f"charset {spelling} {target}", target, utf7, expect=(415,),
                     content_type=f"application/json; charset={spelling}"))
    add(_mcp("content-type twice, the second utf-7 @mcp", utf7, expect=(415,),
             headers=(("content-type", "application/json; charset=utf-7"),)))

    # A header the filter reads one value of, twice with different values: refused (400).
    for name, a, b in [("mcp-session-id", "clean", "killed"), ("mcp-protocol-version", "2025-06-18", "2025-11-25"),
                       ("x-portcullis-approval", "token-a", "token-b")]:
        add(_mcp(f"{name} twice @mcp", BENIGN_BODY, headers=((name, a), (name, b)), expect=(400,), attack=False))

    # Two content-encoding header lines: the filter may read one, the server applies both.
    add(_mcp("content-encoding identity + gzip lines @mcp", gz(DENIED_BODY),
             headers=(("content-encoding", "identity"), ("content-encoding", "gzip")), expect=(415,)))
    add(Case("content-encoding identity + gzip lines @egress", "/api/rpc", gz(DENIED_BODY),
             content_type="text/plain", headers=(("content-encoding", "identity"), ("content-encoding", "gzip")),
             expect=(415,)))

    # Bodies at the edges: empty, over limits.max_body_bytes (4 MiB), JSON-RPC 1.0 (no `jsonrpc`).
    add(_mcp("empty body @mcp", b"", expect=(400,), attack=False))
    add(Case("empty body @egress", "/api/rpc", b"", attack=False))
    big = js(call("delete_branch", {"branch": "main", "pad": "x" * (5 << 20)}))
    add(_mcp("oversize @mcp", big, expect=(413,)))
    add(Case("oversize @egress", "/api/rpc", big, expect=(413,)))
    v1 = ('{"id":7,"method":"tools/call","params":%s}' % DENIED_PARAMS).encode()
    add(_mcp("json-rpc 1.0 (no jsonrpc member) @mcp", v1))
    add(Case("json-rpc 1.0 (no jsonrpc member) @egress", "/api/rpc", v1))
    for text in ["5e2", "500.0", "1E3", "100000000000000000000001"]:
        add(_mcp(f"limit {text}", env('"method":"tools/call","params":{"name":"query_rows",'
                                      '"arguments":{"sql":"select *","limit":%s}}' % text)))

    # JSON the filter should refuse before judging (the server reads it anyway).
    add(_mcp("json BOM @mcp", b"\xef\xbb\xbf" + DENIED_BODY, expect_jsonrpc=-32700))
    add(_mcp("json escaped tool name", env('"method":"tools/call","params":{"name":"delete\\u005fbranch",'
                                           '"arguments":{"branch":"main"}}')))
    add(_mcp("json escaped method", env('"method":"tools\\/call","params":%s' % DENIED_PARAMS)))
    return c


CASES: list[Case] = _cases()
_ids = [k.id for k in CASES]
assert len(_ids) == len(set(_ids)), "case ids must be unique"


# -- the wire ------------------------------------------------------------------------------------

@dataclass
class Answer:
    """What the agent saw: status (0 when no HTTP answer came), headers, body; ``error`` says why
    there was none (connection closed, stream reset, timeout)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    @property
    def from_upstream(self) -> bool:
        """Whether the permissive upstream produced this answer (else Envoy or the filter did)."""
        return self.headers.get("x-permissive-upstream") == "1"

    def json(self) -> Any:
        """The body as JSON, or None."""
        try:
            return json.loads(self.body) if self.body.strip() else None
        except ValueError:
            return None

    def summary(self) -> str:
        """One line for failure messages."""
        if self.status == 0:
            return f"no answer ({self.error})"
        who = "upstream" if self.from_upstream else "local"
        return (f"{self.status} {who} decision={self.headers.get('x-portcullis-decision')} "
                f"body={self.body[:200]!r}")


def request_headers(case: Case, tag: str) -> list[tuple[str, str]]:
    """The headers a case sends (besides framing and the HTTP/2 pseudo-headers)."""
    hdrs = [("accept", "application/json, text/event-stream")]
    if case.content_type:
        hdrs.append(("content-type", case.content_type))
    hdrs += list(case.headers)
    hdrs.append((TAG, tag))
    return hdrs


def _chunks(body: bytes) -> list[bytes]:
    step = max(1, -(-len(body) // 3))
    return [body[i:i + step] for i in range(0, len(body), step)] or [b""]


def _h1_wire(case: Case, tag: str, transport: str) -> bytes:
    """The exact bytes of ``case`` over HTTP/1.1 (``connection: close``)."""
    if transport == "h1-raw":
        assert case.raw is not None
        return case.raw.replace(b"{tag}", f"{TAG}: {tag}\r\n".encode())
    lines = [f"{case.method} {case.target} HTTP/1.1", f"host: {case.host}"]
    lines += [f"{k}: {v}" for k, v in request_headers(case, tag)]
    lines.append("connection: close")
    body = case.body
    if body is None:
        payload = b""
    elif transport == "h1":
        lines.append(f"content-length: {len(body)}")
        payload = body
    else:
        lines.append("transfer-encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(ch), ch) for ch in _chunks(body) if ch) + b"0\r\n"
        if transport == "h1-trailers":
            payload += b"x-checksum: 0\r\n"
        payload += b"\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload


def send_h1(port: int, case: Case, tag: str, transport: str) -> Answer:
    """Send ``case`` over HTTP/1.1 on a fresh connection. Stops sending as soon as an answer
    starts arriving (a refusal before the whole body is sent), then reads the answer."""
    wire = _h1_wire(case, tag, transport)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            sent = 0
            while sent < len(wire):
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # the answer (or a close) came early: stop sending, read it
                try:
                    sent += sock.send(wire[sent:sent + (64 << 10)])
                except (BrokenPipeError, ConnectionResetError):
                    break
            resp = http.client.HTTPResponse(sock, method=case.method.upper())
            resp.begin()
            body = resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    except (OSError, http.client.HTTPException) as e:
        return Answer(0, error=f"{type(e).__name__}: {e}")


def send_h2(port: int, case: Case, tag: str, transport: str) -> Answer:
    """Send ``case`` over h2c (prior knowledge) on a fresh connection, within the flow-control
    windows Envoy grants; ``h2-trailers`` ends the stream with a trailers HEADERS frame instead of
    END_STREAM on the last DATA frame. Stops sending when the answer ends the stream early."""
    trailers = transport == "h2-trailers"
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                       validate_outbound_headers=False, normalize_outbound_headers=False,
                                       validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    headers = [(":method", case.method), (":scheme", "http"), (":authority", case.host), (":path", case.path)]
    headers += request_headers(case, tag)
    body = case.body
    if body is not None and not trailers:
        headers.append(("content-length", str(len(body))))
    parts = _chunks(body) if body is not None else []
    status, resp_headers, data, error = 0, {}, bytearray(), ""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            conn.initiate_connection()
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers, end_stream=body is None and not trailers)
            request_done = body is None and not trailers
            done = False
            while not done:
                # Send what the windows allow; the rest waits for WINDOW_UPDATE frames.
                while parts and not request_done:
                    window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if window <= 0 and parts[0]:
                        break
                    part, rest = parts[0][:window], parts[0][window:]
                    if rest:
                        parts[0] = rest
                    else:
                        parts.pop(0)
                    conn.send_data(sid, part, end_stream=not parts and not trailers)
                    request_done = not parts and not trailers
                if not parts and trailers and not request_done:
                    conn.send_headers(sid, [("x-checksum", "0")], end_stream=True)
                    request_done = True
                pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
                chunk = sock.recv(65536)
                if not chunk:
                    error = error or "connection closed"
                    break
                for ev in conn.receive_data(chunk):
                    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                        resp_headers = {(k.decode() if isinstance(k, bytes) else k).lower():
                                        (v.decode() if isinstance(v, bytes) else v) for k, v in ev.headers}
                        status = int(resp_headers.get(":status", "0"))
                    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                        data += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                        done = True
                    elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                        error, done = f"stream reset (error code {ev.error_code})", True
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        error, done = f"GOAWAY (error code {ev.error_code})", True
                    if done:
                        break  # an answer that ended (END_STREAM) is whole, whatever follows
                if done:
                    break
                pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
    except (OSError, h2.exceptions.H2Error) as e:
        error = f"{type(e).__name__}: {e}"
    if error and status == 0:
        return Answer(0, error=error)
    if error:
        # A stream cut after the response headers: the agent saw a truncated answer.
        return Answer(status, resp_headers, bytes(data), error=error)
    return Answer(status, resp_headers, bytes(data))


def send(port: int, case: Case, tag: str, transport: str) -> Answer:
    """Send ``case`` over ``transport`` to Envoy's listener on ``port``."""
    if transport.startswith("h2"):
        return send_h2(port, case, tag, transport)
    return send_h1(port, case, tag, transport)
