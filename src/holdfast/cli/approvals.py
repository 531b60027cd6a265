"""``holdfast approve TASK STEP`` and ``holdfast deny TASK STEP``: single-use, expiring decisions."""

from __future__ import annotations

import getpass

import click

from holdfast.cli.options import POSITIVE
from holdfast.cli.task import db_option, echo, echo_json, json_option, open_harness


def _decide(
    decision: str, task_id: str, step: str, by: str | None, ttl: float, url: str | None, js: bool
) -> None:
    who = by or getpass.getuser()
    with open_harness(url) as h:
        fn = h.approve if decision == "approve" else h.deny
        row = fn(task_id, step, by=who, ttl_s=ttl)
    if js:
        echo_json(row.__dict__)
    else:
        verb = "approved" if decision == "approve" else "denied"
        echo(f"{verb} step {step} of {task_id} (by {who}, valid {ttl:g}s, single use)")


@click.command()
@click.argument("task_id")
@click.argument("step")
@click.option("--by", default=None, help="Who decides (default: the current user).")
@click.option(
    "--ttl", type=POSITIVE, default=3600.0, show_default=True, help="Seconds it stays valid."
)
@db_option
@json_option
def approve(
    task_id: str, step: str, by: str | None, ttl: float, database_url: str | None, as_json: bool
) -> None:
    """Let STEP of TASK_ID run once (it waits in waiting_approval)."""
    _decide("approve", task_id, step, by, ttl, database_url, as_json)


@click.command()
@click.argument("task_id")
@click.argument("step")
@click.option("--by", default=None, help="Who decides (default: the current user).")
@click.option(
    "--ttl", type=POSITIVE, default=3600.0, show_default=True, help="Seconds it stays valid."
)
@db_option
@json_option
def deny(
    task_id: str, step: str, by: str | None, ttl: float, database_url: str | None, as_json: bool
) -> None:
    """Refuse STEP of TASK_ID: the runner sees PermissionDenied when the task resumes."""
    _decide("deny", task_id, step, by, ttl, database_url, as_json)
