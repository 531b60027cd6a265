"""Knowledge memory: Markdown files as the truth, a hybrid index (keyword, dense, entity, time)
over them, provenance and trust on every item, and tools for agents.

Start with :class:`MemoryStore`::

    store = MemoryStore(MemoryConfig(embedder="local"))
    store.add("Alice Chen moved to Berlin last year.", namespace="project",
              mention_time="2023-05-08T12:00:00Z")
    hits = store.search("where does Alice live?", namespace="project")
"""

from holdfast.memory.embedders import (
    Embedder,
    LocalEmbedder,
    NoEmbedder,
    OpenAIEmbedder,
    make_embedder,
)
from holdfast.memory.entities import EntityResolver, extract_names
from holdfast.memory.indexer import SyncReport
from holdfast.memory.items import Evidence, Kind, MemoryItem, Source, Status, Trust
from holdfast.memory.markdown import ParseIssue, parse_file, render_item
from holdfast.memory.recall import Hit, RecallSettings
from holdfast.memory.security import instruction_like, redact
from holdfast.memory.store import MemoryConfig, MemoryStore, WriteResult, belief_confidence
from holdfast.memory.timeexpr import query_range, resolve_event_time

__all__ = [
    "Embedder",
    "EntityResolver",
    "Evidence",
    "Hit",
    "Kind",
    "LocalEmbedder",
    "MemoryConfig",
    "MemoryItem",
    "MemoryStore",
    "NoEmbedder",
    "OpenAIEmbedder",
    "ParseIssue",
    "RecallSettings",
    "Source",
    "Status",
    "SyncReport",
    "Trust",
    "WriteResult",
    "belief_confidence",
    "extract_names",
    "instruction_like",
    "make_embedder",
    "parse_file",
    "query_range",
    "redact",
    "render_item",
    "resolve_event_time",
]
