"""Eval generators' throughput: how fast the suites' inputs are written to disk.

Needle-in-a-haystack files of 1 MB, 100 MB and 1 GB (streamed: the peak resident memory of this
process is shown beside them), OOLONG-style record files, and multi-hop folders. Each is timed
from nothing on disk to the renamed file (fsync included), in a temporary directory removed
afterwards. Run: ``.venv/bin/python benchmarks/evals_generators.py [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (no 1 GB)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from holdfast.evals.aggregate import aggregate_task
    from holdfast.evals.haystack import niah_task
    from holdfast.evals.multihop import multihop_task

    sizes = [1_000_000, 10_000_000] if args.quick else [1_000_000, 100_000_000, 1 << 30]
    rows: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="holdfast-bench-gen-"))
    try:
        for size in sizes:
            for variant in ("single", "multi"):
                d = root / f"niah-{variant}-{size}"
                secs, task = timed(niah_task, d, seed=1, index=0, size=size, variant=variant)
                n = int(task.meta["bytes"])
                rows.append(
                    {
                        "generator": f"niah-{variant}",
                        "size": f"{n / 1e6:,.0f} MB",
                        "seconds": round(secs, 3),
                        "MB/s": round(n / 1e6 / secs, 1),
                        "peak_rss_mb": round(peak_rss_mb(), 1),
                    }
                )
                shutil.rmtree(d)
        for records in [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]:
            d = root / f"oolong-{records}"
            secs, task = timed(aggregate_task, d, seed=1, index=0, records=records)
            rows.append(
                {
                    "generator": "oolong",
                    "size": f"{records:,} records",
                    "seconds": round(secs, 3),
                    "MB/s": round(task.meta["bytes"] / 1e6 / secs, 1),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                }
            )
            shutil.rmtree(d)
        for people in (100, 300):
            d = root / f"multihop-{people}"
            secs, task = timed(multihop_task, d, seed=1, index=0, people=people)
            files = sum(1 for _ in Path(task.inputs["docs"]).rglob("*.md"))
            rows.append(
                {
                    "generator": "multihop",
                    "size": f"{files:,} files",
                    "seconds": round(secs, 3),
                    "MB/s": None,
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                }
            )
            shutil.rmtree(d)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    meta: dict[str, Any] = {"load_avg": os.getloadavg(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"rows": rows, **meta}, indent=1))
        return
    print(f"{'generator':<14}{'size':>18}{'seconds':>10}{'MB/s':>9}{'peak RSS MB':>13}")
    for r in rows:
        mbs = "-" if r["MB/s"] is None else f"{r['MB/s']:.1f}"
        print(
            f"{r['generator']:<14}{r['size']:>18}{r['seconds']:>10.3f}{mbs:>9}{r['peak_rss_mb']:>13.1f}"
        )
    print(
        f"load average {meta['load_avg'][0]:.2f} {meta['load_avg'][1]:.2f} {meta['load_avg'][2]:.2f}"
    )


if __name__ == "__main__":
    main()
