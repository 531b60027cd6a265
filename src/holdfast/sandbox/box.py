"""The isolated sandbox: a persistent worker that survives its own crashes by restarting.

:class:`IsolatedSandbox` implements :class:`~holdfast.sandbox.types.Sandbox`. Variables persist
across cells in the worker. After every cell the worker returns a snapshot of its JSON-safe
globals (loaded inputs excluded); when a cell passes its wall-clock deadline, or the worker dies
(``os._exit``, a limit, a forged frame), the host kills the process group and starts a new worker
from that snapshot, re-loading the inputs, and the cell's result says so. If that restart fails the
box is dead and every later call raises :class:`SandboxFatal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import update_wrapper
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from holdfast.errors import InvalidInput
from holdfast.sandbox.errors import SandboxError, SandboxFatal
from holdfast.sandbox.process import BoxDied, BoxProcess, BoxTimeout
from holdfast.sandbox.types import CellError, CellResult, HostFunctionSpec, SandboxPolicy

InputMode = Literal["text", "bytes"]
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _one_at_a_time(
    method: Callable[Concatenate[IsolatedSandbox, _P], Awaitable[_T]],
) -> Callable[Concatenate[IsolatedSandbox, _P], Coroutine[Any, Any, _T]]:
    """Requests to one box go one at a time, so each deadline starts when its request is sent
    (a ``get`` issued during a long cell waits for the cell instead of timing out behind it)."""

    async def run(self: IsolatedSandbox, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        async with self._turn:
            return await method(self, *args, **kwargs)

    update_wrapper(run, method)
    return run


@dataclass(frozen=True)
class SandboxInfo:
    """What isolation a running box actually has."""

    isolation: str
    backend: str
    seccomp: bool
    process_limit: str
    memory_limit: str
    restarts: int
    cpu_limit: str = "RLIMIT_CPU per process"


def _sealed_copy(fd: int) -> int:
    """A memfd holding the bytes of ``fd`` (which it closes), sealed against any change.

    The copy is made here, by the host, because the box's file-size limit (``max_file_mb``)
    bounds every file write of the box, a memfd's included, and an input is not the box's output.
    """
    mem = os.memfd_create("input", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        size = os.fstat(fd).st_size
        done = 0
        while done < size:
            sent = os.sendfile(mem, fd, done, size - done)
            if not sent:
                break  # the file shrank since: what was there is the input
            done += sent
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(mem, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(mem)
        raise
    finally:
        os.close(fd)
    return mem


@dataclass
class _Input:
    name: str
    value: Any = None
    fd: int | None = None
    mode: InputMode = "text"


class IsolatedSandbox:
    """A persistent Python worker in its own namespaces (or a plain process, when asked)."""

    def __init__(
        self, policy: SandboxPolicy | None = None, functions: list[HostFunctionSpec] | None = None
    ) -> None:
        self.policy = policy or SandboxPolicy()
        self._specs: dict[str, HostFunctionSpec] = {}
        self._proc: BoxProcess | None = None
        self._inputs: dict[str, _Input] = {}
        self._snapshot: dict[str, Any] = {}
        self._fatal: str | None = None
        self._needs_restart = False
        self._restarts = 0
        self._lock: asyncio.Lock | None = None
        self._turn = asyncio.Lock()
        self._closed = False
        for spec in functions or []:
            self.register(spec)

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the worker; raises SandboxUnavailable (with a remedy) if isolation is missing."""
        if self._proc is not None:
            return
        self._lock = asyncio.Lock()
        self._proc = await self._spawn()

    async def _spawn(self) -> BoxProcess:
        proc = BoxProcess(self.policy, self._specs)
        try:
            await proc.start()
        except BaseException:
            await proc.close(graceful=False)
            raise
        return proc

    async def shutdown(self) -> None:
        """Stops the worker and frees its workspace, cgroup and input descriptors."""
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.close()
        for item in self._inputs.values():
            if item.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(item.fd)
        self._inputs.clear()

    async def __aenter__(self) -> IsolatedSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def info(self) -> SandboxInfo:
        proc = self._live()
        cg = proc.cgroup
        if cg is not None:
            plimit = f"cgroup v{cg.version} pids.max"
        elif self.policy.isolation == "namespace":
            plimit = "RLIMIT_NPROC in the box's user namespace"
        else:
            plimit = "none (no writable pids cgroup; RLIMIT_NPROC does not bind root)"
        mlimit = "cgroup memory.max" if cg is not None and cg.memory_limited else "RLIMIT_AS"
        return SandboxInfo(
            isolation=self.policy.isolation,
            backend=proc.backend,
            seccomp=bool(proc.status.get("seccomp")),
            process_limit=plimit,
            memory_limit=mlimit if self.policy.memory_mb else "none",
            restarts=self._restarts,
            cpu_limit="cgroup CPU time of the whole box, and RLIMIT_CPU per process"
            if cg is not None and cg.counts_cpu and self.policy.cpu_seconds
            else "RLIMIT_CPU per process",
        )

    def register(self, spec: HostFunctionSpec) -> None:
        """Declares a host function; the box sees a proxy of that name (now, if running)."""
        if not spec.name.isidentifier():
            raise InvalidInput(f"host function name {spec.name!r} is not a Python identifier")
        self._specs[spec.name] = spec
        proc = self._proc
        if proc is not None and proc.dead is None:
            from holdfast.sandbox.hostcalls import param_names

            msg = {"op": "define", "name": spec.name, "params": param_names(spec)}
            with contextlib.suppress(BoxDied, ValueError):
                proc.send_nowait(msg)

    # cells ---------------------------------------------------------------------------------

    @_one_at_a_time
    async def execute(self, code: str, timeout: float | None = None) -> CellResult:
        """Runs one cell. Never hangs: past ``timeout`` the worker is killed and restarted."""
        if not isinstance(code, str):
            raise InvalidInput("code must be a string")
        proc = self._proc
        if proc is None or self._fatal is not None or self._needs_restart or proc.dead is not None:
            proc = await self._ready()
        limit = timeout if timeout is not None else self.policy.cell_timeout_s
        started = time.perf_counter()
        msg = {"op": "exec", "code": code, "echo": self.policy.echo_last_expression}
        msg["snapshot"] = self.policy.snapshot_every_cell
        try:
            reply = await proc.request(msg, limit)
        except BoxTimeout:
            note = await self._recover(proc)
            return CellResult(
                error=CellError(
                    "TimeoutError",
                    f"the cell ran past its {limit:g} s wall-clock limit and was killed; {note}",
                    "",
                ),
                duration_s=time.perf_counter() - started,
                timed_out=True,
                fatal=self._fatal is not None,
            )
        except BoxDied as exc:
            code_ = await asyncio.shield(proc.close(graceful=False))
            note = await self._recover(proc)
            return CellResult(
                error=CellError(
                    "SandboxDied",
                    f"the worker ended during the cell ({exc.reason}; exit status {code_}); {note}",
                    "",
                ),
                duration_s=time.perf_counter() - started,
                fatal=self._fatal is not None,
            )
        except asyncio.CancelledError:
            proc.kill("execute was cancelled")
            self._needs_restart = True
            raise
        if not self.policy.background_processes:
            proc.kill_leftovers()
        spent = proc.cpu_exhausted(recent_ok=0.1)
        if spent is not None:
            proc.kill(spent)  # the next call restarts it
            self._needs_restart = True
        snap = reply.get("snapshot")
        if isinstance(snap, dict):
            self._snapshot = snap
        # the worker keeps head and tail within the limit and adds a marker between them
        limit_out = self.policy.max_output_bytes + _MARKER_ROOM
        out = reply.get("stdout")
        stdout, out_cut = cap_text(out, limit_out) if out else ("", False)
        err_text = reply.get("stderr")
        stderr, err_cut = cap_text(err_text, limit_out) if err_text else ("", False)
        err = reply.get("error")
        error = None
        if err:
            error = CellError(
                cap_name(err["type"]),
                cap_text(err["message"], limit_out)[0],
                cap_text(err["traceback"], limit_out)[0],
            )
        value_repr = reply.get("value_repr")
        duration = reply.get("duration_s")
        return CellResult(
            stdout=stdout,
            stderr=stderr,
            error=error,
            duration_s=max(0.0, float(duration))
            if duration is not None
            else time.perf_counter() - started,
            stdout_truncated=out_cut or bool(reply.get("stdout_truncated")),
            stderr_truncated=err_cut or bool(reply.get("stderr_truncated")),
            value_repr=None if value_repr is None else cap_text(value_repr, limit_out)[0],
        )

    # values and inputs ---------------------------------------------------------------------

    @_one_at_a_time
    async def load(
        self,
        name: str,
        value: Any = None,
        *,
        path: str | Path | None = None,
        mode: InputMode = "text",
    ) -> None:
        """Makes an input available as a variable, once per job.

        With ``value`` (JSON-safe) the value is sent once. With ``path`` nothing of the file goes
        through the protocol: a read-only descriptor is passed to the box, which reads it as
        ``str`` (``mode="text"``); with ``mode="bytes"`` the host first has the kernel copy the
        file into a sealed memfd (no write, no resize), which the box maps read-only (``mmap``)
        and which is kept for the box's restarts.
        """
        _check_name(name)
        if path is not None:
            if mode not in ("text", "bytes"):
                raise InvalidInput("mode must be 'text' or 'bytes'")
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise InvalidInput(f"cannot open input {path}: {exc.strerror}") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise InvalidInput(f"input {path} is not a regular file")
            if mode == "bytes":
                try:
                    fd = await asyncio.to_thread(_sealed_copy, fd)
                except OSError as exc:
                    raise InvalidInput(f"cannot copy input {path}: {exc.strerror}") from None
            item = _Input(name, fd=fd, mode=mode)
        else:
            _check_json(value, name)
            item = _Input(name, value=value)
        old = self._inputs.pop(name, None)
        if old is not None and old.fd is not None:
            os.close(old.fd)
        self._inputs[name] = item
        proc = await self._ready()
        await self._send_input(proc, item)

    async def _send_input(self, proc: BoxProcess, item: _Input) -> None:
        if item.fd is not None:
            msg = {"op": "load_fd", "name": item.name, "mode": item.mode}
            reply = await self._call(proc.request(msg, self._deadline, (item.fd,)))
        else:
            msg = {"op": "load", "name": item.name, "value": item.value}
            reply = await self._call(proc.request(msg, self._deadline))
        _raise_for(reply)

    @_one_at_a_time
    async def get(self, name: str) -> Any:
        """A JSON-safe global of the box."""
        proc = await self._ready()
        reply = await self._call(proc.request({"op": "get", "name": name}, self._deadline))
        _raise_for(reply)
        return reply.get("value")

    @_one_at_a_time
    async def set(self, name: str, value: Any) -> None:
        """Sets a global of the box to a JSON-safe value."""
        _check_name(name)
        _check_json(value, name)
        proc = await self._ready()
        msg = {"op": "set", "name": name, "value": value}
        _raise_for(await self._call(proc.request(msg, self._deadline)))

    @_one_at_a_time
    async def snapshot(self) -> dict[str, Any]:
        """The JSON-safe globals of the box (inputs excluded), to resume on another worker."""
        proc = await self._ready()
        reply = await self._call(proc.request({"op": "snapshot"}, self._deadline))
        _raise_for(reply)
        value = reply.get("value")
        self._snapshot = value if isinstance(value, dict) else {}
        return dict(self._snapshot)

    @_one_at_a_time
    async def restore(self, snapshot: dict[str, Any]) -> None:
        """Sets many globals at once, from a snapshot taken by this or another box."""
        _check_json(snapshot, "snapshot")
        proc = await self._ready()
        msg = {"op": "restore", "value": snapshot}
        _raise_for(await self._call(proc.request(msg, self._deadline)))
        self._snapshot = {**self._snapshot, **snapshot}

    # internals ------------------------------------------------------------------------------

    def _live(self) -> BoxProcess:
        if self._fatal is not None:
            raise SandboxFatal(f"the sandbox is dead: {self._fatal}")
        if self._proc is None:
            raise SandboxError("the sandbox is not started (call start() first)")
        return self._proc

    async def _ready(self) -> BoxProcess:
        proc = self._live()
        if self._needs_restart or proc.dead is not None:
            await self._recover(proc)
            proc = self._live()
        return proc

    @property
    def _deadline(self) -> float:
        return self.policy.request_timeout_s

    async def _call(self, aw: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await aw
        except ValueError as exc:  # the request itself could not be encoded (over the cap)
            raise SandboxError(str(exc)) from None
        except BoxDied as exc:
            proc = self._proc
            if proc is not None:
                await self._recover(proc)
            what = "did not answer in time" if isinstance(exc, BoxTimeout) else "died"
            raise SandboxError(
                f"the worker {what} during the request ({exc.reason}); {self._note()}"
            ) from None
        return result

    def _note(self) -> str:
        if self._fatal is not None:
            return f"it could not be restarted: {self._fatal}"
        return "it was restarted from the last snapshot"

    async def _recover(self, dead: BoxProcess) -> str:
        """Replaces a dead worker with a new one restored from the last snapshot."""
        assert self._lock is not None
        async with self._lock:
            if self._proc is not dead or self._closed:
                return self._note()
            self._needs_restart = False
            await dead.close(graceful=False)
            try:
                proc = await self._spawn()
                for item in self._inputs.values():
                    await self._send_input(proc, item)
                if self._snapshot:
                    msg = {"op": "restore", "value": self._snapshot}
                    _raise_for(await proc.request(msg, self._deadline))
            except Exception as exc:
                self._fatal = f"restart failed: {exc}"
                self._proc = None
                return self._note()
            self._proc = proc
            self._restarts += 1
            kept = len(self._snapshot)
            return (
                f"the worker was restarted from the last snapshot ({kept} JSON-safe variables "
                "and the inputs restored; other values are lost)"
            )


MAX_TYPE_CHARS = 200
_MARKER_ROOM = 200


def cap_text(text: Any, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` UTF-8 bytes (head and tail kept), lone surrogates
    replaced; and whether it was cut. Applied on the host to everything a box returns."""
    if not isinstance(text, str):
        text = str(text)
    if len(text) <= limit and text.isascii():
        return text, False
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    marker = f"\n...[{len(data) - limit} bytes omitted]...\n"
    half = max((limit - len(marker) - 8) // 2, 1)
    marker = f"\n...[{len(data) - 2 * half} bytes omitted]...\n"
    head = data[:half].decode("utf-8", "replace")
    tail = data[-half:].decode("utf-8", "replace")
    return head + marker + tail, True


def cap_name(name: Any) -> str:
    """An exception class name from a box, cut to ``MAX_TYPE_CHARS`` characters."""
    text = cap_text(name, MAX_TYPE_CHARS * 4)[0]
    return text if len(text) <= MAX_TYPE_CHARS else text[: MAX_TYPE_CHARS - 3] + "..."


def _raise_for(reply: dict[str, Any]) -> None:
    if reply.get("ok"):
        return
    err = reply.get("error") or {}
    kind = cap_name(err.get("type", "Error"))
    raise SandboxError(f"{kind}: {cap_text(err.get('message', 'request failed'), 4000)[0]}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInput(f"{name!r} is not a valid Python variable name")


def _check_json(value: Any, name: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the value for {name!r} is not JSON-safe: {exc}") from None
