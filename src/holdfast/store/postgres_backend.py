"""The :class:`~holdfast.store.Backend` over PostgreSQL (see :mod:`holdfast.store.postgres`).

Queries are written with ``?`` placeholders; they are turned into psycopg's ``%s`` once per
distinct statement. Time is the server's (``clock_timestamp()``), so workers on many machines
agree on lease expiry, unless a clock is injected. ``NOTIFY`` is delivered when the transaction
commits; :meth:`PostgresBackend.listen` holds its own connection, which is also a doorbell another
session rings by cancelling its wait, and reconnects with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from holdfast.store.backend import POSTGRES, RANG, WAITED, Backend, Handle, Row
from holdfast.store.clock import Clock
from holdfast.store.errors import StoreUnavailable
from holdfast.store.postgres import PostgresDB, classify

log = logging.getLogger("holdfast.store.postgres")

_BEGIN_ATTEMPTS = 3
BELL_WAIT_S = 0.5
"""The longest one doorbell wait of :meth:`PostgresBackend.listen` lasts."""


@lru_cache(maxsize=4096)
def pg_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders in psycopg's ``%s`` style (literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


_Result = tuple[list[Row], int]
_TUPLES_OK = 2  # libpq's PGRES_TUPLES_OK: the statement returned rows (maybe none)


def _rows_of(cur: Any) -> list[Row]:
    """The rows a statement returned, or none for one that returns no rows. (Read from the
    result's status: ``cursor.description`` builds a column object per column each time.)"""
    res = cur.pgresult
    if res is None or res.status != _TUPLES_OK:
        return []
    rows: list[Row] = cur.fetchall()
    return rows


class _Tx:
    """A transaction on one connection. Its ``BEGIN`` is sent with its first statements, in one
    round trip, and not at all when it runs none; ``done`` once committed."""

    __slots__ = ("begin", "conn", "done")

    def __init__(self, conn: Any, begin: str) -> None:
        self.conn = conn
        self.begin: str | None = begin
        self.done = False


class PostgresBackend(Backend):
    """One PostgreSQL database; rows are locked with ``FOR UPDATE [SKIP LOCKED]``."""

    dialect = POSTGRES

    def __init__(self, url: str, *, clock: Clock | None = None, connect_timeout_s: int = 5) -> None:
        super().__init__(clock=clock)
        self.db = PostgresDB(url, connect_timeout_s=connect_timeout_s)
        self.url = self.db.url
        self._connect_timeout_s = connect_timeout_s

    @contextmanager
    def transaction(self, begin: str = "BEGIN") -> Iterator[Handle]:
        tx = _Tx(self._connection(), begin)
        try:
            with self.db.guard():
                try:
                    yield tx
                except BaseException:
                    self._rollback(tx)
                    raise
                if not tx.done and tx.begin is None:
                    tx.conn.execute("COMMIT")
                tx.done = True
        except BaseException:
            if tx.conn.broken or tx.conn.closed:
                self.db.drop()
            raise

    def _connection(self) -> Any:
        with self.db.guard():
            return self.db.connection()

    @staticmethod
    def _rollback(tx: _Tx) -> None:
        conn = tx.conn
        if conn.broken or conn.closed:
            return  # the server ends a transaction whose connection is gone
        from psycopg.pq import TransactionStatus

        # whatever this transaction's own state says: a failed first round trip began it
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")

    def _ensure_begun(self, tx: _Tx) -> None:
        """Send a pending ``BEGIN`` by itself (before a statement that cannot be pipelined)."""
        if tx.begin is not None:
            self._first(tx, [])

    def _first(self, tx: _Tx, todo: list[tuple[str, Sequence[Any]]]) -> list[_Result]:
        """Run ``BEGIN`` and ``todo`` in one round trip. A connection found dead is replaced
        and the round trip tried again: without its ``COMMIT`` the server applied nothing."""
        assert tx.begin is not None
        for attempt in range(_BEGIN_ATTEMPTS):
            try:
                results = self._pipeline(tx.conn, [(tx.begin, ()), *todo])
            except StoreUnavailable:
                if attempt == _BEGIN_ATTEMPTS - 1 or any(s == "COMMIT" for s, _ in todo):
                    tx.begin = None
                    raise
                time.sleep(0.05 * (attempt + 1))
                tx.conn = self._connection()
                continue
            except BaseException:
                tx.begin = None  # begun, then failed: the block's end rolls it back
                raise
            tx.begin = None
            return results[1:]
        raise AssertionError("unreachable")

    def _pipeline(self, conn: Any, todo: Sequence[tuple[str, Sequence[Any]]]) -> list[_Result]:
        with self.db.guard():
            if len(todo) == 1:
                sql, params = todo[0]
                cur = conn.execute(pg_sql(sql), tuple(params))
                return [(_rows_of(cur), cur.rowcount)]
            with conn.pipeline():
                curs = [conn.execute(pg_sql(sql), tuple(params)) for sql, params in todo]
            return [(_rows_of(c), c.rowcount) for c in curs]

    def batch(
        self,
        h: Handle,
        statements: Sequence[tuple[str, Sequence[Any]]],
        *,
        commit: bool = False,
        after: Sequence[tuple[str, Sequence[Any]]] = (),
    ) -> list[tuple[list[Row], int]]:
        """The statements in one round trip (a pipeline), with the transaction's pending
        ``BEGIN`` before them, with ``commit`` its ``COMMIT`` after them, then ``after``."""
        if after and not commit:
            raise ValueError("statements after a commit need commit=True")
        if not isinstance(h, _Tx):
            return [self.execute(h, sql, params) for sql, params in [*statements, *after]]
        if h.done:
            raise RuntimeError("this transaction has already committed")
        todo = list(statements)
        if commit:
            todo.append(("COMMIT", ()))
        todo.extend(after)
        if h.begin is not None:
            results = self._first(h, todo)
        elif todo:
            results = self._pipeline(h.conn, todo)
        else:
            results = []
        if commit:
            h.done = True
            n = len(statements)
            results = results[:n] + results[n + 1 :]
        return results

    def reader(self) -> Any:
        return self.db.reader()

    @contextmanager
    def snapshot(self) -> Iterator[Handle]:
        # PostgreSQL text is always valid UTF-8 (the database encoding), so only the isolation
        # level is needed: one snapshot for the whole transaction, and no writes.
        with self.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY") as tx:
            yield tx

    def execute(self, h: Handle, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        if isinstance(h, _Tx):
            return self.batch(h, [(sql, params)])[0]
        return self._pipeline(h, [(sql, params)])[0]

    def executemany(self, h: Handle, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        conn = self._conn(h)
        with self.db.guard(), conn.cursor() as cur:
            cur.executemany(pg_sql(sql), list(rows))

    def run_script(self, h: Handle, script: str) -> None:
        conn = self._conn(h)
        with self.db.guard():
            conn.execute(script)

    def _conn(self, h: Handle) -> Any:
        """The connection behind ``h``, its transaction begun."""
        if isinstance(h, _Tx):
            if h.done:
                raise RuntimeError("this transaction has already committed")
            self._ensure_begun(h)
            return h.conn
        return h

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
        *,
        on_connect: Sequence[tuple[str, Sequence[Any]]] = (),
        on_close: Sequence[tuple[str, Sequence[Any]]] = (),
        wait: tuple[str, Sequence[Any]] | None = None,
    ) -> None:
        """Call ``callback(channel, payload)`` for each NOTIFY until ``stop`` is set, and
        ``callback(RANG, "")`` when another session cancels this connection's wait (and
        ``callback(WAITED, ...)`` after each ``wait`` statement that ends by itself).

        The connection waits in ``pg_sleep`` (at most :data:`BELL_WAIT_S` at a time, so a
        stop is seen that fast), not idle: a ``NOTIFY`` makes the server signal every
        listening backend of the database, whatever its channels (PostgreSQL 15 and before),
        so a wake-up sent as a notification cost CPU for every worker; cancelling one backend's
        sleep signals that backend alone. A cancel that arrives between two waits is dropped by
        the server (it cancels nothing): a ``wait`` statement that reads, as of its start, what
        a ring would have changed lets the caller notice such a ring all the same. Notifications sent meanwhile arrive when the sleep
        ends, within :data:`BELL_WAIT_S`. Reconnects with backoff when the server goes away;
        ``ready`` is cleared meanwhile, so callers poll as a fallback. Notifications sent while
        disconnected are lost, so after every (re)connection ``callback("", "")`` says: look
        once, something may have been missed."""
        from psycopg import errors as pg_errors

        delay = 0.5
        while not stop.is_set():
            conn = None
            try:
                conn = self.db.connect()
                conn.add_notify_handler(lambda n: callback(n.channel, n.payload))
                for ch in channels:
                    conn.execute(f'LISTEN "{ch}"')
                for sql, params in on_connect:
                    conn.execute(pg_sql(sql), tuple(params))
                delay = 0.5
                if ready is not None:
                    ready.set()
                callback("", "")
                while not stop.is_set():
                    try:
                        if wait is None:
                            conn.execute("SELECT pg_sleep(%s)", (BELL_WAIT_S,))
                            continue
                        row = conn.execute(pg_sql(wait[0]), tuple(wait[1])).fetchone()
                    except pg_errors.QueryCanceled:
                        callback(RANG, "")
                        continue
                    first = next(iter(row.values()), "") if row else ""  # rows are dicts
                    callback(WAITED, str(first))
                for sql, params in on_close:
                    conn.execute(pg_sql(sql), tuple(params))
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
