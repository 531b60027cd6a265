"""The sandbox contract: a persistent, isolated Python worker per job.

The RLM engine and the fakes in ``holdfast.testing`` code against :class:`Sandbox`; the
implementations (namespace isolation through bubblewrap or unshare, and the weaker ``process``
level) live beside this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Isolation = Literal["namespace", "process"]
# How the namespace level is built: bubblewrap when installed, else util-linux unshare as root
# ("auto"), or one of them by name (a test of the fallback on a machine that has bubblewrap).
Backend = Literal["auto", "bwrap", "unshare"]

# A host function: called with the JSON-decoded positional and keyword arguments sent from the
# box; may be sync or async; must return a JSON-safe value (or raise, which the box sees as an
# exception of type HostCallError).
HostFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class SandboxPolicy:
    """How a box is isolated and limited. Sizes in MiB, times in seconds."""

    isolation: Isolation = "namespace"
    cell_timeout_s: float = 60.0
    cpu_seconds: int | None = 600
    memory_mb: int | None = 2048
    max_processes: int = 64
    max_file_mb: int = 512
    max_open_files: int = 256
    workspace_mb: int = 1024
    max_output_bytes: int = 64_000
    max_message_bytes: int = 16 * 1024 * 1024
    # Deadline of every other request to the box (get, set, snapshot, restore, load, start): a
    # worker that does not answer in time is killed and restarted.
    request_timeout_s: float = 30.0
    # What the host holds for one box at once, counted as decoded bytes (estimated from the raw
    # frame before it is parsed): the frame being decoded plus every host call's arguments in
    # flight. A host call over it is refused and the box sees why.
    max_host_bytes: int = 256 * 1024 * 1024
    max_depth: int = 100
    # Size of /dev/shm in the box (0: no /dev/shm at all); like /workspace and /tmp, a tmpfs.
    shm_mb: int = 16
    # Processes a cell starts are killed when the cell returns, unless this is True.
    background_processes: bool = False
    backend: Backend = "auto"
    seccomp: bool = True
    echo_last_expression: bool = True
    # After each cell the box returns its JSON-safe globals (inputs excluded), the state a restart
    # after a timeout or crash resumes from. Turn off when globals are large and restarts rare.
    snapshot_every_cell: bool = True
    # How long (microseconds) each side polls the socket without sleeping before it blocks, when
    # it waits for an answer that usually comes soon: a reply, a host call's result, the next
    # request. It saves two thread wake-ups per round trip for at most this much CPU per message
    # (counted in the box's CPU budget on the box's side). 0 turns it off; at most 10,000.
    spin_us: int = 100


@dataclass(frozen=True)
class CellError:
    """An exception raised by user code in a cell (or by the box while running it)."""

    type: str
    message: str
    traceback: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True)
class CellResult:
    """What one cell printed and raised, how long it took, and whether output was cut."""

    stdout: str = ""
    stderr: str = ""
    error: CellError | None = None
    duration_s: float = 0.0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    value_repr: str | None = None
    timed_out: bool = False
    fatal: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and not self.fatal

    def to_dict(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error.to_dict() if self.error else None,
            "duration_s": self.duration_s,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "value_repr": self.value_repr,
            "timed_out": self.timed_out,
            "fatal": self.fatal,
        }


@dataclass(frozen=True)
class HostFunctionSpec:
    """A host function the box may call, by name, with a JSON schema for its arguments."""

    name: str
    fn: HostFunction
    schema: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@runtime_checkable
class Sandbox(Protocol):
    """A persistent Python worker. Variables persist across cells until ``shutdown``."""

    policy: SandboxPolicy

    async def start(self) -> None: ...

    async def execute(self, code: str, timeout: float | None = None) -> CellResult: ...

    async def load(
        self, name: str, value: Any = None, *, path: str | Path | None = None
    ) -> None: ...

    async def get(self, name: str) -> Any: ...

    async def set(self, name: str, value: Any) -> None: ...

    async def snapshot(self) -> dict[str, Any]: ...

    def register(self, spec: HostFunctionSpec) -> None: ...

    async def shutdown(self) -> None: ...
