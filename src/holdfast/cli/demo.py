"""``holdfast demo``: the main job, end to end, offline by default.

Without a model every part is real (HTTP client and a local OpenAI-compatible server, the
sandbox, the SQLite store, knowledge memory with the local embedding model, the harness and its
receipts) except the model itself, which is a scripted stand-in and says so. With ``--model`` (or
``HOLDFAST_MODEL``) the same job runs on a real model.
"""

from __future__ import annotations

import os
from typing import Any

import click

from holdfast.config import default_db_path, default_model, holdfast_home
from holdfast.display import console as safe_console
from holdfast.display import styled, text
from holdfast.errors import HoldfastError

PARTS = ("all", "lm", "rlm", "agent")


@click.command()
@click.option("--model", default=None, help="provider:model to use instead of the scripted model.")
@click.option(
    "--part",
    type=click.Choice(PARTS),
    default="all",
    show_default=True,
    help="lm: one real HTTP call and the call log; rlm: an RLM job over a generated corpus; "
    "agent: the long task; all: the three in that order.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
@click.option(
    "--serve",
    is_flag=True,
    help="Start the server and its web console first (watch the task live), print the "
    "console's URL at the end and keep serving until interrupted.",
)
@click.option("--port", type=int, default=8765, show_default=True, help="The port with --serve.")
def demo(model: str | None, part: str, as_json: bool, serve: bool, port: int) -> None:
    """Run the offline end-to-end demo (a scripted model unless --model is given).

    Exits 1 when the RLM job or the agent task does not succeed (a real model may fail it)."""
    model = default_model(model)
    # markup off: replies, answers and reports come from a model and are printed as data
    console = safe_console()
    home = holdfast_home()
    console.rule(text("Holdfast demo", "bold"))
    console.print(text(f"Holdfast home: {home}  (set HOLDFAST_HOME to use another)"))
    server = _start_server(console, port) if serve else None
    try:
        failed = _run(console, model, part, as_json, home)
        if server is not None:
            console.rule("the web console")
            console.print(f"console: {server[1]}", soft_wrap=True)
            console.print("serving until interrupted (Ctrl-C)")
            try:
                server[0].thread.join()
            except KeyboardInterrupt:
                pass
    finally:
        if server is not None:
            server[0].stop()
    if failed:
        raise click.exceptions.Exit(1)


def _start_server(console: Any, port: int) -> tuple[Any, str]:
    """The server on loopback over this home's stores, with a token for the console."""
    from holdfast.server import ServerSettings, Services, create_app
    from holdfast.server.run import ServerThread

    settings = ServerSettings(
        port=port, embedder=os.environ.get("HOLDFAST_MEMORY_EMBEDDER") or "local"
    )
    services = Services.open(settings)
    _, token = services.tokens.create("demo", created_by="demo")  # type: ignore[union-attr]
    server = ServerThread(create_app(settings, services=services), settings, log_level="error")
    server.start()
    url = f"{server.url}/console/login#token={token}"
    console.print(f"server: {server.url}  (API /api/v1, OpenAI-compatible /v1)")
    console.print(f"console (logs in with a demo token): {url}", soft_wrap=True)
    return server, url


def _run(console: Any, model: str | None, part: str, as_json: bool, home: Any) -> bool:
    summary: dict[str, Any] = {"home": str(home), "model": model or "scripted"}
    if part in ("all", "lm"):
        console.rule("model access: one call over real HTTP, recorded in the call log")
        summary["lm"] = _part(console, "lm", lambda: _lm_part(console, model))
    if part in ("all", "rlm"):
        from holdfast.rlm.demo import run_rlm_demo

        console.rule("reasoning memory: an RLM job")

        def rlm_part() -> dict[str, Any]:
            result = run_rlm_demo(model, console=console)
            out: dict[str, Any] = {"status": result.status, "trace_id": result.trace_id}
            if result.error:
                out["error"] = result.error.get("message")
            return out

        summary["rlm"] = _part(console, "rlm", rlm_part)
    if part in ("all", "agent"):
        from holdfast.agent.demo import run_agent_demo

        console.rule("the long task: agent, virtual sessions, RLM, memory, approvals, receipts")
        embedder = os.environ.get("HOLDFAST_MEMORY_EMBEDDER") or "local"
        summary["agent"] = _part(
            console,
            "agent",
            lambda: run_agent_demo(model, console=console, embedder=embedder),
        )
    failed = [
        name
        for name, status in (
            ("lm", summary.get("lm", {}).get("status", "ok")),
            ("rlm", summary.get("rlm", {}).get("status", "ok")),
            ("agent", summary.get("agent", {}).get("status", "succeeded")),
        )
        if status not in ("ok", "succeeded")
    ]
    _print_summary(console, summary)
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2, default=str))
    return bool(failed)


def _part(console: Any, name: str, run: Any) -> dict[str, Any]:
    """Run one part of the demo; a part that fails is reported and the next part still runs (a
    real model may fail the RLM job and still do the agent task)."""
    try:
        out: dict[str, Any] = run()
    except HoldfastError as exc:
        console.print(text(f"the {name} part failed: {exc.message}", "red"))
        return {"status": "error", "error": exc.message, "code": exc.code}
    except Exception as exc:
        console.print(text(f"the {name} part failed: {type(exc).__name__}: {exc}", "red"))
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return out


def _print_summary(console: Any, summary: dict[str, Any]) -> None:
    """One line per part that ran: its status and what to look at next."""
    console.rule("summary")
    console.print(text(f"model: {summary['model']}"))
    for name in ("lm", "rlm", "agent"):
        part = summary.get(name)
        if part is None:
            continue
        status = str(part.get("status", "ok"))
        line = f"{name}: {status}"
        if part.get("error"):
            line += f" ({_first_line(str(part['error']))})"
        if part.get("call_id"):
            line += f" · holdfast lm log {part['call_id']}"
        if part.get("trace_id"):
            line += f" · holdfast rlm trace {part['trace_id']}"
        if part.get("task"):
            line += f" · holdfast receipts verify {part['task']}"
        good = status in ("ok", "succeeded")
        console.print(text(line, "green" if good else "yellow"), soft_wrap=True)


def _first_line(value: str, width: int = 160) -> str:
    line = value.strip().splitlines()[0] if value.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _lm_part(console: Any, model: str | None) -> dict[str, Any]:
    from holdfast.lm import get_lm
    from holdfast.lm.calllog import CallLog
    from holdfast.store import SQLiteDB

    log = CallLog(SQLiteDB(default_db_path()))
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to a new Holdfast user in one short sentence."},
    ]
    if model is None:
        from holdfast.testing import FakeOpenAIServer

        with FakeOpenAIServer(
            default_reply="Hello from a SCRIPTED local server: no real model was called.",
            latency=0.05,
        ) as server:
            console.print(text(f"scripted OpenAI-compatible server at {server.base_url} (offline)"))
            with get_lm(
                "openai:demo-scripted", base_url=server.base_url, api_key="offline", call_log=log
            ) as lm:
                completion = lm.complete(messages)
    else:
        with get_lm(model, call_log=log) as lm:
            completion = lm.complete(messages)
    usage = completion.usage
    console.print(styled(("reply:", "bold"), " ", completion.text))
    console.print(
        text(
            f"usage: {usage.input_tokens} in / {usage.output_tokens} out tokens, "
            f"{usage.latency_s * 1000:.0f} ms, ${usage.cost_usd:.6f}"
        )
    )
    console.print(
        text("the exact prompt and reply are in the call log: holdfast lm log --show-prompt")
    )
    return {"status": "ok", "text": completion.text, "call_id": completion.call_id}
