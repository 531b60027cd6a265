"""Waking one idle worker per new task, instead of every listening worker (PostgreSQL).

A ``NOTIFY`` reaches every listener, so announcing each submitted task on one channel wakes every
idle worker, and all but one of them then look for work in vain: the cost of a task grew with the
number of workers. Instead an idle worker *registers* (a row of ``harness_idle``: its own
notification channel and the queues and kinds it takes) and a submit, after its transaction
committed, *claims* one registered worker that can take the task (an ``UPDATE ... RETURNING`` that
marks the registration as rung, for that task, so two submits never wake the same worker for two
tasks) and wakes that worker alone. Until the woken worker leases (which removes its
registration), or for :data:`ANNOUNCED_S` at most, other workers' looks for work leave that task
to it: otherwise every worker that looks at the moment (one whose task just ended, one that just
registered) races the woken one for it, and the losers lease in vain, register and look again.

It wakes it by ringing its *doorbell*, not by a notification: PostgreSQL (15 and before) signals
every listening backend of the database on every ``NOTIFY``, whatever its channel, and each of
them then reads the notification queue in a transaction of its own, about 25 microseconds of
server CPU per listening worker per task (measured: 90 us per notify with no listener, 433 with 16,
1,750 with 64). A worker's listening connection waits in ``pg_sleep`` and publishes its backend
(``harness_doorbells``: pid and start time, so a reused pid is never rung); the submit cancels
that one backend's sleep (``pg_cancel_backend``), which signals it alone. Where the submitter's
role may not signal that backend (another role, or a superuser's backend), or the bell is gone,
the wake-up falls back to a notification on the worker's own channel.

No task is left unannounced. A worker registers first and then looks for work once more; a
submit commits its task first and then claims a worker. If the claim saw no registration, it ran
before the registration committed, so the worker's second look came after the task committed,
and found it. (A worker that is busy is not registered: it looks for work as soon as it is free.)
A worker that died while registered is claimed at most once (then its row is marked); rows not
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


def _v2(d: Dialect) -> str:
    return """
    CREATE TABLE harness_doorbells (
        worker TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        started TEXT NOT NULL
    );
    """


def _v3(d: Dialect) -> str:
    """A claim marks the registration instead of deleting it: when and for which task its
    worker was woken, so other workers' looks leave that task to it (:func:`announced`)."""
    return f"""
    ALTER TABLE harness_idle ADD COLUMN rung_at {d.float};
    ALTER TABLE harness_idle ADD COLUMN rung_for TEXT;
    """


MIGRATIONS: list[Migration] = [_v1, _v2, _v3]

ANNOUNCED_S = 0.5
"""How long a task a submit woke a worker for is left to that worker by the looks of others
(unless it leases meanwhile, which ends that): past this the worker is presumed slow or gone
and any look takes the task."""


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
    with backend.reader() as h:  # one statement, so one transaction of its own
        backend.run(h, *register_statement(backend, worker_id, queues, kinds))


def register_statement(
    backend: Backend,
    worker_id: str,
    queues: Sequence[str] | None,
    kinds: Sequence[str],
) -> tuple[str, tuple[Any, ...]]:
    """The statement of :func:`register_idle`, to ride in another round trip (after a
    finish's commit)."""
    clock, clock_params = backend.now_sql()
    return (
        f"WITH t AS (SELECT {clock} AS now), "
        "gone AS (DELETE FROM harness_idle WHERE since < (SELECT now FROM t) - ?) "
        "INSERT INTO harness_idle (worker, channel, queues, kinds, since) "
        "SELECT ?, ?, ?, ?, now FROM t ON CONFLICT (worker) DO UPDATE SET "
        "channel = excluded.channel, queues = excluded.queues, kinds = excluded.kinds, "
        "since = excluded.since, rung_at = NULL, rung_for = NULL",
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
        backend.run(h, *unregister_statement(worker_id))


def unregister_statement(worker_id: str) -> tuple[str, tuple[Any, ...]]:
    """The statement of :func:`unregister_idle`, to ride in another round trip (a lease's):
    it also ends a claim's mark, so the task it was for is any worker's to find again."""
    return "DELETE FROM harness_idle WHERE worker = ?", (worker_id,)


def announced(clock: str) -> str:
    """The ``AND ...`` clause a look for work adds (PostgreSQL): not a task some submit just
    woke another worker for, while that worker has not leased (its registration still carries
    the claim's mark) and for at most :data:`ANNOUNCED_S`. Without it the woken worker and
    every worker that happens to look (a task's end, a registration) race for each new task,
    and all but one lease in vain, then register and look again. ``clock`` is the look's
    time (a SQL expression whose parameters the caller passes once more)."""
    return (
        " AND NOT EXISTS (SELECT 1 FROM harness_idle r WHERE r.rung_for = harness_tasks.id "
        f"AND r.rung_at > {clock} - {ANNOUNCED_S})"
    )


# The backend of ``d`` (a row of harness_doorbells), when it still is the one that published the
# bell and this session's role may signal it (the rule pg_cancel_backend enforces).
_BELL = (
    "LEFT JOIN LATERAL (SELECT s.pid FROM pg_stat_get_activity(COALESCE(d.pid, -1)) s "
    "WHERE s.backend_start::text = d.started AND pg_has_role(s.usesysid, 'MEMBER') "
    "AND (NOT (SELECT rolsuper FROM pg_roles WHERE oid = s.usesysid) "
    "OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))) a ON true"
)


def doorbell_statements(worker_id: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Run by a worker's listening connection once it listens: publish its doorbell (this
    backend), dropping the bells of backends that are gone."""
    return [
        (
            "DELETE FROM harness_doorbells d WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
            "WHERE a.pid = d.pid AND (a.backend_start IS NULL OR a.backend_start::text = d.started))",
            (),
        ),
        (
            "INSERT INTO harness_doorbells (worker, pid, started) "
            "SELECT ?, pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid() "
            "ON CONFLICT (worker) DO UPDATE SET pid = excluded.pid, started = excluded.started",
            (worker_id,),
        ),
    ]


BELL_WAIT_S = 0.5
"""How long one doorbell wait of a worker's listening connection lasts."""


def wait_statement(worker_id: str) -> tuple[str, tuple[Any, ...]]:
    """The statement a worker's listening connection waits in: a sleep the doorbell cuts
    short, which also reads, as of its start, whether the worker's registration is still there.
    The server drops a cancel that arrives between two waits; a registration that a submit
    claimed meanwhile is gone by the next wait's start, so the worker learns of it within
    :data:`BELL_WAIT_S` all the same."""
    return (
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM harness_idle WHERE worker = ? "
        "AND rung_at IS NULL) THEN 'registered' ELSE 'absent' END AS seen, pg_sleep(?)",
        (worker_id, BELL_WAIT_S),
    )


def doorbell_gone(worker_id: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Run by the listening connection before it closes."""
    return [("DELETE FROM harness_doorbells WHERE worker = ?", (worker_id,))]


def ring(backend: Backend, worker_id: str) -> bool:
    """Ring ``worker_id``'s doorbell (steering for the task it runs); whether it rang."""
    if not backend.notifies:
        return False
    with backend.reader() as h:
        rows = backend.rows(
            h,
            "SELECT pg_cancel_backend(a.pid) AS rang FROM harness_doorbells d "
            + _BELL
            + " WHERE d.worker = ? AND a.pid IS NOT NULL",
            (worker_id,),
        )
    return any(r["rang"] for r in rows)


def wake_one(
    backend: Backend, queue: str, kind: str, payload: str, task_id: str | None = None
) -> bool:
    """Claim one registered worker that can take a task of ``queue`` and ``kind`` and notify
    it (the most recently idle first: the others' registrations may be stale); whether one was.
    Run after the task's transaction committed (see the module docstring). With ``task_id``
    the claim marks it as that task's, so other workers' looks leave it to the woken one."""
    stmt = wake_statement(backend, queue, kind, payload, 1, task_id)
    if stmt is None:
        return False
    with backend.reader() as h:
        return len(backend.rows(h, *stmt)) > 0


def wake_some(backend: Backend, queue: str, kind: str, payload: str, n: int) -> int:
    """:func:`wake_one` for ``n`` tasks committed together: claim and notify up to ``n``
    registered workers; how many were."""
    stmt = wake_statement(backend, queue, kind, payload, n)
    if stmt is None:
        return 0
    with backend.reader() as h:
        return len(backend.rows(h, *stmt))


def wake_statement(
    backend: Backend,
    queue: str,
    kind: str,
    payload: str,
    n: int = 1,
    task_id: str | None = None,
) -> tuple[str, tuple[Any, ...]] | None:
    """The one statement of :func:`wake_some` (to run after the task's commit, in the same
    round trip), or None where nobody listens. A claimed registration is marked (when, and
    for ``task_id`` if given), not deleted: the woken worker's lease removes it, and until
    then it is claimed no more and other workers' looks leave ``task_id`` to it."""
    if not backend.notifies or n < 1:
        return None
    clock, clock_params = backend.now_sql()
    # ring each claimed worker's bell; notify its channel where that cannot be done
    return (
        f"WITH w AS (UPDATE harness_idle SET rung_at = {clock}, rung_for = ? WHERE worker IN ("
        "SELECT worker FROM harness_idle WHERE rung_at IS NULL "
        "AND (queues IS NULL OR strpos(queues, ?) > 0) "
        "AND strpos(kinds, ?) > 0 ORDER BY since DESC LIMIT ?"
        + backend.dialect.skip_locked
        + ") AND rung_at IS NULL RETURNING worker, channel) "
        "SELECT CASE WHEN pg_cancel_backend(a.pid) THEN 'rang' "
        "ELSE 'notified' || COALESCE(pg_notify(w.channel, ?)::text, '') END AS sent "
        "FROM w LEFT JOIN harness_doorbells d ON d.worker = w.worker " + _BELL,
        (*clock_params, task_id, _SEP + queue + _SEP, _SEP + kind + _SEP, n, payload),
    )
