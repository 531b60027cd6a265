"""Simulated machines for multi-host tests: Linux network namespaces joined by veth pairs.

``HostLab`` makes one hub namespace (the database machine) and any number of host namespaces,
each joined to the hub by its own veth pair on its own /30 of ``10.213.<n>.0/24``::

    with HostLab(["b", "c"]) as lab:
        lab.hub_address("b")          # 10.213.n.1: the hub as host b reaches it
        lab.address("b")              # 10.213.n.2: host b itself
        lab.run("b", ["holdfast", "task", "list"])

A host reaches only the hub's address on its own link: not another host, not the hub's loopback.
Everything else (files, processes, users) is shared, as the namespaces isolate the network only.
It needs root and ``ip`` (iproute2); ``unavailable()`` says why it cannot run, else None.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from holdfast.errors import ConfigError

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def enter_netns(name: str) -> None:
    """Move the calling process into the named network namespace (``ip netns add`` made it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise ConfigError(f"ip {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (not root, no ``ip``, no permission), or None."""
    if os.geteuid() != 0:
        return "multi-host tests need root to create network namespaces"
    if shutil.which("ip") is None:
        return "multi-host tests need the ip command (the Debian package iproute2)"
    probe = f"hf-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except ConfigError as exc:
        return f"cannot create a network namespace: {exc.message}"
    try:
        _ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    except ConfigError as exc:
        return f"cannot create a veth pair: {exc.message}"
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=30)
    return None


class HostLab:
    """A hub namespace and host namespaces, each host on its own veth link to the hub."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.tag = secrets.token_hex(3)
        self.subnet = 1 + secrets.randbelow(250)
        self.hub = f"hf-{self.tag}-hub"
        self.hosts = list(hosts)
        if len(self.hosts) > 60:
            raise ConfigError("a HostLab has at most 60 hosts (one /30 each in a /24)")
        self._made: list[str] = []

    def ns(self, host: str) -> str:
        """The namespace name of ``host`` (or of the hub, for ``"hub"``)."""
        return self.hub if host == "hub" else f"hf-{self.tag}-{host}"

    def _octet(self, host: str, end: int) -> str:
        return f"10.213.{self.subnet}.{4 * self.hosts.index(host) + end}"

    def hub_address(self, host: str) -> str:
        """The hub's address on ``host``'s link: what ``host`` connects to."""
        return self._octet(host, 1)

    def address(self, host: str) -> str:
        """``host``'s own address."""
        return self._octet(host, 2)

    @property
    def hub_addresses(self) -> list[str]:
        return [self.hub_address(h) for h in self.hosts]

    @property
    def cidr(self) -> str:
        return f"10.213.{self.subnet}.0/24"

    def start(self) -> HostLab:
        try:
            for name in [self.hub, *(self.ns(h) for h in self.hosts)]:
                _ip("netns", "add", name)
                self._made.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
            for i, host in enumerate(self.hosts):
                ours, theirs = f"hf{self.tag}h{i}", f"hf{self.tag}x{i}"
                _ip("link", "add", ours, "type", "veth", "peer", "name", theirs)
                _ip("link", "set", ours, "netns", self.hub)
                _ip("link", "set", theirs, "netns", self.ns(host))
                _ip("-n", self.hub, "addr", "add", f"{self.hub_address(host)}/30", "dev", ours)
                _ip("-n", self.ns(host), "addr", "add", f"{self.address(host)}/30", "dev", theirs)
                _ip("-n", self.hub, "link", "set", ours, "up")
                _ip("-n", self.ns(host), "link", "set", theirs, "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Delete every namespace made (their veth ends go with them)."""
        while self._made:
            subprocess.run(
                ["ip", "netns", "delete", self._made.pop()], capture_output=True, timeout=30
            )

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def popen(
        self, host: str, argv: Sequence[str], env: Mapping[str, str], **kw: Any
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in ``host``'s namespace, in a process group of its own (to kill it
        whole, as a machine dies)."""
        return subprocess.Popen(
            self.command(host, argv), env=dict(env), text=True, start_new_session=True, **kw
        )

    def run(
        self, host: str, argv: Sequence[str], env: Mapping[str, str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in ``host``'s namespace, capturing its output."""
        return subprocess.run(
            self.command(host, argv), env=dict(env), capture_output=True, text=True, timeout=timeout
        )

    def __enter__(self) -> HostLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
