"""SQLite faults on real files: a damaged page is found at open and writes are refused with the
remedy; a full disk (a small tmpfs, really filled) is reported as such, the worker stays alive and
retries, and nothing is lost."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from holdfast.harness import Harness
from holdfast.store import SQLiteDB, StoreCorrupt
from holdfast.testing.kinds import kinds_registry

PAGE = 4096
CHILD = Path(__file__).with_name("_disk_full_child.py")


def _holdfast(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "holdfast.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _damaged_store(path: Path) -> list[str]:
    """A control-plane store with 300 queued tasks, copied to ``path`` with one B-tree page
    overwritten (a file this process has never opened, like one found after a crash)."""
    healthy = path.with_name("healthy.db")
    with Harness.open(healthy, registry=kinds_registry()) as h:
        ids = [h.submit({"kind": "noop"}).id for _ in range(300)]
    conn = SQLiteDB(healthy).connection()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    assert pages > 20
    raw = bytearray(healthy.read_bytes())
    start = (pages // 2) * PAGE
    raw[start : start + 64] = b"\xff" * 64  # an impossible page type and cell count
    path.write_bytes(bytes(raw))
    return ids


def test_a_damaged_store_is_found_at_open_and_writes_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "holdfast.db"
    _damaged_store(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()

    h = Harness.open(db, registry=kinds_registry())  # opening still works, for reading
    try:
        with pytest.raises(StoreCorrupt) as info:
            h.submit({"kind": "noop"})
        message = info.value.message
        assert "is damaged" in message and "writes are refused" in message
        assert ".recover" in message and "backup" in message and str(db) in message
        with pytest.raises(StoreCorrupt):
            h.store.set_queue_limit("q", 1)
    finally:
        h.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # not one byte written

    env_db = ["--database-url", str(db)]
    submit = _holdfast("task", "submit", "noop", "--load", "holdfast.testing.kinds:KINDS", *env_db)
    assert submit.returncode == 1 and "store_corrupt" in submit.stderr, submit.stderr
    assert "Traceback" not in submit.stderr
    worker = _holdfast("worker", "--exit-when-idle", "--wait-for-store", "60", *env_db)
    assert worker.returncode == 1 and "is damaged" in worker.stderr, worker.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_damage_found_while_running_refuses_later_writes(tmp_path: Path) -> None:
    """A page that goes bad after the store was opened: the first read of it reports the
    damage, and from then on writes are refused too."""
    db = tmp_path / "holdfast.db"
    with Harness.open(db, registry=kinds_registry()) as h:
        for _ in range(300):
            h.submit({"kind": "noop"})
    h = Harness.open(db, registry=kinds_registry())  # checked healthy, now open
    try:
        conn = SQLiteDB(db).connection()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.close()
        raw = bytearray(db.read_bytes())
        for page in range(3, pages):
            raw[page * PAGE : page * PAGE + 8] = b"\xff" * 8
        db.write_bytes(bytes(raw))
        h.store.backend.close()  # drop cached pages: the next read goes to the file
        with pytest.raises(StoreCorrupt):
            h.list_tasks(limit=1000)
        with pytest.raises(StoreCorrupt, match="writes are refused"):
            h.submit({"kind": "noop"})
    finally:
        h.close()


def _unshare() -> list[str] | None:
    tool = shutil.which("unshare")
    if tool is None:
        return None
    probe = subprocess.run(
        [tool, "--user", "--map-root-user", "--mount", "true"], capture_output=True, timeout=30
    )
    return [tool, "--user", "--map-root-user", "--mount"] if probe.returncode == 0 else None


def test_a_full_disk_says_so_keeps_workers_alive_and_loses_nothing(tmp_path: Path) -> None:
    """The store lives on a 6 MiB tmpfs (a private mount namespace) that is filled while two
    worker processes run scripted tasks; the whole scenario runs in ``_disk_full_child.py``."""
    prefix = _unshare()
    if prefix is None:
        pytest.skip("needs unshare with user and mount namespaces to mount a small tmpfs")
    out = subprocess.run(
        [*prefix, sys.executable, str(CHILD), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # while full: the refusal names the disk, no traceback, reads still work
    assert "is full" in report["submit_error"] and report["submit_code"] == "store_full"
    assert report["cli_submit"]["code"] == 1 and "is full" in report["cli_submit"]["stderr"]
    assert "Traceback" not in report["cli_submit"]["stderr"]
    assert report["cli_list"]["code"] == 0, report["cli_list"]
    assert report["workers_alive_while_full"] == [True, True]
    assert "is full" in report["worker_log"] and "Traceback" not in report["worker_log"]
    # after space came back: every accepted task finished, exactly once, chains verify
    assert report["statuses"] == {"succeeded": report["accepted"]}
    assert report["accepted"] >= 6
    assert report["all_verify"] and report["effects_exactly_once"]
    assert report["workers_alive_after"] == [True, True]
