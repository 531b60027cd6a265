"""The stores the server works over, opened once and shared by every request.

They are the CLI's stores: the control plane (``Harness``: SQLite under the Holdfast home, or
PostgreSQL), its tokens in the same database, continuity memory beside it, knowledge memory with
one warm embedder for the whole process, RLM traces and the model call log. Programs and tests
build a :class:`Services` with their own objects (a harness with extra task kinds, a memory store
with a fake embedder); ``Services.open(settings)`` builds the default ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holdfast.server.hub import Hub
from holdfast.server.settings import ServerSettings
from holdfast.server.tokens import TokenStore

if TYPE_CHECKING:
    from holdfast.harness import Harness
    from holdfast.lm.calllog import CallLog
    from holdfast.memory import MemoryStore
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.session import SQLSessionStore


@dataclass
class Services:
    """Everything a request handler may touch. ``memory`` is opened on first use."""

    settings: ServerSettings
    harness: Harness
    tokens: TokenStore | None
    traces: RLMTraceStore
    calls: CallLog
    home_db: Path
    memory_factory: Any = None
    hub: Hub = field(default_factory=Hub)
    jobs: Any = None
    _memory: MemoryStore | None = None
    _sessions: SQLSessionStore | None = None
    _memory_lock: threading.RLock = field(default_factory=threading.RLock)
    _open_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: ServerSettings, *, harness: Harness | None = None) -> Services:
        from holdfast.config import default_db_path
        from holdfast.harness import Harness, configured_signer, default_registry
        from holdfast.harness.signing import require_signing
        from holdfast.lm.calllog import CallLog
        from holdfast.rlm.store import RLMTraceStore
        from holdfast.store.sqlite import SQLiteDB

        home_db = default_db_path(settings.home)
        if harness is None:
            # the key every writer uses: --sign-key, else HOLDFAST_RECEIPT_KEY, else the home's
            # receipt.key; so the API signs exactly when the CLI and the worker do
            signer = require_signing(configured_signer(settings.sign_key, home=settings.home))
            harness = Harness.open(
                settings.database_url or home_db,
                signer=signer,
                registry=default_registry(settings.load),
            )
        tokens = TokenStore.for_store(harness.store)
        db = SQLiteDB(home_db)
        return cls(
            settings=settings,
            harness=harness,
            tokens=tokens,
            traces=RLMTraceStore(db),
            calls=CallLog(db),
            home_db=home_db,
        )

    # -- knowledge memory: one store, one warm embedder, one request at a time ------------------

    @property
    def memory(self) -> MemoryStore:
        with self._open_lock:
            if self._memory is None:
                if self.memory_factory is not None:
                    self._memory = self.memory_factory()
                else:
                    from holdfast.memory import MemoryConfig, open_memory

                    s = self.settings
                    root = s.memory_root or (s.home / "memory" if s.home else None)
                    # under a PostgreSQL control plane, the database's memory (shared by the
                    # workers); otherwise the Markdown files of the home
                    self._memory = open_memory(
                        MemoryConfig(root=root, db_path=self.home_db, embedder=s.embedder),
                        database_url=s.database_url,
                    )
            return self._memory

    @contextlib.contextmanager
    def memory_session(self) -> Iterator[MemoryStore]:
        """The memory store, held for one request. Writes take the namespace's file lock
        already; this lock also keeps the in-process vector matrix consistent while one request
        extends it and another reads it."""
        store = self.memory
        with self._memory_lock:
            yield store

    def warm_memory(self) -> None:
        """Load the embedding model now (at start-up), so the first request does not wait."""
        with self.memory_session() as store:
            store.embedder.embed(["warm up"])

    # -- continuity memory --------------------------------------------------------------------

    @property
    def sessions(self) -> SQLSessionStore:
        with self._open_lock:
            if self._sessions is None:
                from holdfast.session import open_session_store

                self._sessions = open_session_store(self.harness.store)
            return self._sessions

    def close(self) -> None:
        for closer in (
            getattr(self._memory, "close", None),
            getattr(self._sessions, "close", None),
            self.harness.close,
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer()
