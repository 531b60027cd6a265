"""Knowledge memory on its two deployments side by side: Markdown files with the SQLite index
(embedded) and PostgreSQL as the truth (a PostgreSQL control plane).

For each backend: the bulk load of ``--items`` synthetic items (batches of ``--batch``), the
latency of a single write (``add`` of a short fact with de-duplication, claim checks and
observations on, into the full store), and recall latency (hybrid and keyword-only), p50/p95.
PostgreSQL runs on a throwaway local cluster (Debian's PostgreSQL binaries, over a Unix socket).
The embedder is the hashed bag-of-words one of ``memory_scale.py`` (384 float32 dimensions, no
model), so the figures are the stores' own costs.

Usage::

    python benchmarks/memory_backends.py [--items 10000] [--queries 100] [--writes 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_scale import HashedEmbedder, pct, synth


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(1000 * pct(values, 0.5), 2), "p95": round(1000 * pct(values, 0.95), 2)}


def measure(store: Any, corpus: list[tuple[str, dict[str, Any]]], args: Any) -> dict[str, Any]:
    """Load ``corpus``, then time single writes and recall on ``store``."""
    from dataclasses import replace

    out: dict[str, Any] = {}
    bulk_config = store.config
    store.config = replace(bulk_config, check_claims=False, observations=False)
    t0 = time.perf_counter()
    for i in range(0, len(corpus), args.batch):
        store.add_many(corpus[i : i + args.batch], dedup=False)
    load_s = time.perf_counter() - t0
    store.config = bulk_config
    out["load_items_per_s"] = round(len(corpus) / load_s, 1)
    rng = random.Random(11)
    queries = []
    for _ in range(args.queries):
        words = rng.choice(corpus)[0].split()
        queries.append(f"who {words[2]} the {words[4]} {words[5]} in {words[7]}?")
    store.search("warm up the vector matrix", namespace="scale")
    for mode, arms in (
        ("hybrid", ("keyword", "dense", "entity", "time")),
        ("keyword", ("keyword",)),
    ):
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            store.search(q, namespace="scale", limit=10, arms=arms)
            lat.append(time.perf_counter() - t0)
        out[f"recall_{mode}_ms"] = _ms(lat)
    single = []
    for n in range(args.writes):
        t0 = time.perf_counter()
        store.add(f"Short note {n}: the standup moved to 9:45.", namespace="scale", kind="fact")
        single.append(time.perf_counter() - t0)
    out["write_ms"] = _ms(single)
    out["items"] = store.stats("scale")["items"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--writes", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from holdfast.memory import DatabaseMemoryStore, MemoryConfig, MemoryStore
    from holdfast.store import open_url
    from holdfast.testing.postgres import PostgresCluster, find_bin_dir

    rng = random.Random(7)
    corpus = [synth(rng, n) for n in range(args.items)]
    report: dict[str, Any] = {"items": args.items, "embedder": "hashed-384", "backends": {}}
    with tempfile.TemporaryDirectory(prefix="holdfast-backends-") as tmp:
        files = MemoryStore(
            MemoryConfig(root=Path(tmp) / "memory", db_path=Path(tmp) / "holdfast.db"),
            embedder=HashedEmbedder(),
        )
        try:
            report["backends"]["sqlite+markdown"] = measure(files, corpus, args)
        finally:
            files.close()
        if find_bin_dir() is None:
            report["backends"]["postgres"] = "skipped: no PostgreSQL server binaries"
        else:
            with PostgresCluster() as pg:
                url = pg.create_database("bench")
                db = DatabaseMemoryStore(
                    MemoryConfig(root=Path(tmp) / "unused"),
                    backend=open_url(url),
                    embedder=HashedEmbedder(),
                )
                try:
                    report["backends"]["postgres"] = measure(db, corpus, args)
                finally:
                    db.close()
    report["machine"] = "2 cores shared with other work (loaded), Python 3.11, PostgreSQL 15"
    report["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cols = (
        "load items/s",
        "write p50",
        "write p95",
        "hybrid p50",
        "hybrid p95",
        "kw p50",
        "kw p95",
    )
    print(f"{args.items} items, hashed 384-d embedder; latencies in ms; {report['machine']}")
    print(f"{'backend':<18}" + "".join(f"{c:>14}" for c in cols))
    for name, r in report["backends"].items():
        if isinstance(r, str):
            print(f"{name:<18}{r}")
            continue
        cells = (
            r["load_items_per_s"],
            r["write_ms"]["p50"],
            r["write_ms"]["p95"],
            r["recall_hybrid_ms"]["p50"],
            r["recall_hybrid_ms"]["p95"],
            r["recall_keyword_ms"]["p50"],
            r["recall_keyword_ms"]["p95"],
        )
        print(f"{name:<18}" + "".join(f"{c:>14}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
