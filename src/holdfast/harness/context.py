"""The step context: the one way a task runner acts on the world.

``ctx.step(name, tool, args, fn)`` runs the step contract: an intent receipt, the permission gate,
the effect, a result receipt. Each step has a stable name within its task; on resume a finished
step is not run again (its recorded result is returned), and a step that started but left no
result is reconciled: an idempotent tool runs again with the same idempotency key, a
non-idempotent one parks the task for a person to review. Step boundaries are where steering
(stop, pause), a worker's shutdown and budgets take effect.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from holdfast.errors import Cancelled, HoldfastError, InvalidInput, RetryableFailure, RuntimeFailure
from holdfast.harness.budget import BudgetMeter
from holdfast.harness.cancel import CancelToken
from holdfast.harness.policy import Decision, Policy
from holdfast.harness.receipts import canonical_json
from holdfast.harness.registry import TaskKind
from holdfast.harness.rows import (
    ApprovalRow,
    Draft,
    LeaseLost,
    SteeringRow,
    StepRow,
    TaskRow,
)
from holdfast.harness.spec import TaskSpec
from holdfast.harness.store import SQLHarnessStore
from holdfast.harness.store_core import LeaseRead
from holdfast.harness.verify import (
    ChainFollower,
    ReceiptsBroken,
    StepRecord,
    TaskRecord,
    verify_task,
)

T = TypeVar("T")
log = logging.getLogger("holdfast.harness.context")

RESERVED_KINDS = frozenset(
    {
        "submitted",
        "leased",
        "intent",
        "gate",
        "result",
        "reconcile",
        "checkpoint",
        "approval_requested",
        "approval",
        "approval_used",
        "steer",
        "steering_delivered",
        "steering_applied",
        "steering_refused",
        "approval_refused",
        "paused",
        "released",
        "lease_expired",
        "succeeded",
        "failed",
        "cancelled",
    }
)


class PermissionDenied(HoldfastError):
    """The permission gate (or a person) refused a step. Runners may catch it and go on."""

    code = "permission_denied"


class StepFailed(RuntimeFailure):
    """A step's effect raised; ``error`` holds the original error's code, type and message."""

    code = "step_failed"


class TaskInterrupt(BaseException):
    """Control flow from a step boundary to the worker (stop, pause, park, release).

    A ``BaseException`` so that a runner's ``except Exception`` cannot swallow it.
    """

    def __init__(self, action: str, steering: SteeringRow | None = None, reason: str = "") -> None:
        super().__init__(action)
        self.action = action
        self.steering = steering
        self.reason = reason


class StepContext:
    """What a runner sees: its task, state, budget, cancellation, steering, and ``step``."""

    def __init__(
        self,
        *,
        store: SQLHarnessStore,
        task: TaskRow,
        token: str,
        kind: TaskKind,
        worker_id: str,
        draining: threading.Event | None = None,
        store_retry_s: float = 60.0,
    ) -> None:
        self.store = store
        self.task = task
        self.token = token
        self.kind = kind
        self.worker_id = worker_id
        self.spec = TaskSpec.from_dict(task.spec)
        try:
            self.policy = Policy.parse(task.spec.get("policy"), known_tools=kind.tools or None)
        except InvalidInput as exc:
            self.policy = Policy.broken(exc.message)
        # Wall time is running time on the store's injected clock when a test gave one.
        clock = getattr(getattr(store, "backend", None), "clock", None)
        self.budget = BudgetMeter(self.spec.budget, task.usage, clock=clock or time.monotonic)
        self.cancel = CancelToken()
        self._saved_usage_at = time.monotonic()
        self.state: Any = task.checkpoint
        self._draining = draining or threading.Event()
        self._steer_flag = threading.Event()
        self._steer_flag.set()
        self._preread: LeaseRead | None = None  # what the lease read, until it is used
        self._preread_steering: list[SteeringRow] | None = None
        self._lost = threading.Event()
        self._store_retry_s = store_retry_s
        self._follower = ChainFollower(task.id, getattr(store.sealer, "signer", None))
        self._follow_lock = threading.Lock()
        self._refused: dict[int, str] = {}
        self._head: tuple[int, str] | None = None  # the last receipt this worker wrote
        self._usage_lock = threading.Lock()
        forget = getattr(store.sealer, "forget", None)
        if forget is not None:
            forget()

    # -- read-only views -------------------------------------------------------------------

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def attempt(self) -> int:
        return self.task.attempts

    @property
    def goal(self) -> str:
        return self.spec.goal

    @property
    def input(self) -> dict[str, Any]:
        return self.spec.input

    @property
    def workspace(self) -> str | None:
        return self.spec.workspace

    # -- the step contract -----------------------------------------------------------------

    def step(
        self,
        name: str,
        tool: str,
        args: Mapping[str, Any],
        fn: Callable[[str], T],
        *,
        idempotent: bool | None = None,
        key: str | None = None,
        effect: bool | None = None,
    ) -> T | Any:
        """Run ``fn(idempotency_key)`` as the step ``name`` of ``tool`` with ``args``, at most once.

        Returns the effect's JSON result (the recorded one when the step already finished).
        Raises :class:`PermissionDenied` when the gate or a person refuses it and
        :class:`StepFailed` when the effect raised (now or in an earlier attempt).
        """
        if not name or not isinstance(name, str):
            raise InvalidInput("a step needs a non-empty name, stable across attempts")
        spec = self.kind.tools.get(tool)
        effect = effect if effect is not None else (spec.effect if spec else True)
        idempotent = idempotent if idempotent is not None else bool(spec and spec.idempotent)
        key = key or f"{self.task_id}:{name}"
        try:
            args_json = canonical_json(dict(args))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"step {name!r}: arguments must be JSON ({exc})") from exc
        self.boundary()
        row = self._call(self.store.get_step, self.task_id, name)
        base = StepRow(self.task_id, name, "intent", tool, key, idempotent)
        if row is not None and row.tool != tool:
            raise InvalidInput(
                f"step {name!r} was recorded for tool {row.tool!r} and is now called with "
                f"{tool!r}: step names must be unique within a task and stable across attempts"
            )
        if row is not None and row.status == "done":
            return row.result
        if row is not None and row.status in ("failed", "denied"):
            raise _replayed(name, row)
        if row is not None and row.status == "started":
            self._reconcile(row, tool, idempotent or not effect)
        else:
            if row is None:
                self.budget.check(next_step=True, partial=self.state, trace_id=self.task_id)
                self.budget.steps += 1
                self._call(
                    self.store.write_step,
                    self.task_id,
                    self.token,
                    base,
                    Draft(
                        "intent",
                        {
                            "tool": tool,
                            "args_sha256": hashlib.sha256(args_json.encode()).hexdigest(),
                            "args": _preview(args_json),
                            "key": key,
                            "idempotent": idempotent,
                            "effect": effect,
                        },
                        step=name,
                    ),
                    self.budget.used(),
                )
            decision = self._gate(name, tool, args, effect)
            if decision.action != "allow":
                err = {"code": PermissionDenied.code, "message": decision.reason}
                self._call(
                    self.store.write_step,
                    self.task_id,
                    self.token,
                    _with(base, status="denied", error=err),
                    Draft("gate", decision.to_dict(), step=name),
                )
                raise PermissionDenied(f"step {name!r} ({tool}) denied: {decision.reason}")
            self._call(
                self.store.write_step,
                self.task_id,
                self.token,
                _with(base, status="started"),
                Draft("gate", decision.to_dict(), step=name),
            )
        return self._effect(base, fn, key)

    def _gate(self, name: str, tool: str, args: Mapping[str, Any], effect: bool) -> Decision:
        decision = self.policy.decide(tool, args, effect=effect)
        if decision.action != "ask":
            return decision
        answer = self._take_decision(name)
        if answer is None:
            self._park(
                name,
                "gate",
                {
                    "tool": tool,
                    "args": _preview(canonical_json(dict(args))),
                    "reason": decision.reason,
                    "message": f"step {name!r} ({tool}) needs approval: "
                    f"holdfast approve {self.task_id} {name}  (or: holdfast deny ...)",
                },
            )
        assert answer is not None
        if answer.decision == "deny":
            return Decision("deny", f"denied by {answer.decided_by}")
        return Decision("allow", f"approved by {answer.decided_by}")

    def _reconcile(self, row: StepRow, tool: str, rerun_safe: bool) -> None:
        if rerun_safe:
            self._call(
                self.store.append_receipt,
                self.task_id,
                self.token,
                Draft("reconcile", {"action": "rerun", "key": row.key}, step=row.name),
            )
            return
        answer = self._take_decision(row.name)
        if answer is None:
            self._park(
                row.name,
                "review",
                {
                    "tool": tool,
                    "message": f"step {row.name!r} ({tool}) started in an earlier attempt but "
                    "its outcome is unknown, and the tool is not idempotent, so it was not run "
                    "again. Check whether it took effect, then: holdfast approve "
                    f"{self.task_id} {row.name}  to run it again, or  holdfast deny "
                    f"{self.task_id} {row.name}  to record it as failed",
                },
            )
        assert answer is not None
        if answer.decision == "deny":
            err = {"code": PermissionDenied.code, "message": f"denied by {answer.decided_by}"}
            self._call(
                self.store.write_step,
                self.task_id,
                self.token,
                _with(row, status="denied", error=err),
                Draft("reconcile", {"action": "denied", "by": answer.decided_by}, step=row.name),
            )
            raise PermissionDenied(f"step {row.name!r}: re-run denied by {answer.decided_by}")
        self._call(
            self.store.append_receipt,
            self.task_id,
            self.token,
            Draft("reconcile", {"action": "rerun", "by": answer.decided_by}, step=row.name),
        )

    def _effect(self, base: StepRow, fn: Callable[[str], T], key: str) -> T | Any:
        try:
            result = fn(key)
        except Exception as exc:
            if self.cancel.cancelled:
                # Cut off by a stop, pause, budget or lost lease: the outcome is unknown, so the
                # step stays 'started' (a resumed task reconciles it) and the cause is raised.
                self.stop_here()
            self._fail(base, _error_dict(exc), exc)
        try:
            body = canonical_json(result)
        except (TypeError, ValueError) as exc:
            err = {"code": "invalid_step_result", "message": f"the result is not JSON: {exc}"}
            self._fail(base, err, exc)
        self._call(
            self.store.write_step,
            self.task_id,
            self.token,
            _with(base, status="done", result=result),
            Draft(
                "result",
                {
                    "ok": True,
                    "result_sha256": hashlib.sha256(body.encode()).hexdigest(),
                    "result": _preview(body),
                },
                step=base.name,
            ),
            self.budget.used(),
        )
        self.boundary()
        return result

    def _fail(self, base: StepRow, err: dict[str, Any], exc: Exception) -> NoReturn:
        self._call(
            self.store.write_step,
            self.task_id,
            self.token,
            _with(base, status="failed", error=err),
            Draft("result", {"ok": False, "error": err}, step=base.name),
            self.budget.used(),
        )
        raise StepFailed(
            f"step {base.name!r} failed: {err['message']}", step=base.name, error=err
        ) from exc

    # -- the rest of the runner API --------------------------------------------------------

    def checkpoint(self, state: Any) -> None:
        """Save the runner's state (JSON) so a resumed attempt starts from it (``ctx.state``)."""
        try:
            body = canonical_json(state)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"checkpoint state must be JSON: {exc}") from exc
        with self._usage_lock:
            used = self.budget.used()
            self._call(
                self.store.checkpoint,
                self.task_id,
                self.token,
                state,
                used,
                Draft(
                    "checkpoint",
                    {"state_sha256": hashlib.sha256(body.encode()).hexdigest(), "usage": used},
                ),
            )
        self.state = state
        self.boundary()

    def receipt(self, kind: str, payload: Mapping[str, Any] | None = None) -> None:
        """Record a non-effect event (working-set update, memory flush, roll-over...)."""
        if kind in RESERVED_KINDS:
            raise InvalidInput(f"receipt kind {kind!r} is reserved for the harness")
        self._call(
            self.store.append_receipt,
            self.task_id,
            self.token,
            Draft(kind, dict(payload or {}), actor="runner"),
        )

    def steering(self) -> list[str]:
        """Messages sent with ``holdfast task steer`` since the last call (each receipted)."""
        self.boundary()
        rows = [
            r
            for r in self._trusted_steering(self._call(self.store.pending_steering, [self.task_id]))
            if r.kind == "message"
        ]
        if not rows:
            return []
        taken = self._call(
            self.store.consume_steering,
            self.task_id,
            self.token,
            rows,
            [Draft("steering_delivered", {"id": r.id, "message": r.message}) for r in rows],
        )
        return [r.message for r in taken]

    def charge(self, *, tokens: int = 0, usd: float = 0.0) -> None:
        """Account model usage to the task's budget (persisted; raises when exhausted)."""
        self.budget.add(tokens=tokens, usd=usd)
        self._call(self.store.save_usage, self.task_id, self.token, self.budget.used())
        self._saved_usage_at = time.monotonic()
        self.budget.check(partial=self.state, trace_id=self.task_id)

    def spend(self, *, tokens: int = 0, usd: float = 0.0, save_every_s: float = 1.0) -> None:
        """Account usage of work in flight (an RLM job's calls, a cut-off model call).

        Never raises: the meter is updated at once (so the ticker, and the work's own derived
        budget, see it) and the store at most every ``save_every_s`` (one try; the next boundary
        or :meth:`charge` saves it for sure).
        """
        self.budget.add(tokens=tokens, usd=usd)
        now = time.monotonic()
        if now - self._saved_usage_at < save_every_s:
            return
        # Not while a checkpoint is being written: its receipt records the usage, and a stale
        # figure saved after it would read as spending reset (skipped, the next write saves).
        if not self._usage_lock.acquire(blocking=False):
            return
        self._saved_usage_at = now
        try:
            self.store.save_usage(self.task_id, self.token, self.budget.used())
        except Exception:  # the store may be down or the lease gone: the next write decides
            pass
        finally:
            self._usage_lock.release()

    def stop_here(self) -> NoReturn:
        """Raise what ``ctx.cancel`` fired for, after work in flight was cut off by it.

        A stop or pause becomes the :class:`TaskInterrupt` the worker acts on, a lost lease
        :class:`LeaseLost`, an exhausted budget :class:`BudgetExceeded`; anything else
        :class:`~holdfast.errors.Cancelled`.
        """
        self._steer_flag.set()
        self.boundary()
        reason = self.cancel.reason
        if reason.startswith("stop"):
            raise TaskInterrupt("stop", reason=reason)
        if reason.startswith("pause"):
            raise TaskInterrupt("pause", reason=reason)
        raise Cancelled(f"cancelled: {reason}", reason=reason)

    def boundary(self) -> None:
        """Apply what waits for a step boundary: lost lease, stop, pause, shutdown, budget."""
        if self._lost.is_set():
            raise LeaseLost(f"the lease on task {self.task_id} was lost", task_id=self.task_id)
        if self._steer_flag.is_set():
            self._steer_flag.clear()
            pending, self._preread_steering = self._preread_steering, None
            if pending is None:
                pending = self._call(self.store.pending_steering, [self.task_id])
            for r in self._trusted_steering(pending):
                if r.kind == "stop":
                    self.cancel.cancel("stop requested")
                    raise TaskInterrupt("stop", r)
                if r.kind == "pause":
                    raise TaskInterrupt("pause", r)
        if self._draining.is_set():
            raise TaskInterrupt("release", reason="the worker is shutting down")
        if self.budget.exhausted() is not None:
            self.budget.check(partial=self.state, trace_id=self.task_id)

    @property
    def draining(self) -> bool:
        """Whether the worker is shutting down (the task gives its lease back at the next
        boundary; work that can be redone cheaply, like a model call, may stop now)."""
        return self._draining.is_set()

    # -- used by the worker ----------------------------------------------------------------

    def preload(self, read: LeaseRead, *, steering: bool = True) -> None:
        """Use what the lease read in its own transaction (the chain, the steps, the waiting
        steering) for the first check and the first boundary, instead of reading them again;
        with ``steering=False`` the first boundary reads the steering afresh."""
        self._preread = read
        self._preread_steering = list(read.steering) if steering else None

    def check_receipts(self) -> None:
        """Verify the task as stored before acting on it: its receipt chain (signed, when this
        worker has a key), its spec against the submission receipt, its checkpoint and steps.

        Raises :class:`ReceiptsBroken` when they do not verify: someone changed what the task
        is to do (its spec, its state, a step's recorded result) without the key, and the task
        must not run on it. The verified chain is kept and followed as it grows, so steering
        and approvals are acted on only when a receipt sent them.
        """
        with self._follow_lock:
            if self._follower.count:
                return
            read, self._preread = self._preread, None
            with contextlib.ExitStack() as stack:
                if read is not None:  # what the lease read in its own transaction
                    task_row, receipts, steps = read.task, iter(read.receipts), read.steps
                else:
                    snap = stack.enter_context(self.store.chain_snapshot(self.task_id))
                    task_row, receipts, steps = snap.task, snap.receipts(), snap.steps
                result = verify_task(
                    TaskRecord.from_row(task_row),
                    receipts,
                    [StepRecord.from_row(s) for s in steps],
                    signer=self._follower.signer,
                    follower=self._follower,
                )
        if not result.ok:
            where = f"receipt {result.bad_seq}: " if result.bad_seq is not None else ""
            raise ReceiptsBroken(
                f"refusing to run task {self.task_id}: its stored record does not match its "
                f"receipts ({where}{result.reason}); inspect it with: holdfast receipts verify "
                f"{self.task_id}",
                task_id=self.task_id,
                bad_seq=result.bad_seq,
                reason=result.reason,
            )

    def _follow(self) -> None:
        """Check the receipts appended since the chain was last read (caller holds the lock)."""
        if self._follower.broken is None:
            rows = self.store.receipts(self.task_id, after_seq=self._follower.count)
            self._follower.feed(rows)

    def steering_refusal(self, row: SteeringRow) -> str | None:
        """Why ``row`` must not be acted on (no receipt sent it), or None when one did."""
        with self._follow_lock:
            if row.id in self._refused:
                return self._refused[row.id]
            why = self._follower.steering_sent(row.id, row.kind, row.message)
            if why is not None:
                self._follow()  # the steer receipt commits with its row: read what is new
                why = self._follower.steering_sent(row.id, row.kind, row.message)
            if why is not None:
                self._refused[row.id] = why
            return why

    def _trusted_steering(self, rows: list[SteeringRow]) -> list[SteeringRow]:
        """The rows a receipt sent; each other one is refused once, with a receipt."""
        good: list[SteeringRow] = []
        for r in rows:
            why = self.steering_refusal(r)
            if why is None:
                good.append(r)
                continue
            log.warning("task %s: ignoring steering %s (%s): %s", self.task_id, r.id, r.kind, why)
            self._call(
                self.store.consume_steering,
                self.task_id,
                self.token,
                [r],
                [Draft("steering_refused", {"id": r.id, "kind": r.kind, "reason": why})],
            )
        return good

    def notify_steering(self, kind: str | None = None, row: SteeringRow | None = None) -> None:
        """Steering arrived for this task: a stop or pause also cuts off work in flight (when
        ``row`` is given, only if a receipt sent it)."""
        self._preread_steering = None  # read again at the next boundary: this is newer
        self._steer_flag.set()
        if kind in ("stop", "pause"):
            if row is not None and self.steering_refusal(row) is not None:
                return  # refused (with a receipt) at the next boundary
            self.cancel.cancel(f"{kind} requested")

    def lose_lease(self) -> None:
        self._lost.set()
        self.cancel.cancel("lease lost")

    def _take_decision(self, step: str) -> ApprovalRow | None:
        def draft(row: ApprovalRow, expired: bool) -> Draft:
            return Draft(
                "approval_used",
                {
                    "decision": row.decision,
                    "by": row.decided_by,
                    "expired": expired,
                    "approval_id": row.id,
                },
                step=step,
            )

        def refuse(row: ApprovalRow) -> Draft | None:
            why = self._follower.decision_given(
                row.id, step, row.decision, row.decided_by, row.expires_at
            )
            if why is None:
                return None
            log.warning("task %s: ignoring decision %s on %s: %s", self.task_id, row.id, step, why)
            return Draft("approval_refused", {"approval_id": row.id, "reason": why}, step=step)

        with self._follow_lock:
            self._call(self._follow)
        return self._call(self.store.take_decision, self.task_id, self.token, step, draft, refuse)

    def _park(self, step: str, purpose: str, request: dict[str, Any]) -> NoReturn:
        self._call(
            self.store.park_for_approval,
            self.task_id,
            self.token,
            step=step,
            purpose=purpose,
            request=request,
            draft=Draft("approval_requested", {"purpose": purpose, **request}, step=step),
            usage=self.budget.used(),
        )
        raise TaskInterrupt("parked", reason=request["message"])

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call, waiting out a store outage for up to ``store_retry_s``.

        After an outage (a lost connection, a restarted server) the store must still hold the
        last receipt this worker wrote before it carries on: a server that crashed may have lost
        writes it had acknowledged (PostgreSQL with ``synchronous_commit=off``, a restored
        backup), and acting on in-memory state the store no longer has would fork the task.
        """
        deadline = time.monotonic() + self._store_retry_s
        delay = 0.05
        outage = False
        while True:
            try:
                if outage:
                    self._recheck_head()
                result = fn(*args, **kwargs)
            except RetryableFailure:
                if (
                    time.monotonic() + delay > deadline
                    or self._lost.is_set()
                    or self._draining.is_set()
                ):
                    raise
                outage = True
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            last = getattr(self.store.sealer, "last_sealed", None)
            head = last(self.task_id) if last is not None else None
            if head is not None and (self._head is None or head[0] > self._head[0]):
                self._head = head
            return result

    def _recheck_head(self) -> None:
        """Raise :class:`LeaseLost` when the store no longer holds this worker's last receipt."""
        if self._head is None:
            return
        seq, digest = self._head
        rows = self.store.receipts(self.task_id, after_seq=seq - 1, limit=1)
        if rows and rows[0].seq == seq and rows[0].hash == digest:
            return
        self.lose_lease()
        raise LeaseLost(
            f"the store no longer holds receipt {seq} of task {self.task_id}, which this worker "
            "wrote before the store went away (the server lost committed writes); giving the "
            "task up so it resumes from what the store kept",
            task_id=self.task_id,
        )


def _with(row: StepRow, **changes: Any) -> StepRow:
    data = {k: getattr(row, k) for k in row.__dataclass_fields__}
    data.update(changes)
    return StepRow(**data)


def _preview(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _error_dict(exc: BaseException) -> dict[str, Any]:
    code = exc.code if isinstance(exc, HoldfastError) else "effect_error"
    return {"code": code, "type": type(exc).__name__, "message": str(exc) or type(exc).__name__}


def _replayed(name: str, row: StepRow) -> HoldfastError:
    err = row.error or {}
    msg = str(err.get("message", ""))
    if row.status == "denied":
        return PermissionDenied(f"step {name!r} ({row.tool}) denied: {msg}")
    return StepFailed(f"step {name!r} failed: {msg}", step=name, error=err)
