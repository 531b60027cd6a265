"""The embedded SQLite store: one WAL-mode file under the Holdfast home, shared by every part.

Each component (the model call log, RLM traces, the memory index, the control plane) owns its
tables and registers versioned migrations under its own component name; :func:`migrate` applies
the ones a database has not seen yet, inside one ``BEGIN IMMEDIATE`` transaction so that two
processes opening the same file at once apply each migration exactly once.

Connections are per thread (SQLite connections must not be shared across threads without a lock)
and run in autocommit mode; :meth:`SQLiteDB.transaction` opens an explicit write transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from holdfast.errors import ConfigError, RetryableFailure

DEFAULT_BUSY_TIMEOUT_MS = 10_000


class StoreBusy(RetryableFailure):
    """The database stayed locked by another writer past the busy timeout."""

    code = "store_busy"


class SQLiteDB:
    """A SQLite database file with WAL, a busy timeout and per-thread connections."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path) if str(path) != ":memory:" else Path(":memory:")
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if str(self.path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the directory for the store {self.path}: {exc.strerror}",
                    path=str(self.path),
                ) from exc

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the store {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        if str(self.path) != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on error."""
        conn = self.connection()
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreBusy(
                        f"the store {self.path} stayed locked by another writer for "
                        f"{self.busy_timeout_ms} ms; retry, or check for a stuck process",
                        path=str(self.path),
                    ) from exc
                time.sleep(0.01)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened, in any thread."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()


_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (component, version)
)
"""


def migrate(db: SQLiteDB, component: str, migrations: Sequence[str]) -> int:
    """Apply ``migrations[i]`` (version ``i + 1``) for ``component`` where not yet applied.

    Each migration is a script of SQL statements. Returns the component's schema version.
    Migrations are append-only: never edit one that has shipped, add a new one.
    """
    conn = db.connection()
    conn.execute(_MIGRATIONS_DDL)
    with db.transaction() as tx:
        row = tx.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?",
            (component,),
        ).fetchone()
        current = int(row[0])
        if current > len(migrations):
            raise ConfigError(
                f"the store {db.path} has {component} schema version {current}, newer than this "
                f"Holdfast knows ({len(migrations)}); upgrade Holdfast",
                component=component,
            )
        for version in range(current + 1, len(migrations) + 1):
            for statement in _split_sql(migrations[version - 1]):
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                (component, version, time.time()),
            )
    return len(migrations)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (``sqlite3.complete_statement`` aware)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip().strip(";").strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
