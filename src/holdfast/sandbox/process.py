"""One incarnation of a box: the OS processes, the protocol socket and the frames in flight.

:class:`BoxProcess` knows nothing of snapshots or restarts (that is :mod:`holdfast.sandbox.box`):
it starts the worker, sends requests and matches replies, serves host calls, and on anything
untrusted going wrong kills every process of the box and fails every waiter with
:class:`BoxDied`. Nothing the box does can make the host wait without a deadline, hold more than
the box's byte budget, or lose its reader:

* every request carries an unguessable id and a deadline; a reply must match an outstanding id
  (once), and a box that misses a deadline is killed (:class:`BoxTimeout`);
* frames are size-capped before buffering, their decoded size is bounded from the raw bytes before
  parsing and counted against ``max_host_bytes`` together with the host calls in flight, and
  decoding is strict; any failure at all kills the box;
* the host stops reading from a box that stops reading its replies (flow control), so replies
  cannot pile up in host memory;
* :meth:`close` always kills and reaps every process of the box and closes every host descriptor,
  whichever step fails.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import errno
import inspect
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from holdfast.sandbox import launch
from holdfast.sandbox.cgroup import BoxCgroup, create_box_cgroup
from holdfast.sandbox.errors import SandboxUnavailable
from holdfast.sandbox.hostcalls import HostCallRefused, check_call, param_names
from holdfast.sandbox.protocol import (
    CALL_HEADER,
    COST_PER_BYTE_MAX,
    FrameReader,
    ProtocolViolation,
    check_box_message,
    decode_frame,
    decoded_cost,
    encode_frame,
)
from holdfast.sandbox.seccomp import compiled_filter
from holdfast.sandbox.types import HostFunctionSpec, SandboxPolicy

START_TIMEOUT_S = 30.0
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
MAX_CONCURRENT_CALLS = 64
# Each thread in a box waits for its call, so only forged frames can exceed this.
MAX_CALLS_IN_FLIGHT = 1024
_STDERR_KEEP = 4000
# Low-latency wait: while a request is the only one outstanding among this thread's boxes, the
# host waits for its box's socket directly, first polling it without sleeping for the policy's
# spin_us, then blocked in select, for up to _QUIET_S of silence and _BURST_S in all, before it
# goes back to the event loop: a quick reply (or a host call in a burst of them) costs no
# event-loop round trip and, within the spin, no thread wake-up.
_QUIET_S = 0.0003
_BURST_S = 0.002
_active: dict[int, int] = {}
_CALL_PREFIX = b'{"op":"call"'
_CPU_CHECK_S = 0.5


class BoxDied(Exception):
    """The box process ended or broke the protocol; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BoxTimeout(BoxDied):
    """The box did not answer a request within its deadline and was killed."""


def _move_worker(cgroup: BoxCgroup, pid: int) -> None:
    """Moves the worker ``pid`` into ``cgroup``, sure that the pid still named the worker: a
    descriptor taken first stays bound to that process, and a process alive after the move
    was never reaped, so its pid could not have been reused meanwhile."""
    handle = os.pidfd_open(pid)
    try:
        cgroup.move(pid)
        signal.pidfd_send_signal(handle, 0)
    finally:
        os.close(handle)


class _Wire(asyncio.Protocol):
    def __init__(self, box: BoxProcess) -> None:
        self.box = box

    def data_received(self, data: bytes) -> None:
        self.box._on_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.box._on_lost(exc)

    def pause_writing(self) -> None:
        self.box._flow(paused=True)

    def resume_writing(self) -> None:
        self.box._flow(paused=False)


class BoxProcess:
    """A running worker, the host end of its protocol socket, and everything it holds."""

    def __init__(self, policy: SandboxPolicy, specs: dict[str, HostFunctionSpec]) -> None:
        self.policy = policy
        self.specs = specs
        self._spin_s = max(0, min(int(policy.spin_us), 10_000)) / 1e6
        self._rbuf = bytearray(1 << 16)
        # the box cgroup's process list, read after every cell (kept open on cgroup v2 only)
        self._procs_fd: int | None = None
        self._fds_closed = False
        self.popen: subprocess.Popen[bytes] | None = None
        self.cgroup: BoxCgroup | None = None
        self.status: dict[str, Any] = {}
        self.dead: str | None = None
        self.host_dir: str | None = None
        self.backend = "process"
        self.infrastructure: frozenset[int] = frozenset()
        self._sock: socket.socket | None = None
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader(policy.max_message_bytes, policy.max_depth)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids: list[int] = []
        self._abandoned: set[int] = set()
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._calls_in_flight: dict[int, int] = {}
        self._held = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._calls = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        self._stderr_fd: int | None = None
        self._stderr_buf = bytearray()
        self.on_death: Callable[[str], None] | None = None
        self._cpu_timer: asyncio.TimerHandle | None = None
        self._cpu_checked = 0.0

    # start -------------------------------------------------------------------------------------

    async def start(self) -> None:
        policy = self.policy
        program = compiled_filter() if policy.seccomp else None
        memory = policy.memory_mb * 1024 * 1024 if policy.memory_mb else None
        self.cgroup = await asyncio.to_thread(create_box_cgroup, policy.max_processes, memory)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The box's first byte then carries its sender's pid, as the kernel saw it (_hello).
        parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        filter_fd = None
        err_r, err_w = os.pipe()
        os.set_blocking(err_r, False)
        self._stderr_fd = err_r
        fds: tuple[int, ...] = (child.fileno(),)
        if program is not None and policy.isolation == "namespace":
            filter_fd = _pipe_with(program)
        try:
            spec = launch.build_launch(policy, child.fileno(), filter_fd)
            self.backend = spec.backend
            if spec.seccomp_in_launcher and filter_fd is not None:
                fds += (filter_fd,)
                program = None  # bubblewrap installs it before the worker starts
            workspace = spec.workspace
            if workspace is None:
                self.host_dir = tempfile.mkdtemp(prefix="holdfast-box-")
                workspace = self.host_dir
            self.popen = launch.spawn(spec, fds, err_w)
        except BaseException:
            parent.close()
            self._close_fds()
            self._cleanup_files()
            raise
        finally:
            child.close()
            os.close(err_w)
            if filter_fd is not None:
                os.close(filter_fd)
        parent.setblocking(False)
        self._sock = parent
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
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
            "max_host_bytes": policy.max_host_bytes,
            "max_depth": policy.max_depth,
            "spin_s": self._spin_s,
            "seccomp": base64.b64encode(program).decode() if program else None,
            "signatures": [[s.name, param_names(s)] for s in self.specs.values()],
            "workspace": workspace,
        }
        code = launch.worker_code()
        init = encode_frame({"op": "init", "config": config}, policy.max_message_bytes)
        timer = loop.call_later(START_TIMEOUT_S, self._start_deadline)
        moved: asyncio.Future[None] | None = None
        try:
            # The worker and its configuration go out at once; the box reads them after its
            # hello, whose sender the host moves into the box's cgroups while the worker loads.
            try:
                # about 50 KB, which the socket's buffer takes at once; bounded all the same
                await asyncio.wait_for(
                    loop.sock_sendall(parent, len(code).to_bytes(4, "big") + code + init),
                    START_TIMEOUT_S,
                )
            except (OSError, TimeoutError) as exc:
                raise BoxDied(f"the box did not take its worker: {exc!r}") from None
            pid = await self._hello(parent)
            parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
            if self.cgroup is not None:
                moved = asyncio.ensure_future(asyncio.to_thread(_move_worker, self.cgroup, pid))
            transport, _ = await loop.create_unix_connection(lambda: _Wire(self), sock=parent)
            self._transport = transport
            # Replies wait in host memory only up to this much; past it the host stops reading.
            transport.set_write_buffer_limits(high=max(2 * policy.max_message_bytes, 1 << 20))
            ready = await self._ready
            if moved is not None:
                # Nothing but the worker's own start-up has run: the host sends no request
                # before this returns, so user code only ever runs inside the cgroups.
                await moved
        except OSError as exc:
            self.kill(f"the box could not join its cgroup: {exc}")
            self._drop_ready()
            await self._wait_exit(0.5)
            if exc.errno == errno.ESRCH:
                raise BoxDied(f"the box did not start: {self.stderr_tail() or exc}") from None
            raise SandboxUnavailable(
                f"the box could not be moved into its cgroup: {exc}",
                remedy="check 'holdfast sandbox check'; the box's process and cgroup limits "
                "need a writable cgroup.procs",
            ) from None
        except BoxDied as exc:
            self.kill(f"the box did not start: {exc.reason}")
            self._drop_ready()
            await self._wait_exit(0.5)
            raise BoxDied(f"the box did not start: {self.stderr_tail() or exc.reason}") from None
        finally:
            timer.cancel()
            if moved is not None and not moved.done():
                moved.cancel()
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
        # Every process alive now belongs to the launcher, the box's init or the worker; anything
        # later was started by user code.
        self.infrastructure = frozenset(self.processes())
        if policy.cpu_seconds and self.cgroup is not None and self.cgroup.counts_cpu:
            self._cpu_timer = loop.call_later(_CPU_CHECK_S, self._watch_cpu)

    def _drop_ready(self) -> None:
        """Marks a failed start's ready future as seen (its error has been raised instead)."""
        if self._ready is not None and self._ready.done() and not self._ready.cancelled():
            self._ready.exception()

    async def _hello(self, sock: socket.socket) -> int:
        """The host pid of the box's worker: the kernel-attested sender of its first byte.

        Bounded by the start deadline (it fails :attr:`_ready`, which this also waits on).
        """
        loop = asyncio.get_running_loop()
        got: asyncio.Future[tuple[bytes, list[tuple[int, int, bytes]]]] = loop.create_future()

        def readable() -> None:
            if got.done():
                return
            try:
                data, anc, _flags, _addr = sock.recvmsg(1, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                got.set_exception(BoxDied(f"the box's socket failed: {exc}"))
                return
            got.set_result((data, anc))

        ready: asyncio.Future[Any] | None = self._ready
        assert ready is not None
        loop.add_reader(sock.fileno(), readable)
        try:
            await asyncio.wait([got, ready], return_when=asyncio.FIRST_COMPLETED)
            if not got.done():
                ready.result()  # the start deadline (or a death) as its exception
                raise BoxDied("no hello from the box")
            data, anc = got.result()
        finally:
            loop.remove_reader(sock.fileno())
            if not got.done():
                got.cancel()
        if not data:
            raise BoxDied("the box closed its socket before it started")
        if data != b"\0":
            raise BoxDied("the box did not start with its hello")
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = _UCRED.unpack_from(payload)
                if pid > 0:
                    return int(pid)
        raise BoxDied("the box's hello carried no process id")

    def cpu_exhausted(self, recent_ok: float = 0.0) -> str | None:
        """Why the box must die for CPU (its processes together, by its cgroup), or None.

        With ``recent_ok``, a check made less than that many seconds ago stands (the watchdog
        checks every half second anyway).
        """
        limit = self.policy.cpu_seconds
        if not limit or self.cgroup is None:
            return None
        now = time.monotonic()
        if recent_ok and now - self._cpu_checked < recent_ok:
            return None
        self._cpu_checked = now
        used = self.cgroup.cpu_seconds()
        if used is None or used <= limit:
            return None
        return (
            f"the box used {used:.1f} s of CPU, its processes together, over its {limit} s budget"
        )

    def _watch_cpu(self) -> None:
        if self.dead is not None:
            return
        reason = self.cpu_exhausted()
        if reason is not None:
            self.kill(reason)
            return
        self._cpu_timer = asyncio.get_running_loop().call_later(_CPU_CHECK_S, self._watch_cpu)

    def _start_deadline(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(BoxTimeout(f"no answer within {START_TIMEOUT_S:g} s"))

    # sending -----------------------------------------------------------------------------------

    def send_nowait(self, message: dict[str, Any]) -> None:
        """Queues one message that expects no reply (``define``), in order with requests."""
        self._write(message)

    def _write(self, message: dict[str, Any]) -> None:
        if self.dead is not None or self._transport is None:
            raise BoxDied(self.dead or "not started")
        self._transport.write(encode_frame(message, self.policy.max_message_bytes))

    async def _write_with_fds(self, data: bytes, fds: tuple[int, ...]) -> None:
        """Writes a frame with descriptors attached (SCM_RIGHTS), after what is queued."""
        assert self._transport is not None and self._sock is not None
        while self._transport.get_write_buffer_size() and self.dead is None:
            await asyncio.sleep(0.001)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        while self.dead is None:
            try:
                sent = self._sock.sendmsg([data], anc)
                break
            except BlockingIOError:
                await asyncio.sleep(0.001)
            except OSError as exc:
                self.kill(f"the protocol socket failed: {exc}")
        else:
            raise BoxDied(self.dead or "closed")
        if sent < len(data):
            self._transport.write(data[sent:])

    async def request(
        self, message: dict[str, Any], timeout: float, fds: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """Sends one request and waits for its reply; past ``timeout`` the box is killed.

        Raises :class:`BoxTimeout` when the deadline passes, :class:`BoxDied` when the box ends or
        breaks the protocol, ValueError when the request cannot be encoded.
        """
        if self.dead is not None or self._transport is None:
            raise BoxDied(self.dead or "not started")
        loop = asyncio.get_running_loop()
        rid = self._request_id()
        while rid in self._pending or rid in self._abandoned:
            rid = self._request_id()
        data = encode_frame({**message, "id": rid}, self.policy.max_message_bytes)
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[rid] = fut
        started = loop.time()
        timer: asyncio.TimerHandle | None = None
        key = threading.get_ident()
        _active[key] = _active.get(key, 0) + 1
        try:
            if fds:
                await self._write_with_fds(data, fds)
            else:
                self._transport.write(data)
            # The first direct wait never yields to the loop and lasts at most _BURST_S, so the
            # deadline's timer is armed only when the reply did not come within it (most do).
            again = not fut.done() and _active[key] == 1 and self._wait_directly(fut)
            if fut.done():
                return fut.result()
            left = max(0.0, timeout - (loop.time() - started))
            timer = loop.call_later(left, self._deadline, rid, str(message.get("op")), timeout)
            while again and not fut.done() and _active[key] == 1:
                await asyncio.sleep(0)  # a burst of frames: let the loop breathe, then again
                again = not fut.done() and self._wait_directly(fut)
            return await fut
        except asyncio.CancelledError:
            self._abandoned.add(rid)
            raise
        finally:
            _active[key] -= 1
            if timer is not None:
                timer.cancel()
            self._pending.pop(rid, None)

    def _request_id(self) -> int:
        """A fresh random 52-bit request id, from a pool filled 64 at a time (one system call
        per 64 requests instead of one each)."""
        if not self._ids:
            self._ids = [v >> 12 for v in struct.unpack("64Q", os.urandom(512))]
        return self._ids.pop()

    def _wait_directly(self, fut: asyncio.Future[dict[str, Any]]) -> bool:
        """Reads the box's socket directly until ``fut`` is done, a quiet spell or the burst
        ends; returns whether it should be tried again (frames kept coming)."""
        sock = self._sock
        if sock is None or self._transport is None or self._transport.is_reading() is False:
            return False
        clock = time.perf_counter
        end = clock() + _BURST_S
        buf = self._rbuf
        while not fut.done() and self.dead is None:
            size = self._spin(sock, buf, clock)
            if size < 0:
                try:
                    ready, _, _ = select.select([sock], [], [], _QUIET_S)
                except (OSError, ValueError):
                    return False
                if not ready:
                    return False
                try:
                    size = sock.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    return False
            if not size:
                return False  # the transport sees the end of the stream on the loop
            self._on_data(bytes(buf[:size]))
            if self._tasks:
                return False  # an async host function must run on the loop: go back to it
            if clock() > end:
                return not fut.done()
        return False

    def _spin(self, sock: socket.socket, buf: bytearray, clock: Callable[[], float]) -> int:
        """Polls ``sock`` without sleeping for up to the spin time: the bytes read, 0 at the end
        of the stream, -1 when nothing came (or reading failed: the caller's select tells)."""
        if not self._spin_s:
            return -1
        end = clock() + self._spin_s
        recv = sock.recv_into
        while True:
            try:
                return recv(buf)
            except BlockingIOError:
                if clock() > end:
                    return -1
            except OSError:
                return -1

    def _deadline(self, rid: int, op: str, timeout: float) -> None:
        fut = self._pending.get(rid)
        if fut is None or fut.done():
            return
        reason = f"the box did not answer {op!r} within {timeout:g} s"
        fut.set_exception(BoxTimeout(reason))
        self.kill(reason)

    # receiving ---------------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        if self.dead is not None:
            return
        try:
            for body in self._reader.bodies(data):
                self._on_frame(body)
                if self.dead is not None:
                    return
        except ProtocolViolation as exc:
            self.kill(f"protocol violation from the box: {exc}")
        except Exception as exc:  # nothing a box sends may take the reader down
            self.kill(f"protocol violation from the box: {type(exc).__name__}: {exc}")

    def _on_lost(self, exc: Exception | None) -> None:
        if self.dead is None:
            why = f"protocol socket error: {exc}" if exc else "the worker exited"
            self.kill(why, signal_box=exc is not None)

    def _on_frame(self, body: bytes) -> None:
        room = self.policy.max_host_bytes - self._held
        # A frame whose worst case fits is not counted, unless it is a host call (whose cost is
        # held while the call runs, so it should not be charged at the worst case).
        cost = len(body) * COST_PER_BYTE_MAX
        if cost > room or body.startswith(_CALL_PREFIX):
            cost = decoded_cost(body)
        if cost > room:
            head = CALL_HEADER.match(body)
            if head is None:
                raise ProtocolViolation(
                    f"a frame that could take {cost} bytes to decode exceeds the box's "
                    f"budget of {self.policy.max_host_bytes} bytes ({self._held} in use)"
                )
            self._refuse(
                int(head.group(1)),
                f"{head.group(2).decode()}() refused: its arguments could take {cost} bytes of "
                f"host memory to decode and this box may hold {self.policy.max_host_bytes} bytes "
                f"at once ({self._held} in use by other calls); send less "
                "(SandboxPolicy.max_host_bytes)",
            )
            return
        msg = check_box_message(decode_frame(body, self.policy.max_depth))
        op = msg["op"]
        if op == "result":
            rid = msg["id"]
            fut = self._pending.pop(rid, None)
            if fut is None:
                if rid in self._abandoned:
                    self._abandoned.discard(rid)
                    return
                raise ProtocolViolation("a result that matches no request the host sent")
            if not fut.done():
                fut.set_result(msg)
        elif op == "call":
            cid = msg["call"]
            if cid in self._calls_in_flight:
                raise ProtocolViolation(f"host call id {cid} is already in flight")
            if len(self._calls_in_flight) >= MAX_CALLS_IN_FLIGHT:
                raise ProtocolViolation(f"more than {MAX_CALLS_IN_FLIGHT} host calls in flight")
            self._calls_in_flight[cid] = cost
            self._held += cost
            self._serve_call(msg)
        else:  # ready
            if self._ready is None or self._ready.done():
                raise ProtocolViolation("unexpected ready message")
            self._ready.set_result(msg)

    def _flow(self, paused: bool) -> None:
        """A box that does not read its replies is not read from either, until it catches up."""
        if self._transport is None or self.dead is not None:
            return
        if paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    # host calls --------------------------------------------------------------------------------

    def _serve_call(self, msg: dict[str, Any]) -> None:
        cid = msg["call"]
        try:
            spec = check_call(self.specs, msg["name"], msg["args"], msg["kwargs"])
        except HostCallRefused as exc:
            self._refuse(cid, str(exc))
            return
        if inspect.iscoroutinefunction(spec.fn):
            self._spawn_task(self._serve_async(cid, spec, msg))
            return
        try:
            value = spec.fn(*msg["args"], **msg["kwargs"])
        except Exception as exc:
            self._refuse(cid, f"{spec.name}() failed: {type(exc).__name__}: {exc}")
            return
        if inspect.isawaitable(value):
            self._spawn_task(self._finish_async(cid, spec, value))
            return
        self._reply(cid, spec.name, value)

    async def _serve_async(self, cid: int, spec: HostFunctionSpec, msg: dict[str, Any]) -> None:
        async with self._calls:
            try:
                value = await spec.fn(*msg["args"], **msg["kwargs"])
            except Exception as exc:
                self._refuse(cid, f"{spec.name}() failed: {type(exc).__name__}: {exc}")
                return
            self._reply(cid, spec.name, value)

    async def _finish_async(self, cid: int, spec: HostFunctionSpec, value: Any) -> None:
        try:
            value = await value
        except Exception as exc:
            self._refuse(cid, f"{spec.name}() failed: {type(exc).__name__}: {exc}")
            return
        self._reply(cid, spec.name, value)

    def _reply(self, cid: int, name: str, value: Any) -> None:
        try:
            frame = encode_frame(
                {"op": "call_result", "call": cid, "ok": True, "value": value},
                self.policy.max_message_bytes,
            )
        except (TypeError, ValueError, RecursionError) as exc:
            self._refuse(cid, f"{name}() returned a value that cannot be sent back: {exc}")
            return
        self._release(cid)
        if self.dead is None and self._transport is not None:
            self._transport.write(frame)

    def _refuse(self, cid: int, error: str) -> None:
        self._release(cid)
        msg = {"op": "call_result", "call": cid, "ok": False, "error": error[:4000]}
        with contextlib.suppress(BoxDied, ValueError):
            self._write(msg)

    def _release(self, cid: int) -> None:
        self._held -= self._calls_in_flight.pop(cid, 0)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # processes ---------------------------------------------------------------------------------

    def processes(self) -> set[int]:
        """Host pids of every process of the box: its cgroup (the worker and all it started)
        with the launcher, else the launcher's tree."""
        pids: set[int] = set()
        if self.cgroup is not None:
            # cgroup v2 regenerates cgroup.procs on every read from its start, so the file stays
            # open; v1 caches the list an open file first read (for about a second), so it is
            # opened afresh each time there.
            if self._procs_fd is None and not self._fds_closed and self.cgroup.version == 2:
                with contextlib.suppress(OSError):
                    self._procs_fd = os.open(self.cgroup.procs, os.O_RDONLY | os.O_CLOEXEC)
            pids = self.cgroup.pids(self._procs_fd)
            if pids:
                if self.popen is not None and self.popen.returncode is None:
                    pids.add(self.popen.pid)
                return pids
        if self.popen is not None and self.popen.returncode is None:
            pids |= _descendants(self.popen.pid) | {self.popen.pid}
        return pids

    def kill_leftovers(self) -> int:
        """Kills the processes user code started (children, daemons); returns how many."""
        extra = self.processes() - self.infrastructure
        for pid in extra:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return len(extra)

    def _signal_all(self) -> None:
        try:
            victims = self.processes()
        except Exception:
            victims = set()
        if self.popen is not None and self.popen.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.cgroup is not None:
            with contextlib.suppress(Exception):
                self.cgroup.kill_all()

    def kill(self, reason: str, signal_box: bool = True) -> None:
        """Kills every process of the box and fails every waiter. Idempotent.

        With ``signal_box=False`` (the worker already closed its end) the process is left to exit
        by itself so that :meth:`close` can report its real exit status.
        """
        if self.dead is None:
            self.dead = reason
        if self._cpu_timer is not None:
            self._cpu_timer.cancel()
            self._cpu_timer = None
        if signal_box:
            self._signal_all()
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
        """Kills and reaps every process of the box and frees everything the host held for it.

        Every step runs even when an earlier one fails; nothing here waits without a bound.
        """
        code: int | None = None
        if graceful and self.dead is None:
            with contextlib.suppress(Exception):
                self._write({"op": "shutdown", "id": 0})
                code = await self._wait_exit(0.2)
        if self.dead is not None and code is None:
            with contextlib.suppress(Exception):
                code = await self._wait_exit(0.2)
        with contextlib.suppress(Exception):
            self.kill("shut down")
        with contextlib.suppress(Exception):
            self._signal_all()
            code = await self._wait_exit(2.0)
        if code is None and self.popen is not None:
            with contextlib.suppress(Exception):
                self._signal_all()
                code = await self._wait_exit(5.0)
        for task in list(self._tasks):
            task.cancel()
        self._close_fds()
        if self.cgroup is not None:
            with contextlib.suppress(Exception):
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
        for _ in range(max(1, int(timeout / 0.002))):
            code = self.popen.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.002)
        return self.popen.poll()

    def stderr_tail(self, limit: int = 2000) -> str:
        """What the launcher wrote to its standard error (a pipe; the last few KB)."""
        fd = self._stderr_fd
        while fd is not None:
            try:
                chunk = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            self._stderr_buf += chunk
            del self._stderr_buf[:-_STDERR_KEEP]
        return bytes(self._stderr_buf[-limit:]).decode("utf-8", "replace").strip()

    def _close_fds(self) -> None:
        self._fds_closed = True
        if self._procs_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._procs_fd)
            self._procs_fd = None
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.abort()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._stderr_fd is not None:
            self.stderr_tail()
            with contextlib.suppress(OSError):
                os.close(self._stderr_fd)
            self._stderr_fd = None

    def _cleanup_files(self) -> None:
        if self.host_dir is not None:
            import shutil

            shutil.rmtree(self.host_dir, ignore_errors=True)
            self.host_dir = None


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from ``/proc/PID/task/TID/children``."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children", "rb") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


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
