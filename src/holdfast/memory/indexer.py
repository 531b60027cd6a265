"""Keeps the index in step with the Markdown files: item rows, keyword text, neighbouring-turn
context, entity names, links and chunk vectors, updated incrementally by content hash.

Trust comes from the namespace's ledger only. A section with no ledger record (one added to a
file by hand, or forged) is indexed as ``untrusted`` and reported, never as ``owner``: the owner
vouches for it explicitly (``holdfast memory trust ID owner`` or ``promote``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holdfast.memory.embedders import Embedder
from holdfast.memory.entities import EntityResolver
from holdfast.memory.files import NamespaceDir, file_digest
from holdfast.memory.index import Link, MemoryIndex, Tx
from holdfast.memory.items import Kind, MemoryItem, Trust
from holdfast.memory.markdown import ParseIssue, Section, parse_file
from holdfast.memory.observations import statements
from holdfast.memory.text import chunk_text, loose_hash, norm_hash


@dataclass
class SyncReport:
    """What a sync or reindex did."""

    files_read: int = 0
    items_indexed: int = 0
    items_removed: int = 0
    issues: list[ParseIssue] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files_read": self.files_read,
            "items_indexed": self.items_indexed,
            "items_removed": self.items_removed,
            "issues": [i.to_dict() for i in self.issues],
        }


def index_body(item: MemoryItem) -> str:
    """The text that is searched for an item: the speaker (if any) and the prose."""
    return f"{item.source.speaker}: {item.text}" if item.source.speaker else item.text


CHUNK_CACHE = 8192
"""Chunk vectors an indexer keeps by text (about 1.5 KB each at 384 dimensions)."""
OBSERVATION_LINES_MAX = 64
"""Lines an observation is embedded by, one chunk each, at most (a rule-built one has 27)."""


def embed_chunks(item: MemoryItem, max_words: int) -> list[str]:
    """The texts embedded for an item, each a dense-search chunk of it.

    Most items are embedded as overlapping word windows of their body. An observation is a list
    of statements about one subject, rewritten whenever one arrives, so it is embedded a
    statement at a time (:func:`holdfast.memory.observations.statements`: without citations,
    the same text its own item was embedded as, and without conflict lines). Unchanged
    statements then keep their vectors across rewrites (see :attr:`Indexer.chunk_cache`), and a
    rewrite embeds only what is new. The keyword index still holds the whole text.
    """
    windows = chunk_text(index_body(item), max_words=max_words)
    if item.kind is not Kind.OBSERVATION:
        return windows
    out = [c for line in statements(item.text) for c in chunk_text(line, max_words=max_words)]
    if not out or len(out) > OBSERVATION_LINES_MAX:
        # an observation written by a model or by hand may have any number of lines: past the
        # rule-built size, the windows bound the embedding work by its words, not its lines
        return windows
    return out


class Indexer:
    """Writes items of one store into the index; shared by writes, sync and reindex."""

    def __init__(self, index: MemoryIndex, embedder: Embedder, context_window: int) -> None:
        self.index = index
        self.embedder = embedder
        self.context_window = context_window
        self._resolvers: dict[str, tuple[int, float, EntityResolver]] = {}
        # per namespace: the files' stats and the index's change token when they last agreed
        self._clean: dict[str, tuple[dict[str, tuple[int, int] | None], object]] = {}
        # chunk text -> vector bytes, most recently used last: a rewritten observation (or any
        # text embedded again) reuses what this embedder already computed
        self.chunk_cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ----- entities
    def resolver(self, ns: NamespaceDir) -> EntityResolver:
        version = self.index.entity_state(ns.namespace)
        mtime = ns.rules_version()
        cached = self._resolvers.get(ns.namespace)
        if cached and cached[0] == version and cached[1] == mtime:
            return cached[2]
        rules = ns.entity_rules()
        res = EntityResolver(
            self.index.entity_names(ns.namespace), rules["merges"], rules["splits"]
        )
        self._resolvers[ns.namespace] = (version, mtime, res)
        return res

    # ----- embedding
    def vectors_for(self, items: Sequence[MemoryItem]) -> list[list[bytes]]:
        """Float32 vector bytes per chunk, per item (empty lists with no embedder)."""
        if self.embedder.dim == 0 or not items:
            return [[] for _ in items]
        max_words = int(getattr(self.embedder, "max_words", 150))
        # cache keys carry the embedder's name: an embedder swapped in never reads another's
        tag = f"{self.embedder.name}\x00"
        keys = [[tag + t for t in embed_chunks(i, max_words)] for i in items]
        cache = self.chunk_cache
        with self._cache_lock:
            known = {k: cache[k] for ks in keys for k in ks if k in cache}
        todo = list(dict.fromkeys(k for ks in keys for k in ks if k not in known))
        if todo:
            mat = self.embedder.embed([k[len(tag) :] for k in todo])
            known.update((k, mat[row].tobytes()) for row, k in enumerate(todo))
        with self._cache_lock:
            for k, v in known.items():
                cache[k] = v
                cache.move_to_end(k)
            while len(cache) > CHUNK_CACHE:
                cache.popitem(last=False)
        return [[known[k] for k in ks] for ks in keys]

    # ----- writing rows
    def write(
        self,
        tx: Tx,
        ns: NamespaceDir,
        item: MemoryItem,
        path: str,
        line: int,
        vectors: list[bytes] | None,
    ) -> tuple[int, bool]:
        """Upsert one item (vectors: precomputed, or None to leave for :meth:`embed_missing`)."""
        data = item.to_dict()
        names = sorted(set(item.entities))
        links = [Link(e.ref, "+" if e.supports else "-") for e in item.evidence]
        links += [Link(ref, "supersedes") for ref in item.supersedes]
        rid, needs_vectors = self.index.upsert_item(
            tx,
            data=data,
            norm_hash=norm_hash(item.text),
            loose_hash=loose_hash(item.text),
            content_hash=item.content_hash,
            path=path,
            line=line,
            times=(
                item.mention_time.timestamp(),
                item.event_start.timestamp() if item.event_start else None,
                item.event_end.timestamp() if item.event_end else None,
                item.valid_to.timestamp() if item.valid_to else None,
            ),
            body=index_body(item),
            entities_text=" ".join(names),
            links=links,
        )
        self.index.set_entities(tx, rid, ns.namespace, names)
        if needs_vectors and vectors:
            self.index.add_chunks(
                tx, ns.namespace, self.embedder.name, [(rid, i, v) for i, v in enumerate(vectors)]
            )
            needs_vectors = False
        if item.kind is Kind.EPISODE and item.source.session and item.source.turn is not None:
            self.refresh_context(tx, ns.namespace, item.source.session, item.source.turn)
        return rid, needs_vectors

    def refresh_context(self, tx: Tx, namespace: str, session: str, turn: int) -> None:
        """Re-derive the context column of the turns around ``turn`` (their neighbours' text)."""
        w = self.context_window
        if w <= 0:
            return
        rows = self.index.session_neighbours(namespace, session, turn, 2 * w)
        by_turn = {t: (rid, text) for rid, t, text in rows}
        for rid, t, _ in rows:
            if abs(t - turn) > w:
                continue
            ctx = [by_turn[u][1] for u in range(t - w, t + w + 1) if u != t and u in by_turn]
            self.index.set_context(tx, rid, " ".join(ctx))

    def embed_missing(self, namespace: str, progress: Callable[[int], None] | None = None) -> int:
        """Embed every item of ``namespace`` that has no vector yet, in batches."""
        if self.embedder.dim == 0:
            return 0
        rids = self.index.rids_missing_vectors(namespace, self.embedder.name)
        done = 0
        for start in range(0, len(rids), 256):
            part = rids[start : start + 256]
            rows = self.index.get_many(part)
            items = [MemoryItem.from_dict(rows[r].data) for r in part if r in rows]
            vecs = self.vectors_for(items)
            with self.index.transaction() as tx:
                for rid, v in zip([r for r in part if r in rows], vecs, strict=True):
                    self.index.add_chunks(
                        tx, namespace, self.embedder.name, [(rid, i, b) for i, b in enumerate(v)]
                    )
            done += len(part)
            if progress:
                progress(len(part))
        return done

    # ----- files
    def sync_file(
        self,
        ns: NamespaceDir,
        path: Path,
        report: SyncReport,
        ledger: dict[str, Trust] | None = None,
    ) -> None:
        """Re-read one file and bring its items in the index up to date (call under the lock)."""
        rel = ns.rel(path)
        try:
            raw = path.read_bytes()
            st = path.stat()
        except FileNotFoundError:
            self.forget_file(ns, rel, report)
            return
        report.files_read += 1
        issues: list[ParseIssue] = []
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = raw[: exc.start].count(b"\n") + 1
            issues.append(
                ParseIssue(
                    rel, bad_line, f"not valid UTF-8 (byte {exc.start}); undecodable bytes replaced"
                )
            )
            text = raw.decode("utf-8", errors="replace")
        sections, parse_issues = parse_file(text, rel, ns.namespace)
        issues.extend(parse_issues)
        ledger = ns.trust_ledger() if ledger is None else ledger
        existing = self.index.items_in_path(rel)
        keep: list[Section] = []
        seen: set[str] = set()
        for sec in sections:
            item = sec.item
            if item.id in seen:
                issues.append(
                    ParseIssue(
                        rel,
                        sec.start,
                        f"duplicate id {item.id} in the same file; this copy is ignored",
                    )
                )
                continue
            other = self.index.get(ns.namespace, item.id)
            if other is not None and other.path != rel and ns.abs(other.path).exists():
                issues.append(
                    ParseIssue(
                        rel,
                        sec.start,
                        f"duplicate id {item.id}, also at {other.path}#{other.line}; "
                        "this copy is ignored",
                    )
                )
                continue
            seen.add(item.id)
            keep.append(sec)
        changed: list[tuple[MemoryItem, int]] = []
        with self.index.transaction() as tx:
            for sec in keep:
                trust = ledger.get(sec.item.id)
                if trust is None:
                    trust = Trust.UNTRUSTED
                    issues.append(
                        ParseIssue(
                            rel,
                            sec.start,
                            f"item {sec.item.id} has no trust record (added by hand?), so it "
                            f"counts as untrusted; vouch for it with `holdfast memory trust "
                            f"{sec.item.id} owner -n {ns.namespace}` or promote it",
                        )
                    )
                item = sec.item.evolve(trust=trust)
                old = existing.get(item.id)
                if old is not None and old[1] == item.content_hash:
                    self.index.set_location(tx, ns.namespace, item.id, rel, sec.start)
                    continue
                changed.append((item, sec.start))
            gone = [rid for iid, (rid, _) in existing.items() if iid not in seen]
            self.index.delete_items(tx, ns.namespace, gone)
            report.items_removed += len(gone)
        vectors = self.vectors_for([c[0] for c in changed])
        with self.index.transaction() as tx:
            for (item, line), vecs in zip(changed, vectors, strict=True):
                self.write(tx, ns, item, rel, line, vecs)
            self.index.set_issues(tx, ns.namespace, rel, [(i.line, i.message) for i in issues])
            self.index.set_file_state(
                tx,
                ns.namespace,
                rel,
                st.st_size,
                st.st_mtime_ns,
                file_digest(raw),
                raw.count(b"\n"),
            )
        report.items_indexed += len(changed)
        report.issues.extend(issues)

    def forget_file(self, ns: NamespaceDir, rel: str, report: SyncReport) -> None:
        existing = self.index.items_in_path(rel)
        with self.index.transaction() as tx:
            self.index.delete_items(tx, ns.namespace, [rid for rid, _ in existing.values()])
            self.index.forget_file(tx, rel)
        report.items_removed += len(existing)

    def sync(self, ns: NamespaceDir, *, force: bool = False, locked: bool = False) -> SyncReport:
        """Pick up files changed on disk since they were indexed (by size and mtime, then hash).
        ``locked``: the caller already holds the namespace lock.

        Every file is stat'ed on every call (a hand edit changes only the file). When every
        stat and the index's change token equal those of the last call that found files and
        index in agreement, nothing can have changed and the index is not read; otherwise
        each file is compared with its indexed state as before."""
        report = SyncReport()
        on_disk = ns.markdown_stats()
        token = self.index.change_token()
        clean = self._clean.get(ns.namespace)
        if not force and token is not None and clean == (on_disk, token):
            return report
        self._clean.pop(ns.namespace, None)
        known = self.index.file_state(ns.namespace)
        stale = []
        for rel, st in on_disk.items():
            if st is None:
                continue
            p = ns.abs(rel)
            state = known.get(rel)
            if force or state is None or state[0] != st[0] or state[1] != st[1]:
                unchanged = (
                    not force
                    and state is not None
                    and bool(state[2])
                    and file_digest(p.read_bytes()) == state[2]
                )
                if unchanged:
                    continue
                stale.append(p)
        vanished = [rel for rel in known if rel not in on_disk]
        if stale or vanished:
            with nullcontext() if locked else ns.lock():
                ledger = ns.trust_ledger()
                for p in sorted(stale):
                    self.sync_file(ns, p, report, ledger)
                for rel in vanished:
                    self.forget_file(ns, rel, report)
        after = self.index.change_token()
        if after is not None:
            self._clean[ns.namespace] = (on_disk, after)
        return report
