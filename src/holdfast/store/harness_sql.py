"""The control-plane store's operations, written once for SQLite and PostgreSQL.

A backend supplies a transaction, a clock, a statement runner and the locking clauses of its
dialect (``FOR UPDATE [SKIP LOCKED]`` on PostgreSQL; nothing on SQLite, where ``BEGIN IMMEDIATE``
already serialises writers). Every worker-side mutation is *fenced*: it names the lease token it
holds, and the store refuses it with :class:`LeaseLost` once that lease has expired or moved on,
so a stalled worker can never write over its successor.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from holdfast.store.harness_types import (
    TERMINAL_STATUSES,
    ApprovalRow,
    Draft,
    LeaseLost,
    ReceiptRow,
    SealedReceipt,
    Sealer,
    SteeringRow,
    StepRow,
    TaskNotFound,
    TaskRow,
    TaskStateError,
    dumps,
    loads,
)

Row = dict[str, Any]

_TASK_JSON = ("spec", "checkpoint", "result", "error", "usage", "waiting")


class SQLHarnessStore(ABC):
    """Tasks, leases, steps, receipts, approvals and steering over one SQL database."""

    for_update = ""
    skip_locked = ""
    url: str = ""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    # -- backend hooks ---------------------------------------------------------------------

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Any]:
        """A write transaction; yields the handle passed to :meth:`_run`."""

    @abstractmethod
    def _reader(self) -> AbstractContextManager[Any]:
        """A handle for reads outside a write transaction."""

    @abstractmethod
    def _run(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        """Run one statement (``?`` placeholders); return its rows and row count."""

    @abstractmethod
    def _now(self, handle: Any) -> float:
        """The store's clock, in seconds since the epoch."""

    def _notify(self, handle: Any, channel: str, payload: str) -> None:  # noqa: B027
        """Wake listeners (PostgreSQL NOTIFY); SQLite workers poll instead."""

    def _limit_lock(self, handle: Any) -> None:  # noqa: B027
        """Serialise leasers while queue limits are counted (PostgreSQL advisory lock)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

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
        with self._reader() as h:
            return self._now(h)

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

    def _append(self, handle: Any, task_id: str, draft: Draft, now: float) -> SealedReceipt:
        head = self._rows(
            handle, "SELECT head_seq, head_hash FROM harness_tasks WHERE id = ?", (task_id,)
        )[0]
        sealed = self.sealer.seal(task_id, int(head["head_seq"]) + 1, head["head_hash"], now, draft)
        self._run(
            handle,
            "INSERT INTO harness_receipts (task_id, seq, body, hash, sig, key_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (task_id, sealed.seq, sealed.body, sealed.hash, sealed.sig, sealed.key_id),
        )
        self._run(
            handle,
            "UPDATE harness_tasks SET head_seq = ?, head_hash = ?, head_sig = ? WHERE id = ?",
            (sealed.seq, sealed.hash, sealed.sig, task_id),
        )
        return sealed

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
        """Create a task (or return the one with the same idempotency key) with its receipt."""
        try:
            return self._submit(
                kind, queue, spec, priority, max_attempts, idempotency_key, draft, task_id
            )
        except Exception as exc:
            if idempotency_key is None or not self._is_duplicate(exc):
                raise
        # a concurrent submit with the same key won the race: return its task
        return self._submit(
            kind, queue, spec, priority, max_attempts, idempotency_key, draft, task_id
        )

    def _is_duplicate(self, exc: Exception) -> bool:
        return "unique" in str(exc).lower() or "duplicate" in str(exc).lower()

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
        with self._tx() as h:
            if idempotency_key is not None:
                found = self._rows(
                    h, "SELECT id FROM harness_tasks WHERE idempotency_key = ?", (idempotency_key,)
                )
                if found:
                    return self._to_task(self._task(h, found[0]["id"])), False
            now = self._now(h)
            new_id = task_id or f"task-{uuid.uuid4().hex[:16]}"
            self._run(
                h,
                "INSERT INTO harness_tasks (id, kind, queue, status, spec, priority, attempts, "
                "max_attempts, idempotency_key, run_after, usage, head_seq, head_hash, "
                "created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, 0, ?, ?, 0, '{}', 0, '', "
                "?, ?)",
                (
                    new_id,
                    kind,
                    queue,
                    dumps(spec),
                    priority,
                    max_attempts,
                    idempotency_key,
                    now,
                    now,
                ),
            )
            self._append(h, new_id, draft, now)
            self._notify(h, "holdfast_tasks", queue)
            return self._to_task(self._task(h, new_id)), True

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
    ) -> tuple[TaskRow, str] | None:
        """Take the next ready task (of ``queues`` and ``kinds``, if given) with a fresh token."""
        where = ""
        filters: list[Any] = []
        if queues:
            where += f" AND queue IN ({', '.join('?' for _ in queues)})"
            filters.extend(queues)
        if kinds is not None:
            if not kinds:
                return None
            where += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            filters.extend(kinds)
        if not self._any(
            "SELECT id FROM harness_tasks WHERE status = 'queued' AND run_after <= ?"
            + where
            + " LIMIT 1",
            [self._clock(), *filters],
        ):
            return None
        with self._tx() as h:
            now = self._now(h)
            limits = {
                r["name"]: int(r["max_running"])
                for r in self._rows(h, "SELECT name, max_running FROM harness_queues")
            }
            running: dict[str, int] = {}
            if limits:
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
            params.append(16 if limits else 1)
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
        if not self._any(
            "SELECT id FROM harness_tasks WHERE status = 'running' AND lease_expires < ? LIMIT 1",
            [self._clock()],
        ):
            return []
        with self._tx() as h:
            now = self._now(h)
            rows = self._rows(
                h,
                "SELECT id, attempts, max_attempts, lease_owner FROM harness_tasks "
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
    ) -> None:
        """Give the lease back, leaving the task ``queued`` or ``paused``."""
        with self._tx() as h:
            self._fenced(h, task_id, token)
            now = self._now(h)
            self._consume(h, consume_steering, now)
            self._run(
                h,
                "UPDATE harness_tasks SET status = ?, lease_owner = NULL, lease_token = NULL, "
                "lease_expires = NULL, run_after = ?, usage = COALESCE(?, usage), updated_at = ? "
                "WHERE id = ?",
                (status, now + run_after if run_after else 0.0, _opt(usage), now, task_id),
            )
            self._append(h, task_id, draft, now)
            if status == "queued":
                self._notify(h, "holdfast_tasks", task_id)

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
    ) -> None:
        """End the task (succeeded, failed or cancelled) with its result and receipt."""
        assert status in TERMINAL_STATUSES
        with self._tx() as h:
            self._fenced(h, task_id, token)
            now = self._now(h)
            self._consume(h, consume_steering, now)
            self._run(
                h,
                "UPDATE harness_tasks SET status = ?, result = ?, error = ?, usage = ?, "
                "lease_owner = NULL, lease_token = NULL, lease_expires = NULL, waiting = NULL, "
                "updated_at = ? WHERE id = ?",
                (status, dumps(result), dumps(error), dumps(usage), now, task_id),
            )
            self._append(h, task_id, draft, now)

    def _consume(self, h: Any, ids: Sequence[int], now: float) -> None:
        for sid in ids:
            self._run(
                h,
                "UPDATE harness_steering SET consumed_at = ? WHERE id = ? AND consumed_at IS NULL",
                (now, sid),
            )

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

    # -- steps and receipts ------------------------------------------------------------------

    def get_step(self, task_id: str, name: str) -> StepRow | None:
        with self._reader() as h:
            rows = self._rows(
                h, "SELECT * FROM harness_steps WHERE task_id = ? AND name = ?", (task_id, name)
            )
        if not rows:
            return None
        r = rows[0]
        return StepRow(
            task_id=r["task_id"],
            name=r["name"],
            status=r["status"],
            tool=r["tool"],
            key=r["key"],
            idempotent=bool(r["idempotent"]),
            result=loads(r["result"]),
            error=loads(r["error"]),
            updated_at=float(r["updated_at"]),
        )

    def list_steps(self, task_id: str) -> list[StepRow]:
        with self._reader() as h:
            names = [
                r["name"]
                for r in self._rows(
                    h,
                    "SELECT name FROM harness_steps WHERE task_id = ? ORDER BY updated_at, name",
                    (task_id,),
                )
            ]
        return [s for s in (self.get_step(task_id, n) for n in names) if s is not None]

    def write_step(
        self,
        task_id: str,
        token: str,
        step: StepRow,
        draft: Draft,
        usage: dict[str, float] | None = None,
    ) -> None:
        """Record a step's new state and its receipt in one transaction."""
        with self._tx() as h:
            self._fenced(h, task_id, token)
            now = self._now(h)
            self._run(
                h,
                "INSERT INTO harness_steps (task_id, name, status, tool, key, idempotent, result, "
                "error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (task_id, name) DO UPDATE SET status = excluded.status, "
                "result = excluded.result, error = excluded.error, "
                "updated_at = excluded.updated_at",
                (
                    task_id,
                    step.name,
                    step.status,
                    step.tool,
                    step.key,
                    1 if step.idempotent else 0,
                    dumps(step.result),
                    dumps(step.error),
                    now,
                ),
            )
            if usage is not None:
                self._run(
                    h, "UPDATE harness_tasks SET usage = ? WHERE id = ?", (dumps(usage), task_id)
                )
            self._append(h, task_id, draft, now)

    def append_receipt(self, task_id: str, token: str | None, draft: Draft) -> SealedReceipt:
        """Append a receipt; fenced by ``token`` when a worker writes it."""
        with self._tx() as h:
            if token is None:
                self._task(h, task_id, lock=True)
            else:
                self._fenced(h, task_id, token)
            return self._append(h, task_id, draft, self._now(h))

    def receipts(
        self, task_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[ReceiptRow]:
        sql = "SELECT * FROM harness_receipts WHERE task_id = ? AND seq > ? ORDER BY seq"
        params: list[Any] = [task_id, after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._reader() as h:
            rows = self._rows(h, sql, params)
        return [
            ReceiptRow(r["task_id"], int(r["seq"]), r["body"], r["hash"], r["sig"], r["key_id"])
            for r in rows
        ]

    def iter_receipts(self, task_id: str, batch: int = 20_000) -> Iterator[ReceiptRow]:
        """Every receipt of a task in ``seq`` order, fetched in batches."""
        after = 0
        while True:
            rows = self.receipts(task_id, after_seq=after, limit=batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def import_receipts(self, task_id: str, sealed: Sequence[SealedReceipt]) -> None:
        """Bulk-append already sealed receipts continuing the chain (benchmarks, restores)."""
        if not sealed:
            return
        with self._tx() as h:
            head = self._task(h, task_id, lock=True)
            if sealed[0].seq != int(head["head_seq"]) + 1:
                raise TaskStateError(
                    f"receipts to import start at {sealed[0].seq}, the chain head is "
                    f"{head['head_seq']}"
                )
            self._executemany(
                h,
                "INSERT INTO harness_receipts (task_id, seq, body, hash, sig, key_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(task_id, s.seq, s.body, s.hash, s.sig, s.key_id) for s in sealed],
            )
            last = sealed[-1]
            self._run(
                h,
                "UPDATE harness_tasks SET head_seq = ?, head_hash = ?, head_sig = ? WHERE id = ?",
                (last.seq, last.hash, last.sig, task_id),
            )

    def _executemany(self, handle: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for r in rows:
            self._run(handle, sql, r)

    # -- approvals -------------------------------------------------------------------------

    def park_for_approval(
        self,
        task_id: str,
        token: str,
        *,
        step: str,
        purpose: str,
        request: dict[str, Any],
        draft: Draft,
        usage: dict[str, float] | None = None,
    ) -> None:
        """Record an approval request and park the task in ``waiting_approval``, lease released."""
        with self._tx() as h:
            self._fenced(h, task_id, token)
            now = self._now(h)
            self._run(
                h,
                "INSERT INTO harness_approvals (task_id, step, purpose, request, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (task_id, step, purpose, dumps(request), now),
            )
            waiting = {"step": step, "purpose": purpose, **request}
            self._run(
                h,
                "UPDATE harness_tasks SET status = 'waiting_approval', waiting = ?, "
                "lease_owner = NULL, lease_token = NULL, lease_expires = NULL, "
                "usage = COALESCE(?, usage), updated_at = ? WHERE id = ?",
                (dumps(waiting), _opt(usage), now, task_id),
            )
            self._append(h, task_id, draft, now)

    def decide(
        self, task_id: str, step: str, *, decision: str, by: str, ttl_s: float, draft: Draft
    ) -> ApprovalRow:
        """Answer the pending request on ``step``; the task goes back to the queue."""
        with self._tx() as h:
            task = self._task(h, task_id, lock=True)
            pending = self._rows(
                h,
                "SELECT * FROM harness_approvals WHERE task_id = ? AND step = ? "
                "AND decision IS NULL ORDER BY id DESC LIMIT 1",
                (task_id, step),
            )
            if task["status"] != "waiting_approval" or not pending:
                waiting = loads(task["waiting"]) or {}
                hint = (
                    f"; it waits on step {waiting.get('step')!r}"
                    if task["status"] == "waiting_approval"
                    else ""
                )
                raise TaskStateError(
                    f"task {task_id} has no step {step!r} waiting for a decision "
                    f"(status {task['status']}{hint})",
                    task_id=task_id,
                    step=step,
                )
            now = self._now(h)
            self._run(
                h,
                "UPDATE harness_approvals SET decision = ?, decided_by = ?, expires_at = ? "
                "WHERE id = ?",
                (decision, by, now + ttl_s, pending[0]["id"]),
            )
            self._run(
                h,
                "UPDATE harness_tasks SET status = 'queued', waiting = NULL, run_after = 0, "
                "updated_at = ? WHERE id = ?",
                (now, task_id),
            )
            self._append(h, task_id, draft, now)
            self._notify(h, "holdfast_tasks", task_id)
            row = self._rows(
                h, "SELECT * FROM harness_approvals WHERE id = ?", (pending[0]["id"],)
            )[0]
            return _to_approval(row)

    def take_decision(
        self, task_id: str, token: str, step: str, draft_for: Callable[[ApprovalRow, bool], Draft]
    ) -> ApprovalRow | None:
        """Consume the newest unused decision on ``step``; None if there is none or it expired."""
        with self._tx() as h:
            self._fenced(h, task_id, token)
            now = self._now(h)
            rows = self._rows(
                h,
                "SELECT * FROM harness_approvals WHERE task_id = ? AND step = ? "
                "AND decision IS NOT NULL AND consumed_at IS NULL ORDER BY id DESC LIMIT 1",
                (task_id, step),
            )
            if not rows:
                return None
            row = _to_approval(rows[0])
            expired = row.expires_at is not None and row.expires_at < now
            self._run(h, "UPDATE harness_approvals SET consumed_at = ? WHERE id = ?", (now, row.id))
            self._append(h, task_id, draft_for(row, expired), now)
            return None if expired else row

    def approvals(self, task_id: str) -> list[ApprovalRow]:
        with self._reader() as h:
            rows = self._rows(
                h, "SELECT * FROM harness_approvals WHERE task_id = ? ORDER BY id", (task_id,)
            )
        return [_to_approval(r) for r in rows]

    # -- steering --------------------------------------------------------------------------

    def steer(self, task_id: str, kind: str, message: str, draft: Draft) -> str:
        """Apply or queue a steering command; returns ``applied`` or ``queued``."""
        with self._tx() as h:
            task = self._task(h, task_id, lock=True)
            status = task["status"]
            now = self._now(h)
            if status in TERMINAL_STATUSES:
                raise TaskStateError(f"task {task_id} already ended ({status})", task_id=task_id)
            outcome = "queued"
            if kind == "stop" and status != "running":
                self._set_status(h, task_id, "cancelled", now)
                outcome = "applied"
            elif kind == "pause" and status == "queued":
                self._set_status(h, task_id, "paused", now)
                outcome = "applied"
            elif kind == "pause" and status != "running":
                raise TaskStateError(
                    f"task {task_id} is {status}; only queued or running tasks pause"
                )
            elif kind == "resume":
                if status == "paused":
                    self._set_status(h, task_id, "queued", now)
                    self._notify(h, "holdfast_tasks", task_id)
                    outcome = "applied"
                elif status == "running" and self._count(
                    h,
                    "UPDATE harness_steering SET consumed_at = ? WHERE task_id = ? "
                    "AND kind = 'pause' AND consumed_at IS NULL",
                    (now, task_id),
                ):
                    outcome = "applied"
                else:
                    raise TaskStateError(f"task {task_id} is {status}, not paused")
            if outcome == "queued":
                self._run(
                    h,
                    "INSERT INTO harness_steering (task_id, kind, message, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (task_id, kind, message, now),
                )
                self._notify(h, "holdfast_steering", task_id)
            self._append(h, task_id, draft, now)
            return outcome

    def _set_status(self, h: Any, task_id: str, status: str, now: float) -> None:
        self._run(
            h,
            "UPDATE harness_tasks SET status = ?, waiting = NULL, updated_at = ? WHERE id = ?",
            (status, now, task_id),
        )

    def pending_steering(self, task_ids: Sequence[str]) -> list[SteeringRow]:
        """Unapplied steering commands for the given tasks, oldest first."""
        if not task_ids:
            return []
        with self._reader() as h:
            rows = self._rows(
                h,
                "SELECT id, task_id, kind, message, created_at FROM harness_steering "
                f"WHERE consumed_at IS NULL AND task_id IN ({', '.join('?' for _ in task_ids)}) "
                "ORDER BY id",
                list(task_ids),
            )
        return [
            SteeringRow(int(r["id"]), r["task_id"], r["kind"], r["message"], r["created_at"])
            for r in rows
        ]

    def consume_steering(
        self, task_id: str, token: str, rows: Sequence[SteeringRow], drafts: Sequence[Draft]
    ) -> list[SteeringRow]:
        """Mark commands applied (with receipts); returns those not already taken."""
        taken: list[SteeringRow] = []
        with self._tx() as h:
            self._fenced(h, task_id, token)
            now = self._now(h)
            for row, draft in zip(rows, drafts, strict=True):
                if self._count(
                    h,
                    "UPDATE harness_steering SET consumed_at = ? WHERE id = ? "
                    "AND consumed_at IS NULL",
                    (now, row.id),
                ):
                    self._append(h, task_id, draft, now)
                    taken.append(row)
        return taken


def _opt(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _to_approval(r: Row) -> ApprovalRow:
    return ApprovalRow(
        id=int(r["id"]),
        task_id=r["task_id"],
        step=r["step"],
        purpose=r["purpose"],
        request=loads(r["request"]) or {},
        decision=r["decision"],
        decided_by=r["decided_by"],
        expires_at=r["expires_at"],
        consumed_at=r["consumed_at"],
        created_at=float(r["created_at"]),
    )
