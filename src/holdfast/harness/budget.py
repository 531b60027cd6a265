"""Per-task budget accounting: wall clock, tokens, USD and steps, kept across attempts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from holdfast.errors import BudgetExceeded
from holdfast.harness.spec import Budget


class BudgetMeter:
    """What a task has used so far against its :class:`Budget`.

    ``used`` is persisted with the task (at every step, checkpoint and charge), so a resumed task
    continues from what earlier attempts spent; wall time counts only time spent running, on
    ``clock`` (monotonic by default; tests inject one).
    """

    def __init__(
        self,
        budget: Budget,
        used: dict[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        used = used or {}
        self.tokens = int(used.get("tokens", 0))
        self.usd = float(used.get("usd", 0.0))
        self.steps = int(used.get("steps", 0))
        self._wall_before = float(used.get("wall_s", 0.0))
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()

    @property
    def wall_s(self) -> float:
        return self._wall_before + max(0.0, self._clock() - self._started)

    def used(self) -> dict[str, float]:
        """The JSON form stored on the task."""
        return {
            "wall_s": round(self.wall_s, 3),
            "tokens": self.tokens,
            "usd": round(self.usd, 8),
            "steps": self.steps,
        }

    def remaining(self) -> dict[str, float | None]:
        b = self.budget
        return {
            "wall_s": None if b.wall_s is None else max(0.0, b.wall_s - self.wall_s),
            "tokens": None if b.tokens is None else max(0, b.tokens - self.tokens),
            "usd": None if b.usd is None else max(0.0, b.usd - self.usd),
            "steps": None if b.steps is None else max(0, b.steps - self.steps),
        }

    def charge(self, *, tokens: int = 0, usd: float = 0.0) -> None:
        """Add model usage; raises :class:`BudgetExceeded` once a limit is passed."""
        self.add(tokens=tokens, usd=usd)
        self.check()

    def add(self, *, tokens: int = 0, usd: float = 0.0) -> None:
        """Add model usage without checking the limits (work in flight is charged as it goes;
        the next boundary, or the work's own derived budget, stops it)."""
        with self._lock:
            self.tokens += max(0, int(tokens))
            self.usd += max(0.0, float(usd))

    def charge_usage(self, usage: Any) -> None:
        """Add an ``lm.Usage`` (anything with ``total_tokens`` and ``cost_usd``)."""
        self.charge(tokens=int(usage.total_tokens), usd=float(usage.cost_usd))

    def exhausted(self, *, next_step: bool = False) -> str | None:
        """The name of the first limit reached, or None."""
        b = self.budget
        if b.wall_s is not None and self.wall_s >= b.wall_s:
            return "wall_s"
        if b.tokens is not None and self.tokens > b.tokens:
            return "tokens"
        if b.usd is not None and self.usd > b.usd:
            return "usd"
        if b.steps is not None and self.steps + (1 if next_step else 0) > b.steps:
            return "steps"
        return None

    def check(self, *, next_step: bool = False, partial: Any = None, trace_id: str = "") -> None:
        limit = self.exhausted(next_step=next_step)
        if limit is not None:
            raise BudgetExceeded(
                f"the task's {limit} budget ran out ({self.used()} used of {self.budget.to_dict()})",
                limit=limit,
                partial=partial,
                trace_id=trace_id or None,
                used=self.used(),
            )
