"""The suite's network guard: anything beyond loopback fails loudly, loopback and Unix sockets work."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from holdfast.testing import netguard
from holdfast.testing.netguard import NetworkBlocked

OUTSIDE = ("192.0.2.1", 80)  # TEST-NET-1: never routed


def test_connect_outside_loopback_is_blocked_and_recorded() -> None:
    with socket.socket() as s, pytest.raises(NetworkBlocked, match=r"192\.0\.2\.1"):
        s.connect(OUTSIDE)
    with socket.socket() as s, pytest.raises(NetworkBlocked):
        s.connect_ex(OUTSIDE)
    violations = netguard.take_violations()
    assert len(violations) == 2 and all("loopback" in v for v in violations)
    assert netguard.take_violations() == []


def test_udp_sendto_and_dns_are_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(NetworkBlocked):
        s.sendto(b"x", ("8.8.8.8", 53))
    with pytest.raises(NetworkBlocked, match=r"example\.com"):
        socket.getaddrinfo("example.com", 443)
    assert len(netguard.take_violations()) == 2


def test_ipv6_outside_is_blocked() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    with socket.socket(socket.AF_INET6) as s, pytest.raises(NetworkBlocked):
        s.connect(("2001:db8::1", 80, 0, 0))
    assert netguard.take_violations()


def test_loopback_and_unix_sockets_work(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"
    assert socket.getaddrinfo("localhost", 80)
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    assert netguard.take_violations() == []


def test_a_swallowed_violation_still_fails_the_test(tmp_path: Path) -> None:
    conftest = Path(__file__).with_name("conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_sneaky.py").write_text(
        textwrap.dedent(
            """
            import socket

            def test_sneaky():
                try:
                    socket.create_connection(("192.0.2.1", 443), timeout=1)
                except Exception:
                    pass

            def test_honest():
                assert True
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tried to reach the network outside loopback" in result.stdout
    # test_sneaky's body passes, then the guard errors it at teardown; test_honest is untouched.
    assert "ERROR test_sneaky.py::test_sneaky" in result.stdout
    assert "2 passed, 1 error" in result.stdout
