"""Per-box control groups: a process-count and (on cgroup v2) a memory ceiling.

``RLIMIT_NPROC`` counts every process of a user across the host and is not enforced at all for
root, so a box's process count is held by a ``pids`` cgroup when one can be created: under our own
cgroup on the unified (v2) hierarchy when the ``pids``/``memory`` controllers are delegated there,
else on a v1 ``pids`` hierarchy. When neither can be created the box runs without one and
:func:`cgroup_status` says so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class BoxCgroup:
    """A cgroup directory made for one box; the host moves the box's worker in (:meth:`move`)."""

    path: Path
    version: int
    memory_limited: bool
    # v1 only: the box's group on the cpuacct hierarchy, which counts its CPU time
    cpuacct: Path | None = None

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    @functools.cached_property
    def procs_name(self) -> str:
        """:attr:`procs` as a string, made once: it is opened after every cell on v1."""
        return str(self.procs)

    def move(self, pid: int) -> None:
        """Moves process ``pid`` (all its threads) into the group, and on v1 into its cpuacct
        group; the processes it starts afterwards are born there. Raises OSError."""
        for path in [self.procs] + ([self.cpuacct / "cgroup.procs"] if self.cpuacct else []):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, str(pid).encode())
            finally:
                os.close(fd)

    @property
    def counts_cpu(self) -> bool:
        return self.version == 2 or self.cpuacct is not None

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process of the group together, or None if not counted."""
        try:
            if self.version == 2:
                for line in (self.path / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            if self.cpuacct is not None:
                return int((self.cpuacct / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None
        return None

    def pids(self, fd: int | None = None) -> set[int]:
        """Host pids of every process in the group (an empty set when it cannot be read).

        With ``fd``, an open descriptor of :attr:`procs` on cgroup v2, the file is read again
        from its start without opening it (v2 regenerates it on every read at offset 0; v1 keeps
        the list an open file first read, so there a fresh open is needed to see new processes).
        """
        try:
            if fd is not None:
                return {int(p) for p in os.pread(fd, 1 << 16, 0).split()}
            fd = os.open(self.procs_name, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
            return {int(p) for p in data.split()}
        except (OSError, ValueError):
            return set()

    def kill_all(self) -> None:
        """Kills every process in the group (a box that escaped its process group included)."""
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
            return
        for _ in range(3):
            try:
                pids = [int(p) for p in self.procs.read_text().split()]
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Removes the (empty) groups; False while processes are still leaving them."""
        done = True
        for path in (self.path, self.cpuacct):
            if path is None:
                continue
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


def sweep_stale(parent: Path, max_age_s: float = 600.0) -> None:
    """Removes empty box groups left behind by a host process that died before cleaning up."""
    now = time.time()
    for path in parent.glob("holdfast-box-*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > max_age_s and not (path / "cgroup.procs").read_text():
                path.rmdir()


def _own_path(controller: str | None) -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if controller is None and parts[0] == "0":
            return parts[2]
        if controller is not None and controller in parts[1].split(","):
            return parts[2]
    return None


def _v2_parent() -> Path | None:
    for mount in (_ROOT, _ROOT / "unified"):
        controllers = mount / "cgroup.controllers"
        if not controllers.exists():
            continue
        own = _own_path(None)
        if own is None:
            return None
        parent = mount / own.lstrip("/")
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        if "pids" in enabled:
            return parent
    return None


def _v1_parent() -> Path | None:
    mount = _ROOT / "pids"
    own = _own_path("pids")
    if own is None or not (mount / "cgroup.procs").exists():
        return None
    return mount / own.lstrip("/")


def _v1_cpuacct(name: str) -> Path | None:
    """A group of the box's on the v1 cpuacct hierarchy (to count its CPU time), or None."""
    for mount in (_ROOT / "cpuacct", _ROOT / "cpu,cpuacct"):
        own = _own_path("cpuacct")
        if own is None or not (mount / "cpuacct.usage").exists():
            continue
        parent = mount / own.lstrip("/")
        sweep_stale(parent)
        path = parent / name
        try:
            path.mkdir()
        except OSError:
            return None
        return path
    return None


def create_box_cgroup(max_processes: int, memory_bytes: int | None) -> BoxCgroup | None:
    """Makes a cgroup for one box with ``pids.max`` (and ``memory.max`` on v2), or None."""
    name = f"holdfast-box-{secrets.token_hex(6)}"
    parent = _v2_parent()
    if parent is not None:
        sweep_stale(parent)
        path = parent / name
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_processes))
            limited = False
            if memory_bytes is not None and (path / "memory.max").exists():
                (path / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (path / "memory.swap.max").write_text("0")
                limited = True
            return BoxCgroup(path, 2, limited)
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
    parent = _v1_parent()
    if parent is not None:
        sweep_stale(parent)
        path = parent / name
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_processes))
            return BoxCgroup(path, 1, False, _v1_cpuacct(name))
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
    return None


def cgroup_status() -> tuple[bool, str]:
    """Whether a per-box pids cgroup can be made here, and how."""
    probe = create_box_cgroup(8, None)
    if probe is None:
        return False, (
            "no writable pids cgroup: the process count falls back to RLIMIT_NPROC, which root "
            "ignores; run as a non-root user or delegate a cgroup v2 subtree with pids enabled"
        )
    probe.remove()
    memory = "memory.max and pids.max" if probe.version == 2 else "pids.max (memory by RLIMIT_AS)"
    cpu = "; CPU time of the whole box counted" if probe.counts_cpu else ""
    return True, f"cgroup v{probe.version}: {memory}{cpu}"
