"""Continuity memory in the embedded SQLite store (``<holdfast home>/holdfast.db`` by default).

The queries live in :mod:`holdfast.store.session_sql`; this module adds the SQLite plumbing and
schema. ``BEGIN IMMEDIATE`` takes the file's write lock, so writers are serialised without row locks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from holdfast.store.session_sql import (
    COMPONENT,
    Entry,
    PhysicalRow,
    SQLSessionStore,
    StaleSessionWrite,
    VirtualRow,
)
from holdfast.store.sqlite import SQLiteDB, migrate

__all__ = [
    "COMPONENT",
    "MIGRATIONS",
    "Entry",
    "PhysicalRow",
    "SessionStore",
    "StaleSessionWrite",
    "VirtualRow",
]

MIGRATIONS = [
    """
CREATE TABLE session_virtual (
    id TEXT PRIMARY KEY,
    task_id TEXT,
    created_at REAL NOT NULL,
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
    started_at REAL NOT NULL,
    start_turn INTEGER NOT NULL,
    ended_at REAL,
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
    at REAL NOT NULL,
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
    cost_usd REAL,
    latency_s REAL,
    at REAL NOT NULL,
    PRIMARY KEY (vsession_id, turn)
);
""",
    """
ALTER TABLE session_ws_ops ADD COLUMN op_key TEXT;
CREATE UNIQUE INDEX session_ws_ops_key ON session_ws_ops (vsession_id, op_key)
    WHERE op_key IS NOT NULL;
""",
]


class SessionStore(SQLSessionStore):
    """Persistence of virtual sessions in the embedded SQLite store."""

    def __init__(self, db: SQLiteDB) -> None:
        self.db = db
        self.where = str(db.path)
        migrate(db, COMPONENT, MIGRATIONS)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.db.transaction() as tx:
            yield tx

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        yield self.db.connection()

    def _rows(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(handle.execute(sql, tuple(params)).fetchall())

    def _run(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> int:
        return int(handle.execute(sql, tuple(params)).rowcount)

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def close(self) -> None:
        self.db.close()
