"""The ASGI application: the REST API, the OpenAI-compatible endpoint and the web console.

``create_app(settings)`` opens the CLI's stores and returns a FastAPI app behind the
:class:`~holdfast.server.gate.Gate` (host check, body cap, bearer tokens). Other ASGI apps (the
MCP SDK's streamable-HTTP app) are mounted under the same auth with :func:`mount_protected`; an
async context manager they need for their lifetime (a session manager) goes in with
:func:`add_lifespan`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from holdfast import __version__
from holdfast.server import errors
from holdfast.server.gate import ASGIApp, Gate
from holdfast.server.hub import Hub
from holdfast.server.rlm_jobs import JobManager
from holdfast.server.services import Services
from holdfast.server.settings import ServerSettings

log = logging.getLogger("holdfast.server")

API_DESCRIPTION = """\
Holdfast's control plane, knowledge memory, RLM jobs and model call log over HTTP.

Every request under `/api/v1` and `/v1` needs `Authorization: Bearer <token>` (tokens come
from `holdfast token create`); `GET` needs the `read` scope, changes `write`, and the
OpenAI-compatible endpoint and RLM jobs `rlm`. Errors are JSON:
`{"error": {"code", "type", "message", "retryable", "details"}}` with the library's stable codes.
"""


def create_app(
    settings: ServerSettings | None = None,
    *,
    services: Services | None = None,
    warm_memory: bool = False,
) -> FastAPI:
    """The server app over ``services`` (default: the stores ``settings`` names)."""
    settings = settings or ServerSettings()
    svc = services or Services.open(settings)
    svc.hub = Hub(poll_s=settings.poll_s, queue_size=settings.sse_queue)
    if svc.jobs is None:
        svc.jobs = JobManager(settings, svc.traces, svc.calls, queue_size=settings.sse_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_memory:
            threading.Thread(target=_warm, args=(svc,), daemon=True, name="warm-memory").start()
        async with contextlib.AsyncExitStack() as stack:
            for hook in app.state.lifespan_hooks:
                await stack.enter_async_context(hook(app))
            try:
                yield
            finally:
                await svc.jobs.close()
        if services is None:
            svc.close()

    app = FastAPI(
        title="Holdfast",
        version=__version__,
        description=API_DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.settings = settings
    app.state.lifespan_hooks = []
    app.state.protected = []
    errors.install(app)

    from holdfast.server import routes_calls, routes_memory, routes_rlm, routes_tasks

    for module in (routes_tasks, routes_memory, routes_rlm, routes_calls):
        app.include_router(module.router)
    from holdfast.server import openai_api

    app.include_router(openai_api.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    app.add_middleware(_GateFactory, app_state=app.state, settings=settings, tokens=svc.tokens)
    return app


class _GateFactory:
    """Starlette builds middleware lazily; this builds the :class:`Gate` and hands it the
    prefixes that :func:`mount_protected` registered on the app."""

    def __init__(self, app: ASGIApp, app_state: Any, settings: ServerSettings, tokens: Any) -> None:
        self.gate = Gate(app, settings, tokens if settings.auth else None)
        for prefix, scope in app_state.protected:
            self.gate.protect(prefix, scope)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.gate(scope, receive, send)


def mount_protected(app: FastAPI, path: str, asgi_app: ASGIApp, *, scope: str = "") -> None:
    """Mount another ASGI app at ``path`` behind the server's bearer-token auth.

    Its requests carry the caller's :class:`~holdfast.server.tokens.Principal` in
    ``scope["state"]["principal"]`` (``holdfast.server.gate.principal_of(scope)``). ``scope`` is
    the token scope required ("" means ``read`` for GET and ``write`` otherwise). Call before the
    app serves its first request."""
    app.state.protected.append((path, scope))
    app.mount(path, asgi_app)


def add_lifespan(app: FastAPI, hook: Callable[[FastAPI], AbstractAsyncContextManager[Any]]) -> None:
    """Enter ``hook(app)`` at start-up and leave it at shutdown (e.g. an MCP session manager)."""
    app.state.lifespan_hooks.append(hook)


def _warm(svc: Services) -> None:
    try:
        svc.warm_memory()
        log.info("knowledge memory ready (embedder %s)", svc.memory.embedder.name)
    except Exception as exc:  # fail-open: memory requests will report the problem
        log.warning("could not load the knowledge-memory embedder: %s", exc)
