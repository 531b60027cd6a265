"""Persistence plumbing, no policy: SQLite and PostgreSQL connections, one ``Backend``, migrations.

Each layer keeps its own tables and SQL next to its logic, written once over the
:class:`Backend` for both dialects: the control plane in ``holdfast.harness``, continuity memory
in ``holdfast.session``, RLM traces in ``holdfast.rlm``, the model call log in ``holdfast.lm``.
:func:`open_url` opens a backend from a URL (``postgresql://...``) or a SQLite path.
"""

from typing import Any

from holdfast.store.backend import (
    POSTGRES,
    RANG,
    SQLITE,
    WAITED,
    Backend,
    Dialect,
    Handle,
    Row,
    as_backend,
    open_url,
    upsert,
)
from holdfast.store.clock import Clock, system_clock
from holdfast.store.errors import (
    StoreBusy,
    StoreConflict,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreRejected,
    StoreUnavailable,
    UniqueViolation,
)
from holdfast.store.migrations import Migration, migrate, schema_version
from holdfast.store.postgres import PostgresDB
from holdfast.store.postgres_backend import PostgresBackend
from holdfast.store.sqlite import SQLiteDB
from holdfast.store.sqlite_backend import SQLiteBackend
from holdfast.store.urls import redact

__all__ = [
    "POSTGRES",
    "RANG",
    "SQLITE",
    "WAITED",
    "Backend",
    "Clock",
    "Dialect",
    "Handle",
    "Migration",
    "PostgresBackend",
    "PostgresDB",
    "Row",
    "SQLiteBackend",
    "SQLiteDB",
    "StoreBusy",
    "StoreConflict",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreRejected",
    "StoreUnavailable",
    "UniqueViolation",
    "as_backend",
    "migrate",
    "open_url",
    "redact",
    "schema_version",
    "system_clock",
    "upsert",
]


def __getattr__(name: str) -> Any:
    # ``holdfast.store.CallLog`` was the model call log before it moved next to the models.
    if name == "CallLog":
        import warnings

        warnings.warn(
            "holdfast.store.CallLog moved to holdfast.lm.CallLog; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        from holdfast.lm.calllog import CallLog

        return CallLog
    raise AttributeError(f"module 'holdfast.store' has no attribute {name!r}")
