"""The console's pages and form handlers (see :mod:`holdfast.server.console` for its security)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from holdfast.errors import HoldfastError, InvalidInput
from holdfast.server import routes_memory, routes_rlm, routes_tasks
from holdfast.server.console import COOKIE, Console, Session
from holdfast.server.deps import last_event_id, sse_response
from holdfast.server.errors import status_for
from holdfast.server.tokens import Unauthorized

Handler = Callable[..., Any]


def register(router: APIRouter, console: Console) -> None:
    svc = console.svc

    async def guarded(request: Request, render: Callable[[Session], Any]) -> Response:
        """Run a page with the request's session; errors become an error page."""
        session = console.session(request)
        if session is None:
            return console.login_redirect(request)
        try:
            result = render(session)
            if hasattr(result, "__await__"):
                result = await result
            response: Response = result
            return response
        except HoldfastError as exc:
            return console.page(
                "error.html", request, session, http_status=status_for(exc), error=exc.to_dict()
            )

    async def form_action(
        request: Request, back: str, act: Callable[[Session, dict[str, str]], Any]
    ) -> Response:
        try:
            session, fields = await console.check_form(request)
        except HoldfastError as exc:
            return console.page("error.html", request, None, http_status=403, error=exc.to_dict())
        try:
            await anyio.to_thread.run_sync(act, session, fields)
        except HoldfastError as exc:
            return console.page(
                "error.html", request, session, http_status=status_for(exc), error=exc.to_dict()
            )
        return RedirectResponse(back, status_code=303)

    # -- login ----------------------------------------------------------------------------------

    @router.get("/login")
    def login_page(request: Request) -> Response:
        if not console.auth:
            return console.login_redirect(request)
        return console.page("login.html", request, None, error=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token") or "").strip()
        if not console.same_origin(request):
            return console.page(
                "login.html",
                request,
                None,
                http_status=403,
                error="the login form must be sent from this console",
            )
        try:
            if svc.tokens is None:
                raise Unauthorized("this server has no tokens")
            principal = await anyio.to_thread.run_sync(svc.tokens.authenticate, token)
        except Unauthorized as exc:
            return console.page("login.html", request, None, http_status=401, error=exc.message)
        sid, _ = console.sessions.create(principal)
        response = RedirectResponse("/console/", status_code=303)
        console.set_cookie(request, response, sid)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        if console.same_origin(request):
            console.sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # -- tasks ----------------------------------------------------------------------------------

    @router.get("/")
    async def tasks(request: Request, status: str | None = None) -> Response:
        def render(session: Session) -> Response:
            rows = svc.harness.list_tasks(status=status or None, limit=200)
            return console.page(
                "tasks.html",
                request,
                session,
                tasks=[routes_tasks.task_json(r) for r in rows],
                pending=routes_tasks._pending(svc),
                status=status or "",
            )

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    def task_context(task_id: str, version: int | None = None) -> dict[str, Any]:
        h = svc.harness
        task = routes_tasks.task_json(h.get(task_id))
        ws: dict[str, Any] | None = None
        ops: list[dict[str, Any]] = []
        try:
            ws = routes_tasks.working_set(task_id, version=version, svc=svc)
            ops = routes_tasks.working_set_ops(task_id, after=0, limit=5000, svc=svc)
        except InvalidInput:
            ws = None
        return {
            "task": task,
            "steps": [s.__dict__ for s in h.steps(task_id)],
            "approvals": [a.__dict__ for a in h.approvals(task_id)],
            "ws": ws,
            "ops": ops,
        }

    def turn_rows(task_id: str, after: int) -> list[dict[str, Any]]:
        try:
            return routes_tasks.turns(task_id, after=after, limit=1000, svc=svc)
        except InvalidInput:
            return []

    @router.get("/tasks/{task_id}")
    async def task_page(request: Request, task_id: str, version: int | None = None) -> Response:
        def render(session: Session) -> Response:
            ctx = task_context(task_id, version)
            rows = turn_rows(task_id, 0)
            return console.page("task.html", request, session, turns=rows, **ctx)

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    @router.get("/tasks/{task_id}/fragment/{part}")
    async def fragment(request: Request, task_id: str, part: str, after: int = 0) -> Response:
        templates = {"status": "_status.html", "turns": "_turns.html", "ws": "_ws.html"}
        if part not in templates:
            return Response("not found", status_code=404)

        def render(session: Session) -> Response:
            ctx = task_context(task_id) if part != "turns" else {}
            rows = turn_rows(task_id, after) if part == "turns" else []
            return console.page(templates[part], request, session, turns=rows, **ctx)

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    @router.get("/tasks/{task_id}/events")
    async def task_events(request: Request, task_id: str) -> Response:
        if console.session(request) is None:
            return Response("log in first", status_code=401)
        await anyio.to_thread.run_sync(svc.harness.get, task_id)
        after = last_event_id(request, None)
        return sse_response(routes_tasks.task_stream(svc, task_id, after))

    def decide(task_id: str, verb: str) -> Callable[[Session, dict[str, str]], Any]:
        def act(session: Session, fields: dict[str, str]) -> Any:
            step = fields.get("step", "")
            if not step:
                raise InvalidInput("no step named")
            fn = svc.harness.approve if verb == "approve" else svc.harness.deny
            return fn(task_id, step, by=session.principal.actor, ttl_s=3600.0)

        return act

    @router.post("/tasks/{task_id}/approve")
    async def approve(request: Request, task_id: str) -> Response:
        return await form_action(request, f"/console/tasks/{task_id}", decide(task_id, "approve"))

    @router.post("/tasks/{task_id}/deny")
    async def deny(request: Request, task_id: str) -> Response:
        return await form_action(request, f"/console/tasks/{task_id}", decide(task_id, "deny"))

    @router.post("/tasks/{task_id}/steer")
    async def steer(request: Request, task_id: str) -> Response:
        def act(session: Session, fields: dict[str, str]) -> Any:
            kind = fields.get("command", "message")
            if kind not in ("message", "stop", "pause", "resume"):
                raise InvalidInput(f"unknown command {kind!r}")
            return svc.harness.steer(
                task_id, kind, fields.get("message", ""), by=session.principal.actor
            )

        return await form_action(request, f"/console/tasks/{task_id}", act)

    @router.get("/tasks/{task_id}/receipts")
    async def receipts(request: Request, task_id: str) -> Response:
        def render(session: Session) -> Response:
            task = routes_tasks.task_json(svc.harness.get(task_id))
            rows = [routes_tasks.receipt_json(r) for r in svc.harness.receipts(task_id)]
            verified = svc.harness.verify(task_id).to_dict()
            return console.page(
                "receipts.html", request, session, task=task, receipts=rows, verified=verified
            )

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    @router.get("/approvals")
    async def approvals(request: Request) -> Response:
        def render(session: Session) -> Response:
            return console.page(
                "approvals.html", request, session, pending=routes_tasks._pending(svc)
            )

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    # -- RLM traces -----------------------------------------------------------------------------

    @router.get("/rlm")
    async def traces(request: Request) -> Response:
        def render(session: Session) -> Response:
            runs = routes_rlm.traces(limit=100, svc=svc)
            return console.page("traces.html", request, session, runs=runs)

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    @router.get("/rlm/{trace_id}")
    async def trace(request: Request, trace_id: str) -> Response:
        def render(session: Session) -> Response:
            data = routes_rlm.trace(trace_id, events=True, svc=svc)
            runs = data["runs"]
            by_parent: dict[str | None, list[dict[str, Any]]] = {}
            for run in runs:
                by_parent.setdefault(run["parent_id"], []).append(run)
            return console.page(
                "trace.html", request, session, root=runs[0], children=by_parent, data=data
            )

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    # -- knowledge memory -----------------------------------------------------------------------

    @router.get("/memory")
    async def memory(request: Request, namespace: str = "default", q: str = "") -> Response:
        def render(session: Session) -> Response:
            spaces = routes_memory.namespaces(svc=svc)
            hits: list[dict[str, Any]] = []
            if q.strip():
                req = routes_memory.SearchRequest(
                    query=q, namespace=namespace, limit=30, history=True
                )
                hits = routes_memory._search(svc, req)
            ents = routes_memory.entities(namespace=namespace, svc=svc)["entities"]
            recent = routes_memory.list_items(namespace=namespace, offset=0, limit=1000, svc=svc)
            return console.page(
                "memory.html",
                request,
                session,
                namespaces=spaces,
                namespace=namespace,
                q=q,
                hits=hits,
                entities=ents,
                items=list(reversed(recent["items"]))[:50],
                total=recent["total"],
            )

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))

    @router.get("/memory/items/{item_id}")
    async def memory_item(request: Request, item_id: str) -> Response:
        def render(session: Session) -> Response:
            item = routes_memory.get_item(item_id, namespace=None, svc=svc)
            chain = routes_memory.history(item_id, namespace=None, svc=svc)
            return console.page("item.html", request, session, item=item, chain=chain)

        return await guarded(request, lambda s: anyio.to_thread.run_sync(render, s))
