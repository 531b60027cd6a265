"""Fixtures for the control-plane tests: one suite over SQLite and a real PostgreSQL server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_util import open_harness

from holdfast.harness import Harness
from holdfast.testing import FakeClock
from holdfast.testing.postgres import PostgresCluster

_db_names = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "harness.db")
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"t{next(_db_names)}")


@pytest.fixture
def harness(store_url: str) -> Iterator[Harness]:
    h = open_harness(store_url)
    yield h
    h.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked(store_url: str, clock: FakeClock) -> Iterator[Harness]:
    """A harness whose store reads ``clock``: leases and approvals expire when a test says so."""
    h = open_harness(store_url, clock=clock)
    yield h
    h.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws
