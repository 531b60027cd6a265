"""A PostgreSQL database with per-thread connections: the twin of :class:`~holdfast.store.SQLiteDB`.

Connections run in autocommit mode with rows read by column name (psycopg's ``dict_row``);
:meth:`PostgresDB.transaction` opens an explicit transaction. A lost connection (server restart,
network cut) surfaces as :class:`StoreUnavailable`, a retryable error, and the thread's next call
reconnects; a deadlock or serialisation failure is a plain :class:`RetryableFailure`. psycopg is
imported only when a database is opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from holdfast.errors import ConfigError, RetryableFailure
from holdfast.store.harness_types import StoreUnavailable

_MIGRATE_LOCK = 7_373_000


def pg_migrate(conn: Any, component: str, migrations: Sequence[str]) -> int:
    """PostgreSQL twin of ``store.sqlite.migrate``: versioned, append-only, applied once."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
            "version INTEGER NOT NULL, applied_at DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (component, version))"
        )
        row = conn.execute(
            "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE component = %s",
            (component,),
        ).fetchone()
        current = int(row["v"])
        if current > len(migrations):
            raise ConfigError(
                f"the database has {component} schema version {current}, newer than this "
                f"Holdfast knows ({len(migrations)}); upgrade Holdfast"
            )
        for version in range(current + 1, len(migrations) + 1):
            conn.execute(migrations[version - 1])
            conn.execute(
                "INSERT INTO schema_migrations (component, version, applied_at) VALUES (%s, %s, %s)",
                (component, version, time.time()),
            )
    return len(migrations)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:
        return "postgresql://(unparseable URL)"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"postgresql://{info.get('user') or ''}@{host}:{port}/{info.get('dbname') or ''}"


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

    @property
    def connection_url(self) -> str:
        """The full connection URL, password included (``url`` is redacted for display)."""
        return self._dsn

    def connect(self) -> Any:
        """A new connection of this database's settings, owned by the caller (e.g. for LISTEN)."""
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
            conn = self.connect()
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
