"""Budgets for an RLM job and the one tracker that enforces them, mid-flight, across all depths.

A :class:`Budget` is the settings; a :class:`BudgetTracker` is the running account shared by a run,
its broker and every child RLM it spawns (children draw on the parent's remaining budget). Every
charge checks the limits at once, so a budget trips in the middle of a cell, not only between
iterations; the loop then stops the cell and cancels in-flight sub-calls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.lm.types import ZERO_USAGE, Usage


@dataclass(frozen=True)
class Budget:
    """Limits of one RLM job (``None`` means unlimited). Times in seconds, money in USD.

    ``max_iterations`` applies to each run (root and every child); the others are shared by the
    whole tree of runs. ``final_turn_at`` is the used fraction of any limit at which the model
    gets one forced final-answer turn.
    """

    max_iterations: int = 30
    max_wall_s: float | None = 900.0
    max_root_tokens: int | None = None
    max_sub_tokens: int | None = None
    max_sub_calls: int | None = 2_000
    max_usd: float | None = None
    max_depth: int = 1
    final_turn_at: float = 0.9

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise InvalidInput("Budget.max_iterations must be at least 1")
        if self.max_depth < 0:
            raise InvalidInput("Budget.max_depth must be 0 or more")
        if not 0.0 < self.final_turn_at <= 1.0:
            raise InvalidInput("Budget.final_turn_at must be in (0, 1]")
        for name in ("max_wall_s", "max_root_tokens", "max_sub_tokens", "max_sub_calls", "max_usd"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidInput(f"Budget.{name} must be positive (or None for no limit)")


class BudgetTrip(Exception):
    """Raised inside the engine when a limit runs out; the run turns it into BudgetExceeded."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


class BudgetTracker:
    """The running account of one job tree: tokens, calls, dollars and the wall clock."""

    def __init__(self, budget: Budget, *, clock: Any = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self.started = clock()
        self.deadline = None if budget.max_wall_s is None else self.started + budget.max_wall_s
        self.root_usage: Usage = ZERO_USAGE
        self.sub_usage: Usage = ZERO_USAGE
        self.sub_calls_started = 0
        self.in_flight = 0
        self.trip: BudgetTrip | None = None
        self._tripped = asyncio.Event()
        self._trip_task: asyncio.Future[BudgetTrip] | None = None

    # ----- charging ---------------------------------------------------------------------------

    def charge_root(self, usage: Usage) -> None:
        self.root_usage = self.root_usage + usage
        self._check_spend()

    def charge_sub(self, usage: Usage) -> None:
        self.sub_usage = self.sub_usage + usage
        self._check_spend()

    def reserve_sub_call(self) -> None:
        """Count one sub-call before it starts; refuse it when the count or spend is used up."""
        self.check()
        limit = self.budget.max_sub_calls
        if limit is not None and self.sub_calls_started >= limit:
            self._set_trip("sub_calls", f"the sub-call budget of {limit} calls is used up")
        self.sub_calls_started += 1

    @property
    def usd(self) -> float:
        return self.root_usage.cost_usd + self.sub_usage.cost_usd

    def _check_spend(self) -> None:
        b = self.budget
        if b.max_root_tokens is not None and self.root_usage.total_tokens > b.max_root_tokens:
            self._set_trip(
                "root_tokens",
                f"the root model used {self.root_usage.total_tokens} tokens, over the budget of "
                f"{b.max_root_tokens}",
            )
        if b.max_sub_tokens is not None and self.sub_usage.total_tokens > b.max_sub_tokens:
            self._set_trip(
                "sub_tokens",
                f"sub-calls used {self.sub_usage.total_tokens} tokens, over the budget of "
                f"{b.max_sub_tokens}",
            )
        if b.max_usd is not None and self.usd > b.max_usd:
            self._set_trip("usd", f"the job cost ${self.usd:.4f}, over the budget of ${b.max_usd}")

    def _set_trip(self, limit: str, message: str) -> None:
        if self.trip is None:
            self.trip = BudgetTrip(limit, message)
            self._tripped.set()
        raise self.trip

    def force_trip(self, limit: str, message: str) -> None:
        """Trip a limit from outside the charging path (the wall-clock watchdog, cancellation)."""
        if self.trip is None:
            self.trip = BudgetTrip(limit, message)
            self._tripped.set()

    # ----- checking ---------------------------------------------------------------------------

    def check(self) -> None:
        """Raise the first limit that ran out (also the wall clock)."""
        if self.trip is not None:
            raise self.trip
        if self.deadline is not None and self._clock() >= self.deadline:
            self._set_trip(
                "wall_time", f"the wall-time budget of {self.budget.max_wall_s} s ran out"
            )
        self._check_spend()

    def remaining_s(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._clock())

    async def wait_tripped(self) -> BudgetTrip:
        """Wait until a spending limit trips (used to stop a running cell at once)."""
        await self._tripped.wait()
        assert self.trip is not None
        return self.trip

    def close(self) -> None:
        """Cancel the shared waiter (at the end of a job)."""
        if self._trip_task is not None and not self._trip_task.done():
            self._trip_task.cancel()

    def tripped_future(self) -> asyncio.Future[BudgetTrip]:
        """One shared task that completes when a limit trips (cheaper than a waiter per await)."""
        if self._trip_task is None or self._trip_task.get_loop() is not asyncio.get_running_loop():
            self._trip_task = asyncio.ensure_future(self.wait_tripped())
        return self._trip_task

    def fractions(self) -> dict[str, float]:
        """The used fraction of every limit that is set."""
        b = self.budget
        out: dict[str, float] = {}
        if self.deadline is not None and b.max_wall_s:
            out["wall_time"] = (self._clock() - self.started) / b.max_wall_s
        if b.max_root_tokens:
            out["root_tokens"] = self.root_usage.total_tokens / b.max_root_tokens
        if b.max_sub_tokens:
            out["sub_tokens"] = self.sub_usage.total_tokens / b.max_sub_tokens
        if b.max_sub_calls:
            out["sub_calls"] = self.sub_calls_started / b.max_sub_calls
        if b.max_usd:
            out["usd"] = self.usd / b.max_usd
        return out

    def used_fraction(self) -> float:
        """The largest used fraction over all limits (wall time, tokens, calls, dollars)."""
        return max(self.fractions().values(), default=0.0)

    def nearest_limit(self) -> str:
        """The name of the limit closest to running out."""
        fractions = self.fractions()
        return max(fractions, key=lambda k: fractions[k]) if fractions else "iterations"

    def near_end(self) -> bool:
        return self.used_fraction() >= self.budget.final_turn_at

    def snapshot(self) -> dict[str, Any]:
        """A small, JSON-safe picture of the account (logged with every iteration)."""
        return {
            "elapsed_s": round(self._clock() - self.started, 3),
            "root_tokens": self.root_usage.total_tokens,
            "sub_tokens": self.sub_usage.total_tokens,
            "sub_calls": self.sub_calls_started,
            "in_flight": self.in_flight,
            "usd": round(self.usd, 6),
        }
