"""The server's front door, as plain ASGI middleware in front of every route and mounted app.

In order, for each HTTP request:

1. **Host check**: the ``Host`` header must name this server (the loopback names, the bound
   address, or ``--allowed-host``). A page on another site cannot reach a loopback server through
   DNS rebinding, because its requests carry the foreign name.
2. **Body cap**: a body larger than ``max_body_bytes`` is refused with 413 before the app sees
   it (declared lengths at once, chunked bodies as soon as they pass the cap). The body is read
   here and replayed to the app; later ``receive`` calls go to the client, so the app still
   learns of a disconnect.
3. **Bearer auth** for ``/api/``, ``/v1/`` and every app mounted with :meth:`Gate.protect`: the
   token is checked and its :class:`~holdfast.server.tokens.Principal` is put in the ASGI scope
   (``scope["state"]["principal"]``), where routes and mounted apps read it. Scopes: ``GET`` and
   ``HEAD`` need ``read``, other methods ``write``; the OpenAI-compatible endpoint and RLM jobs
   need ``rlm``.

The console (``/console``) authenticates with its own session cookie (see ``console.py``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from holdfast.errors import HoldfastError
from holdfast.server.errors import error_body, status_for
from holdfast.server.settings import ServerSettings
from holdfast.server.tokens import LOCAL, Principal, TokenStore, Unauthorized

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def principal_of(scope: Scope) -> Principal:
    """The principal the gate put in an authenticated request's scope."""
    state = scope.get("state") or {}
    principal = state.get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("this request was not authenticated")
    return principal


class Gate:
    """Host check, body cap and bearer authentication around an ASGI app."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, tokens: TokenStore | None) -> None:
        self.app = app
        self.settings = settings
        self.tokens = tokens
        self.hosts = frozenset(h.lower() for h in settings.host_names())
        self.protected: list[tuple[str, str]] = [
            ("/api/v1/rlm/", "rlm"),
            ("/api/", ""),
            ("/v1/", "rlm"),
        ]
        self._threaded = tokens is not None and not tokens.is_sqlite

    def protect(self, prefix: str, scope: str = "") -> None:
        """Require a bearer token under ``prefix`` (for apps mounted there, such as MCP);
        ``scope`` is the token scope needed ("" means read for GET, write otherwise)."""
        self.protected.insert(0, (prefix.rstrip("/") + "/", scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._host_ok(scope):
            await _reply(
                send, 421, "misdirected_request", "this server does not answer to that Host"
            )
            return
        if scope["method"] in _BODY_METHODS:
            replay = await self._read_body(scope, receive, send)
            if replay is None:
                return
            receive = replay
        needed = self._needed_scopes(scope)
        if needed is not None:
            try:
                principal = await self._authenticate(scope)
                principal.require(*needed)
            except HoldfastError as exc:
                await _reply_error(send, exc)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    # -- the three checks ---------------------------------------------------------------------

    def _host_ok(self, scope: Scope) -> bool:
        host = ""
        for name, value in scope.get("headers") or ():
            if name == b"host":
                host = value.decode("latin-1").strip().lower()
                break
        if not host:
            return False
        if host.startswith("["):
            name = host.split("]", 1)[0] + "]"
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in self.hosts

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        limit = self.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await _reply(send, 413, "payload_too_large", _too_large(limit))
                    return None
            except ValueError:
                await _reply(
                    send, 400, "invalid_input", "the Content-Length header is not a number"
                )
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _reply(send, 413, "payload_too_large", _too_large(limit))
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return replay

    def _needed_scopes(self, scope: Scope) -> tuple[str, ...] | None:
        """The token scopes that may make this request (any one of them), or None if the path
        needs no token."""
        path: str = scope.get("path", "")
        reading = scope["method"] in ("GET", "HEAD")
        for prefix, needed in self.protected:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                if needed == "rlm" and reading and prefix.startswith("/api/"):
                    return ("read", "rlm")  # RLM traces are readable with either scope
                if needed:
                    return (needed,)
                return ("read",) if reading else ("write",)
        return None

    async def _authenticate(self, scope: Scope) -> Principal:
        if not self.settings.auth or self.tokens is None:
            return LOCAL
        value = _header(scope, b"authorization") or ""
        kind, _, token = value.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
        tokens = self.tokens
        if self._threaded:
            return await anyio.to_thread.run_sync(tokens.authenticate, token.strip())
        return tokens.authenticate(token.strip())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _too_large(limit: int) -> str:
    return f"the request body is larger than this server's limit of {limit} bytes"


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    await _send_json(send, status, error_body(code, message), [])


async def _reply_error(send: Send, exc: HoldfastError) -> None:
    status = status_for(exc)
    headers = [(b"www-authenticate", b'Bearer realm="holdfast"')] if status == 401 else []
    await _send_json(send, status, {"error": exc.to_dict()}, headers)


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
