"""Contradiction detection benchmark: precision and recall of the rule-based detector
(:func:`holdfast.memory.contradict.compare`, no model) on hand-written statement pairs.

Two sets, both in ``benchmarks/data`` and written for this benchmark (not taken from any
dataset): ``contradictions.jsonl`` (120 pairs: negations, antonyms, changed values and names
after single-valued predicates, and hard negatives: other subjects, added detail, repeatable
events, compatible preferences), which the rules were developed against, and
``contradictions_heldout.jsonl`` (40 pairs) written afterwards and not tuned on. A pair counts
as detected when ``compare(a, b)`` says ``contradicts``.

Usage::

    python benchmarks/memory_contradictions.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
SETS = ("contradictions.jsonl", "contradictions_heldout.jsonl")


def evaluate(path: Path) -> dict[str, Any]:
    from holdfast.memory.contradict import compare

    tp = fp = fn = tn = 0
    errors: list[dict[str, str]] = []
    started = time.perf_counter()
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    for row in rows:
        verdict = compare(row["a"], row["b"])
        pred, gold = verdict.contradicts, row["label"] == "contradicts"
        tp += pred and gold
        fp += pred and not gold
        fn += gold and not pred
        tn += not pred and not gold
        if pred != gold:
            errors.append(
                {"a": row["a"], "b": row["b"], "label": row["label"], "why": verdict.reason}
            )
    elapsed = time.perf_counter() - started
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "set": path.name,
        "pairs": len(rows),
        "contradictions": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(100 * precision, 1),
        "recall": round(100 * recall, 1),
        "f1": round(200 * precision * recall / (precision + recall), 1) if tp else 0.0,
        "us_per_pair": round(1e6 * elapsed / max(1, len(rows)), 1),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    report = {"sets": [evaluate(DATA / name) for name in SETS]}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    head = f"{'set':<30} {'pairs':>5} {'P':>6} {'R':>6} {'F1':>6} {'TP':>4} {'FP':>4} {'FN':>4} {'us/pair':>8}"
    print(head)
    print("-" * len(head))
    for r in report["sets"]:
        print(
            f"{r['set']:<30} {r['pairs']:>5} {r['precision']:>6.1f} {r['recall']:>6.1f} "
            f"{r['f1']:>6.1f} {r['tp']:>4} {r['fp']:>4} {r['fn']:>4} {r['us_per_pair']:>8.1f}"
        )
    for r in report["sets"]:
        for e in r["errors"]:
            print(f"miss in {r['set']}: {e['label']}: {e['a']!r} / {e['b']!r} ({e['why']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
