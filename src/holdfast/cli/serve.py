"""``holdfast serve``: the HTTP API, the OpenAI-compatible RLM endpoint and the web console.

Over the same stores as the CLI: the SQLite store under the Holdfast home, or the PostgreSQL
control plane (``--database-url`` / ``HOLDFAST_DATABASE_URL``). Loopback by default; auth by
bearer token unless ``--no-auth``, which only a loopback address accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from holdfast.cli.options import POSITIVE
from holdfast.errors import InvalidInput


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInput(f"{what} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def build_settings(**opts: Any) -> Any:
    """ServerSettings from the command's options (shared with ``holdfast demo --serve``)."""
    from holdfast.config import database_url
    from holdfast.server.settings import ModelSpec, RLMCaps, ServerSettings

    models = {}
    for name, value in _pairs(opts.get("models", ()), "--model").items():
        root, _, sub = value.partition(",")
        models[name] = ModelSpec(root=root.strip(), sub=sub.strip() or None)
    return ServerSettings(
        host=opts.get("host") or "127.0.0.1",
        port=int(opts.get("port", 8765)),
        auth=not opts.get("no_auth", False),
        database_url=database_url(opts.get("database_url")),
        memory_root=Path(opts["memory_root"]) if opts.get("memory_root") else None,
        embedder=opts.get("embedder") or os.environ.get("HOLDFAST_MEMORY_EMBEDDER") or "local",
        sign_key=Path(opts["sign_key"]) if opts.get("sign_key") else None,
        caps=RLMCaps.parse(_pairs(opts.get("caps", ()), "--rlm-cap")),
        models=models,
        generic_models=not opts.get("no_generic_models", False),
        input_roots=tuple(Path(p).expanduser().resolve() for p in opts.get("input_roots", ())),
        allowed_hosts=tuple(h.lower() for h in opts.get("allowed_hosts", ())),
        max_body_bytes=int(float(opts.get("max_body_mb", 64)) * 1024 * 1024),
        isolation=opts.get("isolation") or "namespace",
        console=not opts.get("no_console", False),
        load=tuple(opts.get("load", ())),
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--no-auth", is_flag=True, help="No bearer tokens (only on a loopback address).")
@click.option("--database-url", default=None, metavar="URL", help="postgresql://... or a path.")
@click.option("--memory-root", type=click.Path(file_okay=False), default=None)
@click.option("--embedder", default=None, help="local | none | openai:<model>@<url>.")
@click.option("--sign-key", type=click.Path(), default=None, help="Sign receipts with this key.")
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME=ROOT[,SUB]",
    help="Serve NAME as an RLM over provider:model ROOT (sub-calls on SUB). Repeatable.",
)
@click.option(
    "--no-generic-models", is_flag=True, help="Serve only --model names, not rlm:<provider>:<m>."
)
@click.option(
    "--rlm-cap",
    "caps",
    multiple=True,
    metavar="KEY=VALUE",
    help="Cap a request's RLM budget, e.g. max_usd=1 max_wall_s=600 (none lifts a cap).",
)
@click.option(
    "--input-root",
    "input_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A folder RLM jobs may read files from by path. Repeatable.",
)
@click.option(
    "--allowed-host", "allowed_hosts", multiple=True, help="Another Host name to answer to."
)
@click.option("--max-body-mb", type=POSITIVE, default=64.0, show_default=True)
@click.option("--isolation", type=click.Choice(["namespace", "process"]), default="namespace")
@click.option("--no-console", is_flag=True, help="Do not serve the web console.")
@click.option("--load", multiple=True, metavar="MODULE:ATTR", help="Accept this task kind.")
@click.option("--mcp", "mcp", is_flag=True, help="Also serve MCP at /mcp (docs/mcp.md).")
@click.option(
    "--mcp-root",
    "mcp_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A workspace root MCP's analyze may read (default: the --input-root folders).",
)
@click.option("--mcp-namespace", default=None, help="MCP's memory namespace.")
@click.option(
    "--mcp-model", default=None, help="Model for MCP's analyze (default $HOLDFAST_MODEL)."
)
@click.option("--mcp-tasks", is_flag=True, help="Offer MCP's task tools.")
@click.option("--log-level", default="info", show_default=True)
def serve(**opts: Any) -> None:
    """Serve the API, the OpenAI-compatible endpoint and the console until interrupted."""
    from holdfast.display import console
    from holdfast.server import Services, create_app
    from holdfast.server.run import serve as run_server

    settings = build_settings(**opts)
    services = Services.open(settings)
    if settings.auth and (services.tokens is None or not services.tokens.any_active()):
        services.close()
        raise InvalidInput(
            "no active bearer token: create one with 'holdfast token create NAME' "
            "(or run on loopback with --no-auth)"
        )
    app = create_app(settings, services=services, warm_memory=True)
    if opts.get("mcp"):
        _mount_mcp(app, settings, opts)
    out = console(stderr=True)
    where = f"http://{settings.host}:{settings.port}"
    out.print(f"holdfast serve on {where}  (auth: {'bearer tokens' if settings.auth else 'off'})")
    out.print(f"  API {where}/api/v1   OpenAI-compatible {where}/v1   console {where}/console")
    if opts.get("mcp"):
        out.print(f"  MCP (streamable HTTP) {where}/mcp")
    try:
        run_server(app, settings, log_level=str(opts.get("log_level") or "info").lower())
    finally:
        services.close()


def _mount_mcp(app: Any, settings: Any, opts: dict[str, Any]) -> None:
    from holdfast.config import default_model
    from holdfast.mcp import MCPSettings, default_namespace
    from holdfast.mcp.http import mount_in_server

    roots = tuple(Path(p) for p in opts.get("mcp_roots", ())) or settings.input_roots
    if not roots:
        raise InvalidInput("--mcp needs a workspace root: --mcp-root DIR (or --input-root DIR)")
    mount_in_server(
        app,
        MCPSettings(
            roots=tuple(roots),
            namespace=opts.get("mcp_namespace") or default_namespace(list(roots)),
            model=default_model(opts.get("mcp_model")),
            memory_root=settings.memory_root,
            embedder=settings.embedder,
            database_url=settings.database_url,
            tasks=bool(opts.get("mcp_tasks")),
        ),
        memory_session=app.state.services.memory_session,
    )
