"""A stop, a pause or an exhausted budget reaches an effect in flight, not only the next boundary.

The effect is cut off through ``ctx.cancel``; its step is left ``started`` (its outcome is
unknown), the task ends the way the signal says (cancelled, paused, failed on its budget), and a
resumed task reconciles the step: an idempotent one runs again with the same key.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from holdfast.errors import Cancelled
from holdfast.harness import Harness, StepContext, TaskKind, ToolSpec, WorkerSettings
from holdfast.harness.budget import BudgetMeter
from holdfast.harness.cancel import CancelToken
from holdfast.harness.spec import Budget

DEFAULTS = WorkerSettings(poll_s=0.05)  # the default steering poll (0.5 s)


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
    return time.monotonic() - start


def _waiting_kind(h: Harness, started: threading.Event, runs: list[str]) -> None:
    def effect(ctx: StepContext, key: str) -> str:
        runs.append(key)
        started.set()
        if len(runs) == 1:
            ctx.cancel.sleep(60)  # a long effect that watches the token
        return "done"

    def run(ctx: StepContext) -> Any:
        return ctx.step("wait", "slow.wait", {}, lambda key: effect(ctx, key))

    h.registry.register(
        TaskKind("waiter", run, tools={"slow.wait": ToolSpec(effect=True, idempotent=True)})
    )


@pytest.mark.parametrize("signal", ["stop", "pause"])
def test_a_signal_cuts_off_an_effect_in_flight_and_leaves_its_step_open(
    harness: Harness, signal: str
) -> None:
    started = threading.Event()
    runs: list[str] = []
    _waiting_kind(harness, started, runs)
    task = harness.submit(
        {
            "kind": "waiter",
            "goal": "g",
            "policy": {"rules": [{"tool": "slow.wait", "action": "allow"}]},
        }
    ).id
    worker = threading.Thread(target=harness.run_until_idle, args=(DEFAULTS,), daemon=True)
    worker.start()
    assert started.wait(10)
    sent = time.monotonic()
    getattr(harness, signal)(task)
    _wait(lambda: harness.get(task).status in ("cancelled", "paused"))
    took = time.monotonic() - sent
    worker.join(10)
    assert took < 1.0, took
    assert harness.get(task).status == ("cancelled" if signal == "stop" else "paused")
    (step,) = harness.steps(task)
    assert step.status == "started", "cut off: neither done nor failed"
    if signal == "pause":
        harness.resume(task)
        harness.run_until_idle(DEFAULTS)
        assert harness.get(task).status == "succeeded"
        assert runs == [runs[0], runs[0]], "re-run once, with the same idempotency key"
    assert harness.verify(task).ok


def test_the_wall_budget_cuts_off_an_effect_in_flight(harness: Harness) -> None:
    started = threading.Event()
    runs: list[str] = []
    _waiting_kind(harness, started, runs)
    task = harness.submit(
        {
            "kind": "waiter",
            "goal": "g",
            "budget": {"wall_s": 0.5},
            "policy": {"rules": [{"tool": "slow.wait", "action": "allow"}]},
        }
    ).id
    start = time.monotonic()
    harness.run_until_idle(DEFAULTS)
    assert time.monotonic() - start < 3
    row = harness.get(task)
    assert row.status == "failed" and row.error is not None
    assert row.error["code"] == "budget_exceeded" and row.error["details"]["limit"] == "wall_s"
    assert harness.steps(task)[0].status == "started"


def test_the_token_wakes_async_waiters_from_another_thread() -> None:
    token = CancelToken()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        threading.Timer(0.05, token.cancel, args=("stop requested",)).start()
        t0 = loop.time()
        with pytest.raises(Cancelled) as err:
            await token.guard(asyncio.sleep(30))
        assert err.value.details["reason"] == "stop requested"
        return loop.time() - t0

    assert asyncio.run(main()) < 1.0
    fired: list[int] = []
    token.on_cancel(lambda: fired.append(1))
    assert fired == [1], "registered after it fired: called at once"


def test_the_meter_reads_an_injected_clock_and_add_does_not_raise() -> None:
    now = [100.0]
    meter = BudgetMeter(Budget(wall_s=10, tokens=5), clock=lambda: now[0])
    meter.add(tokens=50)
    assert meter.exhausted() == "tokens"
    now[0] += 11
    assert meter.wall_s == pytest.approx(11) and meter.remaining()["wall_s"] == 0
