"""The :class:`~holdfast.store.Backend` over a SQLite file (see :mod:`holdfast.store.sqlite`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from holdfast.store.backend import SQLITE, Backend, Handle, Row
from holdfast.store.clock import Clock
from holdfast.store.sqlite import DEFAULT_BUSY_TIMEOUT_MS, SQLiteDB, split_sql


class SQLiteBackend(Backend):
    """One SQLite file; writers are serialised by ``BEGIN IMMEDIATE``."""

    dialect = SQLITE

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        db: SQLiteDB | None = None,
        clock: Clock | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        super().__init__(clock=clock)
        if db is None:
            if path is None:
                raise TypeError("SQLiteBackend needs a path or a SQLiteDB")
            db = SQLiteDB(path, busy_timeout_ms=busy_timeout_ms)
        self.db = db
        self.url = str(db.path)

    @property
    def path(self) -> Path:
        return self.db.path

    def transaction(self) -> Any:
        return self.db.transaction()

    def reader(self) -> Any:
        return self.db.reader()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            self.db.raise_for(exc)

    def execute(self, h: Handle, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        with self._translated():
            cur = h.execute(sql, tuple(params))
            rows = [dict(r) for r in cur.fetchall()] if cur.description else []
        return rows, cur.rowcount

    def executemany(self, h: Handle, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._translated():
            h.executemany(sql, rows)

    def run_script(self, h: Handle, script: str) -> None:
        for statement in split_sql(script):
            self.execute(h, statement)

    def check_writable(self) -> None:
        self.db.refuse_if_damaged()

    def has_table(self, name: str) -> bool:
        row = self.query_one(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        )
        return bool(row and row["n"])

    def _own_now(self, h: Handle | None) -> float:
        return time.time()

    @property
    def connection_url(self) -> str:
        return str(self.db.path)

    def sibling(self) -> SQLiteBackend:
        if self.db.in_memory:
            # an in-memory database exists only on its own connections: share them
            return SQLiteBackend(db=self.db, clock=self.clock)
        return SQLiteBackend(
            self.db.path, clock=self.clock, busy_timeout_ms=self.db.busy_timeout_ms
        )

    def close(self) -> None:
        self.db.close()
