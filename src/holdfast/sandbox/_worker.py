"""The program that runs inside a box: a persistent Python REPL driven over one Unix socket.

This file is run by the host's interpreter with ``-I -S`` (no site-packages, no environment) and
must import nothing but the standard library; it never imports holdfast. The host passes the
socket's descriptor number as ``argv[1]``. Frames are a 4-byte big-endian length and a UTF-8 JSON
object. The first frame is ``init`` (limits, the seccomp program, host function names); the worker
applies the limits and the filter to itself before it runs any user code.
"""

import _ast
import _socket
import binascii
import builtins
import errno
import json
import os
import resource
import select
import signal
import struct
import sys
import threading
import time
from typing import Any

_HEADER = struct.Struct(">I")
_JSON_TYPES = (dict, list, tuple, str, int, float, bool, type(None))
_ONLY_AST = 0x400  # ast.PyCF_ONLY_AST, without importing the ast module at start-up
_EXCLUDED = {"__builtins__", "__name__", "__doc__", "__loader__", "__spec__", "__package__"}


class HostCallError(Exception):
    """A host function failed, was refused, or is unknown to the host."""


class _Channel:
    """Frame IO over the protocol socket; receives descriptors passed with SCM_RIGHTS."""

    def __init__(self, fd: int, max_bytes: int) -> None:
        self.sock = _socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.fds: list[int] = []
        self.wlock = threading.Lock()

    def _fill(self) -> None:
        data, anc, _flags, _addr = self.sock.recvmsg(1 << 20, _socket.CMSG_SPACE(16 * 4))
        for level, kind, payload in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                n = len(payload) - len(payload) % 4
                self.fds.extend(struct.unpack(f"{n // 4}i", payload[:n]))
        if not data:
            raise EOFError
        self.buf += data

    def recv(self) -> Any:
        while len(self.buf) < 4:
            self._fill()
        (size,) = _HEADER.unpack_from(self.buf)
        if size > self.max_bytes:
            raise EOFError
        while len(self.buf) < 4 + size:
            self._fill()
        body = bytes(self.buf[4 : 4 + size])
        del self.buf[: 4 + size]
        return json.loads(body)

    def send(self, obj: Any) -> None:
        body = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
        if len(body) > self.max_bytes:
            raise ValueError(f"message of {len(body)} bytes exceeds the cap")
        with self.wlock:
            self.sock.sendall(_HEADER.pack(len(body)) + body)


class _Capture:
    """A bounded byte sink keeping the head and the tail of what was written."""

    def __init__(self, limit: int) -> None:
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.half:
                del self.tail[: len(self.tail) - self.half]

    def result(self) -> tuple[str, bool]:
        tail = bytes(self.tail[-self.half :]) if self.tail else b""
        kept = len(self.head) + len(tail)
        if self.total > kept:
            marker = f"\n...[{self.total - kept} bytes of output omitted]...\n"
            text = _decode(bytes(self.head)) + marker + _decode(tail)
            return text, True
        return _decode(bytes(self.head) + tail), False


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class _Stream:
    """Replaces sys.stdout / sys.stderr inside the worker.

    Text goes to fd 1 or 2 unbuffered, so prints, ``os.write`` and child processes reach the
    capture through the same pipe in the order they were written.
    """

    def __init__(self, owner: "Worker", which: int) -> None:
        self.owner = owner
        self.which = which
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = text.encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self.which, data) :]
        except OSError:
            self.owner.emit(self.which, data)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.which

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class Worker:
    """The REPL: globals that persist across cells, captured output, host-call proxies."""

    def __init__(self, chan: _Channel, config: dict[str, Any]) -> None:
        self.chan = chan
        self.config = config
        self.max_output = int(config.get("max_output_bytes", 64000))
        self.globals: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.inputs: set[str] = set()
        self.lock = threading.Lock()
        self.captures = {1: _Capture(self.max_output), 2: _Capture(self.max_output)}
        self.calls: dict[int, dict[str, Any]] = {}
        self.call_lock = threading.Lock()
        self.next_call = 0
        self.jobs: list[tuple[dict[str, Any], int | None]] = []
        self.jobs_cv = threading.Condition()
        self.pipes: dict[int, int] = {}
        self.globals["HostCallError"] = HostCallError
        vars(builtins).update(exit=_exit, quit=_exit)
        for name in config.get("functions", []):
            self.define(name, [])
        for item in config.get("signatures", []):
            self.define(item[0], item[1])

    def emit(self, which: int, data: bytes) -> None:
        with self.lock:
            self.captures[which].add(data)

    def redirect_fds(self) -> None:
        """Route fd 1 and 2 (subprocesses, os.write) into the per-cell captures."""
        for fd in (1, 2):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.pipes[r] = fd
        sys.stdout = _Stream(self, 1)
        sys.stderr = _Stream(self, 2)
        threading.Thread(target=self._pump, daemon=True).start()

    def _drain(self) -> None:
        for r, fd in self.pipes.items():
            while True:
                try:
                    data = os.read(r, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if not data:
                    break
                self.captures[fd].add(data)

    def _pump(self) -> None:
        while True:
            try:
                select.select(list(self.pipes), [], [])
            except OSError:
                return
            with self.lock:
                self._drain()

    def define(self, name: str, params: list[str]) -> None:
        def proxy(*args: Any, **kwargs: Any) -> Any:
            if params and args:
                if len(args) > len(params):
                    raise TypeError(f"{name}() takes at most {len(params)} positional arguments")
                for key, value in zip(params, args, strict=False):
                    if key in kwargs:
                        raise TypeError(f"{name}() got multiple values for {key!r}")
                    kwargs[key] = value
                args = ()
            return self.host_call(name, list(args), kwargs)

        proxy.__name__ = name
        proxy.__qualname__ = name
        proxy.__doc__ = f"Calls the host function {name!r} and waits for its answer."
        self.globals[name] = proxy

    def host_call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        slot: dict[str, Any] = {"event": threading.Event()}
        with self.call_lock:
            self.next_call += 1
            cid = self.next_call
            self.calls[cid] = slot
        try:
            self.chan.send(
                {"op": "call", "call": cid, "name": name, "args": args, "kwargs": kwargs}
            )
        except (TypeError, ValueError) as exc:
            with self.call_lock:
                self.calls.pop(cid, None)
            raise HostCallError(f"arguments to {name}() must be JSON values: {exc}") from None
        slot["event"].wait()
        if slot.get("ok"):
            return slot.get("value")
        raise HostCallError(str(slot.get("error", "host call failed")))

    def on_call_result(self, msg: dict[str, Any]) -> None:
        with self.call_lock:
            slot = self.calls.pop(int(msg.get("call") or 0), None)
        if slot is None:
            return
        slot["ok"] = bool(msg.get("ok"))
        slot["value"] = msg.get("value")
        slot["error"] = msg.get("error")
        slot["event"].set()

    def reader(self) -> None:
        try:
            while True:
                msg = self.chan.recv()
                op = msg.get("op")
                if op == "call_result":
                    self.on_call_result(msg)
                elif op == "define":
                    self.define(msg["name"], msg.get("params") or [])
                else:
                    fd = self.chan.fds.pop(0) if op == "load_fd" and self.chan.fds else None
                    with self.jobs_cv:
                        self.jobs.append((msg, fd))
                        self.jobs_cv.notify()
        except Exception:
            pass
        os._exit(0)

    def serve(self) -> None:
        threading.Thread(target=self.reader, daemon=True).start()
        while True:
            with self.jobs_cv:
                while not self.jobs:
                    self.jobs_cv.wait()
                msg, fd = self.jobs.pop(0)
            reply = self.handle(msg, fd)
            reply["id"] = msg.get("id")
            reply["op"] = "result"
            try:
                self.chan.send(reply)
            except ValueError as exc:
                self.chan.send(
                    {
                        "id": msg.get("id"),
                        "op": "result",
                        "ok": False,
                        "error": {"type": "ValueError", "message": str(exc), "traceback": ""},
                    }
                )

    def handle(self, msg: dict[str, Any], fd: int | None) -> dict[str, Any]:
        op = msg.get("op")
        try:
            if op == "exec":
                return self.execute(
                    msg.get("code", ""), bool(msg.get("echo")), bool(msg.get("snapshot"))
                )
            if op == "load":
                self.globals[msg["name"]] = msg.get("value")
                self.inputs.add(msg["name"])
                return {"ok": True}
            if op == "load_fd":
                self.load_fd(msg["name"], msg.get("mode", "text"), fd)
                return {"ok": True}
            if op == "set":
                self.globals[msg["name"]] = msg.get("value")
                return {"ok": True}
            if op == "get":
                name = msg["name"]
                if name not in self.globals:
                    return {
                        "ok": False,
                        "error": _err("NameError", f"name {name!r} is not defined"),
                    }
                value = self.globals[name]
                try:
                    json.dumps(value, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    return {
                        "ok": False,
                        "error": _err("TypeError", f"{name} is not JSON-safe: {exc}"),
                    }
                return {"ok": True, "value": value}
            if op == "snapshot":
                return {"ok": True, "value": self.snapshot()}
            if op == "restore":
                self.globals.update(msg.get("value") or {})
                return {"ok": True}
            if op == "shutdown":
                os._exit(0)
            return {"ok": False, "error": _err("ValueError", f"unknown op {op!r}")}
        except BaseException as exc:
            return {"ok": False, "error": _err(type(exc).__name__, str(exc))}

    def load_fd(self, name: str, mode: str, fd: int | None) -> None:
        if fd is None:
            raise ValueError("no file descriptor arrived with the load request")
        import mmap

        try:
            size = os.fstat(fd).st_size
            mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        finally:
            os.close(fd)
        if mode == "bytes":
            value: Any = mapped if mapped is not None else b""
        else:
            # Decoding straight from the mapping: the file's pages come from the page cache and
            # the only new memory is the str itself.
            value = str(mapped, "utf-8", "replace") if mapped is not None else ""
            if mapped is not None:
                mapped.close()
        self.globals[name] = value
        self.inputs.add(name)

    def snapshot(self) -> dict[str, Any]:
        cap = int(self.config.get("max_message_bytes", 1 << 24)) // 2
        out: dict[str, Any] = {}
        used = 0
        for key, value in list(self.globals.items()):
            if key in _EXCLUDED or key in self.inputs or key.startswith("__"):
                continue
            if not isinstance(value, _JSON_TYPES):
                continue
            if isinstance(value, (str, list, dict, tuple)) and len(value) > cap - used:
                continue  # cannot fit: skip it without serialising it
            try:
                size = len(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError, RecursionError):
                continue
            if used + size > cap:
                continue
            used += size
            out[key] = value
        return out

    def execute(self, code: str, echo: bool, want_snapshot: bool) -> dict[str, Any]:
        with self.lock:
            self._drain()
            self.captures = {1: _Capture(self.max_output), 2: _Capture(self.max_output)}
        start = time.perf_counter()
        error = None
        value_repr = None
        try:
            tree = compile(code, "<cell>", "exec", _ONLY_AST)
            last: _ast.Expression | None = None
            tail = tree.body[-1] if tree.body else None
            if echo and isinstance(tail, _ast.Expr):
                tree.body.pop()
                last = _ast.Expression(tail.value)
            exec(compile(tree, "<cell>", "exec"), self.globals)
            if last is not None:
                value = eval(compile(last, "<cell>", "eval"), self.globals)
                if value is not None:
                    value_repr = repr(value)
                    if len(value_repr) > self.max_output:
                        half = self.max_output // 2
                        value_repr = value_repr[:half] + "\n...[repr cut]...\n" + value_repr[-half:]
        except BaseException as exc:
            error = self.describe(exc)
        duration = time.perf_counter() - start
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if not isinstance(sys.stdout, _Stream):
            sys.stdout = _Stream(self, 1)
        if not isinstance(sys.stderr, _Stream):
            sys.stderr = _Stream(self, 2)
        with self.lock:
            self._drain()
            out, out_cut = self.captures[1].result()
            err, err_cut = self.captures[2].result()
        reply = {
            "ok": True,
            "stdout": out,
            "stderr": err,
            "stdout_truncated": out_cut,
            "stderr_truncated": err_cut,
            "error": error,
            "value_repr": value_repr,
            "duration_s": duration,
        }
        if want_snapshot:
            reply["snapshot"] = self.snapshot()
        return reply

    def describe(self, exc: BaseException) -> dict[str, str]:
        import traceback

        if isinstance(exc, SyntaxError):
            lines = traceback.format_exception_only(type(exc), exc)
            return _err(type(exc).__name__, str(exc), "".join(lines))
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        message = str(exc)
        if isinstance(exc, SystemExit):
            message = f"SystemExit({exc.code}): the cell called exit(); the box is still running"
        elif isinstance(exc, KeyboardInterrupt):
            message = "KeyboardInterrupt raised in the cell; the box is still running"
        limit = self.max_output
        if len(text) > limit:
            text = text[: limit // 2] + "\n...[traceback cut]...\n" + text[-limit // 2 :]
        return _err(type(exc).__name__, message[:limit], text)


def _exit(code: Any = None) -> None:
    """``exit()`` and ``quit()`` (absent without ``site``): raise SystemExit like the REPL's."""
    raise SystemExit(code)


def _err(kind: str, message: str, tb: str = "") -> dict[str, str]:
    return {"type": kind, "message": message, "traceback": tb}


def _apply_limits(config: dict[str, Any]) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for key, res in (
        ("cpu_seconds", resource.RLIMIT_CPU),
        ("memory_bytes", resource.RLIMIT_AS),
        ("max_processes", resource.RLIMIT_NPROC),
        ("max_file_bytes", resource.RLIMIT_FSIZE),
        ("max_open_files", resource.RLIMIT_NOFILE),
    ):
        value = config.get(key)
        if value is None:
            continue
        hard = value + 5 if res == resource.RLIMIT_CPU else value
        resource.setrlimit(res, (value, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _apply_seccomp(program: bytes) -> None:
    """Loads a compiled classic-BPF seccomp program (compiled on the host) into this process.

    Used at the ``process`` level; under bubblewrap the filter is installed by bubblewrap itself
    (``--seccomp``) before this program starts.
    """
    import ctypes

    class _SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS) failed")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(SECCOMP) failed")


def _seccomp_mode() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def main() -> None:
    chan = _Channel(int(sys.argv[1]), 1 << 20)
    init = chan.recv()
    config = init.get("config", {})
    chan.max_bytes = int(config.get("max_message_bytes", 1 << 24))
    status: dict[str, Any] = {"seccomp": False}
    try:
        _apply_limits(config)
        program = config.get("seccomp")
        if program:
            _apply_seccomp(binascii.a2b_base64(program))
        status["seccomp"] = _seccomp_mode() == 2
    except Exception as exc:
        chan.send({"op": "ready", "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        os._exit(3)
    workspace = config.get("workspace")
    if workspace:
        try:
            os.chdir(workspace)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    worker = Worker(chan, config)
    worker.redirect_fds()
    status["pid"] = os.getpid()
    status["uid"] = os.getuid()
    chan.send({"op": "ready", "ok": True, "status": status})
    worker.serve()


if __name__ == "__main__":
    main()
