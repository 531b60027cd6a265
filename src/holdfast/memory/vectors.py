"""Exact dense search over an in-process NumPy matrix, kept in step with the index.

This Python's ``sqlite3`` cannot load extensions (no sqlite-vec), and an exact float32 matrix
product over 100,000 x 384 vectors takes a few milliseconds on two cores (see
docs/bench/memory.md), so exact search is the embedded default. The matrix is loaded from the
index once, then extended with only the new chunks; any deletion (seen through the index's
per-namespace delete counter, also from other processes) triggers a full reload. The matrix
grows by doubling, so a write followed by a search does not copy it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from holdfast.memory.index import MemoryIndex


@dataclass
class _Matrix:
    vectors: Any = None
    rids: Any = None
    size: int = 0
    last_chunk: int = 0
    version: int = -1
    deletes: int = -1
    pending: list[tuple[int, int, bytes]] = field(default_factory=list)


class VectorCache:
    """One matrix per (namespace, embedder)."""

    def __init__(self, index: MemoryIndex, dim: int) -> None:
        self.index = index
        self.dim = dim
        self._mats: dict[tuple[str, str], _Matrix] = {}
        self._lock = threading.Lock()

    def _refresh(self, namespace: str, embedder: str) -> _Matrix:
        import numpy as np

        key = (namespace, embedder)
        mat = self._mats.setdefault(key, _Matrix())
        version, deletes = self.index.vec_state(namespace)
        if version == mat.version and deletes == mat.deletes:
            return mat
        if deletes != mat.deletes:
            mat = _Matrix()
            self._mats[key] = mat
        rows = self.index.chunks_after(namespace, embedder, mat.last_chunk)
        if rows:
            new_vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(
                len(rows), self.dim
            )
            new_rids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
            need = mat.size + len(rows)
            if mat.vectors is None or need > len(mat.vectors):
                capacity = max(need, 2 * (len(mat.vectors) if mat.vectors is not None else 0), 1024)
                grown = np.empty((capacity, self.dim), dtype=np.float32)
                grown_rids = np.empty(capacity, dtype=np.int64)
                if mat.vectors is not None:
                    grown[: mat.size] = mat.vectors[: mat.size]
                    grown_rids[: mat.size] = mat.rids[: mat.size]
                mat.vectors, mat.rids = grown, grown_rids
            mat.vectors[mat.size : need] = new_vecs
            mat.rids[mat.size : need] = new_rids
            mat.size = need
            mat.last_chunk = rows[-1][0]
        mat.version, mat.deletes = version, deletes
        return mat

    def search(
        self, namespace: str, embedder: str, query: Any, limit: int
    ) -> list[tuple[int, float]]:
        """(rid, cosine) best first; an item with several chunks counts with its best chunk."""
        import numpy as np

        with self._lock:
            mat = self._refresh(namespace, embedder)
            if mat.vectors is None or mat.size == 0:
                return []
            vectors, rids = mat.vectors[: mat.size], mat.rids[: mat.size]
        # einsum's own single-threaded loop, not BLAS: the product is memory-bound, and BLAS's
        # threads took twice the CPU for a slower answer on two shared cores (100,000 x 384:
        # 17 ms and 25 ms of CPU against 7 ms and 9 ms), competing with the keyword arm.
        scores = np.einsum("ij,j->i", vectors, np.asarray(query, dtype=np.float32))
        k = min(len(scores), limit * 3)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top])]
        out: list[tuple[int, float]] = []
        seen: set[int] = set()
        for i in top:
            rid = int(rids[i])
            if rid in seen:
                continue
            seen.add(rid)
            out.append((rid, float(scores[i])))
            if len(out) >= limit:
                break
        return out

    def invalidate(self) -> None:
        with self._lock:
            self._mats.clear()
