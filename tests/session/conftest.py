"""Fixtures for the session tests: the same suite over SQLite and a real PostgreSQL server."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from holdfast.session import SQLSessionStore, open_session_store
from holdfast.testing.postgres import PostgresCluster

_db_names = itertools.count(1)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

OpenStore = Callable[[], SQLSessionStore]


@pytest.fixture(params=BACKENDS)
def session_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty session database on each backend (a SQLite path or a PostgreSQL URL)."""
    if request.param == "sqlite":
        return str(tmp_path / "h.db")
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"s{next(_db_names)}")


@pytest.fixture
def open_store(session_url: str) -> Iterator[OpenStore]:
    """Opens another store on the test's database (a second worker, a reopened one)."""
    opened: list[SQLSessionStore] = []

    def opener() -> SQLSessionStore:
        store = open_session_store(session_url)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()
