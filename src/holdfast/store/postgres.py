"""A PostgreSQL database with per-thread connections: the twin of :class:`~holdfast.store.SQLiteDB`.

Connections run in autocommit mode with rows read by column name (psycopg's ``dict_row``);
:meth:`PostgresDB.transaction` opens an explicit transaction. A lost connection (server restart,
network cut) surfaces as :class:`StoreUnavailable`, a retryable error, and the thread's next call
reconnects; a deadlock or serialisation failure is a plain :class:`RetryableFailure`. psycopg is
imported only when a database is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from holdfast.errors import ConfigError, RetryableFailure
from holdfast.store.harness_postgres import redact
from holdfast.store.harness_types import StoreUnavailable


class PostgresDB:
    """A PostgreSQL database at ``url`` (``postgresql://...``), one connection per thread."""

    def __init__(self, url: str, *, connect_timeout_s: int = 5) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "PostgreSQL needs the 'postgres' extra: pip install 'holdfast[postgres]'"
            ) from exc
        self._dsn = url
        self.url = redact(url)
        self._timeout = connect_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(
                self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=self._timeout
            )
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreUnavailable(
                f"cannot reach PostgreSQL at {self.url}: {reason}; check the URL "
                "(--database-url / HOLDFAST_DATABASE_URL) and that the server is running",
                url=self.url,
            ) from exc
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"invalid PostgreSQL URL {self.url}: {exc}") from exc

    def connection(self) -> Any:
        """This thread's connection, (re)opened when missing, closed or broken."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a lost connection into :class:`StoreUnavailable` and drop it for a reconnect."""
        import psycopg

        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
                self._local.conn = None
            if isinstance(
                exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
            ):
                raise RetryableFailure(f"PostgreSQL transaction conflict: {exc}") from exc
            raise StoreUnavailable(
                f"lost the connection to PostgreSQL at {self.url}: {str(exc).strip()[:200]}",
                url=self.url,
            ) from exc

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction on this thread's connection: committed on success, else rolled back."""
        with self.guard():
            conn = self.connection()
            with conn.transaction():
                yield conn

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
