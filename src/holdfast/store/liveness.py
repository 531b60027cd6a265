"""Who is running a piece of work, and whether that process is still alive.

A row that says ``running`` is only true while its process lives. :func:`this_process` names the
current process by host, boot and PID plus the PID's start time, so a PID reused after a crash or
a reboot is not mistaken for the original; :func:`process_alive` answers for a process on this
host. Work owned by another host is judged by its heartbeat instead.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessId:
    """A process, identified across PID reuse and reboots."""

    host: str
    pid: int
    start: str
    """The host's boot id and the PID's start time (clock ticks since boot); "" if unknown."""


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """The start time of ``pid`` from /proc (None when it does not exist or /proc is missing)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    if fields and fields[0] in ("Z", "X"):
        return None  # a zombie has ended: only its exit status waits to be collected
    return fields[19] if len(fields) > 19 else ""


def this_process() -> ProcessId:
    pid = os.getpid()
    ticks = _start_ticks(pid) or ""
    boot = _boot_id()
    return ProcessId(host=socket.gethostname(), pid=pid, start=f"{boot}:{ticks}" if ticks else "")


def process_alive(proc: ProcessId) -> bool | None:
    """True or False for a process on this host; None when it runs elsewhere (cannot tell)."""
    if proc.host != socket.gethostname():
        return None
    boot, _, ticks = proc.start.partition(":")
    if boot and _boot_id() and boot != _boot_id():
        return False  # the host rebooted since
    now = _start_ticks(proc.pid)
    if now is None:  # no such process (or, without /proc, ask the kernel)
        return False if Path("/proc/self").exists() else _pid_exists(proc.pid)
    return not (ticks and now and now != ticks)  # else the PID was reused by another process


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
