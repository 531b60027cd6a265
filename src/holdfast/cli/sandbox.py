"""``holdfast sandbox``: run code in an isolated Python worker, and check what isolation exists.

``holdfast sandbox run FILE`` (or ``-`` for standard input) runs the file as one cell in a fresh
box and prints what it printed; ``--load NAME=PATH`` makes files available as variables first.
Exit codes: 0 the cell ran cleanly, 1 it raised, 3 it timed out or the box died, 2 bad usage or an
isolation level that cannot be had (with the remedy). ``holdfast sandbox check`` reports which
isolation levels, seccomp and cgroups this machine offers; it exits 1 when the default
``namespace`` level is unavailable.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from holdfast.cli.options import POSITIVE
from holdfast.display import dumps, escape_control
from holdfast.errors import InvalidInput


@click.group()
def sandbox() -> None:
    """Run code in an isolated Python worker."""


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(as_json: bool) -> None:
    """Report which isolation levels, seccomp and cgroups are available, with remedies."""
    from holdfast.sandbox.check import diagnose

    report = diagnose()
    if as_json:
        click.echo(dumps(report.to_dict(), indent=2))
    else:
        from rich.table import Table

        from holdfast.display import console, text

        table = Table(title="holdfast sandbox check")
        table.add_column("feature")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        for cap in report.capabilities:
            status = text("ok", "green") if cap.ok else text("missing", "red")
            table.add_row(text(cap.name), status, text(cap.detail))
        out = console()
        out.print(table)
        level = "available" if report.namespace_ok else "UNAVAILABLE"
        out.print(text(f"default isolation level 'namespace': {level}"))
    if not report.namespace_ok:
        sys.exit(1)


def _parse_loads(loads: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for item in loads:
        name, sep, path = item.partition("=")
        if not sep or not name.isidentifier() or not path:
            raise InvalidInput(f"--load expects NAME=PATH, got {item!r}")
        out.append((name, path))
    return out


async def _run_cell(code: str, policy: Any, loads: list[tuple[str, str]], timeout: float) -> Any:
    from holdfast.sandbox import open_sandbox

    async with open_sandbox(policy) as box:
        for name, path in loads:
            await box.load(name, path=path)
        return await box.execute(code, timeout=timeout)


@sandbox.command()
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--isolation",
    type=click.Choice(["namespace", "process"]),
    default="namespace",
    show_default=True,
    help="'process' is a plain subprocess and not a security boundary.",
)
@click.option("--timeout", type=POSITIVE, default=60.0, show_default=True, help="Wall clock, s.")
@click.option("--memory-mb", type=int, default=2048, show_default=True)
@click.option("--load", "loads", multiple=True, metavar="NAME=PATH", help="Load a file as text.")
@click.option("--json", "as_json", is_flag=True, help="Print the cell result as JSON.")
def run(
    file: Any, isolation: str, timeout: float, memory_mb: int, loads: tuple[str, ...], as_json: bool
) -> None:
    """Run FILE (or - for standard input) as one cell in a fresh box."""
    from holdfast.sandbox import SandboxPolicy

    code = file.read()
    policy = SandboxPolicy(
        isolation=isolation,  # type: ignore[arg-type]
        cell_timeout_s=timeout,
        memory_mb=memory_mb,
        echo_last_expression=True,
    )
    result = asyncio.run(_run_cell(code, policy, _parse_loads(loads), timeout))
    if as_json:
        click.echo(dumps(result.to_dict(), indent=2))
    else:
        # what the box printed is shown, never obeyed: its control sequences are escaped
        if result.stdout:
            click.echo(escape_control(result.stdout), nl=False)
        if result.value_repr is not None:
            click.echo(escape_control(result.value_repr))
        if result.stderr:
            click.echo(escape_control(result.stderr), nl=False, err=True)
        if result.error is not None:
            shown = result.error.traceback or result.error.message
            click.echo(escape_control(shown), err=True, nl=False)
            if not shown.endswith("\n"):
                click.echo("", err=True)
    if result.timed_out or result.fatal or (result.error and result.error.type == "SandboxDied"):
        sys.exit(3)
    if result.error is not None:
        sys.exit(1)
