"""A reference MCP server (official Python SDK) with the fixtures the MCP conformance suite's server
scenarios call: tools `test_simple_text`, `test_image_content`, `test_audio_content`,
`test_embedded_resource`, `test_multiple_content_types`, `test_tool_with_logging`,
`test_error_handling`, `test_tool_with_progress`, `test_sampling`; resources `test://static-text`,
`test://static-binary`, template `test://template/{id}/data`; prompts `test_simple_prompt`,
`test_prompt_with_arguments`, `test_prompt_with_embedded_resource`, `test_prompt_with_image`.

Used by conformance.py so that most scenarios exercise real content (images, audio, embedded
resources, progress and log notifications, sampling round trips) through Envoy + Portcullis.
Scenarios it does not implement fail the same way directly and through Envoy.

Run: ``python conformance_server.py --port 8080 [--json-response]``; ``GET /healthz`` answers ``ok``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64

import anyio
import uvicorn
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse

# Sampling over the GET stream (JSON mode): attempts, and how long each waits for the client.
SAMPLING_ATTEMPTS = 20
SAMPLING_ATTEMPT_S = 2.0

# A 1x1 PNG and a short WAV header, base64 (fixtures; their content is not inspected).
PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
WAV = base64.b64encode(b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
                       b"\x40\x1f\x00\x00\x80\x3e\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00").decode()


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png")


def _embedded(uri: str, text: str, mime: str = "text/plain") -> types.EmbeddedResource:
    return types.EmbeddedResource(type="resource",
                                  resource=types.TextResourceContents(uri=uri, mime_type=mime, text=text))


async def _sample_over_get_stream(ctx: Context, messages: list[types.SamplingMessage]) -> types.CreateMessageResult:
    """Sampling when POSTs are answered with JSON: only the standalone GET stream reaches the client,
    and the client opens it alongside its first request, so it may not be there yet when the tool
    runs (the SDK then drops the request, having no event store). Ask again until it is answered."""
    for _ in range(SAMPLING_ATTEMPTS):
        with anyio.move_on_after(SAMPLING_ATTEMPT_S):
            return await ctx.session.create_message(messages, max_tokens=100)
    raise TimeoutError(f"no sampling answer over the GET stream after {SAMPLING_ATTEMPTS} attempts")


def build_server(*, json_response: bool = False) -> MCPServer:
    """The conformance fixture server (``json_response``: POSTs are answered with JSON, not SSE)."""
    server = MCPServer("conformance-reference", version="1.0.0")

    @server.tool(structured_output=False)
    def test_simple_text() -> list[types.ContentBlock]:
        """Simple text."""
        return [_text("This is a simple text response for testing.")]

    @server.tool(structured_output=False)
    def test_image_content() -> list[types.ContentBlock]:
        """One image."""
        return [_image()]

    @server.tool(structured_output=False)
    def test_audio_content() -> list[types.ContentBlock]:
        """One audio clip."""
        return [types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    @server.tool(structured_output=False)
    def test_embedded_resource() -> list[types.ContentBlock]:
        """One embedded resource."""
        return [_embedded("test://embedded-resource", "This is an embedded resource content.")]

    @server.tool(structured_output=False)
    def test_multiple_content_types() -> list[types.ContentBlock]:
        """Text, image and resource."""
        return [_text("Multiple content types test:"), _image(),
                _embedded("test://mixed-content-resource", '{"test":"data","value":123}', "application/json")]

    @server.tool(structured_output=False)
    async def test_tool_with_logging(ctx: Context) -> list[types.ContentBlock]:
        """Three log notifications while running."""
        await ctx.info("Tool execution started")
        await asyncio.sleep(0.05)
        await ctx.info("Tool processing data")
        await asyncio.sleep(0.05)
        await ctx.info("Tool execution completed")
        return [_text("Tool with logging executed successfully")]

    @server.tool(structured_output=False)
    def test_error_handling() -> list[types.ContentBlock]:
        """Always fails."""
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool(structured_output=False)
    async def test_tool_with_progress(ctx: Context) -> list[types.ContentBlock]:
        """Progress 0, 50, 100 of 100."""
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100)
            await asyncio.sleep(0.05)
        return [_text("Tool with progress executed successfully")]

    @server.tool(structured_output=False)
    async def test_sampling(prompt: str, ctx: Context) -> list[types.ContentBlock]:
        """Asks the client's LLM."""
        messages = [types.SamplingMessage(role="user", content=_text(prompt))]
        if not json_response:
            # On the call's own SSE stream, which exists before the tool runs.
            result = await ctx.session.create_message(messages, max_tokens=100,
                                                      related_request_id=ctx.request_id)
        else:
            result = await _sample_over_get_stream(ctx, messages)
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else str(content)
        return [_text(f"LLM response: {text}")]

    @server.resource("test://static-text", mime_type="text/plain")
    def static_text() -> str:
        """A text resource."""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """A binary resource."""
        return base64.b64decode(PNG_1X1)

    @server.resource("test://template/{id}/data", mime_type="application/json")
    def template_data(id: str) -> str:  # noqa: A002 (the template's parameter name)
        """A templated resource."""
        return f'{{"id":"{id}","templateTest":true,"data":"Data for ID: {id}"}}'

    @server.prompt()
    def test_simple_prompt() -> str:
        """A prompt without arguments."""
        return "This is a simple prompt for testing."

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        """A prompt with two arguments."""
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803
        """A prompt carrying a resource."""
        return [UserMessage(_embedded(resourceUri, "Embedded resource content for testing.")),
                UserMessage("Please process the embedded resource above.")]

    @server.prompt()
    def test_prompt_with_image() -> list[UserMessage]:
        """A prompt carrying an image."""
        return [UserMessage(_image()), UserMessage("Please analyze the image above.")]

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--json-response", action="store_true", help="answer POSTs with JSON, not SSE")
    args = ap.parse_args()
    app = build_server(json_response=args.json_response).streamable_http_app(
        json_response=args.json_response,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
