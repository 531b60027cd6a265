"""Where continuity memory is kept: beside the control plane, on the same database.

An ``agent`` task's virtual session must live where every worker that may take the task over can
read it. With a PostgreSQL control plane that is the same PostgreSQL database; with the embedded
SQLite store it is the same SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from holdfast.config import default_db_path
from holdfast.store.session_sql import SQLSessionStore
from holdfast.store.sqlite import SQLiteDB

if TYPE_CHECKING:
    from holdfast.store.harness_sql import SQLHarnessStore

_POSTGRES = ("postgresql://", "postgres://")


def open_session_store(
    target: str | os.PathLike[str] | SQLHarnessStore | None = None,
) -> SQLSessionStore:
    """The session store for ``target``: a database URL or SQLite path, or a control-plane store.

    ``postgresql://...`` opens PostgreSQL; ``sqlite:///path``, a path, or nothing (the default
    ``<holdfast home>/holdfast.db``) opens SQLite. Given a control-plane store, the session store
    uses the same database (an in-memory SQLite control plane falls back to the default file).
    """
    if target is None or isinstance(target, str | os.PathLike):
        text = os.fspath(target) if target is not None else ""
        if text.startswith(_POSTGRES):
            from holdfast.store.session_postgres import PostgresSessionStore

            return PostgresSessionStore(text)
        if text.startswith("sqlite:///"):
            text = text[len("sqlite:///") - 1 :]
        return _sqlite(Path(text) if text else default_db_path())
    from holdfast.store.harness_postgres import PostgresHarnessStore

    if isinstance(target, PostgresHarnessStore):
        from holdfast.store.session_postgres import PostgresSessionStore

        return PostgresSessionStore(target.connection_url)
    db = getattr(target, "db", None)
    if isinstance(db, SQLiteDB) and str(db.path) != ":memory:":
        return _sqlite(db.path)
    return _sqlite(default_db_path())


def _sqlite(path: Path) -> SQLSessionStore:
    from holdfast.store.session_sqlite import SessionStore

    return SessionStore(SQLiteDB(path))
