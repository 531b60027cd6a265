"""Time from a worker's SIGKILL to another worker taking its task over, on SQLite and PostgreSQL.

Two worker processes serve one queue; a task runs a long step; the holder is killed with SIGKILL
and the clock stops at the new holder's ``leased`` receipt. Takeover is bounded by the lease TTL
plus the reaper interval (TTL / 2); the heartbeat is TTL / 3.

Usage: python benchmarks/harness_takeover.py [--ttl 1,5] [--trials 5] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from holdfast.harness import Harness
from holdfast.testing.kinds import kinds_registry
from holdfast.testing.postgres import PostgresCluster, find_bin_dir


def spawn(url: str, queue: str, ttl: float) -> subprocess.Popen[bytes]:
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
            "--lease-ttl",
            str(ttl),
            "--poll",
            "0.05",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def trial(
    h: Harness, url: str, procs: list[subprocess.Popen[bytes]], queue: str, ttl: float
) -> float:
    t = h.submit(
        {
            "kind": "scripted",
            "queue": queue,
            "input": {"steps": [{"tool": "wait", "args": {"seconds": 600}}]},
        }
    )
    while True:
        row = h.get(t.id)
        if row.status == "running" and row.lease_owner:
            break
        time.sleep(0.01)
    time.sleep(ttl / 2)  # a random-ish point between heartbeats
    pid = int(row.lease_owner.split(":")[1])
    victim = next(i for i, p in enumerate(procs) if p.pid == pid)
    t_kill = time.time()
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    procs[victim] = spawn(url, queue, ttl)
    while True:
        leases = [r.data() for r in h.receipts(t.id) if r.data()["kind"] == "leased"]
        if len(leases) >= 2:
            took = float(leases[1]["ts"]) - t_kill
            break
        time.sleep(0.005)
    h.stop(t.id)
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ttl", default="1,5")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()
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
                url = cluster.create_database("takeover")
            else:
                url = str(Path(tmp) / "takeover.db")
            try:
                for ttl in (float(x) for x in args.ttl.split(",")):
                    queue = f"q{ttl}"
                    h = Harness.open(url, registry=kinds_registry())
                    procs = [spawn(url, queue, ttl), spawn(url, queue, ttl)]
                    time.sleep(1.5)
                    times = [trial(h, url, procs, queue, ttl) for _ in range(args.trials)]
                    for p in procs:
                        p.terminate()
                    for p in procs:
                        p.wait(30)
                    h.close()
                    rows.append((backend, ttl, times))
                    print(f"  {backend} ttl={ttl}: {[round(x, 2) for x in times]}", flush=True)
            finally:
                if cluster is not None:
                    cluster.destroy()
    print()
    print(
        "| backend | lease TTL (s) | trials | takeover mean (s) | min (s) | max (s) | bound TTL + TTL/2 (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b, ttl, times in rows:
        print(
            f"| {b} | {ttl:g} | {len(times)} | {statistics.mean(times):.2f} | {min(times):.2f} | "
            f"{max(times):.2f} | {ttl * 1.5:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
