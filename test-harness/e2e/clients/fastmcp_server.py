"""A fastmcp (PyPI `fastmcp`) MCP server offering what the real-client matrix steps need
(test_real_clients.py, docs/clients.md): server requests (sampling, elicitation, roots), progress,
a slow cancellable tool, a subscribable resource, a multi-MB result, and sessions a client ends
with DELETE. Streamable HTTP on ``/mcp``, stateful (Mcp-Session-Id).

  python fastmcp_server.py --port P --mode sse|json|gzip

``sse``: POST answers are SSE streams; ``json``: plain JSON answers; ``gzip``: JSON answers behind
Starlette's GZipMiddleware (compressed whenever the client accepts gzip). ``GET /healthz`` answers
``ok``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import warnings
from typing import Any

import uvicorn
from fastmcp import Context, FastMCP
from mcp import types
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse

# Sampling and server-pushed roots are deprecated in the 2026-07-28 protocol; this server speaks
# the handshake era on purpose (that is what the steps exercise), so the SDK's notice is noise.
warnings.filterwarnings("ignore", category=DeprecationWarning)

NOTE_URI = "memo://note"
# Tool calls the server saw cancelled, by the tag the client gave them (cancel step's proof).
CANCELLED: set[str] = set()


def large_text(kib: int) -> str:
    """``kib`` KiB of deterministic, line-structured text (the large-result step)."""
    line = "".join(chr(ord("a") + i % 26) for i in range(63)) + "\n"
    return (line * (kib * 1024 // len(line) + 1))[: kib * 1024]


def build() -> FastMCP:
    """The server with its tools, the note resource and the subscribe handlers."""
    mcp = FastMCP("fastmcp-matrix", version="1.0.0")

    @mcp.tool
    def echo(text: str) -> str:
        """Return ``text`` unchanged."""
        return f"echo: {text}"

    @mcp.tool(name="get-env")
    def get_env() -> str:
        """Return (fake) environment variables: the tool the realistic pack denies."""
        return "HOME=/home/agent\nAPI_TOKEN=not-a-real-token"

    @mcp.tool
    async def sample(prompt: str, ctx: Context) -> str:
        """Ask the client's model (sampling/createMessage) and return its answer."""
        result = await ctx.session.create_message(
            [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
            max_tokens=50, related_request_id=ctx.request_id)
        return f"model {result.model} said: {getattr(result.content, 'text', '')}"

    @mcp.tool
    async def elicit(ctx: Context) -> str:
        """Ask the user (elicitation/create) for a name."""
        result = await ctx.session.elicit_form(
            "Who is asking?", {"type": "object", "properties": {"name": {"type": "string"}},
                               "required": ["name"]}, related_request_id=ctx.request_id)
        return f"elicitation {result.action}: {result.content}"

    @mcp.tool
    async def roots(ctx: Context) -> str:
        """List the client's roots (roots/list)."""
        result = await ctx.session.list_roots()
        return "roots: " + ", ".join(f"{r.name}={r.uri}" for r in result.roots)

    @mcp.tool
    async def progress(steps: int, ctx: Context) -> str:
        """Report ``steps`` progress notifications, then finish."""
        for i in range(1, steps + 1):
            await asyncio.sleep(0.05)
            await ctx.report_progress(i, steps, f"step {i}")
        return f"done after {steps} steps"

    @mcp.tool
    async def slow(seconds: float, tag: str) -> str:
        """Sleep ``seconds``; a cancellation is remembered under ``tag``."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            CANCELLED.add(tag)
            raise
        return f"slept {seconds}s"

    @mcp.tool
    async def was_cancelled(tag: str) -> str:
        """Whether the server saw the slow call ``tag`` cancelled (waits briefly for it)."""
        for _ in range(40):
            if tag in CANCELLED:
                return f"{tag}: cancelled"
            await asyncio.sleep(0.05)
        return f"{tag}: not cancelled"

    @mcp.tool
    def large(kib: int) -> str:
        """A ``kib`` KiB text result."""
        return large_text(kib)

    @mcp.tool
    async def touch(uri: str, ctx: Context) -> str:
        """Tell subscribers that ``uri`` changed (notifications/resources/updated)."""
        await ctx.session.send_resource_updated(uri)
        return f"touched {uri}"

    @mcp.resource(NOTE_URI)
    def note() -> str:
        """A small note that subscribers hear about when it is touched."""
        return "the note"

    async def on_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    low = mcp._mcp_server  # noqa: SLF001 (fastmcp has no public hook for resources/subscribe)
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_subscribe)

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return mcp


def main() -> None:
    """Parse arguments and serve until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["sse", "json", "gzip"], required=True)
    args = ap.parse_args()
    middleware = [Middleware(GZipMiddleware, minimum_size=200)] if args.mode == "gzip" else None
    app = build().http_app(path="/mcp", json_response=args.mode != "sse", middleware=middleware,
                           host_origin_protection=False)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
