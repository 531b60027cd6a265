"""A write that refreshes an observation embeds only what is new in it: observations are embedded
a statement at a time without their citations or conflict lines, unchanged statements keep their
vectors, and the contradiction check remembers pairs it already compared."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from holdfast.memory import MemoryConfig, MemoryStore
from holdfast.memory import contradict as contradict_mod
from holdfast.memory.indexer import CHUNK_CACHE, embed_chunks
from holdfast.memory.items import Kind
from holdfast.memory.text import chunk_text


class CountingEmbedder:
    """A deterministic hashed bag of words (32 dimensions) that records every text it embeds."""

    dim = 32

    def __init__(self, name: str = "test:counting") -> None:
        self.name = name
        self.seen: list[str] = []

    def embed(self, texts: list[str]) -> Any:
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                h = hashlib.blake2b(word.encode(), digest_size=4).digest()
                out[row, h[0] % self.dim] += 1.0 if h[1] % 2 else -1.0
            norm = float(np.linalg.norm(out[row])) or 1.0
            out[row] /= norm
        return out


@pytest.fixture
def counted(holdfast_home: Path) -> Iterator[tuple[MemoryStore, CountingEmbedder]]:
    emb = CountingEmbedder()
    store = MemoryStore(MemoryConfig(), embedder=emb)
    yield store, emb
    store.close()


def _observation(store: MemoryStore, namespace: str = "default") -> Any:
    from holdfast.memory.observations import observations_of

    hits = observations_of(store, namespace)
    assert len(hits) == 1, hits
    return hits[0]


def test_a_rewritten_observation_embeds_only_its_new_statements(
    counted: tuple[MemoryStore, CountingEmbedder],
) -> None:
    store, emb = counted
    for i in range(12):
        store.add(f"Fact {i}: the deploy key {i} rotates on Fridays", dedup=False)
    emb.seen.clear()
    store.add("Fact 12: the deploy key 12 rotates on Fridays", dedup=False)
    # the fact itself; its line in the observation is the same text, so that is not embedded
    # again; the observation's header changed (its count); nothing else is new
    assert emb.seen.count("Fact 12: the deploy key 12 rotates on Fridays") == 1
    assert not [t for t in emb.seen if t.startswith("Fact ") and "12" not in t], emb.seen
    assert len(emb.seen) <= 3, emb.seen
    obs = _observation(store)
    assert "Fact 12" in obs.text and "[m-" in obs.text  # the file keeps its citations
    hits = store.search("when does deploy key 12 rotate")
    assert hits and "Fact 12" in hits[0].item.text


def test_observation_chunks_leave_out_citations_and_conflict_lines(
    counted: tuple[MemoryStore, CountingEmbedder],
) -> None:
    store, _ = counted
    text = (
        "What memory holds about Alice (3 items, 2026-01-01):\n"
        "- Alice lives in Lyon [m-1a2b3c4d5e6-abcdef12]\n"
        "- Alice lives in Paris (belief, confidence 0.5) [m-1a2b3c4d5e7-abcdef13] [m-x9]\n"
        "- conflict: [m-1a2b3c4d5e6-abcdef12] and [m-1a2b3c4d5e7-abcdef13] disagree (x)\n"
    )
    item, _ = store.prepare(text, kind=Kind.OBSERVATION)
    chunks = embed_chunks(item, 150)
    assert chunks == [
        "What memory holds about Alice (3 items, 2026-01-01):",
        "Alice lives in Lyon",
        "Alice lives in Paris (belief, confidence 0.5)",
    ]
    fact, _ = store.prepare("Alice lives in Lyon")
    assert embed_chunks(fact, 150) == ["Alice lives in Lyon"]
    long, _ = store.prepare(" ".join(["word"] * 400))
    # an observation of more lines than a rule-built one is cut into word windows instead, so
    # a model-written or hand-written one of 10,000 one-word lines costs what its words cost
    many, _ = store.prepare("\n".join(f"- w{n}" for n in range(10_000)), kind=Kind.OBSERVATION)
    assert len(embed_chunks(many, 150)) == len(chunk_text(many.text, max_words=150)) < 200
    # other kinds keep the overlapping windows
    assert embed_chunks(long, 150) == chunk_text(long.text, max_words=150)
    assert len(embed_chunks(long, 150)) == 4


def test_the_chunk_cache_is_bounded_and_kept_per_embedder(
    counted: tuple[MemoryStore, CountingEmbedder],
) -> None:
    store, emb = counted
    item = store.add("Bob owns the billing service").item
    key = f"{emb.name}\x00Bob owns the billing service"
    assert key in store.indexer.chunk_cache
    other = CountingEmbedder("test:other")
    store.indexer.embedder = other
    store.indexer.vectors_for([item])
    assert "Bob owns the billing service" in other.seen  # never another embedder's vector
    store.indexer.embedder = emb
    for n in range(CHUNK_CACHE + 10):
        store.indexer.chunk_cache[f"x\x00{n}"] = b""
    store.indexer.vectors_for([item])
    assert len(store.indexer.chunk_cache) <= CHUNK_CACHE


def test_compare_gives_the_same_verdict_cached_or_not() -> None:
    pairs = [
        ("Alice is allergic to peanuts.", "Alice is not allergic to peanuts."),
        ("The review is on Tuesday.", "The review is on Thursday."),
        ("Chen prefers Go.", "Chen prefers Go."),
        ("x " * 3000, "y " * 3000),  # too long to remember: compared directly
    ]
    for a, b in pairs:
        assert contradict_mod.compare(a, b) == contradict_mod._compare(a, b)
        assert contradict_mod.compare(a, b) == contradict_mod._compare(a, b)
