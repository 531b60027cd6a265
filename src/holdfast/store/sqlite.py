"""The embedded SQLite store: one WAL-mode file under the Holdfast home, shared by every part.

Connections are per thread (SQLite connections must not be shared across threads without a lock)
and run in autocommit mode; :meth:`SQLiteDB.transaction` opens an explicit write transaction.
Its ``BEGIN IMMEDIATE`` takes the file's write lock before anything is read, so two processes
can never decide on the same state; the lock is retried with short jittered sleeps (SQLite's
own busy handler backs off to 100 ms, which starves a queue polled by many worker processes).

The first connection to a file in a process runs ``PRAGMA quick_check``. A damaged file is still
opened for reading (so what is left can be listed and exported), but every connection to it is
``query_only`` and every write is refused with :class:`StoreCorrupt`, naming the damage and the
remedy, instead of writing into a broken B-tree. A full disk is :class:`StoreFull`: retryable,
and nothing of the refused transaction is kept.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from holdfast.errors import ConfigError
from holdfast.store.errors import StoreBusy, StoreCorrupt, StoreError, StoreFull, UniqueViolation

DEFAULT_BUSY_TIMEOUT_MS = 10_000

_FULL_CODES = frozenset({"SQLITE_FULL"})
_CORRUPT_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_CORRUPT_INDEX"})
_UNIQUE_CODES = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})

# realpath of a checked file -> the first problem quick_check reported, or None when healthy
_health: dict[str, str | None] = {}
_health_lock = threading.Lock()


def remedy(path: Path | str) -> str:
    """What to do about a damaged store file."""
    return (
        f"stop every process using it, keep a copy of {path}, then restore it from a backup, "
        f"or recover what is readable: sqlite3 {path} .recover | sqlite3 {path}.recovered "
        f"and move {path}.recovered into its place"
    )


class SQLiteDB:
    """A SQLite database file with WAL, a busy timeout and per-thread connections."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        integrity_check: bool = True,
    ) -> None:
        self.path = Path(path) if str(path) != ":memory:" else Path(":memory:")
        self.busy_timeout_ms = busy_timeout_ms
        self.integrity_check = integrity_check
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if not self.in_memory:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the directory for the store {self.path}: {exc.strerror}",
                    path=str(self.path),
                ) from exc

    @property
    def in_memory(self) -> bool:
        return str(self.path) == ":memory:"

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
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if not self.in_memory:
                self._enter_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            self.raise_for(exc)
        if self.damage() is not None:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _enter_wal(self, conn: sqlite3.Connection) -> None:
        """Put the file in WAL mode, retried up to the busy timeout.

        Switching a file's journal mode needs its exclusive lock, and SQLite answers
        ``SQLITE_BUSY`` at once, without its busy handler, while another connection holds any
        lock on it: processes opening a new file together would otherwise fail at random. A
        file already in WAL mode is only read (no lock is needed to learn the mode).
        """
        row = conn.execute("PRAGMA journal_mode").fetchone()
        if row is not None and str(row[0]).lower() == "wal":
            return
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.0002
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    return
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, 0.005)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")

    def damage(self) -> str | None:
        """The first problem ``PRAGMA quick_check`` found in this file (checked once per process),
        or None when it is healthy."""
        if self.in_memory or not self.integrity_check or not self.path.exists():
            return None
        key = os.path.realpath(self.path)
        with _health_lock:
            if key not in _health:
                _health[key] = _quick_check(self.path, self.busy_timeout_ms)
            return _health[key]

    def refuse_if_damaged(self) -> None:
        """Raise :class:`StoreCorrupt` when the file failed its integrity check."""
        problem = self.damage()
        if problem is not None:
            raise StoreCorrupt(
                f"the store {self.path} is damaged ({problem}); writes are refused so the damage "
                f"cannot spread. Remedy: {remedy(self.path)}",
                path=str(self.path),
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on error.

        Driver errors leave as store errors (:meth:`translate`); a commit refused by a full disk
        rolls the whole transaction back and raises :class:`StoreFull`.
        """
        self.refuse_if_damaged()
        conn = self.connection()
        self._begin(conn)
        try:
            yield conn
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                self.raise_for(exc)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            self.raise_for(exc)

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retried with jittered backoff up to the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.0002
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        self.raise_for(exc)
                    time.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, 0.005)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite rolls a transaction back by itself on some errors (a full disk among them):
        # a second ROLLBACK would fail with "no transaction is active" and hide the real error.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for reads, with driver errors translated."""
        try:
            yield self.connection()
        except sqlite3.Error as exc:
            self.raise_for(exc)

    def raise_for(self, exc: sqlite3.Error) -> NoReturn:
        """Raise the store error for ``exc`` (chained to it), or ``exc`` itself."""
        translated = self.translate(exc)
        if translated is exc:
            raise exc
        raise translated from exc

    def translate(self, exc: sqlite3.Error) -> Exception:
        """The store error for a driver error (unexpected ones are returned unchanged)."""
        if isinstance(exc, StoreError):
            return exc
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc)
        where = str(self.path)
        if name in _UNIQUE_CODES:
            return UniqueViolation(text, path=where)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
            return StoreBusy(
                f"the store {where} stayed locked by another process for "
                f"{self.busy_timeout_ms} ms; retry, or look for a stuck process holding it",
                path=where,
            )
        if name in _FULL_CODES or (name.startswith("SQLITE_IOERR") and self._disk_full()):
            return StoreFull(
                f"the disk holding the store {where} is full ({self._free_text()}); nothing of "
                "this change was written. Free some space: work waits and goes on by itself",
                path=where,
            )
        if name == "SQLITE_NOTADB":
            return ConfigError(
                f"the store {where} cannot be used: {text} (not a SQLite database, or one whose "
                "first page is destroyed); point --database-url or HOLDFAST_HOME elsewhere, or "
                "restore the file from a backup",
                path=where,
            )
        if name in _CORRUPT_CODES or name.startswith("SQLITE_CORRUPT"):
            if not self.in_memory:  # damage found in use: refuse writes from now on, too
                with _health_lock:
                    if _health.get(os.path.realpath(self.path)) is None:
                        _health[os.path.realpath(self.path)] = text[:500]
            return StoreCorrupt(
                f"the store {where} is damaged ({text}); writes are refused. "
                f"Remedy: {remedy(where)}",
                path=where,
            )
        if name.startswith("SQLITE_READONLY") and self.damage() is not None:
            try:
                self.refuse_if_damaged()
            except StoreCorrupt as corrupt:
                return corrupt
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
            return ConfigError(f"the store {where} cannot be used: {text}", path=where)
        return exc

    def _disk_full(self, slack: int = 1 << 20) -> bool:
        try:
            return shutil.disk_usage(self.path.parent).free < slack
        except OSError:
            return False

    def _free_text(self) -> str:
        try:
            return f"{shutil.disk_usage(self.path.parent).free} bytes free"
        except OSError:
            return "free space unknown"

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


def _busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is a lock held by another connection, any extended code of it included
    (``SQLITE_BUSY_RECOVERY`` while another connection rebuilds the WAL index,
    ``SQLITE_BUSY_SNAPSHOT``, ``SQLITE_LOCKED_SHAREDCACHE``)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _quick_check(path: Path, busy_timeout_ms: int) -> str | None:
    """Run ``PRAGMA quick_check`` on its own connection; the first problem, or None."""
    try:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, isolation_level=None)
    except sqlite3.Error:
        return None  # cannot open at all: the caller's own connection reports why
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or name == "SQLITE_NOTADB":
            # locked past the timeout: nothing learned; not a database at all: the caller's own
            # connection says so with its own message
            return None
        return str(exc)
    finally:
        conn.close()
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    return "; ".join(problems)[:500] if problems else None


def migrate(db: SQLiteDB, component: str, migrations: Sequence[str]) -> int:
    """Apply ``migrations[i]`` (version ``i + 1``) for ``component`` where not yet applied:
    :func:`holdfast.store.migrate` on a bare :class:`SQLiteDB`."""
    from holdfast.store.migrations import migrate as migrate_backend

    return migrate_backend(db, component, migrations)


def split_sql(script: str) -> list[str]:
    """Split a SQLite script into statements (``sqlite3.complete_statement`` aware, so a
    trigger's ``BEGIN ... END`` stays whole)."""
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


__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "SQLiteDB", "StoreBusy", "migrate", "remedy", "split_sql"]
