"""``holdfast mcp``: Holdfast's memory, ``analyze`` and tasks for coding agents, over MCP.

``holdfast mcp serve`` speaks stdio by default (what Claude Code, Codex CLI and Cursor launch);
``--transport http`` serves streamable HTTP on 127.0.0.1 behind a bearer token. ``holdfast mcp
config CLIENT`` prints the configuration snippet for a client, ``holdfast mcp tools`` lists the
tools with their schemas.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from holdfast.cli.options import POSITIVE
from holdfast.errors import UserError

CLIENTS = ("claude-code", "codex", "cursor")


def _settings(
    roots: tuple[str, ...],
    namespace: str | None,
    model: str | None,
    sub_model: str | None,
    embedder: str | None,
    tasks: bool,
    allow_purge: bool,
    database_url: str | None,
    caps: dict[str, Any],
) -> Any:
    from holdfast.config import database_url as env_database_url
    from holdfast.config import default_model
    from holdfast.mcp import AnalyzeCaps, MCPSettings, default_namespace

    paths = tuple(Path(r) for r in roots) or (Path.cwd(),)
    return MCPSettings(
        roots=paths,
        namespace=namespace or default_namespace(list(paths)),
        model=default_model(model),
        sub_model=sub_model,
        embedder=embedder or os.environ.get("HOLDFAST_MEMORY_EMBEDDER") or "local",
        database_url=env_database_url(database_url),
        caps=AnalyzeCaps(**{k: v for k, v in caps.items() if v is not None}),
        tasks=tasks,
        allow_purge=allow_purge,
    )


def _server_options(fn: Any) -> Any:
    options = [
        click.option(
            "--root",
            "roots",
            multiple=True,
            type=click.Path(file_okay=False, exists=True),
            help="A workspace root analyze may read (repeatable; default: the current folder).",
        ),
        click.option(
            "--namespace",
            "-n",
            help="Memory namespace (default: project-<name of the first root>).",
        ),
        click.option("--model", "-m", help="Model for analyze (default $HOLDFAST_MODEL)."),
        click.option("--sub-model", help="Model for analyze's sub-calls (default: --model)."),
        click.option("--embedder", help="Memory embedder: local | none | openai:<model>@<url>."),
        click.option("--tasks", is_flag=True, help="Offer the task tools (off by default)."),
        click.option("--allow-purge", is_flag=True, help="Let clients purge memories."),
        click.option(
            "--database-url", help="Control-plane store (default $HOLDFAST_DATABASE_URL)."
        ),
        click.option("--max-seconds", type=POSITIVE, help="Cap on analyze's wall clock."),
        click.option("--max-usd", type=POSITIVE, help="Cap on analyze's spend (USD)."),
        click.option("--max-tokens", type=click.IntRange(min=1), help="Cap on tokens."),
        click.option("--max-iterations", type=click.IntRange(min=1), help="Cap on root turns."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _build(kw: dict[str, Any]) -> Any:
    caps = {
        "max_wall_s": kw.pop("max_seconds"),
        "max_usd": kw.pop("max_usd"),
        "max_tokens": kw.pop("max_tokens"),
        "max_iterations": kw.pop("max_iterations"),
    }
    return _settings(caps=caps, **kw)


@click.group()
def mcp() -> None:
    """Holdfast's memory, analyze and tasks over the Model Context Protocol."""


@mcp.command()
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio for coding agents; http for streamable HTTP.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@_server_options
def serve(transport: str, host: str, port: int, **kw: Any) -> None:
    """Serve MCP over stdio (default) or streamable HTTP.

    Over HTTP every request needs `Authorization: Bearer $HOLDFAST_MCP_TOKEN`; when that variable
    is unset a token is generated and printed once on standard error.
    """
    settings = _build(kw)
    if transport == "stdio":
        import anyio

        from holdfast.mcp.server import build_server

        server = build_server(settings)
        anyio.run(server.run_stdio_async)
        return
    _serve_http(settings, host, port)


def _serve_http(settings: Any, host: str, port: int) -> None:
    import ipaddress

    import uvicorn

    from holdfast.mcp.http import http_app, token_verifier

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise UserError(f"--host {host!r} is not an IP address or 'localhost'") from None
    token = os.environ.get("HOLDFAST_MCP_TOKEN", "")
    if not token:
        token = secrets.token_urlsafe(32)
        click.echo(
            f"bearer token for this server (set HOLDFAST_MCP_TOKEN to choose one): {token}",
            err=True,
        )
    if not loopback:
        click.echo(f"warning: serving MCP on a non-loopback address {host}", err=True)
    app = http_app(settings, token_verifier(token), host=host)
    click.echo(f"MCP over streamable HTTP at http://{host}:{port}/mcp", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")


@mcp.command()
@_server_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tools(as_json: bool, **kw: Any) -> None:
    """List the tools a client would see, with their input schemas."""
    import anyio

    from holdfast.mcp.server import build_server

    server = build_server(_build(kw))
    listed = anyio.run(server.list_tools)
    data = [
        {"name": t.name, "description": t.description, "input_schema": t.input_schema}
        for t in listed
    ]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for t in data:
        click.echo(f"{t['name']}: {t['description']}")


def snippet(client: str, root: Path, command: list[str]) -> dict[str, Any]:
    """The configuration a client needs to launch this server over stdio for ``root``."""
    args = [*command[1:], "mcp", "serve", "--root", str(root)]
    if client in ("claude-code", "cursor"):
        return {"mcpServers": {"holdfast": {"command": command[0], "args": args}}}
    if client == "codex":
        return {"mcp_servers": {"holdfast": {"command": command[0], "args": args}}}
    raise UserError(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")


def render_snippet(client: str, data: dict[str, Any]) -> str:
    if client == "codex":
        entry = data["mcp_servers"]["holdfast"]
        lines = ["[mcp_servers.holdfast]", f"command = {json.dumps(entry['command'])}"]
        lines.append("args = [" + ", ".join(json.dumps(a) for a in entry["args"]) + "]")
        return "\n".join(lines)
    return json.dumps(data, indent=2)


@mcp.command()
@click.argument("client", type=click.Choice(CLIENTS))
@click.option(
    "--root", type=click.Path(file_okay=False, exists=True), default=".", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print the snippet's data as JSON.")
def config(client: str, root: str, as_json: bool) -> None:
    """Print the configuration snippet for CLIENT (claude-code, codex or cursor).

    Claude Code and Cursor read JSON (`.mcp.json` / `.cursor/mcp.json` in the project); Codex CLI
    reads TOML (`~/.codex/config.toml`).
    """
    exe = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    command = [str(exe)] if exe is not None and exe.name == "holdfast" else ["holdfast"]
    data = snippet(client, Path(root).resolve(), command)
    click.echo(json.dumps(data, indent=2) if as_json else render_snippet(client, data))
