"""A cancellation signal that threads and asyncio code can both observe.

The worker sets it when a ``stop`` or ``pause`` arrives, the lease is lost, or the wall-clock
budget runs out; model calls, RLM jobs and long effects wait on it, so in-flight work ends within
a bounded time instead of at the next step boundary. Async waiters are woken by a callback the
moment it is set (no polling), on whatever event loop they run.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from holdfast.errors import Cancelled
from holdfast.lm.types import attach_usage, failed_usage

T = TypeVar("T")


class CancelToken:
    """Set once, observed many times. ``reason`` says why it was set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self, reason: str = "stopped") -> None:
        with self._lock:
            if self.event.is_set():
                return
            self.reason = reason
            self.event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a waiter whose loop is gone: nothing left to wake
                pass

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def is_set(self) -> bool:
        """The same as :attr:`cancelled`: lets the token stand wherever an Event is expected."""
        return self.event.is_set()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (once, from the cancelling thread) when the token fires; returns a
        function that unregisters it. Fires at once if the token is already set."""
        with self._lock:
            if not self.event.is_set():
                self._callbacks.append(callback)

                def unregister() -> None:
                    with self._lock:
                        if callback in self._callbacks:
                            self._callbacks.remove(callback)

                return unregister
        callback()
        return lambda: None

    def raise_if_cancelled(self) -> None:
        if self.event.is_set():
            raise Cancelled(f"cancelled: {self.reason}", reason=self.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with :class:`Cancelled`) if the token fires."""
        if self.event.wait(max(0.0, seconds)):
            self.raise_if_cancelled()

    async def wait(self) -> None:
        """Return when the token fires, woken from any thread without polling."""
        loop = asyncio.get_running_loop()
        fired: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            def settle() -> None:
                if not fired.done():
                    fired.set_result(None)

            loop.call_soon_threadsafe(settle)

        unregister = self.on_cancel(wake)
        try:
            await fired
        finally:
            unregister()

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``; if the token fires first, cancel it and raise :class:`Cancelled`.

        The work is cancelled as an asyncio task, so an HTTP request in flight is closed. What
        the cut-off work reported it had used (``holdfast.lm.types.failed_usage``) rides on the
        :class:`Cancelled`.
        """
        if self.is_set():
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started: close it rather than leave it unawaited
            self.raise_if_cancelled()
        work = asyncio.ensure_future(awaitable)
        watcher = asyncio.ensure_future(self.wait())
        try:
            done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if work in done:
            return work.result()
        err = Cancelled(f"cancelled: {self.reason}", reason=self.reason)
        await cut_off(work, err)
        raise err


async def cut_off(work: asyncio.Future[Any], err: BaseException) -> None:
    """Cancel ``work``, wait for it to end, and attach to ``err`` what it reported it used."""
    work.cancel()
    lost = None
    try:
        await work
    except (asyncio.CancelledError, Exception) as exc:
        lost = failed_usage(exc)
    if lost is not None:
        attach_usage(err, lost)
