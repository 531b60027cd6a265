"""``holdfast eval``: run suites, list and compare runs, export trajectories.

Exit codes: 0 done, 1 a runtime failure, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from holdfast.cli.options import POSITIVE
from holdfast.errors import UserError


def _db(db: str | None) -> str | None:
    """``--db``, else ``$HOLDFAST_DATABASE_URL``, else None (the Holdfast home's store)."""
    import os

    return db or os.environ.get("HOLDFAST_DATABASE_URL") or None


def _store(db: str | None) -> Any:
    from holdfast.config import default_db_path
    from holdfast.evals.store import EvalStore

    return EvalStore(_db(db) or default_db_path())


@click.group()
def eval() -> None:
    """Evaluation suites: run, report, export."""


@eval.command("suites")
@click.option("--json", "as_json", is_flag=True)
def suites_cmd(as_json: bool) -> None:
    """List the suites and what each measures."""
    from holdfast.display import console, text
    from holdfast.evals.suites import SUITES

    if as_json:
        click.echo(json.dumps([s.__dict__ for s in SUITES.values()], indent=1))
        return
    out = console()
    for s in SUITES.values():
        out.print(
            text(
                f"{s.name} ({s.kind}; --size in {s.size_name}, default {s.default_size:,}): {s.measures}"
            )
        )


@eval.command("run")
@click.argument("suite")
@click.option(
    "--model", "-m", help="provider:model, or 'scripted' (default $HOLDFAST_MODEL, else scripted)."
)
@click.option("--sub-model", help="Model for the RLM's sub-calls (default: the root model).")
@click.option("--n", "n", type=int, default=3, show_default=True, help="Number of tasks.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=int, help="The suite's size knob (see `holdfast eval suites`).")
@click.option(
    "--mode",
    type=click.Choice(["rlm", "plain", "both"]),
    default="rlm",
    show_default=True,
    help="RLM suites: the engine, the plain model given the whole input, or both.",
)
@click.option("--baseline", is_flag=True, help="Same as --mode both.")
@click.option(
    "--context-window",
    type=int,
    default=128_000,
    show_default=True,
    help="The plain model's window in tokens (decides whether the baseline fits).",
)
@click.option("--base-url", help="OpenAI-compatible endpoint for the models.")
@click.option(
    "--isolation",
    type=click.Choice(["namespace", "process"]),
    default="namespace",
    show_default=True,
)
@click.option("--max-iterations", type=int, default=20, show_default=True)
@click.option("--max-usd", type=POSITIVE, help="USD budget per task.")
@click.option(
    "--embedder",
    default="none",
    show_default=True,
    help="Knowledge-memory embedder (local, none...).",
)
@click.option(
    "--memory-policy", help="Agent memory policy: heuristic or model:<provider:model>[@url]."
)
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False),
    help="locomo: a file in LoCoMo's schema.",
)
@click.option("--logprobs", is_flag=True, help="Ask the provider for token log-probabilities.")
@click.option("--token-ids", is_flag=True, help="Ask for token ids (vLLM's return_token_ids).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write <run>.json and <run>.csv here.",
)
@click.option(
    "--db",
    help="The store: a SQLite path or postgresql:// URL (default: <home>/holdfast.db; $HOLDFAST_DATABASE_URL).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs' summaries as JSON.")
def run_cmd(
    suite: str,
    model: str | None,
    sub_model: str | None,
    n: int,
    seed: int,
    size: int | None,
    mode: str,
    baseline: bool,
    context_window: int,
    base_url: str | None,
    isolation: str,
    max_iterations: int,
    max_usd: float | None,
    embedder: str,
    memory_policy: str | None,
    data_file: str | None,
    logprobs: bool,
    token_ids: bool,
    out_dir: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Run SUITE's tasks through the engine and harness, score them, store and report."""
    import os

    from holdfast.evals.runner import EvalConfig, run_eval, write_reports

    chosen = model or os.environ.get("HOLDFAST_MODEL") or "scripted"
    params: dict[str, Any] = {}
    if data_file:
        params["data"] = str(Path(data_file).expanduser().resolve())
    config = EvalConfig(
        suite=suite,
        model=chosen,
        sub_model=sub_model,
        n=n,
        seed=seed,
        size=size,
        mode="both" if baseline else mode,
        context_window=context_window,
        base_url=base_url,
        isolation=isolation,
        max_iterations=max_iterations,
        max_usd=max_usd,
        embedder=embedder,
        memory_policy=memory_policy,
        logprobs=logprobs,
        token_ids=token_ids,
        params=params,
    )
    config.check()
    with _ProgressBar(enabled=sys.stderr.isatty() and not as_json) as bar:
        run_ids = run_eval(config, db_path=_db(db), progress=bar)
    store = _store(db)
    from holdfast.display import console, text
    from holdfast.evals.report import compare, render_compare

    try:
        summaries = [store.get_run(r).to_dict() for r in run_ids]
        if out_dir:
            for r in run_ids:
                write_reports(store, r, Path(out_dir))
        if as_json:
            click.echo(json.dumps(summaries, indent=1, default=repr))
            return
        out = console()
        if config.scripted:
            out.print(
                text(
                    "models: SCRIPTED policies (honest scripted stand-ins, not a model); scores check the path, not reasoning",
                    "yellow",
                )
            )
        out.print(render_compare(compare(store, run_ids)))
        for r in summaries:
            out.print(text(f"{r['run_id']}: {json.dumps(r['summary'])}"))
        out.print(
            text(
                f"compare: holdfast eval report {' '.join(run_ids)}   export: holdfast eval export {run_ids[0]}"
            )
        )
    finally:
        store.close()


class _ProgressBar:
    """A rich progress bar on stderr: tasks done, the current task, the last score."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            from holdfast.display import console

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console(stderr=True),
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("eval", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def __call__(self, task_id: str, done: int, total: int, result: Any) -> None:
        if self._progress is None:
            return
        from holdfast.display import escape_control

        last = "" if result is None or result.score is None else f" (last {result.score:.2f})"
        self._progress.update(
            self._task, total=total, completed=done, description=escape_control(f"{task_id}{last}")
        )


@eval.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--db")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(limit: int, db: str | None, as_json: bool) -> None:
    """Recent eval runs."""
    from holdfast.display import console, text
    from holdfast.evals.report import label

    store = _store(db)
    try:
        runs = store.runs(limit)
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in runs], indent=1, default=repr))
            return
        out = console()
        for r in runs:
            s = r.summary or {}
            out.print(
                text(
                    f"{label(r)}  {r.suite}  n={r.n} seed={r.seed}  {r.status}  mean {s.get('mean_score')}"
                )
            )
    finally:
        store.close()


@eval.command("report")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--db")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    help="Write one CSV with every run's rows.",
)
def report_cmd(
    run_ids: tuple[str, ...], db: str | None, as_json: bool, csv_path: str | None
) -> None:
    """Runs side by side (an RLM run and its plain baseline, two models, two seeds...)."""
    from holdfast.display import console
    from holdfast.evals.report import CSV_FIELDS, compare, csv_rows, render_compare, run_report

    store = _store(db)
    try:
        data = compare(store, list(run_ids))
        if csv_path:
            import csv

            with open(csv_path, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
                writer.writeheader()
                for rid in run_ids:
                    writer.writerows(csv_rows(run_report(store, rid)))
        if as_json:
            click.echo(json.dumps(data, indent=1, default=repr))
            return
        console().print(render_compare(data))
    finally:
        store.close()


@eval.command("export")
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["openai", "trl", "memory-ops"]),
    default="trl",
    show_default=True,
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write JSONL here (default: stdout)."
)
@click.option(
    "--include-unscored", is_flag=True, help="Also tasks without a score (e.g. did not fit)."
)
@click.option("--db")
def export_cmd(
    run_id: str, fmt: str, output: str | None, include_unscored: bool, db: str | None
) -> None:
    """Write an eval run's trajectories as JSONL for trainers."""
    from holdfast.evals.export import export_run

    store = _store(db)
    try:
        rows = export_run(store, run_id, fmt, db_path=_db(db), include_unscored=include_unscored)
        count = _write_jsonl(rows, output)
    finally:
        store.close()
    click.echo(f"{count} rows", err=True)


def _write_jsonl(rows: Any, output: str | None) -> int:
    count = 0
    if output is None:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=True) + "\n")
            count += 1
        return count
    path = Path(output)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=True) + "\n")
                count += 1
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count


def require(value: Any, message: str) -> Any:
    if value is None:
        raise UserError(message)
    return value
