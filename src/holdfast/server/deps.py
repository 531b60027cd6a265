"""What route handlers share: the services, the request's principal, and SSE framing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from holdfast.server.gate import principal_of
from holdfast.server.hub import Event
from holdfast.server.services import Services
from holdfast.server.tokens import Principal

SSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def principal(request: Request) -> Principal:
    return principal_of(request.scope)


def sse_frame(event: Event) -> bytes:
    """One server-sent event; ``ping`` events become comments (keep-alives)."""
    if event.type == "ping":
        return b": ping\n\n"
    # one event goes to every watcher of its topic: encode it once, not once per watcher
    cached: bytes | None = event.__dict__.get("_frame")
    if cached is not None:
        return cached
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), default=str)
    frame = f"id: {event.pos}\nevent: {event.type}\ndata: {data}\n\n".encode()
    object.__setattr__(event, "_frame", frame)
    return frame


def sse_response(events: AsyncIterator[Event] | AsyncIterator[list[Event]]) -> StreamingResponse:
    """A stream of events, or of batches of events (each batch one write to the client)."""

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for item in events:
            if isinstance(item, list):
                yield b"".join(sse_frame(e) for e in item)
            else:
                yield sse_frame(item)

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


def last_event_id(request: Request, after: int | None) -> int:
    """Where a stream resumes: ``?after=N``, else the ``Last-Event-ID`` header, else 0."""
    if after is not None:
        return max(0, after)
    raw = request.headers.get("last-event-id", "")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def jsonable(value: Any) -> Any:
    """Rows and dataclasses as plain JSON data."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return value
