"""The web console: server-rendered pages (Jinja2, autoescaped) with one small script of ours.

Pages: tasks (a live task page with turns as they happen, roll-overs, the working set and its
versions, budget used, approve / deny / steer / stop), approvals, a task's receipt chain with
its verification, RLM traces as trees, and a memory browser (search with trust and provenance
marks, entities, the history of superseded beliefs).

Security:

* **Sessions.** ``/console/login`` takes a bearer token once and sets a session cookie
  (``HttpOnly``, ``SameSite=Strict``, ``Path=/console``, ``Secure`` over HTTPS); the session is
  tied to the token and dies with it (revocation ends it on the next request). Without auth
  (loopback only) a visit starts a session for the local user.
* **Cross-site requests.** Every state-changing form carries the session's CSRF token, and its
  ``Origin`` (or, failing that, ``Referer``) must be this server; ``Sec-Fetch-Site`` must not be
  ``cross-site``. The cookie is ``SameSite=Strict`` besides.
* **Untrusted text** (model output, box output, memory items, goals, tool arguments) is only ever
  autoescaped text, control characters are shown as ``\\xNN`` escapes, and long values are cut to
  a head and a tail with the count of characters left out. A Content-Security-Policy allows no
  inline script, no other origin, no framing.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from holdfast.display import escape_control
from holdfast.errors import HoldfastError, InvalidInput
from holdfast.server.services import Services
from holdfast.server.tokens import LOCAL, Principal, Unauthorized

HERE = Path(__file__).parent
COOKIE = "holdfast_console"
CLIP = 20_000
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass
class Session:
    principal: Principal
    csrf: str
    expires: float


class Sessions:
    """Console sessions in memory (a restart logs everyone out)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.by_id: dict[str, Session] = {}

    def create(self, principal: Principal) -> tuple[str, Session]:
        now = time.time()
        for key in [k for k, s in self.by_id.items() if s.expires < now]:
            del self.by_id[key]
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), now + self.ttl_s)
        self.by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self.by_id.get(sid)
        if session is None or session.expires < time.time():
            self.by_id.pop(sid, None)
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self.by_id.pop(sid, None)


def clip(value: Any, limit: int = CLIP) -> str:
    """Untrusted text for a page: control characters escaped, long text cut in the middle."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > limit:
        head, tail = text[: limit * 3 // 4], text[-limit // 4 :]
        text = f"{head}\n…[{len(text) - len(head) - len(tail):,} characters not shown]…\n{tail}"
    return escape_control(text)


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
    )
    env.filters["clip"] = clip
    env.filters["short"] = lambda v, n=160: clip(v, n)
    env.filters["when"] = lambda ts: (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts))) if ts else "-"
    )
    env.filters["pretty"] = lambda v: clip(json.dumps(v, indent=2, ensure_ascii=False, default=str))
    return env


class Console:
    """The console's routes, bound to one app's services."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.svc: Services = app.state.services
        self.auth = app.state.settings.auth
        self.sessions = Sessions(app.state.settings.session_ttl_s)
        self.env = _env()

    # -- sessions and checks ------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        if session.principal.token_id and self.svc.tokens is not None:
            try:  # the session dies with its token
                info = self.svc.tokens.get(session.principal.token_id)
            except InvalidInput:
                info = None
            if info is None or not info.active:
                self.sessions.drop(request.cookies.get(COOKIE))
                return None
        return session

    def same_origin(self, request: Request) -> bool:
        host = request.headers.get("host", "")
        if request.headers.get("sec-fetch-site") == "cross-site":
            return False
        source = request.headers.get("origin") or request.headers.get("referer") or ""
        if not source or source == "null":
            return False
        parts = urlsplit(source)
        return parts.netloc == host and parts.scheme in ("http", "https")

    async def check_form(self, request: Request) -> tuple[Session, dict[str, str]]:
        """The session of a state-changing form post, after the CSRF and origin checks."""
        session = self.session(request)
        if session is None:
            raise Unauthorized("log in to the console first")
        form = await request.form()
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        token = fields.get("csrf", "")
        if not self.same_origin(request) or not hmac.compare_digest(token, session.csrf):
            raise CrossSite("this form was not sent from this console (cross-site request refused)")
        return session, fields

    def page(
        self,
        name: str,
        request: Request,
        session: Session | None,
        http_status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        html = self.env.get_template(name).render(
            session=session,
            csrf=session.csrf if session else "",
            auth=self.auth,
            path=request.url.path,
            **ctx,
        )
        return HTMLResponse(html, status_code=http_status, headers=SECURITY_HEADERS)

    def login_redirect(self, request: Request) -> Response:
        if not self.auth:
            sid, _ = self.sessions.create(LOCAL)
            response = RedirectResponse(str(request.url.path), status_code=303)
            self.set_cookie(request, response, sid)
            return response
        return RedirectResponse("/console/login", status_code=303)

    def set_cookie(self, request: Request, response: Response, sid: str) -> None:
        response.set_cookie(
            COOKIE,
            sid,
            max_age=int(self.sessions.ttl_s),
            path="/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


class CrossSite(HoldfastError):
    code = "forbidden"


def mount_console(app: FastAPI) -> None:
    """Add the console's routes to ``app`` (under ``/console``)."""
    from holdfast.server import console_pages

    console = Console(app)
    app.state.console = console
    router = APIRouter(prefix="/console", include_in_schema=False)
    console_pages.register(router, console)

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        path = HERE / "static" / name
        if (
            name not in {p.name for p in (HERE / "static").iterdir()}
            or path.suffix not in STATIC_TYPES
        ):
            return Response("not found", status_code=404)
        return Response(
            path.read_bytes(),
            media_type=STATIC_TYPES[path.suffix],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"},
        )

    app.include_router(router)
