"""Reports: one run as JSON or CSV, and several runs side by side.

A side-by-side report lines tasks up by id across runs (typically the RLM run and its plain-model
baseline over the same seed), showing each run's score, tokens, USD and wall time per task, and
per run the mean score over the tasks it scored. A baseline task whose input does not fit the
model's window shows ``does not fit`` and is left out of that run's mean (the count of such tasks
is shown beside it), never counted as zero or as a success. Runs made with scripted models carry
``scripted`` in their label.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from holdfast.evals.store import EvalStore, RunRow, TaskResult

CSV_FIELDS = [
    "run_id",
    "suite",
    "mode",
    "model",
    "scripted",
    "task_id",
    "status",
    "score",
    "input_tokens",
    "output_tokens",
    "usd",
    "wall_s",
    "iterations",
    "trace_id",
    "harness_task",
    "category",
]


def label(run: RunRow) -> str:
    scripted = " (scripted)" if run.scripted else ""
    return f"{run.run_id} {run.mode} {run.model}{scripted}"


def run_report(store: EvalStore, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    results = store.results(run.run_id)
    return {
        "run": run.to_dict(),
        "label": label(run),
        "scripted": run.scripted,
        "summary": run.summary,
        "results": [r.to_dict() for r in results],
    }


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    run = report["run"]
    rows = []
    for r in report["results"]:
        rows.append(
            {
                "run_id": run["run_id"],
                "suite": run["suite"],
                "mode": run["mode"],
                "model": run["model"],
                "scripted": run["scripted"],
                "task_id": r["task_id"],
                "status": r["status"],
                "score": "" if r["score"] is None else r["score"],
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
                "usd": r["usd"],
                "wall_s": r["wall_s"],
                "iterations": r["iterations"],
                "trace_id": r["trace_id"] or "",
                "harness_task": r["harness_task"] or "",
                "category": (r.get("meta") or {}).get("category", ""),
            }
        )
    return rows


def write_csv(report: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(report))


def cell(result: TaskResult | None) -> str:
    if result is None:
        return "-"
    if result.status == "does_not_fit":
        return "does not fit"
    if result.score is None:
        return result.status
    mark = "" if result.status == "ok" else f" ({result.status})"
    return f"{result.score:.3f}{mark}"


def compare(store: EvalStore, run_ids: list[str]) -> dict[str, Any]:
    """Runs side by side: per-task cells and per-run totals (see the module docstring)."""
    runs = [store.get_run(r) for r in run_ids]
    results = {run.run_id: {x.task_id: x for x in store.results(run.run_id)} for run in runs}
    order: list[str] = []
    for run in runs:
        for task_id in results[run.run_id]:
            if task_id not in order:
                order.append(task_id)
    rows = []
    for task_id in order:
        row: dict[str, Any] = {"task_id": task_id, "runs": {}}
        for run in runs:
            r = results[run.run_id].get(task_id)
            row["runs"][run.run_id] = (
                None
                if r is None
                else {
                    "cell": cell(r),
                    "status": r.status,
                    "score": r.score,
                    "tokens": r.input_tokens + r.output_tokens,
                    "usd": r.usd,
                    "wall_s": r.wall_s,
                    "iterations": r.iterations,
                }
            )
        rows.append(row)
    totals = {}
    for run in runs:
        rs = list(results[run.run_id].values())
        scored = [r for r in rs if r.score is not None]
        totals[run.run_id] = {
            "label": label(run),
            "scripted": run.scripted,
            "mean_score": round(sum(r.score or 0 for r in scored) / len(scored), 4)
            if scored
            else None,
            "scored": len(scored),
            "does_not_fit": sum(1 for r in rs if r.status == "does_not_fit"),
            "tokens": sum(r.input_tokens + r.output_tokens for r in rs),
            "usd": round(sum(r.usd for r in rs), 6),
            "wall_s": round(sum(r.wall_s for r in rs), 3),
        }
    return {"runs": [run.to_dict() for run in runs], "rows": rows, "totals": totals}


def render_compare(data: dict[str, Any]) -> Any:
    """A Rich table of :func:`compare`'s result; every value from outside is shown as text."""
    from rich.table import Table

    from holdfast.display import text

    table = Table(title="eval runs side by side", show_lines=False)
    table.add_column("task")
    run_ids = [r["run_id"] for r in data["runs"]]
    for rid in run_ids:
        table.add_column(text(data["totals"][rid]["label"]), justify="right")
    for row in data["rows"]:
        cells = [text(row["task_id"])]
        for rid in run_ids:
            c = row["runs"].get(rid)
            cells.append(
                text(
                    "-"
                    if c is None
                    else f"{c['cell']} · {c['tokens']:,} tok · ${c['usd']:.4f} · {c['wall_s']:.2f} s"
                )
            )
        table.add_row(*cells)
    means = [text("mean score")]
    for rid in run_ids:
        t = data["totals"][rid]
        m = "n/a" if t["mean_score"] is None else f"{t['mean_score']:.3f}"
        fit = f" ({t['does_not_fit']} do not fit)" if t["does_not_fit"] else ""
        means.append(text(f"{m} over {t['scored']}{fit} · ${t['usd']:.4f}"))
    table.add_row(*means, style="bold")
    return table
