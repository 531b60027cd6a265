"""A counted side-effect ledger in its own SQLite file, used by the scripted task kind.

It stands for "the world outside the harness" in tests, fault tests and the demo: each applied
effect bumps a named counter. ``add`` with an idempotency key applies at most once per key (the
key and the counter change commit together); ``add_unkeyed`` applies every time it is called, like
a tool that cannot be retried safely. ``attempts`` counts calls, applied or not.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from holdfast.store.sqlite import SQLiteDB, migrate

MIGRATIONS = [
    """
    CREATE TABLE effect_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE effect_applied (
        key TEXT PRIMARY KEY, name TEXT NOT NULL, amount INTEGER NOT NULL, value INTEGER NOT NULL
    );
    CREATE TABLE effect_attempts (name TEXT PRIMARY KEY, calls INTEGER NOT NULL);
    """,
]


class EffectLedger:
    """Named counters whose increments are the side effects being counted."""

    def __init__(self, path: str | Path) -> None:
        self.db = SQLiteDB(path)
        migrate(self.db, "effects", MIGRATIONS)

    def _attempt(self, conn: sqlite3.Connection, name: str) -> None:
        conn.execute(
            "INSERT INTO effect_attempts (name, calls) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET calls = calls + 1",
            (name,),
        )

    def add(self, name: str, amount: int, key: str) -> int:
        """Add ``amount`` once per ``key``; returns the counter value after that one application."""
        with self.db.transaction() as conn:
            self._attempt(conn, name)
            row = conn.execute("SELECT value FROM effect_applied WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return int(row[0])
            value = self._bump(conn, name, amount)
            conn.execute(
                "INSERT INTO effect_applied (key, name, amount, value) VALUES (?, ?, ?, ?)",
                (key, name, amount, value),
            )
            return value

    def add_unkeyed(self, name: str, amount: int) -> int:
        """Add ``amount`` every time: not idempotent."""
        with self.db.transaction() as conn:
            self._attempt(conn, name)
            return self._bump(conn, name, amount)

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str, amount: int) -> int:
        conn.execute(
            "INSERT INTO effect_counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, amount),
        )
        row = conn.execute("SELECT value FROM effect_counters WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def value(self, name: str) -> int:
        row = (
            self.db.connection()
            .execute("SELECT value FROM effect_counters WHERE name = ?", (name,))
            .fetchone()
        )
        return 0 if row is None else int(row[0])

    def attempts(self, name: str) -> int:
        row = (
            self.db.connection()
            .execute("SELECT calls FROM effect_attempts WHERE name = ?", (name,))
            .fetchone()
        )
        return 0 if row is None else int(row[0])

    def applied_keys(self) -> dict[str, int]:
        """Every applied key with its amount."""
        rows = self.db.connection().execute("SELECT key, amount FROM effect_applied").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def close(self) -> None:
        self.db.close()
