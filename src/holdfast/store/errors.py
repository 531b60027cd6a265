"""The store's errors: every driver exception leaves ``holdfast.store`` as one of these.

They are sorted by who can act on them (see ``holdfast.errors``): the runtime retries the
retryable ones (a locked file, a server that went away, a full disk, a transaction conflict);
the user fixes the others (a wrong password or database name, a corrupted file). Messages name
the database the way :func:`holdfast.store.urls.redact` prints it: never with a password.
"""

from __future__ import annotations

from holdfast.errors import ConfigError, HoldfastError, RetryableFailure, RuntimeFailure


class StoreError(HoldfastError):
    """Base of every error raised by the store's plumbing."""

    code = "store_error"


class StoreBusy(StoreError, RetryableFailure):
    """The database stayed locked by another writer past the busy timeout."""

    code = "store_busy"


class StoreUnavailable(StoreError, RetryableFailure):
    """The database cannot be reached right now (server down, network gone)."""

    code = "store_unavailable"


class StoreConflict(StoreError, RetryableFailure):
    """The transaction lost a race (deadlock, serialisation failure) and may be run again."""

    code = "store_conflict"


class StoreFull(StoreError, RetryableFailure):
    """The disk holding the database is full. Nothing was written; retry once space is freed."""

    code = "store_full"


class StoreCorrupt(StoreError, RuntimeFailure):
    """The database file is damaged: reads may still work, writes are refused."""

    code = "store_corrupt"


class StoreRejected(StoreError, ConfigError):
    """The server answered and refused us (wrong password, unknown user or database, bad URL):
    retrying cannot help, the configuration must change."""

    code = "store_rejected"


class UniqueViolation(StoreError, RuntimeFailure):
    """A row with the same unique key exists (raised to the layer, which decides what it means)."""

    code = "unique_violation"


__all__ = [
    "StoreBusy",
    "StoreConflict",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreRejected",
    "StoreUnavailable",
    "UniqueViolation",
]
