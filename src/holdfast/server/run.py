"""Running the app on uvicorn: in the foreground (``holdfast serve``) or on a background thread
(the demo's ``--serve``, tests and benchmarks).

The socket is bound before uvicorn starts, so a busy port fails at once with a clear message,
port 0 picks a free port that the caller can read back, and the address is checked against the
auth setting first (no auth on anything but loopback).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from typing import Any

from holdfast.errors import ConfigError
from holdfast.server.settings import ServerSettings, is_loopback


def bind(settings: ServerSettings) -> socket.socket:
    """A listening socket for the settings' host and port."""
    if not settings.auth and not is_loopback(settings.host):
        raise ConfigError(f"refusing to serve {settings.host} without auth")
    host = "127.0.0.1" if settings.host == "localhost" else settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio turns Nagle off only on sockets whose proto is IPPROTO_TCP, and this one's is 0;
    # accepted connections inherit the option (Linux). Without it every response on a kept-alive
    # connection waited ~40 ms for the client's delayed ACK before its second segment went out.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), settings.port))
    except OSError as exc:
        sock.close()
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc.strerror}"
        raise ConfigError(
            f"the address {host}:{settings.port} {why}; pick another with --port"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _config(app: Any, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=5,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )


def serve(app: Any, settings: ServerSettings, *, log_level: str = "info") -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    sock = bind(settings)
    server = uvicorn.Server(_config(app, log_level))
    server.run(sockets=[sock])


class ServerThread:
    """The app on a background thread: ``with ServerThread(app, settings) as s: s.url``."""

    def __init__(self, app: Any, settings: ServerSettings, *, log_level: str = "warning") -> None:
        import uvicorn

        self.settings = settings
        self.sock = bind(settings)
        self.port = int(self.sock.getsockname()[1])
        host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"
        self.server = uvicorn.Server(_config(app, log_level))
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            daemon=True,
            name="holdfast-serve",
        )

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise ConfigError("the server stopped during start-up (see its log)")
            if time.monotonic() > deadline:
                raise ConfigError(f"the server did not start within {timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
