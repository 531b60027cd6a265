"""Waking one idle worker per new task, instead of every listening worker (PostgreSQL).

A ``NOTIFY`` reaches every listener, so announcing each submitted task on one channel wakes every
idle worker, and all but one of them then look for work in vain: the cost of a task grew with the
number of workers. Instead an idle worker *registers* (a row of ``harness_idle``: its own
notification channel and the queues and kinds it takes) and a submit, after its transaction
committed, *claims* one registered worker that can take the task (``DELETE ... RETURNING``, so two
submits never wake the same worker for two tasks) and notifies that worker's channel alone.

No task is left unannounced. A worker registers first and then looks for work once more; a
submit commits its task first and then claims a worker. If the claim saw no registration, it ran
before the registration committed, so the worker's second look came after the task committed,
and found it. (A worker that is busy is not registered: it looks for work as soon as it is free.)
A worker that died while registered is claimed at most once (then its row is gone); rows not
refreshed for :data:`STALE_S` are removed by the next registration. Whatever else goes wrong,
idle workers still poll every ``notify_poll_s``.

Events other than a submit (a release, a decision, a resume, a reaped lease) are rarer and are
announced to every worker on the tasks channel, with the task's queue and kind so that workers
which could not take it sleep on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from holdfast.store import Backend, Dialect, Migration

COMPONENT = "harness_wake"
STALE_S = 120.0
"""A registration older than this (its worker did not refresh it) is presumed dead."""
_SEP = "\x1f"


def _v1(d: Dialect) -> str:
    return f"""
    CREATE TABLE harness_idle (
        worker TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        queues TEXT,
        kinds TEXT NOT NULL,
        since {d.float} NOT NULL
    );
    """


MIGRATIONS: list[Migration] = [_v1]


def worker_channel(worker_id: str) -> str:
    """The notification channel of one worker (a valid unquoted-length identifier)."""
    import hashlib

    return "holdfast_w_" + hashlib.sha256(worker_id.encode()).hexdigest()[:24]


def _names(values: Sequence[str]) -> str:
    return _SEP + _SEP.join(values) + _SEP


def register_idle(
    backend: Backend,
    worker_id: str,
    queues: Sequence[str] | None,
    kinds: Sequence[str],
) -> None:
    """Say that ``worker_id`` waits for a task of ``queues`` (None: any) and ``kinds``; stale
    registrations of vanished workers are dropped on the way."""
    if not backend.notifies:
        return
    clock, clock_params = backend.now_sql()
    with backend.reader() as h:  # one statement, so one transaction of its own
        backend.run(
            h,
            f"WITH t AS (SELECT {clock} AS now), "
            "gone AS (DELETE FROM harness_idle WHERE since < (SELECT now FROM t) - ?) "
            "INSERT INTO harness_idle (worker, channel, queues, kinds, since) "
            "SELECT ?, ?, ?, ?, now FROM t ON CONFLICT (worker) DO UPDATE SET "
            "channel = excluded.channel, queues = excluded.queues, kinds = excluded.kinds, "
            "since = excluded.since",
            (
                *clock_params,
                STALE_S,
                worker_id,
                worker_channel(worker_id),
                _names(queues) if queues else None,
                _names(kinds),
            ),
        )


def unregister_idle(backend: Backend, worker_id: str) -> None:
    """``worker_id`` no longer waits (it found work by itself, or it stops)."""
    if not backend.notifies:
        return
    with backend.reader() as h:
        backend.run(h, "DELETE FROM harness_idle WHERE worker = ?", (worker_id,))


def wake_one(backend: Backend, queue: str, kind: str, payload: str) -> bool:
    """Claim one registered worker that can take a task of ``queue`` and ``kind`` and notify
    it (the most recently idle first: the others' registrations may be stale); whether one was.
    Run after the task's transaction committed (see the module docstring)."""
    return wake_some(backend, queue, kind, payload, 1) > 0


def wake_some(backend: Backend, queue: str, kind: str, payload: str, n: int) -> int:
    """:func:`wake_one` for ``n`` tasks committed together: claim and notify up to ``n``
    registered workers; how many were."""
    stmt = wake_statement(backend, queue, kind, payload, n)
    if stmt is None:
        return 0
    with backend.reader() as h:
        return len(backend.rows(h, *stmt))


def wake_statement(
    backend: Backend, queue: str, kind: str, payload: str, n: int = 1
) -> tuple[str, tuple[Any, ...]] | None:
    """The one statement of :func:`wake_some` (to run after the task's commit, in the same
    round trip), or None where nobody listens."""
    if not backend.notifies or n < 1:
        return None
    return (
        "WITH w AS (DELETE FROM harness_idle WHERE worker IN ("
        "SELECT worker FROM harness_idle WHERE (queues IS NULL OR strpos(queues, ?) > 0) "
        "AND strpos(kinds, ?) > 0 ORDER BY since DESC LIMIT ?"
        + backend.dialect.skip_locked
        + ") RETURNING channel) SELECT pg_notify(channel, ?) AS sent FROM w",
        (_SEP + queue + _SEP, _SEP + kind + _SEP, n, payload),
    )
