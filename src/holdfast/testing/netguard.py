"""A guard that makes any attempt to reach a non-loopback address fail loudly.

Tests must never reach a real model or the internet. :func:`install` patches the socket layer of
this process so that connecting or sending to anything but 127.0.0.0/8, ::1 or a Unix socket
raises :class:`NetworkBlocked` and is recorded; the pytest plugin in ``tests/conftest.py`` fails
the test at teardown if anything was recorded, even when the caller swallowed the exception.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

_lock = threading.Lock()
_violations: list[str] = []
_originals: dict[str, Any] = {}


class NetworkBlocked(RuntimeError):
    """Raised when code under test tries to reach a non-loopback address."""


def _is_loopback_host(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host in ("localhost", "localhost.localdomain", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(family: int, address: Any) -> None:
    if family == getattr(socket, "AF_UNIX", object()) or not isinstance(address, tuple):
        return
    host = address[0]
    if not _is_loopback_host(host):
        msg = f"blocked network access to {address!r}: tests may only reach loopback"
        with _lock:
            _violations.append(msg)
        raise NetworkBlocked(msg)


def install() -> None:
    """Patch ``socket`` so that non-loopback connects, sends and DNS look-ups are refused."""
    if _originals:
        return
    _originals["connect"] = socket.socket.connect
    _originals["connect_ex"] = socket.socket.connect_ex
    _originals["sendto"] = socket.socket.sendto
    _originals["getaddrinfo"] = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        _check(self.family, address)
        _originals["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(self.family, address)
        return int(_originals["connect_ex"](self, address))

    def sendto(self: socket.socket, *args: Any) -> int:
        _check(self.family, args[-1])
        return int(_originals["sendto"](self, *args))

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback_host(host):
            msg = f"blocked DNS look-up of {host!r}: tests may only reach loopback"
            with _lock:
                _violations.append(msg)
            raise NetworkBlocked(msg)
        return _originals["getaddrinfo"](host, *args, **kwargs)

    setattr(socket.socket, "connect", connect)  # noqa: B010
    setattr(socket.socket, "connect_ex", connect_ex)  # noqa: B010
    setattr(socket.socket, "sendto", sendto)  # noqa: B010
    setattr(socket, "getaddrinfo", getaddrinfo)  # noqa: B010


def uninstall() -> None:
    """Undo :func:`install`."""
    if not _originals:
        return
    for name in ("connect", "connect_ex", "sendto"):
        setattr(socket.socket, name, _originals.pop(name))
    setattr(socket, "getaddrinfo", _originals.pop("getaddrinfo"))  # noqa: B010


def take_violations() -> list[str]:
    """Return and clear the recorded violations."""
    with _lock:
        out = list(_violations)
        _violations.clear()
    return out
