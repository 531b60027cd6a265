"""The step contract, gates, approvals, budgets and steering, on both backends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from harness_util import scripted

from holdfast.harness import (
    Harness,
    StepContext,
    TaskKind,
    ToolSpec,
    Worker,
    WorkerSettings,
)
from holdfast.testing import FakeClock
from holdfast.testing.effects import EffectLedger

FAST = WorkerSettings(poll_s=0.05, steer_poll_s=0.05, lease_ttl_s=5)


def kinds(h: Harness, tid: str) -> list[str]:
    return [r.data()["kind"] for r in h.receipts(tid)]


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@contextmanager
def background(h: Harness, settings: WorkerSettings = FAST) -> Iterator[Worker]:
    w = h.worker(settings)
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    try:
        yield w
    finally:
        w.stop()
        th.join(10)


def test_scripted_task_runs_each_effect_once_with_receipts(
    harness: Harness, workspace: Path
) -> None:
    t = harness.submit(
        scripted(
            workspace,
            [
                {"tool": "counter.add", "args": {"counter": "c", "amount": 2}},
                {"tool": "file.write", "args": {"path": "out/a.txt", "text": "hello"}},
                {"tool": "counter.add", "args": {"counter": "c", "amount": 3}},
            ],
        )
    )
    harness.run_until_idle(FAST)
    row = harness.get(t.id)
    assert row.status == "succeeded", row.error
    assert row.result["results"][0] == 2 and row.result["results"][2] == 5
    assert (workspace / "out/a.txt").read_text() == "hello"
    ledger = EffectLedger(workspace / "effects.db")
    assert ledger.value("c") == 5 and ledger.attempts("c") == 2
    assert kinds(harness, t.id)[:6] == [
        "submitted",
        "leased",
        "intent",
        "gate",
        "result",
        "checkpoint",
    ]
    assert harness.verify(t.id).ok
    assert [s.status for s in harness.steps(t.id)] == ["done", "done", "done"]


def _crash_mid_effect(
    h: Harness,
    clock: FakeClock,
    tid: str,
    apply: Callable[[EffectLedger, str], Any],
    ledger: EffectLedger,
) -> None:
    """Lease the task, run step 1 so that its effect happens but the worker 'dies' before the result."""
    got = h.store.lease("doomed", None, ttl_s=30)
    assert got is not None
    ctx = StepContext(
        store=h.store,
        task=got[0],
        token=got[1],
        kind=h.registry.get("scripted"),
        worker_id="doomed",
    )

    def effect(key: str) -> Any:
        apply(ledger, key)
        raise KeyboardInterrupt  # a crash: no result is recorded

    with pytest.raises(KeyboardInterrupt):
        tool = h.get(tid).spec["input"]["steps"][0]["tool"]
        ctx.step("001-" + tool, tool, h.get(tid).spec["input"]["steps"][0]["args"], effect)
    clock.advance(31)
    assert h.store.reap() == [tid]


def test_idempotent_step_with_unknown_outcome_reruns_with_the_same_key(
    clocked: Harness, clock: FakeClock, workspace: Path
) -> None:
    harness = clocked
    t = harness.submit(
        scripted(workspace, [{"tool": "counter.add", "args": {"counter": "c", "amount": 1}}])
    )
    ledger = EffectLedger(workspace / "effects.db")
    _crash_mid_effect(harness, clock, t.id, lambda lg, key: lg.add("c", 1, key), ledger)
    harness.run_until_idle(FAST)
    assert harness.get(t.id).status == "succeeded"
    assert ledger.value("c") == 1 and ledger.attempts("c") == 2
    assert "reconcile" in kinds(harness, t.id)
    assert harness.verify(t.id).ok


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_non_idempotent_step_with_unknown_outcome_parks_for_review(
    clocked: Harness, clock: FakeClock, workspace: Path, decision: str
) -> None:
    harness = clocked
    t = harness.submit(
        scripted(workspace, [{"tool": "counter.add_unkeyed", "args": {"counter": "c"}}])
    )
    ledger = EffectLedger(workspace / "effects.db")
    _crash_mid_effect(harness, clock, t.id, lambda lg, key: lg.add_unkeyed("c", 1), ledger)
    harness.run_until_idle(FAST)
    row = harness.get(t.id)
    assert row.status == "waiting_approval" and row.lease_owner is None
    assert row.waiting and row.waiting["purpose"] == "review"
    assert "outcome is unknown" in row.waiting["message"]
    assert ledger.value("c") == 1  # never re-run blindly
    getattr(harness, decision)(t.id, "001-counter.add_unkeyed", by="ops")
    harness.run_until_idle(FAST)
    row = harness.get(t.id)
    if decision == "approve":
        assert row.status == "succeeded" and ledger.value("c") == 2
    else:
        assert row.error is not None
        assert row.status == "failed" and row.error["code"] == "permission_denied"
        assert ledger.value("c") == 1
    assert harness.verify(t.id).ok


def test_ask_parks_without_a_lease_and_approval_is_single_use_and_expires(
    clocked: Harness, clock: FakeClock, workspace: Path
) -> None:
    harness = clocked
    rules = [{"tool": "counter.add", "action": "ask"}]
    t = harness.submit(
        scripted(workspace, [{"tool": "counter.add", "args": {"counter": "c"}}], rules=rules)
    )
    harness.run_until_idle(FAST)
    row = harness.get(t.id)
    assert row.status == "waiting_approval" and row.lease_owner is None and row.lease_token is None
    approval = harness.approve(t.id, "001-counter.add", by="ann", ttl_s=60)
    assert approval.expires_at == clock() + 60
    clock.advance(60.5)
    harness.run_until_idle(FAST)
    assert harness.get(t.id).status == "waiting_approval"  # the approval expired: asked again
    harness.approve(t.id, "001-counter.add", by="ann")
    harness.run_until_idle(FAST)
    assert harness.get(t.id).status == "succeeded"
    used = [
        r.data()["payload"] for r in harness.receipts(t.id) if r.data()["kind"] == "approval_used"
    ]
    assert [u["expired"] for u in used] == [True, False]
    approvals = harness.approvals(t.id)
    assert len(approvals) == 2 and all(a.consumed_at for a in approvals if a.decision)
    with pytest.raises(Exception, match="no step"):
        harness.approve(t.id, "001-counter.add")


def test_denied_and_unknown_tools_are_refused(harness: Harness, workspace: Path) -> None:
    rules = [
        {"tool": "counter.add", "action": "deny"},
        {"tool": "file.write", "paths": ["out/*"], "action": "allow"},
    ]
    t1 = harness.submit(
        scripted(workspace, [{"tool": "counter.add", "args": {"counter": "c"}}], rules=rules)
    )
    t2 = harness.submit(
        scripted(
            workspace,
            [{"tool": "file.write", "args": {"path": "../escape.txt", "text": "x"}}],
            rules=rules,
        )
    )
    harness.run_until_idle(FAST)
    for t in (t1, t2):
        row = harness.get(t.id)
        assert row.error is not None
        assert row.status == "failed" and row.error["code"] == "permission_denied"
    assert not (workspace.parent / "escape.txt").exists()
    assert EffectLedger(workspace / "effects.db").attempts("c") == 0


def test_step_budget_fails_with_partial_result_and_intact_receipts(
    harness: Harness, workspace: Path
) -> None:
    steps = [{"tool": "counter.add", "args": {"counter": "c"}} for _ in range(3)]
    t = harness.submit(scripted(workspace, steps, budget={"steps": 2}))
    harness.run_until_idle(FAST)
    row = harness.get(t.id)
    assert row.error is not None
    assert row.status == "failed" and row.error["code"] == "budget_exceeded"
    assert row.error["details"]["limit"] == "steps"
    assert row.result["next"] == 2 and row.result["results"] == [1, 2]
    assert EffectLedger(workspace / "effects.db").value("c") == 2
    assert harness.verify(t.id).ok


def test_wall_clock_budget_cancels_in_flight_work(harness: Harness, workspace: Path) -> None:
    t = harness.submit(
        scripted(workspace, [{"tool": "wait", "args": {"seconds": 30}}], budget={"wall_s": 0.5})
    )
    start = time.monotonic()
    harness.run_until_idle(FAST)
    assert time.monotonic() - start < 5
    row = harness.get(t.id)
    assert row.error is not None
    assert row.status == "failed" and row.error["code"] == "budget_exceeded"


def _custom(harness: Harness, seen: dict[str, Any]) -> None:
    def run(ctx: StepContext) -> Any:
        ctx.receipt("working_set", {"goal": ctx.goal})
        ctx.charge(tokens=600, usd=0.01)
        seen["remaining"] = ctx.budget.remaining()

        async def slow() -> str:
            await asyncio.sleep(30)
            return "never"

        try:
            return asyncio.run(ctx.cancel.guard(slow()))
        finally:
            seen["cancel_reason"] = ctx.cancel.reason

    harness.registry.register(TaskKind("custom", run, tools={"x": ToolSpec()}))


def test_token_budget_and_runner_receipts(harness: Harness) -> None:
    seen: dict[str, Any] = {}
    _custom(harness, seen)
    t = harness.submit({"kind": "custom", "goal": "g", "budget": {"tokens": 500}})
    harness.run_until_idle(FAST)
    row = harness.get(t.id)
    assert row.error is not None
    assert row.status == "failed" and row.error["details"]["limit"] == "tokens"
    assert row.usage["tokens"] == 600
    assert "working_set" in kinds(harness, t.id)


def test_stop_cancels_in_flight_async_work_within_a_bounded_time(harness: Harness) -> None:
    seen: dict[str, Any] = {}
    _custom(harness, seen)
    t = harness.submit({"kind": "custom", "goal": "g"})
    with background(harness):
        wait_for(lambda: harness.get(t.id).status == "running")
        time.sleep(0.1)
        start = time.monotonic()
        assert harness.stop(t.id) == "queued"
        wait_for(lambda: harness.get(t.id).terminal)
        elapsed = time.monotonic() - start
    assert harness.get(t.id).status == "cancelled"
    assert seen["cancel_reason"] == "stop requested"
    assert elapsed < 3.0
    assert harness.verify(t.id).ok


def test_pause_resume_and_messages_at_step_boundaries(harness: Harness, workspace: Path) -> None:
    steps = [{"tool": "wait", "args": {"seconds": 0.3}} for _ in range(6)]
    t = harness.submit(scripted(workspace, steps))
    with background(harness):
        wait_for(lambda: harness.get(t.id).status == "running")
        harness.steer(t.id, "message", "focus on tests")
        harness.pause(t.id)
        wait_for(lambda: harness.get(t.id).status == "paused")
        paused_at = len([s for s in harness.steps(t.id) if s.status == "done"])
        time.sleep(0.5)
        assert len([s for s in harness.steps(t.id) if s.status == "done"]) == paused_at
        assert harness.get(t.id).lease_owner is None
        harness.resume(t.id)
        wait_for(lambda: harness.get(t.id).terminal)
    row = harness.get(t.id)
    assert row.status == "succeeded" and row.result["messages"] == ["focus on tests"]
    k = kinds(harness, t.id)
    assert "paused" in k and "steering_delivered" in k and k.count("steer") == 3
    assert harness.verify(t.id).ok


def test_shutdown_releases_after_the_current_step(harness: Harness, workspace: Path) -> None:
    steps = [{"tool": "counter.add", "args": {"counter": "c"}} for _ in range(4)]
    t = harness.submit(
        {
            **scripted(workspace, steps),
            "input": {"ledger": "effects.db", "steps": steps, "step_sleep": 0.4},
        }
    )
    w = harness.worker(FAST)
    th = threading.Thread(target=w.run)
    th.start()
    wait_for(lambda: harness.get(t.id).status == "running")
    time.sleep(0.1)
    w.stop()
    th.join(10)
    row = harness.get(t.id)
    assert row.status == "queued" and row.lease_owner is None
    assert "released" in kinds(harness, t.id)
    assert all(s.status == "done" for s in harness.steps(t.id))
    harness.run_until_idle(FAST)
    assert harness.get(t.id).status == "succeeded"
    assert EffectLedger(workspace / "effects.db").value("c") == 4
