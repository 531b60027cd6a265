"""Minimal HTTP/1.1 framing for :class:`~holdfast.testing.FakeOpenAIServer`: requests in, responses out.

Requests are read from an asyncio stream (Content-Length or chunked bodies, keep-alive between
them); responses are built as lists of byte strings ready to write.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
}


def json_response(status: int, body: str, extra: dict[str, str] | None = None) -> list[bytes]:
    data = body.encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "content-type: application/json",
        f"content-length: {len(data)}",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    return [("\r\n".join(head) + "\r\n\r\n").encode() + data]


def sse_response(events: Any, *, named: bool = False, done: bool = True) -> list[bytes]:
    """A chunked ``text/event-stream`` response: one ``data:`` event per JSON object (or str).

    ``named`` adds an ``event:`` line from each object's ``type`` (Anthropic's style); ``done``
    ends with OpenAI's ``data: [DONE]``.
    """
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    parts = [head]
    lines = []
    for event in events:
        if isinstance(event, str):
            lines.append(f"data: {event}\n\n")
            continue
        prefix = f"event: {event.get('type', 'message')}\n" if named else ""
        lines.append(f"{prefix}data: {json.dumps(event)}\n\n")
    if done:
        lines.append("data: [DONE]\n\n")
    for line in lines:
        data = line.encode()
        parts.append(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    parts.append(b"0\r\n\r\n")
    return parts


async def read_request(
    reader: asyncio.StreamReader, buf: bytearray
) -> tuple[str, str, dict[str, str], bytes] | None:
    """Read one HTTP/1.1 request from ``reader`` (``buf`` keeps bytes between requests)."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = await reader.read(65536)
        if not data:
            return None
        buf += data
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                buf += await _read_more(reader)
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            del buf[: eol + 2]
            while len(buf) < size + 2:
                buf += await _read_more(reader)
            body += buf[:size]
            del buf[: size + 2]
            if size == 0:
                return method, target, headers, bytes(body)
    length = int(headers.get("content-length") or 0)
    while len(buf) < length:
        buf += await _read_more(reader)
    raw = bytes(buf[:length])
    del buf[:length]
    return method, target, headers, raw


async def _read_more(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(65536)
    if not data:
        raise asyncio.IncompleteReadError(b"", None)
    return data
