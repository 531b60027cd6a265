"""RLM engine costs: overhead per iteration (model time excluded) and loading a 1 GB input.

Overhead per iteration: a scripted root model drives N trivial cells (``x = i``) through the real
box; the figure is (job time of N+1 turns - job time of 1 turn - model time recorded in the trace)
/ N, so it counts the loop, the parse, the cell round trip, the answer check and the trace writes.

Input load: a 1 GB text file given as a path; the figure is the job time with one trivial turn
(host-side UTF-8 scan and line count, descriptor handed to the box, decoded there), with the peak
resident memory of this (host) process and of the box. Run: ``.venv/bin/python benchmarks/rlm_engine.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def job(turns: int, context: Any, *, memory_mb: int = 2048) -> tuple[float, float, int]:
    from holdfast.rlm import RLM, Budget
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.sandbox import SandboxPolicy
    from holdfast.store.sqlite import SQLiteDB
    from holdfast.testing import ScriptedLM

    fence = "```"
    replies = [f"{fence}python\nx = {i}\n{fence}\n" for i in range(turns - 1)]
    replies.append(f"{fence}python\nSUBMIT(str(len(context)))\n{fence}\n")
    store = RLMTraceStore(SQLiteDB(Path(tempfile.mkdtemp()) / "t.db"))
    rlm = RLM(
        ScriptedLM(replies),
        sandbox=SandboxPolicy(memory_mb=memory_mb, cell_timeout_s=300),
        budget=Budget(max_iterations=turns + 1, max_wall_s=1200),
        store=store,
        mode="rlm",
    )
    t0 = time.perf_counter()
    result = rlm.run("benchmark", context=context)
    took = time.perf_counter() - t0
    model_s = sum(
        e.data.get("latency_s", 0.0) for e in store.events(result.trace_id) if e.kind == "root_call"
    )
    return took, model_s, int(result.answer)


def descendants_rss_kib() -> int:
    """Total resident memory of this process's descendants (the box and its launcher), in KiB."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        parents[int(entry)] = int(fields.get("PPid", "0").strip())
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0])
    me = os.getpid()
    total = 0
    for pid in rss:
        p = parents.get(pid, 0)
        while p and p != me:
            p = parents.get(p, 0)
        if p == me:
            total += rss[pid]
    return total


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, descendants_rss_kib())


def write_text(path: Path, size: int) -> None:
    line = ("lorem ipsum dolor sit amet " * 3)[:99] + "\n"
    block = line * 100_000
    with path.open("w") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
        fh.write(line * ((size % len(block)) // len(line)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    context = "short context for the overhead run\n" * 2000
    job(2, context)  # warm up (imports, first box)
    one, one_model, _ = job(1, context)
    many, many_model, _ = job(args.iterations + 1, context)
    overhead_ms = ((many - many_model) - (one - one_model)) / args.iterations * 1000
    print(
        f"overhead per iteration, model time excluded ({args.iterations} turns, real box): {overhead_ms:.2f} ms"
    )
    print(f"  job with 1 turn (box start + load + 1 turn): {one * 1000:.0f} ms")

    if args.skip_load:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        size = int(args.gigabytes * 1e9)
        write_text(path, size)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sampler = PeakSampler()
        sampler.start()
        took, model_s, length = job(1, path, memory_mb=int(args.gigabytes * 3000) + 512)
        sampler.stop.set()
        sampler.join()
        host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        box_peak = sampler.peak
        print(
            f"{path.stat().st_size / 1e9:.2f} GB text input, one trivial turn: {took:.2f} s (model {model_s * 1000:.0f} ms)"
        )
        print(f"  the box saw len(context) = {length:,}")
        print(
            f"  host peak RSS: {host_peak / 1024:.0f} MiB (before the job: {before / 1024:.0f} MiB)"
        )
        print(f"  box peak RSS (sampled every 20 ms, all descendants): {box_peak / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
