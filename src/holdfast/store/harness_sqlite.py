"""The control plane on the embedded SQLite store (WAL, busy timeout, ``BEGIN IMMEDIATE``).

``BEGIN IMMEDIATE`` takes the database's write lock before a lease is chosen, so two workers, in
two threads or two processes, can never take the same task: the second one sees it leased.
Steering is polled (there is no NOTIFY in SQLite). Receipts are protected against accidental
``UPDATE``/``DELETE`` by triggers; deliberate tampering is what the hash chain detects.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from holdfast.store.harness_sql import Row, SQLHarnessStore
from holdfast.store.harness_types import Sealer
from holdfast.store.sqlite import SQLiteDB, StoreBusy, migrate

COMPONENT = "harness"

MIGRATIONS = [
    """
    CREATE TABLE harness_tasks (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        queue TEXT NOT NULL,
        status TEXT NOT NULL,
        spec TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 10,
        idempotency_key TEXT UNIQUE,
        lease_owner TEXT,
        lease_token TEXT,
        lease_expires REAL,
        heartbeat_at REAL,
        run_after REAL NOT NULL DEFAULT 0,
        checkpoint TEXT,
        result TEXT,
        error TEXT,
        usage TEXT NOT NULL DEFAULT '{}',
        waiting TEXT,
        head_seq INTEGER NOT NULL DEFAULT 0,
        head_hash TEXT NOT NULL DEFAULT '',
        head_sig TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX harness_tasks_ready ON harness_tasks (status, queue, priority, created_at);
    CREATE INDEX harness_tasks_lease ON harness_tasks (status, lease_expires);
    CREATE TABLE harness_receipts (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        hash TEXT NOT NULL,
        sig TEXT,
        key_id TEXT,
        PRIMARY KEY (task_id, seq)
    );
    CREATE TRIGGER harness_receipts_no_update BEFORE UPDATE ON harness_receipts
    BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
    CREATE TRIGGER harness_receipts_no_delete BEFORE DELETE ON harness_receipts
    BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
    CREATE TABLE harness_steps (
        task_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        tool TEXT NOT NULL,
        key TEXT NOT NULL,
        idempotent INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (task_id, name)
    );
    CREATE TABLE harness_approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        step TEXT NOT NULL,
        purpose TEXT NOT NULL,
        request TEXT NOT NULL,
        decision TEXT,
        decided_by TEXT,
        expires_at REAL,
        consumed_at REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX harness_approvals_step ON harness_approvals (task_id, step);
    CREATE TABLE harness_steering (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at REAL NOT NULL,
        consumed_at REAL
    );
    CREATE INDEX harness_steering_pending ON harness_steering (consumed_at, task_id);
    CREATE TABLE harness_queues (
        name TEXT PRIMARY KEY,
        max_running INTEGER NOT NULL
    );
    """,
]


class SQLiteHarnessStore(SQLHarnessStore):
    """The control-plane store in one SQLite file (default: ``<holdfast home>/holdfast.db``)."""

    def __init__(self, path: str | Path, sealer: Sealer, *, busy_timeout_ms: int = 10_000) -> None:
        super().__init__(sealer)
        self.db = SQLiteDB(path, busy_timeout_ms=busy_timeout_ms)
        self.busy_timeout_ms = busy_timeout_ms
        self._tuned = threading.local()
        self.url = str(self.db.path)
        try:
            migrate(self.db, COMPONENT, MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise _translate(exc, self.url) from exc

    def _conn(self) -> sqlite3.Connection:
        conn = self.db.connection()
        if not getattr(self._tuned, "done", False):
            # BEGIN IMMEDIATE is retried below with short sleeps: SQLite's own busy handler
            # backs off to 100 ms, which starves a queue polled by many worker processes.
            conn.execute("PRAGMA busy_timeout = 0")
            self._tuned.done = True
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.0002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or (
                    time.monotonic() > deadline
                ):
                    raise _translate(exc, self.url) from exc
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.005)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.execute("ROLLBACK")
            raise _translate(exc, self.url) from exc

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn()
        except sqlite3.OperationalError as exc:
            raise _translate(exc, self.url) from exc

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        # A deferred transaction reads one WAL snapshot from its first SELECT on. Text that is
        # not UTF-8 (anyone can write bytes into the file) is decoded losslessly and left to the
        # verifier to report, instead of failing the read.
        conn = self._conn()
        factory = conn.text_factory
        conn.text_factory = _lenient_text
        try:
            try:
                conn.execute("BEGIN DEFERRED")
            except sqlite3.OperationalError as exc:
                raise _translate(exc, self.url) from exc
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.text_factory = factory

    def _run(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        cur = handle.execute(sql, tuple(params))
        rows = [dict(r) for r in cur.fetchall()] if cur.description else []
        return rows, cur.rowcount

    def _executemany(self, handle: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        handle.executemany(sql, rows)

    def _now(self, handle: Any) -> float:
        return time.time()

    def close(self) -> None:
        self.db.close()


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _translate(exc: sqlite3.Error, url: str) -> Exception:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreBusy(
            f"the store {url} stayed locked by another process; retry, or look for a stuck "
            "process holding it",
            path=url,
        )
    from holdfast.errors import ConfigError

    return ConfigError(f"the store {url} cannot be used: {text}", path=url)
