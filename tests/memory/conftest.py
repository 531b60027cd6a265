"""Fixtures for knowledge-memory tests: stores on the per-test Holdfast home, and the real local
embedding model loaded once per test session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from holdfast.memory import Embedder, LocalEmbedder, MemoryConfig, MemoryStore, NoEmbedder


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """all-MiniLM-L6-v2, loaded once for the whole session (about 4 s)."""
    emb = LocalEmbedder()
    emb.embed(["warm up"])
    return emb


@pytest.fixture
def store(holdfast_home: Path) -> Iterator[MemoryStore]:
    """A keyword-only store (no model) in this test's Holdfast home."""
    s = MemoryStore(MemoryConfig(), embedder=NoEmbedder(warn=False))
    yield s
    s.close()


@pytest.fixture
def dense_store(holdfast_home: Path, local_embedder: LocalEmbedder) -> Iterator[MemoryStore]:
    """A store with the real local embedding model."""
    s = MemoryStore(MemoryConfig(), embedder=local_embedder)
    yield s
    s.close()


_databases = itertools.count(1)


def database_store(request: pytest.FixtureRequest, embedder: Embedder) -> MemoryStore:
    """A store whose truth is a fresh database on the session's PostgreSQL cluster."""
    from holdfast.memory import DatabaseMemoryStore
    from holdfast.store import open_url
    from holdfast.testing.postgres import PostgresCluster

    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database(f"memory{next(_databases)}")
    return DatabaseMemoryStore(MemoryConfig(), backend=open_url(url), embedder=embedder)


@pytest.fixture(params=["files", pytest.param("postgres", marks=pytest.mark.postgres)])
def either_store(request: pytest.FixtureRequest, holdfast_home: Path) -> Iterator[MemoryStore]:
    """A keyword-only store of each deployment: Markdown files (embedded) and PostgreSQL."""
    emb = NoEmbedder(warn=False)
    s = MemoryStore(MemoryConfig(), embedder=emb) if request.param == "files" else None
    s = s or database_store(request, emb)
    yield s
    s.close()


def stored_text(store: MemoryStore) -> bytes:
    """Every byte a store keeps: its files (and SQLite index) under the Holdfast home, or every
    row of every memory table in its database."""
    from holdfast.memory import DatabaseMemoryStore
    from holdfast.memory.index_postgres import TABLES

    if isinstance(store, DatabaseMemoryStore):
        backend = store.db_index.backend
        return b"\n".join(
            str(r["row"]).encode()
            for table in TABLES
            for r in backend.query(f"SELECT CAST(t AS text) AS row FROM {table} AS t")
        )
    home = store.root.parent
    return b"\n".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())
