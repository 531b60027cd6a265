"""Where continuity memory is kept: beside the control plane, on the same database.

An ``agent`` task's virtual session must live where every worker that may take the task over can
read it. With a PostgreSQL control plane that is the same PostgreSQL database; with the embedded
SQLite store it is the same SQLite file.
"""

from __future__ import annotations

import os
from typing import Any

from holdfast.config import default_db_path
from holdfast.session.store import SQLSessionStore
from holdfast.store import Backend, Clock, open_url


def open_session_store(
    target: str | os.PathLike[str] | Backend | Any | None = None,
    *,
    clock: Clock | None = None,
) -> SQLSessionStore:
    """The session store for ``target``: a database URL or SQLite path, a backend, or any store
    with a ``backend`` (the control plane's), whose database it then shares.

    ``postgresql://...`` opens PostgreSQL; ``sqlite:///path``, a path, or nothing (the default
    ``<holdfast home>/holdfast.db``) opens SQLite. Given a store or a backend, the session store
    opens its own connections to the same database (an in-memory SQLite control plane falls back
    to the default file, which other processes can read).
    """
    backend = getattr(target, "backend", target)
    if isinstance(backend, Backend):
        if backend.connection_url == ":memory:":
            return SQLSessionStore(open_url(default_db_path(), clock=clock or backend.clock))
        return SQLSessionStore(backend.sibling())
    if target is not None and not isinstance(target, str | os.PathLike):
        raise TypeError(f"cannot open a session store on {type(target).__name__}")
    return SQLSessionStore(open_url(target, clock=clock, default=default_db_path))
