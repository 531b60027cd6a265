"""The direct path: JSON over HTTP/1.1 keep-alive, without the SDK's request pipeline.

For plain-HTTP model servers on the same machine or network (vLLM, SGLang, Ollama, llama.cpp,
LM Studio), the ``openai`` SDK and ``httpx`` spend about 1 ms of CPU per call building and parsing
objects that a local server does not need, which caps a single process at roughly a thousand calls
a second and makes wide fan-outs CPU-bound. :class:`DirectChatClient` writes the request bytes
itself and reads the reply over :class:`~holdfast.lm.transport.LeanHTTP1Transport`'s pooled
connections, at about a fifth of that cost. It is the default for ``http://`` base URLs (see
:func:`~holdfast.lm.openai_compat.choose_http_path`); ``direct_http=False`` forces the SDK; status,
timeout and connection failures surface as the same typed errors as on the SDK path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from holdfast.errors import ConfigError
from holdfast.lm.transport import LeanHTTP1Transport


class DirectStatusError(Exception):
    """A non-2xx reply on the direct path (classified into typed errors by the LM)."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.text = text


class DirectChatClient:
    """POSTs JSON bodies to one ``http://`` base URL over pooled keep-alive connections."""

    def __init__(self, base_url: str, api_key: str, *, connect_timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"direct_http needs a plain http:// base URL, not {base_url!r}")
        self.key = (parts.hostname, parts.port or 80)
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc
        self.api_key = api_key
        self.connect_timeout = connect_timeout
        self.transport = LeanHTTP1Transport(keepalive_expiry=4.0)

    def _request(self, path: str, body: dict[str, Any], accept: str) -> bytes:
        data = json.dumps(body, ensure_ascii=False).encode()
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\n"
            f"host: {self.host_header}\r\n"
            f"authorization: Bearer {self.api_key}\r\n"
            "content-type: application/json\r\n"
            f"accept: {accept}\r\n"
            "user-agent: holdfast\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        ).encode("latin-1")
        return head + data

    async def post_json(self, path: str, body: dict[str, Any], timeout: float) -> bytes:
        """The raw bytes of a 2xx reply; DirectStatusError or httpx2 errors otherwise."""
        status, headers, raw = await self.transport.round_trip(
            self.key,
            self._request(path, body, "application/json"),
            connect_timeout=min(timeout, self.connect_timeout),
            read_timeout=timeout,
        )
        if not 200 <= status < 300:
            raise DirectStatusError(status, headers, raw.decode("utf-8", "replace"))
        return raw

    @asynccontextmanager
    async def stream_json(
        self, path: str, body: dict[str, Any], timeout: float
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The body of a 2xx reply as it arrives (``timeout`` bounds each wait for bytes).

        Leaving the block before the end closes the connection, so the server sees the request
        go away; a non-2xx reply raises DirectStatusError with its body.
        """
        status, headers, stream = await self.transport.open(
            self.key,
            self._request(path, body, "text/event-stream"),
            connect_timeout=min(timeout, self.connect_timeout),
            read_timeout=timeout,
        )
        try:
            if not 200 <= status < 300:
                raw = b"".join([part async for part in stream])
                raise DirectStatusError(status, headers, raw.decode("utf-8", "replace"))
            yield stream.__aiter__()
        finally:
            await stream.aclose()

    async def close(self) -> None:
        await self.transport.aclose()
