"""The control plane's fast paths: many tasks submitted in one transaction, a lease that reads
what the worker verifies in its own transaction, a fenced finish in one statement, the lease's
index, and PostgreSQL transactions that begin with their first statements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from holdfast.errors import InvalidInput
from holdfast.harness import Harness
from holdfast.harness import store_core as core
from holdfast.harness.receipts import sha256_json
from holdfast.harness.rows import Draft, LeaseLost
from holdfast.harness.worker import WorkerSettings
from holdfast.store import UniqueViolation

FAST = WorkerSettings(poll_s=0.02, notify_poll_s=0.05, lease_ttl_s=5.0, exit_when_idle=True)


def _statuses(h: Harness, ids: list[str]) -> list[str]:
    return [h.get(i).status for i in ids]


def _first_words_sent(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """From now on, the first word of each statement of each pipeline the backend sends."""
    sent: list[list[str]] = []
    real = backend._pipeline

    def spy(conn: Any, todo: Any) -> Any:
        sent.append([sql.split()[0] for sql, _ in todo])
        return real(conn, todo)

    monkeypatch.setattr(backend, "_pipeline", spy)
    return sent


# -- submit_many ---------------------------------------------------------------------------


def test_submit_many_creates_every_task_in_order_with_receipts_that_verify(
    harness: Harness,
) -> None:
    specs = [{"kind": "noop", "queue": "bulk", "goal": f"task {i}"} for i in range(25)]
    rows = harness.submit_many(specs)
    assert [r.spec["goal"] for r in rows] == [f"task {i}" for i in range(25)]
    assert len({r.id for r in rows}) == 25
    for r in rows:
        assert r.status == "queued" and r.head_seq == 1
        assert [x.data()["kind"] for x in harness.receipts(r.id)] == ["submitted"]
        assert harness.verify(r.id).ok
    harness.run_until_idle(FAST)
    assert _statuses(harness, [r.id for r in rows]) == ["succeeded"] * 25
    assert all(harness.verify(r.id).ok for r in rows)


def test_submit_many_keeps_idempotency_keys_within_the_batch_and_against_the_store(
    harness: Harness,
) -> None:
    first = harness.submit({"kind": "noop", "idempotency_key": "k-stored"})
    rows = harness.submit_many(
        [
            {"kind": "noop", "idempotency_key": "k-stored"},
            {"kind": "noop", "idempotency_key": "k-new"},
            {"kind": "noop", "idempotency_key": "k-new", "goal": "a repeat"},
            {"kind": "noop"},
        ]
    )
    assert rows[0].id == first.id
    assert rows[1].id == rows[2].id and rows[1].id != first.id
    assert rows[2].spec.get("goal", "") != "a repeat"  # the first spec of the key wins
    assert len({rows[0].id, rows[1].id, rows[3].id}) == 3
    assert harness.store.counts() == {"queued": 3}
    # the same batch again creates nothing new
    again = harness.submit_many([{"kind": "noop", "idempotency_key": "k-new"}])
    assert again[0].id == rows[1].id and harness.store.counts() == {"queued": 3}


def test_submit_many_validates_everything_before_writing_anything(harness: Harness) -> None:
    with pytest.raises(InvalidInput):
        harness.submit_many([{"kind": "noop"}, {"kind": "noop", "max_attempts": 0}])
    with pytest.raises(InvalidInput, match="list"):
        harness.submit_many({"kind": "noop"})  # type: ignore[arg-type]
    assert harness.store.counts() == {}
    assert harness.submit_many([]) == []


def test_submit_many_stores_all_or_none(harness: Harness) -> None:
    taken = harness.submit({"kind": "noop"})
    draft = Draft("submitted", {"kind": "noop"})
    tasks = [
        core.NewTask("noop", "default", {"kind": "noop"}, 0, 3, None, draft),
        core.NewTask("noop", "default", {"kind": "noop"}, 0, 3, None, draft, task_id=taken.id),
    ]
    with pytest.raises(UniqueViolation):
        harness.store.submit_many(tasks)
    assert harness.store.counts() == {"queued": 1}
    rows = harness.store.backend.query("SELECT COUNT(*) AS n FROM harness_receipts")
    assert int(rows[0]["n"]) == 1


# -- the lease reads what the worker verifies --------------------------------------------------


def test_a_lease_reads_the_chain_steps_and_steering_in_its_transaction(harness: Harness) -> None:
    t = harness.submit({"kind": "noop"})
    got = harness.store.lease_to_run("w1", None, 30.0, ["noop"])
    assert got is not None
    task, read = got.task, got.read
    assert not got.more  # the one queued task is the one leased
    assert task.id == t.id and task.status == "running" and task.head_seq == 2
    assert read is not None
    assert [r.data()["kind"] for r in read.receipts] == ["submitted", "leased"]
    assert read.task["head_seq"] == 2 and read.task["head_hash"] == read.receipts[-1].hash
    assert read.steps == [] and read.steering == []
    stored = harness.store.chain_snapshot(t.id)
    with stored as snap:
        assert [r.hash for r in snap.receipts()] == [r.hash for r in read.receipts]
        assert snap.task["head_hash"] == read.task["head_hash"]


def test_a_lease_says_whether_more_work_waits_for_the_same_filters(harness: Harness) -> None:
    later = harness.submit({"kind": "noop", "queue": "a"})
    held = harness.store.lease("w0", ["a"], 30.0, ["noop"])
    assert held is not None and held[0].id == later.id
    # released with a retry delay: queued, but not ready for an hour
    harness.store.release(
        later.id, held[1], status="queued", draft=Draft("released", {}), run_after=3600.0
    )
    harness.submit({"kind": "noop", "queue": "a"})
    harness.submit({"kind": "noop", "queue": "a"})
    harness.submit({"kind": "noop", "queue": "b"})
    first = harness.store.lease_to_run("w1", ["a"], 30.0, ["noop"])
    assert first is not None and first.task.queue == "a" and first.more
    second = harness.store.lease_to_run("w1", ["a"], 30.0, ["noop"], look_first=False)
    # queue b's task is not for this worker, and the delayed one is not ready yet
    assert second is not None and not second.more
    assert harness.store.lease_to_run("w1", ["a"], 30.0, ["noop"], look_first=False) is None
    third = harness.store.lease_to_run("w2", None, 30.0, ["noop"])
    assert third is not None and third.task.queue == "b" and not third.more


def test_a_long_chain_is_read_after_the_lease_not_in_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "READ_WITH_LEASE_MAX", 1)
    t = harness.submit({"kind": "noop"})
    got = harness.store.lease_to_run("w1", None, 30.0, ["noop"])
    assert got is not None and got.task.id == t.id and got.read is None
    harness.store.release(t.id, got.token, status="queued", draft=Draft("released", {}))
    harness.run_until_idle(FAST)  # the worker reads the chain itself, and still verifies it
    assert harness.get(t.id).status == "succeeded" and harness.verify(t.id).ok


def test_a_task_tampered_before_its_lease_is_refused_on_the_lease_read(
    harness: Harness,
) -> None:
    t = harness.submit({"kind": "noop", "goal": "harmless"})
    with harness.store.backend.transaction() as h:
        harness.store.backend.run(
            h,
            "UPDATE harness_tasks SET spec = replace(spec, 'harmless', 'harmful') WHERE id = ?",
            (t.id,),
        )
    harness.run_until_idle(FAST)
    done = harness.get(t.id)
    assert done.status == "failed" and done.error is not None
    assert done.error["code"] == "receipts_broken"


# -- finish ------------------------------------------------------------------------------------


def test_finish_is_fenced_by_the_lease_token(harness: Harness) -> None:
    t = harness.submit({"kind": "noop"})
    got = harness.store.lease("w1", None, 30.0, ["noop"])
    assert got is not None
    draft = Draft("succeeded", {"worker": "w1", "result_sha256": sha256_json(1), "usage": {}})
    with pytest.raises(LeaseLost):
        harness.store.finish(
            t.id, "not-the-token", status="succeeded", result=1, error=None, usage={}, draft=draft
        )
    assert harness.get(t.id).status == "running"
    harness.store.finish(
        t.id, got[1], status="succeeded", result=1, error=None, usage={}, draft=draft
    )
    done = harness.get(t.id)
    assert done.status == "succeeded" and done.result == 1 and done.lease_token is None
    with pytest.raises(LeaseLost):  # the same token cannot end it twice
        harness.store.finish(
            t.id, got[1], status="failed", result=None, error=None, usage={}, draft=draft
        )
    assert harness.verify(t.id).ok


def _lease_one(harness: Harness) -> tuple[Any, str]:
    got = harness.store.lease_to_run("w1", None, 30.0, ["noop"])
    assert got is not None
    return got.task, got.token


def _done(result: Any) -> Draft:
    return Draft("succeeded", {"worker": "w1", "result_sha256": sha256_json(result), "usage": {}})


def test_a_finish_at_the_callers_head_is_one_statement_in_one_round_trip(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _pg(harness)
    t = harness.submit({"kind": "noop"})
    task, token = _lease_one(harness)
    sent = _first_words_sent(backend, monkeypatch)
    harness.store.finish(
        t.id,
        token,
        status="succeeded",
        result={"n": 1},
        error=None,
        usage={},
        draft=_done({"n": 1}),
        head=(task.head_seq, task.head_hash),
    )
    assert sent == [["BEGIN", "WITH", "COMMIT"]], sent
    done = harness.get(t.id)
    assert done.status == "succeeded" and done.result == {"n": 1} and done.lease_token is None
    assert done.head_seq == task.head_seq + 1
    kinds = [r.data()["kind"] for r in harness.receipts(t.id)]
    assert kinds == ["submitted", "leased", "succeeded"]
    assert harness.verify(t.id).ok


def test_a_finish_at_a_head_someone_else_moved_reads_the_head_and_verifies(
    harness: Harness,
) -> None:
    t = harness.submit({"kind": "noop"})
    task, token = _lease_one(harness)
    harness.store.append_receipt(t.id, None, Draft("noted", {"by": "an operator"}))
    harness.store.finish(
        t.id,
        token,
        status="succeeded",
        result=2,
        error=None,
        usage={},
        draft=_done(2),
        head=(task.head_seq, task.head_hash),  # stale: the operator's receipt came after it
    )
    kinds = [r.data()["kind"] for r in harness.receipts(t.id)]
    assert kinds == ["submitted", "leased", "noted", "succeeded"]
    assert harness.get(t.id).status == "succeeded"
    assert harness.verify(t.id).ok


def test_a_finish_at_the_head_without_the_lease_writes_nothing(harness: Harness) -> None:
    t = harness.submit({"kind": "noop"})
    task, _token = _lease_one(harness)
    before = [r.seq for r in harness.receipts(t.id)]
    with pytest.raises(LeaseLost):
        harness.store.finish(
            t.id,
            "not-the-token",
            status="succeeded",
            result=3,
            error=None,
            usage={},
            draft=_done(3),
            head=(task.head_seq, task.head_hash),
        )
    assert harness.get(t.id).status == "running"
    assert [r.seq for r in harness.receipts(t.id)] == before
    assert harness.verify(t.id).ok


def test_a_worker_ends_tasks_with_steps_at_the_head_it_left(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's guess of the head (the lease's, then its own steps' receipts) holds, so
    no end falls back to reading the head; and every chain verifies."""
    applied: list[bool] = []
    real = harness.store._finish_at

    def spy(*args: Any, **kwargs: Any) -> tuple[bool, bool | None]:
        done = real(*args, **kwargs)
        applied.append(done[0])
        return done

    monkeypatch.setattr(harness.store, "_finish_at", spy)
    steps = [{"tool": "wait", "args": {"seconds": 0}}, {"tool": "wait", "args": {"seconds": 0}}]
    ids = [harness.submit({"kind": "scripted", "input": {"steps": steps}}).id for _ in range(3)]
    ids += [harness.submit({"kind": "noop"}).id for _ in range(3)]
    harness.run_until_idle(FAST)
    assert _statuses(harness, ids) == ["succeeded"] * 6
    if harness.store.backend.dialect.writes_in_with:
        assert applied == [True] * 6
    for i in ids[:3]:  # the steps' receipts moved the head past the lease's
        kinds = [r.data()["kind"] for r in harness.receipts(i)]
        assert len(kinds) > 4 and kinds[:2] == ["submitted", "leased"], kinds
    for i in ids:
        assert harness.verify(i).ok


# -- the lease's index -------------------------------------------------------------------------


def _claim_plan(harness: Harness, queue: str | None) -> str:
    where, filters = core._ready_filter([queue] if queue else None, ["noop"])
    explain = (
        "EXPLAIN" if harness.store.backend.dialect.name == "postgres" else "EXPLAIN QUERY PLAN"
    )
    rows = harness.store.backend.query(
        explain
        + " SELECT id FROM harness_tasks WHERE status = 'queued' AND run_after <= ?"
        + where
        + " ORDER BY priority DESC, created_at, id LIMIT 1",
        [1e12, *filters],
    )
    return "\n".join(str(v) for r in rows for v in r.values())


@pytest.mark.parametrize("queue", [None, "q1"])
def test_the_next_task_is_read_from_an_index_not_sorted(
    harness: Harness, queue: str | None
) -> None:
    harness.submit_many([{"kind": "noop", "queue": f"q{i % 3}"} for i in range(300)])
    with harness.store.backend.transaction() as h:
        harness.store.backend.run(h, "ANALYZE harness_tasks")
    plan = _claim_plan(harness, queue)
    assert "harness_tasks_next" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


# -- PostgreSQL transactions -------------------------------------------------------------------


def _pg(harness: Harness) -> Any:
    if harness.store.backend.dialect.name != "postgres":
        pytest.skip("PostgreSQL only")
    return harness.store.backend


def test_an_empty_transaction_sends_nothing_and_a_failed_one_leaves_the_connection_usable(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _pg(harness)
    harness.submit({"kind": "noop"})
    sent = _first_words_sent(backend, monkeypatch)
    with backend.transaction():
        pass
    assert sent == []
    with backend.transaction() as h:  # BEGIN goes with the first statement, COMMIT alone
        backend.run(h, "SELECT 1")
    assert sent == [["BEGIN", "SELECT"]]
    with pytest.raises(Exception, match="append-only"), backend.transaction() as h:
        backend.run(h, "DELETE FROM harness_receipts")
    with backend.transaction() as h:  # the same connection, rolled back cleanly
        assert backend.one(h, "SELECT 1 AS x") == {"x": 1}


def test_a_batch_that_commits_ends_the_transaction(harness: Harness, tmp_path: Path) -> None:
    backend = _pg(harness)
    with backend.transaction() as h:
        backend.batch(h, [("CREATE TABLE t_batch (n INTEGER)", ())])
        results = backend.batch(
            h,
            [("INSERT INTO t_batch VALUES (?)", (1,)), ("SELECT n FROM t_batch", ())],
            commit=True,
        )
        assert results[1][0] == [{"n": 1}]
        with pytest.raises(RuntimeError, match="already committed"):
            backend.run(h, "INSERT INTO t_batch VALUES (2)")
    assert backend.query("SELECT n FROM t_batch") == [{"n": 1}]
    # a failure after the commit cannot undo it
    with pytest.raises(ZeroDivisionError), backend.transaction() as h:
        backend.batch(h, [("INSERT INTO t_batch VALUES (?)", (3,))], commit=True)
        raise ZeroDivisionError
    assert [r["n"] for r in backend.query("SELECT n FROM t_batch ORDER BY n")] == [1, 3]


# -- the worker leases the next task from the thread that finished one -------------------------


def test_a_stop_while_tasks_lease_each_other_leaves_no_task_leased(harness: Harness) -> None:
    import threading

    from holdfast.harness.worker import Worker

    harness.submit_many([{"kind": "noop"} for _ in range(300)])
    worker = Worker(harness.store, harness.registry, WorkerSettings(poll_s=0.02))
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(worker.run()))
    t.start()
    while harness.store.counts().get("succeeded", 0) < 20:
        threading.Event().wait(0.005)
    worker.stop()
    t.join(30)
    assert not t.is_alive()
    counts = harness.store.counts()
    assert "running" not in counts, counts  # nothing leased and left behind at shutdown
    assert counts.get("succeeded", 0) + counts.get("queued", 0) == 300
    assert counts.get("succeeded", 0) <= done[0]  # run() also counts a task released at the stop


def test_a_submit_wakes_a_worker_after_its_commit_in_the_same_round_trip(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _pg(harness)
    harness.store.register_idle("w-idle", None, ["noop"])
    sent = _first_words_sent(backend, monkeypatch)
    t = harness.submit({"kind": "noop"})
    # the task born with its receipt as its head (one statement), the commit, the wake-up
    assert sent == [["BEGIN", "WITH", "COMMIT", "WITH"]], sent
    assert t.head_seq == 1 and harness.verify(t.id).ok
    assert [r.data()["kind"] for r in harness.receipts(t.id)] == ["submitted"]
    sent.clear()
    keyed = harness.submit({"kind": "noop", "idempotency_key": "k1"})
    # a key is looked up first; then the insert; then the receipt, the commit, the wake-up
    assert sent == [["BEGIN", "SELECT"], ["WITH"], ["WITH", "COMMIT", "WITH"]], sent
    assert harness.submit({"kind": "noop", "idempotency_key": "k1"}).id == keyed.id
    # the registration was claimed (marked for the first task): the next submits found nobody
    # to wake
    assert backend.query("SELECT worker, rung_for FROM harness_idle") == [
        {"worker": "w-idle", "rung_for": t.id}
    ]


def test_a_task_end_that_leaves_the_worker_idle_registers_it_and_looks_in_its_round_trip(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from holdfast.harness.worker import Worker

    backend = _pg(harness)
    # idle polls far apart: only the doorbell can wake the worker quickly
    worker = Worker(harness.store, harness.registry, WorkerSettings(poll_s=5.0, notify_poll_s=5.0))
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not backend.query("SELECT worker FROM harness_idle"):
            assert time.monotonic() < deadline
            threading.Event().wait(0.01)
        sent = _first_words_sent(backend, monkeypatch)
        first = harness.submit({"kind": "noop"})
        while harness.get(first.id).status != "succeeded":
            assert time.monotonic() < deadline
            threading.Event().wait(0.005)
        # the end, its commit, then the idle registration and the look, in one round trip
        assert ["BEGIN", "WITH", "COMMIT", "WITH", "SELECT"] in sent, sent
        while [r["worker"] for r in backend.query("SELECT worker FROM harness_idle")] != [
            worker.id
        ]:
            assert time.monotonic() < deadline
            threading.Event().wait(0.005)
        began = time.monotonic()
        second = harness.submit({"kind": "noop"})  # claims that registration: rings the worker
        while harness.get(second.id).status != "succeeded":
            assert time.monotonic() - began < 3.0, "the registered worker was not woken"
            threading.Event().wait(0.005)
    finally:
        worker.stop()
        t.join(30)
    assert harness.verify(first.id).ok and harness.verify(second.id).ok
