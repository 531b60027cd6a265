"""Fixtures for knowledge-memory tests: stores on the per-test Holdfast home, and the real local
embedding model loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from holdfast.memory import LocalEmbedder, MemoryConfig, MemoryStore, NoEmbedder


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
