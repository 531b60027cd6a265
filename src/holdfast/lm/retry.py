"""Retries with exponential backoff and jitter, honouring ``Retry-After``.

What is retried: HTTP 408, 409, 429 and 5xx, timeouts and dropped or refused connections. What is
not: 400, 401, 403, 404, 422 and malformed replies, since sending the same request again cannot fix
them. A ``Retry-After`` (or ``retry-after-ms``) header sets the wait instead of the backoff; one
longer than ``max_retry_after`` ends the retries at once with a clear error.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from holdfast.errors import ConfigError

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them (seconds)."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    jitter: float = 0.25
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ConfigError("retry delays must be >= 0 and jitter within [0, 1]")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based) with no Retry-After."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        r = (rng or random).random()
        return delay * (1 - self.jitter * r)

    def delay(
        self, attempt: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """The wait before the next attempt: Retry-After when given (plus a little jitter)."""
        if retry_after is not None:
            return retry_after + min(0.1, retry_after * 0.05) * (rng or random).random()
        return self.backoff(attempt, rng)


NO_RETRY = RetryPolicy(max_attempts=1)


def should_retry_status(status: int) -> bool:
    return status in RETRY_STATUSES or 500 <= status < 600


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
