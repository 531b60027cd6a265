"""The attack suite, host side: a hostile box can never hang, exhaust or outlive its host.

Each test runs real namespace boxes at both backends (bubblewrap and, as root, the unshare
fallback) and attacks the host through the protocol, the worker's own machinery or the process
tree, then checks that the host kept its deadlines, its memory and its descriptors, and that the
box was killed and restarted (or cleaned up) as it should be.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.sandbox.conftest import BACKENDS

from holdfast.sandbox import (
    HostFunctionSpec,
    SandboxError,
    SandboxPolicy,
    SyncSandbox,
    open_sync_sandbox,
)

pytestmark = pytest.mark.sandbox

_FIND_WORKER = "import gc\nW = [o for o in gc.get_objects() if type(o).__name__ == 'Worker'][0]\n"


def _socket_writer(payload: str) -> str:
    """A cell that writes ``data`` (built by ``payload``) straight onto the protocol socket."""
    return (
        "import os, struct, json, time\n"
        "fds = []\n"
        "for f in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        if os.readlink(f'/proc/self/fd/{f}').startswith('socket:'): fds.append(int(f))\n"
        "    except OSError: pass\n"
        f"{payload}\n"
        "for fd in fds: os.write(fd, data)\n"
        "time.sleep(6)"
    )


def _frame(body_expr: str) -> str:
    return f"b = {body_expr}\ndata = struct.pack('>I', len(b)) + b"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _policy(backend: str, **kw: Any) -> SandboxPolicy:
    base: dict[str, Any] = {
        "cell_timeout_s": 20,
        "request_timeout_s": 2.0,
        "memory_mb": 512,
        "max_output_bytes": 8000,
        "max_message_bytes": 4 << 20,
        "backend": backend,
    }
    base.update(kw)
    return SandboxPolicy(**base)


@pytest.fixture
def box(backend: str) -> Iterator[SyncSandbox]:
    sandbox = open_sync_sandbox(_policy(backend), [HostFunctionSpec("echo", lambda value: value)])
    yield sandbox
    sandbox.shutdown()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pids: set[int], within: float) -> set[int]:
    deadline = time.monotonic() + within
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {p for p in left if _alive(p)}
        time.sleep(0.05)
    return left


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# 1. liveness --------------------------------------------------------------------------------------


_HOLD_READER = (
    _FIND_WORKER + "import threading, time\n"
    "def hold():\n"
    "    time.sleep(0.3)\n"
    "    for v in list(vars(W).values()):\n"  # every lock and condition of the worker, forever
    "        if hasattr(v, 'acquire') and hasattr(v, 'release'):\n"
    "            v.acquire()\n"
    "    time.sleep(10**6)\n"
    "threading.Thread(target=hold, daemon=True).start()\n"
)


@pytest.mark.parametrize(
    "operation",
    ["get", "set", "snapshot", "restore", "load"],
)
def test_every_request_has_a_deadline_and_a_hung_worker_is_restarted(
    box: SyncSandbox, operation: str, tmp_path: Path
) -> None:
    """A cell that returns leaving a thread on the worker's lock cannot hang any request."""
    box.execute("kept = 7")
    r = box.execute(_HOLD_READER)
    assert r.ok, r.error
    time.sleep(0.6)
    src = tmp_path / "in.txt"
    src.write_text("x")
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: box.get("kept"),
        "set": lambda: box.set("v", 1),
        "snapshot": box.snapshot,
        "restore": lambda: box.restore({"v": 2}),
        "load": lambda: box.load("doc", path=src),
    }
    start = time.monotonic()
    with pytest.raises(SandboxError, match="did not answer"):
        calls[operation]()
    assert time.monotonic() - start < 60  # the 2 s deadline, plus a restart on a loaded host
    assert box.execute("kept").value_repr == "7"  # restarted from the snapshot


def test_a_stopped_worker_is_declared_dead_within_the_deadline(box: SyncSandbox) -> None:
    box.execute("kept = 'yes'")
    r = box.execute(
        "import os, signal, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), os.kill(os.getpid(), signal.SIGSTOP)),"
        " daemon=True).start()"
    )
    assert r.ok
    time.sleep(0.6)
    start = time.monotonic()
    with pytest.raises(SandboxError, match="did not answer"):
        box.get("kept")
    assert time.monotonic() - start < 60
    assert box.get("kept") == "yes"


def test_shutdown_kills_and_reaps_everything_even_from_a_stuck_box(backend: str) -> None:
    """Shutdown of a stopped worker with children that ignore signals: nothing is left."""
    before = _open_fds()
    box = open_sync_sandbox(_policy(backend, background_processes=True))
    r = box.execute(
        "import os, signal, subprocess, time, threading\n"
        "kids = [subprocess.Popen(['sleep', '1000']) for _ in range(3)]\n"
        "if os.fork() == 0:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    os.setsid()\n"
        "    time.sleep(1000)\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), os.kill(os.getpid(), signal.SIGSTOP)),"
        " daemon=True).start()",
    )
    assert r.ok, r.error
    time.sleep(0.6)
    pids = box.sandbox._proc.processes()  # type: ignore[attr-defined]
    assert len(pids) >= 4
    start = time.monotonic()
    box.shutdown()  # must not raise
    assert time.monotonic() - start < 10
    assert _wait_gone(pids, 5) == set()
    assert _open_fds() <= before


def test_the_blocking_api_never_lets_a_box_outlive_its_host(backend: str, tmp_path: Path) -> None:
    """A host that exits (normally, or killed) without shutting its box down takes the box along,
    even when the cell replaced os._exit and ignores every signal it can."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from holdfast.sandbox import SandboxPolicy, open_sync_sandbox
        box = open_sync_sandbox(SandboxPolicy(backend={backend!r}, background_processes=True))
        r = box.execute(
            "import os, signal, subprocess\\n"
            "os._exit = lambda *a: None\\n"
            "for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):\\n"
            "    signal.signal(s, signal.SIG_IGN)\\n"
            "kid = subprocess.Popen(['sleep', '1000'])"
        )
        assert r.ok, r.error
        print(json.dumps(sorted(box.sandbox._proc.processes())), flush=True)
        if sys.argv[1] == "kill":
            time.sleep(1000)
        """
    )
    for how in ("exit", "kill"):
        proc = subprocess.Popen(
            [sys.executable, "-c", script, how], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        try:
            pids = set(json.loads(proc.stdout.readline()))
            assert len(pids) >= 3
            if how == "kill":
                proc.kill()
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert _wait_gone(pids, 10) == set(), how


# 2. host memory -------------------------------------------------------------------------------------


def _holding(backend: str, budget: int, code: str) -> tuple[list[Any], int]:
    """Runs ``code`` in a box with ``budget`` bytes of host memory and a host function
    ``hold(x)`` that takes half a second to return ``len(x)``; the code may call ``tried(x)``,
    which returns a refusal's text instead of raising it, and must leave its answer in ``out``.
    Returns ``out`` and how many calls of ``hold`` ran at once at most."""
    active = {"now": 0, "peak": 0}

    async def hold(x: Any) -> int:
        active["now"] += 1
        active["peak"] = max(active["peak"], active["now"])
        await asyncio.sleep(0.5)
        active["now"] -= 1
        return len(x)

    prelude = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "def tried(x):\n"
        "    try:\n"
        "        return hold(x)\n"
        "    except HostCallError as e:\n"
        "        return str(e)\n"
    )
    policy = _policy(backend, max_host_bytes=budget)
    with open_sync_sandbox(policy, [HostFunctionSpec("hold", hold)]) as box:
        r = box.execute(prelude + code)
        assert r.ok, r.error
        return box.get("out"), active["peak"]


def test_host_call_arguments_are_bounded_in_decoded_bytes(backend: str) -> None:
    """Threads calling a slow host function with [[]]*200_000 (25 MB decoded each): only what
    fits the box's budget is decoded at once, and the others are told why."""
    out, peak = _holding(
        backend,
        32 << 20,
        "with ThreadPoolExecutor(8) as ex:\n"
        "    out = list(ex.map(lambda _: tried([[]] * 200_000), range(8)))\n",
    )
    assert out.count(200_000) >= 1
    refused = [o for o in out if isinstance(o, str)]
    assert refused and all("max_host_bytes" in o for o in refused)
    assert peak == 1


def test_calls_in_flight_are_charged_what_they_can_cost_not_the_worst_case(backend: str) -> None:
    """Four calls with a 20 KB string each are in flight (about 60 KB each to decode) when a
    fifth brings 450 KB (about 1.35 MB): all fit an 8 MB budget. Charged at the worst a byte can
    cost (89 times its size), the four would hold 7 MB and the fifth would be refused."""
    out, peak = _holding(
        backend,
        8 << 20,
        "import time\n"
        "with ThreadPoolExecutor(5) as ex:\n"
        "    small = [ex.submit(hold, 'a' * 20_000) for _ in range(4)]\n"
        "    time.sleep(0.2)\n"
        "    last = ex.submit(tried, 'b' * 450_000)\n"
        "    out = [f.result() for f in small] + [last.result()]\n",
    )
    assert out == [20_000] * 4 + [450_000]
    assert peak == 5


def test_forged_frames_never_grow_host_memory(backend: str) -> None:
    """Frames of millions of [] decode to twenty times their size: they are refused from their
    raw bytes, before any decoding."""
    with open_sync_sandbox(_policy(backend, max_host_bytes=16 << 20)) as box:
        box.execute("kept = 1")
        body = (
            'one = b\'{"op":"call","kwargs":{},"name":"echo","call":1,"args":[\''
            " + b'[],' * 1_000_000 + b'[]]}'\n"
            "data = b''.join(struct.pack('>I', len(one)) + one for _ in range(3))"
        )
        tracemalloc.start()
        try:
            r = box.execute(_socket_writer(body))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert r.error is not None and r.error.type == "SandboxDied"
        assert "budget" in r.error.message
        assert peak < 30 << 20  # three frames of 3 MB each arrive; none is decoded (~60 MB each)
        assert box.execute("kept").value_repr == "1"


def test_oversized_arguments_are_refused_in_the_box_with_the_reason(box: SyncSandbox) -> None:
    r = box.execute("echo([[]] * 5_000_000)")  # 15 MB of text: over the 4 MiB frame cap
    assert r.error is not None and r.error.type == "HostCallError"
    assert "exceeds" in r.error.message
    assert box.execute("echo('small')").value_repr == "'small'"


# 3. strict decoding ---------------------------------------------------------------------------------


def test_a_frame_that_breaks_the_decoder_kills_the_box_at_once(box: SyncSandbox) -> None:
    """100 KB of '[' raises RecursionError in json.loads; the reader must survive it, mark the box
    broken and restart it, not leave the cell to wait for its deadline."""
    box.execute("kept = 3")
    start = time.monotonic()
    r = box.execute(_socket_writer(_frame("b'[' * 100_000")))
    assert time.monotonic() - start < 15  # the cell deadline is 20 s
    assert r.error is not None and r.error.type == "SandboxDied" and not r.timed_out
    assert "protocol violation" in r.error.message
    assert box.execute("kept").value_repr == "3"


def test_nan_and_infinity_are_rejected(backend: str) -> None:
    charged: list[Any] = []

    def charge(usd: Any) -> str:
        charged.append(usd)
        return "ok"

    spec = HostFunctionSpec(
        "charge",
        charge,
        schema={
            "type": "object",
            "properties": {"usd": {"type": "number", "minimum": 0, "maximum": 1}},
            "required": ["usd"],
        },
    )
    with open_sync_sandbox(_policy(backend), [spec]) as box:
        for constant in ("NaN", "Infinity", "-Infinity"):
            body = (
                '\'{"op":"call","call":5,"name":"charge","args":[],"kwargs":{"usd":'
                + constant
                + "}}'.encode()"
            )
            r = box.execute(_socket_writer(_frame(body)))
            assert r.error is not None and r.error.type == "SandboxDied", constant
            assert "not strict JSON" in r.error.message
        assert charged == []
        assert "HostCallError" in box.execute("charge(float('nan'))").error.type  # type: ignore[union-attr]
        assert charged == []


def test_a_forged_result_cannot_end_the_running_cell(box: SyncSandbox) -> None:
    """A result for the running cell's request, written while the cell still runs, must not become
    the cell's result, and the cell's deadline still holds. The cell is the box's first request:
    with sequential ids its id would be 1."""
    body = (
        "b = json.dumps({'op': 'result', 'id': 1, 'ok': True, 'stdout': 'forged',"
        " 'duration_s': 0.0}).encode()\n"
        "data = struct.pack('>I', len(b)) + b"
    )
    start = time.monotonic()
    r = box.execute(_socket_writer(body), timeout=3)
    assert "forged" not in r.stdout
    assert r.timed_out or (r.error is not None and r.error.type == "SandboxDied")
    assert r.timed_out or time.monotonic() - start < 3 + 5
    assert box.execute("1 + 1").value_repr == "2"


def test_the_reader_survives_a_host_function_that_misbehaves(backend: str) -> None:
    def bad() -> Any:
        return {"loop": float("nan")}

    with open_sync_sandbox(_policy(backend), [HostFunctionSpec("bad", bad)]) as box:
        r = box.execute("bad()")
        assert r.error is not None and r.error.type == "HostCallError"
        assert box.execute("'fine'").value_repr == "'fine'"


# 4. output caps -------------------------------------------------------------------------------------


def test_exception_text_and_class_names_are_capped(box: SyncSandbox) -> None:
    r = box.execute("raise SyntaxError('A' * 3_000_000)")
    assert r.error is not None and r.error.type == "SyntaxError"
    assert len(r.error.message.encode()) < 9000 and len(r.error.traceback.encode()) < 9000
    r = box.execute("raise type('B' * 3_000_000, (Exception,), {})('x' * 3_000_000)")
    assert r.error is not None and len(r.error.type) <= 200
    assert len(r.error.message.encode()) < 9000 and len(r.error.traceback.encode()) < 9000
    r = box.execute("raise SystemExit('C' * 3_000_000)")
    assert r.error is not None and len(r.error.message.encode()) < 9000


def test_a_subverted_worker_still_cannot_return_more_than_the_caps(box: SyncSandbox) -> None:
    """The caps hold on the host: user code that rewrites the worker's own reply is cut too."""
    r = box.execute(
        _FIND_WORKER + "W.describe = lambda exc: {'type': 'T' * 800_000, "
        "'message': 'M' * 400_000, 'traceback': 'R' * 400_000}\n"
        "orig = W.execute\n"
        "def forged(code, echo, snap):\n"
        "    out = orig(code, echo, snap)\n"
        "    out.update(stdout='O' * 400_000, stderr='E' * 400_000, value_repr='V' * 400_000)\n"
        "    return out\n"
        "W.execute = forged"
    )
    assert r.ok, r.error
    r = box.execute("raise ValueError()")
    assert r.error is not None and len(r.error.type) <= 200
    for text in (r.error.message, r.error.traceback, r.stdout, r.stderr, r.value_repr or ""):
        assert len(text.encode()) <= 8000 + 200
    assert r.stdout_truncated and r.stderr_truncated


def test_lone_surrogates_from_a_box_are_replaced(box: SyncSandbox) -> None:
    r = box.execute(_FIND_WORKER + "W.execute = lambda c, e, s: {'ok': True, 'stdout': '\\ud800x'}")
    assert r.ok
    r = box.execute("1")
    assert r.stdout.encode("utf-8")  # would raise UnicodeEncodeError on a lone surrogate
    assert r.stdout.endswith("x")


# 5. bubblewrap level (and the same view under unshare) ------------------------------------------


def test_dev_shm_is_size_limited_and_dev_is_read_only(backend: str) -> None:
    with open_sync_sandbox(_policy(backend, shm_mb=8)) as box:
        out = box.execute(
            "import os\nst = os.statvfs('/dev/shm')\nsize = st.f_blocks * st.f_frsize\n"
            "try:\n"
            "    with open('/dev/shm/fill', 'wb') as f:\n"
            "        for _ in range(64): f.write(b'x' * (1 << 20))\n"
            "    filled = 'ESCAPED'\n"
            "except OSError as e:\n"
            "    filled = e.strerror\n"
            "try:\n"
            "    open('/dev/evil', 'w').write('x'); dev = 'ESCAPED'\n"
            "except OSError as e:\n"
            "    dev = e.strerror\n"
            "(size, filled, dev)"
        )
        assert out.ok, out.error
        size, filled, dev = eval(out.value_repr or "")
        assert size <= 8 << 20
        assert filled == "No space left on device"
        assert dev == "Read-only file system"
    with open_sync_sandbox(_policy(backend, shm_mb=0)) as box:
        r = box.execute("open('/dev/shm/x', 'w')")
        assert r.error is not None and r.error.type in ("OSError", "FileNotFoundError")


def test_no_box_process_holds_a_host_file(backend: str) -> None:
    """Seen from the host: every descriptor of every process of the box is a pipe, a socket, an
    anonymous inode or a device (the launcher's stderr used to be a host temporary file)."""
    with open_sync_sandbox(_policy(backend)) as box:
        assert box.execute("1").ok
        pids = box.sandbox._proc.processes()  # type: ignore[attr-defined]
        assert pids
        for pid in pids:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                ok = target.startswith(("pipe:", "socket:", "anon_inode:", "/dev/"))
                assert ok, (pid, fd, target)


def test_pidfd_calls_cannot_take_another_process_descriptor(box: SyncSandbox) -> None:
    r = box.execute(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "res = []\n"
        "for pid in (1, os.getppid()):\n"
        "    fd = libc.syscall(434, pid, 0)\n"  # pidfd_open
        "    res.append((fd, ctypes.get_errno()))\n"
        "    if fd >= 0:\n"
        "        res.append(libc.syscall(438, fd, 2, 0))\n"  # pidfd_getfd
        "res.append((libc.syscall(438, 0, 2, 0), ctypes.get_errno()))\n"
        "res"
    )
    assert r.ok, r.error
    assert eval(r.value_repr or "") == [(-1, 1), (-1, 1), (-1, 1)]


# 7. background work ---------------------------------------------------------------------------------


_SPINNERS = (
    "import os, subprocess, time\n"
    "kid = subprocess.Popen(['sh', '-c', 'while :; do :; done'])\n"
    "if os.fork() == 0:\n"  # an orphan: forks a spinner and exits at once
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        while True: pass\n"
    "    os._exit(0)\n"
    "time.sleep(0.2)\n"
)


def test_processes_a_cell_leaves_behind_are_killed_when_it_returns(box: SyncSandbox) -> None:
    proc = box.sandbox._proc  # type: ignore[attr-defined]
    r = box.execute(_SPINNERS)
    assert r.ok, r.error
    left = _wait_gone(proc.processes() - proc.infrastructure, 5)
    assert left == set()
    assert box.execute("'alive'").value_repr == "'alive'"


def test_background_processes_stay_when_the_policy_allows_them(backend: str) -> None:
    with open_sync_sandbox(_policy(backend, background_processes=True)) as box:
        proc = box.sandbox._proc  # type: ignore[attr-defined]
        assert box.execute(_SPINNERS).ok
        kept = proc.processes() - proc.infrastructure
        assert len(kept) >= 2
    assert _wait_gone(kept, 5) == set()  # shutdown takes them along


# 8. information ---------------------------------------------------------------------------------------


def test_proc_hides_the_kernel_command_line_and_kernel_internals(box: SyncSandbox) -> None:
    r = box.execute(
        "import os\nout = {}\n"
        "for name in ('cmdline', 'kallsyms', 'modules', 'iomem', 'keys', 'timer_list'):\n"
        "    try:\n"
        "        out[name] = len(open('/proc/' + name, 'rb').read())\n"
        "    except OSError as e:\n"
        "        out[name] = e.errno\n"
        "out"
    )
    assert r.ok, r.error
    seen = eval(r.value_repr or "")
    assert all(v in (0, 2, 13) for v in seen.values()), seen  # empty, absent or unreadable


def test_an_input_never_shows_its_host_path(box: SyncSandbox, tmp_path: Path) -> None:
    secret_dir = tmp_path / "host-secret-dir"
    secret_dir.mkdir()
    src = secret_dir / "evidence.txt"
    src.write_bytes(b"evidence " * 1000)
    box.load("as_text", path=src)
    box.load("as_bytes", path=src, mode="bytes")
    r = box.execute(
        "import os\ntexts = [open('/proc/self/maps').read(), open('/proc/self/mountinfo').read()]\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try: texts.append(os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError: pass\n"
        "(any('host-secret-dir' in t for t in texts), len(as_text), len(as_bytes), as_bytes[:8])"
    )
    assert r.ok, r.error
    assert r.value_repr == "(False, 9000, 9000, b'evidence')"


def test_a_box_total_cpu_is_bounded_across_its_processes(backend: str) -> None:
    """RLIMIT_CPU is per process and children get fresh ones; the box's cgroup counts them all."""
    with open_sync_sandbox(_policy(backend, cpu_seconds=2)) as box:
        if "cgroup" not in box.sandbox.info.cpu_limit:  # type: ignore[attr-defined]
            pytest.skip("no cgroup counts CPU time on this machine")
        start = time.monotonic()
        r = box.execute(
            "import subprocess\n"
            "kids = [subprocess.Popen(['sh', '-c', 'while :; do :; done']) for _ in range(3)]\n"
            "for k in kids: k.wait()",
            timeout=30,
        )
        assert r.error is not None and r.error.type == "SandboxDied", r
        assert "CPU" in r.error.message
        assert time.monotonic() - start < 25
        assert box.execute("'again'").value_repr == "'again'"
