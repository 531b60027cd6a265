"""Fault tests: real worker processes killed with SIGKILL, a PostgreSQL restart mid-run, a receipt
edited on disk, a locked database and a server that does not answer."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness_util import LOAD_KINDS, open_harness, scripted

from holdfast.errors import HoldfastError
from holdfast.harness import Harness, StoreUnavailable
from holdfast.store import SQLiteBackend, StoreBusy
from holdfast.testing.effects import EffectLedger
from holdfast.testing.postgres import PostgresCluster, find_bin_dir

STEPS = 8


def spawn_worker(url: str, *extra: str) -> subprocess.Popen[bytes]:
    """A `holdfast worker` process; its log goes to <HOLDFAST_HOME>/workers.log."""
    args = [sys.executable, "-m", "holdfast.cli.main", "worker", "--database-url", url, *LOAD_KINDS]
    args += ["--lease-ttl", "0.8", "--heartbeat", "0.2", "--poll", "0.05", "--concurrency", "2"]
    with open(os.environ["HOLDFAST_HOME"] + "/workers.log", "ab") as log:
        return subprocess.Popen(
            [*args, "--log-level", "WARNING", *extra], stdout=subprocess.DEVNULL, stderr=log
        )


def worker_log() -> str:
    return Path(os.environ["HOLDFAST_HOME"], "workers.log").read_text(errors="replace")[-3000:]


def submit_batch(h: Harness, workspace: Path, n: int, counter: str) -> list[str]:
    steps = [
        {"tool": "counter.add", "args": {"counter": counter, "amount": i + 1}} for i in range(STEPS)
    ]
    ids = []
    for _ in range(n):
        spec = scripted(workspace, steps, max_attempts=10_000)
        spec["input"]["step_sleep"] = 0.02
        ids.append(h.submit(spec).id)
    return ids


def check_exactly_once(h: Harness, workspace: Path, ids: list[str], counter: str) -> None:
    """Every task succeeded, every chain verifies, and every effect was applied exactly once."""
    ledger = EffectLedger(workspace / "effects.db")
    applied = ledger.applied_keys()
    for tid in ids:
        row = h.get(tid)
        assert row.status == "succeeded", (tid, row.status, row.error)
        assert h.verify(tid).ok, h.verify(tid).reason
        for i, step in enumerate(h.steps(tid)):
            assert step.status == "done"
            assert applied.get(step.key) == i + 1, (tid, step.key)
        assert row.result["results"] == [s.result for s in h.steps(tid)]
    assert len([k for k in applied if k.split(":")[0] in ids]) == len(ids) * STEPS
    expected = len(ids) * sum(range(1, STEPS + 1))
    assert ledger.value(counter) == expected
    ledger.close()


def holders(h: Harness) -> set[int]:
    """The pids of worker processes that hold a lease right now."""
    return {
        int(str(t.lease_owner).split(":")[1])
        for t in h.list_tasks(status="running", limit=1000)
        if t.lease_owner
    }


def drain(h: Harness, url: str, ids: list[str]) -> None:
    """Run idle-exiting workers until every task ended (leases of killed workers must expire)."""
    deadline = time.monotonic() + 120
    while not all(h.get(t).terminal for t in ids):
        assert time.monotonic() < deadline, worker_log()
        spawn_worker(url, "--exit-when-idle").wait(120)
        time.sleep(0.5)


def kill_run(url: str, workspace: Path, kills_wanted: int, seed: int) -> dict[str, Any]:
    """SIGKILL workers that hold a lease, at a random moment of their work, ``kills_wanted`` times."""
    rng = random.Random(seed)
    h = open_harness(url)
    ids = submit_batch(h, workspace, 4, "c")
    procs = [spawn_worker(url), spawn_worker(url)]
    kills = 0
    deadline = time.monotonic() + 240
    try:
        while kills < kills_wanted:
            assert time.monotonic() < deadline, f"only {kills} kills in the time allowed"
            busy = [i for i, p in enumerate(procs) if p.pid in holders(h)]
            if not busy:
                time.sleep(0.02)
                continue
            time.sleep(rng.uniform(0.0, 0.25))
            i = rng.choice(busy)
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            kills += 1
            procs[i] = spawn_worker(url)
            if len([t for t in ids if not h.get(t).terminal]) < 3:
                ids += submit_batch(h, workspace, 3, "c")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        drain(h, url, ids)
        check_exactly_once(h, workspace, ids, "c")
        attempts = EffectLedger(workspace / "effects.db").attempts("c")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        h.close()
    return {"kills": kills, "tasks": len(ids), "effect_calls": attempts}


def test_fifty_kill_nines_lose_nothing_and_repeat_nothing_sqlite(
    tmp_path: Path, workspace: Path
) -> None:
    stats = kill_run(str(tmp_path / "h.db"), workspace, 50, seed=6)
    assert stats["effect_calls"] >= stats["tasks"] * STEPS


@pytest.mark.postgres
def test_kill_nines_on_postgres(pg_cluster: PostgresCluster, workspace: Path) -> None:
    kill_run(pg_cluster.create_database("kills"), workspace, 15, seed=7)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_nines_soak(
    backend: str, tmp_path: Path, workspace: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = str(tmp_path / "h.db")
    else:
        url = request.getfixturevalue("pg_cluster").create_database("soak")
    kill_run(url, workspace, 150, seed=8)


@pytest.mark.postgres
def test_postgres_restart_mid_run_loses_nothing(workspace: Path) -> None:
    if find_bin_dir() is None:
        pytest.skip("no PostgreSQL binaries")
    # a crash (immediate stop: no checkpoint, WAL recovery on start) of a cluster that commits
    # synchronously, as a production one does: what a worker was told is committed survives
    with PostgresCluster(synchronous_commit=True) as pg:
        url = pg.create_database("restart")
        h = open_harness(url)
        ids = submit_batch(h, workspace, 6, "r")
        procs = [spawn_worker(url), spawn_worker(url)]
        try:
            deadline = time.monotonic() + 30
            while not any(s.status == "done" for t in ids for s in h.steps(t)):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            h.close()
            pg.stop("immediate")
            time.sleep(2.0)
            assert all(p.poll() is None for p in procs), worker_log()
            pg.start()
            h = open_harness(url)
            deadline = time.monotonic() + 90
            while not all(h.get(t).terminal for t in ids):
                assert time.monotonic() < deadline, "tasks did not finish after the restart"
                time.sleep(0.2)
            assert all(p.poll() is None for p in procs), worker_log()
            check_exactly_once(h, workspace, ids, "r")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
            h.close()


def test_receipt_edited_on_disk_is_caught(tmp_path: Path, workspace: Path) -> None:
    from holdfast.cli.receipts import receipts

    db = tmp_path / "h.db"
    h = open_harness(db)
    t = h.submit(
        scripted(workspace, [{"tool": "counter.add", "args": {"counter": "c", "amount": 7}}])
    )
    h.run_until_idle()
    assert h.verify(t.id).ok
    seq = next(r.seq for r in h.receipts(t.id) if r.data()["kind"] == "result")
    h.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    raw = db.read_bytes()
    needle = b'"result":"7"'
    assert raw.count(needle) == 1
    db.write_bytes(raw.replace(needle, b'"result":"9"'))
    h = open_harness(db)
    result = h.verify(t.id)
    assert not result.ok and result.bad_seq == seq and "edited" in result.reason
    out = CliRunner().invoke(receipts, ["verify", t.id, "--database-url", str(db)])
    assert out.exit_code == 3 and f"receipt {seq}" in out.output
    h.close()


def test_receipt_rewritten_in_postgres_is_caught(pg_cluster: PostgresCluster) -> None:
    h = open_harness(pg_cluster.create_database("edit"))
    t = h.submit({"kind": "noop"})
    h.run_until_idle()
    with h.store._tx() as c:
        h.store._run(c, "ALTER TABLE harness_receipts DISABLE TRIGGER harness_receipts_no_change")
        h.store._run(c, "DELETE FROM harness_receipts WHERE task_id = ? AND seq = 3", (t.id,))
    result = h.verify(t.id)
    assert not result.ok and result.bad_seq == 3 and "cut off" in result.reason
    h.close()


def test_tampered_step_result_is_caught(harness: Harness, workspace: Path) -> None:
    t = harness.submit(scripted(workspace, [{"tool": "counter.add", "args": {"counter": "c"}}]))
    harness.run_until_idle()
    assert harness.verify(t.id).ok
    with harness.store._tx() as c:
        harness.store._run(c, "UPDATE harness_steps SET result = '42' WHERE task_id = ?", (t.id,))
    result = harness.verify(t.id)
    assert not result.ok and "stored result of step '001-counter.add'" in result.reason


def test_locked_database_gives_a_clear_message_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    open_harness(db).close()
    h = open_harness(SQLiteBackend(db, busy_timeout_ms=200))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreBusy, match="locked by another"):
        h.submit({"kind": "noop"})
    blocker.execute("ROLLBACK")
    blocker.close()
    t = h.submit({"kind": "noop"})
    assert [r.id for r in h.list_tasks()] == [t.id]
    h.close()


def test_postgres_url_that_does_not_answer() -> None:
    with pytest.raises(
        StoreUnavailable, match=r"cannot reach PostgreSQL at postgresql://u@127\.0\.0\.1:9/x"
    ):
        open_harness("postgresql://u:secret@127.0.0.1:9/x")
    from holdfast.cli.main import main

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "holdfast.cli.main",
            "task",
            "list",
            "--database-url",
            "postgresql://u:secret@127.0.0.1:9/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot reach PostgreSQL" in proc.stderr and "secret" not in proc.stderr
    assert callable(main)


def test_bad_input_is_a_clear_message(tmp_path: Path) -> None:
    h = open_harness(tmp_path / "h.db")
    cases = [
        ({"kind": "nope"}, "unknown task kind 'nope'"),
        ({"kind": "scripted", "input": {"steps": []}}, "non-empty list"),
        (
            {"kind": "scripted", "input": {"steps": [{"tool": "wait", "args": {"x": 1}}]}},
            "takes the args",
        ),
        (
            {
                "kind": "scripted",
                "workspace": str(tmp_path / "missing"),
                "input": {"steps": [{"tool": "wait"}]},
            },
            "not a directory",
        ),
        (
            {
                "kind": "scripted",
                "input": {"steps": [{"tool": "wait"}]},
                "policy": {"rules": [{"tool": "rm", "action": "allow"}]},
            },
            "unknown tool 'rm'",
        ),
        (
            {"kind": "noop", "policy": {"rules": [{"tool": "rm", "action": "allow"}]}},
            "does not have",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(HoldfastError, match=message):
            h.submit(spec)
    assert h.list_tasks() == []
    h.close()


def test_not_a_database_file(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(HoldfastError, match="cannot be used"):
        open_harness(bad)
