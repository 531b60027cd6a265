"""Knowledge memory whose truth is a database: what workers on many machines share.

Under a PostgreSQL control plane (``--database-url`` / ``HOLDFAST_DATABASE_URL``) knowledge
memory lives in the same database, so what one worker learns the others recall. The
:class:`DatabaseMemoryStore` is the :class:`~holdfast.memory.store.MemoryStore` with its file
layer replaced: every write, revision, trust change and deletion is one transaction on the
database (:class:`~holdfast.memory.index_postgres.PostgresMemoryIndex`), serialised per namespace
by an advisory lock that holds across processes and machines. Validation, redaction, time and
entity resolution, de-duplication, the trust rules, beliefs, observations and recall are the
store's own code, unchanged; only where an item is kept differs.

Markdown stays the human-editable form: :meth:`DatabaseMemoryStore.export_markdown` writes a
namespace as the files an embedded store reads, and ``import_markdown`` reads such files back
(idempotently, validated and redacted like any write).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from holdfast.memory.embedders import Embedder
from holdfast.memory.files import NamespaceDir
from holdfast.memory.index_postgres import PostgresMemoryIndex
from holdfast.memory.indexer import Indexer, SyncReport
from holdfast.memory.items import MemoryItem, Trust
from holdfast.memory.store import MemoryConfig, MemoryStore
from holdfast.store.backend import Backend


class DatabaseNamespace(NamespaceDir):
    """One namespace kept in the database: the lock, the trust ledger and the entity rules are
    rows; there are no files (``file_for`` only names the file an export writes an item to)."""

    def __init__(self, root: Path, namespace: str, index: PostgresMemoryIndex) -> None:
        super().__init__(root, namespace)
        self.index = index

    def ensure(self) -> None:
        return None

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self.index.namespace_lock(self.namespace):
            yield

    def markdown_files(self) -> list[Path]:
        return []

    def trust_ledger(self) -> dict[str, Trust]:
        return {k: Trust(v) for k, v in self.index.trust_ledger(self.namespace).items()}

    def record_trust(self, entries: list[tuple[str, Trust]]) -> None:
        with self.index.transaction() as tx:
            self.index.record_trust(tx, self.namespace, [(i, t.value) for i, t in entries])

    def revoke_trust(self, item_ids: list[str]) -> None:
        with self.index.transaction() as tx:
            self.index.record_trust(tx, self.namespace, [(i, None) for i in item_ids])

    def purge_trust(self, item_id: str) -> None:
        with self.index.transaction() as tx:
            self.index.purge_trust(tx, self.namespace, item_id)

    def rules_version(self) -> float:
        return float(self.index.rules_version(self.namespace))

    def entity_rules(self) -> dict[str, list[list[str]]]:
        return self.index.entity_rules(self.namespace)

    def save_entity_rules(self, rules: dict[str, list[list[str]]]) -> None:
        self.index.save_entity_rules(self.namespace, rules)


class DatabaseIndexer(Indexer):
    """The indexer of a store without files: there is nothing on disk to sync with."""

    def sync(self, ns: NamespaceDir, *, force: bool = False, locked: bool = False) -> SyncReport:
        return SyncReport()


class DatabaseMemoryStore(MemoryStore):
    """A :class:`MemoryStore` whose items, trust ledger, keywords and vectors are rows of one
    database (PostgreSQL): see the module docstring."""

    files_are_truth = False

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        backend: Backend,
        embedder: Embedder | None = None,
    ) -> None:
        self.db_index = PostgresMemoryIndex(backend)
        super().__init__(config, embedder=embedder, index=self.db_index)
        self.indexer = DatabaseIndexer(self.index, self.embedder, self.config.context_window)

    @property
    def location(self) -> str:
        return self.db_index.location

    def ns(self, namespace: str) -> NamespaceDir:
        return DatabaseNamespace(self.root, namespace, self.db_index)

    def namespaces(self) -> list[str]:
        return self.db_index.namespaces()

    # ----- the write primitives, as transactions on the database
    def _append(self, ns: NamespaceDir, entries: list[tuple[MemoryItem, list[bytes]]]) -> None:
        """Store items with their trust records in one transaction (all or nothing)."""
        if not entries:
            return
        with self.index.transaction() as tx:
            self.db_index.record_trust(
                tx, ns.namespace, [(item.id, item.trust.value) for item, _ in entries]
            )
            for item, vecs in entries:
                self.indexer.write(tx, ns, item, ns.rel(ns.file_for(item)), 0, vecs)

    def _rewrite(self, ns: NamespaceDir, item_id: str, new: MemoryItem | None) -> None:
        """Replace (or with None remove) an item; its vectors are recomputed only when its text
        changed, and a change of trust is recorded in the ledger in the same transaction."""
        row = self.index.get(ns.namespace, item_id)
        if row is None:
            from holdfast.errors import InvalidInput

            raise InvalidInput(f"no memory item {item_id!r} in namespace {ns.namespace!r}")
        if new is None:
            with self.index.transaction() as tx:
                self.index.delete_items(tx, ns.namespace, [row.rid])
            return
        if self.config.redact_secrets:
            new, _ = self.redactor.redact_item(new)
        vecs = self.indexer.vectors_for([new])[0] if new.text != row.data.get("text") else None
        with self.index.transaction() as tx:
            if new.trust.value != row.data.get("trust"):
                self.db_index.record_trust(tx, ns.namespace, [(new.id, new.trust.value)])
            self.indexer.write(tx, ns, new, ns.rel(ns.file_for(new)), 0, vecs)

    def set_trust(
        self, item_id: str, trust: Trust | str, *, namespace: str = "default"
    ) -> MemoryItem:
        """Change an item's trust class (an owner decision: never done automatically)."""
        from holdfast.errors import InvalidInput

        try:
            level = Trust(trust)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        ns = self.ns(namespace)
        with ns.lock():
            old = self.get(item_id, namespace=namespace)
            self._rewrite(ns, item_id, old.evolve(trust=level))
        return self.get(item_id, namespace=namespace)

    def promote(self, item_id: str, *, namespace: str = "default") -> MemoryItem:
        """Make an item owner-trusted and curated (an explicit owner action); an export writes
        it to ``MEMORY.md``."""
        return self.set_trust(item_id, Trust.OWNER, namespace=namespace)

    def reindex(
        self,
        namespace: str = "default",
        *,
        reembed: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> SyncReport:
        """Re-derive what is computed from the items: the neighbouring-turn context of every
        episode and the vectors missing for the current embedder (``reembed``: all of them).
        The items themselves are the truth and are not touched."""
        ns = self.ns(namespace)
        report = SyncReport()
        with ns.lock():
            with self.index.transaction() as tx:
                if reembed:
                    self.db_index.drop_vectors(tx, namespace)
                for session, turn in self.db_index.sessions(namespace):
                    self.indexer.refresh_context(tx, namespace, session, turn)
            report.items_indexed = self.indexer.embed_missing(namespace, progress)
        self.vectors.invalidate()
        return report


def open_memory(
    config: MemoryConfig | None = None,
    *,
    database_url: str | None = None,
    embedder: Embedder | None = None,
    backend: Backend | None = None,
) -> MemoryStore:
    """The knowledge memory of a deployment: with a PostgreSQL control plane (``database_url``
    or ``backend`` on PostgreSQL) the database is the truth, shared by every worker; otherwise
    (embedded, or an SQLite control plane) the Markdown files of the Holdfast home are."""
    from holdfast.store.backend import POSTGRES, open_url
    from holdfast.store.urls import is_postgres

    if backend is not None and backend.dialect is POSTGRES:
        return DatabaseMemoryStore(config, backend=backend.sibling(), embedder=embedder)
    if database_url and is_postgres(database_url):
        return DatabaseMemoryStore(config, backend=open_url(database_url), embedder=embedder)
    return MemoryStore(config, embedder=embedder)
