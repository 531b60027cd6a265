"""Keeping a memory store healthy and portable: sync with hand edits, full reindex, parse issues,
statistics, entity merges and splits, export and import.

A mixin of :class:`holdfast.memory.store.MemoryStore`, kept apart so the write path reads on its
own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holdfast.errors import InvalidInput
from holdfast.memory.embedders import Embedder
from holdfast.memory.files import NamespaceDir
from holdfast.memory.indexer import Indexer, SyncReport
from holdfast.memory.items import MemoryItem, check_text, new_id
from holdfast.memory.markdown import ParseIssue

if TYPE_CHECKING:
    from holdfast.memory.vectors import VectorCache
    from holdfast.store.memory_index import MemoryIndex
    from holdfast.store.sqlite import SQLiteDB


class Maintenance:
    """Sync, reindex, issues, stats, entities, export and import."""

    root: Path
    db: SQLiteDB
    index: MemoryIndex
    indexer: Indexer
    embedder: Embedder

    @property
    def vectors(self) -> VectorCache:
        raise NotImplementedError

    def ns(self, namespace: str) -> NamespaceDir:
        raise NotImplementedError

    def _append(self, ns: NamespaceDir, entries: list[tuple[MemoryItem, list[bytes]]]) -> None:
        raise NotImplementedError

    def sync(self, namespace: str = "default") -> SyncReport:
        """Pick up hand edits to the namespace's files (cheap when nothing changed)."""
        return self.indexer.sync(self.ns(namespace))

    def reindex(
        self,
        namespace: str = "default",
        *,
        reembed: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> SyncReport:
        """Rebuild the namespace's index from its files.

        Vectors of items whose text is unchanged are carried over (embedding is the slow part);
        ``reembed`` recomputes every vector, for example after changing the embedding model.
        """
        ns = self.ns(namespace)
        with ns.lock():
            kept = {} if reembed else self.index.vectors_by_text(namespace, self.embedder.name)
            with self.db.transaction() as tx:
                self.index.clear_namespace(tx, namespace)
            report = SyncReport()
            ledger = ns.trust_ledger()
            embed = self.indexer.embedder
            self.indexer.embedder = _Deferred(embed)
            try:
                for path in ns.markdown_files():
                    self.indexer.sync_file(ns, path, report, ledger)
            finally:
                self.indexer.embedder = embed
            if kept:
                with self.db.transaction() as tx:
                    self.index.restore_vectors(tx, namespace, self.embedder.name, kept)
        self.indexer.embed_missing(namespace, progress)
        self.vectors.invalidate()
        return report

    def issues(self, namespace: str = "default") -> list[ParseIssue]:
        self.sync(namespace)
        return [ParseIssue(p, line, m) for p, line, m in self.index.issues(namespace)]

    def namespaces(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def stats(self, namespace: str = "default") -> dict[str, Any]:
        self.sync(namespace)
        out = self.index.stats(namespace)
        out["namespace"] = namespace
        out["embedder"] = self.embedder.name
        out["issues"] = len(self.index.issues(namespace))
        db = Path(str(self.db.path))
        out["db_bytes"] = (
            sum(os.path.getsize(p) for p in (db, Path(f"{db}-wal")) if p.exists())
            if str(db) != ":memory:"
            else 0
        )
        return out

    def entities(self, namespace: str = "default") -> dict[str, list[str]]:
        """canonical entity name -> aliases, for the namespace."""
        self.sync(namespace)
        return self.indexer.resolver(self.ns(namespace)).entities()

    def merge_entities(self, names: Sequence[str], *, namespace: str = "default") -> None:
        """Declare that ``names`` are one entity, named after the first."""
        if len(names) < 2:
            raise InvalidInput("merge needs at least two names")
        ns = self.ns(namespace)
        with ns.lock():
            rules = ns.entity_rules()
            rules["merges"].append(list(names))
            ns.save_entity_rules(rules)

    def split_entity(self, alias: str, canonical: str, *, namespace: str = "default") -> None:
        """Stop ``alias`` being linked to ``canonical`` (undoes an automatic or merged link)."""
        ns = self.ns(namespace)
        with ns.lock():
            rules = ns.entity_rules()
            rules["merges"] = [
                [n for n in g if n.casefold() != alias.casefold()] for g in rules["merges"]
            ]
            rules["merges"] = [g for g in rules["merges"] if len(g) >= 2]
            rules["splits"].append([alias, canonical])
            ns.save_entity_rules(rules)

    def export(self, namespace: str = "default") -> list[dict[str, Any]]:
        self.sync(namespace)
        rows = self.index.get_many([r for r in self._rids(namespace)])
        return [rows[r].data for r in sorted(rows)]

    def _rids(self, namespace: str) -> list[int]:
        return [
            int(r[0])
            for r in self.db.connection().execute(
                "SELECT rid FROM memory_items WHERE namespace = ? ORDER BY rid", (namespace,)
            )
        ]

    def import_items(self, records: Iterable[dict[str, Any]], *, namespace: str = "default") -> int:
        """Import exported records into ``namespace``. Items already there are skipped; an id
        taken by another namespace gets a fresh id. Trust is kept as exported."""
        ns = self.ns(namespace)
        fresh: list[MemoryItem] = []
        for record in records:
            item = MemoryItem.from_dict({**record, "namespace": namespace})
            row = self.index.get(item.id)
            if row is not None and row.namespace == namespace:
                continue
            if row is not None:
                item = item.evolve(id=new_id())
            fresh.append(item.evolve(text=check_text(item.text)))
        vectors = self.indexer.vectors_for(fresh)
        with ns.lock():
            self._append(ns, list(zip(fresh, vectors, strict=True)))
        return len(fresh)


class _Deferred:
    """An embedder stand-in that defers vectors so a reindex can embed in large batches later."""

    dim = 0

    def __init__(self, real: Embedder) -> None:
        self.name = real.name

    def embed(self, texts: list[str]) -> Any:
        raise AssertionError("deferred embedder is never called")
