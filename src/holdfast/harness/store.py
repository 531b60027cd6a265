"""The control-plane store's operations, written once for SQLite and PostgreSQL.

:class:`SQLHarnessStore` = the core (tasks, leases, the reaper, queue limits; ``store_core``)
plus steps, receipts, approvals and steering here, over one :class:`~holdfast.store.Backend`.
Every worker-side mutation is *fenced* by its lease token, and every state change is committed
with its receipt. Open one with :func:`holdfast.harness.open_store`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from holdfast.harness import store_wake
from holdfast.harness.rows import (
    TERMINAL_STATUSES,
    ApprovalRow,
    Draft,
    ReceiptRow,
    SealedReceipt,
    SteeringRow,
    StepRow,
    TaskNotFound,
    TaskStateError,
    dumps,
    loads,
)
from holdfast.harness.store_core import (
    _PENDING_STEERING,
    STEERING_CHANNEL,
    Row,
    SQLHarnessCore,
    _opt,
    steering_rows,
    stored_receipt,
)
from holdfast.store import StoreError

__all__ = ["ChainSnapshot", "Row", "SQLHarnessStore"]


@dataclass(frozen=True)
class ChainSnapshot:
    """A task as of one moment: its raw row, raw step rows and a reader of its receipts (valid
    only inside :meth:`SQLHarnessStore.chain_snapshot`)."""

    task: Row
    steps: list[Row]
    receipts: Callable[[], Iterator[ReceiptRow]]


class SQLHarnessStore(SQLHarnessCore):
    """Tasks, leases, steps, receipts, approvals and steering over one SQL database."""

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

    @contextmanager
    def chain_snapshot(self, task_id: str, batch: int = 20_000) -> Iterator[ChainSnapshot]:
        """The task row, its steps and its receipts as of one moment, for verification.

        Everything is read in one read-only transaction, so a task that keeps appending receipts
        meanwhile is seen at a single point (never a head older than the receipts, or newer).
        Values are passed on as stored, unparsed: the verifier treats them as hostile input.
        """
        with self._snapshot() as h:
            rows = self._rows(h, "SELECT * FROM harness_tasks WHERE id = ?", (task_id,))
            if not rows:
                raise TaskNotFound(f"no task {task_id!r} in {self.url}", task_id=task_id)
            steps = self._rows(
                h, "SELECT * FROM harness_steps WHERE task_id = ? ORDER BY name", (task_id,)
            )

            def receipts() -> Iterator[ReceiptRow]:
                after: Any = 0
                while True:
                    got = self._rows(
                        h,
                        "SELECT * FROM harness_receipts WHERE task_id = ? AND seq > ? "
                        "ORDER BY seq LIMIT ?",
                        (task_id, after, batch),
                    )
                    yield from (stored_receipt(r) for r in got)
                    if len(got) < batch:
                        return
                    after = got[-1]["seq"]

            yield ChainSnapshot(rows[0], steps, receipts)

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
                (last.seq, last.hash, last.head_sig, task_id),
            )

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
            draft = _naming(draft, "approval_id", int(pending[0]["id"]))
            self._run(
                h,
                "UPDATE harness_tasks SET status = 'queued', waiting = NULL, run_after = 0, "
                "updated_at = ? WHERE id = ?",
                (now, task_id),
            )
            self._append(h, task_id, draft, now)
            self._announce(h, task["queue"], task["kind"])
            row = self._rows(
                h, "SELECT * FROM harness_approvals WHERE id = ?", (pending[0]["id"],)
            )[0]
            return _to_approval(row)

    def take_decision(
        self,
        task_id: str,
        token: str,
        step: str,
        draft_for: Callable[[ApprovalRow, bool], Draft],
        refuse: Callable[[ApprovalRow], Draft | None] | None = None,
    ) -> ApprovalRow | None:
        """Consume the newest unused decision on ``step``; None if there is none, it expired, or
        ``refuse`` gave a receipt refusing it (a decision no approval receipt gave)."""
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
            refusal = refuse(row) if refuse is not None else None
            if refusal is not None:
                self._run(
                    h, "UPDATE harness_approvals SET consumed_at = ? WHERE id = ?", (now, row.id)
                )
                self._append(h, task_id, refusal, now)
                return None
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
        """Apply or queue a steering command; returns ``applied`` or ``queued``. A command
        queued for a running task rings its worker's doorbell once committed (PostgreSQL)."""
        outcome, owner = self._steer(task_id, kind, message, draft)
        if outcome == "queued" and owner is not None:
            try:
                store_wake.ring(self.backend, owner)
            except StoreError:
                pass  # the worker still polls steering, and the NOTIFY reaches it
        return outcome

    def _steer(self, task_id: str, kind: str, message: str, draft: Draft) -> tuple[str, str | None]:
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
                    self._announce(h, task["queue"], task["kind"])
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
                sid = self._rows(
                    h,
                    "INSERT INTO harness_steering (task_id, kind, message, created_at) "
                    "VALUES (?, ?, ?, ?) RETURNING id",
                    (task_id, kind, message, now),
                )[0]["id"]
                # the receipt names the row, so a worker acts only on steering a receipt sent
                draft = _naming(draft, "steering_id", int(sid))
                self._notify(h, STEERING_CHANNEL, task_id)
            self._append(h, task_id, draft, now)
            owner = task["lease_owner"] if status == "running" else None
            return outcome, owner

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
                _PENDING_STEERING.format(marks=", ".join("?" for _ in task_ids)),
                list(task_ids),
            )
        return steering_rows(rows)

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


def _naming(draft: Draft, key: str, row_id: int) -> Draft:
    return Draft(draft.kind, {**draft.payload, key: row_id}, draft.step, draft.actor)


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
