"""Persistence: the one place that knows SQL.

``SQLiteDB`` and ``migrate`` are the embedded default shared by every component; the control
plane's PostgreSQL backend lives beside them.
"""

from holdfast.store.calllog import CallLog
from holdfast.store.sqlite import SQLiteDB, StoreBusy, migrate

__all__ = ["CallLog", "SQLiteDB", "StoreBusy", "migrate"]
