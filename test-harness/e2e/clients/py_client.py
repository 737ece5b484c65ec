"""Python driver of the real-client matrix (test_real_clients.py, docs/clients.md): the official
MCP Python SDK (`mcp.Client`, mode ``legacy`` or ``auto``) or the fastmcp client (`fastmcp.Client`,
handshake era) connects to each target URL in turn, runs the named steps and prints one JSON line
per step: ``{"target", "step", "result" | "error" | "hang", "ms"}``, then one line with the
warnings and log records of WARNING or above the client produced for that target.

  python py_client.py --client mcp-legacy|mcp-auto|fastmcp --server everything|fastmcp \
      --target direct=http://127.0.0.1:P/mcp [--target ...] --steps list,call,... [--timeout S]

Every step is bounded by ``--timeout`` (a hang is reported, never waited out). What a step calls
on each server is in steps.json; the output is raw, the test normalizes it.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import logging
import random
import re
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx2

STEPS = json.loads((Path(__file__).with_name("steps.json")).read_text())
ROOTS = [{"uri": "file:///work/repo", "name": "repo"}]
SAMPLED = "hi from the matrix model"
ELICITED = {"name": "Ada Lovelace"}
MAX_SSE_EVENT = 8 * 1024 * 1024


def data_uri(kib: int) -> str:
    """A seeded, incompressible ``data:`` URI of ``kib`` KiB of bytes (everything's large step)."""
    rng = random.Random(22)
    return "data:application/octet-stream;base64," + base64.b64encode(rng.randbytes(kib * 1024)).decode()


def dump(value: Any) -> Any:
    """A pydantic model (or a list of them) as plain JSON data."""
    if isinstance(value, list):
        return [dump(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return value


class Http:
    """The HTTP side every client shares: the session id and DELETE statuses it saw."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.deletes: list[int] = []

    async def on_response(self, response: httpx2.Response) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid:
            self.session_id = sid
        if response.request.method == "DELETE":
            self.deletes.append(response.status_code)

    def client(self, **kw: Any) -> httpx2.AsyncClient:
        kw.setdefault("timeout", httpx2.Timeout(30.0, read=300.0))
        return httpx2.AsyncClient(event_hooks={"response": [self.on_response]}, **kw)


class Driver:
    """One client connected to one URL: the operations the steps need, per client library."""

    def __init__(self, kind: str, url: str, timeout: float) -> None:
        self.kind, self.url, self.timeout = kind, url, timeout
        self.http = Http()
        self.updates: list[str] = []
        self.updated = anyio.Event()
        self.client: Any = None
        self.owned_http: httpx2.AsyncClient | None = None

    # -- callbacks shared by both libraries ---------------------------------------------------

    async def on_sampling(self, *_args: Any) -> Any:
        from mcp import types
        return types.CreateMessageResult(role="assistant", model="matrix-model",
                                         content=types.TextContent(type="text", text=SAMPLED))

    async def on_elicit(self, *_args: Any) -> Any:
        from mcp import types
        return types.ElicitResult(action="accept", content=ELICITED)

    async def on_roots(self, *_args: Any) -> Any:
        from mcp import types
        return types.ListRootsResult(roots=[types.Root(**r) for r in ROOTS])

    def on_notification(self, message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            self.updates.append(str(root.params.uri))
            self.updated.set()

    # -- connection -----------------------------------------------------------------------------

    async def __aenter__(self) -> Driver:
        if self.kind == "fastmcp":
            import fastmcp
            from fastmcp.client.transports import StreamableHttpTransport

            async def on_message(message: Any) -> None:
                self.on_notification(message)

            transport = StreamableHttpTransport(
                self.url, httpx_client_factory=lambda **kw: self.http.client(**kw))
            async def on_sampling(*_args: Any) -> str:
                return SAMPLED

            async def on_elicit(*_args: Any) -> dict[str, Any]:
                return ELICITED

            async def on_log(_message: Any) -> None:
                # The server's log notifications (notifications/message): fastmcp's default
                # handler prints them to stderr, which the matrix reads as the client's own.
                return None

            from mcp import types
            self.client = fastmcp.Client(
                transport, roots=[types.Root(**r) for r in ROOTS], sampling_handler=on_sampling,
                elicitation_handler=on_elicit, message_handler=on_message, log_handler=on_log,
                timeout=self.timeout, mode="legacy")
        else:
            from mcp import Client
            from mcp.client.streamable_http import streamable_http_client

            async def on_message(message: Any) -> None:
                self.on_notification(message)

            self.client = Client(
                # A client that expects multi-MB results raises the SDK's 1 MiB SSE event limit.
                streamable_http_client(self.url, http_client=self.http.client(),
                                       max_sse_event_size=MAX_SSE_EVENT),
                mode=self.kind.removeprefix("mcp-"), read_timeout_seconds=self.timeout, cache=None,
                sampling_callback=self.on_sampling, elicitation_callback=self.on_elicit,
                list_roots_callback=self.on_roots, message_handler=on_message)
        await self.client.__aenter__()
        return self

    async def close(self) -> None:
        """End the session (the SDKs send DELETE for a session the server gave an id)."""
        if self.client is not None:
            client, self.client = self.client, None
            try:
                await client.__aexit__(None, None, None)
            finally:
                if self.owned_http is not None:
                    await self.owned_http.aclose()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- operations -------------------------------------------------------------------------

    async def list_tools(self) -> list[str]:
        tools = await self.client.list_tools()
        return sorted(t.name for t in getattr(tools, "tools", tools))

    async def call(self, tool: str, args: dict[str, Any], progress: Any = None) -> Any:
        if self.kind == "fastmcp":
            result = await self.client.call_tool_mcp(tool, args, progress_handler=progress)
        else:
            result = await self.client.call_tool(tool, args, progress_callback=progress)
        return {"content": dump(result.content), "isError": bool(result.is_error)}

    async def subscribe(self, uri: str, on: bool) -> None:
        session = self.client.session
        await (session.subscribe_resource(uri) if on else session.unsubscribe_resource(uri))


def error_of(exc: BaseException) -> dict[str, Any]:
    """A JSON-RPC error (code, message, Portcullis' decision/rule) or the exception's type."""
    code = getattr(exc, "code", None)
    error = getattr(exc, "error", None)  # fastmcp wraps the SDK's ErrorData
    if code is None and error is not None:
        code, exc_msg, data = error.code, error.message, error.data
    else:
        exc_msg, data = getattr(exc, "message", str(exc)), getattr(exc, "data", None)
    if code is None:
        return {"type": type(exc).__name__, "message": str(exc)[:300]}
    out: dict[str, Any] = {"code": code, "message": exc_msg}
    if isinstance(data, dict):
        out["data"] = {k: data[k] for k in ("decision", "rule") if k in data}
    return out


async def run_step(d: Driver, server: str, step: str) -> Any:
    """Run one step; its raw result."""
    spec = STEPS[server].get(step, {})
    if step == "list":
        return await d.list_tools()
    if step in ("call", "denied", "sampling", "elicitation", "roots"):
        return await d.call(spec["tool"], spec["args"])
    if step == "progress":
        seen: list[list[Any]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append([progress, total])
        result = await d.call(spec["tool"], spec["args"], on_progress)
        return {"progress": seen, "result": result}
    if step == "cancel":
        args = dict(spec["args"])
        tag = uuid.uuid4().hex[:8]
        if "check_tool" in spec:
            args["tag"] = tag
        with anyio.move_on_after(0.8) as scope:
            await d.call(spec["tool"], args)
        out: dict[str, Any] = {"cancelled": scope.cancelled_caught}
        if "check_tool" in spec:
            seen_by_server = await d.call(spec["check_tool"], {"tag": tag})
            out["server"] = seen_by_server["content"][0]["text"].replace(tag, "<tag>")
        out["after"] = await d.call(STEPS[server]["call"]["tool"], STEPS[server]["call"]["args"])
        return out
    if step == "subscribe":
        await d.subscribe(spec["uri"], True)
        touched = await d.call(spec["tool"], spec["args"])
        with anyio.move_on_after(5):
            await d.updated.wait()
        if server == "everything":  # the toggle starts updates every 5 s: stop them
            await d.call(spec["tool"], spec["args"])
        await d.subscribe(spec["uri"], False)
        return {"tool": touched, "updated": sorted(set(d.updates))}
    if step == "large":
        args = dict(spec["args"])
        if "data_uri_kib" in spec:
            args["data"] = data_uri(spec["data_uri_kib"])
        return await d.call(spec["tool"], args)
    raise ValueError(f"unknown step {step}")


def json_rpc_code(text: str) -> Any:
    """What a raw answer says: the JSON-RPC error code of a JSON (or first SSE) message, or
    "result"; None when it is neither."""
    if not text.lstrip().startswith("{"):
        found = re.search(r"^data: ?(.*)$", text, re.M)
        text = found.group(1) if found else ""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message["error"].get("code") if isinstance(message.get("error"), dict) else "result"


async def end_session(d: Driver) -> dict[str, Any]:
    """The delete step: close the client (it sends DELETE), then ask for the ended session."""
    sid = d.http.session_id
    await d.close()
    probe = None
    if sid:  # the ended session is gone for the server (and for Portcullis)
        async with httpx2.AsyncClient(timeout=10) as http:
            r = await http.post(d.url, headers={
                "mcp-session-id": sid, "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2025-11-25"},
                json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"})
            probe = {"status": r.status_code, "answer": json_rpc_code(r.text)}
    return {"had_session": sid is not None, "delete_statuses": d.http.deletes, "after_delete": probe}


async def run_target(kind: str, server: str, name: str, url: str, steps: list[str], timeout: float) -> None:
    """Connect to ``url`` and run ``steps``, printing one line per step and one for warnings
    (stderr gets a ``== target NAME`` line first, so whatever follows is this target's)."""
    print(f"== target {name}", file=sys.stderr, flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The SDK flags handshake-era APIs the steps use on purpose (resources/subscribe,
        # sampling...): about the protocol version, the same direct or through Envoy.
        from mcp.shared.exceptions import MCPDeprecationWarning
        warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
        # mcp 2.3.0 leaves sockets of its HTTP transport to the garbage collector, directly as
        # through Envoy (ResourceWarning, which Python hides by default): not a proxy finding.
        warnings.filterwarnings("ignore", category=ResourceWarning)
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger().addHandler(handler)
        try:
            await run_steps(kind, server, name, url, steps, timeout)
            # What this connection left unclosed is reported now, as this target's.
            gc.collect()
            await anyio.sleep(0)
            gc.collect()
        finally:
            logging.getLogger().removeHandler(handler)
    print(json.dumps({"target": name, "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]
                      + [f"log {r.levelname} {r.name}: {r.getMessage()}" for r in records]}), flush=True)


async def run_steps(kind: str, server: str, name: str, url: str, steps: list[str], timeout: float) -> None:
    """The steps on one connection; connecting is bounded like a step (a scope around the whole
    session whose deadline is lifted once connected: the SDKs' task groups must nest in it)."""
    t0 = time.monotonic()
    connected = False
    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as bound:
        try:
            async with Driver(kind, url, timeout) as d:
                connected, bound.deadline = True, float("inf")
                for step in steps:
                    t0 = time.monotonic()
                    if step == "delete":
                        # The session ends here: the SDK's task group closes in its own scope.
                        bound.deadline = anyio.current_time() + timeout
                        emit(name, step, t0, result=await end_session(d))
                        bound.deadline = float("inf")
                        continue
                    try:
                        with anyio.fail_after(timeout):
                            result = await run_step(d, server, step)
                        emit(name, step, t0, result=result)
                    except TimeoutError:
                        emit(name, step, t0, hang=True)
                    except Exception as e:  # noqa: BLE001 (a step's failure is its result)
                        emit(name, step, t0, error=error_of(e))
                # Closing is bounded too: a DELETE that never comes back is a hang.
                bound.deadline = anyio.current_time() + timeout
        except Exception as e:  # noqa: BLE001 (reported, not raised)
            emit(name, "connect" if not connected else "close", t0, error=error_of(e))
    if bound.cancelled_caught:
        emit(name, "connect" if not connected else "close", t0, hang=True)


def emit(target: str, step: str, t0: float, **fields: Any) -> None:
    """Print one step's line."""
    line = {"target": target, "step": step, "ms": int((time.monotonic() - t0) * 1000), **fields}
    print(json.dumps(line), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", choices=["mcp-legacy", "mcp-auto", "fastmcp"], required=True)
    ap.add_argument("--server", choices=sorted(STEPS.keys() - {"_comment"}), required=True)
    ap.add_argument("--target", action="append", required=True, help="NAME=URL")
    ap.add_argument("--steps", required=True)
    ap.add_argument("--timeout", type=float, default=15.0)
    args = ap.parse_args()
    steps = [s for s in args.steps.split(",") if s]
    for target in args.target:
        name, _, url = target.partition("=")
        anyio.run(run_target, args.client, args.server, name, url, steps, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
