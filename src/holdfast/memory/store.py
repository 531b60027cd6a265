"""The knowledge memory: Markdown files as the truth, a hybrid index as the cache.

:class:`MemoryStore` is the one object callers use. A write validates and redacts every field,
resolves time expressions, links entity names and de-duplicates, then appends a section to the
right Markdown file under the namespace lock and updates the index in the same breath, so it is
searchable as soon as ``add`` returns. No model is called on the write or read path.

Trust is never raised by a write: a revision (``update``, ``supersede``, the agent's
``memory_update``) keeps the least trusted of the old item's class and the writer's; only
:meth:`MemoryStore.set_trust` and :meth:`MemoryStore.promote`, explicit owner actions, raise it.
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
from holdfast.memory.beliefs import (
    ClaimCheck,
    Conflict,
    belief_confidence,
    carried_evidence,
    check_claims,
    evidence_weights,
)
from holdfast.memory.embedders import Embedder, make_embedder
from holdfast.memory.entities import extract_names
from holdfast.memory.files import NamespaceDir, check_namespace
from holdfast.memory.index import MemoryIndex
from holdfast.memory.index_sqlite import SQLiteMemoryIndex
from holdfast.memory.indexer import Indexer, SyncReport
from holdfast.memory.items import (
    MAX_NAMES,
    Evidence,
    Kind,
    MemoryItem,
    Source,
    Status,
    Trust,
    check_id,
    clean_field,
    clean_source,
    clean_text,
    least_trusted,
    new_id,
    parse_evidence,
    parse_time,
)
from holdfast.memory.maintenance import Maintenance
from holdfast.memory.markdown import parse_file, render_item
from holdfast.memory.recall import RecallSettings
from holdfast.memory.security import Redactor
from holdfast.memory.text import loose_hash, norm_hash
from holdfast.memory.timeexpr import resolve_event_time
from holdfast.memory.vectors import VectorCache
from holdfast.store.sqlite import SQLiteDB


@dataclass(frozen=True)
class MemoryConfig:
    """Where memory lives and how it indexes.

    ``root`` defaults to ``<holdfast home>/memory`` and ``db_path`` to the shared store;
    ``context_window`` is how many neighbouring turns of the same session are indexed as
    searchable context of an episode; ``near_duplicates`` also skips a write whose claim words
    equal an existing item's (only case, punctuation, articles and contractions differ; a write
    that differs in any other word, a negation, a number, a date or a name is stored);
    ``secret_patterns`` adds regular expressions to the redaction rules; ``check_claims``
    compares every write with the beliefs and facts it may bear on (contradictions are
    reported, beliefs get evidence); ``observations`` keeps the observations of the entities a
    fact names up to date as facts arrive.
    """

    root: Path | None = None
    db_path: Path | None = None
    embedder: str = "local"
    context_window: int = 2
    near_duplicates: bool = True
    redact_secrets: bool = True
    secret_patterns: tuple[str, ...] = ()
    resolve_time: bool = True
    extract_entities: bool = True
    check_claims: bool = True
    observations: bool = True
    recall: RecallSettings = field(default_factory=RecallSettings)


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a write: the stored item, or the existing one it duplicates.

    When a write is skipped (``status`` ``duplicate`` or ``near_duplicate``), ``item`` is the
    existing item it matched and ``citation`` says where that item is; pass ``dedup=False`` to
    store the text anyway.
    """

    item: MemoryItem
    status: str
    duplicate_of: str | None = None
    redacted: tuple[str, ...] = ()
    citation: str = ""
    conflicts: tuple[Conflict, ...] = ()
    supports: tuple[str, ...] = ()
    contradicts: tuple[str, ...] = ()
    observations: tuple[str, ...] = ()

    @property
    def stored(self) -> bool:
        return self.status in ("added", "updated")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "id": self.item.id,
            "duplicate_of": self.duplicate_of,
            "citation": self.citation,
            "redacted": list(self.redacted),
            "conflicts": [c.to_dict() for c in self.conflicts],
            "supports": list(self.supports),
            "contradicts": list(self.contradicts),
            "observations": list(self.observations),
            "item": self.item.to_dict(),
        }


class MemoryStore(Maintenance):
    """Add, recall, revise and forget memories in isolated namespaces."""

    files_are_truth = True
    """Whether the Markdown files are the truth (else a database is: see
    :class:`holdfast.memory.store_db.DatabaseMemoryStore`)."""

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        embedder: Embedder | None = None,
        db: SQLiteDB | None = None,
        index: MemoryIndex | None = None,
    ) -> None:
        self.config = config or MemoryConfig()
        self.root = Path(self.config.root) if self.config.root else holdfast_home() / "memory"
        if self.files_are_truth:
            self.root.mkdir(parents=True, exist_ok=True)
        if index is None:
            self.db = db or SQLiteDB(self.config.db_path or default_db_path())
            index = SQLiteMemoryIndex(self.db)
        self.index = index
        self.embedder = embedder or make_embedder(self.config.embedder)
        self.indexer = Indexer(self.index, self.embedder, self.config.context_window)
        self.redactor = Redactor(self.config.secret_patterns)
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
        self.index.close()

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
        evidence: Iterable[Evidence | str] = (),
    ) -> tuple[MemoryItem, tuple[str, ...]]:
        """Build the item a write would store: every field validated (valid UTF-8, single-line
        metadata, a real URL), secrets redacted from every field, time resolved, entities
        linked. Raises InvalidInput with a one-line message on bad input."""
        text = clean_text(text)
        try:
            kind = Kind(kind)
            trust = Trust(trust)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        namespace = check_namespace(namespace)
        mention = parse_time(mention_time, "mention time") or datetime.now(UTC)
        try:
            src = source if isinstance(source, Source) else Source.from_dict(source)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        src = clean_source(src)
        tags = tags if isinstance(tags, str) else list(tags)
        derived = not isinstance(tags, str) and "derived" in tags
        start = end = None
        if derived:
            pass  # a derived item's dates are those of its evidence, not its own
        elif event_time is not None:
            start = parse_time(event_time[0], "event start")
            end = parse_time(event_time[1], "event end")
        elif self.config.resolve_time:
            resolved = resolve_event_time(text, mention)
            if resolved:
                start, end = resolved
        if isinstance(entities, str) or isinstance(tags, str):
            raise InvalidInput("entities and tags are lists of strings, not one string")
        entities, tags = list(entities), list(tags)
        if len(entities) > MAX_NAMES or len(tags) > MAX_NAMES:
            raise InvalidInput(f"an item has at most {MAX_NAMES} entities and {MAX_NAMES} tags")
        names = [clean_field(e, "entity") for e in entities]
        if src.speaker:
            names.append(src.speaker)
        if self.config.extract_entities and not derived:
            names.extend(extract_names(text, self.indexer.resolver(self.ns(namespace))))
        uniq: dict[str, str] = {}
        for n in names:
            uniq.setdefault(n.casefold(), n)
        if confidence is not None:
            if isinstance(confidence, bool) or not isinstance(confidence, int | float):
                raise InvalidInput("confidence must be a number between 0 and 1")
            if not 0.0 <= float(confidence) <= 1.0:
                raise InvalidInput("confidence must be between 0 and 1")
            confidence = float(confidence)
        if kind is Kind.BELIEF and confidence is None:
            confidence = 0.5
        item = MemoryItem(
            id=check_id(item_id) if item_id is not None else new_id(),
            text=text,
            kind=kind,
            namespace=namespace,
            mention_time=mention,
            event_start=start,
            event_end=end,
            entities=tuple(uniq.values()),
            source=src,
            trust=trust,
            confidence=confidence,
            tags=tuple(dict.fromkeys(clean_field(t, "tag", 100) for t in tags)),
            evidence=_checked_change("evidence", evidence),
        )
        found: list[str] = []
        if self.config.redact_secrets:
            item, found = self.redactor.redact_item(item)
        return item, tuple(found)

    def add(self, text: str, *, dedup: bool = True, **fields: Any) -> WriteResult:
        """Store one memory and index it at once. See :meth:`prepare` for the fields.

        With ``dedup`` (the default) a fact, belief, observation or summary whose text repeats
        an active item of the same kind is not stored again: the result names the item it
        matched. ``dedup=False`` stores it regardless. Episodes are never de-duplicated.
        """
        return self.add_many([(text, fields)], dedup=dedup)[0]

    def add_many(
        self, entries: Sequence[tuple[str, dict[str, Any]]], *, dedup: bool = True
    ) -> list[WriteResult]:
        """Store several memories with one embedding batch, one lock per namespace and one
        fsync per file touched. Every entry is validated before anything is written."""
        prepared = [self.prepare(text, **fields) for text, fields in entries]
        results = self._store_prepared(prepared, dedup=dedup)
        return self._after_write(results)

    def _after_write(self, results: list[WriteResult]) -> list[WriteResult]:
        """Bring beliefs and observations up to date with what was just stored: evidence for
        the beliefs each new item supports or contradicts, conflicts reported, observations of
        the entities it names refreshed (all without a model)."""
        if not (self.config.check_claims or self.config.observations):
            return results
        from dataclasses import replace

        out: list[WriteResult] = []
        touched: dict[str, set[str]] = {}
        for res in results:
            if not res.stored:
                out.append(res)
                continue
            item = res.item
            check = check_claims(self, item) if self.config.check_claims else ClaimCheck()
            for belief_id in check.supports:
                self.add_evidence(belief_id, item.id, supports=True, namespace=item.namespace)
            for belief_id in check.contradicts:
                self.add_evidence(belief_id, item.id, supports=False, namespace=item.namespace)
            if self.config.observations and item.kind in (Kind.FACT, Kind.BELIEF):
                touched.setdefault(item.namespace, set()).update(item.entities)
            out.append(
                replace(
                    res,
                    conflicts=check.conflicts,
                    supports=check.supports,
                    contradicts=check.contradicts,
                )
            )
        if touched:
            from holdfast.memory.observations import refresh_for

            refreshed: dict[str, list[str]] = {}
            for namespace, names in touched.items():
                refreshed[namespace] = refresh_for(self, namespace, sorted(names))
            out = [
                replace(r, observations=tuple(refreshed.get(r.item.namespace, ())))
                if r.stored and r.item.entities and r.item.kind in (Kind.FACT, Kind.BELIEF)
                else r
                for r in out
            ]
        return out

    def _store_prepared(
        self, prepared: Sequence[tuple[MemoryItem, tuple[str, ...]]], *, dedup: bool
    ) -> list[WriteResult]:
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
                    dup = self._duplicate_of(item) if dedup else None
                    if dup is None and dedup and item.kind is not Kind.EPISODE:
                        for key, status in (
                            ((item.kind, "n" + norm_hash(item.text)), "duplicate"),
                            ((item.kind, "l" + loose_hash(item.text)), "near_duplicate"),
                        ):
                            if status == "near_duplicate" and not self.config.near_duplicates:
                                continue
                            if key in seen:
                                dup = (seen[key], status)
                                break
                        if dup is None:
                            seen.setdefault((item.kind, "n" + norm_hash(item.text)), item)
                            seen.setdefault((item.kind, "l" + loose_hash(item.text)), item)
                    if dup is not None:
                        cite = self.citation(dup[0].id, namespace=namespace)
                        out[n] = WriteResult(dup[0], dup[1], dup[0].id, found, cite)
                        continue
                    fresh.append(n)
                    out[n] = WriteResult(item, "added", None, found)
                self._append(ns, [(prepared[n][0], vectors[n]) for n in fresh])
                for n in fresh:
                    item = out[n].item
                    out[n] = WriteResult(
                        item,
                        "added",
                        None,
                        out[n].redacted,
                        self.citation(item.id, namespace=namespace),
                    )
        return [out[n] for n in range(len(prepared))]

    def _append(self, ns: NamespaceDir, entries: list[tuple[MemoryItem, list[bytes]]]) -> None:
        """Write items to their files and index them in one transaction.

        Every section is rendered and encoded before anything touches the disk, so an item that
        cannot be written leaves nothing behind; the trust ledger is written next (an item is
        never on disk without its trust record), then the files, then the index.
        """
        if not entries:
            return
        by_file: dict[Path, list[tuple[MemoryItem, list[bytes]]]] = {}
        for item, vecs in entries:
            render_item(item).encode("utf-8")
            by_file.setdefault(ns.file_for(item), []).append((item, vecs))
        ns.record_trust([(item.id, item.trust) for item, _ in entries])
        written: set[str] = set()
        try:
            for path, group in by_file.items():
                rel = ns.rel(path)
                heads, total = ns.append(
                    path, [item for item, _ in group], self._known_lines(ns, path)
                )
                written.update(item.id for item, _ in group)
                st = path.stat()
                with self.index.transaction() as tx:
                    for (item, vecs), line in zip(group, heads, strict=True):
                        self.indexer.write(tx, ns, item, rel, line, vecs)
                    self.index.set_file_state(
                        tx, ns.namespace, rel, st.st_size, st.st_mtime_ns, "", total
                    )
        except BaseException:
            unwritten = [item.id for item, _ in entries if item.id not in written]
            if unwritten:
                ns.revoke_trust(unwritten)
            raise

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

    def _duplicate_of(self, item: MemoryItem) -> tuple[MemoryItem, str] | None:
        """An existing active item this one repeats: the same normalised text, or (with
        ``near_duplicates``) the same claim words in the same order."""
        if item.kind is Kind.EPISODE:
            return None
        checks = [("norm", norm_hash(item.text), "duplicate")]
        if self.config.near_duplicates:
            checks.append(("loose", loose_hash(item.text), "near_duplicate"))
        for column, value, status in checks:
            rows = (
                self.index.by_hash(item.namespace, norm=value)
                if column == "norm"
                else self.index.by_hash(item.namespace, loose=value)
            )
            for row in rows:
                old = MemoryItem.from_dict(row.data)
                if old.kind is item.kind and old.active:
                    return old, status
        return None

    # ----- reads
    def get(self, item_id: str, *, namespace: str | None = None) -> MemoryItem:
        """The item with ``item_id`` (raises InvalidInput when unknown, in another namespace, or
        held by several namespaces when none is named)."""
        row = self._row(item_id, namespace)
        return MemoryItem.from_dict(row.data)

    def _row(self, item_id: str, namespace: str | None) -> Any:
        if namespace is not None:
            row = self.index.get(check_namespace(namespace), item_id)
            if row is None:
                raise InvalidInput(f"no memory item {item_id!r} in namespace {namespace!r}")
            return row
        rows = self.index.find(item_id)
        if not rows:
            raise InvalidInput(f"no memory item {item_id!r}")
        if len(rows) > 1:
            raise InvalidInput(
                f"memory item {item_id!r} is in several namespaces "
                f"({', '.join(r.namespace for r in rows)}); name one"
            )
        return rows[0]

    def citation(self, item_id: str, *, namespace: str | None = None) -> str:
        try:
            row = self._row(item_id, namespace)
        except InvalidInput:
            return ""
        return self.index.citation(row)

    # ----- revisions
    def _rewrite(self, ns: NamespaceDir, item_id: str, new: MemoryItem | None) -> None:
        """Replace (or with None remove) an item's section in its file, then re-index the file."""
        row = self.index.get(ns.namespace, item_id)
        if row is None:
            raise InvalidInput(f"no memory item {item_id!r} in namespace {ns.namespace!r}")
        path = ns.abs(row.path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise InvalidInput(f"{row.path} is gone; run reindex") from None
        try:
            text = raw.decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError as exc:
            bad_line = raw[: exc.start].count(b"\n") + 1
            raise InvalidInput(
                f"{row.path}:{bad_line} is not valid UTF-8; fix that line before changing "
                "items in this file (nothing was changed)"
            ) from None
        lines = text.split("\n")
        sections, _ = parse_file(text, row.path, ns.namespace)
        sec = next((s for s in sections if s.item.id == item_id), None)
        if sec is None:
            raise InvalidInput(f"item {item_id!r} is no longer in {row.path}; run reindex")
        if new is not None and self.config.redact_secrets:
            new, _ = self.redactor.redact_item(new)
        replacement = render_item(new).rstrip("\n").split("\n") if new else []
        lines[sec.start - 1 : sec.end] = replacement
        out = "\n".join(lines)
        if new is not None and new.trust.value != row.data.get("trust"):
            ns.record_trust([(new.id, new.trust)])
        ns.write_atomic(path, out if out.endswith("\n") else out + "\n")
        self.indexer.sync_file(ns, path, SyncReport())

    def update(
        self, item_id: str, *, namespace: str = "default", text: str | None = None, **changes: Any
    ) -> MemoryItem:
        """Edit an item in place (same id): new text and/or metadata such as entities or tags,
        validated and redacted like a new write. Trust never changes here (use
        :meth:`set_trust` or :meth:`promote`)."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(item_id, namespace=namespace)
            fields: dict[str, Any] = {}
            if text is not None:
                fields["text"] = clean_text(text)
            for key, value in changes.items():
                if key in ("id", "namespace", "trust"):
                    raise InvalidInput(
                        f"{key} cannot be changed by update"
                        + ("; use set_trust or promote" if key == "trust" else "")
                    )
                if key not in MemoryItem.__dataclass_fields__:
                    raise InvalidInput(f"unknown item field {key!r}")
                fields[key] = _checked_change(key, value)
            new = old.evolve(**fields)
            if self.config.redact_secrets:
                new, _ = self.redactor.redact_item(new)
            self._rewrite(ns, item_id, new)
        return self.get(item_id, namespace=namespace)

    def supersede(
        self, old_id: str, text: str, *, namespace: str = "default", **fields: Any
    ) -> WriteResult:
        """Store a new item that replaces ``old_id``: the old one's validity ends, it stays in
        history. The new item's trust is the least trusted of the old item's and the writer's
        (``trust=``, agent by default): a revision never launders untrusted text."""
        old = self.get(old_id, namespace=namespace)
        requested = Trust(fields.pop("trust", Trust.AGENT))
        item, found = self.prepare(
            text,
            namespace=namespace,
            kind=fields.pop("kind", old.kind),
            trust=least_trusted(old.trust, requested),
            **fields,
        )
        item = item.evolve(supersedes=(old_id,))
        if old.kind is Kind.BELIEF and item.kind is Kind.BELIEF:
            item = self._carry_belief(old, item, explicit="confidence" in fields)
        vectors = self.indexer.vectors_for([item])[0]
        ns = self.ns(namespace)
        with ns.lock():
            self._append(ns, [(item, vectors)])
            ended = old.evolve(valid_to=item.mention_time, superseded_by=item.id)
            self._rewrite(ns, old_id, ended)
        res = WriteResult(item, "added", None, found, self.citation(item.id, namespace=namespace))
        return self._after_write([res])[0]

    def _carry_belief(self, old: MemoryItem, new: MemoryItem, *, explicit: bool) -> MemoryItem:
        """A belief's successor inherits its evidence (reversed when it says the opposite) and
        the confidence that evidence gives, unless a confidence was given explicitly."""
        evidence = tuple(
            e
            for e in dict.fromkeys((*carried_evidence(old, new.text), *new.evidence))
            if e.ref != new.id
        )
        if explicit:
            return new.evolve(evidence=evidence)
        if not evidence:
            conf = old.confidence if old.confidence is not None else 0.5
            if compare_texts(old.text, new.text):
                conf = round(1.0 - conf, 3)
            return new.evolve(confidence=conf)
        weights = evidence_weights(self, new.namespace, evidence)
        return new.evolve(evidence=evidence, confidence=belief_confidence(evidence, weights))

    def accept_supersede(
        self, old_id: str, new_id: str, *, namespace: str = "default"
    ) -> MemoryItem:
        """Accept a proposed supersede (a :class:`Conflict`): ``new_id``, already stored, replaces
        ``old_id``, whose validity ends (it stays in history). A belief replacing a belief
        inherits its evidence (reversed when it says the opposite) and the confidence that
        gives. Trust is not touched: each item keeps its own."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(old_id, namespace=namespace)
            new = self.get(new_id, namespace=namespace)
            if old_id == new_id:
                raise InvalidInput("an item cannot supersede itself")
            if not old.active:
                raise InvalidInput(f"{old_id} is no longer active (already superseded or deleted)")
            updated = new.evolve(supersedes=tuple(dict.fromkeys((*new.supersedes, old_id))))
            if old.kind is Kind.BELIEF and new.kind is Kind.BELIEF:
                updated = self._carry_belief(old, updated, explicit=False)
            self._rewrite(ns, new_id, updated)
            ended = old.evolve(valid_to=new.mention_time, superseded_by=new_id)
            self._rewrite(ns, old_id, ended)
        return self.get(new_id, namespace=namespace)

    def add_evidence(
        self, belief_id: str, ref: str, *, supports: bool, namespace: str = "default"
    ) -> MemoryItem:
        """Record evidence (an item id or a short note) for or against a belief; its confidence
        is re-derived (:func:`holdfast.memory.beliefs.belief_confidence`): evidence from a
        ``tool`` or ``untrusted`` item is recorded but does not count until the owner vouches
        for that item."""
        ref = clean_field(ref, "evidence", 500)
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(belief_id, namespace=namespace)
            if old.kind is not Kind.BELIEF:
                raise InvalidInput(f"{belief_id} is a {old.kind.value}, not a belief")
            if ref.startswith("m-") and any(e.ref == ref for e in old.evidence):
                return old  # an item counts once; a note may be recorded again
            evidence = (*old.evidence, Evidence(ref, supports))
            weights = evidence_weights(self, namespace, evidence)
            new = old.evolve(evidence=evidence, confidence=belief_confidence(evidence, weights))
            self._rewrite(ns, belief_id, new)
        return self.get(belief_id, namespace=namespace)

    def rewrite_derived(
        self,
        old: MemoryItem,
        *,
        text: str,
        evidence: tuple[Evidence, ...],
        trust: Trust,
    ) -> MemoryItem:
        """Rewrite a derived item (an observation) in place with new text and evidence; its
        trust is what the evidence gives (:func:`holdfast.memory.observations.derived_trust`),
        never more than agent."""
        ns = self.ns(old.namespace)
        with ns.lock():
            new = old.evolve(
                text=clean_text(text),
                evidence=evidence,
                trust=least_trusted(Trust.AGENT, trust),
                mention_time=datetime.now(UTC),
            )
            self._rewrite(ns, old.id, new)
        return self.get(old.id, namespace=old.namespace)

    def evidence(self, item_id: str, *, namespace: str = "default") -> list[tuple[Evidence, Any]]:
        """The items an item cites as evidence (an observation's facts, a mental model's
        sources, a belief's support), each as (evidence, Hit or None when the ref is a note or
        gone), for recall that returns observations first and their evidence on demand."""
        from holdfast.memory.recall import Hit
        from holdfast.memory.security import instruction_like

        item = self.get(item_id, namespace=namespace)
        out: list[tuple[Evidence, Any]] = []
        for ev in item.evidence:
            row = self.index.get(namespace, ev.ref) if ev.ref.startswith("m-") else None
            if row is None:
                out.append((ev, None))
                continue
            cited = MemoryItem.from_dict(row.data)
            out.append(
                (
                    ev,
                    Hit(
                        item=cited,
                        score=0.0,
                        ranks={},
                        citation=self.index.citation(row),
                        untrusted=cited.trust in (Trust.UNTRUSTED, Trust.TOOL),
                        instruction_like=instruction_like(cited.text),
                        superseded=cited.valid_to is not None,
                    ),
                )
            )
        return out

    def set_trust(
        self, item_id: str, trust: Trust | str, *, namespace: str = "default"
    ) -> MemoryItem:
        """Change an item's trust class (an owner decision: never done automatically)."""
        ns = self.ns(namespace)
        try:
            level = Trust(trust)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        with ns.lock():
            row = self._row(item_id, namespace)
            ns.record_trust([(item_id, level)])
            self.indexer.sync_file(ns, ns.abs(row.path), SyncReport())
        return self.get(item_id, namespace=namespace)

    def promote(self, item_id: str, *, namespace: str = "default") -> MemoryItem:
        """Move an item into curated MEMORY.md as owner-trusted (an explicit owner action).

        The copy in MEMORY.md is written before the old section is removed, so a crash in
        between leaves the item twice (reported), never nowhere.
        """
        ns = self.ns(namespace)
        with ns.lock():
            row = self._row(item_id, namespace)
            old = MemoryItem.from_dict(row.data)
            new = old.evolve(trust=Trust.OWNER)
            path = ns.path / "MEMORY.md"
            if row.path == ns.rel(path):
                ns.record_trust([(item_id, Trust.OWNER)])
                self.indexer.sync_file(ns, path, SyncReport())
                return self.get(item_id, namespace=namespace)
            ns.record_trust([(item_id, Trust.OWNER)])
            ns.append(path, [new], self._known_lines(ns, path))
            self._rewrite(ns, item_id, None)
            self.indexer.sync_file(ns, path, SyncReport())
        return self.get(item_id, namespace=namespace)

    def delete(self, item_id: str, *, namespace: str = "default", purge: bool = False) -> None:
        """Tombstone an item (kept in its file, hidden from recall), or with ``purge`` erase it:
        from its file, the trust ledger, every index column that holds its text (its own row,
        the neighbouring turns' context, the keyword index) and the database's free pages and
        write-ahead log."""
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(item_id, namespace=namespace)
            if not purge:
                self._rewrite(ns, item_id, old.evolve(status=Status.DELETED))
                return
            with self.index.erase():
                self._rewrite(ns, item_id, None)
                ns.purge_trust(item_id)
                if old.source.session and old.source.turn is not None:
                    with self.index.transaction() as tx:
                        self.indexer.refresh_context(
                            tx, namespace, old.source.session, old.source.turn
                        )
        self.vectors.invalidate()

    def beliefs(self, *, namespace: str = "default") -> list[MemoryItem]:
        """The namespace's active beliefs, firmest first."""
        self.indexer.sync(self.ns(namespace))
        rows = self.index.get_many(self.index.rids(namespace, [Kind.BELIEF.value]))
        items = [MemoryItem.from_dict(r.data) for r in rows.values()]
        return sorted(
            (i for i in items if i.active),
            key=lambda i: (-(i.confidence if i.confidence is not None else 0.5), i.id),
        )

    def search(self, query: str, **kwargs: Any) -> list[Any]:
        """Recall: see :func:`holdfast.memory.search.search` for the arguments."""
        from holdfast.memory.search import search

        return search(self, query, **kwargs)


def compare_texts(old: str, new: str) -> bool:
    """Whether ``new`` contradicts ``old`` (see :mod:`holdfast.memory.contradict`)."""
    from holdfast.memory.contradict import compare

    return compare(old, new).contradicts


def _checked_change(key: str, value: Any) -> Any:
    """Validate one field given to :meth:`MemoryStore.update`."""
    if key in ("entities", "tags"):
        if isinstance(value, str):
            raise InvalidInput(f"{key} is a list of strings, not one string")
        return tuple(clean_field(v, key[:-1] if key == "tags" else "entity") for v in value)
    if key == "source":
        try:
            src = value if isinstance(value, Source) else Source.from_dict(value)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return clean_source(src)
    if key in ("mention_time", "event_start", "event_end", "valid_to"):
        return parse_time(value, key.replace("_", " "))
    if key == "kind":
        try:
            return Kind(value)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    if key == "status":
        try:
            return Status(value)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    if key == "confidence":
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0.0 <= float(value) <= 1.0
        ):
            raise InvalidInput("confidence must be a number between 0 and 1")
        return None if value is None else float(value)
    if key in ("supersedes",):
        return tuple(check_id(v, key) for v in value)
    if key == "superseded_by":
        return None if value is None else check_id(value, key)
    if key == "evidence":
        if isinstance(value, str):
            raise InvalidInput("evidence is a list, not one string")
        return tuple(
            Evidence(clean_field(e.ref, "evidence", 500), e.supports)
            if isinstance(e, Evidence)
            else parse_evidence(clean_field(str(e), "evidence", 500))
            for e in value
        )
    return value
