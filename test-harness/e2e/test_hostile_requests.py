"""The hostile-request corpus (issue #13 item 7) through a real Envoy: every case of
hostile_corpus.py, over HTTP/1.1 (content-length, chunked, chunked with trailers, exact bytes) and
h2c (with and without trailers), against two packs, in front of permissive_upstream.py, a server
that reads requests the way the most lenient real servers do and records what it EXECUTED.

The bar, for every case, pack and transport:
- LEAK: the upstream never executes what the pack denies (read from its record: the tool and
  arguments it read after folding keys, the route it dispatched after decoding the path twice, the
  host it resolved, the method it ran, any secret-like value it received);
- MALFORMED: every answer the agent gets that the upstream did not produce is a well-formed
  refusal: an HTTP status in {400, 403, 405, 413, 415, 428, 429} (a JSON body when it says JSON),
  or a 200 JSON-RPC error with a JSON body;
- HEALTH: Envoy stays up: admin /ready answers, and a benign allowed call afterwards still works;
- ANSWER: where the design documents the answer (405 for other methods on the MCP path, 400 for a
  body on GET/HEAD/DELETE/OPTIONS, 415 for a compressed body, -32600 / -32700 codes), the agent
  gets it (not checked when Envoy's own codec refused the request before the filter saw it).

Stack (one per module, reused by every case): envoy-configs/hostile (two listeners, one VM and
one pack each, body inspection on, HTTP/1.1 trailers enabled both ways) + permissive_upstream.py.
Packs: policies/hostile_permissive.pcl (default allow) and policies/hostile_strict.pcl (default
deny).

    .venv/bin/pytest test-harness/e2e/test_hostile_requests.py -q -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import posixpath
import socket
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

import pytest

import hostile_corpus as hc
import permissive_upstream
import portcullis_e2e as pe
from conftest import POLICIES, compile_or_fail

CONFIG = pe.REPO / "envoy-configs" / "hostile"
_spec = importlib.util.spec_from_file_location("render_hostile", CONFIG / "render_hostile.py")
assert _spec is not None and _spec.loader is not None
_RENDER = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_RENDER)
PACKS = ("permissive", "strict")
REFUSAL_STATUSES = {400, 403, 405, 413, 415, 428, 429}
MCP_ROUTES = {"/mcp", "/messages", "/sse"}
STRICT_METHODS = {"initialize", "ping", "tools/list"}


# -- the stack -----------------------------------------------------------------------------------

class Records:
    """The upstream's record file, read incrementally and indexed by case tag."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.by_tag: dict[str, list[dict]] = defaultdict(list)

    def refresh(self) -> None:
        """Read lines appended since the last call (a partial last line waits for the next)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if line.strip():
                rec = json.loads(line)
                self.by_tag[str(rec.get("case"))].append(rec)
        self.offset += end

    def of(self, tag: str) -> list[dict]:
        """Every request the upstream recorded for ``tag``."""
        self.refresh()
        return list(self.by_tag.get(tag, []))


@dataclass
class Hostile:
    """The running stack: Envoy's listener port per pack, the upstream's records."""

    stack: pe.Stack
    envoy: pe.Proc
    ports: dict[str, int]
    records: Records
    checked: dict[str, int] = field(default_factory=dict)  # tag -> records seen when judged


def render_hostile(out: Path, keys: pe.Keys, bundles: dict[str, Path], values: dict[str, str]) -> Path:
    """envoy-configs/hostile rendered into ``out`` by its render_hostile.py; returns envoy.yaml."""
    return _RENDER.render(out, values, {p: str(b) for p, b in bundles.items()}, str(keys.path("bundle", "pub")))


@pytest.fixture(scope="module")
def bundles(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("hostile-bundles")
    return {p: compile_or_fail(POLICIES / f"hostile_{p}.pcl", out / f"hostile_{p}.bundle", keys) for p in PACKS}


@pytest.fixture(scope="module")
def hostile(keys: pe.Keys, bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    with pe.stack(tmp_path_factory.mktemp("hostile") / "run") as stack:
        try:
            up_port = pe.free_port()
            record = stack.dir / "permissive.jsonl"
            up = stack.start("permissive", [pe.PYTHON, str(pe.HERE / "permissive_upstream.py"), "--port",
                                            str(up_port), "--record", str(record)])
            pe.wait_until("permissive upstream",
                          lambda: pe.http_get(f"http://127.0.0.1:{up_port}/healthz")[0] == 200, up)
            ports = {p: pe.free_port() for p in PACKS}
            admin = pe.free_port()
            yaml_path = render_hostile(stack.dir / "envoy-hostile", keys, bundles, {
                "ADMIN_PORT": str(admin), "PERMISSIVE_PORT": str(ports["permissive"]),
                "STRICT_PORT": str(ports["strict"]), "UPSTREAM_PORT": str(up_port), "WASM": str(pe.WASM),
                "ACCESS_LOG": str(stack.dir / "envoy-hostile" / "access.log")})
            argv = [pe.envoy_binary(), "-c", str(yaml_path), "--concurrency", "1", "--disable-hot-restart",
                    "--log-level", "warning", "--file-flush-interval-msec", "100",
                    "--component-log-level", "wasm:info"]
            proc = stack.start("envoy-hostile", argv, {"PORTCULLIS_SIGNING_KEY": keys.secret_line("receipt")})
            stack.ports.update(admin=admin, upstream=up_port)
            stack.files.update(envoy_log=proc.log, envoy_yaml=yaml_path, upstream=record,
                               access_log=stack.dir / "envoy-hostile" / "access.log")
            pe.wait_until("envoy /ready", lambda: pe.http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, proc)
        except pe.E2EError as e:
            pytest.fail(str(e), pytrace=False)
        yield Hostile(stack, proc, ports, Records(record))


# -- what the upstream must never execute ------------------------------------------------------

def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fetched_hosts(url: Any) -> set[str]:
    """The hosts an HTTP client connects to for ``url``: a WHATWG parser (``\\`` ends the
    authority) and an RFC 3986 one (Python's urllib), each host as resolvers read it (escapes
    decoded, case and a trailing dot dropped, IPv6 carrying IPv4 and every ``inet_aton`` spelling
    as the dotted quad)."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return set()
    hosts = set()
    for spelled in (url.replace("\\", "/"), url):
        try:
            host = urlsplit(spelled).hostname
        except ValueError:
            continue
        if not host:
            continue
        hosts.add(_address(unquote(host)))
    return hosts


def _address(host: str) -> str:
    """The address a resolver connects to for ``host`` (``host_of``), else the name."""
    name, ip = permissive_upstream.host_of(host)
    return ip or name


def _denied_call(pack: str, msg: dict) -> str | None:
    """Why executing this JSON-RPC message breaks ``pack`` (None when it does not)."""
    method, tool, args = msg.get("method"), msg.get("tool"), msg.get("arguments")
    args = args if isinstance(args, dict) else {}
    if method != "tools/call":
        if pack == "strict" and not (method in STRICT_METHODS or str(method).startswith("notifications/")):
            return f"executed method {method!r}"
        if method == "resources/read" and hc.METADATA in _fetched_hosts(msg.get("uri")):
            return f"read the resource {msg.get('uri')!r} from the metadata address"
        return None
    if pack == "permissive":
        if tool == "delete_branch":
            return f"executed tools/call delete_branch {args}"
        if tool == "fetch_url" and hc.METADATA in _fetched_hosts(args.get("url")):
            return f"executed fetch_url of the metadata address {args.get('url')!r}"
        if tool == "connect_host" and _address(str(args.get("host"))) == hc.METADATA:
            return f"executed connect_host to the metadata address {args.get('host')!r}"
        if tool == "git_push" and args.get("skip_checks") is True:
            return f"executed git_push with skip_checks=true {args}"
        if tool == "query_rows":
            limit = _number(args.get("limit"))
            if limit is None or not math.isfinite(limit) or limit > 20:
                return f"executed query_rows with limit {args.get('limit')!r} (pack: a number <= 20)"
        return None
    if tool != "read_file":
        return f"executed tools/call {tool!r} {args}"
    path = args.get("path")
    # As the file system opens it: `.` and `..` resolved, `\` a separator too (Windows).
    opened = posixpath.normpath(path.replace("\\", "/")) if isinstance(path, str) else None
    if not (opened is not None and path.startswith("/repo/")
            and (opened == "/repo" or opened.startswith("/repo/"))):
        return f"executed read_file outside /repo/: {path!r} (opened as {opened!r})"
    return None


def leaks(pack: str, rec: dict) -> list[str]:
    """What the upstream executed for this request that ``pack`` denies."""
    if int(rec.get("status") or 0) >= 400:
        return []  # the upstream refused it: nothing ran
    out = []
    route, method = rec.get("route") or "/", rec.get("effective_method") or rec.get("method")
    sent = f"{rec.get('method')} {rec.get('raw_path')} host {rec.get('host')}"
    if rec.get("host") == hc.HOST and (route == "/admin" or route.startswith("/admin/")):
        out.append(f"served {method} {route} ({sent})")
    if rec.get("host_ip") == hc.METADATA:
        out.append(f"served a request for the metadata address ({sent})")
    if route not in MCP_ROUTES and (method == "DELETE" if pack == "permissive" else
                                    method not in ("GET", "HEAD", "POST")):
        out.append(f"ran {method} {route} ({sent})")
    for msg in rec.get("messages") or []:
        if msg.get("executed"):
            why = _denied_call(pack, msg)
            if why:
                out.append(f"{why} ({sent})")
    raw_path = str(rec.get("raw_path") or "")
    # What the upstream received, and what a server decodes it to: form fields, and a URL in an
    # argument or a JSON body that it fetches (percent-decoded twice, like the path).
    received = json.dumps([rec.get("body"), rec.get("json"), rec.get("form")], ensure_ascii=False)
    seen = json.dumps([received, unquote_plus(unquote_plus(received)), raw_path,
                       unquote_plus(unquote_plus(raw_path)),
                       [v for k, v in rec.get("headers") or [] if k != hc.TAG]], ensure_ascii=False)
    if hc.SECRET in seen:
        out.append(f"received the secret {hc.SECRET} ({sent})")
    return out


# -- what the agent may see ---------------------------------------------------------------------

def codec_refusal(ans: hc.Answer) -> bool:
    """Envoy's HTTP codec refused the request before any filter ran (plain-text 400, no decision)."""
    return (ans.status == 400 and not ans.from_upstream and "x-portcullis-decision" not in ans.headers
            and ans.json() is None)


def malformed(ans: hc.Answer) -> str | None:
    """Why this answer is not a well-formed refusal (None when it is one, or the upstream's)."""
    if ans.status == 0:
        return f"no HTTP answer: {ans.error}"
    if ans.from_upstream:
        return f"answer cut short: {ans.error}" if ans.error else None
    if ans.error:
        return f"local answer {ans.status} cut short: {ans.error}"
    ctype = ans.headers.get("content-type", "")
    if ans.status in REFUSAL_STATUSES:
        if "json" in ctype and ans.body and ans.json() is None:
            return f"{ans.status} says JSON but its body is not: {ans.body[:200]!r}"
        return None
    if ans.status == 200:
        doc = ans.json()
        items = doc if isinstance(doc, list) else [doc]
        if doc is not None and items and all(isinstance(m, dict) and isinstance(m.get("error"), dict)
                                             for m in items):
            return None
        return f"local 200 that is not a JSON-RPC error: {ans.body[:200]!r}"
    return f"local answer {ans.status} is not a documented refusal: {ans.body[:200]!r}"


def answer_problem(case: hc.Case, ans: hc.Answer) -> str | None:
    """How the answer differs from the documented one (None when it matches or none is documented)."""
    if codec_refusal(ans):
        return None
    if case.expect is not None and ans.status not in case.expect:
        return f"documented answer {case.expect}, agent saw {ans.summary()}"
    if case.expect_jsonrpc is not None:
        doc = ans.json()
        code = doc.get("error", {}).get("code") if isinstance(doc, dict) and isinstance(doc.get("error"), dict) \
            else None
        if code != case.expect_jsonrpc:
            return f"documented JSON-RPC {case.expect_jsonrpc}, agent saw {ans.summary()}"
    return None


# -- the tests ----------------------------------------------------------------------------------

def test_hostile_config_validates(keys: pe.Keys, bundles: dict[str, Path], tmp_path: Path) -> None:
    path = render_hostile(tmp_path, keys, bundles, {
        "ADMIN_PORT": "9901", "PERMISSIVE_PORT": "10000", "STRICT_PORT": "10001", "UPSTREAM_PORT": "8080",
        "WASM": str(pe.WASM), "ACCESS_LOG": str(tmp_path / "access.log")})
    proc = subprocess.run([pe.envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("pack", PACKS)
def test_mcp_sdk_client_is_served(hostile: Hostile, pack: str) -> None:
    """The harness itself: the official MCP SDK client gets through Envoy to the permissive
    upstream (initialize, tools/list, an allowed call) and is refused the denied tool."""
    from agent import DENIED, Agent

    async def go() -> tuple:
        async with Agent(f"http://127.0.0.1:{hostile.ports[pack]}/mcp", headers={hc.TAG: f"{pack}|sdk"}) as agent:
            tools = await agent.list_tools()
            ok = await agent.call("read_file", {"path": "/repo/README.md"})
            no = await agent.call("delete_branch", {"branch": "main"})
            return tools, ok, no

    tools, ok, no = asyncio.run(go())
    # The strict pack allows read_file only with a path under /repo/, so the filter may hide it
    # from tools/list; the permissive pack hides nothing it allows.
    assert pack == "strict" or "read_file" in tools, tools
    assert ok.ok and "executed read_file" in ok.text and ok.decision == "ALLOW", ok
    assert not no.ok and no.error_code == DENIED, no
    assert not [lk for r in hostile.records.of(f"{pack}|sdk") for lk in leaks(pack, r)]


def test_detector_sees_each_attack_sent_straight_to_the_upstream(hostile: Hostile) -> None:
    """The harness itself: every attack case, sent to the permissive upstream without Envoy
    (HTTP/1.1; a body chunked and ended by trailers), is read by it as something the strict pack
    denies, and ``leaks`` says so. Otherwise a PASS below could mean the detector is blind."""
    blind = []
    for case in hc.CASES:
        transport = "h1-raw" if case.raw is not None else "h1-trailers" if case.body is not None else "h1"
        tag = f"direct|{transport}|{case.id}".encode("ascii", "backslashreplace").decode()
        hc.send(hostile.stack.ports["upstream"], case, tag, transport)
        records = hostile.records.of(tag)
        hostile.checked[tag] = len(records)
        found = [lk for r in records for lk in leaks("strict", r)]
        if case.attack != bool(found):
            blind.append(f"{case.id}: attack={case.attack}, detector found {found or 'nothing'} in {records}")
    assert not blind, "\n".join(blind)


JUNK = [
    b"\x00\xff\xfe garbage\r\n\r\n",
    b"POST /mcp HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
    b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-encoding: gzip\r\ncontent-length: 3\r\n\r\nabc",
    b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-encoding: br\r\ncontent-length: 3\r\n\r\nabc",
    b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{\"a\":",
    b"POST /%zz%%/..;/;; HTTP/1.1\r\nhost: [::ffff:zz]\r\ncontent-type: application/json\r\n"
    b"content-length: 28\r\n\r\n[{\"jsonrpc\":1,\"method\":[]},7]",
    b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json; charset=utf-16\r\n"
    b"content-length: 3\r\n\r\n\xff\xfe{",
]


def test_permissive_upstream_survives_junk(hostile: Hostile) -> None:
    """The harness itself: the permissive upstream answers junk with a 4xx (or ignores it) and keeps
    serving; it never crashes."""
    port = hostile.stack.ports["upstream"]
    for junk in JUNK:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
        assert status in (0, 200, 202) or 400 <= status < 500, (junk, answer[:300])
    assert pe.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert all(p.alive() for p in hostile.stack.procs)


def _benign_still_works(h: Hostile, pack: str, tag: str) -> str | None:
    status, _ = pe.http_get(f"http://127.0.0.1:{h.stack.ports['admin']}/ready")
    if status != 200:
        return f"admin /ready answered {status}" + ("" if h.envoy.alive() else f"; envoy exited:\n{h.envoy.tail()}")
    benign = hc.Case("benign", "/mcp", hc.js(hc.BENIGN))
    ans = hc.send(h.ports[pack], benign, tag, "h1")
    executed = [m for r in h.records.of(tag) for m in r.get("messages") or [] if m.get("tool") == "read_file"]
    doc = ans.json()
    if not (ans.status == 200 and ans.from_upstream and isinstance(doc, dict) and "result" in doc and executed):
        return f"a benign read_file afterwards got {ans.summary()}"
    return None


PARAMS = [pytest.param(pack, case, transport, id=f"{pack}|{transport}|{case.id}")
          for pack in PACKS for case in hc.CASES for transport in case.wire_transports]


@pytest.mark.parametrize(("pack", "case", "transport"), PARAMS)
def test_hostile_request(hostile: Hostile, pack: str, case: hc.Case, transport: str) -> None:
    tag = f"{pack}|{transport}|{case.id}".encode("ascii", "backslashreplace").decode()  # a header value
    ans = hc.send(hostile.ports[pack], case, tag, transport)
    health = _benign_still_works(hostile, pack, f"{tag}|benign")
    records = hostile.records.of(tag)
    hostile.checked[tag] = len(records)
    problems = [f"LEAK: {lk}" for r in records for lk in leaks(pack, r)]
    if bad := malformed(ans):
        problems.append(f"MALFORMED: {bad}")
    if health:
        problems.append(f"HEALTH: {health}")
    if not problems and (wrong := answer_problem(case, ans)):
        problems.append(f"ANSWER: {wrong}")
    assert not problems, "\n".join([f"agent saw: {ans.summary()}", *problems])


def test_no_late_or_unattributed_leaks(hostile: Hostile) -> None:
    """Requests that reached the upstream only after their case was judged (a stream the filter
    let go on late), or whose tag matches no case, are leaks too: every record in the upstream's
    file is judged once more here (a record without a known pack against the stricter pack)."""
    hostile.records.refresh()
    late = []
    for tag, recs in hostile.records.by_tag.items():
        pack = tag.split("|", 1)[0] if tag.split("|", 1)[0] in PACKS else "strict"
        for rec in recs[hostile.checked.get(tag, 0):]:
            late += [f"{tag}: {lk}" for lk in leaks(pack, rec)]
    assert not late, "\n".join(late)


def test_envoy_never_trapped(hostile: Hostile) -> None:
    """After the whole corpus: Envoy is still up and its log shows no panic or Wasm trap."""
    assert hostile.envoy.alive(), hostile.envoy.tail()
    log = hostile.stack.files["envoy_log"].read_text(errors="replace").lower()
    for sign in ("panicked", "wasm trap", "unreachable", "failed to"):
        assert sign not in log, f"{sign!r} in Envoy's log:\n{hostile.envoy.tail()}"
