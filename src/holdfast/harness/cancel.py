"""A cancellation signal that threads and asyncio code can both observe.

The worker sets it when a ``stop`` arrives (or the lease is lost, or the wall-clock budget runs
out); model calls, RLM jobs and long effects check it or wait on it so in-flight work ends within
a bounded time instead of at the next step boundary.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TypeVar

from holdfast.errors import Cancelled

T = TypeVar("T")


class CancelToken:
    """Set once, observed many times. ``reason`` says why it was set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "stopped") -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.event.is_set():
            raise Cancelled(f"cancelled: {self.reason}", reason=self.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with :class:`Cancelled`) if the token fires."""
        if self.event.wait(max(0.0, seconds)):
            self.raise_if_cancelled()

    async def wait(self, poll_s: float = 0.05) -> None:
        """Return when the token fires (polls so any event loop and thread can use it)."""
        while not self.event.is_set():
            await asyncio.sleep(poll_s)

    async def guard(self, awaitable: Awaitable[T], poll_s: float = 0.05) -> T:
        """Await ``awaitable``; if the token fires first, cancel it and raise :class:`Cancelled`."""
        self.raise_if_cancelled()
        work = asyncio.ensure_future(awaitable)
        watcher = asyncio.ensure_future(self.wait(poll_s))
        try:
            done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if work in done:
            return work.result()
        work.cancel()
        try:
            await work
        except (asyncio.CancelledError, Exception):
            pass
        raise Cancelled(f"cancelled: {self.reason}", reason=self.reason)
