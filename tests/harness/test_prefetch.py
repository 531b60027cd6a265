"""Leases of several tasks at once: queue order, one token per task, and what a worker does with
the tasks that wait behind the one it runs (heartbeats, steering, give-back on a stop or a long
task)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from holdfast.errors import InvalidInput
from holdfast.harness import Harness
from holdfast.harness.receipts import sha256_json
from holdfast.harness.rows import Draft
from holdfast.harness.worker import Worker, WorkerSettings


def _wait(seconds: float) -> dict[str, Any]:
    return {
        "kind": "scripted",
        "input": {"steps": [{"tool": "wait", "args": {"seconds": seconds}}]},
    }


def _kinds(h: Harness, task_id: str) -> list[str]:
    return [r.data()["kind"] for r in h.receipts(task_id)]


def _until(check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.005)


def test_a_lease_takes_several_ready_tasks_in_queue_order_each_with_its_own_token(
    harness: Harness,
) -> None:
    low = [harness.submit({"kind": "noop"}).id for _ in range(3)]
    high = harness.submit({"kind": "noop", "priority": 5}).id
    got = harness.store.lease_to_run("w1", None, 30.0, ["noop"], limit=3)
    assert got is not None
    leases = [got, *got.also]
    assert [x.task.id for x in leases] == [high, low[0], low[1]]
    assert len({x.token for x in leases}) == 3
    assert got.more  # low[2] still waits
    for x in leases:
        row = harness.get(x.task.id)
        assert row.status == "running" and row.lease_token == x.token
        assert x.read is not None and [r.seq for r in x.read.receipts] == [1, 2]
        assert _kinds(harness, x.task.id) == ["submitted", "leased"]
    assert harness.get(low[2]).status == "queued"
    # each token fences its own task only
    draft = Draft("succeeded", {"worker": "w1", "result_sha256": sha256_json(1), "usage": {}})
    for x in leases:
        harness.store.finish(
            x.task.id,
            x.token,
            status="succeeded",
            result=1,
            error=None,
            usage={},
            draft=draft,
            head=(x.task.head_seq, x.task.head_hash),
        )
        assert harness.verify(x.task.id).ok
    assert harness.get(high).status == "succeeded"


def test_a_batch_lease_never_takes_more_than_its_limit(harness: Harness) -> None:
    harness.submit_many([{"kind": "noop"} for _ in range(20)])
    got = harness.store.lease_to_run("w1", None, 30.0, ["noop"], limit=4)
    assert got is not None and len(got.also) == 3
    assert harness.store.counts() == {"running": 4, "queued": 16}


def test_prefetch_settings_are_checked() -> None:
    with pytest.raises(InvalidInput, match="prefetch"):
        WorkerSettings(prefetch=0)
    with pytest.raises(InvalidInput, match="prefetch_hold_s"):
        WorkerSettings(prefetch_hold_s=-1)


def _start(harness: Harness, settings: WorkerSettings) -> tuple[Worker, threading.Thread]:
    worker = harness.worker(settings)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    return worker, t


def _behind_a_long_task(harness: Harness, seconds: float) -> tuple[str, list[str]]:
    """Two quick tasks (so the worker prefetches), a long one, then quick ones behind it."""
    for _ in range(2):
        harness.submit({"kind": "noop"})
    long_id = harness.submit(_wait(seconds)).id
    behind = [harness.submit({"kind": "noop"}).id for _ in range(2)]
    return long_id, behind


def test_tasks_prefetched_behind_a_long_task_go_back_to_the_queue_and_still_run(
    harness: Harness,
) -> None:
    long_id, behind = _behind_a_long_task(harness, 1.0)
    settings = WorkerSettings(poll_s=0.02, notify_poll_s=0.05, prefetch_hold_s=0.2)
    worker, t = _start(harness, settings)
    try:
        _until(lambda: all(harness.get(i).status == "succeeded" for i in [long_id, *behind]))
    finally:
        worker.stop()
        t.join(30)
    assert not t.is_alive()
    for i in behind:
        kinds = _kinds(harness, i)
        # leased behind the long task, given back after 0.2 s, leased again and run
        assert kinds == ["submitted", "leased", "released", "leased", "succeeded"], kinds
        released = [r.data() for r in harness.receipts(i) if r.data()["kind"] == "released"]
        assert "waited" in released[0]["payload"]["reason"]
        assert harness.verify(i).ok


def test_a_stopped_worker_gives_back_the_tasks_it_prefetched(harness: Harness) -> None:
    long_id, behind = _behind_a_long_task(harness, 0.5)
    settings = WorkerSettings(poll_s=0.02, notify_poll_s=0.05, prefetch_hold_s=30.0)
    worker, t = _start(harness, settings)
    _until(lambda: harness.get(long_id).status == "running")
    _until(lambda: all(harness.get(i).status == "running" for i in behind))
    worker.stop()
    t.join(30)
    assert not t.is_alive()
    for i in behind:
        row = harness.get(i)
        assert row.status == "queued" and row.lease_token is None
        assert row.attempts == 0  # it never ran: the lease's attempt is not counted
        assert _kinds(harness, i) == ["submitted", "leased", "released"]
        assert harness.verify(i).ok
    assert "running" not in harness.store.counts()


def test_a_stop_sent_to_a_prefetched_task_before_it_starts_stops_it(harness: Harness) -> None:
    long_id, behind = _behind_a_long_task(harness, 0.6)
    settings = WorkerSettings(
        poll_s=0.02, notify_poll_s=0.05, steer_poll_s=0.05, prefetch_hold_s=30.0
    )
    worker, t = _start(harness, settings)
    try:
        _until(lambda: all(harness.get(i).status == "running" for i in behind))
        assert harness.get(long_id).status == "running"  # they wait behind it
        harness.steer(behind[0], "stop")
        _until(lambda: harness.get(behind[1]).status == "succeeded")
    finally:
        worker.stop()
        t.join(30)
    assert harness.get(behind[0]).status == "cancelled"
    assert harness.get(long_id).status == "succeeded"
    assert harness.verify(behind[0]).ok


def test_prefetch_off_leases_one_task_at_a_time(harness: Harness) -> None:
    ids = [harness.submit({"kind": "noop"}).id for _ in range(6)]
    harness.run_until_idle(WorkerSettings(poll_s=0.02, prefetch=1))
    assert all(harness.get(i).status == "succeeded" for i in ids)
    assert all(_kinds(harness, i) == ["submitted", "leased", "succeeded"] for i in ids)


def test_a_slow_finish_does_not_turn_prefetch_off(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether tasks are short is the kind's own run time: a store whose round trips are slow
    (a busy server) must not make no-op tasks look long and lease one at a time."""
    store = harness.store
    finish, lease = store.finish, store.lease_to_run
    batches: list[int] = []

    def slow_finish(*args: Any, **kwargs: Any) -> Any:
        threading.Event().wait(0.08)  # longer than prefetch_below_s
        return finish(*args, **kwargs)

    def counted_lease(*args: Any, **kwargs: Any) -> Any:
        got = lease(*args, **kwargs)
        if got is not None:
            batches.append(1 + len(got.also))
        return got

    monkeypatch.setattr(store, "finish", slow_finish)
    monkeypatch.setattr(store, "lease_to_run", counted_lease)
    ids = [harness.submit({"kind": "noop"}).id for _ in range(9)]
    harness.run_until_idle(WorkerSettings(poll_s=0.02, prefetch=4, prefetch_below_s=0.05))
    assert all(harness.get(i).status == "succeeded" for i in ids)
    assert max(batches) > 1, batches
    assert all(harness.verify(i).ok for i in ids)
