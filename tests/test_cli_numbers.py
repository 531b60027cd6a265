"""Numbers from outside must be finite: every CLI option, and the harness's API fields."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import click
import pytest

from holdfast.cli.main import COMMANDS, cli
from holdfast.errors import InvalidInput
from holdfast.harness import Harness, WorkerSettings
from holdfast.testing.kinds import kinds_registry


def _walk(command: click.Command, path: str, ctx: click.Context) -> Iterator[tuple[str, Any]]:
    for param in command.params:
        yield f"{path} {param.name}", param
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                yield from _walk(sub, f"{path} {name}", ctx)


def test_no_option_anywhere_takes_a_plain_float() -> None:
    """``type=float`` accepts nan and inf; every number option uses the finite type instead."""
    ctx = click.Context(cli)
    params = list(_walk(cli, "holdfast", ctx))
    assert len({p.split()[1] for p, _ in params if len(p.split()) > 2}) >= len(COMMANDS) - 3
    floats = [path for path, p in params if isinstance(p.type, click.types.FloatParamType)]
    assert floats == []
    numeric = [path for path, p in params if type(p.type).__name__ == "FiniteFloat"]
    assert len(numeric) >= 10, numeric  # the walk really reached the number options


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "infinity"])
@pytest.mark.parametrize(
    "argv",
    [
        ["approve", "task-x", "001-step", "--ttl"],
        ["deny", "task-x", "001-step", "--ttl"],
        ["worker", "--lease-ttl"],
        ["task", "submit", "noop", "--budget-usd"],
        ["rlm", "ask", "q", "--model", "openai:x", "--max-wall"],
        ["lm", "call", "hi", "--model", "openai:x", "--temperature"],
        ["sandbox", "run", "-", "--timeout"],
        ["run", "goal", "--model", "openai:x", "--threshold"],
    ],
)
def test_non_finite_numbers_get_one_clean_line_and_exit_2(
    holdfast_cli: Any, argv: list[str], value: str
) -> None:
    result = holdfast_cli(*argv, value)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ") and "is not a finite number" in lines[0]
    assert "Traceback" not in result.err


def test_the_harness_api_refuses_non_finite_lifetimes_and_settings(tmp_path: Any) -> None:
    with Harness.open(tmp_path / "h.db", registry=kinds_registry()) as h:
        t = h.submit({"kind": "noop"})
        for bad in (math.nan, math.inf, -1.0, 0.0, "10"):
            with pytest.raises(InvalidInput, match="finite"):
                h.approve(t.id, "001-x", ttl_s=bad)  # type: ignore[arg-type]
    for field in ("lease_ttl_s", "poll_s", "heartbeat_s", "steer_poll_s"):
        for bad in (math.nan, math.inf, 0.0):
            with pytest.raises(InvalidInput, match=field):
                options: dict[str, Any] = {field: bad}
                WorkerSettings(**options)
    with pytest.raises(InvalidInput):
        WorkerSettings(concurrency=0)
