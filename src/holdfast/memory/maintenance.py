"""Keeping a memory store healthy and portable: sync with hand edits, full reindex, parse issues,
statistics, entity merges and splits, export and import.

A mixin of :class:`holdfast.memory.store.MemoryStore`, kept apart so the write path reads on its
own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holdfast.errors import InvalidInput
from holdfast.memory.embedders import Embedder
from holdfast.memory.files import NamespaceDir
from holdfast.memory.index import MemoryIndex
from holdfast.memory.indexer import Indexer, SyncReport
from holdfast.memory.items import Evidence, MemoryItem, Trust, checked_item, least_trusted, new_id
from holdfast.memory.markdown import ParseIssue

if TYPE_CHECKING:
    from holdfast.memory.security import Redactor
    from holdfast.memory.store import MemoryConfig
    from holdfast.memory.vectors import VectorCache


class Maintenance:
    """Sync, reindex, issues, stats, entities, export and import."""

    root: Path
    config: MemoryConfig
    index: MemoryIndex
    indexer: Indexer
    embedder: Embedder
    redactor: Redactor

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
            with self.index.transaction() as tx:
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
                with self.index.transaction() as tx:
                    self.index.restore_vectors(tx, namespace, self.embedder.name, kept)
        self.indexer.embed_missing(namespace, progress)
        self.vectors.invalidate()
        return report

    def issues(self, namespace: str = "default") -> list[ParseIssue]:
        """Problems found in the namespace's files, with file and line: sections that do not
        parse, duplicate ids, non-UTF-8 bytes, items without a trust record, and ids that
        another namespace also holds (a namespace folder copied by hand)."""
        self.sync(namespace)
        out = [ParseIssue(p, line, m) for p, line, m in self.index.issues(namespace)]
        for s in self.index.shared_ids(namespace):
            out.append(
                ParseIssue(
                    s.path,
                    s.line,
                    f"id {s.id} is also in namespace {s.other_namespace!r} at "
                    f"{s.other_path}#{s.other_line}; each namespace keeps its own copy (a "
                    "copied folder?): citations by id alone are ambiguous until one is removed",
                )
            )
        return sorted(out, key=lambda i: (i.path, i.line, i.message))

    def namespaces(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def stats(self, namespace: str = "default") -> dict[str, Any]:
        self.sync(namespace)
        out = self.index.stats(namespace)
        out["namespace"] = namespace
        out["embedder"] = self.embedder.name
        out["issues"] = len(self.issues(namespace))
        out["db_bytes"] = self.index.size_bytes()
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
        """Every item of the namespace (tombstones and history included), oldest first."""
        self.sync(namespace)
        rows = self.index.get_many(self.index.rids(namespace))
        return [rows[r].data for r in sorted(rows)]

    def export_markdown(self, root: Path | str, namespace: str = "default") -> int:
        """Write the namespace as Markdown under ``root/<namespace>/``: the files and trust
        ledger an embedded store reads (``MemoryConfig(root=root)``), which a person can read
        and edit; returns the number of items written. The folder must not hold files yet."""
        out = NamespaceDir(Path(root), namespace)
        if out.path.exists() and any(out.path.iterdir()):
            raise InvalidInput(f"{out.path} already holds files; export into an empty folder")
        items = [MemoryItem.from_dict(d) for d in self.export(namespace)]
        by_file: dict[Path, list[MemoryItem]] = {}
        for item in items:
            by_file.setdefault(out.file_for(item), []).append(item)
        out.ensure()
        out.record_trust([(item.id, item.trust) for item in items])
        for path, group in by_file.items():
            out.append(path, group)
        rules = self.ns(namespace).entity_rules()
        if rules["merges"] or rules["splits"]:
            out.save_entity_rules(rules)
        return len(items)

    def import_markdown(
        self,
        folder: Path | str,
        *,
        namespace: str | None = None,
        trust: Trust | str | None = None,
        skip_bad: bool = False,
    ) -> ImportReport:
        """Import a namespace folder of Markdown files (as :meth:`export_markdown` writes, or an
        embedded store keeps) into ``namespace`` (default: the folder's name), through
        :meth:`import_items`: idempotent, validated and redacted. An item whose id has no
        record in the folder's trust ledger comes in as untrusted; a section that does not
        parse is a bad record (``path:line``)."""
        from holdfast.memory.markdown import parse_file

        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidInput(f"{folder} is not a folder")
        src = NamespaceDir(folder.parent, folder.name)
        ledger = src.trust_ledger()
        records: list[dict[str, Any]] = []
        bad: list[str] = []
        for path in src.markdown_files():
            rel = src.rel(path)
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = raw[: exc.start].count(b"\n") + 1
                bad.append(f"{rel}:{line}: not valid UTF-8")
                continue
            sections, issues = parse_file(text, rel, src.namespace)
            bad.extend(f"{i.path}:{i.line}: {i.message}" for i in issues)
            for sec in sections:
                level = ledger.get(sec.item.id, Trust.UNTRUSTED)
                records.append(sec.item.evolve(trust=level).to_dict())
        target = namespace or src.namespace
        if bad and not skip_bad:
            report = ImportReport()
            report.errors = [(0, b) for b in bad]
            return report
        report = self.import_items(records, namespace=target, trust=trust, skip_bad=skip_bad)
        report.errors = [(0, b) for b in bad] + report.errors
        return report

    def import_items(
        self,
        records: Iterable[dict[str, Any] | str | bytes],
        *,
        namespace: str = "default",
        trust: Trust | str | None = None,
        skip_bad: bool = False,
    ) -> ImportReport:
        """Import records written by :meth:`export` (dicts, or JSON lines) into ``namespace``.

        Idempotent: a record whose id the namespace already holds, or whose content (kind,
        text and mention time) it already holds, is skipped and reported, so importing the same
        export twice adds nothing. An id another namespace holds gets a fresh id (reported as
        renamed; references between the imported records follow it). Every record is
        validated and redacted like any write. A bad record is reported with its line number;
        unless ``skip_bad``, one bad record means nothing is imported. ``trust`` caps the trust
        of what is imported (trust is otherwise kept as exported: importing is an owner action).
        """
        ns = self.ns(namespace)
        try:
            cap = Trust(trust) if trust is not None else None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        report = ImportReport()
        parsed: list[tuple[int, MemoryItem]] = []
        for line, record in enumerate(records, 1):
            try:
                if isinstance(record, bytes | str):
                    raw = record.decode("utf-8") if isinstance(record, bytes) else record
                    if not raw.strip():
                        continue
                    record = json.loads(raw)
                parsed.append((line, self._imported_item(record, namespace, cap)))
            except UnicodeDecodeError as exc:
                report.errors.append((line, f"not valid UTF-8 (byte {exc.start + 1})"))
            except json.JSONDecodeError as exc:
                report.errors.append((line, f"not a JSON line: {exc.msg} at column {exc.colno}"))
            except (InvalidInput, ValueError, TypeError) as exc:
                report.errors.append((line, str(exc)))
        if report.errors and not skip_bad:
            return report
        with ns.lock():
            self.indexer.sync(ns, locked=True)
            held = {
                MemoryItem.from_dict(r.data).content_key
                for r in self.index.get_many(self.index.rids(namespace)).values()
            }
            fresh: list[MemoryItem] = []
            renames: dict[str, str] = {}
            taken: set[str] = set()
            for line, item in parsed:
                if item.id in taken or self.index.get(namespace, item.id) is not None:
                    report.skipped.append((line, item.id, "the namespace already holds this id"))
                    continue
                if item.content_key in held:
                    report.skipped.append(
                        (line, item.id, "the namespace already holds this item (same content)")
                    )
                    continue
                taken.add(item.id)
                held.add(item.content_key)
                if self.index.find(item.id):
                    renames[item.id] = new_id()
                    report.renamed.append((line, item.id, renames[item.id]))
                fresh.append(item)
            items = [_renumbered(item, renames) for item in fresh]
            vectors = self.indexer.vectors_for(items)
            self._append(ns, list(zip(items, vectors, strict=True)))
            report.imported = [item.id for item in items]
        return report

    def _imported_item(self, record: Any, namespace: str, cap: Trust | None) -> MemoryItem:
        """One exported record as a validated, redacted item of ``namespace``."""
        if not isinstance(record, dict):
            raise InvalidInput("a record is a JSON object")
        missing = [k for k in ("id", "text", "mention_time") if not record.get(k)]
        if missing:
            raise InvalidInput(f"missing {', '.join(repr(k) for k in missing)}")
        unknown = sorted(set(record) - set(MemoryItem.__dataclass_fields__))
        if unknown:
            raise InvalidInput(f"unknown field(s) {', '.join(unknown)}")
        item = checked_item(MemoryItem.from_dict({**record, "namespace": namespace}))
        if cap is not None:
            item = item.evolve(trust=least_trusted(item.trust, cap))
        if self.config.redact_secrets:
            item, _ = self.redactor.redact_item(item)
        return item


@dataclass
class ImportReport:
    """What an import did: ids imported, records skipped (line, id, why), ids renamed because
    another namespace holds them (line, old, new), and bad records (line, message)."""

    imported: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    renamed: list[tuple[int, str, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "imported": len(self.imported),
            "skipped": [{"line": n, "id": i, "reason": r} for n, i, r in self.skipped],
            "renamed": [{"line": n, "id": a, "new_id": b} for n, a, b in self.renamed],
            "errors": [{"line": n, "message": m} for n, m in self.errors],
            "ids": list(self.imported),
        }


def _renumbered(item: MemoryItem, renames: dict[str, str]) -> MemoryItem:
    if not renames:
        return item
    return item.evolve(
        id=renames.get(item.id, item.id),
        supersedes=tuple(renames.get(i, i) for i in item.supersedes),
        superseded_by=(
            renames.get(item.superseded_by, item.superseded_by) if item.superseded_by else None
        ),
        evidence=tuple(Evidence(renames.get(e.ref, e.ref), e.supports) for e in item.evidence),
    )


class _Deferred:
    """An embedder stand-in that defers vectors so a reindex can embed in large batches later."""

    dim = 0

    def __init__(self, real: Embedder) -> None:
        self.name = real.name

    def embed(self, texts: list[str]) -> Any:
        raise AssertionError("deferred embedder is never called")
