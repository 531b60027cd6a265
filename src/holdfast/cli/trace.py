"""``holdfast trace export``: one RLM trace or agent task as training JSONL."""

from __future__ import annotations

import click


@click.group()
def trace() -> None:
    """Traces as training data."""


@trace.command("export")
@click.argument("trace_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["openai", "trl", "memory-ops"]),
    default="openai",
    show_default=True,
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write JSONL here (default: stdout)."
)
@click.option("--db", help="The Holdfast store (default: <home>/holdfast.db).")
def export(trace_id: str, fmt: str, output: str | None, db: str | None) -> None:
    """Write TRACE_ID (an RLM trace ``rlm-...`` or an agent task id) as JSONL."""
    from holdfast.cli.eval import _db, _write_jsonl
    from holdfast.evals.export import export_trace

    count = _write_jsonl(export_trace(_db(db), trace_id, fmt), output)
    click.echo(f"{count} rows", err=True)
