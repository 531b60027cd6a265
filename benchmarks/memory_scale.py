"""Scale benchmark for Holdfast's knowledge memory: 100,000 synthetic items in one namespace.

Reports batch write throughput, single-item write latency (p50/p95, a short item with the
configured embedder, on the full store), recall latency p50/p95 (hybrid and keyword-only), the
size of the index and of the Markdown files, and the time a full reindex takes.

Usage::

    python benchmarks/memory_scale.py [--items 100000] [--embedder local|none|fake] [--json]

``--embedder hashed`` uses a deterministic hashed bag-of-words embedder with the local model's
shape (384 float32 dimensions), so the index, the vector matrix and recall cost the same without
the model's inference time; the model's own cost (one short query, and a batch) is then measured
separately with ``--model-sample`` and reported beside it. ``local`` runs the model throughout.

Items are deterministic (seeded) short statements about synthetic people, projects and places,
spread over a year of mention times, so runs are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FIRST = [
    "Ada",
    "Bruno",
    "Chen",
    "Dana",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivan",
    "Jia",
    "Kofi",
    "Lena",
    "Milo",
    "Nia",
    "Omar",
    "Pia",
    "Quin",
    "Rosa",
    "Sami",
    "Tara",
]
LAST = [
    "Abe",
    "Berg",
    "Cruz",
    "Diaz",
    "Egan",
    "Fox",
    "Gill",
    "Hale",
    "Ito",
    "Jain",
    "Kerr",
    "Lund",
    "Moss",
    "Nash",
    "Ortiz",
    "Park",
]
VERBS = [
    "reviewed",
    "fixed",
    "deployed",
    "designed",
    "tested",
    "documented",
    "refactored",
    "measured",
    "migrated",
    "planned",
]
THINGS = [
    "billing service",
    "search index",
    "login flow",
    "payment retries",
    "cache layer",
    "report builder",
    "mobile app",
    "data pipeline",
    "alerting rules",
    "release process",
    "onboarding guide",
    "backup job",
]
PLACES = ["Berlin", "Lisbon", "Oslo", "Lagos", "Quito", "Pune", "Osaka", "Perth", "Tunis", "Lima"]
DETAILS = [
    "after the outage",
    "before the audit",
    "with the new vendor",
    "for the spring launch",
    "using a feature flag",
    "behind a canary",
    "with two reviewers",
    "during the offsite",
    "to cut latency",
    "to reduce cost",
    "at the customer's request",
    "ahead of schedule",
]


def synth(rng: random.Random, n: int) -> tuple[str, dict[str, Any]]:
    person = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    text = (
        f"{person} {rng.choice(VERBS)} the {rng.choice(THINGS)} in {rng.choice(PLACES)} "
        f"{rng.choice(DETAILS)} (ticket T-{n})."
    )
    mention = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n * 5 + rng.randint(0, 4))
    kind = "episode" if n % 3 else "observation"
    return text, {"namespace": "scale", "kind": kind, "mention_time": mention.isoformat()}


class HashedEmbedder:
    """Deterministic 384-dimension hashed bag-of-words vectors (no model): isolates store costs."""

    name = "hashed-384"
    dim = 384

    def embed(self, texts: list[str]) -> Any:
        import numpy as np

        from holdfast.testing import embed_text

        return np.asarray([embed_text(t, self.dim) for t in texts], dtype=np.float32)


def model_cost(n: int, corpus: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The local model's cost: one short query at a time (p50/p95) and a batch of 500 items."""
    from holdfast.memory import LocalEmbedder

    emb = LocalEmbedder()
    emb.embed(["warm up"])
    single = []
    for text, _ in corpus[:n]:
        t0 = time.perf_counter()
        emb.embed([text])
        single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    emb.embed([t for t, _ in corpus[:500]])
    batch_s = time.perf_counter() - t0
    return {
        "single_ms": {
            "p50": round(1000 * pct(single, 0.5), 2),
            "p95": round(1000 * pct(single, 0.95), 2),
        },
        "batch_items_per_s": round(500 / batch_s, 1),
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--embedder", default="local")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--single-writes", type=int, default=200)
    ap.add_argument("--skip-reindex", action="store_true")
    ap.add_argument(
        "--model-sample", type=int, default=0, help="measure the local model on N queries"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from holdfast.memory import MemoryConfig, MemoryStore

    rng = random.Random(7)
    report: dict[str, Any] = {"items": args.items, "embedder": args.embedder}
    with tempfile.TemporaryDirectory(prefix="holdfast-scale-") as tmp:
        root, db = Path(tmp) / "memory", Path(tmp) / "holdfast.db"
        embedder: Any = HashedEmbedder() if args.embedder == "hashed" else None
        store = MemoryStore(
            MemoryConfig(root=root, db_path=db, embedder=args.embedder), embedder=embedder
        )
        if store.embedder.dim:
            store.embedder.embed(["warm up"])
        corpus = [synth(rng, n) for n in range(args.items)]
        started = time.perf_counter()
        for i in range(0, len(corpus), args.batch):
            store.add_many(corpus[i : i + args.batch], dedup=False)
            if not args.json and (i // args.batch) % 20 == 0:
                done = i + args.batch
                rate = done / (time.perf_counter() - started)
                print(f"  wrote {min(done, args.items)} items, {rate:.0f} items/s", file=sys.stderr)
        write_s = time.perf_counter() - started
        report["batch_write_s"] = round(write_s, 1)
        report["batch_write_items_per_s"] = round(args.items / write_s, 1)

        queries = []
        for _ in range(args.queries):
            text = rng.choice(corpus)[0]
            words = text.split()
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
            report[f"recall_{mode}_ms"] = {
                "p50": round(1000 * pct(lat, 0.5), 2),
                "p95": round(1000 * pct(lat, 0.95), 2),
            }

        single = []
        for n in range(args.single_writes):
            t0 = time.perf_counter()
            store.add(
                f"Short note {n}: the standup moved to 9:45.",
                namespace="scale",
                kind="fact",
                dedup=True,
            )
            single.append(time.perf_counter() - t0)
        report["single_write_ms"] = {
            "p50": round(1000 * pct(single, 0.5), 2),
            "p95": round(1000 * pct(single, 0.95), 2),
        }

        store.db.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        report["index_bytes"] = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        report["markdown_bytes"] = dir_bytes(root)
        report["vectors"] = store.stats("scale")["vectors"]
        if not args.skip_reindex:
            t0 = time.perf_counter()
            rep = store.reindex("scale")
            report["reindex_s"] = round(time.perf_counter() - t0, 1)
            report["reindex_items"] = rep.items_indexed
        store.close()
    if args.model_sample:
        report["local_model"] = model_cost(args.model_sample, corpus)
    report["machine"] = "2 cores shared, Python 3.11"
    report["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:<26} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
