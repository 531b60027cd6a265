"""PostgreSQL connections (psycopg 3), one per thread: the twin of :class:`~holdfast.store.SQLiteDB`.

Connections run in autocommit mode with rows read by column name (psycopg's ``dict_row``). What
goes wrong is sorted by who can fix it (:func:`classify`):

* the server refused us (wrong password, unknown user or database, a URL libpq cannot parse):
  :class:`StoreRejected` at once: retrying cannot help, the configuration must change;
* the server cannot be reached or went away (restart, network cut): :class:`StoreUnavailable`,
  retryable; the thread's broken connection is dropped and the next call reconnects;
* a deadlock or serialisation failure: :class:`StoreConflict`, retryable;
* a full disk on the server: :class:`StoreFull`, retryable.

No message ever holds the URL's password, in any form: :attr:`PostgresDB.url` is redacted and
every driver message is scrubbed (:mod:`holdfast.store.urls`) before it is shown, and the
driver's exception is not chained (its text may quote the whole URL). psycopg is imported only
when a database is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from holdfast.errors import ConfigError
from holdfast.store.errors import (
    StoreConflict,
    StoreError,
    StoreFull,
    StoreRejected,
    StoreUnavailable,
    UniqueViolation,
)
from holdfast.store.urls import redact, scrub

# SQLSTATE classes and codes that mean "the server answered no": retrying cannot help
_REJECTED_STATES = frozenset({"28000", "28P01", "3D000", "42501"})
_REJECTED_TEXT = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied for database",
    "invalid connection option",
    "invalid uri",
    "invalid integer value",
    'missing "="',
    "unterminated quoted string",
    "invalid percent-encoded token",
    "unexpected spaces",
    "invalid sslmode",
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            "PostgreSQL needs the 'postgres' extra: pip install 'holdfast[postgres]'"
        ) from exc
    return psycopg


def classify(exc: Exception, dsn: str, *, connecting: bool = False) -> Exception:
    """The store error for a psycopg error, with every password of ``dsn`` scrubbed.

    While connecting, the answer is always a store error (the driver's text may quote the URL);
    afterwards, errors that are not about the store (a syntax error, a trigger's refusal) are
    returned unchanged: they come from the server, which never sees the URL.
    """
    if isinstance(exc, StoreError):
        return exc
    import psycopg
    from psycopg import errors as pge

    shown = redact(dsn)
    reason = scrub(" ".join(str(exc).split()) or type(exc).__name__, dsn)[:400]
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, pge.UniqueViolation):
        return UniqueViolation(reason, url=shown)
    if isinstance(exc, pge.DeadlockDetected | pge.SerializationFailure):
        return StoreConflict(f"PostgreSQL transaction conflict at {shown}: {reason}", url=shown)
    if isinstance(exc, pge.DiskFull) or state == "53100":
        return StoreFull(
            f"the PostgreSQL server at {shown} is out of disk space ({reason}); nothing of this "
            "change was written. Free space on the server: work waits and goes on by itself",
            url=shown,
        )
    lowered = reason.lower()
    if connecting and (
        state in _REJECTED_STATES
        or isinstance(exc, psycopg.ProgrammingError)
        or any(t in lowered for t in _REJECTED_TEXT)
    ):
        return StoreRejected(
            f"PostgreSQL at {shown} refused the connection: {reason}; check the user, password "
            "and database name in the URL (--database-url / HOLDFAST_DATABASE_URL)",
            url=shown,
        )
    if connecting or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        verb = "cannot reach" if connecting else "lost the connection to"
        return StoreUnavailable(
            f"{verb} PostgreSQL at {shown}: {reason}; check the URL "
            "(--database-url / HOLDFAST_DATABASE_URL) and that the server is running",
            url=shown,
        )
    return exc


class PostgresDB:
    """A PostgreSQL database at ``url`` (``postgresql://...``), one connection per thread."""

    def __init__(self, url: str, *, connect_timeout_s: int = 5) -> None:
        psycopg = _psycopg()
        self._dsn = url
        self.url = redact(url)
        self._timeout = connect_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []
        problem = None
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            problem = scrub(" ".join(str(exc).split()), url)[:300]
        if problem is not None:  # raised outside the handler: the driver's error is not kept
            raise StoreRejected(f"invalid PostgreSQL URL {self.url}: {problem}", url=self.url)

    @property
    def connection_url(self) -> str:
        """The full connection URL, password included (``url`` is redacted for display)."""
        return self._dsn

    def connect(self) -> Any:
        """A new connection of this database's settings, owned by the caller (e.g. for LISTEN)."""
        psycopg = _psycopg()
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(
                self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=self._timeout
            )
        except psycopg.Error as exc:
            error = classify(exc, self._dsn, connecting=True)
        # raised outside the handler, so the driver's error (whose text may quote the URL) is
        # neither the cause nor the context of ours
        raise error

    def connection(self) -> Any:
        """This thread's connection, (re)opened when missing, closed or broken."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def drop(self) -> None:
        """Forget this thread's connection (after an error left it unusable)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
            self._local.conn = None

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a psycopg error into a store error; drop a connection it left broken."""
        psycopg = _psycopg()
        try:
            yield
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                self.drop()
            translated = classify(exc, self._dsn)
            if translated is exc:
                raise
        else:
            return
        raise translated  # outside the handler: the driver's error is not kept as its context

    @contextmanager
    def reader(self) -> Iterator[Any]:
        """This thread's connection for reads in autocommit mode."""
        with self.guard():
            yield self.connection()

    def close(self) -> None:
        """Close every connection this object opened, in any thread."""
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        self._local = threading.local()


__all__ = ["PostgresDB", "classify", "redact"]
