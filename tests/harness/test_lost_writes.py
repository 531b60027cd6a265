"""A store that comes back from an outage without writes it had acknowledged (a crashed server
with ``synchronous_commit=off``, a restored backup): the worker notices before it carries on."""

from __future__ import annotations

from typing import Any

import pytest
from harness_util import open_harness

from holdfast.harness import Harness, LeaseLost, StepContext, StoreUnavailable


def leased_context(h: Harness) -> StepContext:
    t = h.submit({"kind": "noop"})
    got = h.store.lease("w", None, ttl_s=60.0)
    assert got is not None and got[0].id == t.id
    return StepContext(
        store=h.store, task=got[0], token=got[1], kind=h.registry.get("noop"), worker_id="w"
    )


def lose_the_last_receipt(h: Harness, task_id: str) -> None:
    """What the store looks like after losing this worker's last commit: the receipt is gone
    and the head is back where it was before it (the lease itself survived)."""
    rows = h.receipts(task_id)
    prev = rows[-2]
    with h.store._tx() as c:
        if h.store.backend.dialect.name == "sqlite":
            h.store._run(c, "DROP TRIGGER harness_receipts_no_delete")
        else:
            h.store._run(c, "SET LOCAL session_replication_role = replica")
        h.store._run(
            c, "DELETE FROM harness_receipts WHERE task_id = ? AND seq = ?", (task_id, rows[-1].seq)
        )
        h.store._run(
            c,
            "UPDATE harness_tasks SET head_seq = ?, head_hash = ?, checkpoint = NULL WHERE id = ?",
            (prev.seq, prev.hash, task_id),
        )


def fail_once(h: Harness, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = getattr(h.store, name)
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable("the connection to the store was lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(h.store, name, flaky)


def test_writes_lost_in_an_outage_stop_the_worker_instead_of_forking_the_task(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = leased_context(harness)
    ctx.checkpoint({"done": 1})
    lose_the_last_receipt(harness, ctx.task_id)
    fail_once(harness, monkeypatch, "checkpoint")
    with pytest.raises(LeaseLost, match="no longer holds receipt 3"):
        ctx.checkpoint({"done": 2})
    assert ctx.cancel.cancelled  # work in flight is cut off too
    assert [r.seq for r in harness.receipts(ctx.task_id)] == [1, 2]  # nothing written past it


def test_an_outage_that_lost_nothing_carries_on(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = leased_context(harness)
    ctx.checkpoint({"done": 1})
    fail_once(harness, monkeypatch, "checkpoint")
    ctx.checkpoint({"done": 2})
    assert harness.get(ctx.task_id).checkpoint == {"done": 2}
    assert harness.verify(ctx.task_id).ok


def test_the_crash_test_cluster_commits_synchronously() -> None:
    from holdfast.testing.postgres import PostgresCluster, find_bin_dir

    if find_bin_dir() is None:
        pytest.skip("no PostgreSQL binaries")
    with PostgresCluster(synchronous_commit=True) as pg:
        h = open_harness(pg.create_database("sync"))
        try:
            with h.store._reader() as c:
                rows = h.store._rows(c, "SHOW synchronous_commit")
            assert next(iter(rows[0].values())) == "on"
        finally:
            h.close()
