"""The knowledge-memory index behind one small interface.

The index is a rebuildable cache of the Markdown memory files: one row per item (with its JSON),
a keyword index (item text, neighbouring-turn context, entity names), one row per embedded chunk
with its float32 vector, entity names, links between items (evidence, supersedes), and the
stat/hash of each indexed file so that hand edits are found and re-read incrementally.

Items are keyed by ``(namespace, id)``: a namespace folder copied by hand indexes its own copy
and never takes over the original's rows; an id found in two namespaces is reported
(:meth:`MemoryIndex.shared_ids`).

:class:`MemoryIndex` is what the memory layer calls; every SQL statement lives in one backend
module (:mod:`holdfast.memory.index_sqlite` today), so another database is one more module that
implements these methods. ``Tx`` is the backend's transaction handle: callers get one from
:meth:`MemoryIndex.transaction` and pass it back to the writing methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from holdfast.memory.fusion import CandidateInfo

Tx = Any
"""A backend transaction handle (a ``sqlite3.Connection`` inside ``BEGIN IMMEDIATE`` today)."""

Times = tuple[float, float | None, float | None, float | None]
"""(mention, event start, event end, valid to) as epoch seconds."""

Meta = tuple[float, float | None, float | None, float | None, str]
"""(mention, event start, event end, valid to, trust) of an active item."""


# Active items whose event range (their mention time when they have none) meets [lo, hi], or
# with ``mentioned``, whose mention time falls in it; newest first. One text for both dialects.
IN_TIME_RANGE_SQL = (
    "SELECT rid FROM memory_items WHERE namespace = ? AND status = 'active' "
    "AND ((COALESCE(event_end, event_start, mention_time) >= ? "
    "AND COALESCE(event_start, mention_time) <= ?) "
    "OR (? AND mention_time >= ? AND mention_time <= ?)) "
    "ORDER BY mention_time DESC LIMIT ?"
)


def in_time_range_params(
    namespace: str, lo: float | None, hi: float | None, limit: int, mentioned: bool
) -> tuple[Any, ...]:
    """The parameters of :data:`IN_TIME_RANGE_SQL` (an open end is unbounded)."""
    lo_v = lo if lo is not None else -1e18
    hi_v = hi if hi is not None else 1e18
    return (namespace, lo_v, hi_v, mentioned, lo_v, hi_v, limit)


@dataclass(frozen=True)
class ItemRow:
    """What the index stores about one item (enough to rebuild the item from ``data``)."""

    rid: int
    id: str
    namespace: str
    path: str
    line: int
    content_hash: str
    data: dict[str, Any]


@dataclass(frozen=True)
class SharedId:
    """An item id that appears in this namespace and in another one."""

    id: str
    path: str
    line: int
    other_namespace: str
    other_path: str
    other_line: int


@dataclass(frozen=True)
class Link:
    """One reference from an item to another: ``relation`` is ``+`` (supports), ``-``
    (contradicts) or ``supersedes``."""

    ref: str
    relation: str


class MemoryIndex(ABC):
    """Every read and write the memory layer makes to its index."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction: committed on success, rolled back on error."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the index lives (a file path), for statistics and messages."""

    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes the index takes on disk (0 when it has no file)."""

    def citation(self, row: ItemRow) -> str:
        """Where a person finds the item: ``path#line`` in its Markdown file."""
        return f"{row.path}#{row.line}"

    # ----- items
    @abstractmethod
    def upsert_item(
        self,
        tx: Tx,
        *,
        data: dict[str, Any],
        norm_hash: str,
        loose_hash: str,
        content_hash: str,
        path: str,
        line: int,
        times: Times,
        body: str,
        entities_text: str,
        links: Sequence[Link],
    ) -> tuple[int, bool]:
        """Insert or replace the item ``(data["namespace"], data["id"])``; returns its row id
        and whether it needs vectors (kept when only metadata changed)."""

    @abstractmethod
    def set_location(self, tx: Tx, namespace: str, item_id: str, path: str, line: int) -> None: ...

    @abstractmethod
    def set_context(self, tx: Tx, rid: int, context: str) -> None: ...

    @abstractmethod
    def delete_items(self, tx: Tx, namespace: str, rids: Sequence[int]) -> None: ...

    @abstractmethod
    def add_chunks(
        self, tx: Tx, namespace: str, embedder: str, rows: Iterable[tuple[int, int, bytes]]
    ) -> None:
        """Store (rid, seq, float32 vector bytes) rows for ``embedder``."""

    @abstractmethod
    def set_entities(self, tx: Tx, rid: int, namespace: str, names: Iterable[str]) -> None: ...

    @abstractmethod
    def entity_state(self, namespace: str) -> int: ...

    @abstractmethod
    def entity_names(self, namespace: str) -> list[str]: ...

    # ----- reads
    @abstractmethod
    def get(self, namespace: str, item_id: str) -> ItemRow | None: ...

    @abstractmethod
    def find(self, item_id: str) -> list[ItemRow]:
        """Rows with ``item_id`` in any namespace."""

    @abstractmethod
    def get_many(self, rids: Sequence[int]) -> dict[int, ItemRow]: ...

    @abstractmethod
    def by_hash(
        self, namespace: str, *, norm: str | None = None, loose: str | None = None
    ) -> list[ItemRow]:
        """Active items with this normalised-text hash or this loose (near-duplicate) hash."""

    @abstractmethod
    def items_in_path(self, path: str) -> dict[str, tuple[int, str]]:
        """item id -> (rid, content hash) of the items indexed from ``path``."""

    @abstractmethod
    def rids(self, namespace: str, kinds: Sequence[str] | None = None) -> list[int]:
        """Row ids of a namespace (optionally only these kinds), oldest first."""

    @abstractmethod
    def linking(self, namespace: str, refs: Sequence[str]) -> list[int]:
        """Row ids of items that cite any of ``refs`` (evidence or supersedes)."""

    @abstractmethod
    def session_neighbours(
        self, namespace: str, session: str, turn: int, width: int
    ) -> list[tuple[int, int, str]]:
        """(rid, turn, searchable text) of active items in ``session`` within ``width`` turns."""

    @abstractmethod
    def keyword(
        self, namespace: str, terms: Sequence[str], limit: int, weights: tuple[float, float, float]
    ) -> list[tuple[int, float]]:
        """(rid, score) ranked by BM25 (best first, higher is better) for any of ``terms``."""

    @abstractmethod
    def doc_freqs(self, namespace: str, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        """(items in the namespace, items matching each term)."""

    @abstractmethod
    def entity_items(self, namespace: str, names: Sequence[str], limit: int) -> list[int]: ...

    def candidate_info(self, rids: Sequence[int]) -> dict[int, CandidateInfo]:
        """Text, speaker, session and whether an event time was resolved, per row id (what
        the feature fusion reads)."""
        out: dict[int, CandidateInfo] = {}
        for rid, row in self.get_many(rids).items():
            src = row.data.get("source") or {}
            out[rid] = CandidateInfo(
                row.data.get("text", ""),
                src.get("speaker"),
                src.get("session"),
                row.data.get("event_start") is not None,
            )
        return out

    # The next three have portable defaults built on the methods above; a backend may answer
    # them faster in its own query language.
    def has_kind(self, namespace: str, kind: str) -> bool:
        """Whether the namespace holds any active item of ``kind``."""
        return any(
            row.data.get("status") == "active"
            for row in self.get_many(self.rids(namespace, [kind])).values()
        )

    def claims_like(
        self, namespace: str, terms: Sequence[str], kinds: Sequence[str], limit: int
    ) -> list[int]:
        """Active, still valid items of ``kinds`` matching any of ``terms``, best BM25 first."""
        ranked = [rid for rid, _ in self.keyword(namespace, terms, limit * 20, (1.0, 0.0, 0.5))]
        return self._of_kinds(ranked, kinds)[:limit]

    def entity_items_of_kinds(
        self, namespace: str, names: Sequence[str], kinds: Sequence[str], limit: int
    ) -> list[int]:
        """Active, still valid items of ``kinds`` naming any of ``names``."""
        return self._of_kinds(self.entity_items(namespace, names, limit * 20), kinds)[:limit]

    def _of_kinds(self, rids: Sequence[int], kinds: Sequence[str]) -> list[int]:
        rows = self.get_many(rids)
        keep = set(kinds)
        return [
            rid
            for rid in rids
            if rid in rows
            and rows[rid].data.get("kind") in keep
            and rows[rid].data.get("status") == "active"
            and not rows[rid].data.get("valid_to")
        ]

    @abstractmethod
    def active_meta(self, namespace: str, rids: Sequence[int]) -> dict[int, Meta]: ...

    @abstractmethod
    def in_time_range(
        self,
        namespace: str,
        lo: float | None,
        hi: float | None,
        limit: int,
        *,
        mentioned: bool = False,
    ) -> list[int]: ...

    # ----- vectors
    @abstractmethod
    def vec_state(self, namespace: str) -> tuple[int, int]: ...

    @abstractmethod
    def chunks_after(
        self, namespace: str, embedder: str, after: int
    ) -> list[tuple[int, int, bytes]]: ...

    @abstractmethod
    def vectors_by_text(
        self, namespace: str, embedder: str
    ) -> dict[tuple[str, str], list[bytes]]: ...

    @abstractmethod
    def restore_vectors(
        self, tx: Tx, namespace: str, embedder: str, kept: dict[tuple[str, str], list[bytes]]
    ) -> int: ...

    @abstractmethod
    def rids_missing_vectors(self, namespace: str, embedder: str) -> list[int]: ...

    # ----- files and issues
    def change_token(self) -> object | None:
        """A value that changes whenever any item of the index is written or removed, or None
        when the backend keeps none (then every search compares every file with the index)."""
        return None

    @abstractmethod
    def file_state(self, namespace: str) -> dict[str, tuple[int, int, str]]: ...

    @abstractmethod
    def file_stat(self, path: str) -> tuple[int, int, int] | None: ...

    @abstractmethod
    def set_file_state(
        self, tx: Tx, namespace: str, path: str, size: int, mtime_ns: int, sha: str, lines: int = -1
    ) -> None: ...

    @abstractmethod
    def forget_file(self, tx: Tx, path: str) -> None: ...

    @abstractmethod
    def set_issues(
        self, tx: Tx, namespace: str, path: str, issues: Iterable[tuple[int, str]]
    ) -> None: ...

    @abstractmethod
    def issues(self, namespace: str) -> list[tuple[str, int, str]]: ...

    @abstractmethod
    def shared_ids(self, namespace: str) -> list[SharedId]:
        """Ids of ``namespace`` that another namespace also holds."""

    @abstractmethod
    def clear_namespace(self, tx: Tx, namespace: str) -> None: ...

    @abstractmethod
    def stats(self, namespace: str) -> dict[str, Any]: ...

    # ----- erasure
    @abstractmethod
    def erase(self) -> AbstractContextManager[None]:
        """A context in which deletions overwrite the deleted bytes; on exit, the keyword index
        is compacted and every earlier copy of a page is removed from disk."""
