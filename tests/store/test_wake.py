"""Waking workers on PostgreSQL: one idle worker per submitted task, only workers that could take
it, no idle polling storm; and the one-statement lease on both backends."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from holdfast.harness import Harness, WorkerSettings, store_wake
from holdfast.harness.store_core import wake_payload, wakes
from holdfast.testing import FakeClock
from holdfast.testing.kinds import kinds_registry
from holdfast.testing.postgres import PostgresCluster

_names = itertools.count(1)
pg = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    return pg_cluster.create_database(f"wake{next(_names)}")


@pytest.fixture
def harness(pg_url: str) -> Iterator[Harness]:
    h = Harness.open(pg_url, registry=kinds_registry())
    yield h
    h.close()


class Listener:
    """A LISTEN connection of its own, counting what arrives on some channels."""

    def __init__(self, url: str, *channels: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        for ch in channels:
            self.conn.execute(f'LISTEN "{ch}"')

    def drain(self, wait_s: float = 0.3) -> list[tuple[str, str]]:
        return [(n.channel, n.payload) for n in self.conn.notifies(timeout=wait_s)]

    def close(self) -> None:
        self.conn.close()


def test_the_payload_names_queue_and_kind() -> None:
    p = wake_payload("q1", "noop")
    assert wakes(p, None, None)
    assert wakes(p, ["q1", "q2"], ["noop"])
    assert not wakes(p, ["q2"], ["noop"])
    assert not wakes(p, ["q1"], ["scripted"])
    assert not wakes(p, None, [])
    assert wakes("not json", ["q2"], ["scripted"])  # unreadable: look rather than lose a task


@pg
def test_a_submit_wakes_exactly_one_registered_worker(harness: Harness, pg_url: str) -> None:
    store = harness.store
    chans = {w: store.worker_channel(w) for w in ("w1", "w2")}
    ears = {w: Listener(pg_url, ch) for w, ch in chans.items()}
    try:
        for w in chans:
            store.register_idle(w, ["q"], ["noop"])
        harness.submit({"kind": "noop", "queue": "q"})
        got = {w: ear.drain() for w, ear in ears.items()}
        assert sorted(len(v) for v in got.values()) == [0, 1], got
        first = next(w for w, v in got.items() if v)
        harness.submit({"kind": "noop", "queue": "q"})
        got2 = {w: ear.drain() for w, ear in ears.items()}
        assert [w for w, v in got2.items() if v] == [w for w in chans if w != first]
        harness.submit({"kind": "noop", "queue": "q"})  # both claimed: nobody is woken
        assert all(not ear.drain() for ear in ears.values())
    finally:
        for ear in ears.values():
            ear.close()


@pg
def test_only_a_worker_that_can_take_the_task_is_woken(harness: Harness, pg_url: str) -> None:
    store = harness.store
    store.register_idle("other-queue", ["b"], ["noop"])
    store.register_idle("other-kind", ["a"], ["scripted"])
    store.register_idle("any-queue", None, ["noop"])
    ears = {w: Listener(pg_url, store.worker_channel(w)) for w in ("other-queue", "other-kind")}
    any_ear = Listener(pg_url, store.worker_channel("any-queue"))
    try:
        harness.submit({"kind": "noop", "queue": "a"})
        assert [c for c, _ in any_ear.drain()] == [store.worker_channel("any-queue")]
        assert all(not ear.drain(0.1) for ear in ears.values())
        harness.submit({"kind": "noop", "queue": "a"})  # the matching one was claimed
        assert all(not ear.drain(0.1) for ear in ears.values())
    finally:
        for ear in [*ears.values(), any_ear]:
            ear.close()


@pg
def test_a_registration_made_after_the_claim_still_finds_the_task(harness: Harness) -> None:
    """The order the wake-up protocol relies on: register, then look once more."""
    store = harness.store
    task = harness.submit({"kind": "noop", "queue": "q"})  # nobody registered: nobody woken
    store.register_idle("late", ["q"], ["noop"])
    got = store.lease("late", ["q"], 30.0, ["noop"])
    assert got is not None and got[0].id == task.id


@pg
def test_a_task_a_submit_woke_a_worker_for_is_left_to_that_worker(pg_url: str) -> None:
    """Other workers' looks skip it while the woken worker has not leased, for at most
    ANNOUNCED_S; a lease that does not look first still takes it; the woken worker's lease
    ends the mark, and its own look sees what it was woken for."""
    clock = FakeClock(1_000_000.0)
    h = Harness.open(pg_url, registry=kinds_registry(), clock=clock)
    store = h.store
    try:
        store.register_idle("woken", ["q"], ["noop"])
        task = h.submit({"kind": "noop", "queue": "q"})
        clock.advance(0.01)  # the queue's order (created_at), then the ids
        rows = store.backend.query("SELECT rung_at, rung_for FROM harness_idle")
        assert [r["rung_for"] for r in rows] == [task.id] and rows[0]["rung_at"] is not None
        # another worker looks (a registration, a task's end): nothing for it
        assert store.lease_to_run("other", ["q"], 30.0, ["noop"]) is None
        # the woken worker's wait sees its registration claimed
        sql, params = store_wake.wait_statement("woken")
        seen = store.backend.query(sql.replace("pg_sleep(?)", "1"), params[:1])
        assert seen[0]["seen"] == "absent"
        # a claim marks a registration once: a second submit wakes nobody else
        second = h.submit({"kind": "noop", "queue": "q"})
        clock.advance(0.01)
        assert [
            r["rung_for"] for r in store.backend.query("SELECT rung_for FROM harness_idle")
        ] == [task.id]
        # past ANNOUNCED_S the woken worker is presumed slow or gone: any look takes it
        clock.advance(store_wake.ANNOUNCED_S + 0.1)
        got = store.lease_to_run("other", ["q"], 30.0, ["noop"])
        assert got is not None and got.task.id == task.id
        # the woken worker leases without a look, ending its registration and the mark
        store.register_idle("woken", ["q"], ["noop"])
        third = h.submit({"kind": "noop", "queue": "q"})
        clock.advance(0.01)
        mine = store.lease_to_run("woken", ["q"], 30.0, ["noop"], look_first=False, unregister=True)
        assert mine is not None and mine.task.id == second.id
        assert mine.more  # the task it was woken for (third) is not hidden from its own look
        assert store.backend.query("SELECT worker FROM harness_idle") == []
        got = store.lease_to_run("other", ["q"], 30.0, ["noop"])
        assert got is not None and got.task.id == third.id
    finally:
        h.close()


@pg
def test_stale_registrations_are_dropped(pg_url: str) -> None:
    clock = FakeClock(1_000_000.0)
    h = Harness.open(pg_url, registry=kinds_registry(), clock=clock)
    try:
        h.store.register_idle("gone", ["q"], ["noop"])
        clock.advance(3600)
        h.store.register_idle("alive", ["q"], ["noop"])
        rows = h.store.backend.query("SELECT worker FROM harness_idle ORDER BY worker")
        assert [r["worker"] for r in rows] == ["alive"]
    finally:
        h.close()


def _commits(h: Harness) -> int:
    row = h.store.backend.query_one(
        "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()"
    )
    assert row is not None
    return int(row["n"])


def _start(h: Harness, n: int, **settings: Any) -> tuple[list[Any], list[threading.Thread]]:
    workers = [
        h.worker(WorkerSettings(queues=("q",), lease_ttl_s=30, **settings)) for _ in range(n)
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    return workers, threads


def _stop(workers: list[Any], threads: list[threading.Thread]) -> None:
    for w in workers:
        w.stop()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)


@pg
def test_idle_workers_do_not_poll_in_a_storm(harness: Harness) -> None:
    """Four idle workers with a 50 ms poll: with notifications they look about once a second
    each, not twenty times (the old behaviour: some 240 transactions in these 3 s), and their
    doorbell waits (one statement each half second, its own transaction) add two a second."""
    workers, threads = _start(harness, 4, poll_s=0.05)
    try:
        time.sleep(1.5)  # started, listening and registered
        before = _commits(harness)
        time.sleep(3.0)
        # counters are published at most once a second per connection
        time.sleep(1.2)
        spent = _commits(harness) - before
    finally:
        _stop(workers, threads)
    assert spent < 100, spent


@pg
def test_tasks_cost_a_bounded_number_of_commits_with_many_idle_workers(harness: Harness) -> None:
    """Eight idle workers, tasks submitted one by one: each task costs a few transactions, not
    a few per idle worker (every worker woken by every submit cost about 4 per worker)."""
    workers, threads = _start(harness, 8)
    try:
        time.sleep(1.5)
        before = _commits(harness)
        n = 40
        ids = []
        for _ in range(n):
            ids.append(harness.submit({"kind": "noop", "queue": "q"}).id)
            time.sleep(0.02)
        deadline = time.monotonic() + 120
        while not all(harness.get(t).terminal for t in ids):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        spent = _commits(harness) - before
    finally:
        _stop(workers, threads)
    assert all(harness.get(t).status == "succeeded" for t in ids)
    # submit, its wake-up, lease, liveness read, finish, then going idle again (a look, a
    # registration, a second look), plus idle polls, steering polls and the test's own reads
    assert spent / n < 20, spent / n


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pg)])
def test_lease_takes_the_best_ready_task_in_one_statement(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "h.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    clock = FakeClock(5_000.0)
    h = Harness.open(url, registry=kinds_registry(), clock=clock)
    try:
        low = h.submit({"kind": "noop", "queue": "q", "priority": 0})
        high = h.submit({"kind": "noop", "queue": "q", "priority": 5})
        h.submit({"kind": "noop", "queue": "other", "priority": 9})
        calls: list[list[str]] = []  # each call from the store: the statements it sent
        depth = 0
        store_backend = h.store.backend
        real_execute, real_batch = store_backend.execute, store_backend.batch

        def outer(real: Any, sqls: Any) -> Any:
            def wrapped(*a: Any, **k: Any) -> Any:
                nonlocal depth
                if depth == 0:
                    calls.append(sqls(*a, **k))
                depth += 1
                try:
                    return real(*a, **k)
                finally:
                    depth -= 1

            return wrapped

        store_backend.execute = outer(  # type: ignore[method-assign]
            real_execute, lambda h_, sql, *rest: [sql.split()[0]]
        )
        store_backend.batch = outer(  # type: ignore[method-assign]
            real_batch, lambda h_, stmts, **k: [sql.split()[0] for sql, _ in stmts]
        )
        got = h.store.lease("w", ["q"], 30.0, ["noop"], look_first=False)
        assert got is not None
        task, token = got
        # the claim; then one round trip: the receipt (insert and head update, one statement
        # on PostgreSQL) and the reads the worker verifies before it runs the task (steps,
        # receipts, steering) and the look for more work: nothing else
        receipt = ["WITH"] if backend == "postgres" else ["INSERT", "UPDATE"]
        assert calls == [["WITH"], [*receipt, "SELECT", "SELECT", "SELECT", "SELECT"]], calls
        assert task.id == high.id and task.status == "running" and task.lease_token == token
        assert task.lease_expires == pytest.approx(5_030.0)
        assert task.heartbeat_at == pytest.approx(5_000.0) and task.attempts == 1
        assert task.head_seq == 2 and task == h.get(high.id)
        assert h.verify(high.id).ok
        got2 = h.store.lease("w", ["q"], 30.0, ["noop"])
        assert got2 is not None and got2[0].id == low.id
        assert h.store.lease("w", ["q"], 30.0, ["noop"]) is None
    finally:
        h.close()


# -- the doorbell: a wake-up that signals one backend, not every listener ------------------------


class Bell:
    """A connection that publishes a doorbell for ``worker`` and waits in ``pg_sleep`` as a
    worker's listener does, counting how often its wait was cut short (rung) and what
    notifications reached its worker's channel."""

    def __init__(self, url: str, store: Any, worker: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.notified: list[str] = []
        self.rang = 0
        self.conn.add_notify_handler(lambda n: self.notified.append(n.channel))
        self.conn.execute(f'LISTEN "{store.worker_channel(worker)}"')
        for sql, params in store_wake.doorbell_statements(worker):
            self.conn.execute(sql.replace("?", "%s"), params)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        while not self.stop.is_set():
            try:
                self.conn.execute("SELECT pg_sleep(0.2)")
            except psycopg.errors.QueryCanceled:
                self.rang += 1

    def settle(self) -> tuple[int, list[str]]:
        time.sleep(0.5)  # a notification arrives when the current wait ends
        return self.rang, list(self.notified)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.conn.close()


@pg
def test_a_submit_rings_the_claimed_workers_doorbell_instead_of_notifying(
    harness: Harness, pg_url: str
) -> None:
    store = harness.store
    bell = Bell(pg_url, store, "w1")
    try:
        store.register_idle("w1", ["q"], ["noop"])
        harness.submit({"kind": "noop", "queue": "q"})
        assert bell.settle() == (1, [])  # rung, and no NOTIFY for any listener to process
        # a published bell whose backend is not the one that published it (its pid reused
        # by another backend) is never rung: the worker is notified instead
        with harness.store.backend.transaction() as tx:
            harness.store.backend.run(tx, "UPDATE harness_doorbells SET started = 'another'")
        store.register_idle("w1", ["q"], ["noop"])
        harness.submit({"kind": "noop", "queue": "q"})
        assert bell.settle() == (1, [store.worker_channel("w1")])
    finally:
        bell.close()


@pg
def test_a_submitter_that_may_not_signal_the_worker_notifies_it_and_does_not_fail(
    harness: Harness, pg_url: str
) -> None:
    """pg_cancel_backend refuses (with an error) a role that is not a member of the target's
    role, and any role but a superuser signalling a superuser's backend: the wake-up must then
    fall back to a notification, not fail the submit after its task committed."""
    store = harness.store
    bell = Bell(pg_url, store, "w-super")  # the cluster's superuser
    with store.backend.transaction() as tx:
        for sql in (
            "CREATE ROLE plain LOGIN",
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO plain",
            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO plain",
        ):
            store.backend.run(tx, sql)
    plain = Harness.open(pg_url.replace("holdfast@", "plain@"), registry=kinds_registry())
    try:
        store.register_idle("w-super", ["q"], ["noop"])
        task = plain.submit({"kind": "noop", "queue": "q"})
        assert plain.get(task.id).status == "queued"
        assert bell.settle() == (0, [store.worker_channel("w-super")])
    finally:
        plain.close()
        bell.close()


@contextmanager
def _sleepy_worker(harness: Harness) -> Iterator[Any]:
    """A worker whose every poll is an hour apart (only its doorbell can wake it), yielded once
    it is registered as idle with its bell published; stopped, and checked gone, afterwards."""
    w = harness.worker(
        WorkerSettings(
            queues=("q",), lease_ttl_s=7200, poll_s=3600, notify_poll_s=3600, steer_poll_s=3600
        )
    )
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not harness.store.backend.query(
            "SELECT 1 FROM harness_idle JOIN harness_doorbells USING (worker) WHERE worker = ?",
            (w.id,),
        ):
            assert time.monotonic() < deadline, "the worker never registered with its bell"
            time.sleep(0.05)
        yield w
    finally:
        w.stop()
        thread.join(30)
    assert not thread.is_alive()


def _until(harness: Harness, task_id: str, status: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while harness.get(task_id).status != status:
        assert time.monotonic() < deadline, f"task {task_id} did not become {status} in time"
        time.sleep(0.02)


@pg
def test_a_running_worker_is_rung_for_steering_and_an_idle_one_for_work(harness: Harness) -> None:
    """With every poll an hour apart, only the doorbell can wake the worker: a submit reaches
    it at once, and so does a stop for the task it runs."""
    with _sleepy_worker(harness) as w:
        quick = harness.submit({"kind": "noop", "queue": "q"})
        _until(harness, quick.id, "succeeded")
        slow = harness.submit(
            {
                "kind": "scripted",
                "queue": "q",
                "input": {"steps": [{"tool": "wait", "args": {"seconds": 600}}]},
                "policy": {"rules": [{"tool": "*", "action": "allow"}]},
            }
        )
        _until(harness, slow.id, "running")
        assert store_wake.ring(harness.store.backend, w.id)
        assert not store_wake.ring(harness.store.backend, "nobody")
        harness.stop(slow.id)
        _until(harness, slow.id, "cancelled")
    # the worker took its bell down as it stopped
    assert not harness.store.backend.query(
        "SELECT 1 FROM harness_doorbells WHERE worker = ?", (w.id,)
    )


@pg
def test_a_ring_lost_between_two_waits_is_noticed_by_the_next_wait(harness: Harness) -> None:
    """The server drops a cancel that arrives while the bell's connection is between two waits.
    Each wait reads, as it begins, whether the worker's registration is still there: one that a
    submit claimed (here: removed with no ring at all) wakes the worker within a wait."""
    with _sleepy_worker(harness) as w:
        time.sleep(store_wake.BELL_WAIT_S * 2)  # a wait began after the registration
        with harness.store.backend.transaction() as tx:  # a claim whose ring never arrived
            harness.store.backend.run(tx, "DELETE FROM harness_idle WHERE worker = ?", (w.id,))
        task = harness.submit({"kind": "noop", "queue": "q"})  # nobody registered: no ring
        _until(harness, task.id, "succeeded")
