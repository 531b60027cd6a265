"""One ``Backend`` over SQLite and PostgreSQL: what every layer's SQL is written against.

A layer (the harness, the session, RLM traces, the call log) writes its queries once, with ``?``
placeholders and the few dialect words of :class:`Dialect` (a row lock, the two-argument maximum,
the column types of its schema), and runs them through a backend:

    with backend.transaction() as h:           # the one write transaction, retried to begin
        row = backend.one(h, "SELECT ... WHERE id = ?" + backend.dialect.for_update, (id,))
        backend.run(h, "UPDATE ...", (...,))
    rows = backend.query("SELECT ...", (...,))  # a read outside any write lock

Driver errors leave as the store's own (``holdfast.store.errors``): a duplicate key is
:class:`UniqueViolation`, a locked file :class:`StoreBusy`, a lost server
:class:`StoreUnavailable`, a full disk :class:`StoreFull`, a damaged file :class:`StoreCorrupt`,
a wrong password :class:`StoreRejected`. Time is :meth:`Backend.now`: an injected clock, else the
backend's own (this machine's for SQLite, the server's for PostgreSQL, so many machines agree).
:func:`open_url` picks the backend from a URL.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holdfast.store.clock import Clock
from holdfast.store.errors import UniqueViolation

if TYPE_CHECKING:
    from holdfast.store.sqlite import SQLiteDB

Row = dict[str, Any]
Handle = Any
"""A connection inside a transaction or a read (``sqlite3.Connection`` / ``psycopg.Connection``)."""


@dataclass(frozen=True)
class Dialect:
    """The words in which the two SQL dialects differ, for queries and schemas."""

    name: str
    for_update: str
    """Appended to a ``SELECT`` that locks its rows (SQLite's ``BEGIN IMMEDIATE`` already
    serialises writers, so there it is empty)."""
    skip_locked: str
    """Appended to a ``SELECT`` that takes rows no other transaction holds."""
    greatest: str
    """The two-argument maximum function."""
    float: str
    """A double-precision column."""
    bigint: str
    serial_pk: str
    """An auto-numbered ``BIGINT`` primary key column."""
    writes_in_with: bool = False
    """Whether a ``WITH`` clause may hold ``INSERT``/``UPDATE``/``DELETE`` (PostgreSQL): two
    writes can then be one statement."""

    def octet_length(self, expr: str) -> str:
        """The length in bytes of a text expression."""
        if self.name == "sqlite":
            return f"LENGTH(CAST({expr} AS BLOB))"
        return f"OCTET_LENGTH({expr})"


SQLITE = Dialect(
    name="sqlite",
    for_update="",
    skip_locked="",
    greatest="MAX",
    float="REAL",
    bigint="INTEGER",
    serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT",
)
POSTGRES = Dialect(
    name="postgres",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    greatest="GREATEST",
    float="DOUBLE PRECISION",
    bigint="BIGINT",
    serial_pk="BIGSERIAL PRIMARY KEY",
    writes_in_with=True,
)


RANG = "\x00rang"
"""The channel :meth:`Backend.listen` reports when its doorbell rang (not a real channel: a
channel name cannot hold a NUL character)."""
WAITED = "\x00waited"
"""The channel :meth:`Backend.listen` reports when one of its waits ended by itself."""


class Backend(ABC):
    """A database the layers run their SQL on; see the module docstring."""

    dialect: Dialect
    url: str
    """Where the database is, for messages: a file path, or a URL without its password."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock = clock

    # -- transactions and statements ----------------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Handle]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        Beginning it is retried while the database is busy (SQLite's write lock, a PostgreSQL
        connection found broken before anything was sent); inside the block nothing is retried.
        """

    @abstractmethod
    def reader(self) -> AbstractContextManager[Handle]:
        """A handle for reads outside any write transaction (autocommit)."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[Handle]:
        """A read-only transaction: every read through the handle sees the database as of one
        moment, whatever commits meanwhile (verifying a chain that keeps growing). Text that is
        not valid UTF-8 is passed on losslessly (undecodable bytes as surrogate escapes) instead
        of failing the read, so a checker can report it."""

    @abstractmethod
    def execute(self, h: Handle, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        """Run one statement (``?`` placeholders); its rows (as dicts) and row count."""

    def batch(
        self,
        h: Handle,
        statements: Sequence[tuple[str, Sequence[Any]]],
        *,
        commit: bool = False,
        after: Sequence[tuple[str, Sequence[Any]]] = (),
    ) -> list[tuple[list[Row], int]]:
        """Run ``statements`` in order (``(sql, params)`` pairs); each one's rows and row count.

        PostgreSQL sends them in one round trip (a pipeline; the first statements of a
        transaction also carry its ``BEGIN``). With ``commit`` the transaction ``h`` commits
        right after them, in the same round trip, and runs no further statement; ``after`` are
        statements run once the commit is done, each on its own (a wake-up that must follow the
        commit), also in that round trip. A statement that fails aborts the ones after it and
        raises, as one run by itself would. Backends whose transaction commits only when its
        block ends (SQLite) refuse ``after``."""
        if after:
            raise ValueError(f"{self.dialect.name} cannot run statements after a commit here")
        return [self.execute(h, sql, params) for sql, params in statements]

    def executemany(self, h: Handle, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        for r in rows:
            self.execute(h, sql, r)

    @abstractmethod
    def run_script(self, h: Handle, script: str) -> None:
        """Run a script of several statements without parameters (a migration)."""

    def rows(self, h: Handle, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.execute(h, sql, params)[0]

    def one(self, h: Handle, sql: str, params: Sequence[Any] = ()) -> Row | None:
        found = self.execute(h, sql, params)[0]
        return found[0] if found else None

    def run(self, h: Handle, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        return self.execute(h, sql, params)[1]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one read, outside any write transaction."""
        with self.reader() as h:
            return self.rows(h, sql, params)

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self.reader() as h:
            return self.one(h, sql, params)

    def check_writable(self) -> None:  # noqa: B027
        """Raise the store error that would refuse a write now (a damaged SQLite file), so a
        process whose job is writing (a worker) can fail at start instead of at its first write."""

    @abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether a table of this name exists (in the search path, on PostgreSQL)."""

    # -- time, notifications, locks -----------------------------------------------------------

    def now(self, h: Handle | None = None) -> float:
        """The store's clock: the injected one, else the backend's own."""
        if self.clock is not None:
            return float(self.clock())
        return self._own_now(h)

    def local_now(self) -> float:
        """The injected clock, else this machine's: for timestamps that only record when
        something happened (no round trip to the server), never for lease expiry."""
        if self.clock is not None:
            return float(self.clock())
        return time.time()

    @abstractmethod
    def _own_now(self, h: Handle | None) -> float:
        """The backend's clock when none was injected."""

    def now_sql(self) -> tuple[str, tuple[float, ...]]:
        """The store's clock as a SQL expression and its parameters, to be read inside a
        statement instead of by a round trip of its own: the server's clock on PostgreSQL
        (constant within one statement), else the injected or local clock as a parameter."""
        return "?", (self.now(),)

    def notify(self, h: Handle, channel: str, payload: str) -> None:  # noqa: B027
        """Announce ``payload`` on ``channel`` when the transaction commits (PostgreSQL NOTIFY;
        a no-op on SQLite, whose readers poll)."""

    def advisory_lock(self, h: Handle, key: int) -> None:  # noqa: B027
        """Serialise transactions on ``key`` until this one ends (a no-op on SQLite, where
        ``BEGIN IMMEDIATE`` already serialises every writer)."""

    @property
    def notifies(self) -> bool:
        """Whether :meth:`listen` delivers notifications (else readers must poll)."""
        return False

    def listen(
        self,
        channels: Sequence[str],
        callback: Callable[[str, str], None],
        stop: Any,
        ready: Any = None,
        *,
        on_connect: Sequence[tuple[str, Sequence[Any]]] = (),
        on_close: Sequence[tuple[str, Sequence[Any]]] = (),
        wait: tuple[str, Sequence[Any]] | None = None,
    ) -> None:
        """Call ``callback(channel, payload)`` for each notification until ``stop`` is set.

        ``ready`` (a ``threading.Event``), if given, is set while notifications are being
        delivered and cleared while they are not (the connection was lost): a reader may then
        wait long between polls only while it is set.

        The listening connection is also a *doorbell*: another session that cancels its
        current statement (PostgreSQL ``pg_cancel_backend`` of its backend) makes it call
        ``callback(RANG, "")`` at once. ``on_connect`` statements run on that connection after
        every (re)connection (to publish where the bell is), ``on_close`` before it closes.
        ``wait``, if given, is the statement the connection waits in (it must sleep, briefly):
        each time it ends without being cancelled, ``callback(WAITED, text)`` passes the first
        column of its first row (what it read as of its start)."""
        raise NotImplementedError(f"{self.dialect.name} delivers no notifications; poll instead")

    # -- errors and lifecycle -----------------------------------------------------------------

    @staticmethod
    def is_unique_violation(exc: BaseException) -> bool:
        """Whether ``exc`` is a duplicate-key error (of either backend)."""
        return isinstance(exc, UniqueViolation)

    @property
    @abstractmethod
    def connection_url(self) -> str:
        """The full location, password included, for opening the same database again."""

    @abstractmethod
    def sibling(self) -> Backend:
        """A new backend on the same database, with its own connections and the same clock."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection this backend opened."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def open_url(
    url: str | os.PathLike[str] | None = None,
    *,
    clock: Clock | None = None,
    default: Callable[[], Path] | None = None,
) -> Backend:
    """The backend for ``url``: ``postgresql://`` or ``postgres://`` for PostgreSQL, a path or
    ``sqlite:///path`` for SQLite, nothing for ``default()`` (the Holdfast home's store)."""
    from holdfast.store.urls import is_postgres, sqlite_path

    text = os.fspath(url) if url is not None else ""
    if is_postgres(text):
        from holdfast.store.postgres_backend import PostgresBackend

        return PostgresBackend(text, clock=clock)
    from holdfast.store.sqlite_backend import SQLiteBackend

    path = sqlite_path(text)
    if not path:
        if default is None:
            from holdfast.config import default_db_path

            default = default_db_path
        return SQLiteBackend(default(), clock=clock)
    return SQLiteBackend(path, clock=clock)


def as_backend(
    target: Backend | SQLiteDB | str | os.PathLike[str], *, clock: Clock | None = None
) -> Backend:
    """``target`` as a backend: itself, a :class:`SQLiteDB` wrapped, or a URL or path opened."""
    if isinstance(target, Backend):
        return target
    from holdfast.store.sqlite import SQLiteDB

    if isinstance(target, SQLiteDB):
        from holdfast.store.sqlite_backend import SQLiteBackend

        return SQLiteBackend(db=target, clock=clock)
    return open_url(target, clock=clock)


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """``INSERT`` of ``columns`` that replaces the other columns of a row with the same ``key``
    (``ON CONFLICT ... DO UPDATE``, the same words on SQLite and PostgreSQL)."""
    marks = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)}) {action}"
    )
