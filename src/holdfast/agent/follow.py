"""An agent task's state follows the task: its traces and model calls go to the task's store.

A worker on any machine may take a task over, and anyone may look at it from anywhere, so the
default services of the ``agent`` kind keep what they write in the control plane's database
(PostgreSQL when there are many workers), not in the worker's own Holdfast home: the RLM traces
of ``analyze`` (``holdfast rlm trace ID --database-url URL`` shows and replays them from any
machine), and the model call log (filed under the task id). Services given by the caller are
left alone; only those marked :data:`FOLLOWS_TASK` by the defaults are moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from holdfast.store import Backend

FOLLOWS_TASK = "follows_task"
"""The attribute that marks a default service as one to move to the task's store."""


def follow_task(backend: Backend, lm: Any, analyzer: Any) -> Callable[[], None]:
    """Point the marked call log of ``lm`` and trace store of ``analyzer`` at ``backend``'s
    database (new connections of their own), unless they already write there; returns what
    closes those connections when the task's run ends."""
    from holdfast.lm.calllog import CallLog

    opened: list[Any] = []

    log: Any = getattr(lm, "call_log", None)
    if getattr(log, FOLLOWS_TASK, False) and not _same(log.backend, backend):
        moved = CallLog(backend.sibling())
        setattr(moved, FOLLOWS_TASK, True)
        lm.call_log = moved
        opened.append(moved.backend)
        log.backend.close()
    db = getattr(analyzer, "db", None)
    if getattr(analyzer, FOLLOWS_TASK, False) and not _same(db, backend):
        analyzer.db = backend.sibling()
        opened.append(analyzer.db)
        close = getattr(db, "close", None)
        if callable(close):
            close()

    def close_all() -> None:
        for b in opened:
            b.close()

    return close_all


def _same(db: Any, backend: Backend) -> bool:
    where = getattr(db, "connection_url", None)
    if where is None:
        path = getattr(db, "path", None)
        where = str(path) if path is not None else None
    return where is not None and str(where) == str(backend.connection_url)
