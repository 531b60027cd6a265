"""The store's clock: what "now" means for leases, heartbeats, expiries and timestamps.

A clock is any callable returning seconds since the epoch. By default SQLite reads this machine's
clock and PostgreSQL the database server's (so workers on many machines agree on expiry); a test
injects :class:`holdfast.testing.FakeClock` instead and moves time forward without sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Seconds since the epoch, as a float."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    """This machine's wall clock."""
    return time.time()
