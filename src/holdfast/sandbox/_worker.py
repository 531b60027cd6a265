"""The program that runs inside a box: a persistent Python REPL driven over one Unix socket.

This file is run by the host's interpreter with ``-I -S`` (no site-packages, no environment) and
must import nothing but the standard library; it never imports holdfast. The host passes the
socket's descriptor number as ``argv[1]``. Frames are a 4-byte big-endian length and a UTF-8 JSON
object. The first frame is ``init`` (limits, the seccomp program, host function names); the worker
applies the limits and the filter to itself before it runs any user code.
"""

from __future__ import annotations

import _ast
import _json
import _signal
import _socket
import binascii
import builtins
import errno
import os
import resource
import select
import struct
import sys
import threading
import time
from array import array
from collections import deque
from itertools import accumulate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_HEADER = struct.Struct(">I")
_JSON_TYPES = (dict, list, tuple, str, int, float, bool, type(None))
_IMMUTABLE = frozenset((str, int, float, bool, type(None)))
_ONLY_AST = 0x400  # ast.PyCF_ONLY_AST, without importing the ast module at start-up
_EXCLUDED = {"__builtins__", "__name__", "__doc__", "__loader__", "__spec__", "__package__"}
# The real exit, kept before any user code can replace os._exit.
_EXIT = os._exit
_MAX_TYPE_CHARS = 200


def decoded_cost(body: bytes) -> int:
    """The host's bound on what decoding ``body`` costs it (holdfast.sandbox.protocol)."""
    factor = 3 if body.isascii() and b"\\u" not in body else 9
    return (
        factor * len(body)
        + 80 * (body.count(b"[") + body.count(b"{"))
        + 48 * body.count(b",")
        + 64 * body.count(b":")
        + 32 * body.count(b'"')
    )


_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(body: bytes, limit: int) -> bool:
    """Whether JSON text nests deeper than ``limit`` (the host's check, mirrored)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    import re  # only for a frame with more brackets than the limit: not at every start

    strings = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
    brackets = strings.sub(b"", body).translate(None, _NOT_BRACKETS).translate(_SIGNS)
    return len(brackets) > limit and max(accumulate(array("b", brackets)), default=0) > limit


# JSON through the interpreter's own C codec (what the json module itself runs on), without
# importing json, which imports re and enum: about a fifth of a box's start-up otherwise.
def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> bytes:
    """``json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))``.

    An encoder per call, as ``json.dumps`` makes: its markers (for circular references) must
    start empty, and an encoding that failed part way can leave some behind."""
    encode = _json.make_encoder(
        {}, _not_json, _json.encode_basestring, None, ":", ",", False, False, False
    )
    return "".join(encode(value, 0)).encode("utf-8", "surrogatepass")


# The worker's own replies: every value in one has been through _dumps already (or is the
# worker's own text), so a cycle cannot be in it and one encoder without cycle markers serves
# them all (what is not JSON still raises, and the caller answers with an error instead).
_REPLY_ENCODE = _json.make_encoder(
    None, _not_json, _json.encode_basestring, None, ":", ",", False, False, False
)


def _dumps_reply(value: dict[str, Any]) -> bytes:
    return "".join(_REPLY_ENCODE(value, 0)).encode("utf-8", "surrogatepass")


# A reply's field whose JSON text is already made (a snapshot): (its name, the text), spliced in
# as the last field instead of being serialised a second time.
_RAW = "\x00raw"


def _reply_body(reply: dict[str, Any]) -> bytes:
    raw = reply.pop(_RAW, None)
    body = _dumps_reply(reply)
    if raw is None:
        return body
    name, text = raw
    return b'%s,"%s":%s}' % (body[:-1], name.encode(), text)


class _StrictJSON:
    """The scanner's settings: plain numbers, objects as dicts, no NaN or Infinity."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")


# One scanner for the life of the box: it clears its memo after every call and never lets go of
# the interpreter lock while it runs (its hooks are all C), so threads cannot interleave in it.
_SCAN = _json.make_scanner(_StrictJSON)  # type: ignore[arg-type]


def _loads(body: bytes) -> Any:
    """One JSON value that fills ``body`` (UTF-8, as the host writes it)."""
    text = body.decode("utf-8", "surrogatepass")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration as exc:
        raise ValueError(f"not JSON at character {exc.value}") from None
    if end != len(text):
        raise ValueError(f"extra data after JSON at character {end}")
    return value


def _cut(text: str, limit: int, marker: str) -> str:
    """``text`` in at most about ``limit`` UTF-8 bytes, head and tail kept."""
    if len(text) <= limit // 4:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    half = max(limit // 2, 1)
    head = data[:half].decode("utf-8", "replace")
    return head + marker + data[-half:].decode("utf-8", "replace")


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
        # One receive buffer for the life of the box: a fresh 1 MB buffer per read costs an
        # allocation the size of the mmap threshold, which is most of a small frame's round trip.
        self._rbuf = bytearray(1 << 20)
        self._rview = memoryview(self._rbuf)
        self.spin_s = 0.0

    def _fill(self) -> None:
        size, anc = self._spin() if self.spin_s > 0 else (-1, [])
        if size < 0:
            size, anc, _flags, _addr = self.sock.recvmsg_into(
                [self._rview], _socket.CMSG_SPACE(16 * 4)
            )
        for level, kind, payload in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                n = len(payload) - len(payload) % 4
                self.fds.extend(struct.unpack(f"{n // 4}i", payload[:n]))
        if not size:
            raise EOFError
        self.buf += self._rview[:size]

    def _spin(self) -> tuple[int, list[tuple[int, int, bytes]]]:
        """Polls the socket without sleeping for up to ``spin_s``: a reply or the next request
        that comes soon is read without the cost of waking a sleeping thread. ``(-1, [])`` when
        nothing came (the caller then blocks)."""
        clock = time.perf_counter
        end = clock() + self.spin_s
        recv = self.sock.recvmsg_into
        view = [self._rview]
        space = _socket.CMSG_SPACE(16 * 4)
        while True:
            try:
                size, anc, _flags, _addr = recv(view, space, _socket.MSG_DONTWAIT)
                return size, anc
            except BlockingIOError:
                if clock() > end:
                    return -1, []

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
        return _loads(body)

    def send(self, obj: dict[str, Any]) -> None:
        self.send_body(_dumps_reply(obj))

    def send_body(self, body: bytes) -> None:
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

    def reset(self) -> None:
        self.head.clear()
        self.tail.clear()
        self.total = 0

    def result(self) -> tuple[str, bool]:
        if not self.total:
            return "", False
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

    def __init__(self, owner: Worker, which: int) -> None:
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
        # The text of each immutable global at the last snapshot, by name: a value that is still
        # the same object is not serialised again.
        self._known: dict[str, tuple[Any, bytes, int]] = {}
        self.lock = threading.Lock()
        self.captures = {1: _Capture(self.max_output), 2: _Capture(self.max_output)}
        self.max_message = int(config.get("max_message_bytes", 1 << 24))
        self.max_host = int(config.get("max_host_bytes", 1 << 28))
        self.max_depth = int(config.get("max_depth", 100))
        self.calls: dict[int, dict[str, Any]] = {}
        self.call_lock = threading.Lock()
        self.next_call = 0
        self.jobs: deque[tuple[dict[str, Any], int | None]] = deque()
        # Whoever waits for a frame (the idle main loop, or a thread waiting for its host call)
        # reads the socket itself, one at a time: no thread hand-off on the common path.
        self.rcv = threading.Condition()
        self.reading = False
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
        # One poll for both pipes: most cells write nothing to fd 1 or 2 directly.
        try:
            ready, _, _ = select.select(list(self.pipes), [], [], 0)
        except OSError:
            ready = list(self.pipes)
        for r in ready:
            fd = self.pipes[r]
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
        slot: dict[str, Any] = {}
        with self.call_lock:
            self.next_call += 1
            cid = self.next_call
        try:
            args_text = _dumps(args)
            kwargs_text = _dumps(kwargs)
        except (TypeError, ValueError, RecursionError) as exc:
            raise HostCallError(f"arguments to {name}() must be JSON values: {exc}") from None
        head = f'{{"op":"call","call":{cid},"name":"{name}","args":'.encode()
        body = head + args_text + b',"kwargs":' + kwargs_text + b"}"
        if len(body) > self.max_message:
            raise HostCallError(
                f"arguments to {name}() take {len(body)} bytes, which exceeds the "
                f"{self.max_message}-byte message cap"
            )
        cost = decoded_cost(body)
        if cost > self.max_host:
            raise HostCallError(
                f"arguments to {name}() could take {cost} bytes of host memory to decode, which "
                f"exceeds this box's {self.max_host}-byte budget (max_host_bytes); send less"
            )
        if too_deep(body, self.max_depth):
            raise HostCallError(f"arguments to {name}() nest deeper than {self.max_depth} levels")
        with self.call_lock:
            self.calls[cid] = slot
        try:
            self.chan.send_body(body)
        except ValueError as exc:
            with self.call_lock:
                self.calls.pop(cid, None)
            raise HostCallError(str(exc)) from None
        self.wait_for(lambda: "ok" in slot)
        if slot["ok"]:
            return slot.get("value")
        raise HostCallError(str(slot.get("error", "host call failed")))

    def on_call_result(self, msg: dict[str, Any]) -> None:
        with self.call_lock:
            slot = self.calls.pop(int(msg.get("call") or 0), None)
        if slot is None:
            return
        slot["value"] = msg.get("value")
        slot["error"] = msg.get("error")
        slot["ok"] = bool(msg.get("ok"))

    def read_one(self) -> None:
        """Reads one frame from the host and acts on it (or queues it for the main loop)."""
        msg = self.chan.recv()
        op = msg.get("op")
        if op == "call_result":
            self.on_call_result(msg)
        elif op == "define":
            self.define(msg["name"], msg.get("params") or [])
        elif op == "shutdown":
            _EXIT(0)
        else:
            fd = self.chan.fds.pop(0) if op == "load_fd" and self.chan.fds else None
            self.jobs.append((msg, fd))

    def wait_for(self, done: Callable[[], bool]) -> None:
        """Blocks until ``done()``, reading frames meanwhile unless another thread is."""
        rcv = self.rcv
        while True:
            with rcv:
                while not done() and self.reading:
                    rcv.wait()
                if done():
                    return
                self.reading = True
            try:
                self.read_one()
            except BaseException:
                _EXIT(0)  # the host is gone or broke the protocol: the box ends
            finally:
                with rcv:
                    self.reading = False
                    rcv.notify_all()

    def serve(self) -> None:
        jobs = self.jobs
        while True:
            if not jobs:
                self.wait_for(lambda: bool(jobs))
            msg, fd = jobs.popleft()
            reply = self.handle(msg, fd)
            reply["id"] = msg.get("id")
            reply["op"] = "result"
            try:
                self.chan.send_body(_reply_body(reply))
            except (TypeError, ValueError, RecursionError) as exc:
                self.chan.send(
                    {
                        "id": msg.get("id"),
                        "op": "result",
                        "ok": False,
                        "error": _err("ValueError", str(exc)[:2000], ""),
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
                    problem = self.unsendable(_dumps(value))
                except (TypeError, ValueError, RecursionError) as exc:
                    problem = f"it is not JSON-safe: {exc}"
                if problem:
                    return {"ok": False, "error": _err("ValueError", f"{name}: {problem}")}
                return {"ok": True, "value": value}
            if op == "snapshot":
                return {"ok": True, _RAW: ("value", self.snapshot())}
            if op == "restore":
                self.globals.update(msg.get("value") or {})
                return {"ok": True}
            return {"ok": False, "error": _err("ValueError", f"unknown op {op!r}")}
        except BaseException as exc:
            return {"ok": False, "error": self.describe(exc)}

    def load_fd(self, name: str, mode: str, fd: int | None) -> None:
        if fd is None:
            raise ValueError("no file descriptor arrived with the load request")
        # The host's file is never mapped: a mapping would show the file's host path in
        # /proc/self/maps. Text is read and decoded; for bytes the host has copied the file into
        # a sealed memfd, which is mapped read-only.
        try:
            size = os.fstat(fd).st_size
            if mode == "bytes":
                value: Any = _map_read_only(fd, size)
            else:
                value = str(_read_at_zero(fd, size), "utf-8", "replace")
        finally:
            os.close(fd)
        self.globals[name] = value
        self.inputs.add(name)

    def unsendable(self, body: bytes) -> str | None:
        """Why the host would refuse ``body`` as (part of) a frame, or None."""
        if len(body) > self.max_message // 2:
            return f"{len(body)} bytes, over half the {self.max_message}-byte message cap"
        cost = decoded_cost(body)
        if cost > self.max_host // 4:
            return f"could take {cost} bytes of host memory, over a quarter of the box's budget"
        if too_deep(body, self.max_depth - 4):
            return f"nests deeper than {self.max_depth - 4} levels"
        return None

    def snapshot(self) -> bytes:
        """The JSON-safe globals that fit, as the text of one JSON object: each value is
        serialised once, to measure it and to send it."""
        cap = self.max_message // 2
        budget = self.max_host // 4
        parts: list[bytes] = []
        used = 0
        cost = 0
        known = self._known
        fresh: dict[str, tuple[Any, bytes, int]] = {}
        for key, value in list(self.globals.items()):
            if not isinstance(value, _JSON_TYPES) or not isinstance(key, str):
                continue
            if key in _EXCLUDED or key in self.inputs or key.startswith("__"):
                continue
            if isinstance(value, (str, list, dict, tuple)) and len(value) > cap - used:
                continue  # cannot fit: skip it without serialising it
            seen = known.get(key)
            if seen is not None and seen[0] is value:
                body, price = seen[1], seen[2]  # the same immutable object: the same text
            else:
                try:
                    body = _dumps(value)
                except (TypeError, ValueError, RecursionError):
                    continue
                if too_deep(body, self.max_depth - 4):
                    continue
                price = decoded_cost(body)
            name = _json.encode_basestring(key).encode("utf-8", "surrogatepass")
            size = len(name) + 2 + len(body)  # the name, its colon and a comma
            if used + size > cap or cost + price > budget:
                continue
            used += size
            cost += price
            parts.append(name + b":" + body)
            if type(value) in _IMMUTABLE:  # kept only for what is sent: at most the cap
                fresh[key] = (value, body, price)
        self._known = fresh
        return b"{" + b",".join(parts) + b"}"

    def execute(self, code: str, echo: bool, want_snapshot: bool) -> dict[str, Any]:
        captures = self.captures
        with self.lock:
            self._drain()
            captures[1].reset()
            captures[2].reset()
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
                    value_repr = _cut(repr(value), self.max_output, "\n...[repr cut]...\n")
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
            out, out_cut = captures[1].result()
            err, err_cut = captures[2].result()
        # Only what the cell produced: the host reads a missing field as empty.
        reply: dict[str, Any] = {"ok": True, "duration_s": duration}
        if out:
            reply["stdout"] = out
            reply["stdout_truncated"] = out_cut
        if err:
            reply["stderr"] = err
            reply["stderr_truncated"] = err_cut
        if error is not None:
            reply["error"] = error
        if value_repr is not None:
            reply["value_repr"] = value_repr
        if want_snapshot:
            reply[_RAW] = ("snapshot", self.snapshot())
        return reply

    def describe(self, exc: BaseException) -> dict[str, str]:
        import traceback

        limit = self.max_output
        kind = type(exc).__name__[:_MAX_TYPE_CHARS]
        try:
            message = str(exc)
        except BaseException:
            message = "<the exception could not be shown>"
        if isinstance(exc, SystemExit):
            message = f"SystemExit({exc.code}): the cell called exit(); the box is still running"
        elif isinstance(exc, KeyboardInterrupt):
            message = "KeyboardInterrupt raised in the cell; the box is still running"
        try:
            if isinstance(exc, SyntaxError):
                text = "".join(traceback.format_exception_only(type(exc), exc))
            else:
                tb = exc.__traceback__
                while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
                    tb = tb.tb_next
                text = "".join(traceback.format_exception(type(exc), exc, tb))
        except BaseException:
            text = ""
        return _err(
            _cut(kind, _MAX_TYPE_CHARS, "..."),
            _cut(message, limit, "\n...[message cut]...\n"),
            _cut(text, limit, "\n...[traceback cut]...\n"),
        )


def _read_at_zero(fd: int, size: int) -> bytes:
    """The file's bytes from offset 0 (the descriptor's own offset is shared and left alone)."""
    step = 1 << 30
    if size <= step:
        data = os.pread(fd, size, 0)
        if len(data) == size:
            return data
    parts = []
    done = 0
    while done < size:
        part = os.pread(fd, min(step, size - done), done)
        if not part:
            break
        parts.append(part)
        done += len(part)
    return b"".join(parts)


def _map_read_only(fd: int, size: int) -> Any:
    """A read-only mmap of ``fd`` (``b""`` when empty)."""
    if not size:
        return b""
    import mmap

    return mmap.mmap(fd, size, prot=mmap.PROT_READ)


def _exit(code: Any = None) -> None:
    """``exit()`` and ``quit()`` (absent without ``site``): raise SystemExit like the REPL's."""
    raise SystemExit(code)


def _err(kind: str, message: str, tb: str = "") -> dict[str, str]:
    return {"type": kind, "message": message, "traceback": tb}


def _apply_limits(config: dict[str, Any]) -> None:
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
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
    chan.spin_s = max(0.0, min(float(config.get("spin_s", 0.0)), 0.01))
    status: dict[str, Any] = {"seccomp": False}
    try:
        _apply_limits(config)
        program = config.get("seccomp")
        if program:
            _apply_seccomp(binascii.a2b_base64(program))
        status["seccomp"] = _seccomp_mode() == 2
    except Exception as exc:
        chan.send({"op": "ready", "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        _EXIT(3)
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
