"""Errors as JSON: ``{"error": {"code", "type", "message", "retryable", "details"}}``.

The ``code`` is the library's own stable code (``task_not_found``, ``invalid_input``,
``budget_exceeded``...), so a client handles the same error the same way whether it called the
Python API or the server. The HTTP status only sorts errors coarsely; :data:`STATUS_BY_CODE`
lists the exceptions to the rule "user errors 400, retryable failures 503, other failures 500".
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from holdfast.errors import BudgetExceeded, Cancelled, HoldfastError, RetryableFailure, UserError

log = logging.getLogger("holdfast.server")

STATUS_BY_CODE: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "task_not_found": 404,
    "not_found": 404,
    "model_not_found": 404,
    "task_state": 409,
    "cancelled": 409,
    "payload_too_large": 413,
    "budget_exceeded": 402,
    "lease_lost": 409,
}

_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


def status_for(exc: HoldfastError) -> int:
    if exc.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[exc.code]
    if isinstance(exc, UserError):
        return 400
    if isinstance(exc, BudgetExceeded):
        return 402
    if isinstance(exc, Cancelled):
        return 409
    if isinstance(exc, RetryableFailure):
        return 503
    return 500


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "type": "HTTPError",
        "message": message,
        "retryable": False,
    }
    if details:
        body["details"] = details
    return {"error": body}


def error_response(exc: HoldfastError) -> JSONResponse:
    status = status_for(exc)
    headers = {"Retry-After": "1"} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="holdfast"'}
    return JSONResponse({"error": exc.to_dict()}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the JSON shape above."""

    @app.exception_handler(HoldfastError)
    async def _holdfast(request: Request, exc: HoldfastError) -> JSONResponse:
        if status_for(exc) >= 500:
            log.warning("%s %s failed: [%s] %s", request.method, request.url.path, exc.code, exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg")),
                "type": str(e.get("type")),
            }
            for e in exc.errors()[:20]
        ]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p != "body") or "request"
        return JSONResponse(
            error_body("invalid_input", f"{where}: {first['msg']}", problems=problems),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s raised", request.method, request.url.path)
        body = error_body("internal_error", f"internal error: {type(exc).__name__}")
        return JSONResponse(body, status_code=500)
