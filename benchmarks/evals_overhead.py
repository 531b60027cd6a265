"""The eval harness's own overhead per task, against a zero-latency scripted model.

For each suite, ``n`` tasks run through ``holdfast.evals.run_eval`` exactly as ``holdfast eval
run`` does (harness task, RLM engine in the box or the agent loop, recording, scoring, store
writes) with the suite's scripted policy, whose replies take no time. Reported per task: the wall
time from submission to stored result, the engine's own wall time inside it (RLM suites), the
difference (submission, lease, receipts, result and call rows: the harness and store's share),
and the model time recorded (zero by construction, so everything else is Holdfast).
Run: ``.venv/bin/python benchmarks/evals_overhead.py [--n 10] [--isolation namespace] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--isolation", default="namespace", choices=["namespace", "process"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="holdfast-bench-evals-"))
    os.environ["HOLDFAST_HOME"] = str(home)
    from holdfast.evals import EvalConfig, EvalStore, run_eval

    cases: list[tuple[str, int | None]] = [
        ("niah-single", 1_000_000),
        ("oolong", 2_000),
        ("multihop", 60),
        ("agent-gated", None),
        ("agent-constraint", 6),
    ]
    rows: list[dict[str, Any]] = []
    db = home / "holdfast.db"
    for suite, size in cases:
        n = args.n if not suite.startswith("agent-constraint") else max(1, args.n // 5)
        # one untimed task first: it writes the suite's input files, which later tasks reuse
        run_eval(EvalConfig(suite=suite, n=1, size=size, isolation=args.isolation), db_path=db)
        (run_id,) = run_eval(
            EvalConfig(suite=suite, n=n, size=size, isolation=args.isolation), db_path=db
        )
        store = EvalStore(db)
        results = store.results(run_id)
        store.close()
        walls = [r.details.get("harness_wall_s", r.wall_s) for r in results]
        engine = [r.wall_s for r in results]
        rows.append(
            {
                "suite": suite,
                "tasks": len(results),
                "mean_score": round(statistics.mean(r.score or 0 for r in results), 3),
                "task_s_p50": round(statistics.median(walls), 4),
                "engine_s_p50": round(statistics.median(engine), 4),
                "harness_store_ms_p50": round(
                    1000 * statistics.median(w - e for w, e in zip(walls, engine, strict=True)), 2
                )
                if not suite.startswith("agent")
                else None,
                "iterations": round(statistics.mean(r.iterations for r in results), 1),
            }
        )
    meta = {"isolation": args.isolation, "load_avg": os.getloadavg(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"rows": rows, **meta}, indent=1))
        return
    print(f"isolation {args.isolation}; model: scripted, zero latency")
    print(
        f"{'suite':<18}{'tasks':>6}{'score':>7}{'task s p50':>12}{'engine s p50':>14}{'harness+store ms':>18}{'turns':>7}"
    )
    for r in rows:
        hs = "-" if r["harness_store_ms_p50"] is None else f"{r['harness_store_ms_p50']:.1f}"
        print(
            f"{r['suite']:<18}{r['tasks']:>6}{r['mean_score']:>7.2f}{r['task_s_p50']:>12.3f}{r['engine_s_p50']:>14.3f}{hs:>18}{r['iterations']:>7}"
        )
    la = meta["load_avg"]
    print(f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


if __name__ == "__main__":
    main()
