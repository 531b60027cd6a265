"""Knowledge memory for the agent: an adapter over :class:`holdfast.memory.MemoryStore`.

The agent needs three things from knowledge memory: store a durable fact (its ``remember`` tool
and the flush before a physical session ends), search with citations (its ``recall_memory`` tool
and the recall that seeds a fresh session), and nothing that can stop the task: recall failures
are reported, not raised (knowledge memory is fail-open).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from holdfast.errors import InvalidInput
from holdfast.session import FlushItem, RecallHit

if TYPE_CHECKING:
    from holdfast.memory import MemoryStore

KINDS = ("fact", "observation", "belief", "episode", "summary")


class StoreMemory:
    """The agent's view of one memory namespace, with the task's provenance on every write."""

    def __init__(
        self,
        store: MemoryStore,
        *,
        namespace: str = "default",
        task_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.task_id = task_id
        self.session_id = session_id

    def remember(self, text: str, *, kind: str = "fact", key: str | None = None) -> dict[str, Any]:
        if kind not in KINDS:
            raise InvalidInput(f"memory kind must be one of {', '.join(KINDS)}, not {kind!r}")
        result = self.store.add(
            text,
            namespace=self.namespace,
            kind=kind,
            source={"task": self.task_id, "session": self.session_id, "tool": "agent"},
            tags=[f"key:{key}"] if key else (),
        )
        item = result.item
        return {"id": item.id, "status": result.status, "citation": self.store.citation(item.id)}

    def search(self, query: str, *, limit: int = 5) -> list[RecallHit]:
        hits = self.store.search(query, namespace=self.namespace, limit=limit)
        return [RecallHit(h.item.text, h.citation or h.item.id) for h in hits]

    def flush(self, items: list[FlushItem]) -> list[dict[str, Any]]:
        """Write the flushed working-set facts (duplicates of earlier writes are not stored again)."""
        out: list[dict[str, Any]] = []
        for item in items:
            kind = "observation" if item.kind == "finding" else "fact"
            res = self.remember(item.text, kind=kind, key=f"{self.session_id}:{item.key}")
            out.append({"key": item.key, **res})
        return out

    def recall(self, queries: list[str], per_query: int = 3) -> list[RecallHit]:
        seen: set[str] = set()
        hits: list[RecallHit] = []
        for q in queries:
            for h in self.search(q, limit=per_query):
                if h.citation not in seen:
                    seen.add(h.citation)
                    hits.append(h)
        return hits
