"""``holdfast run "goal"``: a long task with the agent; and ``working_set``, mounted as
``holdfast task working-set TASK``.

``run`` enqueues an ``agent`` task and, unless ``--detach``, runs a worker in this process until
the queue is idle, printing a live line per turn (turn, physical session, prompt and output
tokens, cost, roll-overs). Exit codes: 0 succeeded, 1 failed or cancelled, 3 waiting (for an
approval, or paused), 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from holdfast.cli.model_options import check_seconds, model_call_options, parse_prices
from holdfast.cli.options import FINITE
from holdfast.cli.task import db_option, json_option, open_harness, read_json_arg
from holdfast.display import dumps, escape_control
from holdfast.errors import InvalidInput, UserError
from holdfast.harness import WorkerSettings

if TYPE_CHECKING:
    from holdfast.session import SQLSessionStore


@click.command(name="run")
@click.argument("goal")
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False),
    default=None,
    help="The directory the agent works in.",
)
@click.option("--model", "-m", default=None, help="provider:model (default: HOLDFAST_MODEL).")
@click.option("--base-url", default=None, help="An OpenAI-compatible endpoint for the model.")
@click.option(
    "--context-window", type=int, default=None, help="The model's context window in tokens."
)
@click.option(
    "--threshold", type=FINITE, default=None, help="Roll over at this fraction of the window (0.7)."
)
@click.option(
    "--max-turns", type=int, default=None, help="Fail the task after this many turns (500)."
)
@click.option(
    "--memory-namespace", default=None, help="Knowledge-memory namespace (default: 'default')."
)
@click.option("--no-memory", is_flag=True, help="Run without knowledge memory.")
@click.option(
    "--pre-rollover-turn",
    is_flag=True,
    help="Give the model one turn to update its working set before each roll-over.",
)
@click.option(
    "--policy",
    default=None,
    metavar="JSON|@FILE|-",
    help="Permission policy (default: writes inside the workspace and memory allowed).",
)
@click.option(
    "--budget",
    default=None,
    metavar="JSON|@FILE",
    help='Task budget, e.g. {"usd": 2, "wall_s": 3600}.',
)
@model_call_options(defaults=False)
@click.option("--detach", is_flag=True, help="Only enqueue; a `holdfast worker` runs it.")
@db_option
@json_option
def run(
    goal: str,
    workspace: str | None,
    model: str | None,
    base_url: str | None,
    context_window: int | None,
    threshold: float | None,
    max_turns: int | None,
    memory_namespace: str | None,
    no_memory: bool,
    pre_rollover_turn: bool,
    policy: str | None,
    budget: str | None,
    max_output_tokens: int | None,
    call_timeout: float | None,
    cell_timeout: float | None,
    prices: tuple[str, ...],
    unpriced: str | None,
    detach: bool,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Run GOAL as a long task with the agent."""
    from holdfast.agent import DEFAULT_POLICY, AgentSettings, agent_kind
    from holdfast.config import default_model

    name = default_model(model)
    if not name:
        raise UserError("no model: pass --model provider:model or set HOLDFAST_MODEL")
    if workspace is not None and not Path(workspace).expanduser().is_dir():
        raise InvalidInput(f"the workspace {workspace} does not exist or is not a directory")
    fields: dict[str, Any] = {"model": name, "base_url": base_url}
    for key, value in (
        ("context_window", context_window),
        ("threshold", threshold),
        ("max_turns", max_turns),
        ("memory_namespace", memory_namespace),
        ("max_output_tokens", max_output_tokens),
        ("call_timeout_s", call_timeout),
        ("cell_timeout_s", cell_timeout),
        ("unpriced", unpriced),
    ):
        if value is not None:
            fields[key] = value
    check_seconds(call_timeout=call_timeout, cell_timeout=cell_timeout)
    if prices:
        fields["prices"] = {
            model: [p.input, p.output] + ([p.cached_input] if p.cached_input is not None else [])
            for model, p in parse_prices(prices).items()
        }
    if no_memory:
        fields["memory_namespace"] = None
    if pre_rollover_turn:
        fields["pre_rollover_turn"] = True
    settings = AgentSettings.from_input({k: v for k, v in fields.items() if k != "base_url" or v})
    spec: dict[str, Any] = {
        "kind": "agent",
        "goal": goal,
        "input": settings.to_input() | {"model": name},
        "policy": read_json_arg(policy, "--policy") if policy else DEFAULT_POLICY,
    }
    if budget:
        spec["budget"] = read_json_arg(budget, "--budget")
    if workspace is not None:
        spec["workspace"] = str(Path(workspace).expanduser().resolve())
    view = LiveView(quiet=as_json)
    h = open_harness(database_url)
    try:
        h.registry.register(agent_kind(on_event=view))
        task = h.submit(spec, by="cli")
        if detach:
            _print(as_json, {"task": task.id, "status": task.status}, f"queued task {task.id}")
            return
        view.say(f"task {task.id}: running with {name} (Ctrl-C stops; the task resumes later)")
        # only the task this command created: another user's queued task must not run under
        # this user's command, model keys and workspace
        h.run_until_idle(WorkerSettings(poll_s=0.05, task_ids=(task.id,)))
        row = h.get(task.id)
    finally:
        h.close()
    out = {
        "task": row.id,
        "status": row.status,
        "result": row.result,
        "error": row.error,
        "usage": row.usage,
    }
    if as_json:
        click.echo(dumps(out, indent=2, default=str))
    else:
        _report(view, row)
    if row.status in ("waiting_approval", "paused", "queued"):
        raise SystemExit(3)
    if row.status != "succeeded":
        raise SystemExit(1)


class LiveView:
    """One line per turn: turn, physical session, prompt and output tokens, cost, roll-overs."""

    def __init__(self, *, quiet: bool = False) -> None:
        from holdfast.display import console

        # markup off: tool names, results and errors come from the model
        self.console = console(stderr=True, quiet=quiet, soft_wrap=True)
        self.cost = 0.0
        self.rollovers = 0

    def say(self, line: object, style: str = "") -> None:
        from holdfast.display import text

        self.console.print(text(line, style))

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("type") == "turn":
            self.cost += float(event.get("cost_usd") or 0.0)
            if event.get("rolled_over"):
                self.rollovers += 1
                self.say(f"roll-over -> {event['vsession']}:cont-{event['continuation']}", "bold")
            tools = ", ".join(str(t) for t in event.get("tools") or []) or "(no tool)"
            self.say(
                f"turn {event['turn']:>4}  session {event['continuation']:>2}  "
                f"prompt {event['prompt_tokens']:>7,} tok  out {event['output_tokens']:>5,}  "
                f"${self.cost:.4f}  roll-overs {self.rollovers}  {tools}"
            )
        elif event.get("type") == "finished":
            self.say(
                f"finished after {event['turn']} turns in {event['continuation'] + 1} sessions"
            )


def _report(view: LiveView, row: Any) -> None:
    c = view.console
    c.quiet = False
    say = view.say
    say(f"task {row.id}: {row.status}")
    if row.status == "succeeded" and isinstance(row.result, dict):
        say(str(row.result.get("result", "")))
        say(
            f"virtual session {row.result.get('vsession')}: {row.result.get('turns')} turns, "
            f"{row.result.get('continuations')} physical sessions"
        )
    elif row.error:
        say(f"error [{row.error.get('code')}]: {row.error.get('message')}")
    if row.status == "waiting_approval":
        say(f"waiting for approval: holdfast task show {row.id}")
    say(f"inspect: holdfast task working-set {row.id} | holdfast receipts verify {row.id}")


def _print(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(dumps(data) if as_json else escape_control(text))


@click.command(name="working-set")
@click.argument("task_or_vsession")
@click.option("--turns", is_flag=True, help="Also list the token accounting of every turn.")
@click.option(
    "--prompt", "show_prompt", is_flag=True, help="Print the exact messages the next call sends."
)
@db_option
@json_option
def working_set(
    task_or_vsession: str, turns: bool, show_prompt: bool, database_url: str | None, as_json: bool
) -> None:
    """Show the working set of a task (or a vsession-... id): goal, constraints, decisions,
    blockers, progress, files, findings, with its physical sessions and tokens."""
    from holdfast.config import database_url as env_url
    from holdfast.config import default_db_path
    from holdfast.session import open_session_store

    url = env_url(database_url) or ""
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///") - 1 :]
    if not url.startswith(("postgres://", "postgresql://")):
        path = Path(url) if url else default_db_path()
        if not path.exists():
            raise InvalidInput(f"no Holdfast store at {path}")
        url = str(path)
    store = open_session_store(url)
    try:
        _show_working_set(store, task_or_vsession, turns, show_prompt, as_json)
    finally:
        store.close()


def _show_working_set(
    store: SQLSessionStore, task_or_vsession: str, turns: bool, show_prompt: bool, as_json: bool
) -> None:
    from holdfast.session import VirtualSession, render_working_set

    vid = (
        task_or_vsession
        if task_or_vsession.startswith("vsession-")
        else store.find_by_task(task_or_vsession)
    )
    if vid is None:
        raise InvalidInput(f"no virtual session for task {task_or_vsession!r} in {store.where}")
    vs = VirtualSession(store, vid)
    if show_prompt:
        click.echo(dumps(vs.build_prompt(), indent=2, ensure_ascii=False))
        return
    rows = store.turns(vid)
    phys = store.physical(vid)
    summary = {
        "vsession": vid,
        "task": vs.task_id,
        "continuation": vs.continuation,
        "turns": vs.turn,
        "input_tokens": sum(r["input_tokens"] or 0 for r in rows),
        "output_tokens": sum(r["output_tokens"] or 0 for r in rows),
        "cost_usd": round(sum(r["cost_usd"] or 0.0 for r in rows), 6),
        "peak_prompt_tokens": max(
            (r["input_tokens"] or r["estimate_tokens"] for r in rows), default=0
        ),
        "sessions": [
            {"cont": p.cont, "start_turn": p.start_turn, "end_reason": p.end_reason} for p in phys
        ],
    }
    if as_json:
        out: dict[str, Any] = {**summary, "working_set": vs.working_set.to_dict()}
        if turns:
            out["turn_log"] = rows
        click.echo(dumps(out, indent=2))
        return
    shown = render_working_set(vs.working_set, 10**9, header=f"## Working set of {vid}").text
    click.echo(escape_control(shown))
    click.echo(
        f"\n{summary['turns']} turns in {len(phys)} physical sessions; prompt tokens "
        f"{summary['input_tokens']:,} total, {summary['peak_prompt_tokens']:,} peak; "
        f"output {summary['output_tokens']:,}; ${summary['cost_usd']}"
    )
    for p in phys:
        click.echo(
            escape_control(
                f"  {vid}:cont-{p.cont} from turn {p.start_turn + 1}: {p.end_reason or 'current'}"
            )
        )
    if turns:
        for r in rows:
            click.echo(
                f"  turn {r['turn']:>4} cont {r['cont']:>2} estimate {r['estimate_tokens']:>7,} "
                f"input {r['input_tokens'] or 0:>7,} output {r['output_tokens'] or 0:>5,}"
            )
