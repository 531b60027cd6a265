"""The :class:`~holdfast.store.Backend` over PostgreSQL (see :mod:`holdfast.store.postgres`).

Queries are written with ``?`` placeholders; they are turned into psycopg's ``%s`` once per
distinct statement. Time is the server's (``clock_timestamp()``), so workers on many machines
agree on lease expiry, unless a clock is injected. ``NOTIFY`` is delivered when the transaction
commits; :meth:`PostgresBackend.listen` holds its own connection and reconnects with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from holdfast.store.backend import POSTGRES, Backend, Handle, Row
from holdfast.store.clock import Clock
from holdfast.store.errors import StoreUnavailable
from holdfast.store.postgres import PostgresDB, classify

log = logging.getLogger("holdfast.store.postgres")

_BEGIN_ATTEMPTS = 3


@lru_cache(maxsize=4096)
def pg_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders in psycopg's ``%s`` style (literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresBackend(Backend):
    """One PostgreSQL database; rows are locked with ``FOR UPDATE [SKIP LOCKED]``."""

    dialect = POSTGRES

    def __init__(self, url: str, *, clock: Clock | None = None, connect_timeout_s: int = 5) -> None:
        super().__init__(clock=clock)
        self.db = PostgresDB(url, connect_timeout_s=connect_timeout_s)
        self.url = self.db.url
        self._connect_timeout_s = connect_timeout_s

    @contextmanager
    def transaction(self) -> Iterator[Handle]:
        conn = self._begin()
        try:
            with self.db.guard():
                try:
                    yield conn
                except BaseException:
                    if not conn.broken and not conn.closed:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except BaseException:
            if conn.broken or conn.closed:
                self.db.drop()
            raise

    def _begin(self) -> Any:
        """``BEGIN`` on this thread's connection; a connection found dead before anything was
        sent is replaced and the ``BEGIN`` tried again (nothing can have been applied)."""
        for attempt in range(_BEGIN_ATTEMPTS):
            with self.db.guard():
                conn = self.db.connection()
            try:
                with self.db.guard():
                    conn.execute("BEGIN")
                return conn
            except StoreUnavailable:
                if attempt == _BEGIN_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def reader(self) -> Any:
        return self.db.reader()

    @contextmanager
    def snapshot(self) -> Iterator[Handle]:
        # PostgreSQL text is always valid UTF-8 (the database encoding), so only the isolation
        # level is needed: one snapshot for the whole transaction, and no writes.
        with self.transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def execute(self, h: Handle, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        with self.db.guard():
            cur = h.execute(pg_sql(sql), tuple(params))
            rows: list[Row] = cur.fetchall() if cur.description else []
        return rows, cur.rowcount

    def executemany(self, h: Handle, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.db.guard(), h.cursor() as cur:
            cur.executemany(pg_sql(sql), list(rows))

    def run_script(self, h: Handle, script: str) -> None:
        with self.db.guard():
            h.execute(script)

    def has_table(self, name: str) -> bool:
        row = self.query_one("SELECT to_regclass(?) IS NOT NULL AS found", (name,))
        return bool(row and row["found"])

    def _own_now(self, h: Handle | None) -> float:
        if h is None:
            with self.reader() as r:
                return self._own_now(r)
        row = self.one(h, "SELECT extract(epoch FROM clock_timestamp())::float8 AS now")
        assert row is not None
        return float(row["now"])

    def now_sql(self) -> tuple[str, tuple[float, ...]]:
        if self.clock is not None:
            return super().now_sql()
        return "extract(epoch FROM statement_timestamp())::float8", ()

    def notify(self, h: Handle, channel: str, payload: str) -> None:
        self.execute(h, "SELECT pg_notify(?, ?)", (channel, payload))

    def advisory_lock(self, h: Handle, key: int) -> None:
        self.execute(h, "SELECT pg_advisory_xact_lock(?)", (key,))

    @property
    def notifies(self) -> bool:
        return True

    def listen(
        self,
        channels: Sequence[str],
        callback: Callable[[str, str], None],
        stop: threading.Event,
        ready: threading.Event | None = None,
    ) -> None:
        """Call ``callback(channel, payload)`` for each NOTIFY until ``stop`` is set.

        Reconnects with backoff when the server goes away; ``ready`` is cleared meanwhile, so
        callers poll as a fallback. Notifications sent while disconnected are lost, so after
        every (re)connection ``callback("", "")`` says: look once, something may have been missed.
        """
        delay = 0.5
        while not stop.is_set():
            conn = None
            try:
                conn = self.db.connect()
                for ch in channels:
                    conn.execute(f'LISTEN "{ch}"')
                delay = 0.5
                if ready is not None:
                    ready.set()
                callback("", "")
                while not stop.is_set():
                    for n in conn.notifies(timeout=0.5):
                        callback(n.channel, n.payload)
            except Exception as exc:
                if ready is not None:
                    ready.clear()
                shown = classify(exc, self.db.connection_url)
                log.debug("listener: %s; reconnecting in %.1fs", shown, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if ready is not None:
                    ready.clear()
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass

    @property
    def connection_url(self) -> str:
        return self.db.connection_url

    def sibling(self) -> PostgresBackend:
        return PostgresBackend(
            self.db.connection_url, clock=self.clock, connect_timeout_s=self._connect_timeout_s
        )

    def close(self) -> None:
        self.db.close()
