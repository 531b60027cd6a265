"""The core of the control-plane store: tasks and leases, over one Backend (SQLite or PostgreSQL).

The :class:`~holdfast.store.Backend` supplies the transaction, the clock, the statement runner and
the locking words of its dialect (``FOR UPDATE [SKIP LOCKED]`` on PostgreSQL; nothing on SQLite,
where ``BEGIN IMMEDIATE`` already serialises writers); the meaning is here. Every worker-side
mutation is *fenced*: it names the lease token it holds, and the store refuses it with
:class:`LeaseLost` once that lease has expired or moved on, so a stalled worker can never write
over its successor.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from holdfast.errors import RetryableFailure
from holdfast.harness import store_wake
from holdfast.harness.rows import (
    TERMINAL_STATUSES,
    Draft,
    LeaseLost,
    ReceiptRow,
    SealedReceipt,
    Sealer,
    SteeringRow,
    TaskNotFound,
    TaskRow,
    dumps,
    loads,
)
from holdfast.harness.schema import COMPONENT, MIGRATIONS
from holdfast.store import Backend, UniqueViolation, migrate

Row = dict[str, Any]

TASKS_CHANNEL = "holdfast_tasks"
"""Where a task that became ready is announced, with :func:`wake_payload` (PostgreSQL)."""
STEERING_CHANNEL = "holdfast_steering"
"""Where a steering command is announced, with the task id as payload (PostgreSQL)."""

_TASK_JSON = ("spec", "checkpoint", "result", "error", "usage", "waiting")

READ_WITH_LEASE_MAX = 256
"""A lease reads the chain of a task of at most this many receipts in its own transaction, for
the worker to verify before it runs the task (longer chains are read in batches afterwards)."""

_PENDING_STEERING = (
    "SELECT id, task_id, kind, message, created_at FROM harness_steering "
    "WHERE consumed_at IS NULL AND task_id IN ({marks}) ORDER BY id"
)


@dataclass(frozen=True)
class NewTask:
    """A task to create (:meth:`SQLHarnessCore.submit_many`), with its ``submitted`` receipt."""

    kind: str
    queue: str
    spec: dict[str, Any]
    priority: int
    max_attempts: int
    idempotency_key: str | None
    draft: Draft
    task_id: str | None = None


@dataclass(frozen=True)
class LeaseRead:
    """What a lease read in its own transaction, after its ``leased`` receipt: the task row, its
    step rows and its receipts as stored (unparsed: the verifier treats them as hostile), and
    the steering commands waiting for it."""

    task: Row
    steps: list[Row]
    receipts: list[ReceiptRow]
    steering: list[SteeringRow]


class IdleAfter(NamedTuple):
    """A worker that will be idle once a task ends: its id and what it can take."""

    worker: str
    queues: Sequence[str] | None
    kinds: Sequence[str]


class Lease(NamedTuple):
    """A task leased to run: the task, its lease token, what the lease read for the worker (or
    None: see :meth:`SQLHarnessCore.lease_to_run`), and whether another ready task of the same
    queues and kinds was waiting when the lease committed (the worker's next lease may then
    skip its look for work)."""

    task: TaskRow
    token: str
    read: LeaseRead | None
    more: bool
    also: tuple[Lease, ...] = ()
    """With ``limit`` above one, the further tasks leased in the same transaction, in the
    order the queue gives them (each with its own token and read)."""


def stored_receipt(r: Row) -> ReceiptRow:
    """A receipt row as stored, unparsed (the verifier treats every value as hostile)."""
    return ReceiptRow(r["task_id"], r["seq"], r["body"], r["hash"], r["sig"], r["key_id"])


def new_task_id() -> str:
    return f"task-{uuid.uuid4().hex[:16]}"


def steering_rows(rows: Sequence[Row]) -> list[SteeringRow]:
    return [
        SteeringRow(int(r["id"]), r["task_id"], r["kind"], r["message"], r["created_at"])
        for r in rows
    ]


_LIMIT_LOCK = 7_373_001


class SQLHarnessCore:
    """Tasks and leases over a backend; :class:`SQLHarnessStore` adds the rest."""

    def __init__(self, backend: Backend, sealer: Sealer) -> None:
        self.backend = backend
        self.sealer = sealer
        self._announced: dict[int, list[tuple[str, str]]] = {}  # open transaction -> wakes
        migrate(backend, COMPONENT, MIGRATIONS)
        migrate(backend, store_wake.COMPONENT, store_wake.MIGRATIONS)

    @property
    def url(self) -> str:
        """Where the store is, for messages (a path, or a URL without its password)."""
        return self.backend.url

    @property
    def connection_url(self) -> str:
        """The full location, password included, for layers that keep their tables beside."""
        return self.backend.connection_url

    @property
    def for_update(self) -> str:
        return self.backend.dialect.for_update

    @property
    def skip_locked(self) -> str:
        return self.backend.dialect.skip_locked

    # -- backend plumbing ------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A write transaction; yields the handle passed to :meth:`_run`. Once it committed,
        the work it announced (:meth:`_announce`) wakes one idle worker each."""
        wakes: list[tuple[str, str]] = []
        with self.backend.transaction() as h:
            self._announced[id(h)] = wakes
            try:
                yield h
            finally:
                self._announced.pop(id(h), None)
        for queue, kind in wakes:
            try:
                store_wake.wake_one(self.backend, queue, kind, wake_payload(queue, kind))
            except RetryableFailure:
                pass  # the announcement on the tasks channel still reaches every worker

    def _announce(self, handle: Any, queue: str, kind: str) -> None:
        """Say that a task of ``queue`` and ``kind`` is ready (a release, a decision, a
        resume, a reaped lease): announced to every worker when the transaction commits
        (:data:`TASKS_CHANNEL`, which a waiting worker reads within its doorbell wait), and
        then one idle worker that can take it is woken at once (:mod:`.store_wake`)."""
        self._notify(handle, TASKS_CHANNEL, wake_payload(queue, kind))
        pending = self._announced.get(id(handle))
        if pending is not None and self.backend.notifies:
            pending.append((queue, kind))

    def _reader(self) -> AbstractContextManager[Any]:
        """A handle for reads outside a write transaction."""
        return self.backend.reader()

    def _snapshot(self) -> AbstractContextManager[Any]:
        """A read-only transaction: every read through the handle sees one consistent state."""
        return self.backend.snapshot()

    def _run(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        """Run one statement (``?`` placeholders); return its rows and row count."""
        return self.backend.execute(handle, sql, params)

    def _executemany(self, handle: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.backend.executemany(handle, sql, rows)

    def _now(self, handle: Any) -> float:
        """The store's clock, in seconds since the epoch."""
        return self.backend.now(handle)

    def _notify(self, handle: Any, channel: str, payload: str) -> None:
        """Wake listeners (PostgreSQL NOTIFY); SQLite workers poll instead."""
        self.backend.notify(handle, channel, payload)

    def _limit_lock(self, handle: Any) -> None:
        """Serialise leasers while queue limits are counted (PostgreSQL advisory lock)."""
        self.backend.advisory_lock(handle, _LIMIT_LOCK)

    @property
    def notifies(self) -> bool:
        """Whether :meth:`listen` delivers new work and steering at once (else workers poll)."""
        return self.backend.notifies

    def listen(
        self,
        channels: Sequence[str],
        callback: Callable[[str, str], None],
        stop: threading.Event,
        ready: threading.Event | None = None,
        worker_id: str | None = None,
    ) -> None:
        """Call ``callback(channel, payload)`` for each notification until ``stop`` is set
        (``ready`` is set while notifications are delivered; see :meth:`Backend.listen`).
        With ``worker_id`` the connection is that worker's doorbell (:mod:`.store_wake`):
        ``callback(RANG, "")`` when a submit or a steering command rings it, and
        ``callback(WAITED, "registered" | "absent")`` after each wait that was not rung (what
        it read of the worker's idle registration as that wait began)."""
        if worker_id is None:
            self.backend.listen(channels, callback, stop, ready)
            return
        self.backend.listen(
            channels,
            callback,
            stop,
            ready,
            on_connect=store_wake.doorbell_statements(worker_id),
            on_close=store_wake.doorbell_gone(worker_id),
            wait=store_wake.wait_statement(worker_id),
        )

    # -- waking idle workers (PostgreSQL; see store_wake) --------------------------------------

    def wake_one(self, queue: str, kind: str) -> bool:
        """Notify one registered idle worker that can take a task of ``queue`` and ``kind``."""
        return store_wake.wake_one(self.backend, queue, kind, wake_payload(queue, kind))

    def register_idle(
        self, worker_id: str, queues: Sequence[str] | None, kinds: Sequence[str]
    ) -> None:
        """Register ``worker_id`` as waiting for work (then look for work once more)."""
        store_wake.register_idle(self.backend, worker_id, queues, kinds)

    def unregister_idle(self, worker_id: str) -> None:
        store_wake.unregister_idle(self.backend, worker_id)

    @staticmethod
    def worker_channel(worker_id: str) -> str:
        """The channel on which a registered idle worker is woken."""
        return store_wake.worker_channel(worker_id)

    def close(self) -> None:
        """Release connections."""
        self.backend.close()

    # -- helpers ---------------------------------------------------------------------------

    def _rows(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(handle, sql, params)[0]

    def _count(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(handle, sql, params)[1]

    def _any(self, sql: str, params: Sequence[Any]) -> bool:
        """A read outside any write lock, so idle pollers do not queue behind writers."""
        with self._reader() as h:
            return bool(self._rows(h, sql, params))

    def _clock(self) -> float:
        return self.backend.now()

    def _task(self, handle: Any, task_id: str, *, lock: bool = False) -> Row:
        rows = self._rows(
            handle,
            "SELECT * FROM harness_tasks WHERE id = ?" + (self.for_update if lock else ""),
            (task_id,),
        )
        if not rows:
            raise TaskNotFound(f"no task {task_id!r} in {self.url}", task_id=task_id)
        return rows[0]

    def _fenced(self, handle: Any, task_id: str, token: str) -> Row:
        row = self._task(handle, task_id, lock=True)
        if row["status"] != "running" or row["lease_token"] != token:
            raise LeaseLost(
                f"the lease on task {task_id} was lost (now {row['status']}); another worker "
                "may have taken it over",
                task_id=task_id,
            )
        return row

    def _append(
        self, handle: Any, task_id: str, draft: Draft, now: float, head: Row | None = None
    ) -> SealedReceipt:
        """Seal ``draft`` onto the task's chain and store it. ``head`` is the task's row as this
        transaction left it (``head_seq``, ``head_hash``, ``status``), when the caller has it."""
        return self._append_then(handle, task_id, draft, now, head)[0]

    def _append_then(
        self,
        handle: Any,
        task_id: str,
        draft: Draft,
        now: float,
        head: Row | None = None,
        then: Sequence[tuple[str, Sequence[Any]]] = (),
        *,
        commit: bool = False,
        after: Sequence[tuple[str, Sequence[Any]]] = (),
    ) -> tuple[SealedReceipt, list[tuple[list[Row], int]]]:
        """:meth:`_append`, then the statements ``then`` (their results returned), sent in one
        round trip with the transaction's commit when ``commit`` (and ``after`` it)."""
        if head is None:
            head = self._rows(
                handle,
                "SELECT head_seq, head_hash, status FROM harness_tasks WHERE id = ?",
                (task_id,),
            )[0]
        sealed, writes = self._sealed_writes(task_id, draft, now, head)
        results = self.backend.batch(handle, [*writes, *then], commit=commit, after=after)
        return sealed, results[len(writes) : len(writes) + len(then)]

    def _sealed_writes(
        self, task_id: str, draft: Draft, now: float, head: Row
    ) -> tuple[SealedReceipt, list[tuple[str, Sequence[Any]]]]:
        """``draft`` sealed onto the chain whose head is ``head``, and the statements that
        store it: the receipt and the task's new head, as one statement where the dialect
        allows writes in a ``WITH`` (PostgreSQL), else two."""
        sealed = self.sealer.seal(
            task_id, int(head["head_seq"]) + 1, head["head_hash"], now, draft, head["status"]
        )
        receipt = (
            "INSERT INTO harness_receipts (task_id, seq, body, hash, sig, key_id) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        receipt_params = (task_id, sealed.seq, sealed.body, sealed.hash, sealed.sig, sealed.key_id)
        move = "UPDATE harness_tasks SET head_seq = ?, head_hash = ?, head_sig = ? WHERE id = ?"
        move_params = (sealed.seq, sealed.hash, sealed.head_sig, task_id)
        if self.backend.dialect.writes_in_with:
            return sealed, [(f"WITH r AS ({receipt}) {move}", (*receipt_params, *move_params))]
        return sealed, [(receipt, receipt_params), (move, move_params)]

    @staticmethod
    def _receipt_from(source: str, sealed: SealedReceipt) -> tuple[str, tuple[Any, ...]]:
        """The insert of ``sealed`` for the task ``source`` (a ``WITH`` query) returned, if it
        returned one: the receipt rides in the statement that wrote the task."""
        return (
            "INSERT INTO harness_receipts (task_id, seq, body, hash, sig, key_id) "
            f"SELECT id, ?, ?, ?, ?, ? FROM {source}",
            (sealed.seq, sealed.body, sealed.hash, sealed.sig, sealed.key_id),
        )

    @staticmethod
    def _to_task(row: Row) -> TaskRow:
        data = dict(row)
        for key in _TASK_JSON:
            data[key] = loads(data[key])
        data["usage"] = data["usage"] or {}
        return TaskRow(**data)

    # -- tasks -----------------------------------------------------------------------------

    def submit(
        self,
        *,
        kind: str,
        queue: str,
        spec: dict[str, Any],
        priority: int,
        max_attempts: int,
        idempotency_key: str | None,
        draft: Draft,
        task_id: str | None = None,
    ) -> tuple[TaskRow, bool]:
        """Create a task (or return the one with the same idempotency key) with its receipt;
        once it is committed, wake one idle worker that can take it (:mod:`.store_wake`)."""
        try:
            row, created = self._submit(
                kind, queue, spec, priority, max_attempts, idempotency_key, draft, task_id
            )
        except UniqueViolation:
            if idempotency_key is None:
                raise
            # a concurrent submit with the same key won the race: return its task
            row, created = self._submit(
                kind, queue, spec, priority, max_attempts, idempotency_key, draft, task_id
            )
        return row, created

    def _submit(
        self,
        kind: str,
        queue: str,
        spec: dict[str, Any],
        priority: int,
        max_attempts: int,
        idempotency_key: str | None,
        draft: Draft,
        task_id: str | None,
    ) -> tuple[TaskRow, bool]:
        new = NewTask(kind, queue, spec, priority, max_attempts, idempotency_key, draft)
        if idempotency_key is None and self.backend.dialect.writes_in_with:
            return self._submit_at_once(new, task_id or new_task_id()), True
        with self._tx() as h:
            if idempotency_key is not None:
                found = self._rows(
                    h, "SELECT id FROM harness_tasks WHERE idempotency_key = ?", (idempotency_key,)
                )
                if found:
                    return self._to_task(self._task(h, found[0]["id"])), False
            new_id = task_id or new_task_id()
            row = self._rows(
                h,
                *self._insert_task(
                    NewTask(kind, queue, spec, priority, max_attempts, idempotency_key, draft),
                    new_id,
                ),
            )[0]
            # the wake-up runs once the task is committed, in the same round trip
            wake = store_wake.wake_statement(
                self.backend, queue, kind, wake_payload(queue, kind), task_id=new_id
            )
            sealed, _ = self._append_then(
                h,
                new_id,
                draft,
                float(row["created_at"]),
                head=row,
                commit=True,
                after=[wake] if wake is not None else (),
            )
            row.update(head_seq=sealed.seq, head_hash=sealed.hash, head_sig=sealed.head_sig)
            return self._to_task(row), True

    def _submit_at_once(self, t: NewTask, task_id: str) -> TaskRow:
        """A submit without an idempotency key as one statement, on a dialect with writes in
        ``WITH``: the task, born with its ``submitted`` receipt as its chain head, and the
        receipt; the commit and the wake-up follow in the same round trip. The receipt's time
        is this machine's clock (it records when the task was submitted; the row's times are
        the store's own)."""
        sealed = self.sealer.seal(task_id, 1, "", self.backend.local_now(), t.draft, "queued")
        clock, clock_params = self.backend.now_sql()
        receipt, receipt_params = self._receipt_from("ins", sealed)
        sql = (
            f"WITH t AS (SELECT {clock} AS now), ins AS ("
            "INSERT INTO harness_tasks (id, kind, queue, status, spec, priority, attempts, "
            "max_attempts, idempotency_key, run_after, usage, head_seq, head_hash, head_sig, "
            "created_at, updated_at) SELECT ?, ?, ?, 'queued', ?, ?, 0, ?, NULL, 0, '{}', "
            f"?, ?, ?, now, now FROM t RETURNING *), r AS ({receipt}) SELECT * FROM ins"
        )
        params = (
            *clock_params,
            task_id,
            t.kind,
            t.queue,
            dumps(t.spec),
            t.priority,
            t.max_attempts,
            sealed.seq,
            sealed.hash,
            sealed.head_sig,
            *receipt_params,
        )
        # the wake-up runs once the task is committed, in the same round trip
        wake = store_wake.wake_statement(
            self.backend, t.queue, t.kind, wake_payload(t.queue, t.kind), task_id=task_id
        )
        with self._tx() as h:
            rows = self.backend.batch(
                h, [(sql, params)], commit=True, after=[wake] if wake is not None else ()
            )[0][0]
        return self._to_task(rows[0])

    def _insert_task(self, t: NewTask, task_id: str) -> tuple[str, Sequence[Any]]:
        """The statement that inserts a new queued task (the clock read inside it)."""
        clock, clock_params = self.backend.now_sql()
        return (
            f"WITH t AS (SELECT {clock} AS now) "
            "INSERT INTO harness_tasks (id, kind, queue, status, spec, priority, attempts, "
            "max_attempts, idempotency_key, run_after, usage, head_seq, head_hash, "
            "created_at, updated_at) SELECT ?, ?, ?, 'queued', ?, ?, 0, ?, ?, 0, '{}', 0, '', "
            "now, now FROM t RETURNING *",
            (
                *clock_params,
                task_id,
                t.kind,
                t.queue,
                dumps(t.spec),
                t.priority,
                t.max_attempts,
                t.idempotency_key,
            ),
        )

    def submit_many(self, tasks: Sequence[NewTask]) -> list[tuple[TaskRow, bool]]:
        """Create many tasks in one transaction, each with its own ``submitted`` receipt (so a
        crash keeps all or none); then wake up to that many idle workers that can take them.
        A task whose idempotency key is already stored, or given earlier in ``tasks``, is not
        created again: its entry is the first task, with ``False``."""
        if not tasks:
            return []
        try:
            out = self._submit_many(tasks)
        except UniqueViolation:
            if all(t.idempotency_key is None for t in tasks):
                raise
            out = self._submit_many(tasks)  # a concurrent submit took a key: return its task
        created: dict[tuple[str, str], int] = {}
        for row, new in out:
            if new:
                created[(row.queue, row.kind)] = created.get((row.queue, row.kind), 0) + 1
        for (queue, kind), n in created.items():
            store_wake.wake_some(self.backend, queue, kind, wake_payload(queue, kind), n)
        return out

    def _submit_many(self, tasks: Sequence[NewTask]) -> list[tuple[TaskRow, bool]]:
        with self._tx() as h:
            keys = sorted({t.idempotency_key for t in tasks if t.idempotency_key is not None})
            stored: dict[str, Row] = {}
            for part in range(0, len(keys), 500):
                chunk = keys[part : part + 500]
                for r in self._rows(
                    h,
                    "SELECT * FROM harness_tasks WHERE idempotency_key IN "
                    f"({', '.join('?' for _ in chunk)})",
                    chunk,
                ):
                    stored[r["idempotency_key"]] = r
            inserts: list[tuple[str, Sequence[Any]]] = []
            fresh: list[NewTask] = []
            plan: list[tuple[str, Any]] = []  # ("stored", key) | ("new", index) | ("again", i)
            first: dict[str, int] = {}
            for t in tasks:
                key = t.idempotency_key
                if key is not None and key in stored:
                    plan.append(("stored", key))
                elif key is not None and key in first:
                    plan.append(("again", first[key]))
                else:
                    if key is not None:
                        first[key] = len(fresh)
                    plan.append(("new", len(fresh)))
                    inserts.append(self._insert_task(t, t.task_id or new_task_id()))
                    fresh.append(t)
            rows = [r[0][0] for r in self.backend.batch(h, inserts)]
            writes: list[tuple[str, Sequence[Any]]] = []
            for row, t in zip(rows, fresh, strict=True):
                sealed, stmts = self._sealed_writes(
                    row["id"], t.draft, float(row["created_at"]), row
                )
                writes.extend(stmts)
                row.update(head_seq=sealed.seq, head_hash=sealed.hash, head_sig=sealed.head_sig)
            self.backend.batch(h, writes, commit=True)
        made = [self._to_task(r) for r in rows]
        out: list[tuple[TaskRow, bool]] = []
        for how, ref in plan:
            if how == "stored":
                out.append((self._to_task(stored[ref]), False))
            else:
                out.append((made[ref], how == "new"))
        return out

    def get(self, task_id: str) -> TaskRow:
        with self._reader() as h:
            return self._to_task(self._task(h, task_id))

    def list_tasks(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 100
    ) -> list[TaskRow]:
        sql = "SELECT * FROM harness_tasks WHERE 1 = 1"
        params: list[Any] = []
        if status:
            sql += " AND status = ?"
            params.append(status)
        if queue:
            sql += " AND queue = ?"
            params.append(queue)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        params.append(limit)
        with self._reader() as h:
            return [self._to_task(r) for r in self._rows(h, sql, params)]

    def counts(self) -> dict[str, int]:
        """How many tasks are in each status."""
        with self._reader() as h:
            rows = self._rows(h, "SELECT status, COUNT(*) AS n FROM harness_tasks GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    def set_queue_limit(self, queue: str, max_running: int | None) -> None:
        """Cap how many tasks of ``queue`` run at once across all workers (``*``: globally)."""
        with self._tx() as h:
            self._run(h, "DELETE FROM harness_queues WHERE name = ?", (queue,))
            if max_running is not None:
                self._run(
                    h,
                    "INSERT INTO harness_queues (name, max_running) VALUES (?, ?)",
                    (queue, max_running),
                )

    # -- leases ----------------------------------------------------------------------------

    def lease(
        self,
        owner: str,
        queues: Sequence[str] | None,
        ttl_s: float,
        kinds: Sequence[str] | None = None,
        task_ids: Sequence[str] | None = None,
        *,
        look_first: bool = True,
    ) -> tuple[TaskRow, str] | None:
        """Take the next ready task (of ``queues``, ``kinds`` and ``task_ids``, if given) with a
        fresh token.

        With ``look_first`` (the default) a read outside any write lock checks that there is
        work first, so idle pollers cost one cheap read; a worker told that a task is waiting
        for it leases without it."""
        got = self.lease_to_run(owner, queues, ttl_s, kinds, task_ids, look_first=look_first)
        return None if got is None else (got[0], got[1])

    def lease_to_run(
        self,
        owner: str,
        queues: Sequence[str] | None,
        ttl_s: float,
        kinds: Sequence[str] | None = None,
        task_ids: Sequence[str] | None = None,
        *,
        look_first: bool = True,
        unregister: bool = False,
        limit: int = 1,
    ) -> Lease | None:
        """:meth:`lease`, also returning what a worker reads before it runs the task (its chain,
        steps and waiting steering; :class:`LeaseRead`), read in the lease's own transaction
        when the chain is short (else None: the worker reads it afterwards), and whether more
        work was waiting. With ``unregister`` a successful lease also removes ``owner``'s idle
        registration (:mod:`.store_wake`), in the same round trip. With ``limit`` above one,
        up to that many ready tasks are leased in the one transaction (:attr:`Lease.also`),
        when no queue limits apply."""
        if (kinds is not None and not kinds) or (task_ids is not None and not task_ids):
            return None
        where, filters = _ready_filter(queues, kinds, task_ids)
        clock, clock_params = self.backend.now_sql()
        if look_first and not self._any(*_look(self.backend, clock, clock_params, where, filters)):
            return None
        with self._tx() as h:
            got = self._claim(h, owner, ttl_s, where, filters, unregister, max(1, limit))
            if got is not None:
                return got
            # nothing claimed: the queue emptied meanwhile, or queue limits apply
            limited = self.backend.batch(
                h, [("SELECT 1 AS x FROM harness_queues LIMIT 1", ())], commit=True
            )[0][0]
            if not limited:
                return None
        leased = self._lease_limited(owner, ttl_s, where, filters)
        if leased is None:
            return None
        if unregister:
            store_wake.unregister_idle(self.backend, owner)
        return Lease(leased[0], leased[1], None, True)

    def _claim(
        self,
        h: Any,
        owner: str,
        ttl_s: float,
        where: str,
        filters: Sequence[Any],
        unregister: bool = False,
        limit: int = 1,
    ) -> Lease | None:
        """Lease the first ready tasks (up to ``limit``) in one statement (the store's own clock
        read inside it), unless queue limits are set (then :meth:`_lease_limited` counts them
        first). The receipts, the worker's reads and the look for more work follow in one round
        trip with the commit."""
        clock, clock_params = self.backend.now_sql()
        token = uuid.uuid4().hex
        rows = self._rows(
            h,
            # the pick is materialized: a subquery under IN may be run again for each row
            # compared with it, and each run's LIMIT (with SKIP LOCKED) would lease more
            f"WITH t AS (SELECT {clock} AS now), picked AS MATERIALIZED ("
            "SELECT id FROM harness_tasks WHERE status = 'queued' "
            "AND run_after <= (SELECT now FROM t)"
            + where
            + " ORDER BY priority DESC, created_at, id LIMIT ?"
            + self.skip_locked
            + ") UPDATE harness_tasks SET status = 'running', lease_owner = ?, "
            "lease_token = ? || id, "
            "lease_expires = (SELECT now FROM t) + ?, heartbeat_at = (SELECT now FROM t), "
            "attempts = attempts + 1, updated_at = (SELECT now FROM t) "
            "WHERE id IN (SELECT id FROM picked) AND status = 'queued' "
            "AND NOT EXISTS (SELECT 1 FROM harness_queues) RETURNING *",
            [*clock_params, *filters, limit, owner, token, ttl_s],
        )
        if not rows:
            return None
        # one token per task (a token fences one lease, never a batch of them): the fresh
        # random part, then the task's id, as RETURNING gives it
        rows.sort(key=lambda r: (-int(r["priority"]), float(r["created_at"]), str(r["id"])))
        writes: list[tuple[str, Sequence[Any]]] = []
        sealed = []
        for row in rows:
            seal, stored = self._sealed_writes(
                row["id"],
                Draft("leased", {"worker": owner, "attempt": int(row["attempts"])}),
                float(row["heartbeat_at"]),
                row,
            )
            sealed.append(seal)
            writes += stored
        short = [row["id"] for row in rows if int(row["head_seq"]) < READ_WITH_LEASE_MAX]
        reads: list[tuple[str, Sequence[Any]]] = []
        if short:
            marks = ", ".join("?" * len(short))
            reads = [
                (
                    f"SELECT * FROM harness_steps WHERE task_id IN ({marks}) "
                    "ORDER BY task_id, name",
                    short,
                ),
                (
                    f"SELECT * FROM harness_receipts WHERE task_id IN ({marks}) "
                    "ORDER BY task_id, seq",
                    short,
                ),
                (_PENDING_STEERING.format(marks=marks), short),
            ]
        # The registration goes first, so that a submit's mark on it (the task it woke this
        # worker for) does not hide that task from this look.
        if unregister:
            reads.append(store_wake.unregister_statement(owner))
        # this transaction sees its own claims as running: any queued row is more work
        probe = len(reads)
        reads.append(_look(self.backend, "?", [rows[0]["heartbeat_at"]], where, filters))
        results = self.backend.batch(h, [*writes, *reads], commit=True)[len(writes) :]
        more = bool(results[probe][0])
        by_task: dict[str, tuple[list[Row], list[Row], list[Row]]] = {
            t: ([], [], []) for t in short
        }
        if short:
            for n, part in enumerate(results[:3]):
                for r in part[0]:
                    by_task[r["task_id"]][n].append(r)
        leases = []
        for row, seal in zip(rows, sealed, strict=True):
            row.update(head_seq=seal.seq, head_hash=seal.hash, head_sig=seal.head_sig)
            read = None
            if row["id"] in by_task:
                steps, receipts, steering = by_task[row["id"]]
                read = LeaseRead(
                    task=dict(row),
                    steps=steps,
                    receipts=[stored_receipt(r) for r in receipts],
                    steering=steering_rows(steering),
                )
            leases.append(Lease(self._to_task(row), str(row["lease_token"]), read, more))
        return leases[0]._replace(also=tuple(leases[1:]))

    def _lease_limited(
        self, owner: str, ttl_s: float, where: str, filters: Sequence[Any]
    ) -> tuple[TaskRow, str] | None:
        """The lease under queue limits: running tasks are counted under a lock first."""
        with self._tx() as h:
            now = self._now(h)
            limits = {
                r["name"]: int(r["max_running"])
                for r in self._rows(h, "SELECT name, max_running FROM harness_queues")
            }
            if not limits:
                return None
            running: dict[str, int] = {}
            self._limit_lock(h)
            for r in self._rows(
                h,
                "SELECT queue, COUNT(*) AS n FROM harness_tasks WHERE status = 'running' "
                "GROUP BY queue",
            ):
                running[r["queue"]] = int(r["n"])
            if "*" in limits and sum(running.values()) >= limits["*"]:
                return None
            sql = (
                "SELECT id, queue FROM harness_tasks WHERE status = 'queued' AND run_after <= ?"
                + where
            )
            params: list[Any] = [now, *filters]
            sql += " ORDER BY priority DESC, created_at, id LIMIT ?" + self.skip_locked
            params.append(16)
            for cand in self._rows(h, sql, params):
                q = cand["queue"]
                if q in limits and running.get(q, 0) >= limits[q]:
                    continue
                token = uuid.uuid4().hex
                n = self._count(
                    h,
                    "UPDATE harness_tasks SET status = 'running', lease_owner = ?, "
                    "lease_token = ?, lease_expires = ?, heartbeat_at = ?, "
                    "attempts = attempts + 1, updated_at = ? WHERE id = ? AND status = 'queued'",
                    (owner, token, now + ttl_s, now, now, cand["id"]),
                )
                if n != 1:
                    continue
                row = self._task(h, cand["id"])
                self._append(
                    h,
                    cand["id"],
                    Draft("leased", {"worker": owner, "attempt": int(row["attempts"])}),
                    now,
                )
                return self._to_task(self._task(h, cand["id"])), token
            return None

    def heartbeat(self, leases: dict[str, str], ttl_s: float) -> set[str]:
        """Extend the given leases (task id -> token); return the ids whose lease was lost."""
        lost: set[str] = set()
        if not leases:
            return lost
        with self._tx() as h:
            now = self._now(h)
            for task_id, token in leases.items():
                n = self._count(
                    h,
                    "UPDATE harness_tasks SET lease_expires = ?, heartbeat_at = ? "
                    "WHERE id = ? AND lease_token = ? AND status = 'running'",
                    (now + ttl_s, now, task_id, token),
                )
                if n != 1:
                    lost.add(task_id)
        return lost

    def reap(self) -> list[str]:
        """Re-queue tasks whose lease expired (or fail them past ``max_attempts``)."""
        clock, clock_params = self.backend.now_sql()
        if not self._any(
            "SELECT id FROM harness_tasks WHERE status = 'running' "
            f"AND lease_expires < {clock} LIMIT 1",
            clock_params,
        ):
            return []
        with self._tx() as h:
            now = self._now(h)
            rows = self._rows(
                h,
                "SELECT id, kind, queue, attempts, max_attempts, lease_owner FROM harness_tasks "
                "WHERE status = 'running' AND lease_expires < ?" + self.skip_locked,
                (now,),
            )
            for r in rows:
                give_up = int(r["attempts"]) >= int(r["max_attempts"])
                error = None
                if give_up:
                    error = {
                        "code": "too_many_attempts",
                        "message": f"the task lost its worker {r['attempts']} times "
                        f"(max_attempts={r['max_attempts']})",
                    }
                self._run(
                    h,
                    "UPDATE harness_tasks SET status = ?, lease_owner = NULL, lease_token = NULL, "
                    "lease_expires = NULL, error = ?, updated_at = ? WHERE id = ?",
                    ("failed" if give_up else "queued", dumps(error), now, r["id"]),
                )
                self._append(
                    h,
                    r["id"],
                    Draft(
                        "lease_expired",
                        {"worker": r["lease_owner"], "attempt": int(r["attempts"])},
                        actor="reaper",
                    )
                    if not give_up
                    else Draft("failed", {"error": error}, actor="reaper"),
                    now,
                )
                if not give_up:
                    self._announce(h, r["queue"], r["kind"])
            return [r["id"] for r in rows]

    def release(
        self,
        task_id: str,
        token: str,
        *,
        status: str,
        draft: Draft,
        run_after: float = 0.0,
        usage: dict[str, float] | None = None,
        consume_steering: Sequence[int] = (),
        unstarted: bool = False,
    ) -> None:
        """Give the lease back, leaving the task ``queued`` or ``paused``. ``unstarted``: the
        task never ran under this lease (a prefetched one), so the lease's attempt does not
        count against ``max_attempts``."""
        with self._tx() as h:
            held = self._fenced(h, task_id, token)
            now = self._now(h)
            self._consume(h, consume_steering, now)
            self._run(
                h,
                "UPDATE harness_tasks SET status = ?, lease_owner = NULL, lease_token = NULL, "
                "lease_expires = NULL, run_after = ?, usage = COALESCE(?, usage), updated_at = ?, "
                "attempts = attempts - ? WHERE id = ?",
                (
                    status,
                    now + run_after if run_after else 0.0,
                    _opt(usage),
                    now,
                    1 if unstarted else 0,
                    task_id,
                ),
            )
            self._append(h, task_id, draft, now)
            if status == "queued" and not run_after:
                self._announce(h, held["queue"], held["kind"])
            elif status == "queued":  # ready later: found by the idle poll then
                self._notify(h, TASKS_CHANNEL, wake_payload(held["queue"], held["kind"]))

    def finish(
        self,
        task_id: str,
        token: str,
        *,
        status: str,
        result: Any,
        error: dict[str, Any] | None,
        usage: dict[str, float],
        draft: Draft,
        consume_steering: Sequence[int] = (),
        head: tuple[int, str] | None = None,
        idle: IdleAfter | None = None,
    ) -> bool | None:
        """End the task (succeeded, failed or cancelled) with its result and receipt.

        ``head`` is the chain head (sequence number and hash) as the caller last left it: with
        it the end is one statement in one round trip, fenced on that head as well as on the
        lease; when anyone else moved the head since (or the lease is gone), the end falls back
        to reading the head first.

        ``idle``: the worker will have nothing to run once this task ends. After the end
        commits, it is registered as idle (:mod:`.store_wake`) and looks for work once more,
        in the same round trip on the fast path; returns whether work waited (None when the
        store wakes nobody, SQLite)."""
        assert status in TERMINAL_STATUSES
        after: list[tuple[str, Sequence[Any]]] = []
        if idle is not None and self.backend.notifies:
            where, filters = _ready_filter(idle.queues, idle.kinds)
            clock, clock_params = self.backend.now_sql()
            after = [
                store_wake.register_statement(self.backend, idle.worker, idle.queues, idle.kinds),
                _look(self.backend, clock, clock_params, where, filters),
            ]
        looked: bool | None = None
        if head is not None and not consume_steering and self.backend.dialect.writes_in_with:
            done, looked = self._finish_at(
                task_id, token, status, result, error, usage, draft, head, after
            )
            if done:
                return looked
            # else registered and looked already, though the end itself did not apply
        self._finish_reading_head(
            task_id, token, status, result, error, usage, draft, consume_steering
        )
        if idle is None or not after or looked is not None:
            return looked
        store_wake.register_idle(self.backend, idle.worker, idle.queues, idle.kinds)
        return self._any(*after[1])

    def _finish_reading_head(
        self,
        task_id: str,
        token: str,
        status: str,
        result: Any,
        error: dict[str, Any] | None,
        usage: dict[str, float],
        draft: Draft,
        consume_steering: Sequence[int],
    ) -> None:
        clock, clock_params = self.backend.now_sql()
        with self._tx() as h:
            # fenced in the statement itself: only the holder of the running lease ends it
            rows = self._rows(
                h,
                f"WITH t AS (SELECT {clock} AS now) "
                "UPDATE harness_tasks SET status = ?, result = ?, error = ?, usage = ?, "
                "lease_owner = NULL, lease_token = NULL, lease_expires = NULL, waiting = NULL, "
                "updated_at = (SELECT now FROM t) "
                "WHERE id = ? AND status = 'running' AND lease_token = ? "
                "RETURNING head_seq, head_hash, status, updated_at",
                (
                    *clock_params,
                    status,
                    dumps(result),
                    dumps(error),
                    dumps(usage),
                    task_id,
                    token,
                ),
            )
            if not rows:
                self._fenced(h, task_id, token)  # raises the reason: gone, or the lease lost
                raise LeaseLost(f"the lease on task {task_id} was lost", task_id=task_id)
            now = float(rows[0]["updated_at"])
            self._append_then(
                h,
                task_id,
                draft,
                now,
                head=rows[0],
                then=self._consuming(consume_steering, now),
                commit=True,
            )

    def _finish_at(
        self,
        task_id: str,
        token: str,
        status: str,
        result: Any,
        error: dict[str, Any] | None,
        usage: dict[str, float],
        draft: Draft,
        head: tuple[int, str],
        after: Sequence[tuple[str, Sequence[Any]]] = (),
    ) -> tuple[bool, bool | None]:
        """:meth:`finish` as one statement, on a dialect with writes in ``WITH``: the task's
        end, its new head and the receipt, applied only while the lease and the head are as
        the caller says; whether it applied, and with ``after`` (an idle registration and a
        look, run once the end committed) whether the look found work. The receipt's time is
        this machine's clock (it records when the task ended; the row's times stay the store's
        own)."""
        sealed = self.sealer.seal(
            task_id, head[0] + 1, head[1], self.backend.local_now(), draft, status
        )
        clock, clock_params = self.backend.now_sql()
        receipt, receipt_params = self._receipt_from("f", sealed)
        sql = (
            f"WITH t AS (SELECT {clock} AS now), f AS ("
            "UPDATE harness_tasks SET status = ?, result = ?, error = ?, usage = ?, "
            "lease_owner = NULL, lease_token = NULL, lease_expires = NULL, waiting = NULL, "
            "updated_at = (SELECT now FROM t), head_seq = ?, head_hash = ?, head_sig = ? "
            "WHERE id = ? AND status = 'running' AND lease_token = ? AND head_seq = ? "
            f"AND head_hash = ? RETURNING id) {receipt}"
        )
        params = (
            *clock_params,
            status,
            dumps(result),
            dumps(error),
            dumps(usage),
            sealed.seq,
            sealed.hash,
            sealed.head_sig,
            task_id,
            token,
            head[0],
            head[1],
            *receipt_params,
        )
        with self._tx() as h:
            results = self.backend.batch(h, [(sql, params)], commit=True, after=after)
        looked = bool(results[-1][0]) if after else None
        return results[0][1] == 1, looked

    def _consume(self, h: Any, ids: Sequence[int], now: float) -> None:
        self.backend.batch(h, self._consuming(ids, now))

    @staticmethod
    def _consuming(ids: Sequence[int], now: float) -> list[tuple[str, Sequence[Any]]]:
        return [
            (
                "UPDATE harness_steering SET consumed_at = ? WHERE id = ? AND consumed_at IS NULL",
                (now, sid),
            )
            for sid in ids
        ]

    def checkpoint(
        self, task_id: str, token: str, state: Any, usage: dict[str, float], draft: Draft | None
    ) -> None:
        """Store the runner's resumable state (and usage so far), with an optional receipt."""
        with self._tx() as h:
            self._fenced(h, task_id, token)
            now = self._now(h)
            self._run(
                h,
                "UPDATE harness_tasks SET checkpoint = ?, usage = ?, updated_at = ? WHERE id = ?",
                (dumps(state), dumps(usage), now, task_id),
            )
            if draft is not None:
                self._append(h, task_id, draft, now)

    def save_usage(self, task_id: str, token: str, usage: dict[str, float]) -> None:
        with self._tx() as h:
            self._fenced(h, task_id, token)
            self._run(h, "UPDATE harness_tasks SET usage = ? WHERE id = ?", (dumps(usage), task_id))


def _opt(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _ready_probe(clock: str, where: str) -> str:
    """One ready task's id, if any, as of ``clock`` (a SQL expression), among ``where``."""
    return f"SELECT id FROM harness_tasks WHERE status = 'queued' AND run_after <= {clock}{where} LIMIT 1"


def _look(
    backend: Backend, clock: str, clock_params: Sequence[Any], where: str, filters: Sequence[Any]
) -> tuple[str, list[Any]]:
    """A worker's look for work: :func:`_ready_probe`, leaving out (where workers are woken)
    a task a submit just woke another worker for (:func:`store_wake.announced`)."""
    if not backend.notifies:
        return _ready_probe(clock, where), [*clock_params, *filters]
    sql = _ready_probe(clock, where + store_wake.announced(clock))
    return sql, [*clock_params, *filters, *clock_params]


def _ready_filter(
    queues: Sequence[str] | None,
    kinds: Sequence[str] | None,
    task_ids: Sequence[str] | None = None,
) -> tuple[str, list[Any]]:
    """The ``AND ...`` clause (and its parameters) that keeps tasks of these queues and kinds
    (and only these ``task_ids``, when given)."""
    where = ""
    filters: list[Any] = []
    if task_ids is not None:
        where += f" AND id IN ({', '.join('?' for _ in task_ids)})"
        filters.extend(task_ids)
    if queues:
        where += f" AND queue IN ({', '.join('?' for _ in queues)})"
        filters.extend(queues)
    if kinds is not None:
        where += f" AND kind IN ({', '.join('?' for _ in kinds)})"
        filters.extend(kinds)
    return where, filters


def wake_payload(queue: str, kind: str) -> str:
    """The payload announcing a ready task on :data:`TASKS_CHANNEL`: its queue and kind, so
    only the workers that could lease it wake up."""
    return json.dumps({"queue": queue, "kind": kind}, separators=(",", ":"))


def wakes(payload: str, queues: Sequence[str] | None, kinds: Sequence[str] | None) -> bool:
    """Whether a worker of ``queues`` and ``kinds`` (None: any) could lease the task announced
    by ``payload``; a payload that does not parse wakes it (a poll costs less than a lost task)."""
    try:
        found = json.loads(payload)
        queue, kind = found["queue"], found["kind"]
    except (ValueError, TypeError, KeyError):
        return True
    return (not queues or queue in queues) and (kinds is None or kind in kinds)
