"""Option types shared by every command.

Every option that takes a number with a fractional part uses :data:`FINITE` (or
:func:`finite`), never ``type=float``: Python's ``float()`` accepts ``nan``, ``inf`` and
``1e999``, and a ``nan`` lifetime compares false with everything, so an approval given with
``--ttl nan`` would never expire. A test walks the whole command tree to keep it that way.
"""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.ParamType[float]):
    """A real number that is finite (no nan, inf or overflow), optionally with bounds."""

    name = "number"

    def __init__(
        self,
        minimum: float | None = None,
        *,
        open_min: bool = False,
        maximum: float | None = None,
    ) -> None:
        self.minimum = minimum
        self.open_min = open_min
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float | int) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.minimum is not None and (
            number < self.minimum or (self.open_min and number == self.minimum)
        ):
            bound = "greater than" if self.open_min else "at least"
            self.fail(f"{value!r} must be {bound} {self.minimum:g}", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"{value!r} must be at most {self.maximum:g}", param, ctx)
        return number

    def __repr__(self) -> str:
        return "FINITE"


FINITE = FiniteFloat()
POSITIVE = FiniteFloat(0.0, open_min=True)
NON_NEGATIVE = FiniteFloat(0.0)


def finite(
    minimum: float | None = None, *, open_min: bool = False, maximum: float | None = None
) -> FiniteFloat:
    return FiniteFloat(minimum, open_min=open_min, maximum=maximum)
