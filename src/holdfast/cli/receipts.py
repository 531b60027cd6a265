"""``holdfast receipts show TASK`` and ``holdfast receipts verify TASK`` (exit 3 when broken)."""

from __future__ import annotations

import json
import sys

import click

from holdfast.cli.task import db_option, echo_json, json_option, open_harness


@click.group()
def receipts() -> None:
    """Show and verify a task's hash-chained receipts."""


@receipts.command()
@click.argument("task_id")
@db_option
@json_option
def show(task_id: str, database_url: str | None, as_json: bool) -> None:
    """Print every receipt with its hash (JSON lines with --json)."""
    with open_harness(database_url) as h:
        rows = h.receipts(task_id)
    for r in rows:
        if as_json:
            click.echo(
                json.dumps(
                    {"body": r.data(), "hash": r.hash, "sig": r.sig, "key_id": r.key_id},
                    sort_keys=True,
                )
            )
        else:
            d = r.data()
            step = f" [{d['step']}]" if d.get("step") else ""
            click.echo(f"{r.seq:>6} {r.hash[:16]} {d['kind']}{step} by {d['actor']}")


@receipts.command()
@click.argument("task_id")
@click.option(
    "--key",
    "key_file",
    type=click.Path(),
    default=None,
    help="HMAC secret or Ed25519 PEM key (public is enough) to check signatures.",
)
@click.option("--require-signatures", is_flag=True, help="Fail on any unsigned receipt.")
@db_option
@json_option
def verify(
    task_id: str,
    key_file: str | None,
    require_signatures: bool,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Check the chain: exit 0 when intact, 3 naming the first bad receipt otherwise."""
    from holdfast.harness import load_signer

    signer = load_signer(key_file) if key_file else None
    with open_harness(database_url) as h:
        result = h.verify(task_id, signer=signer, require_signatures=require_signatures)
    if as_json:
        echo_json({"task": task_id, **result.to_dict()})
    elif result.ok:
        signed = f", {result.signed} signatures valid" if signer else ""
        click.echo(f"ok: {result.count} receipts chain to head {result.head_hash[:16]}{signed}")
    else:
        click.echo(f"BROKEN at receipt {result.bad_seq}: {result.reason}", err=True)
    if not result.ok:
        sys.exit(3)
