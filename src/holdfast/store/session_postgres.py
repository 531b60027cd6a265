"""Continuity memory on PostgreSQL, beside a PostgreSQL control plane.

With the session tables in the same database as the tasks, a worker on any machine that takes
over an ``agent`` task finds its virtual session (working set, transcript, tool results, token
accounting) and rebuilds the exact prompt the previous worker would have sent. The queries live in
:mod:`holdfast.store.session_sql`; here are the schema and the dialect: row locks with
``FOR UPDATE``, ``GREATEST``, timestamps as ``DOUBLE PRECISION`` (``REAL`` is four bytes here) and
messages as ``TEXT`` (``jsonb`` would reorder their keys). The schema is migrated with the control
plane's mechanism (an advisory lock and the ``schema_migrations`` table), so workers starting
together apply each version once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from holdfast.store.postgres import PostgresDB, pg_migrate
from holdfast.store.session_sql import COMPONENT, SQLSessionStore

# versions match the SQLite schema's (store/session_sqlite.py), one for one
MIGRATIONS = [
    """
    CREATE TABLE session_virtual (
        id TEXT PRIMARY KEY,
        task_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        system_prompt TEXT NOT NULL,
        config_json TEXT NOT NULL,
        continuation INTEGER NOT NULL DEFAULT 0,
        turn INTEGER NOT NULL DEFAULT 0,
        next_result INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL DEFAULT 'open',
        flushed_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX session_virtual_task ON session_virtual (task_id);
    CREATE TABLE session_physical (
        vsession_id TEXT NOT NULL REFERENCES session_virtual (id),
        cont INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        start_turn INTEGER NOT NULL,
        ended_at DOUBLE PRECISION,
        end_reason TEXT,
        seed_json TEXT NOT NULL,
        PRIMARY KEY (vsession_id, cont)
    );
    CREATE TABLE session_messages (
        vsession_id TEXT NOT NULL,
        cont INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        turn INTEGER NOT NULL,
        message_json TEXT NOT NULL,
        result_id TEXT,
        PRIMARY KEY (vsession_id, cont, seq)
    );
    CREATE TABLE session_results (
        vsession_id TEXT NOT NULL,
        result_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        turn INTEGER NOT NULL,
        content TEXT NOT NULL,
        pruned_note TEXT,
        PRIMARY KEY (vsession_id, result_id)
    );
    CREATE TABLE session_ws_ops (
        vsession_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        op_json TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (vsession_id, version)
    );
    CREATE TABLE session_turns (
        vsession_id TEXT NOT NULL,
        turn INTEGER NOT NULL,
        cont INTEGER NOT NULL,
        estimate_tokens INTEGER NOT NULL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cached_tokens INTEGER,
        cost_usd DOUBLE PRECISION,
        latency_s DOUBLE PRECISION,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (vsession_id, turn)
    );
    """,
    """
    ALTER TABLE session_ws_ops ADD COLUMN op_key TEXT;
    CREATE UNIQUE INDEX session_ws_ops_key ON session_ws_ops (vsession_id, op_key)
        WHERE op_key IS NOT NULL;
    """,
]


class PostgresSessionStore(SQLSessionStore):
    """Persistence of virtual sessions in a PostgreSQL database (``postgresql://...``)."""

    for_update = " FOR UPDATE"
    greatest = "GREATEST"

    def __init__(self, url: str, *, connect_timeout_s: int = 5) -> None:
        self.db = PostgresDB(url, connect_timeout_s=connect_timeout_s)
        self.where = self.db.url
        with self.db.guard():
            pg_migrate(self.db.connection(), COMPONENT, MIGRATIONS)

    def _tx(self) -> AbstractContextManager[Any]:
        return self.db.transaction()

    def _reader(self) -> AbstractContextManager[Any]:
        return self.db.reader()

    def _rows(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        cur = handle.execute(sql.replace("?", "%s"), tuple(params))
        return list(cur.fetchall()) if cur.description else []

    def _run(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> int:
        return int(handle.execute(sql.replace("?", "%s"), tuple(params)).rowcount)

    def _is_duplicate(self, exc: Exception) -> bool:
        from psycopg.errors import UniqueViolation

        return isinstance(exc, UniqueViolation)

    def close(self) -> None:
        self.db.close()
