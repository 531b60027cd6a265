"""A small client for a running ``holdfast serve``, for the CLI's ``--server`` mode.

The point of talking to a server is its warm state (the embedding model loaded once), so this
module must stay light: plain HTTP/1.1 over the standard library's ``socket`` and ``json`` (one
request per connection), no FastAPI, no httpx, no numpy, no torch, not even ``http.client`` (whose
``email`` parser costs more to import than the request takes); ``https`` URLs go through
``http.client``, imported then. ``python -X importtime -c "import holdfast.server.client"`` shows
what it loads.

The server is named by ``--server URL`` or ``HOLDFAST_SERVER`` (``http://127.0.0.1:8765``); the
bearer token by ``--token`` or ``HOLDFAST_TOKEN``. An error the server answers with becomes the
library error of the same ``code`` (so the CLI prints it and exits as it would in process); a
server that cannot be reached is a :class:`ServerUnreachable` naming the URL.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from holdfast.errors import (
    ConfigError,
    HoldfastError,
    InvalidInput,
    RetryableFailure,
    RuntimeFailure,
    UserError,
)

SERVER_ENV = "HOLDFAST_SERVER"
TOKEN_ENV = "HOLDFAST_TOKEN"


class ServerUnreachable(RetryableFailure):
    """The configured server did not answer (not running, wrong address, timed out)."""

    code = "server_unreachable"


class RemoteError(HoldfastError):
    """An error the server answered with; ``code`` is the server's stable code."""

    def __init__(self, code: str, message: str, status: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.__dict__["code"] = code  # the server's stable code, shadowing the class's
        self.status = status


class RemoteUserError(RemoteError, UserError):
    """A 4xx answer: the request was wrong (the CLI exits 2, as for a local user error)."""


class RemoteRetryable(RemoteError, RetryableFailure):
    """A retryable failure on the server (503)."""


class RemoteFailure(RemoteError, RuntimeFailure):
    """Any other failure on the server."""


def _error_from(status: int, body: bytes) -> HoldfastError:
    try:
        err = json.loads(body)["error"]
        code, message = str(err["code"]), str(err["message"])
        details = err.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", f"HTTP {status}: {body[:200]!r}", {}
    if not isinstance(details, dict):
        details = {"details": details}
    details = {k: v for k, v in details.items() if k not in ("code", "message", "status")}
    cls: type[RemoteError]
    if status in (401, 403):
        cls = RemoteUserError
        message = f"the server refused the token ({code}): {message}; set {TOKEN_ENV} or --token"
    elif 400 <= status < 500:
        cls = RemoteUserError
    elif status == 503:
        cls = RemoteRetryable
    else:
        cls = RemoteFailure
    return cls(code, message, status, **details)


class ServerClient:
    """JSON over HTTP to one server, one connection kept open for the client's life."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{SERVER_ENV} / --server must be an http(s) URL such as http://127.0.0.1:8765, "
                f"not {url!r}"
            )
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token or None
        self._timeout = timeout

    def close(self) -> None:
        """Nothing is kept open between requests; here for ``with`` blocks."""

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or the server's error raised."""
        target = self._prefix + path
        if params:
            query = {k: v for k, v in params.items() if v is not None}
            target += "?" + urlencode(query, doseq=True)
        headers = {"Accept": "application/json", "User-Agent": "holdfast-cli"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = b""
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            if self._https:
                status, raw = self._exchange_tls(method, target, headers, data)
            else:
                status, raw = self._exchange(method, target, headers, data)
        except (OSError, ValueError) as exc:
            raise ServerUnreachable(
                f"cannot reach the server at {self.url} ({exc.__class__.__name__}: {exc}); "
                f"is 'holdfast serve' running? (unset {SERVER_ENV} to work locally)",
                url=self.url,
            ) from None
        if status >= 400:
            raise _error_from(status, raw)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidInput(
                f"the server at {self.url} answered {method} {path} with something that is "
                "not JSON; is it a Holdfast server?"
            ) from None

    def _exchange(
        self, method: str, target: str, headers: dict[str, str], data: bytes
    ) -> tuple[int, bytes]:
        port = self._port or 80
        host = self._host if ":" not in self._host else f"[{self._host}]"
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(data)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
        with socket.create_connection((self._host, port), timeout=self._timeout) as sock:
            sock.sendall(request)
            chunks: list[bytes] = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return _parse_response(b"".join(chunks))

    def _exchange_tls(
        self, method: str, target: str, headers: dict[str, str], data: bytes
    ) -> tuple[int, bytes]:
        import http.client

        conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request(method, target, body=data or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except http.client.HTTPException as exc:
            raise ValueError(str(exc)) from None
        finally:
            conn.close()


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response read to the connection's end (a body of
    ``Content-Length`` bytes, or chunked, or everything after the head)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("the connection closed before a whole HTTP response arrived")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in fields:
        length = int(fields["content-length"])
        if len(body) < length:
            raise ValueError(f"the body ended after {len(body)} of {length} bytes")
        body = body[:length]
    return int(parts[1]), body


def _dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            raise ValueError("a chunked body ended early")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return b"".join(out)
        if len(rest) < size + 2:
            raise ValueError("a chunked body ended early")
        out.append(rest[:size])
        body = rest[size + 2 :]


def client_from(
    server: str | None, token: str | None, env: Mapping[str, str]
) -> ServerClient | None:
    """The client for ``--server`` / ``HOLDFAST_SERVER`` (and the token likewise), or None when
    no server is configured."""
    url = (server if server is not None else env.get(SERVER_ENV, "")).strip()
    if not url:
        return None
    return ServerClient(url, token if token is not None else env.get(TOKEN_ENV))


def path_part(value: str) -> str:
    """An id as one URL path segment."""
    return quote(value, safe="")
