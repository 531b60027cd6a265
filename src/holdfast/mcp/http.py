"""The MCP server over streamable HTTP, behind a bearer token.

:func:`http_app` wraps the SDK's streamable-HTTP app in :class:`BearerAuth`, a small ASGI layer
that refuses any request without ``Authorization: Bearer <token>`` matching the verifier (tokens
are compared in constant time; the verifier can be the HTTP server's token store when this app is
mounted there). The SDK's own DNS-rebinding protection (Host and Origin checks) stays on for
loopback binds.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from holdfast.mcp.settings import MCPSettings

Verifier = Callable[[str], bool]


def token_verifier(*tokens: str) -> Verifier:
    """A verifier accepting exactly ``tokens`` (compared in constant time)."""
    wanted = [t.encode("utf-8") for t in tokens if t]
    if not wanted:
        raise ValueError("at least one non-empty token is needed")

    def verify(presented: str) -> bool:
        got = presented.encode("utf-8")
        return any(hmac.compare_digest(got, w) for w in wanted)

    return verify


class BearerAuth:
    """ASGI middleware: HTTP requests need a valid bearer token; lifespan events pass through."""

    def __init__(self, app: ASGIApp, verify: Verifier) -> None:
        self.app = app
        self.verify = verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None or not self.verify(token):
            body = json.dumps(
                {"error": {"code": "unauthorized", "message": "a valid bearer token is required"}}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="holdfast"'),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text: str = bytes(value).decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def http_app(settings: MCPSettings, verify: Verifier, *, host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP MCP app at ``/mcp``, behind ``verify``."""
    from holdfast.mcp.server import build_server

    server = build_server(settings)
    app = server.streamable_http_app(host=host)
    return BearerAuth(app, verify)


def mount_in_server(
    app: Any, settings: MCPSettings, *, path: str = "/mcp", memory_session: Any = None
) -> None:
    """Serve MCP at ``path`` inside ``holdfast serve``, behind the server's own bearer tokens.

    The server's gate checks the Host header and the token (scope ``write``: MCP clients add
    memories and run ``analyze``); the SDK's session manager runs in the server's lifespan.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    from holdfast.mcp.server import build_server
    from holdfast.mcp.services import Services
    from holdfast.server.app import add_lifespan, mount_protected

    server = build_server(settings, Services(settings, memory_session=memory_session))
    inner = server.streamable_http_app(
        streamable_http_path="/",
        # the server's gate already refuses Hosts it does not answer to
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    mount_protected(app, path, inner, scope="write")
    add_lifespan(app, lambda _app: server.session_manager.run())
