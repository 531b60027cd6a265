"""LoCoMo retrieval benchmark for Holdfast's knowledge memory.

Each conversation is ingested through the public ``MemoryStore`` API as episode items, one per
turn (speaker, text and any shared-photo caption; the session's date as mention time), into its
own namespace. Each question is then a recall query, with no model call at write or query time.
Reported, overall and per category, for keyword-only, dense-only and hybrid recall:
turn-level evidence recall@1/5/10/50, MRR, session-level recall@10; plus ingest throughput and
recall latency p50/p95.

Recall is the fraction of a question's evidence turns found in the top k, averaged over
questions; questions whose evidence ids name no existing turn are left out.

Usage::

    python benchmarks/memory_locomo.py [--data PATH] [--embedder local|none] [--json]

The data (CC BY-NC 4.0, evaluation only) is read from ../shared/benchmarks/locomo/locomo_dev.json
relative to the repository by default and never copied into it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "benchmarks" / "locomo" / "locomo_dev.json"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
MODES = {
    "keyword": ("keyword",),
    "dense": ("dense",),
    "hybrid": ("keyword", "dense", "entity", "time"),
}
KS = (1, 5, 10, 50)


def session_date(raw: str) -> str:
    """'1:56 pm on 8 May, 2023' as an ISO time (UTC)."""
    import dateparser

    parsed = dateparser.parse(raw, languages=["en"], settings={"RETURN_AS_TIMEZONE_AWARE": False})
    if parsed is None:
        raise ValueError(f"cannot read the session date {raw!r}")
    return parsed.isoformat() + "+00:00"


def turns_of(conv: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    c = conv["conversation"]
    keys = sorted(
        (k for k in c if re.fullmatch(r"session_\d+", k) and isinstance(c[k], list)),
        key=lambda k: int(k.split("_")[1]),
    )
    return [(c[f"{k}_date_time"], c[k]) for k in keys]


def ingest(store: Any, conv: dict[str, Any], namespace: str) -> tuple[int, float]:
    """Write every turn; returns (turns written, seconds)."""
    n = 0
    started = time.perf_counter()
    for date_raw, turns in turns_of(conv):
        mention = session_date(date_raw)
        entries = []
        for t in turns:
            sess, _, num = t["dia_id"].partition(":")
            text = t["text"]
            if t.get("blip_caption"):
                text += f" [shares a photo: {t['blip_caption']}]"
            entries.append(
                (
                    text,
                    {
                        "namespace": namespace,
                        "kind": "episode",
                        "mention_time": mention,
                        "source": {"session": sess, "turn": int(num), "speaker": t["speaker"]},
                        "trust": "untrusted",
                    },
                )
            )
        store.add_many(entries, dedup=False)
        n += len(entries)
    return n, time.perf_counter() - started


def evaluate(
    store: Any, data: list[dict[str, Any]], modes: list[str], settings: Any
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode in modes:
        per_q: list[dict[str, Any]] = []
        latencies: list[float] = []
        for ci, conv in enumerate(data):
            ns = f"locomo-{ci}"
            existing = {t["dia_id"] for _, turns in turns_of(conv) for t in turns}
            for qa in conv["qa"]:
                evidence = [e for e in qa.get("evidence", []) if e in existing]
                if not evidence:
                    continue
                t0 = time.perf_counter()
                hits = store.search(
                    qa["question"], namespace=ns, limit=max(KS), arms=MODES[mode], settings=settings
                )
                latencies.append(time.perf_counter() - t0)
                ranked = [f"{h.item.source.session}:{h.item.source.turn}" for h in hits]
                per_q.append(score(ranked, evidence, qa["category"]))
        results[mode] = summarise(per_q, latencies)
    return results


def score(ranked: list[str], evidence: list[str], category: int) -> dict[str, Any]:
    ev = set(evidence)
    out: dict[str, Any] = {"category": category}
    for k in KS:
        out[f"r@{k}"] = len(ev & set(ranked[:k])) / len(ev)
    out["mrr"] = next((1.0 / (i + 1) for i, d in enumerate(ranked) if d in ev), 0.0)
    ev_sessions = {e.split(":")[0] for e in ev}
    top_sessions = {d.split(":")[0] for d in ranked[:10]}
    out["s@10"] = len(ev_sessions & top_sessions) / len(ev_sessions)
    return out


def summarise(per_q: list[dict[str, Any]], latencies: list[float]) -> dict[str, Any]:
    def agg(rows: list[dict[str, Any]]) -> dict[str, float]:
        keys = [f"r@{k}" for k in KS] + ["mrr", "s@10"]
        return {k: round(100 * statistics.fmean(r[k] for r in rows), 1) for k in keys} | {
            "n": len(rows)
        }

    lat = sorted(latencies)
    return {
        "overall": agg(per_q),
        "by_category": {
            CATEGORIES[c]: agg([r for r in per_q if r["category"] == c])
            for c in sorted({r["category"] for r in per_q})
        },
        "latency_ms": {
            "p50": round(1000 * lat[len(lat) // 2], 2),
            "p95": round(1000 * lat[int(len(lat) * 0.95)], 2),
        },
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"LoCoMo retrieval: {report['data']} ({report['conversations']} conversations, "
        f"{report['turns']} turns, embedder {report['embedder']})"
    )
    print(f"ingest: {report['ingest_turns_per_s']:.1f} turns/s ({report['ingest_s']:.1f} s)")
    head = f"{'mode':<8} {'slice':<12} {'n':>4} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'R@50':>6} {'MRR':>6} {'S@10':>6}"
    print(head)
    print("-" * len(head))
    for mode, res in report["modes"].items():
        rows = [("overall", res["overall"]), *res["by_category"].items()]
        for name, r in rows:
            print(
                f"{mode:<8} {name:<12} {r['n']:>4} {r['r@1']:>6.1f} {r['r@5']:>6.1f} "
                f"{r['r@10']:>6.1f} {r['r@50']:>6.1f} {r['mrr']:>6.1f} {r['s@10']:>6.1f}"
            )
        print(
            f"{mode:<8} latency p50 {res['latency_ms']['p50']:.1f} ms, "
            f"p95 {res['latency_ms']['p95']:.1f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo JSON file")
    ap.add_argument("--embedder", default="local", help="local | none | openai:<model>@<url>")
    ap.add_argument("--modes", default="keyword,dense,hybrid")
    ap.add_argument("--conversations", type=int, default=0, help="only the first N (0 = all)")
    ap.add_argument("--rrf-k", type=int, default=None)
    ap.add_argument("--weights", default=None, help="keyword,dense,entity,time RRF weights")
    ap.add_argument("--context-weight", type=float, default=None)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"LoCoMo data not found at {args.data}; pass --data", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from holdfast.memory import MemoryConfig, MemoryStore

    data = json.loads(args.data.read_text("utf-8"))
    if args.conversations:
        data = data[: args.conversations]
    modes = [m for m in args.modes.split(",") if m]
    if args.embedder == "none":
        modes = [m for m in modes if m != "dense"]
    with tempfile.TemporaryDirectory(prefix="holdfast-locomo-") as tmp:
        cfg = MemoryConfig(
            root=Path(tmp) / "memory", db_path=Path(tmp) / "holdfast.db", embedder=args.embedder
        )
        settings = cfg.recall
        if args.rrf_k is not None:
            settings = replace(settings, rrf_k=args.rrf_k)
        if args.weights:
            kw, dn, en, tm = (float(x) for x in args.weights.split(","))
            settings = replace(
                settings, keyword_weight=kw, dense_weight=dn, entity_weight=en, time_weight=tm
            )
        if args.context_weight is not None:
            settings = replace(settings, context_weight=args.context_weight)
        store = MemoryStore(cfg)
        if store.embedder.dim:
            store.embedder.embed(["warm up"])
        turns = 0
        ingest_s = 0.0
        for ci, conv in enumerate(data):
            n, s = ingest(store, conv, f"locomo-{ci}")
            turns += n
            ingest_s += s
        report = {
            "data": str(args.data),
            "conversations": len(data),
            "turns": turns,
            "embedder": store.embedder.name,
            "ingest_s": round(ingest_s, 2),
            "ingest_turns_per_s": round(turns / ingest_s, 1),
            "settings": settings.__dict__,
            "modes": evaluate(store, data, modes, settings),
        }
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
