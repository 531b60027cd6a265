"""The Backend contract, the same on SQLite and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.errors import ConfigError
from holdfast.store import (
    Backend,
    Dialect,
    PostgresBackend,
    SQLiteBackend,
    UniqueViolation,
    migrate,
    open_url,
    schema_version,
    upsert,
)
from holdfast.store.migrations import Migration
from holdfast.testing import FakeClock
from holdfast.testing.postgres import PostgresCluster

_names = itertools.count(1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "b.db")
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"b{next(_names)}")


@pytest.fixture
def backend(url: str) -> Iterator[Backend]:
    b = open_url(url)
    yield b
    b.close()


def _table(d: Dialect) -> str:
    return f"CREATE TABLE t (k TEXT PRIMARY KEY, n {d.bigint} NOT NULL, x {d.float})"


def test_open_url_picks_the_backend(tmp_path: Path, url: str) -> None:
    b = open_url(url)
    try:
        expected = PostgresBackend if url.startswith("postgresql://") else SQLiteBackend
        assert isinstance(b, expected)
        assert "password" not in repr(b)
    finally:
        b.close()
    for form in (f"sqlite://{tmp_path}/u.db", f"sqlite:///{tmp_path}/u.db", tmp_path / "u.db"):
        lite = open_url(form)
        assert isinstance(lite, SQLiteBackend) and lite.path == tmp_path / "u.db"
        lite.close()


def test_statements_placeholders_and_rollback(backend: Backend) -> None:
    migrate(backend, "t", [_table])
    with backend.transaction() as h:
        assert backend.run(h, "INSERT INTO t (k, n, x) VALUES (?, ?, ?)", ("a", 1, 0.5)) == 1
        backend.executemany(h, "INSERT INTO t (k, n) VALUES (?, ?)", [("b", 2), ("c", 3)])
    # a literal '%' beside a placeholder: the PostgreSQL driver's own syntax must not leak out
    row = backend.query_one("SELECT k || '%' AS v FROM t WHERE k LIKE ? ESCAPE '\\'", ("a%",))
    assert row == {"v": "a%"}
    with pytest.raises(RuntimeError), backend.transaction() as h:
        backend.run(h, "UPDATE t SET n = n + 10")
        raise RuntimeError("boom")
    assert [r["n"] for r in backend.query("SELECT n FROM t ORDER BY k")] == [1, 2, 3]


def test_a_duplicate_key_is_a_typed_unique_violation(backend: Backend) -> None:
    migrate(backend, "t", [_table])
    with backend.transaction() as h:
        backend.run(h, "INSERT INTO t (k, n) VALUES ('a', 1)")
    with pytest.raises(UniqueViolation) as info, backend.transaction() as h:
        backend.run(h, "INSERT INTO t (k, n) VALUES ('b', 2)")
        backend.run(h, "INSERT INTO t (k, n) VALUES ('a', 3)")
    assert backend.is_unique_violation(info.value)
    assert backend.query("SELECT k FROM t ORDER BY k") == [{"k": "a"}]  # 'b' rolled back
    with backend.transaction() as h:  # the connection is usable again
        backend.run(h, upsert("t", ("k", "n"), ("k",)), ("a", 9))
    assert backend.query_one("SELECT n FROM t WHERE k = 'a'") == {"n": 9}


def test_migrations_are_versioned_written_once_and_refuse_newer(backend: Backend) -> None:
    steps: list[Migration] = [_table, "ALTER TABLE t ADD COLUMN note TEXT"]
    assert schema_version(backend, "t") == 0
    assert migrate(backend, "t", steps[:1]) == 1
    assert migrate(backend, "t", steps) == 2
    assert migrate(backend, "t", steps) == 2
    assert schema_version(backend, "t") == 2
    with backend.transaction() as h:
        backend.run(h, "INSERT INTO t (k, n, note) VALUES ('a', 1, 'n')")
    with pytest.raises(ConfigError, match="newer than this Holdfast knows"):
        migrate(backend, "t", steps[:1])
    rows = backend.query("SELECT version FROM schema_migrations WHERE component = 't'")
    assert sorted(r["version"] for r in rows) == [1, 2]


def test_many_processes_opening_together_migrate_once(url: str, tmp_path: Path) -> None:
    # On SQLite each round is a new file: the openers race to put it in WAL mode, too.
    rounds = 1 if url.startswith("postgresql://") else 12
    for n in range(rounds):
        target = url if rounds == 1 else str(tmp_path / f"race{n}.db")
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def opener(
            target: str = target,
            errors: list[BaseException] = errors,
            start: threading.Barrier = start,
        ) -> None:
            b = open_url(target)
            try:
                start.wait()
                migrate(b, "race", [_table, "ALTER TABLE t ADD COLUMN note TEXT"])
            except BaseException as exc:  # reported on the test's thread
                errors.append(exc)
            finally:
                b.close()

        threads = [threading.Thread(target=opener) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"round {n}"
        b = open_url(target)
        assert schema_version(b, "race") == 2
        b.close()


class _FlakyConnection:
    """A connection whose first statements fail with an extended busy code."""

    def __init__(self, failures: int, name: str) -> None:
        self.failures = failures
        self.name = name
        self.statements: list[str] = []

    def execute(self, sql: str) -> _FlakyConnection:
        self.statements.append(sql)
        if sql.startswith(("BEGIN", "PRAGMA journal_mode =")) and self.failures > 0:
            self.failures -= 1
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorname = self.name
            raise exc
        return self

    def fetchone(self) -> tuple[str]:
        return ("delete",)


@pytest.mark.parametrize(
    "name", ["SQLITE_BUSY", "SQLITE_BUSY_RECOVERY", "SQLITE_LOCKED_SHAREDCACHE"]
)
def test_every_extended_busy_code_is_waited_out(tmp_path: Path, name: str) -> None:
    # SQLITE_BUSY_RECOVERY comes back while another connection rebuilds the WAL index: a new
    # file opened by several processes at once used to fail on it at random.
    from holdfast.store.sqlite import SQLiteDB

    db = SQLiteDB(tmp_path / "x.db", busy_timeout_ms=5_000)
    begin = _FlakyConnection(3, name)
    db._begin(begin)  # type: ignore[arg-type]
    assert begin.statements.count("BEGIN IMMEDIATE") == 4
    wal = _FlakyConnection(3, name)
    db._enter_wal(wal)  # type: ignore[arg-type]
    assert wal.statements.count("PRAGMA journal_mode = WAL") == 4


def test_an_up_to_date_sqlite_store_opens_without_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    b = open_url(path)
    migrate(b, "t", [_table])
    b.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        again = SQLiteBackend(path, busy_timeout_ms=100)
        assert migrate(again, "t", [_table]) == 1
        assert again.query("SELECT COUNT(*) AS n FROM t") == [{"n": 0}]
        again.close()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_the_clock_is_injected_or_the_backends_own(url: str) -> None:
    clock = FakeClock(1_000.0)
    b = open_url(url, clock=clock)
    try:
        assert b.now() == 1_000.0 and b.local_now() == 1_000.0
        clock.advance(2.5)
        with b.transaction() as h:
            assert b.now(h) == 1_002.5
    finally:
        b.close()
    own = open_url(url)
    try:
        assert abs(own.now() - time.time()) < 5  # this machine's, or the server's on PostgreSQL
    finally:
        own.close()


def test_a_sibling_is_the_same_database_on_its_own_connections(backend: Backend) -> None:
    migrate(backend, "t", [_table])
    sib = backend.sibling()
    try:
        assert sib is not backend and sib.url == backend.url
        with sib.transaction() as h:
            sib.run(h, "INSERT INTO t (k, n) VALUES ('s', 1)")
        assert backend.query("SELECT k FROM t") == [{"k": "s"}]
    finally:
        sib.close()
    assert backend.query("SELECT k FROM t") == [{"k": "s"}]  # closing it left ours open


def test_fake_clock_only_moves_forward() -> None:
    clock = FakeClock(10.0)
    assert clock() == 10.0 and clock.advance(0) == 10.0 and clock.advance(1.5) == 11.5
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="cannot move"):
            clock.advance(bad)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(11.0 - 1e-9)
    clock.set(20.0)
    assert clock() == 20.0


@given(st.lists(st.floats(0, 1e6, allow_nan=False), max_size=30))
def test_fake_clock_is_the_sum_of_its_advances(steps: list[float]) -> None:
    clock = FakeClock(0.0)
    seen = [clock()]
    for s in steps:
        seen.append(clock.advance(s))
    assert seen == sorted(seen)
    assert math.isclose(clock(), math.fsum(steps), rel_tol=1e-9, abs_tol=1e-6)
