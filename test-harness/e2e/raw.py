"""Raw HTTP MCP client for hostile cases the SDK would never send (batches, duplicate keys,
mismatched Mcp-Name, spoofed headers, oversize bodies). Speaks legacy Streamable HTTP: a POST
``initialize`` gets an ``Mcp-Session-Id``, later POSTs carry it. Every request has a timeout.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx

PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


@dataclass
class Reply:
    """One HTTP answer: status, headers, and the JSON-RPC message(s) in it (JSON or SSE)."""

    status: int
    headers: httpx.Headers
    text: str

    @property
    def messages(self) -> list[Any]:
        """JSON values in the body: the JSON body itself, or each SSE ``data:`` event."""
        ctype = self.headers.get("content-type", "")
        if "text/event-stream" in ctype:
            out = []
            for event in self.text.replace("\r\n", "\n").split("\n\n"):
                data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
                if data:
                    out.append(json.loads(data))
            return out
        try:
            return [json.loads(self.text)] if self.text.strip() else []
        except json.JSONDecodeError:
            return []

    @property
    def message(self) -> Any:
        """The first JSON-RPC message (None when there is none)."""
        msgs = self.messages
        return msgs[0] if msgs else None

    @property
    def decided(self) -> tuple[str | None, str | None]:
        """(decision, rule) of the receipt in the ``x-portcullis-receipt`` header (the first one
        for a batch); (None, None) when there is none."""
        header = self.headers.get("x-portcullis-receipt", "").split(",")[0]
        try:
            receipt = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))) if header else {}
        except ValueError:
            receipt = {}
        body = receipt.get("body", {}) if isinstance(receipt, dict) else {}
        return body.get("decision"), body.get("rule")

    @property
    def error_code(self) -> int | None:
        """``error.code`` of the first message, if it is a JSON-RPC error."""
        m = self.message
        return m.get("error", {}).get("code") if isinstance(m, dict) and isinstance(m.get("error"), dict) else None


class RawMcp:
    """A legacy MCP session over plain httpx."""

    def __init__(self, url: str, *, intent: str | None = "demo_task", timeout: float | httpx.Timeout = 10.0,
                 fresh_connections: bool = False, http2: bool = False) -> None:
        """``fresh_connections``: one TCP connection per request, so that with several Envoy
        workers the requests of one session are spread over them. ``http2``: HTTP/2 with prior
        knowledge (h2c) instead of HTTP/1.1."""
        self.url = url
        self.intent = intent
        limits = httpx.Limits(max_keepalive_connections=0) if fresh_connections else httpx.Limits()
        self.http = httpx.Client(timeout=timeout, limits=limits, http1=not http2, http2=http2)
        self.session_id: str | None = None
        self.next_id = 1

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> RawMcp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers(self, extra: dict[str, str] | None = None, method: str | None = None,
                name: str | None = None) -> dict[str, str]:
        """Headers a well-behaved client sends, plus ``extra``."""
        h = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": PROTOCOL}
        if self.session_id:
            h["mcp-session-id"] = self.session_id
        if method:
            h["mcp-method"] = method
        if name:
            h["mcp-name"] = name
        h.update(extra or {})
        return h

    def post_bytes(self, body: bytes, headers: dict[str, str]) -> Reply:
        """POST exactly ``body``."""
        r = self.http.post(self.url, content=body, headers=headers)
        return Reply(r.status_code, r.headers, r.text)

    def post(self, message: Any, extra: dict[str, str] | None = None, *, method: str | None = None,
             name: str | None = None) -> Reply:
        """POST one JSON value (serialized compactly)."""
        body = json.dumps(message, separators=(",", ":")).encode()
        return self.post_bytes(body, self.headers(extra, method, name))

    def new_id(self) -> int:
        """A fresh JSON-RPC id."""
        self.next_id += 1
        return self.next_id

    def initialize(self) -> Reply:
        """initialize (declaring the intent) + notifications/initialized; keeps the session id."""
        extra = {"x-portcullis-intent": self.intent} if self.intent else {}
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "raw-e2e", "version": "0"}}}, extra, method="initialize")
        self.session_id = r.headers.get("mcp-session-id")
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, method="notifications/initialized")
        return r

    def call(self, tool: str, arguments: dict[str, Any], extra: dict[str, str] | None = None) -> Reply:
        """tools/call with matching Mcp-Method / Mcp-Name headers."""
        msg = {"jsonrpc": "2.0", "id": self.new_id(), "method": "tools/call",
               "params": {"name": tool, "arguments": arguments}}
        return self.post(msg, extra, method="tools/call", name=tool)
