"""Budgets for an RLM job and the one tracker that enforces them, mid-flight, across all depths.

A :class:`Budget` is the settings; a :class:`BudgetTracker` is the running account shared by a run,
its broker and every child RLM it spawns (children draw on the parent's remaining budget).

Spending limits (dollars and tokens) are kept with reservations: before a model call is sent, its
estimated cost (the prompt's estimated tokens plus the reply's ``max_tokens``, priced) is reserved;
a call is admitted only while what was spent plus what calls in flight have reserved is below the
limit, and otherwise waits for calls in flight to settle. On completion the reservation is
replaced by what the call really cost. However many calls run at once, the final spend therefore
stays within the limit plus at most one call's estimate (as long as the provider honours
``max_tokens``). The first charge that crosses a limit trips it; the loop then stops the running
cell and cancels in-flight calls, whose estimated cost is charged too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from holdfast.errors import InvalidInput
from holdfast.lm.types import ZERO_USAGE, Usage

log = logging.getLogger("holdfast.rlm")

Unpriced = Literal["fail", "estimate"]


@dataclass(frozen=True)
class Budget:
    """Limits of one RLM job (``None`` means unlimited). Times in seconds, money in USD.

    ``max_iterations`` applies to each run (root and every child); the others are shared by the
    whole tree of runs. ``max_tokens`` bounds root and sub-call tokens together (what a task's
    token budget maps to). ``final_turn_at`` is the used fraction of any limit at which the model
    gets one forced final-answer turn. ``max_empty_replies`` is how many empty root replies in a
    row are fed back before the run gives up. ``unpriced`` says what a dollar budget does with a
    model the price table does not know: ``"fail"`` refuses to start (the default), ``"estimate"``
    counts it at the price of the most expensive model in the table.
    """

    max_iterations: int = 30
    max_wall_s: float | None = 900.0
    max_root_tokens: int | None = None
    max_sub_tokens: int | None = None
    max_tokens: int | None = None
    max_sub_calls: int | None = 2_000
    max_usd: float | None = None
    max_depth: int = 1
    final_turn_at: float = 0.9
    max_empty_replies: int = 3
    unpriced: Unpriced = "fail"

    def __post_init__(self) -> None:
        for name in ("max_iterations", "max_depth", "max_empty_replies"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"Budget.{name} must be an integer, not {value!r}")
        if self.max_iterations < 1:
            raise InvalidInput("Budget.max_iterations must be at least 1")
        if self.max_depth < 0:
            raise InvalidInput("Budget.max_depth must be 0 or more")
        if self.max_empty_replies < 0:
            raise InvalidInput("Budget.max_empty_replies must be 0 or more")
        if not 0.0 < self.final_turn_at <= 1.0:
            raise InvalidInput("Budget.final_turn_at must be in (0, 1]")
        if self.unpriced not in ("fail", "estimate"):
            raise InvalidInput("Budget.unpriced must be 'fail' or 'estimate'")
        for name in (
            "max_wall_s",
            "max_root_tokens",
            "max_sub_tokens",
            "max_tokens",
            "max_sub_calls",
            "max_usd",
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput(f"Budget.{name} must be a number (or None), not {value!r}")
            if not value > 0 or value == float("inf"):
                raise InvalidInput(f"Budget.{name} must be positive and finite (or None)")


class BudgetTrip(Exception):
    """Raised inside the engine when a limit runs out; the run turns it into BudgetExceeded."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


class SubCallsUsedUp(Exception):
    """The sub-call count is used up: the call is refused, the job goes on (the model is told)."""


@dataclass
class Reservation:
    """What one admitted call may cost, held against the limits until it settles."""

    root: bool
    tokens: int
    usd: float
    settled: bool = False


class BudgetTracker:
    """The running account of one job tree: tokens, calls, dollars and the wall clock.

    ``on_charge`` (if given) is called with every charge as it happens (a settled call, or the
    estimate of a cancelled one), which is how a harness task is charged while its job runs.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_charge: Callable[[Usage], None] | None = None,
    ) -> None:
        self.budget = budget
        self._clock = clock
        self.on_charge = on_charge
        self.started = clock()
        self.deadline = None if budget.max_wall_s is None else self.started + budget.max_wall_s
        self.root_usage: Usage = ZERO_USAGE
        self.sub_usage: Usage = ZERO_USAGE
        self.sub_calls_started = 0
        self.in_flight = 0
        self.reserved_usd = 0.0
        self.reserved_root_tokens = 0
        self.reserved_sub_tokens = 0
        self.trip: BudgetTrip | None = None
        self._tripped = asyncio.Event()
        self._trip_task: asyncio.Future[BudgetTrip] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    # ----- the sub-call count -----------------------------------------------------------------

    def take_sub_call(self) -> None:
        """Count one sub-call before it starts; :class:`SubCallsUsedUp` when none are left."""
        self.check()
        limit = self.budget.max_sub_calls
        if limit is not None and self.sub_calls_started >= limit:
            raise SubCallsUsedUp(
                f"the sub-call budget of {limit} calls is used up (0 left); SUBMIT your answer "
                "from what you have"
            )
        self.sub_calls_started += 1

    def sub_calls_left(self) -> int | None:
        limit = self.budget.max_sub_calls
        return None if limit is None else max(0, limit - self.sub_calls_started)

    # ----- spending: reserve before a call, settle after it -----------------------------------

    async def reserve(self, *, root: bool, tokens: int, usd: float) -> Reservation:
        """Hold ``tokens`` and ``usd`` for one call; waits while calls in flight hold the rest.

        Raises the :class:`BudgetTrip` of a limit that is spent (or the job's trip).
        """
        while True:
            self.check()
            blocked = self._blocked(root)
            if blocked is None:
                break
            limit, held = blocked
            if not held:  # nothing in flight will give room back: the limit is spent
                self._set_trip(limit, self._spent_message(limit))
            await self._wait_for_room()
        res = Reservation(root=root, tokens=max(0, int(tokens)), usd=max(0.0, float(usd)))
        self.reserved_usd += res.usd
        if root:
            self.reserved_root_tokens += res.tokens
        else:
            self.reserved_sub_tokens += res.tokens
        return res

    def settle(self, res: Reservation, usage: Usage, *, check: bool = True) -> None:
        """Replace a reservation by what the call cost; trips (and raises) when a limit is passed.

        ``check=False`` charges without raising (for a call that was cancelled).
        """
        if not res.settled:
            res.settled = True
            self.reserved_usd = max(0.0, self.reserved_usd - res.usd)
            if res.root:
                self.reserved_root_tokens = max(0, self.reserved_root_tokens - res.tokens)
            else:
                self.reserved_sub_tokens = max(0, self.reserved_sub_tokens - res.tokens)
        self._add(usage, root=res.root)
        self._wake()
        if check:
            self._check_spend()
        else:
            try:
                self._check_spend()
            except BudgetTrip:
                pass

    def charge(self, usage: Usage, *, root: bool) -> None:
        """Charge usage that needed no reservation (a reply from the cache)."""
        self._add(usage, root=root)
        self._check_spend()

    def _add(self, usage: Usage, *, root: bool) -> None:
        if root:
            self.root_usage = self.root_usage + usage
        else:
            self.sub_usage = self.sub_usage + usage
        if self.on_charge is not None and (usage.total_tokens or usage.cost_usd):
            try:
                self.on_charge(usage)
            except Exception:
                log.exception("the RLM job's on_charge callback failed")

    @property
    def usd(self) -> float:
        return self.root_usage.cost_usd + self.sub_usage.cost_usd

    @property
    def tokens(self) -> int:
        return self.root_usage.total_tokens + self.sub_usage.total_tokens

    @property
    def estimated_tokens(self) -> int:
        return self.root_usage.estimated_tokens + self.sub_usage.estimated_tokens

    def _blocked(self, root: bool) -> tuple[str, bool] | None:
        """The first limit a new call may not enter (and whether calls in flight hold part of it)."""
        b = self.budget
        reserved_tokens = self.reserved_root_tokens + self.reserved_sub_tokens
        checks: list[tuple[str, float | None, float, float]] = [
            ("usd", b.max_usd, self.usd, self.reserved_usd),
            ("tokens", b.max_tokens, self.tokens, reserved_tokens),
        ]
        if root:
            checks.append(
                (
                    "root_tokens",
                    b.max_root_tokens,
                    self.root_usage.total_tokens,
                    self.reserved_root_tokens,
                )
            )
        else:
            checks.append(
                (
                    "sub_tokens",
                    b.max_sub_tokens,
                    self.sub_usage.total_tokens,
                    self.reserved_sub_tokens,
                )
            )
        for name, limit, spent, held in checks:
            if limit is not None and spent + held >= limit:
                return name, held > 0
        return None

    async def _wait_for_room(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        finally:
            if future in self._waiters:
                self._waiters.remove(future)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _spent_message(self, limit: str) -> str:
        b = self.budget
        if limit == "usd":
            return f"the job cost ${self.usd:.4f}, reaching its budget of ${b.max_usd}"
        if limit == "tokens":
            return f"the job used {self.tokens:,} tokens, reaching its budget of {b.max_tokens:,}"
        if limit == "root_tokens":
            return (
                f"the root model used {self.root_usage.total_tokens:,} tokens, reaching the "
                f"budget of {b.max_root_tokens:,}"
            )
        return (
            f"sub-calls used {self.sub_usage.total_tokens:,} tokens, reaching the budget of "
            f"{b.max_sub_tokens:,}"
        )

    def _check_spend(self) -> None:
        b = self.budget
        over: list[tuple[str, float | None, float]] = [
            ("root_tokens", b.max_root_tokens, self.root_usage.total_tokens),
            ("sub_tokens", b.max_sub_tokens, self.sub_usage.total_tokens),
            ("tokens", b.max_tokens, self.tokens),
            ("usd", b.max_usd, self.usd),
        ]
        for name, limit, spent in over:
            if limit is not None and spent > limit:
                self._set_trip(name, self._spent_message(name).replace("reaching", "over"))

    def _set_trip(self, limit: str, message: str) -> None:
        self.force_trip(limit, message)
        assert self.trip is not None
        raise self.trip

    def force_trip(self, limit: str, message: str) -> None:
        """Trip a limit from outside the charging path (the wall-clock watchdog, cancellation)."""
        if self.trip is None:
            self.trip = BudgetTrip(limit, message)
            self._tripped.set()
            self._wake()

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
        if b.max_tokens:
            out["tokens"] = self.tokens / b.max_tokens
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
        out: dict[str, Any] = {
            "elapsed_s": round(self._clock() - self.started, 3),
            "root_tokens": self.root_usage.total_tokens,
            "sub_tokens": self.sub_usage.total_tokens,
            "sub_calls": self.sub_calls_started,
            "in_flight": self.in_flight,
            "usd": round(self.usd, 6),
        }
        if self.estimated_tokens:
            out["estimated_tokens"] = self.estimated_tokens
        if self.reserved_usd:
            out["reserved_usd"] = round(self.reserved_usd, 6)
        return out
