"""A concurrency limiter per model endpoint, shared by every LM that calls that endpoint.

Several LMs (a root model and its sub-call model, many RLM jobs in one process) often call the
same server; a limit per LM would multiply. :func:`endpoint_limiter` returns the one limiter of an
endpoint. It works across event loops and threads (the sync wrapper runs its own loop), which an
``asyncio.Semaphore`` does not: waiters are futures woken on their own loop, first come first served.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from holdfast.errors import ConfigError


class EndpointLimiter:
    """At most ``limit`` calls in flight; further callers wait in arrival order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {limit}")
        self._limit = limit
        self._active = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )
        self.high_water = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def active(self) -> int:
        return self._active

    def set_limit(self, limit: int) -> None:
        """Change the limit; raising it wakes waiters at once."""
        if limit < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {limit}")
        with self._lock:
            self._limit = limit
        self._wake()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._active < self._limit and not self._waiters:
                self._take()
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove((loop, fut))
                    granted = False
                except ValueError:
                    granted = True
            if granted:
                self.release()
            raise

    def _take(self) -> None:
        self._active += 1
        self.high_water = max(self.high_water, self._active)

    def release(self) -> None:
        with self._lock:
            self._active -= 1
        self._wake()

    def _wake(self) -> None:
        while True:
            with self._lock:
                if not self._waiters or self._active >= self._limit:
                    return
                loop, fut = self._waiters.popleft()
                self._take()
            try:
                loop.call_soon_threadsafe(_grant, fut)
            except RuntimeError:  # the waiter's loop is closed: give the slot back
                with self._lock:
                    self._active -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``async with limiter.slot():`` holds one slot for the body."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


def _grant(fut: asyncio.Future[None]) -> None:
    # A waiter cancelled after being granted releases its slot itself (see acquire).
    if not fut.done():
        fut.set_result(None)


_registry: dict[str, EndpointLimiter] = {}
_registry_lock = threading.Lock()


def endpoint_limiter(
    endpoint: str, limit: int | None = None, *, default: int = 64
) -> EndpointLimiter:
    """The process-wide limiter of ``endpoint`` (a base URL).

    ``limit`` sets or changes its limit (the last explicit setting wins); a new limiter without an
    explicit limit starts at ``default``.
    """
    key = endpoint.rstrip("/")
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = EndpointLimiter(limit or default)
            return limiter
    if limit is not None and limit != limiter.limit:
        limiter.set_limit(limit)
    return limiter
