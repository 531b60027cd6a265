"""Command-line options for model calls, shared by ``holdfast rlm ask`` and ``holdfast run``.

The output limit, the per-attempt call timeout and the cell timeout have defaults that suit a
slow local server as well as a hosted API; prices give a model the price table does not know a
cost, which a dollar budget needs (it refuses an unpriced model unless told to estimate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from holdfast.cli.options import POSITIVE
from holdfast.errors import UserError
from holdfast.lm.prices import Price

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

MAX_OUTPUT_TOKENS = 4096
CALL_TIMEOUT_S = 600.0
CELL_TIMEOUT_S = 60.0


def model_call_options(*, defaults: bool) -> Callable[[F], F]:
    """``--max-output-tokens``, ``--call-timeout``, ``--cell-timeout``, ``--price`` and
    ``--unpriced``; with ``defaults=False`` an option not given is None (the setting's own
    default applies)."""

    def chosen(value: Any) -> Any:
        return value if defaults else None

    options = [
        click.option(
            "--max-output-tokens",
            type=click.IntRange(min=1),
            default=chosen(MAX_OUTPUT_TOKENS),
            show_default=defaults,
            help=f"max_tokens of every model turn ({MAX_OUTPUT_TOKENS}).",
        ),
        click.option(
            "--call-timeout",
            type=POSITIVE,
            default=chosen(CALL_TIMEOUT_S),
            show_default=defaults,
            help="Seconds one attempt of a model call may take (slow local servers need minutes).",
        ),
        click.option(
            "--cell-timeout",
            type=POSITIVE,
            default=chosen(CELL_TIMEOUT_S),
            show_default=defaults,
            help="Seconds of its own time a code cell may run (waiting for sub-calls not counted).",
        ),
        click.option(
            "--price",
            "prices",
            multiple=True,
            metavar="MODEL=IN,OUT[,CACHED]",
            help="USD per million tokens for a model the price table does not know; repeatable.",
        ),
        click.option(
            "--unpriced",
            type=click.Choice(["fail", "estimate"]),
            default=chosen("fail"),
            show_default=defaults,
            help="With a dollar budget: refuse an unpriced model, or count it at the table's "
            "highest price.",
        ),
    ]

    def apply(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def check_seconds(**values: float | None) -> None:
    """Refuse a non-positive, infinite or NaN number of seconds, naming the option."""
    for name, value in values.items():
        if value is not None and not 0 < value < float("inf"):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be a positive number of seconds, got {value}")


def parse_assignments(specs: tuple[str, ...], flag: str, kind: Callable[[str], T]) -> dict[str, T]:
    """``MODEL=VALUE`` options into a dict by model name (split at the last ``=``)."""
    out: dict[str, T] = {}
    for spec in specs:
        name, sep, raw = spec.rpartition("=")
        if not sep or not name:
            raise UserError(f"{flag} takes MODEL=VALUE, got {spec!r}")
        try:
            value = kind(raw)
        except ValueError:
            raise UserError(f"{flag} {spec!r}: {raw!r} is not a valid value") from None
        if isinstance(value, (int, float)) and not (0 < value < float("inf")):
            raise UserError(f"{flag} {spec!r}: the value must be positive")
        out[name] = value
    return out


def parse_prices(specs: tuple[str, ...]) -> dict[str, Price]:
    """``--price MODEL=IN,OUT[,CACHED]`` (USD per million tokens) into prices by model name."""
    out: dict[str, Price] = {}
    for name, raw in parse_assignments(specs, "--price", str).items():
        try:
            numbers = [float(x) for x in raw.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or not all(0 <= n < float("inf") for n in numbers):
            raise UserError(
                f"--price {name}={raw}: give INPUT,OUTPUT[,CACHED] in USD per million tokens"
            )
        out[name] = Price(*numbers)
    return out
