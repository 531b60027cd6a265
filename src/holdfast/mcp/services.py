"""The stores behind an MCP server, opened once and used from the server's event loop.

Knowledge memory is synchronous (SQLite and the embedder), so every memory operation runs on one
dedicated thread: the event loop never blocks on it, and the store is only ever touched from that
thread. The control plane and the session store are opened per call (they are cheap to open and
hold no cross-call state), so a long-lived server never pins a database connection it is not using.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from holdfast.errors import InvalidInput
from holdfast.mcp.settings import MCPSettings

if TYPE_CHECKING:
    from holdfast.harness import Harness
    from holdfast.memory import MemoryStore, MemoryTools

T = TypeVar("T")


class Services:
    """Lazily opened memory store, memory tools and control plane for one MCP server."""

    def __init__(
        self,
        settings: MCPSettings,
        *,
        memory_session: Callable[[], AbstractContextManager[MemoryStore]] | None = None,
    ) -> None:
        """``memory_session`` lends an existing store for one operation (``holdfast serve``
        shares its warm store and embedder this way); without it the server opens its own."""
        self.settings = settings
        self._memory_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="holdfast-mcp-mem")
        self._store: MemoryStore | None = None
        self._tools: dict[bool, MemoryTools] = {}
        self._lend = memory_session

    # ----- knowledge memory (one thread) --------------------------------------------------

    async def memory(self, fn: Callable[[MemoryStore], T]) -> T:
        """Run ``fn(store)`` on the memory thread and wait for it without blocking the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._memory_pool, lambda: self._with_store(fn))

    def _with_store(self, fn: Callable[[MemoryStore], T]) -> T:
        if self._lend is None:
            return fn(self._open_store())
        with self._lend() as store:
            return fn(store)

    async def memory_tool(self, name: str, args: dict[str, Any], *, untrusted: bool) -> Any:
        """Dispatch one of the agent memory tools with MCP's trust: ``agent``, or ``untrusted``."""

        def call(store: MemoryStore) -> Any:
            return self._memory_tools(store, untrusted).dispatch(name, args)

        return await self.memory(call)

    def _open_store(self) -> MemoryStore:
        if self._store is None:
            from holdfast.memory import MemoryConfig, open_memory

            self._store = open_memory(
                MemoryConfig(root=self.settings.memory_root, embedder=self.settings.embedder),
                database_url=self.settings.database_url,
            )
        return self._store

    def _memory_tools(self, store: MemoryStore, untrusted: bool) -> MemoryTools:
        cached = self._tools.get(untrusted)
        if cached is None or cached.store is not store:
            from holdfast.memory import MemoryTools, Trust

            self._tools[untrusted] = MemoryTools(
                store,
                namespace=self.settings.namespace,
                trust=Trust.UNTRUSTED if untrusted else Trust.AGENT,
                allow_purge=self.settings.allow_purge,
                source={"via": "mcp"},
            )
        return self._tools[untrusted]

    # ----- control plane ------------------------------------------------------------------

    @contextlib.contextmanager
    def harness(self) -> Iterator[Harness]:
        """The control plane (a fresh connection per call), refused unless task tools are on."""
        if not self.settings.tasks:
            raise InvalidInput("task tools are off on this server (start it with --tasks)")
        from holdfast.harness import Harness

        h = Harness.open(self.settings.database_url)
        try:
            yield h
        finally:
            h.close()

    def close(self) -> None:
        """Close the memory store on its own thread, then stop the thread."""

        def shut() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        with contextlib.suppress(Exception):
            self._memory_pool.submit(shut).result(timeout=30)
        self._memory_pool.shutdown(wait=False, cancel_futures=True)
