"""The control plane on PostgreSQL (psycopg 3): many workers on many machines.

Leases are taken with ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent leasers never wait on
or share a row; every other mutation locks its task row first. Time comes from the server's clock,
so workers on different machines agree on lease expiry. Steering and new work are announced with
``NOTIFY`` (see :meth:`PostgresHarnessStore.listen`). A lost connection (server restart, network
cut) surfaces as :class:`StoreUnavailable`, a retryable error; the next call reconnects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from holdfast.store.harness_sql import Row, SQLHarnessStore
from holdfast.store.harness_types import Sealer
from holdfast.store.postgres import PostgresDB, pg_migrate

log = logging.getLogger("holdfast.store.postgres")

COMPONENT = "harness"
_LIMIT_LOCK = 7_373_001

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
        lease_expires DOUBLE PRECISION,
        heartbeat_at DOUBLE PRECISION,
        run_after DOUBLE PRECISION NOT NULL DEFAULT 0,
        checkpoint TEXT,
        result TEXT,
        error TEXT,
        usage TEXT NOT NULL DEFAULT '{}',
        waiting TEXT,
        head_seq BIGINT NOT NULL DEFAULT 0,
        head_hash TEXT NOT NULL DEFAULT '',
        head_sig TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX harness_tasks_ready ON harness_tasks (status, queue, priority, created_at);
    CREATE INDEX harness_tasks_lease ON harness_tasks (status, lease_expires);
    CREATE TABLE harness_receipts (
        task_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        body TEXT NOT NULL,
        hash TEXT NOT NULL,
        sig TEXT,
        key_id TEXT,
        PRIMARY KEY (task_id, seq)
    );
    CREATE FUNCTION harness_receipts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'receipts are append-only'; END $$;
    CREATE TRIGGER harness_receipts_no_change BEFORE UPDATE OR DELETE ON harness_receipts
    FOR EACH ROW EXECUTE FUNCTION harness_receipts_append_only();
    CREATE TABLE harness_steps (
        task_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        tool TEXT NOT NULL,
        key TEXT NOT NULL,
        idempotent INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (task_id, name)
    );
    CREATE TABLE harness_approvals (
        id BIGSERIAL PRIMARY KEY,
        task_id TEXT NOT NULL,
        step TEXT NOT NULL,
        purpose TEXT NOT NULL,
        request TEXT NOT NULL,
        decision TEXT,
        decided_by TEXT,
        expires_at DOUBLE PRECISION,
        consumed_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX harness_approvals_step ON harness_approvals (task_id, step);
    CREATE TABLE harness_steering (
        id BIGSERIAL PRIMARY KEY,
        task_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        consumed_at DOUBLE PRECISION
    );
    CREATE INDEX harness_steering_pending ON harness_steering (consumed_at, task_id);
    CREATE TABLE harness_queues (
        name TEXT PRIMARY KEY,
        max_running INTEGER NOT NULL
    );
    """,
]


class PostgresHarnessStore(SQLHarnessStore):
    """The control-plane store in a PostgreSQL database."""

    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, sealer: Sealer, *, connect_timeout_s: int = 5) -> None:
        super().__init__(sealer)
        self.db = PostgresDB(url, connect_timeout_s=connect_timeout_s)
        self.url = self.db.url
        with self.db.guard():
            pg_migrate(self.db.connection(), COMPONENT, MIGRATIONS)

    @property
    def connection_url(self) -> str:
        """The full connection URL, password included (``url`` is the redacted one for display),
        for components that keep their tables in the same database."""
        return self.db.connection_url

    def _tx(self) -> AbstractContextManager[Any]:
        return self.db.transaction()

    def _reader(self) -> AbstractContextManager[Any]:
        return self.db.reader()

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        with self.db.transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def _run(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        cur = handle.execute(sql.replace("?", "%s"), tuple(params))
        rows = cur.fetchall() if cur.description else []
        return rows, cur.rowcount

    def _executemany(self, handle: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with handle.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    def _now(self, handle: Any) -> float:
        row = handle.execute(
            "SELECT extract(epoch FROM clock_timestamp())::float8 AS now"
        ).fetchone()
        return float(row["now"])

    def _notify(self, handle: Any, channel: str, payload: str) -> None:
        handle.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def _limit_lock(self, handle: Any) -> None:
        handle.execute("SELECT pg_advisory_xact_lock(%s)", (_LIMIT_LOCK,))

    def listen(
        self,
        channels: Sequence[str],
        callback: Callable[[str, str], None],
        stop: threading.Event,
    ) -> None:
        """Call ``callback(channel, payload)`` for each NOTIFY until ``stop`` is set.

        Reconnects with backoff when the server goes away; callers keep polling as a fallback.
        """
        delay = 0.5
        while not stop.is_set():
            conn = None
            try:
                conn = self.db.connect()
                for ch in channels:
                    conn.execute(f'LISTEN "{ch}"')
                delay = 0.5
                while not stop.is_set():
                    for n in conn.notifies(timeout=0.5):
                        callback(n.channel, n.payload)
            except Exception as exc:
                log.debug("listener: %s; reconnecting in %.1fs", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass

    def close(self) -> None:
        self.db.close()
