"""``holdfast rlm``: ask a question over big inputs, show a job's trace, replay it.

Exit codes: 0 answered, 1 runtime failure, 2 bad input or settings, 3 a budget ran out (the
partial answer is printed), 130 cancelled.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from holdfast.cli.model_options import (
    check_seconds,
    model_call_options,
    parse_assignments,
    parse_prices,
)
from holdfast.cli.options import FINITE
from holdfast.cli.task import db_option
from holdfast.display import dumps, escape_control
from holdfast.errors import Cancelled, UserError

EXIT_BUDGET = 3


def _store(database_url: str | None = None) -> Any:
    """The trace store: the control plane's database (``--database-url``, else
    ``HOLDFAST_DATABASE_URL``, else the Holdfast home's file), where workers file their traces."""
    from holdfast.config import database_url as env_url
    from holdfast.config import default_db_path
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.store import open_url

    return RLMTraceStore(open_url(env_url(database_url), default=default_db_path))


def _parse_inputs(specs: tuple[str, ...]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        if not (sep and name.isidentifier()):
            name, raw = "context", spec
        if name in inputs:
            raise UserError(f"two inputs are named {name!r}; name them with --input NAME=PATH")
        if raw == "-":
            data = sys.stdin.buffer.read()
            try:
                inputs[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                inputs[name] = data
        else:
            path = Path(raw).expanduser()
            if not path.exists():
                raise UserError(f"input {name!r}: {path} does not exist")
            inputs[name] = path
    return inputs


class StopOnSignal:
    """SIGTERM and Ctrl-C cancel the job cleanly (recorded as cancelled); a second one kills.

    The handler only sets a flag (no lock, see the worker's handler); the engine's watchdog reads
    it through ``is_set()`` within a few tens of milliseconds.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def is_set(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second signal: stop waiting for a clean end
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def _lm(name: str, base_url: str | None, direct_http: bool | None = None, log: Any = None) -> Any:
    from holdfast.lm import get_lm

    options: dict[str, Any] = {} if direct_http is None else {"direct_http": direct_http}
    if log is not None:  # every root turn and sub-call in `holdfast lm log`, by trace id
        options["call_log"] = log
    return get_lm(name, base_url=base_url, **options) if base_url else get_lm(name, **options)


def _call_log(enabled: bool) -> Any:
    from holdfast.config import default_db_path
    from holdfast.lm.calllog import CallLog

    return CallLog(default_db_path()) if enabled else None


class _Progress:
    """Live progress on stderr: iteration, sub-calls in flight, tokens and cost."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.state: dict[str, Any] = {"turn": 0, "depth": 0}
        self.budget: dict[str, Any] = {}
        self._live: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._render(), console=Console(stderr=True), refresh_per_second=8, transient=True
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def _render(self) -> Any:
        from rich.text import Text

        b = self.budget
        return Text(
            f"turn {self.state['turn']} (depth {self.state['depth']}) · sub-calls {b.get('sub_calls', 0)} "
            f"({b.get('in_flight', 0)} in flight) · tokens root {b.get('root_tokens', 0):,} "
            f"sub {b.get('sub_tokens', 0):,} · ${b.get('usd', 0.0):.4f} · {b.get('elapsed_s', 0.0):.1f} s",
            style="cyan",
        )

    def __call__(self, trace_id: str, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            if kind == "root_call":
                self.state["depth"] = data.get("depth", 0)
            if kind == "iteration":
                self.state["turn"] = data.get("turn", 0)
            if isinstance(data.get("budget"), dict):
                self.budget = data["budget"]
            if self._live is not None:
                self._live.update(self._render())


@click.group()
def rlm() -> None:
    """Recursive Language Model jobs: ask, trace, replay."""


@rlm.command()
@click.argument("question")
@click.option(
    "--input", "-i", "inputs", multiple=True, help="FILE, DIR, - (stdin), or NAME=PATH; repeatable."
)
@click.option("--model", "-m", help="Root model, provider:model (default $HOLDFAST_MODEL).")
@click.option("--sub-model", help="Model for sub-calls from code (default: the root model).")
@click.option("--base-url", help="OpenAI-compatible endpoint for both models.")
@click.option(
    "--direct-http/--sdk-http",
    default=None,
    help="Force the direct HTTP client or the SDK (default: direct for plain-http endpoints).",
)
@click.option(
    "--mode", type=click.Choice(["auto", "rlm", "direct"]), default="auto", show_default=True
)
@click.option("--signature", help="Typed outputs, e.g. '-> answer: str, confidence: float'.")
@click.option("--max-iterations", type=int, default=30, show_default=True)
@click.option("--max-depth", type=int, default=1, show_default=True)
@click.option("--max-wall", type=FINITE, default=900.0, show_default=True, help="Seconds.")
@click.option("--max-usd", type=FINITE, help="Dollar budget (from the price table).")
@click.option("--max-sub-calls", type=int, default=2000, show_default=True)
@click.option(
    "--max-tokens", type=int, help="Token budget of the job, root and sub-calls together."
)
@click.option(
    "--sub-max-output-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="max_tokens of each sub-call (default: --max-output-tokens).",
)
@model_call_options(defaults=True)
@click.option(
    "--context-window",
    "context_windows",
    multiple=True,
    metavar="MODEL=TOKENS",
    help="A model's context window, for the sub-call prompt-size guard; repeatable.",
)
@click.option(
    "--lenient", is_flag=True, help="Let SUBMIT coerce values ('42' -> 42); strict by default."
)
@click.option(
    "--concurrency",
    type=int,
    default=64,
    show_default=True,
    help="Sub-calls in flight, all depths.",
)
@click.option(
    "--isolation",
    type=click.Choice(["namespace", "process"]),
    default="namespace",
    show_default=True,
)
@click.option("--show-prompt", is_flag=True, help="Print the exact first messages and exit.")
@click.option(
    "--no-log", "no_log", is_flag=True, help="Do not record the model calls in the call log."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No live progress.")
def ask(
    question: str,
    inputs: tuple[str, ...],
    model: str | None,
    sub_model: str | None,
    base_url: str | None,
    direct_http: bool | None,
    mode: str,
    signature: str | None,
    max_iterations: int,
    max_depth: int,
    max_wall: float,
    max_usd: float | None,
    max_sub_calls: int,
    max_tokens: int | None,
    max_output_tokens: int,
    sub_max_output_tokens: int | None,
    call_timeout: float,
    cell_timeout: float,
    prices: tuple[str, ...],
    unpriced: str,
    context_windows: tuple[str, ...],
    lenient: bool,
    concurrency: int,
    isolation: str,
    show_prompt: bool,
    no_log: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Answer QUESTION over big inputs: they stay in a sandboxed REPL the model drives with code."""
    from holdfast.config import default_model
    from holdfast.rlm import RLM, BrokerLimits, Budget
    from holdfast.sandbox.types import SandboxPolicy

    model = default_model(model)
    if not model:
        raise UserError("name a model with --model provider:model (or set HOLDFAST_MODEL)")
    check_seconds(max_wall=max_wall, call_timeout=call_timeout, cell_timeout=cell_timeout)
    if max_usd is not None and not 0 < max_usd < float("inf"):
        raise UserError(f"--max-usd must be a positive number, got {max_usd}")
    named = _parse_inputs(inputs)
    log = _call_log(not show_prompt and not no_log)
    engine = RLM(
        _lm(model, base_url, direct_http, log),
        _lm(sub_model, base_url, direct_http, log) if sub_model else None,
        sandbox=SandboxPolicy(isolation=isolation, cell_timeout_s=cell_timeout),  # type: ignore[arg-type]
        budget=Budget(
            max_iterations=max_iterations,
            max_wall_s=max_wall,
            max_usd=max_usd,
            max_sub_calls=max_sub_calls,
            max_tokens=max_tokens,
            max_depth=max_depth,
            unpriced=unpriced,  # type: ignore[arg-type]
        ),
        signature=signature,
        mode=mode,  # type: ignore[arg-type]
        limits=BrokerLimits(
            concurrency=concurrency,
            call_timeout_s=call_timeout,
            context_windows=parse_assignments(context_windows, "--context-window", int),
        ),
        root_max_tokens=max_output_tokens,
        sub_max_tokens=sub_max_output_tokens or max_output_tokens,
        cell_timeout_s=cell_timeout,
        prices=parse_prices(prices),
        strict=not lenient,
        on_budget="return",
    )
    if show_prompt:
        messages = engine.describe_prompt(question, **named)
        if as_json:
            click.echo(dumps(messages, indent=2, ensure_ascii=False))
        else:
            for m in messages:
                click.echo(escape_control(f"--- {m['role']} ---\n{m['content']}"))
        return
    progress = _Progress(enabled=not quiet and not as_json and sys.stderr.isatty())
    engine.on_event = progress
    stop = StopOnSignal()
    try:
        with progress, stop:
            result = engine.run(question, cancel=stop, **named)
    except Cancelled as exc:
        click.echo(escape_control(f"cancelled: {exc.message}"), err=True)
        sys.exit(stop.exit_code)
    if as_json:
        click.echo(dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        _print_result(result)
    if result.status == "budget_exceeded":
        sys.exit(EXIT_BUDGET)


def _print_result(result: Any) -> None:
    from holdfast.display import console as safe_console
    from holdfast.display import text

    # the answer and the error are the model's words: printed as data, never as markup
    console = safe_console(soft_wrap=True)  # answers are printed whole, never re-wrapped
    if result.status != "ok":
        err = result.error or {}
        console.print(text(f"stopped: {err.get('message', result.status)}", "yellow"))
        console.print(text(f"partial answer: {result.answer}"))
    elif len(result.outputs) == 1:
        console.print(text(result.answer))
    else:
        console.print(text(json.dumps(result.outputs, indent=2, ensure_ascii=False, default=str)))
    u = result.usage
    console.print(
        text(
            f"{result.mode} · {result.iterations} iterations · {result.sub_calls} sub-calls · "
            f"root {u.root.total_tokens:,} tok · sub {u.sub.total_tokens:,} tok · ${u.usd:.4f} · "
            f"{result.elapsed_s:.1f} s",
            "dim",
        )
    )
    console.print(text(f"trace: holdfast rlm trace {result.trace_id}", "dim"))


@rlm.command()
@click.argument("trace_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the runs and events as JSON lines.")
@click.option("--full", is_flag=True, help="Show every sub-call, code and output in full.")
@click.option("--limit", type=int, default=20, show_default=True, help="Runs listed without an ID.")
@db_option
def trace(
    trace_id: str | None, as_json: bool, full: bool, limit: int, database_url: str | None
) -> None:
    """Show the tree of iterations and sub-calls of a job, with costs (no ID: list recent jobs)."""
    from holdfast.rlm.render import list_runs, render_tree

    store = _store(database_url)
    try:
        if trace_id is None:
            runs = store.recent_runs(limit)
            if as_json:
                for r in runs:
                    click.echo(dumps(r.to_dict(), default=str))
            else:
                list_runs(runs)
            return
        run = store.find_run(trace_id)
        if run is None:
            raise UserError(f"no RLM trace {trace_id!r}; `holdfast rlm trace` lists recent ones")
        if as_json:
            store.export_jsonl(run.trace_id, sys.stdout)
            return
        render_tree(store, run.trace_id, full=full)
    finally:
        store.close()


@rlm.command()
@click.argument("trace_id")
@click.option(
    "--input", "-i", "inputs", multiple=True, help="NAME=PATH for inputs given as values."
)
@click.option(
    "--isolation",
    type=click.Choice(["namespace", "process"]),
    default="namespace",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True)
@db_option
def replay(
    trace_id: str,
    inputs: tuple[str, ...],
    isolation: str,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Re-execute a job deterministically from its recorded model outputs (no model is called)."""
    from holdfast.rlm.replay import replay as do_replay
    from holdfast.sandbox.types import SandboxPolicy

    store = _store(database_url)
    try:
        outcome = do_replay(
            trace_id,
            store,
            inputs=_parse_inputs(inputs) if inputs else None,
            sandbox=SandboxPolicy(isolation=isolation),  # type: ignore[arg-type]
        )
    finally:
        store.close()
    if as_json:
        click.echo(dumps(outcome.to_dict(), indent=2, default=str))
    else:
        _print_result(outcome.result)
        same = "yes" if outcome.same_answer else "NO"
        click.echo(
            escape_control(
                f"replay of {outcome.original_trace_id}: same answer: {same}; "
                f"{outcome.replies_used} of {outcome.replies_recorded} recorded replies used"
            )
        )
    if not outcome.same_answer:
        sys.exit(1)
