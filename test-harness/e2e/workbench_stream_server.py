"""The workbench MCP server plus one long-running, streaming tool for the response-path tests
(issue 7): ``long_fetch(url)`` sends progress and log notifications, then WAITS until the client
confirms it received the first progress notification (``GET /ack``), then returns the same
injected page as ``fetch_url``. If a proxy held the notifications until the result, the client
could never confirm, and the tool answers ``no ack`` after 10 s: a stalled stream shows up as a
wrong answer, not as a timing measurement.

Run: ``python workbench_stream_server.py --port 8080 [--json-response] [--record FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from workbench_server import INJECTED_PAGE, Recorder, build_server

ACK_WAIT_S = 10.0


def main() -> None:
    """Parse arguments and serve until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--json-response", action="store_true")
    ap.add_argument("--record", default=os.environ.get("WORKBENCH_RECORD"))
    args = ap.parse_args()
    server = build_server()
    acked = asyncio.Event()

    @server.tool()
    async def long_fetch(url: str, ctx: Context) -> str:
        """Fetch a page slowly, reporting progress (fake page with an injected instruction)."""
        acked.clear()
        await ctx.report_progress(1, 3, "connecting")
        await ctx.info(f"fetching {url}")
        try:
            await asyncio.wait_for(acked.wait(), ACK_WAIT_S)
            seen = "acknowledged"
        except TimeoutError:
            seen = "no ack"
        await ctx.report_progress(2, 3, "downloading")
        await ctx.report_progress(3, 3, "done")
        return f"[{seen}] fetched {url}\n{INJECTED_PAGE}"

    @server.custom_route("/ack", methods=["GET"])
    async def ack(_request: Request) -> PlainTextResponse:
        acked.set()
        return PlainTextResponse("ok")

    app = server.streamable_http_app(
        json_response=args.json_response,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=args.host,
    )
    uvicorn.run(Recorder(app, args.record), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
