"""Knowledge memory for the agent: an adapter over :class:`holdfast.memory.MemoryStore`.

The agent needs three things from knowledge memory: the memory package's own agent tools
(``memory_add``, ``memory_search``, ``context_pack``... through :class:`holdfast.memory.tools.MemoryTools`),
the flush of working-set facts before a physical session ends, and cited recall to seed a fresh
session; and nothing that can stop the task: recall failures are reported, not raised
(knowledge memory is fail-open).
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
        from holdfast.memory.tools import MemoryTools

        self.store = store
        self.namespace = namespace
        self.task_id = task_id
        self.session_id = session_id
        source = {k: v for k, v in (("task", task_id), ("session", session_id)) if v}
        self.tools = MemoryTools(store, namespace=namespace, source=source)

    def dispatch(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return self.tools.dispatch(name, args)

    def close(self) -> None:
        self.store.close()

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
        return {
            "id": item.id,
            "status": result.status,
            "citation": self.store.citation(item.id, namespace=self.namespace),
        }

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
