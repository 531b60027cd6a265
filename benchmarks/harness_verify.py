"""Verify time for one task with one million receipts (unsigned, and HMAC-signed), on SQLite
(and on PostgreSQL with --backends sqlite,postgres).

The chain is sealed in Python and bulk-imported; verification streams it back from the store in
batches and checks every hash, link and signature plus the checkpointed head.

Usage: python benchmarks/harness_verify.py [--receipts 1000000] [--backends sqlite]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from holdfast.harness import Harness, HMACSigner, ReceiptSealer, open_store
from holdfast.harness.rows import Draft, SealedReceipt
from holdfast.testing.kinds import kinds_registry
from holdfast.testing.postgres import PostgresCluster, find_bin_dir


def build(url: str, n: int, signer: HMACSigner | None) -> tuple[Harness, str, float, float]:
    h = Harness(open_store(url, signer=signer), kinds_registry(), signer=signer)
    t = h.submit({"kind": "noop"})
    sealer = ReceiptSealer(signer)
    prev = h.get(t.id).head_hash
    t0 = time.perf_counter()
    batch: list[SealedReceipt] = []
    seal_s = 0.0
    for seq in range(2, n + 1):
        s0 = time.perf_counter()
        s = sealer.seal(
            t.id,
            seq,
            prev,
            1.8e9 + seq,
            Draft("progress", {"n": seq, "note": prev[:32]}, actor="runner"),
            "queued",
        )
        seal_s += time.perf_counter() - s0
        prev = s.hash
        batch.append(s)
        if len(batch) == 50_000:
            h.store.import_receipts(t.id, batch)
            batch = []
    h.store.import_receipts(t.id, batch)
    return h, t.id, seal_s, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receipts", type=int, default=1_000_000)
    ap.add_argument("--backends", default="sqlite")
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
            try:
                for label, signer in (
                    ("unsigned", None),
                    ("hmac", HMACSigner(b"benchmark-secret-0123456789")),
                ):
                    if cluster is not None:
                        url = cluster.create_database(f"verify_{label}")
                    else:
                        url = str(Path(tmp) / f"verify-{label}.db")
                    h, tid, seal_s, build_s = build(url, args.receipts, signer)
                    t0 = time.perf_counter()
                    result = h.verify(tid)
                    verify_s = time.perf_counter() - t0
                    assert result.ok and result.count == args.receipts, result
                    rows.append((backend, label, result.count, seal_s, build_s, verify_s))
                    print(
                        f"  {backend} {label}: verified {result.count} in {verify_s:.1f} s",
                        flush=True,
                    )
                    h.close()
            finally:
                if cluster is not None:
                    cluster.destroy()
    print()
    print(
        "| backend | signing | receipts | seal (s) | seal + import (s) | verify (s) | verified receipts/s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for b, label, n, seal_s, build_s, verify_s in rows:
        print(
            f"| {b} | {label} | {n:,} | {seal_s:.1f} | {build_s:.1f} | {verify_s:.1f} | {n / verify_s:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
