"""A concurrency limiter per model endpoint, shared by every LM that calls that endpoint.

Several LMs (a root model and its sub-call model, many RLM jobs in one process) often call the
same server; a limit per LM would multiply. :func:`endpoint_limiter` returns the one limiter of an
endpoint. It works across event loops and threads (the sync wrapper runs its own loop), which an
``asyncio.Semaphore`` does not: waiters are futures woken on their own loop, first come first served.

The limit adapts to a server that pushes back: an HTTP 429 halves the calls let in (never below
one), and the limit grows back by one for every window's worth of successful calls, up to the
configured ceiling. Only a 429 to a call let in since the last halving counts, so one burst of
rejections halves the limit once, not once per rejected call. A wide fan-out against a rate-limited
endpoint thus slows to what the server accepts instead of spending its retries and failing.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from holdfast.errors import ConfigError


class EndpointLimiter:
    """At most ``limit`` calls in flight (fewer while throttled); further callers wait in order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {limit}")
        self._limit = limit
        self._current = limit
        self._successes = 0
        self._epoch = 0  # bumped by each halving
        self._active = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )
        self.high_water = 0

    @property
    def limit(self) -> int:
        """The configured ceiling."""
        return self._limit

    @property
    def current(self) -> int:
        """The calls let in now: the ceiling, or less after the server answered 429."""
        return self._current

    @property
    def active(self) -> int:
        return self._active

    def set_limit(self, limit: int) -> None:
        """Change the limit; raising it wakes waiters at once."""
        if limit < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {limit}")
        with self._lock:
            self._limit = self._current = limit
            self._successes = 0
        self._wake()

    @property
    def epoch(self) -> int:
        """How many times the limit was halved; a call notes it when it is let in."""
        return self._epoch

    def throttle(self, epoch: int | None = None) -> bool:
        """The server answered 429: halve the calls let in (never below one).

        ``epoch`` is :attr:`epoch` when the rejected call was let in: a call let in before the
        last halving was sent under the old limit and does not halve it again. Returns whether
        the limit was halved.
        """
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                return False
            self._epoch += 1
            self._current = max(1, self._current // 2)
            self._successes = 0
            return True

    def succeeded(self) -> None:
        """A call went through: after a window's worth of them, let one more call in."""
        with self._lock:
            if self._current >= self._limit:
                return
            self._successes += 1
            if self._successes < self._current:
                return
            self._successes = 0
            self._current += 1
        self._wake()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._active < self._current and not self._waiters:
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
                if not self._waiters or self._active >= self._current:
                    return
                loop, fut = self._waiters.popleft()
                self._take()
            try:
                loop.call_soon_threadsafe(_grant, fut)
            except RuntimeError:  # the waiter's loop is closed: give the slot back
                with self._lock:
                    self._active -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """``async with limiter.slot() as epoch:`` holds one slot for the body.

        ``epoch`` is the limiter's :attr:`epoch` when the slot was granted, for :meth:`throttle`.
        """
        await self.acquire()
        try:
            yield self._epoch
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
