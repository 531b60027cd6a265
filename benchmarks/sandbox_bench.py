"""Sandbox benchmark: start, cell and host-call round trips, input loads, 32 busy boxes.

Runs each figure at the ``namespace`` and ``process`` isolation levels side by side (the namespace
level at both of its backends, bubblewrap and unshare, where both are there) and prints a
Markdown table (``--json`` for machine-readable output). Input files are temporary and deleted
afterwards. Host peak memory is the growth of this process's resident high-water mark (VmHWM,
reset through /proc/self/clear_refs) while the load runs.

    .venv/bin/python benchmarks/sandbox_bench.py            # everything, 1 GB input included
    .venv/bin/python benchmarks/sandbox_bench.py --quick    # skips the 1 GB input
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from holdfast.sandbox import HostFunctionSpec, IsolatedSandbox, SandboxPolicy, open_sandbox
from holdfast.sandbox.launch import bwrap_path
from holdfast.sandbox.unshare_launch import unshare_available

# Each column: its isolation level and namespace backend. "namespace" is what a default policy
# gets (bubblewrap when installed); "namespace_unshare" forces the other backend when both exist.
COLUMNS: dict[str, tuple[str, str]] = {"namespace": ("namespace", "auto")}
if bwrap_path() is not None and unshare_available():
    COLUMNS["namespace_unshare"] = ("namespace", "unshare")
COLUMNS["process"] = ("process", "auto")
LEVELS = tuple(COLUMNS)


def _policy(level: str, **kw: Any) -> SandboxPolicy:
    isolation, backend = COLUMNS[level]
    return SandboxPolicy(
        isolation=isolation,  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        cell_timeout_s=600,
        **kw,
    )


def _title(level: str) -> str:
    if level == "namespace":
        return "namespace (bubblewrap)" if bwrap_path() is not None else "namespace (unshare)"
    return "namespace (unshare)" if level == "namespace_unshare" else level


def _hwm_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"median_ms": statistics.median(ordered) * 1e3, "p95_ms": p95 * 1e3}


async def bench_start(level: str, n: int) -> dict[str, float]:
    warm = open_sandbox(_policy(level))
    await warm.start()
    await warm.shutdown()
    times = []
    for _ in range(n):
        box = open_sandbox(_policy(level))
        t = time.perf_counter()
        await box.start()
        await box.execute("pass")
        times.append(time.perf_counter() - t)
        await box.shutdown()
    return _ms(times)


async def bench_cells(box: IsolatedSandbox, n: int) -> dict[str, float]:
    await box.execute("pass")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await box.execute("pass")
        times.append(time.perf_counter() - t)
    return _ms(times)


async def bench_host_calls(box: IsolatedSandbox, n: int) -> dict[str, float]:
    r = await box.execute(
        "import time\nts = []\n"
        f"for _ in range({n}):\n"
        "    t = time.perf_counter(); echo(1); ts.append(time.perf_counter() - t)\n"
        "ts.sort()\n(ts[len(ts) // 2], ts[int(len(ts) * 0.95)])"
    )
    assert r.ok and r.value_repr, r.error
    median, p95 = (float(x) for x in r.value_repr.strip("()").split(","))
    return {"median_ms": median * 1e3, "p95_ms": p95 * 1e3}


async def bench_load(level: str, path: Path, mode: str, memory_mb: int) -> dict[str, float]:
    async with open_sandbox(_policy(level, memory_mb=memory_mb)) as box:
        _hwm_reset()
        rss0 = _status_kb("VmRSS")
        t = time.perf_counter()
        await box.load("data", path=path, mode=mode)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t
        peak = _status_kb("VmHWM") - rss0
        r = await box.execute("len(data)")
        assert r.ok and int(r.value_repr or 0) == path.stat().st_size, r
    return {"load_ms": elapsed * 1e3, "host_peak_mb": max(peak, 0) / 1024}


async def bench_many(level: str, boxes: int) -> dict[str, float]:
    t = time.perf_counter()
    many = [open_sandbox(_policy(level)) for _ in range(boxes)]
    await asyncio.gather(*(b.start() for b in many))
    started = time.perf_counter() - t
    try:
        work = "sum(i * i for i in range(300_000))"
        single = time.perf_counter()
        await many[0].execute(work)
        single = time.perf_counter() - single
        t = time.perf_counter()
        results = await asyncio.gather(*(b.execute(work) for b in many))
        busy = time.perf_counter() - t
        assert all(r.ok for r in results)

        async def trivial(box: IsolatedSandbox) -> None:
            for _ in range(100):
                await box.execute("pass")

        t = time.perf_counter()
        await asyncio.gather(*(trivial(b) for b in many))
        cells = time.perf_counter() - t
    finally:
        await asyncio.gather(*(b.shutdown() for b in many))
    return {
        "start_all_ms": started * 1e3,
        "one_cpu_cell_ms": single * 1e3,
        "all_cpu_cells_ms": busy * 1e3,
        "trivial_cells_per_s": boxes * 100 / cells,
    }


# A bare echo worker (no sandbox, no hardening): one JSON frame in, one out. It gives the floor a
# Python host and a Python worker reach on this machine, to read the box's round trips against.
_ECHO = (
    "import socket, sys, json, struct\n"
    "s = socket.socket(fileno=int(sys.argv[1])); h = struct.Struct('>I'); buf = b''\n"
    "while True:\n"
    "    while len(buf) < 4 or len(buf) < 4 + h.unpack_from(buf)[0]:\n"
    "        data = s.recv(65536)\n"
    "        if not data: sys.exit(0)\n"
    "        buf += data\n"
    "    n = h.unpack_from(buf)[0]; msg = json.loads(buf[4:4 + n]); buf = buf[4 + n:]\n"
    "    out = json.dumps({'op': 'result', 'id': msg['id'], 'ok': True}).encode()\n"
    "    s.sendall(h.pack(len(out)) + out)\n"
)


def _frame(i: int) -> bytes:
    body = json.dumps({"op": "exec", "id": i, "code": "pass"}).encode()
    return len(body).to_bytes(4, "big") + body


async def bench_floor(n: int) -> dict[str, dict[str, float]]:
    """Round trips to a bare echo process: from an asyncio host, and from a blocking one."""
    host, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _ECHO, str(child.fileno())], pass_fds=[child.fileno()]
    )
    child.close()
    try:
        blocking = []
        for i in range(n):
            t = time.perf_counter()
            host.sendall(_frame(i))
            json.loads(host.recv(65536)[4:])
            blocking.append(time.perf_counter() - t)
        loop = asyncio.get_running_loop()
        host.setblocking(False)
        evented = []
        for i in range(n):
            t = time.perf_counter()
            await loop.sock_sendall(host, _frame(i))
            json.loads((await loop.sock_recv(host, 65536))[4:])
            evented.append(time.perf_counter() - t)
    finally:
        host.close()
        proc.wait(timeout=10)
    return {"blocking": _ms(blocking), "asyncio": _ms(evented)}


def _make_file(size_mb: int, directory: str) -> Path:
    path = Path(directory) / f"input-{size_mb}mb.txt"
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    chunk = line * ((1 << 20) // len(line) + 1)
    with path.open("wb") as fh:
        remaining = size_mb << 20
        while remaining > 0:
            part = chunk[:remaining]
            fh.write(part)
            remaining -= len(part)
        # Written back before timing: otherwise the first level measured competes with the
        # kernel flushing a gigabyte of dirty pages (3.1 s against 0.6 s for the same load).
        fh.flush()
        os.fsync(fh.fileno())
    return path


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {level: {} for level in LEVELS}
    echo = [HostFunctionSpec("echo", lambda value: value)]
    for level in LEVELS:
        row = out[level]
        row["start"] = await bench_start(level, args.starts)
        async with open_sandbox(_policy(level), echo) as box:
            row["cell"] = await bench_cells(box, args.cells)
            row["host_call"] = await bench_host_calls(box, args.calls)
    with tempfile.TemporaryDirectory(prefix="holdfast-bench-") as tmp:
        sizes = [100] if args.quick else [100, 1024]
        for size in sizes:
            path = _make_file(size, tmp)
            # One untimed load first: the first load of a freshly written file is several times
            # slower at either level (3 s against 0.6 to 1.5 s for 1 GB as text), whichever runs
            # first; without this the first level measured pays it.
            await bench_load(LEVELS[-1], path, "text", 4096 if size > 100 else 2048)
            for level in LEVELS:
                for mode in ("text", "bytes"):
                    if size > 100 and mode == "text" and args.skip_big_text:
                        continue
                    memory = 4096 if size > 100 else 2048
                    out[level][f"load_{size}mb_{mode}"] = await bench_load(
                        level, path, mode, memory
                    )
            path.unlink()
    for level in LEVELS:
        out[level]["many"] = await bench_many(level, args.boxes)
    out["floor"] = await bench_floor(args.cells)
    return out


def _load_cell(key: str) -> Callable[[dict[str, Any]], str]:
    """The table cell of one load figure (a function per key, not a late-bound lambda)."""

    def cell(r: dict[str, Any]) -> str:
        if key not in r:
            return "-"
        return f"{r[key]['load_ms']:.0f} ms / {r[key]['host_peak_mb']:.1f} MB"

    return cell


def _table(res: dict[str, Any], boxes: int) -> str:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("start to ready (median / p95)", lambda r: _pair(r["start"])),
        ("trivial cell round trip (median / p95)", lambda r: _pair(r["cell"])),
        (
            "host call round trip, box to host to box (median / p95)",
            lambda r: _pair(r["host_call"]),
        ),
    ]
    keys = sorted(k for k in res["namespace"] if k.startswith("load_"))
    for key in keys:
        label = key.replace("load_", "").replace("mb_", " MB input, ").replace("1024 MB", "1 GB")
        rows.append((f"{label}: load time / host peak memory", _load_cell(key)))
    rows += [
        (f"{boxes} boxes: start all at once", lambda r: f"{r['many']['start_all_ms']:.0f} ms"),
        (
            f"{boxes} boxes: one CPU cell alone / all {boxes} at once",
            lambda r: (
                f"{r['many']['one_cpu_cell_ms']:.0f} ms / {r['many']['all_cpu_cells_ms']:.0f} ms"
            ),
        ),
        (
            f"{boxes} boxes: trivial cells, 100 per box",
            lambda r: f"{r['many']['trivial_cells_per_s']:.0f} cells/s",
        ),
    ]
    lines = [
        "| figure | " + " | ".join(_title(level) for level in LEVELS) + " |",
        "| --- |" + " --- |" * len(LEVELS),
    ]
    for label, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(res[level]) for level in LEVELS) + " |")
    floor = res["floor"]
    lines.append(
        "\nfloor, a bare echo process with no sandbox (median / p95): asyncio host "
        f"{_pair(floor['asyncio'])}, blocking host {_pair(floor['blocking'])}"
    )
    return "\n".join(lines)


def _pair(d: dict[str, float]) -> str:
    return f"{d['median_ms']:.3f} / {d['p95_ms']:.3f} ms"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1 GB input")
    parser.add_argument("--skip-big-text", action="store_true", help="1 GB as bytes only")
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--boxes", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main(ns))
    if ns.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(result, ns.boxes))
        print(f"\n(total {time.perf_counter() - t0:.1f} s, {os.cpu_count()} cores)")
