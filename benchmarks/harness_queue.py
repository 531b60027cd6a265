"""Queue throughput for no-op tasks (submit, lease, complete) with 1, 4 and 16 worker processes,
on SQLite and on PostgreSQL (a throwaway local cluster, fsync on, synchronous_commit off).

Usage: python benchmarks/harness_queue.py [--tasks N] [--workers 1,4,16] [--backends sqlite,postgres]
Prints a table; figures go in docs/bench/harness.md. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from holdfast.harness import Harness
from holdfast.testing.kinds import kinds_registry
from holdfast.testing.postgres import PostgresCluster, find_bin_dir


def spawn(url: str, queue: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "holdfast.cli.main",
            "worker",
            "--database-url",
            url,
            "--load",
            "holdfast.testing.kinds:KINDS",
            "--queue",
            queue,
            "--poll",
            "0.02",
            "--lease-ttl",
            "30",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finished(h: Harness, queue: str) -> int:
    """How many tasks of ``queue`` succeeded (one COUNT, so polling stays cheap)."""
    with h.store._reader() as c:
        rows = h.store._rows(
            c,
            "SELECT COUNT(*) AS n FROM harness_tasks WHERE queue = ? AND status = 'succeeded'",
            (queue,),
        )
    return int(rows[0]["n"])


def measure(url: str, workers: int, tasks: int) -> tuple[float, float, float]:
    """(submit/s, end-to-end tasks/s, lease+complete tasks/s) for one configuration."""
    queue = f"bench-{workers}-{time.monotonic_ns()}"
    h = Harness.open(url, registry=kinds_registry())
    procs = [spawn(url, queue) for _ in range(workers)]
    time.sleep(1.5 + 0.1 * workers)
    t0 = time.perf_counter()
    for _ in range(tasks):
        h.submit({"kind": "noop", "queue": queue})
    t_sub = time.perf_counter()
    while finished(h, queue) < tasks:
        time.sleep(0.05)
    t1 = time.perf_counter()
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    h.close()
    return tasks / (t_sub - t0), tasks / (t1 - t0), 0.0


def drain_only(url: str, workers: int, tasks: int) -> float:
    """Tasks per second when the queue is already full and workers are already running."""
    queue = f"drain-{workers}-{time.monotonic_ns()}"
    h = Harness.open(url, registry=kinds_registry())
    for _ in range(tasks):
        h.submit({"kind": "noop", "queue": f"{queue}-held"})
    with h.store._tx() as c:
        h.store._run(
            c, "UPDATE harness_tasks SET queue = ? WHERE queue = ?", (queue + "-x", f"{queue}-held")
        )
    procs = [spawn(url, queue) for _ in range(workers)]
    time.sleep(1.5 + 0.1 * workers)
    t0 = time.perf_counter()
    with h.store._tx() as c:
        h.store._run(c, "UPDATE harness_tasks SET queue = ? WHERE queue = ?", (queue, queue + "-x"))
    while finished(h, queue) < tasks:
        time.sleep(0.05)
    t1 = time.perf_counter()
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    h.close()
    return tasks / (t1 - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--workers", default="1,4,16")
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HOLDFAST_HOME"] = tmp
        for backend in args.backends.split(","):
            cluster = None
            if backend == "postgres":
                if find_bin_dir() is None:
                    print("postgres: skipped (no server binaries)")
                    continue
                cluster = PostgresCluster(durable=True)
                cluster.start()
                url = cluster.create_database("bench")
            else:
                url = str(Path(tmp) / "bench.db")
            try:
                for w in counts:
                    sub, e2e, _ = measure(url, w, args.tasks)
                    drain = drain_only(url, w, args.tasks)
                    rows.append((backend, w, args.tasks, sub, e2e, drain))
                    print(f"  {backend} {w} workers: done", flush=True)
            finally:
                if cluster is not None:
                    cluster.destroy()
    print()
    print(
        "| backend | workers | tasks | submit/s | submit+lease+complete tasks/s | lease+complete tasks/s (pre-filled) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for b, w, n, sub, e2e, drain in rows:
        print(f"| {b} | {w} | {n} | {sub:,.0f} | {e2e:,.0f} | {drain:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
