"""Embedders for real: the local all-MiniLM-L6-v2 model and an OpenAI-compatible endpoint
(the library's own local fake server, through the openai SDK)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from holdfast.errors import ConfigError, RetryableFailure, RuntimeFailure
from holdfast.memory import (
    LocalEmbedder,
    MemoryConfig,
    MemoryStore,
    NoEmbedder,
    OpenAIEmbedder,
    make_embedder,
)
from holdfast.testing import FakeOpenAIServer

pytestmark = pytest.mark.embedding


def test_local_model_gives_unit_vectors_that_rank_paraphrases(
    local_embedder: LocalEmbedder,
) -> None:
    vecs = local_embedder.embed(
        ["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly tax filing deadline."]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2


def test_dense_recall_finds_paraphrases_keywords_miss(dense_store: MemoryStore) -> None:
    target = dense_store.add("Our team adopted a kitten named Miso last spring.", namespace="p")
    dense_store.add("The quarterly budget review is on Friday.", namespace="p")
    dense_store.add("The CI runners were upgraded to larger machines.", namespace="p")
    query = "does anyone have a pet cat?"
    assert target.item.id not in [
        h.item.id for h in dense_store.search(query, namespace="p", arms=["keyword"])
    ]
    hits = dense_store.search(query, namespace="p")
    assert hits[0].item.id == target.item.id and "dense" in hits[0].ranks


def test_near_duplicates_are_caught_but_different_numbers_are_not(dense_store: MemoryStore) -> None:
    first = dense_store.add("The API rate limit is 100 requests per minute.", namespace="p")
    near = dense_store.add("The API rate limit is 100 requests per minute!!", namespace="p")
    assert near.status in ("duplicate", "near_duplicate") and near.duplicate_of == first.item.id
    near2 = dense_store.add("the api's rate limit is 100 requests per minute", namespace="p")
    assert near2.status == "near_duplicate"
    other = dense_store.add("The API rate limit is 500 requests per minute.", namespace="p")
    assert other.status == "added"


def test_long_items_are_chunked_so_the_end_is_findable(dense_store: MemoryStore) -> None:
    filler = " ".join(["The meeting discussed routine scheduling matters for the quarter."] * 60)
    long = dense_store.add(
        filler + " Finally, the lighthouse keeper adopted a parrot.", namespace="p", kind="summary"
    )
    dense_store.add("Routine scheduling for the quarter was discussed.", namespace="p")
    assert dense_store.stats("p")["vectors"] >= 4
    hits = dense_store.search("bird owned by the lighthouse keeper", namespace="p", arms=["dense"])
    assert hits[0].item.id == long.item.id


def test_reindex_restores_vectors(dense_store: MemoryStore) -> None:
    dense_store.add("Paris is the capital of France.", namespace="p")
    dense_store.add("Rust has a borrow checker.", namespace="p")
    dense_store.reindex("p")
    assert dense_store.stats("p")["vectors"] == 2
    path = dense_store.root / "p" / "MEMORY.md"
    path.write_text(path.read_text().replace("Rust has a borrow checker.", "Berlin is in Germany."))
    calls: list[int] = []
    dense_store.reindex("p", progress=calls.append)
    assert calls == [1]
    assert dense_store.search("German city", namespace="p", arms=["dense"])[0].item.text.startswith(
        "Berlin"
    )
    dense_store.reindex("p", reembed=True, progress=calls.append)
    assert calls == [1, 2]
    hits = dense_store.search("French capital city", namespace="p", arms=["dense"])
    assert hits[0].item.text.startswith("Paris")


def test_openai_compatible_endpoint_end_to_end() -> None:
    with FakeOpenAIServer(embedding_dim=32) as server:
        emb = OpenAIEmbedder("fake-embed", base_url=server.base_url, api_key="k", batch_size=2)
        vecs = emb.embed(["alpha beta", "gamma", "alpha beta"])
        assert vecs.shape == (3, 32) and emb.dim == 32
        assert np.allclose(vecs[0], vecs[2])
        assert [len(r["input"]) for r in server.requests] == [2, 1]
        store = MemoryStore(MemoryConfig(), embedder=emb)
        a = store.add("alpha beta gamma delta", namespace="p")
        store.add("unrelated words entirely", namespace="p")
        assert store.search("delta gamma", namespace="p", arms=["dense"])[0].item.id == a.item.id
        store.close()
        url = server.base_url
    with pytest.raises(RetryableFailure):
        OpenAIEmbedder("fake-embed", base_url=url, api_key="k", timeout=2, max_retries=0).embed(
            ["x"]
        )
    with FakeOpenAIServer(api_key="right") as guarded:
        with pytest.raises(RuntimeFailure) as info:
            OpenAIEmbedder(
                "fake-embed", base_url=guarded.base_url, api_key="wrong", max_retries=0
            ).embed(["x"])
        assert not info.value.retryable


def test_none_embedder_warns_and_bad_names_fail(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="holdfast.memory"):
        emb = make_embedder("none")
    assert isinstance(emb, NoEmbedder) and "keyword-only" in caplog.text
    with pytest.raises(ConfigError):
        make_embedder("word2vec")


def test_tombstoned_items_leave_dense_recall(dense_store: MemoryStore) -> None:
    gone = dense_store.add("The office plant is a fiddle-leaf fig.", namespace="p")
    dense_store.delete(gone.item.id, namespace="p")
    assert (
        dense_store.search("what kind of plant is in the office", namespace="p", arms=["dense"])
        == []
    )
