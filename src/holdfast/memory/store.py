"""The knowledge memory: Markdown files as the truth, a hybrid index as the cache.

:class:`MemoryStore` is the one object callers use. A write redacts secrets, resolves time
expressions, links entity names and de-duplicates, then appends a section to the right Markdown
file under the namespace lock and updates the index in the same breath, so it is searchable as
soon as ``add`` returns. No model is called on the write or read path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from holdfast.config import default_db_path, holdfast_home
from holdfast.errors import InvalidInput
from holdfast.memory.embedders import Embedder, make_embedder
from holdfast.memory.entities import extract_names
from holdfast.memory.files import NamespaceDir, check_namespace
from holdfast.memory.indexer import Indexer, SyncReport
from holdfast.memory.items import (
    Evidence,
    Kind,
    MemoryItem,
    Source,
    Status,
    Trust,
    check_text,
    new_id,
    parse_time,
)
from holdfast.memory.maintenance import Maintenance
from holdfast.memory.markdown import parse_file, render_item
from holdfast.memory.recall import RecallSettings
from holdfast.memory.security import redact
from holdfast.memory.text import jaccard, norm_hash, words
from holdfast.memory.timeexpr import resolve_event_time
from holdfast.memory.vectors import VectorCache
from holdfast.store.memory_index import MemoryIndex
from holdfast.store.sqlite import SQLiteDB


@dataclass(frozen=True)
class MemoryConfig:
    """Where memory lives and how it indexes.

    ``root`` defaults to ``<holdfast home>/memory`` and ``db_path`` to the shared store;
    ``context_window`` is how many neighbouring turns of the same session are indexed as
    searchable context of an episode; ``near_duplicate`` is the cosine above which a new item
    that also shares its words and numbers with an existing one is not stored again.
    """

    root: Path | None = None
    db_path: Path | None = None
    embedder: str = "local"
    context_window: int = 2
    near_duplicate: float = 0.95
    redact_secrets: bool = True
    resolve_time: bool = True
    extract_entities: bool = True
    recall: RecallSettings = field(default_factory=RecallSettings)


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a write: the stored item, or the existing one it duplicates."""

    item: MemoryItem
    status: str
    duplicate_of: str | None = None
    redacted: tuple[str, ...] = ()

    @property
    def stored(self) -> bool:
        return self.status in ("added", "updated")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "id": self.item.id,
            "duplicate_of": self.duplicate_of,
            "redacted": list(self.redacted),
            "item": self.item.to_dict(),
        }


class MemoryStore(Maintenance):
    """Add, recall, revise and forget memories in isolated namespaces."""

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        embedder: Embedder | None = None,
        db: SQLiteDB | None = None,
    ) -> None:
        self.config = config or MemoryConfig()
        self.root = Path(self.config.root) if self.config.root else holdfast_home() / "memory"
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = db or SQLiteDB(self.config.db_path or default_db_path())
        self.index = MemoryIndex(self.db)
        self.embedder = embedder or make_embedder(self.config.embedder)
        self.indexer = Indexer(self.index, self.embedder, self.config.context_window)
        self._vectors: VectorCache | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def vectors(self) -> VectorCache:
        if self._vectors is None:
            self._vectors = VectorCache(self.index, self.embedder.dim)
        return self._vectors

    @property
    def pool(self) -> ThreadPoolExecutor:
        """A one-thread pool that runs the keyword query while the query is being embedded
        (SQLite and the embedder both release the GIL, so the two overlap on two cores)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="holdfast-recall")
        return self._pool

    def ns(self, namespace: str) -> NamespaceDir:
        return NamespaceDir(self.root, check_namespace(namespace))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.db.close()

    # ----- writes
    def prepare(
        self,
        text: str,
        *,
        namespace: str = "default",
        kind: Kind | str = Kind.FACT,
        mention_time: datetime | str | None = None,
        event_time: tuple[Any, Any] | None = None,
        entities: Iterable[str] = (),
        source: Source | dict[str, Any] | None = None,
        trust: Trust | str = Trust.AGENT,
        confidence: float | None = None,
        tags: Iterable[str] = (),
        item_id: str | None = None,
    ) -> tuple[MemoryItem, tuple[str, ...]]:
        """Build the item a write would store (redacted, time-resolved, entity-linked)."""
        text = check_text(text)
        found: list[str] = []
        if self.config.redact_secrets:
            text, found = redact(text)
        try:
            kind = Kind(kind)
            trust = Trust(trust)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        mention = parse_time(mention_time) or datetime.now(UTC)
        src = source if isinstance(source, Source) else Source.from_dict(source)
        start = end = None
        if event_time is not None:
            start, end = parse_time(event_time[0]), parse_time(event_time[1])
        elif self.config.resolve_time:
            resolved = resolve_event_time(text, mention)
            if resolved:
                start, end = resolved
        names = [e for e in (n.strip() for n in entities) if e]
        if src.speaker:
            names.append(src.speaker)
        if self.config.extract_entities:
            names.extend(extract_names(text, self.indexer.resolver(self.ns(namespace))))
        uniq: dict[str, str] = {}
        for n in names:
            uniq.setdefault(n.casefold(), n)
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise InvalidInput("confidence must be between 0 and 1")
        if kind is Kind.BELIEF and confidence is None:
            confidence = 0.5
        item = MemoryItem(
            id=item_id or new_id(),
            text=text,
            kind=kind,
            namespace=check_namespace(namespace),
            mention_time=mention,
            event_start=start,
            event_end=end,
            entities=tuple(uniq.values()),
            source=src,
            trust=trust,
            confidence=confidence,
            tags=tuple(tags),
        )
        return item, tuple(found)

    def add(self, text: str, *, dedup: bool = True, **fields: Any) -> WriteResult:
        """Store one memory and index it at once. See :meth:`prepare` for the fields."""
        return self.add_many([(text, fields)], dedup=dedup)[0]

    def add_many(
        self, entries: Sequence[tuple[str, dict[str, Any]]], *, dedup: bool = True
    ) -> list[WriteResult]:
        """Store several memories with one embedding batch, one lock per namespace and one
        fsync per file touched."""
        prepared = [self.prepare(text, **fields) for text, fields in entries]
        vectors = self.indexer.vectors_for([p[0] for p in prepared])
        by_ns: dict[str, list[int]] = {}
        for n, (item, _) in enumerate(prepared):
            by_ns.setdefault(item.namespace, []).append(n)
        out: dict[int, WriteResult] = {}
        for namespace, idxs in by_ns.items():
            ns = self.ns(namespace)
            with ns.lock():
                seen: dict[tuple[Kind, str], MemoryItem] = {}
                fresh: list[int] = []
                for n in idxs:
                    item, found = prepared[n]
                    dup = self._duplicate_of(item, vectors[n]) if dedup else None
                    if dup is None and dedup and item.kind is not Kind.EPISODE:
                        key = (item.kind, norm_hash(item.text))
                        if key in seen:
                            dup = (seen[key], "duplicate")
                        seen.setdefault(key, item)
                    if dup is not None:
                        out[n] = WriteResult(dup[0], dup[1], dup[0].id, found)
                        continue
                    fresh.append(n)
                    out[n] = WriteResult(item, "added", None, found)
                self._append(ns, [(prepared[n][0], vectors[n]) for n in fresh])
        return [out[n] for n in range(len(prepared))]

    def _append(self, ns: NamespaceDir, entries: list[tuple[MemoryItem, list[bytes]]]) -> None:
        """Write items to their files (trust ledger first) and index them in one transaction."""
        if not entries:
            return
        ns.record_trust([(item.id, item.trust) for item, _ in entries])
        by_file: dict[Path, list[tuple[MemoryItem, list[bytes]]]] = {}
        for item, vecs in entries:
            by_file.setdefault(ns.file_for(item), []).append((item, vecs))
        for path, group in by_file.items():
            rel = ns.rel(path)
            heads, total = ns.append(path, [item for item, _ in group], self._known_lines(ns, path))
            st = path.stat()
            with self.db.transaction() as tx:
                for (item, vecs), line in zip(group, heads, strict=True):
                    self.indexer.write(tx, ns, item, rel, line, vecs)
                self.index.set_file_state(
                    tx, ns.namespace, rel, st.st_size, st.st_mtime_ns, "", total
                )

    def _known_lines(self, ns: NamespaceDir, path: Path) -> tuple[int, int] | None:
        """The indexed (size, lines) of ``path`` if the file is as indexed; a file edited by hand
        since is re-read into the index first, so the append never hides the edit."""
        state = self.index.file_stat(ns.rel(path))
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if state is None or (state[0], state[1]) != (st.st_size, st.st_mtime_ns):
            self.indexer.sync_file(ns, path, SyncReport())
            state = self.index.file_stat(ns.rel(path))
        return (state[0], state[2]) if state and state[2] >= 0 else None

    def _duplicate_of(
        self, item: MemoryItem, vectors: list[bytes]
    ) -> tuple[MemoryItem, str] | None:
        """An existing active item this one repeats: same normalised text, or a near-duplicate."""
        if item.kind is Kind.EPISODE:
            return None
        for row in self.index.by_norm_hash(item.namespace, norm_hash(item.text)):
            old = MemoryItem.from_dict(row.data)
            if old.kind is item.kind and old.active:
                return old, "duplicate"
        if not vectors or self.embedder.dim == 0:
            return None
        import numpy as np

        query = np.frombuffer(vectors[0], dtype=np.float32)
        for rid, score in self.vectors.search(item.namespace, self.embedder.name, query, 3):
            if score < self.config.near_duplicate:
                break
            hit = self.index.get_many([rid]).get(rid)
            if hit is None:
                continue
            old = MemoryItem.from_dict(hit.data)
            if old.kind is item.kind and old.active and _same_claim(old.text, item.text):
                return old, "near_duplicate"
        return None

    # ----- reads
    def get(self, item_id: str, *, namespace: str | None = None) -> MemoryItem:
        """The item with ``item_id`` (raises InvalidInput when unknown or in another namespace)."""
        row = self.index.get(item_id)
        if row is None or (namespace is not None and row.namespace != namespace):
            raise InvalidInput(
                f"no memory item {item_id!r}"
                + (f" in namespace {namespace!r}" if namespace else "")
            )
        return MemoryItem.from_dict(row.data)

    def citation(self, item_id: str) -> str:
        row = self.index.get(item_id)
        return f"{row.path}#{row.line}" if row else ""

    # ----- revisions
    def _rewrite(self, ns: NamespaceDir, item_id: str, new: MemoryItem | None) -> None:
        """Replace (or with None remove) an item's section in its file, then re-index the file."""
        row = self.index.get(item_id)
        if row is None or row.namespace != ns.namespace:
            raise InvalidInput(f"no memory item {item_id!r} in namespace {ns.namespace!r}")
        path = ns.abs(row.path)
        lines = path.read_text("utf-8", errors="replace").split("\n")
        sections, _ = parse_file("\n".join(lines), row.path, ns.namespace)
        sec = next((s for s in sections if s.item.id == item_id), None)
        if sec is None:
            raise InvalidInput(f"item {item_id!r} is no longer in {row.path}; run reindex")
        replacement = render_item(new).rstrip("\n").split("\n") if new else []
        lines[sec.start - 1 : sec.end] = replacement
        text = "\n".join(lines)
        ns.write_atomic(path, text if text.endswith("\n") else text + "\n")
        if new is not None and new.trust != row.data.get("trust"):
            ns.record_trust([(new.id, new.trust)])
        self.indexer.sync_file(ns, path, SyncReport())

    def update(
        self, item_id: str, *, namespace: str = "default", text: str | None = None, **changes: Any
    ) -> MemoryItem:
        """Edit an item in place (same id): new text and/or metadata such as entities or tags."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(item_id, namespace=namespace)
            fields: dict[str, Any] = {}
            if text is not None:
                body = check_text(text)
                fields["text"] = redact(body)[0] if self.config.redact_secrets else body
            for key, value in changes.items():
                if key in ("id", "namespace", "trust"):
                    raise InvalidInput(
                        f"{key} cannot be changed by update"
                        + ("; use set_trust" if key == "trust" else "")
                    )
                fields[key] = value
            new = old.evolve(**fields)
            self._rewrite(ns, item_id, new)
        return new

    def supersede(
        self, old_id: str, text: str, *, namespace: str = "default", **fields: Any
    ) -> WriteResult:
        """Store a new item that replaces ``old_id``: the old one's validity ends, it stays in history."""
        old = self.get(old_id, namespace=namespace)
        item, found = self.prepare(
            text, namespace=namespace, kind=fields.pop("kind", old.kind), **fields
        )
        item = item.evolve(supersedes=(old_id,))
        vectors = self.indexer.vectors_for([item])[0]
        ns = self.ns(namespace)
        with ns.lock():
            self._append(ns, [(item, vectors)])
            ended = old.evolve(valid_to=item.mention_time, superseded_by=item.id)
            self._rewrite(ns, old_id, ended)
        return WriteResult(item, "added", None, found)

    def add_evidence(
        self, belief_id: str, ref: str, *, supports: bool, namespace: str = "default"
    ) -> MemoryItem:
        """Record evidence for or against a belief; its confidence is re-derived from the count."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(belief_id, namespace=namespace)
            if old.kind is not Kind.BELIEF:
                raise InvalidInput(f"{belief_id} is a {old.kind.value}, not a belief")
            evidence = (*old.evidence, Evidence(ref, supports))
            new = old.evolve(evidence=evidence, confidence=belief_confidence(evidence))
            self._rewrite(ns, belief_id, new)
        return new

    def set_trust(
        self, item_id: str, trust: Trust | str, *, namespace: str = "default"
    ) -> MemoryItem:
        """Change an item's trust class (an owner decision: never done automatically)."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(item_id, namespace=namespace)
            new = old.evolve(trust=Trust(trust))
            ns.record_trust([(item_id, new.trust)])
            self.indexer.sync_file(ns, ns.abs(self.index.get(item_id).path), SyncReport())  # type: ignore[union-attr]
        return new

    def promote(self, item_id: str, *, namespace: str = "default") -> MemoryItem:
        """Move an item into curated MEMORY.md as owner-trusted (an explicit owner action)."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(item_id, namespace=namespace)
            new = old.evolve(trust=Trust.OWNER)
            self._rewrite(ns, item_id, None)
            ns.record_trust([(item_id, Trust.OWNER)])
            path = ns.path / "MEMORY.md"
            ns.append(path, [new], self._known_lines(ns, path))
            self.indexer.sync_file(ns, path, SyncReport())
        return new

    def delete(self, item_id: str, *, namespace: str = "default", purge: bool = False) -> None:
        """Tombstone an item (kept in its file, hidden from recall), or with ``purge`` erase it
        from the file, the trust ledger and the index, leaving no copy in the database pages."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(item_id, namespace=namespace)
            if not purge:
                self._rewrite(ns, item_id, old.evolve(status=Status.DELETED))
                return
            self._rewrite(ns, item_id, None)
            ns.purge_trust(item_id)
            conn = self.db.connection()
            conn.execute("PRAGMA secure_delete = ON")
            with self.db.transaction() as tx:
                tx.execute("INSERT INTO memory_fts(memory_fts) VALUES ('optimize')")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
        self.vectors.invalidate()

    def search(self, query: str, **kwargs: Any) -> list[Any]:
        """Recall: see :func:`holdfast.memory.search.search` for the arguments."""
        from holdfast.memory.search import search

        return search(self, query, **kwargs)


def belief_confidence(evidence: Sequence[Evidence]) -> float:
    """Laplace-smoothed share of supporting evidence: no evidence 0.5, 3 for and 1 against 0.67."""
    pro = sum(1 for e in evidence if e.supports)
    con = len(evidence) - pro
    return round((pro + 1) / (pro + con + 2), 3)


def _same_claim(a: str, b: str) -> bool:
    """Near-duplicate text: the same numbers and mostly the same words."""
    wa, wb = words(a), words(b)
    if {w for w in wa if any(c.isdigit() for c in w)} != {
        w for w in wb if any(c.isdigit() for c in w)
    }:
        return False
    return jaccard(set(wa), set(wb)) >= 0.7
