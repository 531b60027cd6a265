"""One incarnation of a box: the OS process, its protocol socket and the frames in flight.

:class:`BoxProcess` knows nothing of snapshots or restarts (that is :mod:`holdfast.sandbox.box`):
it starts the worker, sends requests and matches replies by id, serves host calls concurrently as
asyncio tasks, and on anything untrusted going wrong (EOF, a malformed or oversized frame, a reply
to an id never asked) kills the process and fails every waiter with :class:`BoxDied`.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

from holdfast.sandbox import launch
from holdfast.sandbox.cgroup import BoxCgroup, create_box_cgroup
from holdfast.sandbox.errors import SandboxUnavailable
from holdfast.sandbox.hostcalls import HostCallRefused, param_names, run_host_call
from holdfast.sandbox.protocol import (
    FrameReader,
    ProtocolViolation,
    check_box_message,
    encode_frame,
)
from holdfast.sandbox.seccomp import compiled_filter
from holdfast.sandbox.types import HostFunctionSpec, SandboxPolicy

START_TIMEOUT_S = 30.0
MAX_CONCURRENT_CALLS = 64
# Each thread in a box waits for its call, so only forged frames can exceed this.
MAX_CALLS_IN_FLIGHT = 1024


class BoxDied(Exception):
    """The box process ended or broke the protocol; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BoxProcess:
    """A running worker process and the host end of its protocol socket."""

    def __init__(self, policy: SandboxPolicy, specs: dict[str, HostFunctionSpec]) -> None:
        self.policy = policy
        self.specs = specs
        self.popen: subprocess.Popen[bytes] | None = None
        self.cgroup: BoxCgroup | None = None
        self.status: dict[str, Any] = {}
        self.dead: str | None = None
        self.host_dir: str | None = None
        self.backend = "process"
        self._sock: socket.socket | None = None
        self._reader = FrameReader(policy.max_message_bytes)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._next_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._calls = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        self._wlock = asyncio.Lock()
        self._stderr: Any = None
        self.on_death: Callable[[str], None] | None = None

    async def start(self) -> None:
        policy = self.policy
        program = compiled_filter() if policy.seccomp else None
        memory = policy.memory_mb * 1024 * 1024 if policy.memory_mb else None
        self.cgroup = await asyncio.to_thread(create_box_cgroup, policy.max_processes, memory)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        filter_fd = None
        fds: tuple[int, ...] = (child.fileno(),)
        if program is not None and policy.isolation == "namespace":
            filter_fd = _pipe_with(program)
        try:
            spec = launch.build_launch(
                policy, child.fileno(), str(self.cgroup.procs) if self.cgroup else None, filter_fd
            )
            self.backend = spec.backend
            if spec.seccomp_in_launcher and filter_fd is not None:
                fds += (filter_fd,)
                program = None  # bubblewrap installs it before the worker starts
            workspace = spec.workspace
            if workspace is None:
                self.host_dir = tempfile.mkdtemp(prefix="holdfast-box-")
                workspace = self.host_dir
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
            self.popen = launch.spawn(spec, fds, self._stderr.fileno())
        except BaseException:
            parent.close()
            self._cleanup_files()
            raise
        finally:
            child.close()
            if filter_fd is not None:
                os.close(filter_fd)
        parent.setblocking(False)
        self._sock = parent
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._spawn_task(self._read_loop())
        # In a box's own user namespace RLIMIT_NPROC counts only that box's processes; at the
        # process level it would count every process of the host user, so it is left to the cgroup.
        nproc = policy.max_processes if policy.isolation == "namespace" else None
        config = {
            "cpu_seconds": policy.cpu_seconds,
            "memory_bytes": None if self.cgroup and self.cgroup.memory_limited else memory,
            "max_processes": nproc,
            "max_file_bytes": policy.max_file_mb * 1024 * 1024,
            "max_open_files": policy.max_open_files,
            "max_output_bytes": policy.max_output_bytes,
            "max_message_bytes": policy.max_message_bytes,
            "seccomp": base64.b64encode(program).decode() if program else None,
            "signatures": [[s.name, param_names(s)] for s in self.specs.values()],
            "workspace": workspace,
        }
        code = launch.worker_code()
        await loop.sock_sendall(parent, len(code).to_bytes(4, "big") + code)
        await self.send({"op": "init", "config": config})
        try:
            ready = await asyncio.wait_for(self._ready, START_TIMEOUT_S)
        except (TimeoutError, BoxDied) as exc:
            self.kill(f"the box did not start: {exc}")
            raise BoxDied(f"the box did not start: {self.stderr_tail() or exc}") from None
        if not ready.get("ok"):
            self.kill("start failed")
            raise BoxDied(f"the box could not apply its limits: {ready.get('error')}")
        status = ready.get("status")
        self.status = status if isinstance(status, dict) else {}
        if policy.seccomp and self.status.get("seccomp") is not True:
            self.kill("seccomp is not in force")
            raise SandboxUnavailable(
                "the box started without its seccomp filter in force",
                remedy="check 'holdfast sandbox check', or ask for SandboxPolicy(seccomp=False)",
            )

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        if self.dead is not None or self._sock is None:
            raise BoxDied(self.dead or "not started")
        data = encode_frame(message, self.policy.max_message_bytes)
        loop = asyncio.get_running_loop()
        async with self._wlock:
            try:
                if fds:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    while True:
                        try:
                            sent = self._sock.sendmsg([data], anc)
                            break
                        except BlockingIOError:
                            await asyncio.sleep(0.001)
                    data = data[sent:]
                if data:
                    await loop.sock_sendall(self._sock, data)
            except OSError as exc:
                self.kill(f"the protocol socket failed: {exc}")
                raise BoxDied(self.dead or str(exc)) from None

    async def request(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> dict[str, Any]:
        """Sends one request and waits for the reply with the same id."""
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.send({**message, "id": rid}, fds)
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        reason = "the worker exited"
        try:
            while True:
                data = await loop.sock_recv(self._sock, 1 << 20)
                if not data:
                    break
                for raw in self._reader.feed(data):
                    self._dispatch(check_box_message(raw))
        except ProtocolViolation as exc:
            reason = f"protocol violation from the box: {exc}"
        except OSError as exc:
            reason = f"protocol socket error: {exc}"
        except asyncio.CancelledError:
            reason = "shut down"
        self.kill(reason, signal_box=reason != "the worker exited")

    def _dispatch(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "ready":
            if self._ready is None or self._ready.done():
                raise ProtocolViolation("unexpected ready message")
            self._ready.set_result(msg)
        elif op == "result":
            fut = self._pending.get(msg["id"])
            if fut is None:
                raise ProtocolViolation(f"reply to unknown request id {msg['id']}")
            if not fut.done():
                fut.set_result(msg)
        elif op == "call":
            if len(self._tasks) > MAX_CALLS_IN_FLIGHT:
                raise ProtocolViolation(f"more than {MAX_CALLS_IN_FLIGHT} host calls in flight")
            self._spawn_task(self._serve_call(msg))

    async def _serve_call(self, msg: dict[str, Any]) -> None:
        async with self._calls:
            reply: dict[str, Any] = {"op": "call_result", "call": msg["call"]}
            try:
                value = await run_host_call(self.specs, msg["name"], msg["args"], msg["kwargs"])
                reply.update(ok=True, value=value)
            except HostCallRefused as exc:
                reply.update(ok=False, error=str(exc))
            try:
                frame_ok = encode_frame(reply, self.policy.max_message_bytes)
                del frame_ok
            except ValueError as exc:
                reply = {"op": "call_result", "call": msg["call"], "ok": False, "error": str(exc)}
            with contextlib.suppress(BoxDied):
                await self.send(reply)

    def kill(self, reason: str, signal_box: bool = True) -> None:
        """Kills the box's whole process group (and cgroup) and fails every waiter. Idempotent.

        With ``signal_box=False`` (the worker already closed its end) the process is left to exit
        by itself so that :meth:`close` can report its real exit status.
        """
        if self.dead is None:
            self.dead = reason
        if signal_box:
            if self.popen is not None and self.popen.returncode is None:
                with contextlib.suppress(OSError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
            if self.cgroup is not None:
                self.cgroup.kill_all()
        err = BoxDied(self.dead)
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(err)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(err)
        current = asyncio.current_task() if _loop_running() else None
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.on_death is not None:
            callback, self.on_death = self.on_death, None
            callback(self.dead)

    async def close(self, graceful: bool = True) -> int | None:
        """Stops the process (politely first when ``graceful``), reaps it, frees its resources."""
        if graceful and self.dead is None:
            with contextlib.suppress(BoxDied, ValueError):
                await self.send({"op": "shutdown", "id": 0})
                await asyncio.wait_for(self._wait_exit(), 1.0)
        if self.dead is not None:
            await self._wait_exit(0.2)
        self.kill("shut down")
        code = await self._wait_exit()
        for task in list(self._tasks):
            task.cancel()
        if self._sock is not None:
            self._sock.close()
        if self.cgroup is not None:
            for _ in range(100):
                self.cgroup.kill_all()
                if self.cgroup.remove():
                    break
                await asyncio.sleep(0.01)
        self._cleanup_files()
        return code

    async def _wait_exit(self, timeout: float = 2.0) -> int | None:
        if self.popen is None:
            return None
        for _ in range(int(timeout / 0.002)):
            code = self.popen.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.002)
        return self.popen.poll()

    def stderr_tail(self, limit: int = 2000) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            data: bytes = self._stderr.read()
        except (OSError, ValueError):
            return ""
        return data[-limit:].decode("utf-8", "replace").strip()

    def _cleanup_files(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.host_dir is not None:
            import shutil

            shutil.rmtree(self.host_dir, ignore_errors=True)
            self.host_dir = None


def _pipe_with(data: bytes) -> int:
    """A pipe's read end that yields ``data`` then EOF (for bubblewrap's ``--seccomp``)."""
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return r


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
