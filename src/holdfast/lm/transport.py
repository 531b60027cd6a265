"""A lean HTTP/1.1 keep-alive transport for plain-``http://`` model endpoints.

Local model servers (vLLM, SGLang, Ollama, llama.cpp, LM Studio, the fake server) answer in
milliseconds, so the client's own cost per call decides how fast a fan-out of hundreds of calls
runs. The generic connection pool under httpx scans every connection on each request, which grows
costly with hundreds in flight, and its HTTP/1.1 state machine is written for generality. This
transport plugs into the same ``httpx2.AsyncClient`` the ``openai`` SDK uses (through ``mounts``,
for ``http://`` only; HTTPS keeps the standard pool) and does the minimum: one idle-connection
stack per host, requests written in one go, responses framed by Content-Length or chunked encoding.

Semantics match the standard transport where the SDK relies on them: connect and read timeouts
raise ``httpx2`` timeout errors, a refused or dropped connection raises ``ConnectError`` /
``RemoteProtocolError``, and a cancelled request closes its connection (the server sees it go).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2

_Key = tuple[str, int]


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and now - self.idle_since < expiry
        )

    def close(self) -> None:
        self.writer.close()


class LeanHTTP1Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive over asyncio streams, for ``http://`` URLs.

    Idle connections are dropped after ``keepalive_expiry`` seconds, under the 5 s idle timeout of
    common Python model servers (uvicorn), so a reused connection is rarely one the server closed.
    """

    def __init__(self, *, keepalive_expiry: float = 4.0, max_idle_per_host: int = 1024) -> None:
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[_Key, collections.deque[_Conn]] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx2.UnsupportedProtocol(f"LeanHTTP1Transport serves http:// only, not {url}")
        key = (url.host, url.port or 80)
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        head, body = await self._serialize(request)
        conn = await self._checkout(key, timeouts.get("connect"))
        return await self._exchange(conn, key, request, head, body, timeouts.get("read"))

    async def _serialize(self, request: httpx2.Request) -> tuple[bytes, bytes]:
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        target = request.url.raw_path.decode("ascii")
        lines = [f"{request.method} {target} HTTP/1.1"]
        for name, value in request.headers.multi_items():
            if name.lower() in ("transfer-encoding", "content-length"):
                continue
            lines.append(f"{name}: {value}")
        if body or request.method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body

    async def _checkout(self, key: _Key, connect_timeout: float | None) -> _Conn:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.keepalive_expiry):
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(key[0], key[1], limit=2**20), connect_timeout
            )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Conn(reader, writer)

    async def _exchange(
        self,
        conn: _Conn,
        key: _Key,
        request: httpx2.Request,
        head: bytes,
        body: bytes,
        read_timeout: float | None,
    ) -> httpx2.Response:
        status, headers, stream = await self._start(
            conn, key, request.method, head + body, read_timeout
        )
        return httpx2.Response(status, headers=headers, stream=stream, request=request)

    async def round_trip(
        self,
        key: _Key,
        payload: bytes,
        *,
        method: str = "POST",
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one fully serialised request and read the whole response (no httpx objects).

        The direct path of :class:`~holdfast.lm.openai_compat.OpenAICompatLM` uses this; errors
        are the same ``httpx2`` exceptions the transport raises.
        """
        status, headers, stream = await self.open(
            key,
            payload,
            method=method,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        try:
            body = b"".join([part async for part in stream])
        finally:
            await stream.aclose()
        return status, headers, body

    async def open(
        self,
        key: _Key,
        payload: bytes,
        *,
        method: str = "POST",
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> tuple[int, dict[str, str], _Body]:
        """Send one fully serialised request; return the status, headers and the unread body.

        The caller iterates the body and must ``aclose()`` it: read to the end, its connection
        goes back to the pool; closed early, the connection is closed.
        """
        conn = await self._checkout(key, connect_timeout)
        status, headers, stream = await self._start(conn, key, method, payload, read_timeout)
        return (
            status,
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers},
            stream,
        )

    async def _start(
        self, conn: _Conn, key: _Key, method: str, payload: bytes, read_timeout: float | None
    ) -> tuple[int, list[tuple[bytes, bytes]], _Body]:
        try:
            conn.writer.write(payload)
            await conn.writer.drain()
            async with asyncio.timeout(read_timeout):
                raw_head = await conn.reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            conn.close()
            raise httpx2.ReadTimeout("timed out waiting for the response") from None
        except asyncio.IncompleteReadError:
            conn.close()
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response."
            ) from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            conn.close()
            raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
        except BaseException:  # cancelled: close so that the server sees the request go away
            conn.close()
            raise
        try:
            status, headers = _parse_head(raw_head)
        except (ValueError, httpx2.RemoteProtocolError):
            conn.close()
            raise httpx2.RemoteProtocolError(f"malformed response head {raw_head[:80]!r}") from None
        return status, headers, _Body(self, conn, key, headers, method, status, read_timeout)

    def _checkin(self, key: _Key, conn: _Conn) -> None:
        idle = self._idle.setdefault(key, collections.deque())
        if len(idle) >= self.max_idle_per_host:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _parse_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise httpx2.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), headers


class _Body(httpx2.AsyncByteStream):
    """A response body; returns its connection to the pool once read to the end."""

    def __init__(
        self,
        transport: LeanHTTP1Transport,
        conn: _Conn,
        key: _Key,
        headers: list[tuple[bytes, bytes]],
        method: str,
        status: int,
        read_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._conn: _Conn | None = conn
        self._key = key
        self._timeout = read_timeout
        lower = {k.lower(): v for k, v in headers}
        self._chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
        length = lower.get(b"content-length")
        self._length = int(length) if length is not None else None
        self._keep = lower.get(b"connection", b"").lower() != b"close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._length, self._chunked = 0, False
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        reader = conn.reader
        try:
            if self._chunked:
                while True:
                    size_line = await self._read(reader.readuntil(b"\r\n"))
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        await self._read(reader.readuntil(b"\r\n"))
                        break
                    data = await self._read(reader.readexactly(size + 2))
                    yield data[:-2]
            elif self._length is not None:
                remaining = self._length
                while remaining > 0:
                    data = await self._read(reader.read(min(remaining, 1 << 16)))
                    if not data:
                        raise httpx2.RemoteProtocolError(
                            "connection closed in the middle of the body"
                        )
                    remaining -= len(data)
                    yield data
            else:
                self._keep = False
                while data := await self._read(reader.read(1 << 16)):
                    yield data
            self._done = True
        except asyncio.IncompleteReadError:
            raise httpx2.RemoteProtocolError(
                "connection closed in the middle of the body"
            ) from None

    async def _read(self, awaitable: Any) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                data: bytes = await awaitable
        except TimeoutError:
            raise httpx2.ReadTimeout("timed out reading the response body") from None
        return data

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep:
            self._transport._checkin(self._key, conn)
        else:
            conn.close()
