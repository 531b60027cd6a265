"""Knowledge memory: Markdown files as the truth, a hybrid index (keyword, dense, entity, time)
over them, provenance and trust on every item, and tools for agents.

Start with :class:`MemoryStore`::

    store = MemoryStore(MemoryConfig(embedder="local"))
    store.add("Alice Chen moved to Berlin last year.", namespace="project",
              mention_time="2023-05-08T12:00:00Z")
    hits = store.search("where does Alice live?", namespace="project")
"""

from holdfast.memory.beliefs import belief_confidence
from holdfast.memory.context import ContextPack, LeftOut, build_pack, context_pack
from holdfast.memory.embedders import (
    Embedder,
    LocalEmbedder,
    NoEmbedder,
    OpenAIEmbedder,
    make_embedder,
)
from holdfast.memory.entities import EntityResolver, extract_names
from holdfast.memory.extract import ExtractionResult, extract
from holdfast.memory.index import MemoryIndex
from holdfast.memory.index_postgres import PostgresMemoryIndex
from holdfast.memory.index_sqlite import SQLiteMemoryIndex
from holdfast.memory.indexer import SyncReport
from holdfast.memory.items import BadTime, Evidence, Kind, MemoryItem, Source, Status, Trust
from holdfast.memory.maintenance import ImportReport
from holdfast.memory.markdown import ParseIssue, parse_file, render_item
from holdfast.memory.recall import Hit, RecallSettings
from holdfast.memory.security import Redactor, instruction_like, redact, redact_item
from holdfast.memory.store import MemoryConfig, MemoryStore, WriteResult
from holdfast.memory.store_db import DatabaseMemoryStore, open_memory
from holdfast.memory.timeexpr import query_range, resolve_event_time
from holdfast.memory.tools import MemoryTools

__all__ = [
    "BadTime",
    "ContextPack",
    "DatabaseMemoryStore",
    "Embedder",
    "EntityResolver",
    "Evidence",
    "ExtractionResult",
    "Hit",
    "ImportReport",
    "Kind",
    "LeftOut",
    "LocalEmbedder",
    "MemoryConfig",
    "MemoryIndex",
    "MemoryItem",
    "MemoryStore",
    "MemoryTools",
    "NoEmbedder",
    "OpenAIEmbedder",
    "ParseIssue",
    "PostgresMemoryIndex",
    "RecallSettings",
    "Redactor",
    "SQLiteMemoryIndex",
    "Source",
    "Status",
    "SyncReport",
    "Trust",
    "WriteResult",
    "belief_confidence",
    "build_pack",
    "context_pack",
    "extract",
    "extract_names",
    "instruction_like",
    "make_embedder",
    "open_memory",
    "parse_file",
    "query_range",
    "redact",
    "redact_item",
    "render_item",
    "resolve_event_time",
]
