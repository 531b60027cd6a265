"""Queue throughput end to end: no-op tasks through 1, 4, 16 and 64 worker processes, on SQLite
and on PostgreSQL (a throwaway local cluster, fsync on, synchronous_commit off), in one run.

Each row starts that many ``holdfast worker`` processes (concurrency 1, the default idle poll),
waits until every one is up, then measures two things:

* end to end: one process submits the tasks one at a time (``Harness.submit``) while the workers
  lease and complete them; the rate is tasks over the time from the first submit to the last
  task succeeded;
* end to end, batched: the same with the tasks submitted 100 to a transaction
  (``Harness.submit_many``), so one submitting process is not what limits the rate;
* pre-filled: the tasks are already queued (held on another queue, then moved in one UPDATE),
  so only lease and complete are timed.

On PostgreSQL it also reports database commits per task over the end-to-end phase (the server's
``pg_stat_database.xact_commit`` for the benchmark database, read after every worker exited, so
idle polling, heartbeats and lease misses all count). SQLite keeps no such counter.

For the pre-filled phase it reports CPU time per task (user and system, from ``/proc``): the
worker processes' together and, on PostgreSQL, the server's (every child of the cluster's
postmaster). On a machine with C cores no arrangement of processes goes faster than
C / (the two together) tasks per second, which says how far a rate is from its CPU bound.

Usage: python benchmarks/harness_queue.py [--tasks N] [--workers 1,4,16,64]
       [--backends sqlite,postgres] [--json]
Figures go in docs/bench/harness.md. Timings on a shared machine are noisy: the load average
at the start of each row is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from holdfast.harness import Harness
from holdfast.testing.kinds import kinds_registry
from holdfast.testing.postgres import PostgresCluster, find_bin_dir


@dataclass
class Row:
    backend: str
    workers: int
    tasks: int
    submit_per_s: float
    end_to_end_per_s: float
    batched_per_s: float
    prefilled_per_s: float
    commits_per_task: float | None
    load_avg: float
    worker_cpu_ms_per_task: float = 0.0
    server_cpu_ms_per_task: float | None = None


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
            "0.05",
            "--lease-ttl",
            "30",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def start_workers(url: str, queue: str, n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` workers, returned once each has opened the store (it says so on stderr)."""
    procs = [spawn(url, queue) for _ in range(n)]
    for p in procs:
        assert p.stderr is not None
        line = p.stderr.readline()
        if not line.startswith(b"worker "):
            raise RuntimeError(f"a worker did not start: {line!r}")
    time.sleep(1.0)  # past start-up: the first look for work and the LISTEN are done
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(60)
        if p.stderr is not None:
            p.stderr.close()


def succeeded(h: Harness, queue: str) -> int:
    """How many tasks of ``queue`` succeeded (one COUNT, so polling stays cheap)."""
    row = h.store.backend.query_one(
        "SELECT COUNT(*) AS n FROM harness_tasks WHERE queue = ? AND status = 'succeeded'",
        (queue,),
    )
    return int(row["n"]) if row else 0


def commits(h: Harness) -> int | None:
    """The server's count of committed transactions in this database (PostgreSQL only)."""
    if h.store.backend.dialect.name != "postgres":
        return None
    row = h.store.backend.query_one(
        "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(row["n"]) if row else None


def wait_done(h: Harness, queue: str, tasks: int, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while succeeded(h, queue) < tasks:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {succeeded(h, queue)} of {tasks} tasks done in time")
        time.sleep(0.02)


def end_to_end(
    url: str, workers: int, tasks: int, batch: int = 1
) -> tuple[float, float, float | None]:
    """(submit/s, end-to-end tasks/s, commits per task), submitting ``batch`` tasks at a time."""
    queue = f"e2e-{workers}-{batch}-{time.monotonic_ns()}"
    h = Harness.open(url, registry=kinds_registry())
    procs = start_workers(url, queue, workers)
    try:
        time.sleep(1.1)  # PostgreSQL publishes a backend's counters at most once a second
        before = commits(h)
        t0 = time.perf_counter()
        if batch == 1:
            for _ in range(tasks):
                h.submit({"kind": "noop", "queue": queue})
        else:
            for start in range(0, tasks, batch):
                n = min(batch, tasks - start)
                h.submit_many([{"kind": "noop", "queue": queue}] * n)
        t_sub = time.perf_counter()
        wait_done(h, queue, tasks)
        t1 = time.perf_counter()
    finally:
        stop_workers(procs)
    after = commits(h)
    h.close()
    per_task = None
    if before is not None and after is not None:
        # this process's own COUNT polls are read-only autocommit transactions too: not counted
        per_task = (after - before) / tasks
    return tasks / (t_sub - t0), tasks / (t1 - t0), per_task


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user and system, every thread) of each process of ``pids`` still alive."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _children(parent: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                kids.append(int(entry))
    return kids


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings (a process born meanwhile counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def prefilled(
    url: str, workers: int, tasks: int, postmaster: int | None = None
) -> tuple[float, float, float | None]:
    """(tasks per second, worker CPU ms per task, server CPU ms per task or None) when the
    queue is already full and the workers already running."""
    queue = f"pre-{workers}-{time.monotonic_ns()}"
    h = Harness.open(url, registry=kinds_registry())
    for _ in range(tasks):
        h.submit({"kind": "noop", "queue": f"{queue}-held"})
    procs = start_workers(url, queue, workers)
    pids = [p.pid for p in procs]
    try:
        serving = _children(postmaster) if postmaster is not None else []
        cpu0 = _cpu_by_pid(pids + serving)
        t0 = time.perf_counter()
        with h.store.backend.transaction() as tx:
            h.store.backend.run(
                tx, "UPDATE harness_tasks SET queue = ? WHERE queue = ?", (queue, f"{queue}-held")
            )
            # the move is one change nobody announced: wake the workers as a submit would
            h.store.backend.notify(
                tx, "holdfast_tasks", json.dumps({"queue": queue, "kind": "noop"})
            )
        wait_done(h, queue, tasks)
        t1 = time.perf_counter()
        # read before the workers exit, while their backends are still there
        serving = _children(postmaster) if postmaster is not None else []
        cpu1 = _cpu_by_pid(pids + serving)
    finally:
        stop_workers(procs)
    h.close()
    worker_s = _spent({p: cpu0.get(p, 0.0) for p in pids}, {p: cpu1[p] for p in pids if p in cpu1})
    server_s = _spent(cpu0, {p: c for p, c in cpu1.items() if p not in pids})
    return (
        tasks / (t1 - t0),
        worker_s / tasks * 1e3,
        server_s / tasks * 1e3 if postmaster is not None else None,
    )


def run(backends: list[str], counts: list[int], tasks: int, say: Any) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HOLDFAST_HOME"] = tmp
        for backend in backends:
            cluster = None
            if backend == "postgres":
                if find_bin_dir() is None:
                    say("postgres: skipped (no server binaries)")
                    continue
                # three connections per worker (work, ticker, LISTEN) at 64 workers
                cluster = PostgresCluster(durable=True, max_connections=max(200, 4 * max(counts)))
                cluster.start()
                url = cluster.create_database("bench")
            else:
                url = str(Path(tmp) / "bench.db")
            try:
                for w in counts:
                    load = os.getloadavg()[0]
                    sub, e2e, per_task = end_to_end(url, w, tasks)
                    _, batched, _ = end_to_end(url, w, tasks, batch=100)
                    pre, worker_ms, server_ms = prefilled(
                        url, w, tasks, cluster.postmaster_pid() if cluster else None
                    )
                    rows.append(
                        Row(
                            backend,
                            w,
                            tasks,
                            sub,
                            e2e,
                            batched,
                            pre,
                            per_task,
                            load,
                            worker_ms,
                            server_ms,
                        )
                    )
                    say(
                        f"  {backend} {w} workers: {e2e:,.0f} tasks/s end to end, "
                        f"{batched:,.0f} batched, {pre:,.0f} pre-filled"
                    )
            finally:
                if cluster is not None:
                    cluster.destroy()
    return rows


def table(rows: list[Row]) -> str:
    out = [
        "| backend | workers | tasks | submit/s | end-to-end tasks/s "
        "| end-to-end, batched submits | pre-filled tasks/s | commits/task "
        "| pre-filled CPU ms/task, workers / server | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        per = f"{r.commits_per_task:.1f}" if r.commits_per_task is not None else "-"
        server = f"{r.server_cpu_ms_per_task:.2f}" if r.server_cpu_ms_per_task is not None else "-"
        out.append(
            f"| {r.backend} | {r.workers} | {r.tasks} | {r.submit_per_s:,.0f} "
            f"| {r.end_to_end_per_s:,.0f} | {r.batched_per_s:,.0f} | {r.prefilled_per_s:,.0f} "
            f"| {per} | {r.worker_cpu_ms_per_task:.2f} / {server} | {r.load_avg:.1f} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--workers", default="1,4,16,64")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    rows = run(args.backends.split(","), counts, args.tasks, say)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
