"""``holdfast task``: submit, list, show, logs, stop, pause, resume, steer.

The store is the SQLite file under the Holdfast home unless ``--database-url`` (or
``HOLDFAST_DATABASE_URL``) names a PostgreSQL database.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import click

from holdfast.cli.options import FINITE
from holdfast.display import dumps, escape_control
from holdfast.errors import InvalidInput

F = TypeVar("F", bound=Callable[..., Any])


def db_option(fn: F) -> F:
    return click.option(
        "--database-url",
        default=None,
        metavar="URL",
        help="postgresql://... or a SQLite path (default: HOLDFAST_DATABASE_URL, "
        "else <holdfast home>/holdfast.db).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def open_harness(database_url: str | None, load: tuple[str, ...] = (), signer: Any = None) -> Any:
    """The Harness for a command (imported lazily so ``holdfast --help`` stays fast); its
    receipts are signed with ``signer``, by default the configured key, like every writer's."""
    from holdfast.config import database_url as env_url
    from holdfast.harness import CONFIGURED_KEY, Harness, default_registry

    return Harness.open(
        env_url(database_url),
        signer=CONFIGURED_KEY if signer is None else signer,
        registry=default_registry(load),
    )


def read_json_arg(value: str, what: str) -> Any:
    """JSON given inline, as ``@file``, or ``-`` for standard input."""
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} from {value[1:]}: {exc.strerror}") from exc
    else:
        text = value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from exc


def echo_json(value: Any, *, indent: int | None = 2) -> None:
    """Print JSON (control characters escaped, so stored text cannot act on the terminal)."""
    click.echo(dumps(value, indent=indent, sort_keys=True, default=str, ensure_ascii=False))


def echo(text: object, *, err: bool = False) -> None:
    """Print a line that may quote stored, model- or user-written text."""
    click.echo(escape_control(text), err=err)


def receipt_fields(row: Any) -> dict[str, Any]:
    """A receipt's body for display; one that is not a JSON object shows as what it is instead
    of failing the command (``receipts verify`` names it)."""
    try:
        data = json.loads(row.body)
    except (TypeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return {"seq": row.seq, "kind": "(unreadable receipt)", "payload": {}, "ts": 0}
    return data


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    d = max(0.0, time.time() - ts)
    return f"{d:.0f}s" if d < 120 else f"{d / 60:.0f}m" if d < 7200 else f"{d / 3600:.1f}h"


class _TaskGroup(click.Group):
    """``task`` plus ``working-set``, which lives with the agent's CLI and is imported on use."""

    _LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "working-set": ("holdfast.cli.run", "working_set")
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._LAZY:
            import importlib

            module, attr = self._LAZY[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_TaskGroup)
def task() -> None:
    """Durable tasks: submit, list, show, logs, and steer them (stop, pause, resume, steer)."""


@task.command()
@click.argument("kind", required=False)
@click.option("--spec", "spec_arg", metavar="JSON|@FILE|-", help="A whole task spec as JSON.")
@click.option("--goal", default=None)
@click.option("--input", "input_arg", metavar="JSON|@FILE|-", help="The kind's input.")
@click.option("--policy", "policy_arg", metavar="JSON|@FILE|-", help="The permission policy.")
@click.option("--workspace", type=click.Path(), default=None)
@click.option("--queue", default=None)
@click.option("--priority", type=int, default=None)
@click.option("--max-attempts", type=int, default=None)
@click.option("--budget-steps", type=int, default=None)
@click.option("--budget-tokens", type=int, default=None)
@click.option("--budget-usd", type=FINITE, default=None)
@click.option("--budget-wall", type=FINITE, default=None, help="Seconds of running time.")
@click.option("--idempotency-key", default=None, help="A repeat with the same key is a no-op.")
@click.option("--load", multiple=True, metavar="MODULE:ATTR", help="Register a task kind.")
@db_option
@json_option
def submit(
    kind: str | None,
    spec_arg: str | None,
    goal: str | None,
    input_arg: str | None,
    policy_arg: str | None,
    workspace: str | None,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
    budget_steps: int | None,
    budget_tokens: int | None,
    budget_usd: float | None,
    budget_wall: float | None,
    idempotency_key: str | None,
    load: tuple[str, ...],
    database_url: str | None,
    as_json: bool,
) -> None:
    """Queue a task of KIND (or the kind named in --spec)."""
    spec: dict[str, Any] = {}
    if spec_arg is not None:
        raw = read_json_arg(spec_arg, "--spec")
        if not isinstance(raw, dict):
            raise InvalidInput("--spec must be a JSON object")
        spec.update(raw)
    overrides = {
        "kind": kind,
        "goal": goal,
        "workspace": workspace,
        "queue": queue,
        "priority": priority,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
        "input": read_json_arg(input_arg, "--input") if input_arg is not None else None,
        "policy": read_json_arg(policy_arg, "--policy") if policy_arg is not None else None,
    }
    spec.update({k: v for k, v in overrides.items() if v is not None})
    budget = dict(spec.get("budget") or {})
    for name, v in (
        ("steps", budget_steps),
        ("tokens", budget_tokens),
        ("usd", budget_usd),
        ("wall_s", budget_wall),
    ):
        if v is not None:
            budget[name] = v
    if budget:
        spec["budget"] = budget
    if "kind" not in spec:
        raise InvalidInput("name the task kind: holdfast task submit KIND (or --spec with 'kind')")
    with open_harness(database_url, load) as h:
        row = h.submit(spec, by="cli")
    if as_json:
        echo_json(row.to_dict())
    else:
        echo(row.id)


@task.command("list")
@click.option("--status", default=None)
@click.option("--queue", default=None)
@click.option("--limit", type=int, default=50)
@db_option
@json_option
def list_(
    status: str | None, queue: str | None, limit: int, database_url: str | None, as_json: bool
) -> None:
    """List recent tasks."""
    from holdfast.harness import TASK_STATUSES

    if status is not None and status not in TASK_STATUSES:
        raise InvalidInput(f"--status must be one of {', '.join(TASK_STATUSES)}")
    with open_harness(database_url) as h:
        rows = h.list_tasks(status=status, queue=queue, limit=limit)
    if as_json:
        echo_json([r.to_dict() for r in rows])
        return
    for r in rows:
        goal = str(r.spec.get("goal") or "")[:50]
        echo(
            f"{r.id}  {r.status:<16} {r.kind:<10} {r.queue:<10} "
            f"attempts={r.attempts} updated={_age(r.updated_at)}  {goal}"
        )


@task.command()
@click.argument("task_id")
@db_option
@json_option
def show(task_id: str, database_url: str | None, as_json: bool) -> None:
    """Show a task: status, lease, usage, steps, and what it waits for."""
    with open_harness(database_url) as h:
        row = h.get(task_id)
        steps = h.steps(task_id)
    if as_json:
        out = row.to_dict()
        out["steps"] = [s.__dict__ for s in steps]
        echo_json(out)
        return
    echo(f"task      {row.id}  ({row.kind}, queue {row.queue})")
    echo(f"status    {row.status}   attempts {row.attempts}/{row.max_attempts}")
    if row.spec.get("goal"):
        echo(f"goal      {row.spec['goal']}")
    if row.lease_owner:
        left = (row.lease_expires or 0) - time.time()
        echo(f"lease     {row.lease_owner} (expires in {left:.0f}s)")
    echo(f"usage     {json.dumps(row.usage, sort_keys=True)}")
    if row.waiting:
        echo(f"waiting   {row.waiting.get('message')}")
    if row.error:
        echo(f"error     [{row.error.get('code')}] {row.error.get('message')}")
    if row.result is not None:
        echo(f"result    {json.dumps(row.result, sort_keys=True, ensure_ascii=False)[:500]}")
    echo(f"receipts  {row.head_seq} (head {row.head_hash[:16]})")
    for s in steps:
        echo(f"  step {s.name:<32} {s.tool:<22} {s.status}")


@task.command()
@click.argument("task_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task ends.")
@db_option
@json_option
def logs(task_id: str, follow: bool, database_url: str | None, as_json: bool) -> None:
    """Print a task's receipts as a readable log (JSON lines with --json)."""
    with open_harness(database_url) as h:
        after = 0
        while True:
            for r in h.receipts(task_id, after_seq=after):
                after = r.seq
                d = receipt_fields(r)
                if as_json:
                    echo_json(d, indent=None)
                    continue
                ts = d.get("ts")
                stamp = (
                    time.strftime("%H:%M:%S", time.localtime(ts))
                    if isinstance(ts, int | float) and abs(ts) < 1e11
                    else "--:--:--"
                )
                step = f" [{d['step']}]" if d.get("step") else ""
                payload = json.dumps(d.get("payload"), sort_keys=True, ensure_ascii=False)
                echo(f"{r.seq:>5} {stamp} {d.get('kind')!s:<18}{step} {payload[:160]}")
            if not follow or h.get(task_id).terminal:
                return
            time.sleep(0.5)


def _steer(task_id: str, kind: str, message: str, database_url: str | None, as_json: bool) -> None:
    with open_harness(database_url) as h:
        outcome = h.steer(task_id, kind, message, by="cli")
        status = h.get(task_id).status
    if as_json:
        echo_json({"task": task_id, "command": kind, "outcome": outcome, "status": status})
    elif outcome == "applied":
        echo(f"{kind}: applied, task {task_id} is now {status}")
    else:
        echo(f"{kind}: sent, applied at the task's next step boundary")


@task.command()
@click.argument("task_id")
@db_option
@json_option
def stop(task_id: str, database_url: str | None, as_json: bool) -> None:
    """Stop a task (cancels in-flight model calls and jobs of a running task)."""
    _steer(task_id, "stop", "", database_url, as_json)


@task.command()
@click.argument("task_id")
@db_option
@json_option
def pause(task_id: str, database_url: str | None, as_json: bool) -> None:
    """Pause a task at its next step boundary; its lease is released."""
    _steer(task_id, "pause", "", database_url, as_json)


@task.command()
@click.argument("task_id")
@db_option
@json_option
def resume(task_id: str, database_url: str | None, as_json: bool) -> None:
    """Put a paused task back in the queue."""
    _steer(task_id, "resume", "", database_url, as_json)


@task.command()
@click.argument("task_id")
@click.argument("message")
@db_option
@json_option
def steer(task_id: str, message: str, database_url: str | None, as_json: bool) -> None:
    """Send MESSAGE to a task; its runner reads it at the next step boundary."""
    if message == "-":
        message = sys.stdin.read()
    _steer(task_id, "message", message, database_url, as_json)
