"""Fixtures for the agent tests that need a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from holdfast.testing.postgres import MISSING, PostgresCluster, find_bin_dir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the agent tests (started on first use)."""
    if find_bin_dir() is None:
        pytest.skip(MISSING)
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.destroy()
