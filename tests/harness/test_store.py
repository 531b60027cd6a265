"""The store on both backends: leases, fencing, the reaper, limits, append-only receipts."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import pytest
from harness_util import open_harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.harness import Harness, LeaseLost, TaskStateError, WorkerSettings, open_store
from holdfast.harness.rows import Draft
from holdfast.testing import FakeClock

_queues = itertools.count()


def test_submit_is_idempotent_by_key(harness: Harness) -> None:
    a = harness.submit({"kind": "noop", "idempotency_key": "order-7"})
    b = harness.submit({"kind": "noop", "idempotency_key": "order-7"})
    assert a.id == b.id
    assert len(harness.list_tasks()) == 1
    assert harness.get(a.id).status == "queued" and harness.get(a.id).head_seq == 1


def test_lease_heartbeat_fencing_and_reaper(clocked: Harness, clock: FakeClock) -> None:
    store = clocked.store
    t = clocked.submit({"kind": "noop", "max_attempts": 2})
    got = store.lease("w1", None, ttl_s=30)
    assert got is not None and got[0].id == t.id
    token = got[1]
    assert got[0].lease_expires == clock() + 30
    assert store.lease("w2", None, ttl_s=30) is None
    clock.advance(20)
    assert store.heartbeat({t.id: token}, 30) == set()
    assert clocked.get(t.id).lease_expires == clock() + 30
    clock.advance(29)
    assert store.reap() == []  # 49 s after the lease, but only 29 s after the heartbeat
    clock.advance(2)
    assert store.reap() == [t.id]
    assert clocked.get(t.id).status == "queued"
    with pytest.raises(LeaseLost):
        store.append_receipt(t.id, token, Draft("late"))
    assert store.heartbeat({t.id: token}, 30) == {t.id}
    again = store.lease("w2", None, ttl_s=10)
    assert again is not None and again[0].attempts == 2
    clock.advance(10)
    assert store.reap() == []  # expiry is strict: a lease is good up to its last instant
    clock.advance(0.001)
    store.reap()
    failed = clocked.get(t.id)
    assert (
        failed.status == "failed" and failed.error and failed.error["code"] == "too_many_attempts"
    )
    assert clocked.verify(t.id).ok


def test_a_worker_on_a_clock_keeps_its_lease_by_heartbeating(
    clocked: Harness, clock: FakeClock
) -> None:
    """The worker's ticker heartbeats on its own tick; the store's clock decides expiry."""
    from holdfast.harness import TaskKind

    release = threading.Event()
    leased = threading.Event()

    def hold(ctx: object) -> dict[str, bool]:
        leased.set()
        assert release.wait(30)
        return {"ok": True}

    clocked.registry.register(TaskKind("hold", hold))
    t = clocked.submit({"kind": "hold"})
    w = clocked.worker(
        WorkerSettings(poll_s=0.02, steer_poll_s=0.02, lease_ttl_s=30, heartbeat_s=0.05)
    )
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    try:
        assert leased.wait(30)
        first = clocked.get(t.id).lease_expires
        assert first is not None
        for _ in range(5):
            clock.advance(25)  # past the first expiry after two steps
            deadline = time.monotonic() + 30
            while (clocked.get(t.id).lease_expires or 0) < clock() + 29:
                assert time.monotonic() < deadline, "the worker stopped heartbeating"
                time.sleep(0.01)
            assert clocked.store.reap() == []
        assert clocked.get(t.id).lease_expires >= first + 125  # type: ignore[operator]
    finally:
        release.set()
        w.stop()
        th.join(30)
    assert clocked.get(t.id).status == "succeeded"
    assert [r.data()["kind"] for r in clocked.receipts(t.id)].count("leased") == 1


def test_queue_and_global_limits(harness: Harness) -> None:
    store = harness.store
    for q in ("a", "a", "a", "b", "b"):
        harness.submit({"kind": "noop", "queue": q})
    store.set_queue_limit("a", 1)
    store.set_queue_limit("*", 2)
    first = store.lease("w", None, 30)
    second = store.lease("w", None, 30)
    assert first and second
    assert sorted([first[0].queue, second[0].queue]) == ["a", "b"]
    assert store.lease("w", None, 30) is None
    store.set_queue_limit("*", None)
    third = store.lease("w", None, 30)
    assert third is not None and third[0].queue == "b"
    assert store.lease("w", ["a"], 30) is None


def test_receipts_are_append_only_in_the_database(harness: Harness) -> None:
    t = harness.submit({"kind": "noop"})
    with pytest.raises(Exception, match="append-only"), harness.store._tx() as h:
        harness.store._run(h, "UPDATE harness_receipts SET body = 'x' WHERE task_id = ?", (t.id,))
    with pytest.raises(Exception, match="append-only"), harness.store._tx() as h:
        harness.store._run(h, "DELETE FROM harness_receipts WHERE task_id = ?", (t.id,))
    assert harness.verify(t.id).ok


def test_migrations_are_versioned_and_rerun_safely(store_url: str) -> None:
    a = open_store(store_url)
    b = open_store(store_url)
    with a._reader() as h:
        rows = a._rows(h, "SELECT version FROM schema_migrations WHERE component = 'harness'")
    assert [int(r["version"]) for r in rows] == [1, 2]
    a.close()
    b.close()


def test_steering_state_rules(harness: Harness) -> None:
    t = harness.submit({"kind": "noop"})
    assert harness.pause(t.id) == "applied"
    with pytest.raises(TaskStateError, match="only queued or running"):
        harness.pause(t.id)
    assert harness.resume(t.id) == "applied"
    with pytest.raises(TaskStateError, match="not paused"):
        harness.resume(t.id)
    assert harness.steer(t.id, "message", "hello") == "queued"
    assert harness.stop(t.id) == "applied"
    with pytest.raises(TaskStateError, match="already ended"):
        harness.stop(t.id)
    kinds = [r.data()["kind"] for r in harness.receipts(t.id)]
    assert kinds == ["submitted", "steer", "steer", "steer", "steer"]
    assert harness.verify(t.id).ok


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(leasers=st.sampled_from([2, 8]), tasks=st.integers(1, 25), finish=st.booleans())
def test_concurrent_leasers_never_share_a_task(
    store_url: str, leasers: int, tasks: int, finish: bool
) -> None:
    """Property: however many leasers race, each task is held by exactly one of them."""
    queue = f"q{next(_queues)}"
    h = open_harness(store_url)
    ids = {h.submit({"kind": "noop", "queue": queue}).id for _ in range(tasks)}
    holders: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(leasers)

    def leaser(n: int) -> None:
        store = open_store(store_url)
        try:
            start.wait()
            while True:
                got = store.lease(f"w{n}", [queue], ttl_s=60)
                if got is None:
                    return
                with lock:
                    holders.append((got[0].id, f"w{n}"))
                if finish:
                    store.finish(
                        got[0].id,
                        got[1],
                        status="succeeded",
                        result=None,
                        error=None,
                        usage={},
                        draft=Draft("succeeded"),
                    )
        finally:
            store.close()

    threads = [threading.Thread(target=leaser, args=(n,)) for n in range(leasers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(task for task, _ in holders)
    assert set(counts) == ids
    assert max(counts.values()) == 1
    for task_id in ids:
        assert h.verify(task_id).ok
    h.close()


def test_concurrent_submits_with_one_idempotency_key_make_one_task(store_url: str) -> None:
    ids: list[str] = []
    start = threading.Barrier(6)

    def submit() -> None:
        h = open_harness(store_url)
        start.wait()
        ids.append(h.submit({"kind": "noop", "idempotency_key": "same"}).id)
        h.close()

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 6


def test_workers_only_lease_kinds_they_can_run(harness: Harness) -> None:
    from holdfast.harness import Registry, Worker, WorkerSettings

    t = harness.submit({"kind": "noop"})
    Worker(harness.store, Registry(), WorkerSettings(exit_when_idle=True, poll_s=0.05)).run()
    assert harness.get(t.id).status == "queued"
    harness.run_until_idle()
    assert harness.get(t.id).status == "succeeded"
