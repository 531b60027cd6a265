"""A clock that moves only when told to: lease, heartbeat and expiry tests without sleeping.

Pass it as ``clock=`` to a store (``Harness.open(url, clock=clock)``, ``open_store``,
``open_session_store``, ``holdfast.store.open_url``) and every "now" the store uses (lease
expiry, heartbeats, the reaper, approval expiry, retry delays, timestamps) reads it instead of
the wall clock or the database server's clock::

    clock = FakeClock()
    h = Harness.open(url, clock=clock)
    task, token = h.store.lease("w1", None, ttl_s=30)
    clock.advance(31)
    assert h.store.reap() == [task.id]
"""

from __future__ import annotations

import threading

DEFAULT_START = 1_700_000_000.0
"""2023-11-14 22:13:20 UTC: a fixed, realistic epoch time, so stored timestamps look like ones."""


class FakeClock:
    """Seconds since the epoch, advanced by hand. Thread-safe; never goes backwards."""

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0); returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"a clock cannot move backwards or by {seconds!r} seconds")
        with self._lock:
            self._now += float(seconds)
            return self._now

    def set(self, when: float) -> None:
        """Jump to ``when``, which must not be earlier than now."""
        with self._lock:
            if not when >= self._now:
                raise ValueError(f"a clock cannot move backwards (from {self._now} to {when!r})")
            self._now = float(when)

    def __repr__(self) -> str:
        return f"FakeClock({self():.3f})"
