"""LeanHTTP1Transport framing and pooling against hand-written HTTP responses."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from holdfast.lm.transport import LeanHTTP1Transport

pytestmark = pytest.mark.anyio


async def _serve(responses: list[bytes]) -> tuple[asyncio.Server, list[int]]:
    """A raw server answering each request on a connection with the next canned response."""
    connections: list[int] = []
    queue = list(responses)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while queue:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                response = queue.pop(0)
                writer.write(response)
                await writer.drain()
                framed = b"content-length" in response or b"chunked" in response
                if b"connection: close" in response or not framed:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, connections


async def test_framing_keep_alive_and_close() -> None:
    responses = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\ncontent-length: 4\r\nretry-after: 2\r\nconnection: close\r\n\r\nbusy",
        b"HTTP/1.0 200 OK\r\n\r\nuntil eof",
    ]
    server, connections = await _serve(responses)
    port = server.sockets[0].getsockname()[1]
    transport = LeanHTTP1Transport()
    key = ("127.0.0.1", port)
    request = b"POST /x HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\nhi"
    try:
        assert (await transport.round_trip(key, request))[2] == b"hello"
        assert (await transport.round_trip(key, request))[2] == b"abcde"
        status, headers, body = await transport.round_trip(key, request)
        assert (status, headers["retry-after"], body) == (503, "2", b"busy")
        assert (await transport.round_trip(key, request))[2] == b"until eof"
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    assert len(connections) == 2  # two kept-alive exchanges, then a new one after close


async def test_errors_map_to_httpx_exceptions() -> None:
    server, _ = await _serve([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"])
    port = server.sockets[0].getsockname()[1]
    transport = LeanHTTP1Transport()
    request = b"GET / HTTP/1.1\r\nhost: h\r\n\r\n"
    try:
        with pytest.raises(httpx2.RemoteProtocolError):
            await transport.round_trip(("127.0.0.1", port), request)
        with pytest.raises(httpx2.ConnectError):
            await transport.round_trip(("127.0.0.1", 9), request)
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
