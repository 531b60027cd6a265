from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pytest

from holdfast.errors import BudgetExceeded, ConfigError
from holdfast.store import SQLiteDB, migrate


def test_migrations_apply_once_and_in_order(tmp_path: Path) -> None:
    db = SQLiteDB(tmp_path / "h.db")
    steps = ["CREATE TABLE a (x INTEGER);", "ALTER TABLE a ADD COLUMN y TEXT;"]
    assert migrate(db, "demo", steps) == 2
    assert migrate(db, "demo", steps) == 2  # idempotent
    cols = [r["name"] for r in db.connection().execute("PRAGMA table_info(a)")]
    assert cols == ["x", "y"]
    with pytest.raises(ConfigError, match="newer than this"):
        migrate(db, "demo", steps[:1])


def test_wal_and_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    db = SQLiteDB(tmp_path / "h.db")
    migrate(db, "demo", ["CREATE TABLE t (n INTEGER);"])
    assert db.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def writer(offset: int) -> None:
        other = SQLiteDB(tmp_path / "h.db")
        for i in range(50):
            with other.transaction() as tx:
                tx.execute("INSERT INTO t VALUES (?)", (offset + i,))
        other.close()

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.connection().execute("SELECT COUNT(*) FROM t").fetchone()[0] == 200


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    db = SQLiteDB(tmp_path / "h.db")
    migrate(db, "demo", ["CREATE TABLE t (n INTEGER);"])
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")
    assert db.connection().execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_errors_are_plain_data() -> None:
    err = BudgetExceeded("out of tokens", limit="tokens", partial={"a": 1}, trace_id="t1")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, BudgetExceeded)
    assert back.partial == {"a": 1} and back.trace_id == "t1" and back.limit == "tokens"
    assert back.to_dict()["code"] == "budget_exceeded"
    assert back.to_dict()["partial"] == {"a": 1}
