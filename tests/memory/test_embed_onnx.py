"""The ONNX Runtime embedder gives sentence-transformers' vectors for the same packaged model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from holdfast.memory import LocalEmbedder, embed_onnx, make_embedder
from holdfast.memory.embed_onnx import TOLERANCE, OnnxEmbedder, cached_model, convert

pytestmark = pytest.mark.skipif(not embed_onnx.available(), reason="onnxruntime not installed")

TEXTS = [
    "The deploy key rotates every Friday",
    "",
    "hello",
    "ünïcødé 日本語のテキスト and emoji 🚀",
    "Alice moved to Berlin in March 2021; she works on the billing service. " * 40,  # > 256 tokens
    "<script>alert(1)</script> \x1b[31m red",
] + [f"item number {i} about topic {i % 7}" for i in range(70)]  # more than one batch of 64


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx-cache")
    convert(cache=path)
    return path


def test_vectors_match_sentence_transformers(cache: Path, local_embedder: LocalEmbedder) -> None:
    onnx = OnnxEmbedder(cache=cache).embed(TEXTS)
    ref = local_embedder.embed(TEXTS)
    assert onnx.shape == ref.shape == (len(TEXTS), 384) and onnx.dtype == np.float32
    assert float(np.abs(onnx - ref).max()) <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    # and so the same ranking for a query over the texts
    q_onnx = OnnxEmbedder(cache=cache).embed(["where does Alice live"])[0]
    q_ref = local_embedder.embed(["where does Alice live"])[0]
    assert list(np.argsort(-(onnx @ q_onnx))[:10]) == list(np.argsort(-(ref @ q_ref))[:10])
    assert OnnxEmbedder.name == LocalEmbedder.name and OnnxEmbedder.dim == LocalEmbedder.dim


def test_the_converted_model_is_found_only_for_the_same_weights(
    cache: Path, tmp_path: Path
) -> None:
    found = cached_model(cache=cache)
    assert found is not None and found.parent == cache and found.suffix == ".onnx"
    manifest = cache / "all-MiniLM-L6-v2.json"
    meta = json.loads(manifest.read_text())
    try:
        # other weights at the same path (size and hash differ): not trusted
        manifest.write_text(
            json.dumps(meta | {"weights": {"size": 1, "mtime_ns": 1}, "sha256": "0" * 64})
        )
        assert cached_model(cache=cache) is None
        # a reinstall of the same bytes (only the time differs): still the same model
        manifest.write_text(json.dumps(meta | {"weights": {"size": 1, "mtime_ns": 1}}))
        assert cached_model(cache=cache) == found
    finally:
        manifest.write_text(json.dumps(meta))
    assert cached_model(cache=tmp_path) is None  # an empty cache


def test_local_means_onnx_when_it_is_installed() -> None:
    assert isinstance(make_embedder("local"), OnnxEmbedder)
    assert isinstance(make_embedder("local:onnx"), OnnxEmbedder)
    assert isinstance(make_embedder("local:torch"), LocalEmbedder)
