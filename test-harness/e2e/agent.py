"""The agent side of the end-to-end runs: the official MCP SDK client (`mcp.Client` over
`mcp.client.streamable_http`) talking to the workbench server through Envoy + Portcullis, plus
what Portcullis told the agent about each call: the JSON-RPC result or error, and the
``x-portcullis-decision`` / ``x-portcullis-receipt`` response headers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

# JSON-RPC error codes Portcullis answers with (docs/filter.md).
DENIED, APPROVAL_REQUIRED, DEFERRED_DENIED, STOP_CONDITION = -32040, -32041, -32045, -32043


def decode_receipt(header: str | None) -> dict[str, Any] | None:
    """The receipt JSON carried (base64url) in an ``x-portcullis-receipt`` header, or None."""
    if not header:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, json.JSONDecodeError):
        return None


def receipt_field(receipt: dict[str, Any] | None, name: str) -> Any:
    """A field of a receipt, whether the JSON nests it under ``body`` or not."""
    if not receipt:
        return None
    body = receipt.get("body", receipt)
    return body.get(name) if isinstance(body, dict) else None


def _is_tool_call(request: httpx2.Request) -> bool:
    try:
        body = json.loads(request.content or b"null")
    except (ValueError, httpx2.RequestNotRead):
        return False
    return isinstance(body, dict) and body.get("method") == "tools/call"


@dataclass
class Outcome:
    """What the agent saw for one tool call."""

    tool: str
    ok: bool
    text: str = ""
    error_code: int | None = None
    error_message: str = ""
    error_data: Any = None
    http_status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def receipt(self) -> dict[str, Any] | None:
        """The receipt from the response header, decoded."""
        return decode_receipt(self.headers.get("x-portcullis-receipt"))

    @property
    def decision(self) -> str | None:
        """The decision: the error's ``data.decision``, else the header, else the receipt's."""
        if isinstance(self.error_data, dict) and self.error_data.get("decision"):
            return str(self.error_data["decision"])
        return self.headers.get("x-portcullis-decision") or receipt_field(self.receipt, "decision")

    @property
    def rule(self) -> str | None:
        """The deciding rule, from the error data or the receipt."""
        if isinstance(self.error_data, dict) and self.error_data.get("rule"):
            return str(self.error_data["rule"])
        return receipt_field(self.receipt, "rule")

    @property
    def reason(self) -> str:
        """Why, as Portcullis put it (error data reason or receipt reason)."""
        if isinstance(self.error_data, dict) and self.error_data.get("reason"):
            return str(self.error_data["reason"])
        return str(receipt_field(self.receipt, "reason") or self.error_message or "")

    @property
    def approval_request(self) -> dict[str, Any] | None:
        """``data.approval_request`` of a STEP_UP answer."""
        if isinstance(self.error_data, dict) and isinstance(self.error_data.get("approval_request"), dict):
            return self.error_data["approval_request"]
        return None


class Agent:
    """An MCP session through Envoy. ``mode``: "legacy" (initialize handshake, Mcp-Session-Id)
    or a modern version pin such as "2026-07-28" (stateless, no handshake)."""

    def __init__(self, url: str, *, intent: str | None = None, mode: str = "legacy",
                 headers: dict[str, str] | None = None, timeout: float = 15.0,
                 elicitation_callback: Any = None) -> None:
        self.url = url
        self.mode = mode
        hdrs = dict(headers or {})
        if intent:
            hdrs["x-portcullis-intent"] = intent
        self.last_post: httpx2.Response | None = None
        self._session_id: str | None = None
        self.http = httpx2.AsyncClient(headers=hdrs, timeout=httpx2.Timeout(timeout),
                                       event_hooks={"response": [self._on_response]})
        # With an elicitation callback the SDK declares elicitation (form and URL mode).
        self.client = Client(streamable_http_client(url, http_client=self.http), mode=mode,
                             read_timeout_seconds=timeout, cache=None,
                             elicitation_callback=elicitation_callback)

    async def _on_response(self, response: httpx2.Response) -> None:
        sid = response.headers.get("mcp-session-id") or response.request.headers.get("mcp-session-id")
        if sid:
            self._session_id = sid
        if response.request.method == "POST" and _is_tool_call(response.request):
            # Only the tools/call itself: the SDK may list tools right after a call (to validate
            # structured output), and that answer carries its own decision.
            self.last_post = response

    async def __aenter__(self) -> Agent:
        await self.http.__aenter__()
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.client.__aexit__(*exc)
        finally:
            await self.http.__aexit__(None, None, None)

    @property
    def session_id(self) -> str | None:
        """The Mcp-Session-Id the server assigned (legacy mode)."""
        return self._session_id

    async def call(self, tool: str, arguments: dict[str, Any] | None = None, *,
                   approval: str | None = None) -> Outcome:
        """Call ``tool``; a JSON-RPC error becomes an Outcome with ``ok`` False (never raises for
        a Portcullis refusal). ``approval``: a token sent as ``x-portcullis-approval``."""
        self.last_post = None
        if approval:
            self.http.headers["x-portcullis-approval"] = approval
        try:
            result = await self.client.call_tool(tool, arguments or {})
            text = "\n".join(getattr(c, "text", "") for c in result.content)
            out = Outcome(tool, not result.is_error, text=text)
        except MCPError as e:
            out = Outcome(tool, False, error_code=e.code, error_message=e.message, error_data=e.data)
        finally:
            self.http.headers.pop("x-portcullis-approval", None)
        if self.last_post is not None:
            out.http_status = self.last_post.status_code
            out.headers = {k.lower(): v for k, v in self.last_post.headers.items()
                           if k.lower().startswith("x-portcullis-")}
        return out

    async def list_tools(self) -> list[str]:
        """Names of the tools the server (as filtered by Portcullis) lists."""
        return [t.name for t in (await self.client.list_tools()).tools]
