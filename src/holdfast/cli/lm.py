"""``holdfast lm``: call models, check an endpoint, and read the model call log.

This is the edge: the model comes from ``--model`` or ``HOLDFAST_MODEL``, the base URL and key
from flags or the provider's environment variables (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` for
``openai``). Calls are recorded in the call log under the Holdfast home unless ``--no-log``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from holdfast.cli.options import FINITE, POSITIVE
from holdfast.config import default_db_path, default_model
from holdfast.display import dumps, escape_control
from holdfast.errors import UserError
from holdfast.lm import (
    PROVIDERS,
    BaseLM,
    CallRecord,
    Completion,
    Message,
    RetryPolicy,
    StreamDone,
    TextDelta,
    get_lm,
)
from holdfast.lm.calllog import CallLog

PING_PROMPT = "Reply with the single word: pong"
PING_MAX_TOKENS = 16


def _call_log(enabled: bool) -> CallLog | None:
    return CallLog(default_db_path()) if enabled else None


def _build(
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    log: bool,
    timeout: float,
    retries: int,
    direct_http: bool | None = None,
) -> BaseLM:
    name = default_model(model)
    if not name:
        raise UserError("no model given: pass --model provider:model or set HOLDFAST_MODEL")
    return get_lm(
        name,
        base_url=base_url,
        api_key=api_key,
        env=os.environ,
        timeout=timeout,
        retry=RetryPolicy(max_attempts=max(1, retries)),
        call_log=_call_log(log),
        direct_http=direct_http,
    )


def _connection_options(fn: Any) -> Any:
    options = [
        click.option("--model", "-m", help="provider:model (default: $HOLDFAST_MODEL)."),
        click.option(
            "--base-url", help="Endpoint base URL (default: the provider's, or its env var)."
        ),
        click.option(
            "--api-key", help="API key (default: the provider's env var, e.g. OPENAI_API_KEY)."
        ),
        click.option(
            "--timeout", type=POSITIVE, default=60.0, show_default=True, help="Seconds per attempt."
        ),
        click.option("--retries", type=int, default=3, show_default=True, help="Attempts in all."),
        click.option(
            "--no-log", "no_log", is_flag=True, help="Do not record the call in the call log."
        ),
        click.option(
            "--direct-http/--sdk-http",
            default=None,
            help="Force the direct HTTP client or the SDK (default: direct for plain-http "
            "OpenAI-compatible servers, the SDK for https).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group()
def lm() -> None:
    """Call models and read the model call log."""


@lm.command()
@_connection_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def ping(
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    timeout: float,
    retries: int,
    no_log: bool,
    direct_http: bool | None,
    as_json: bool,
) -> None:
    """Check that a model answers: one tiny call, with its latency."""
    client = _build(model, base_url, api_key, not no_log, timeout, retries, direct_http)
    try:
        t0 = time.perf_counter()
        # a cap: a slow local model that runs on would hold a ping for minutes
        out = client.complete(
            [{"role": "user", "content": PING_PROMPT}], max_tokens=PING_MAX_TOKENS
        )
        elapsed = time.perf_counter() - t0
    finally:
        client.close()
    if as_json:
        click.echo(
            dumps(
                {
                    "ok": True,
                    "model": client.model,
                    "latency_s": round(elapsed, 4),
                    "reply": out.text,
                }
            )
        )
    else:
        reply = out.text.strip()[:80]
        click.echo(escape_control(f"ok  {client.model}  {elapsed * 1000:.0f} ms  reply: {reply!r}"))


@lm.command()
@click.argument("prompt", required=False)
@_connection_options
@click.option("--system", "-s", help="A system message to send before the prompt.")
@click.option("--max-tokens", type=int, help="Cap on output tokens.")
@click.option("--temperature", type=FINITE, help="Sampling temperature.")
@click.option("--stop", multiple=True, help="A stop sequence (repeatable).")
@click.option(
    "--schema",
    metavar="JSON|@FILE",
    help="Ask for JSON matching this JSON schema (structured output).",
)
@click.option(
    "--tool",
    "tools",
    multiple=True,
    metavar="JSON|@FILE",
    help="A function tool the model may call: {name, description, parameters} or the OpenAI "
    "form; a file may hold a list (repeatable).",
)
@click.option(
    "--tool-choice", help="auto, none, required, or the name of a tool the model must call."
)
@click.option("--stream", is_flag=True, help="Print the reply as it is generated.")
@click.option("--show-prompt", is_flag=True, help="Print the exact messages sent.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON (with --stream: JSON lines)."
)
def call(
    prompt: str | None,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    timeout: float,
    retries: int,
    no_log: bool,
    direct_http: bool | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    stop: tuple[str, ...],
    schema: str | None,
    tools: tuple[str, ...],
    tool_choice: str | None,
    stream: bool,
    show_prompt: bool,
    as_json: bool,
) -> None:
    """Send PROMPT (or standard input when PROMPT is '-' or absent) and print the reply."""
    if prompt is None or prompt == "-":
        if sys.stdin.isatty() and prompt is None:
            raise UserError("no prompt: pass it as an argument or pipe it on standard input")
        prompt = sys.stdin.read()
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    options: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stop": list(stop) or None,
    }
    if schema is not None:
        options["response_format"] = _schema_format(schema)
    if tools:
        options["tools"] = _tool_specs(tools)
    if tool_choice is not None:
        options["tool_choice"] = _tool_choice(tool_choice, options.get("tools"))
    client = _build(model, base_url, api_key, not no_log, timeout, retries, direct_http)
    if show_prompt and not as_json:
        click.echo(escape_control(f"--- messages sent to {client.model} ---"), err=True)
        click.echo(dumps(messages, indent=2, ensure_ascii=False), err=True)
        if options.get("tools"):
            click.echo("--- tools ---", err=True)
            click.echo(dumps(options["tools"], indent=2), err=True)
        click.echo("---", err=True)
    try:
        if stream:
            out = _stream_reply(client, messages, options, as_json)
        else:
            out = client.complete(messages, **options)
    finally:
        client.close()
    if as_json:
        data = _completion_json(out)
        if show_prompt:
            data["messages"] = messages
        if stream:
            data = {"type": "done", "completion": data}
        click.echo(dumps(data, ensure_ascii=False))
        return
    if not stream:
        click.echo(escape_control(out.text))
    for tc in out.tool_calls:
        click.echo(escape_control(f"[tool call] {tc.name}({tc.arguments})"))
    u = out.usage
    click.echo(
        escape_control(
            f"[{out.model} · {u.input_tokens} in / {u.output_tokens} out · "
            f"{u.latency_s * 1000:.0f} ms · ${u.cost_usd:.6f}{'' if u.priced else ' (unpriced)'} · "
            f"finish: {out.finish_reason}]"
        ),
        err=True,
    )


def _stream_reply(
    client: BaseLM, messages: list[Message], options: dict[str, Any], as_json: bool
) -> Completion:
    """Print the deltas as they arrive (JSON lines with ``as_json``); return the completion."""
    out: Completion | None = None
    with client.stream(messages, **options) as events:
        for event in events:
            if isinstance(event, StreamDone):
                out = event.completion
            elif as_json:
                click.echo(json.dumps(event.to_dict(), ensure_ascii=False))
            elif isinstance(event, TextDelta):
                click.echo(escape_control(event.text), nl=False)
                sys.stdout.flush()
    if not as_json:
        click.echo()
    assert out is not None  # a stream that ends without StreamDone raised instead
    return out


def _json_option(value: str, what: str) -> Any:
    from holdfast.cli.task import read_json_arg

    return read_json_arg(value, what)


def _schema_format(value: str) -> dict[str, Any]:
    from holdfast.lm import json_schema_format

    schema = _json_option(value, "--schema")
    if not isinstance(schema, dict):
        raise UserError("--schema must be a JSON schema object")
    return json_schema_format(schema, name=str(schema.get("title") or "output"))


def _tool_specs(values: tuple[str, ...]) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for value in values:
        raw = _json_option(value, "--tool")
        for item in raw if isinstance(raw, list) else [raw]:
            if not isinstance(item, dict):
                raise UserError("--tool must be a JSON object (or a list of them)")
            fn = item.get("function") if item.get("type") == "function" else item
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise UserError(f"--tool needs a name: {json.dumps(item)[:200]}")
            spec = {"name": fn["name"], "parameters": fn.get("parameters") or {"type": "object"}}
            if fn.get("description"):
                spec["description"] = str(fn["description"])
            specs.append({"type": "function", "function": spec})
    return specs


def _tool_choice(value: str, tools: list[dict[str, Any]] | None) -> Any:
    if value in ("auto", "none", "required"):
        return value
    names = [t["function"]["name"] for t in tools or ()]
    if value not in names:
        raise UserError(f"--tool-choice {value!r} names no --tool (given: {', '.join(names)})")
    return {"type": "function", "function": {"name": value}}


def _completion_json(out: Completion) -> dict[str, Any]:
    return {
        "model": out.model,
        "text": out.text,
        "tool_calls": [
            {"id": t.id, "name": t.name, "arguments": t.arguments} for t in out.tool_calls
        ],
        "finish_reason": out.finish_reason,
        "usage": out.usage.to_dict(),
        "call_id": out.call_id,
    }


@lm.command()
@click.argument("call_id", required=False)
@click.option("--limit", "-n", type=int, default=20, show_default=True, help="How many calls.")
@click.option("--model", "-m", help="Only calls to this provider:model.")
@click.option("--task", "task_id", help="Only calls made for this task id.")
@click.option("--errors", is_flag=True, help="Only failed calls.")
@click.option("--show-prompt", is_flag=True, help="Print the full messages of each call.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines (one call per line).")
def log(
    call_id: str | None,
    limit: int,
    model: str | None,
    task_id: str | None,
    errors: bool,
    show_prompt: bool,
    as_json: bool,
) -> None:
    """Show recorded model calls, newest first (or one call by CALL_ID, in full)."""
    store = CallLog(default_db_path())
    if call_id:
        record = store.get(call_id)
        if record is None:
            raise UserError(f"no call {call_id!r} in the call log at {store.db.path}")
        records = [record]
        show_prompt = True
    else:
        records = store.recent(limit, model=model, task_id=task_id, errors_only=errors)
    if as_json:
        for rec in records:
            data = rec.to_dict()
            if not show_prompt:
                data.pop("messages")
            click.echo(dumps(data, ensure_ascii=False, default=str))
        return
    if not records:
        click.echo(escape_control(f"no calls recorded in {store.db.path}"), err=True)
        return
    for rec in records:
        _print_record(rec, show_prompt)


def echo(line: str) -> None:
    """Print a line quoting prompts, replies or errors: model and user text, shown as data."""
    click.echo(escape_control(line))


def _print_record(rec: CallRecord, show_prompt: bool) -> None:
    when = datetime.fromtimestamp(rec.started_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    u = rec.usage
    status = "ok" if rec.ok else f"ERROR {rec.error.get('code') if rec.error else ''}"
    echo(
        f"{when}Z  {rec.call_id}  {rec.model}  {status}  {u.input_tokens}/{u.output_tokens} tok  "
        f"{rec.latency_s * 1000:.0f} ms  ${u.cost_usd:.6f}  attempts={rec.attempts}"
    )
    if show_prompt:
        if rec.params:
            echo("  params: " + json.dumps(rec.params, ensure_ascii=False, default=str))
        for msg in rec.messages:
            content = msg.get("content")
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            echo(f"  [{msg.get('role')}] {text}")
            for tc in msg.get("tool_calls") or ():
                echo(f"    tool_call: {json.dumps(tc, ensure_ascii=False)}")
    if rec.completion is not None:
        reply = rec.completion.text if show_prompt else rec.completion.text[:120].replace("\n", " ")
        echo(f"  -> {reply}")
    elif rec.error:
        echo(f"  -> {rec.error.get('message')}")


@lm.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(as_json: bool) -> None:
    """List the known providers with their default base URLs and key variables."""
    rows = [
        {
            "provider": s.name,
            "base_url": s.base_url,
            "key_env": s.key_env,
            "needs_key": s.needs_key,
            "wire": s.wire,
        }
        for s in sorted(PROVIDERS.values(), key=lambda s: s.name)
    ]
    if as_json:
        click.echo(dumps(rows))
        return
    for r in rows:
        key = r["key_env"] if r["needs_key"] else f"{r['key_env']} (optional)"
        click.echo(escape_control(f"{r['provider']:<11} {r['base_url']:<40} {key}"))
