"""``holdfast token create|list|revoke``: bearer tokens for ``holdfast serve``.

Tokens live in the control-plane database (``--database-url`` / ``HOLDFAST_DATABASE_URL``, else
the SQLite store under the Holdfast home), hashed; the secret is printed once, at creation.
"""

from __future__ import annotations

import getpass
import time
from typing import Any

import click

from holdfast.cli.task import db_option, echo_json, json_option


def _tokens(database_url: str | None) -> Any:
    from holdfast.config import database_url as env_url
    from holdfast.server.tokens import TokenStore

    tokens = TokenStore.open(env_url(database_url))
    return tokens, tokens


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


@click.group()
def token() -> None:
    """Bearer tokens for the server: create (shown once), list, revoke."""


@token.command()
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["read", "write", "rlm"]),
    help="read: every GET; write: everything (the default); rlm: the OpenAI-compatible "
    "endpoint and RLM jobs only. Repeatable.",
)
@click.option("--ttl", type=float, default=None, help="Seconds until it expires (default: never).")
@db_option
@json_option
def create(
    name: str, scopes: tuple[str, ...], ttl: float | None, database_url: str | None, as_json: bool
) -> None:
    """Create a token for principal NAME (who receipts name as the actor)."""
    store, tokens = _tokens(database_url)
    try:
        info, secret = tokens.create(
            name, scopes=scopes or ("write",), created_by=f"cli:{getpass.getuser()}", ttl_s=ttl
        )
    finally:
        store.close()
    if as_json:
        echo_json({**info.to_dict(), "token": secret})
        return
    click.echo(secret)
    click.echo(
        f"token {info.id} for {info.name} ({', '.join(info.scopes)}); "
        "it is shown only now: keep it secret",
        err=True,
    )


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@db_option
@json_option
def list_(include_revoked: bool, database_url: str | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    from holdfast.display import escape_control

    store, tokens = _tokens(database_url)
    try:
        rows = tokens.list(include_revoked=include_revoked)
    finally:
        store.close()
    if as_json:
        echo_json([t.to_dict() for t in rows])
        return
    if not rows:
        click.echo("no tokens: create one with 'holdfast token create NAME'")
    for t in rows:
        state = "active" if t.active else ("revoked" if t.revoked_at else "expired")
        click.echo(
            f"{t.id}  {escape_control(t.name):<20} {','.join(t.scopes):<14} {state:<8} "
            f"created {_when(t.created_at)}  last used {_when(t.last_used_at)}"
            + (f"  expires {_when(t.expires_at)}" if t.expires_at else "")
        )


@token.command()
@click.argument("token_or_name")
@db_option
@json_option
def revoke(token_or_name: str, database_url: str | None, as_json: bool) -> None:
    """Revoke a token by id (or every token of a name); servers refuse it at once."""
    store, tokens = _tokens(database_url)
    try:
        gone = tokens.revoke(token_or_name)
    finally:
        store.close()
    if as_json:
        echo_json([t.to_dict() for t in gone])
    else:
        for t in gone:
            click.echo(f"revoked {t.id} ({t.name})")
