"""The session store's own contract, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from holdfast.harness import open_store
from holdfast.session import SQLSessionStore, StaleSessionWrite, open_session_store
from holdfast.store import PostgresBackend, SQLiteBackend, StoreUnavailable
from holdfast.testing.postgres import PostgresCluster

OpenStore = Callable[[], SQLSessionStore]  # the ``open_store`` fixture of conftest.py


def _virtual(store: SQLSessionStore, vid: str = "vsession-t", task: str | None = "t1") -> str:
    store.create_virtual(
        vid,
        task_id=task,
        system_prompt="sys",
        config={"request": "r"},
        seed=[({"role": "user", "content": "r"}, None)],
    )
    return vid


def test_a_duplicate_working_set_version_or_key_is_a_stale_write(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    vid = _virtual(first)
    first.append_op(vid, {"v": 1, "op": "add_constraint", "key": "k1"})
    with pytest.raises(StaleSessionWrite, match="version 1"):
        second.append_op(vid, {"v": 1, "op": "add_blocker"})
    with pytest.raises(StaleSessionWrite):
        second.append_op(vid, {"v": 2, "op": "add_constraint", "key": "k1"})
    second.append_op(vid, {"v": 2, "op": "add_blocker", "key": "k2"})
    assert [op["v"] for op in first.load_ops(vid)] == [1, 2]
    assert first.op_by_key(vid, "k2") == {"v": 2, "op": "add_blocker", "key": "k2"}
    assert first.op_by_key(vid, "nope") is None


def test_only_one_writer_rolls_over_from_a_continuation(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    vid = _virtual(first)
    seed: list[tuple[dict[str, Any], str | None]] = [({"role": "user", "content": "again"}, None)]
    assert first.roll_over(vid, from_cont=0, reason="limit", seed=seed, start_turn=3) == 1
    with pytest.raises(StaleSessionWrite, match="continuation 0"):
        second.roll_over(vid, from_cont=0, reason="limit", seed=seed, start_turn=3)
    phys = second.physical(vid)
    assert [(p.cont, p.end_reason, p.start_turn) for p in phys] == [(0, "limit", 0), (1, None, 3)]
    assert second.load_virtual(vid).continuation == 1


def test_messages_and_seeds_keep_their_key_order(open_store: OpenStore) -> None:
    store = open_store()
    seed: list[tuple[dict[str, Any], str | None]] = [
        ({"z": 1, "role": "user", "a": "é", "content": "r"}, None)
    ]
    store.create_virtual("vsession-k", task_id=None, system_prompt="s", config={}, seed=seed)
    message = {"tool_call_id": "c1", "role": "tool", "content": "ünïcode", "b": {"y": 1, "x": 2}}
    store.append_message("vsession-k", 0, 1, message, result=("r1", "read", "full"))
    reread = open_store()
    ((_, got, rid),) = reread.messages("vsession-k", 0)
    assert list(got) == list(message) and list(got["b"]) == ["y", "x"] and rid == "r1"
    assert got == message
    assert list(reread.physical("vsession-k")[0].seed[0][0]) == ["z", "role", "a", "content"]
    assert reread.load_virtual("vsession-k").next_result == 2
    assert reread.result("vsession-k", "r1") == ("read", "full", 1)


def test_concurrent_appends_never_share_a_sequence_number(open_store: OpenStore) -> None:
    store = open_store()
    vid = _virtual(store)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def append(name: str) -> None:
        try:
            start.wait()
            for i in range(40):
                store.append_message(vid, 0, i, {"role": "user", "content": f"{name}{i}"})
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    texts = [m["content"] for _, m, _ in store.messages(vid, 0)]
    assert len(texts) == 80
    for name in "ab":
        assert [t for t in texts if t.startswith(name)] == [f"{name}{i}" for i in range(40)]


def test_turns_are_upserted_and_the_turn_never_goes_back(open_store: OpenStore) -> None:
    store = open_store()
    vid = _virtual(store)
    before = time.time()
    store.record_turn(vid, 5, 0, 100, {"input_tokens": 120, "cost_usd": 0.25})
    store.record_turn(vid, 3, 0, 90, None)
    store.record_turn(vid, 3, 0, 95, {"input_tokens": 99, "latency_s": 1.5})
    row = store.load_virtual(vid)
    assert row.turn == 5
    turns = store.turns(vid)
    assert [(t["turn"], t["estimate_tokens"], t["input_tokens"]) for t in turns] == [
        (3, 95, 99),
        (5, 100, 120),
    ]
    assert turns[0]["latency_s"] == 1.5 and turns[1]["cost_usd"] == 0.25
    # timestamps keep sub-second precision (a 4-byte float would not)
    assert abs(row.created_at - before) < 1.0 and abs(turns[0]["at"] - before) < 1.0


def test_prune_flush_status_and_lookups(open_store: OpenStore) -> None:
    store = open_store()
    vid = _virtual(store, task="task-9")
    for n in (1, 2):
        store.append_message(
            vid, 0, n, {"role": "tool", "content": "x"}, result=(f"r{n}", "read", "ab" * n)
        )
    assert store.prune(vid, ["r1", "r7"], "gone") == ["r1"]
    assert store.pruned_notes(vid) == {"r1": "gone"}
    assert store.result_meta(vid, ["r1", "r2", "r7"]) == {
        "r1": ("read", 1, 2),
        "r2": ("read", 2, 4),
    }
    assert store.result_meta(vid, []) == {}
    assert store.add_flushed(vid, ["b", "a"]) == {"a", "b"}
    assert store.add_flushed(vid, ["c"]) == {"a", "b", "c"}
    store.set_status(vid, "finished")
    row = store.load_virtual(vid)
    assert row.status == "finished" and row.flushed == {"a", "b", "c"}
    assert store.find_by_task("task-9") == vid and store.find_by_task("other") is None


def test_the_factory_follows_the_control_plane(session_url: str, tmp_path: Path) -> None:
    harness_store = open_store(session_url)
    store = open_session_store(harness_store)
    try:
        postgres = session_url.startswith("postgresql://")
        assert isinstance(store.backend, PostgresBackend if postgres else SQLiteBackend)
        assert store.backend is not harness_store.backend  # its own connections
        _virtual(store)
        other = open_session_store(session_url)
        assert other.find_by_task("t1") == "vsession-t"
        other.close()
    finally:
        store.close()
        harness_store.close()


@pytest.mark.postgres
def test_a_lost_connection_is_retryable_and_the_next_call_reconnects(
    pg_cluster: PostgresCluster,
) -> None:
    import psycopg

    url = pg_cluster.create_database("lost")
    store = open_session_store(url)
    try:
        vid = _virtual(store)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'lost' AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreUnavailable):
            store.load_virtual(vid)
        assert store.load_virtual(vid).id == vid
    finally:
        store.close()


@pytest.mark.postgres
def test_workers_starting_together_migrate_once(pg_cluster: PostgresCluster) -> None:
    import psycopg

    url = pg_cluster.create_database("together")
    stores: list[SQLSessionStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        try:
            start.wait()
            stores.append(open_session_store(url))
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert not errors, errors
    with psycopg.connect(url) as conn:
        versions = conn.execute(
            "SELECT version FROM schema_migrations WHERE component = 'session' ORDER BY version"
        ).fetchall()
    assert [v for (v,) in versions] == [1, 2]
