"""The control plane's Python API: submit, inspect, steer, approve and verify tasks.

``Harness.open()`` picks the backend from a URL or path: ``postgresql://...`` for PostgreSQL,
anything else (or nothing: ``<holdfast home>/holdfast.db``) for the embedded SQLite store. The
CLI and the HTTP server are thin layers over this class.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from holdfast.config import default_db_path
from holdfast.errors import InvalidInput
from holdfast.harness.policy import Policy
from holdfast.harness.receipts import ReceiptSealer, canonical_json
from holdfast.harness.registry import Registry, default_registry
from holdfast.harness.rows import (
    ApprovalRow,
    Draft,
    ReceiptRow,
    StepRow,
    TaskRow,
)
from holdfast.harness.signing import Signer, configured_signer
from holdfast.harness.spec import TaskSpec
from holdfast.harness.store import SQLHarnessStore
from holdfast.harness.store_core import NewTask
from holdfast.harness.verify import Anchor, StepRecord, TaskRecord, VerifyResult, verify_task
from holdfast.harness.worker import Worker, WorkerSettings
from holdfast.store import Backend, Clock, open_url

STEER_KINDS = ("message", "stop", "pause", "resume")


class _Key(enum.Enum):
    CONFIGURED = "configured"


CONFIGURED_KEY = _Key.CONFIGURED
"""The default ``signer``: the key :func:`~holdfast.harness.signing.configured_signer` finds
(``HOLDFAST_RECEIPT_KEY``, else ``<holdfast home>/receipt.key``), or none."""

SignerArg = Signer | None | _Key


def resolve_signer(signer: SignerArg) -> Signer | None:
    return configured_signer() if isinstance(signer, _Key) else signer


def open_store(
    url: str | os.PathLike[str] | Backend | None = None,
    *,
    signer: SignerArg = CONFIGURED_KEY,
    clock: Clock | None = None,
) -> SQLHarnessStore:
    """The control-plane store at ``url``: PostgreSQL for ``postgres[ql]://``, a SQLite file for a
    path or ``sqlite:///path``, ``<holdfast home>/holdfast.db`` for nothing, or an open backend.

    Receipts are signed with the configured key unless ``signer`` is given (``None``: unsigned).
    ``clock`` replaces the store's clock (tests pass a :class:`holdfast.testing.FakeClock`).
    """
    sealer = ReceiptSealer(resolve_signer(signer))
    if isinstance(url, Backend):
        return SQLHarnessStore(url, sealer)
    backend = open_url(url, clock=clock, default=default_db_path)
    try:
        return SQLHarnessStore(backend, sealer)
    except BaseException:
        backend.close()
        raise


class Harness:
    """A store plus the registry of task kinds, with the operations people and programs use."""

    def __init__(
        self,
        store: SQLHarnessStore,
        registry: Registry | None = None,
        *,
        signer: Signer | None = None,
    ) -> None:
        self.store = store
        self.registry = registry or default_registry()
        sealer_signer = getattr(store.sealer, "signer", None)
        self.signer = signer if signer is not None else sealer_signer

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | Backend | None = None,
        *,
        signer: SignerArg = CONFIGURED_KEY,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> Harness:
        """Open the store at ``url``; every receipt this process writes is signed with
        ``signer``, by default the configured key (see :data:`CONFIGURED_KEY`)."""
        key = resolve_signer(signer)
        return cls(open_store(url, signer=key, clock=clock), registry, signer=key)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tasks -----------------------------------------------------------------------------

    def submit(self, spec: TaskSpec | dict[str, Any], *, by: str = "api") -> TaskRow:
        """Validate and queue a task; with an idempotency key, a repeat returns the first task."""
        t = self._new_task(spec, by)
        row, _ = self.store.submit(
            kind=t.kind,
            queue=t.queue,
            spec=t.spec,
            priority=t.priority,
            max_attempts=t.max_attempts,
            idempotency_key=t.idempotency_key,
            draft=t.draft,
        )
        return row

    def submit_many(
        self, specs: Sequence[TaskSpec | dict[str, Any]], *, by: str = "api"
    ) -> list[TaskRow]:
        """Validate and queue many tasks in one transaction (all or none are stored), each
        with its own receipt, in order; a spec whose idempotency key is already stored (or
        given earlier in ``specs``) returns the first task, as :meth:`submit` does. Every spec
        is validated before anything is written."""
        if isinstance(specs, TaskSpec | dict):
            raise InvalidInput("submit_many takes a list of task specs")
        tasks = [self._new_task(spec, by) for spec in specs]
        return [row for row, _ in self.store.submit_many(tasks)]

    def _new_task(self, spec: TaskSpec | dict[str, Any], by: str) -> NewTask:
        if not isinstance(spec, TaskSpec):
            spec = TaskSpec.from_dict(spec)
        kind = self.registry.get(spec.kind)
        if kind.tools:
            Policy.parse(spec.policy.to_dict(), known_tools=kind.tools)
        elif spec.policy.rules:
            unknown = [r.tool for r in spec.policy.rules if r.tool != "*"]
            if unknown:
                raise InvalidInput(
                    f"the policy names tools the {kind.name!r} kind does not have: "
                    f"{', '.join(unknown)}"
                )
        if kind.validate is not None:
            kind.validate(spec.input)
        if spec.workspace is not None:
            ws = Path(spec.workspace).expanduser().resolve()
            if not ws.is_dir():
                raise InvalidInput(f"the workspace {ws} is not a directory")
            spec = TaskSpec(**{**spec.__dict__, "workspace": str(ws)})
        data = spec.to_dict()
        try:
            digest = hashlib.sha256(canonical_json(data).encode()).hexdigest()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the task spec is not JSON: {exc}") from exc
        return NewTask(
            kind=spec.kind,
            queue=spec.queue,
            spec=data,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
            idempotency_key=spec.idempotency_key,
            draft=Draft(
                "submitted",
                {"kind": spec.kind, "goal": spec.goal, "queue": spec.queue, "spec_sha256": digest},
                actor=by,
            ),
        )

    def get(self, task_id: str) -> TaskRow:
        return self.store.get(task_id)

    def list_tasks(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 100
    ) -> list[TaskRow]:
        return self.store.list_tasks(status=status, queue=queue, limit=limit)

    def steps(self, task_id: str) -> list[StepRow]:
        self.store.get(task_id)
        return self.store.list_steps(task_id)

    def approvals(self, task_id: str) -> list[ApprovalRow]:
        return self.store.approvals(task_id)

    # -- steering and approvals ------------------------------------------------------------

    def steer(self, task_id: str, kind: str, message: str = "", *, by: str = "api") -> str:
        """Send ``message``, ``stop``, ``pause`` or ``resume``; returns ``applied`` or ``queued``."""
        if kind not in STEER_KINDS:
            raise InvalidInput(f"steering kind must be one of {', '.join(STEER_KINDS)}")
        if kind == "message" and not message.strip():
            raise InvalidInput("a steering message cannot be empty")
        return self.store.steer(
            task_id, kind, message, Draft("steer", {"kind": kind, "message": message}, actor=by)
        )

    def stop(self, task_id: str, *, by: str = "api") -> str:
        return self.steer(task_id, "stop", by=by)

    def pause(self, task_id: str, *, by: str = "api") -> str:
        return self.steer(task_id, "pause", by=by)

    def resume(self, task_id: str, *, by: str = "api") -> str:
        return self.steer(task_id, "resume", by=by)

    def approve(
        self, task_id: str, step: str, *, by: str = "api", ttl_s: float = 3600.0
    ) -> ApprovalRow:
        """A single-use decision letting ``step`` run, valid for ``ttl_s`` seconds."""
        return self._decide(task_id, step, "approve", by, ttl_s)

    def deny(
        self, task_id: str, step: str, *, by: str = "api", ttl_s: float = 3600.0
    ) -> ApprovalRow:
        """A single-use refusal: the step fails with ``PermissionDenied`` when the task resumes."""
        return self._decide(task_id, step, "deny", by, ttl_s)

    def _decide(self, task_id: str, step: str, decision: str, by: str, ttl_s: float) -> ApprovalRow:
        if (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, int | float)
            or not math.isfinite(ttl_s)
            or ttl_s <= 0
        ):
            raise InvalidInput(
                f"an approval's lifetime must be a positive, finite number of seconds, "
                f"got {ttl_s!r}"
            )
        return self.store.decide(
            task_id,
            step,
            decision=decision,
            by=by,
            ttl_s=ttl_s,
            draft=Draft(
                "approval", {"decision": decision, "by": by, "ttl_s": ttl_s}, step=step, actor=by
            ),
        )

    # -- receipts --------------------------------------------------------------------------

    def receipts(
        self, task_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[ReceiptRow]:
        self.store.get(task_id)
        return self.store.receipts(task_id, after_seq=after_seq, limit=limit)

    def verify(
        self,
        task_id: str,
        *,
        signer: SignerArg = CONFIGURED_KEY,
        require_signatures: bool = False,
        anchors: Sequence[Anchor] = (),
    ) -> VerifyResult:
        """Check the task's receipt chain, its signed head, its row (status, result, error,
        checkpoint, spec) and its steps against each other and against ``anchors``, all read in
        one snapshot. ``signer`` defaults to this harness's key; with a key, a missing signature
        is a broken chain."""
        key = self.signer if isinstance(signer, _Key) else signer
        with self.store.chain_snapshot(task_id) as snap:
            return verify_task(
                TaskRecord.from_row(snap.task),
                snap.receipts(),
                [StepRecord.from_row(s) for s in snap.steps],
                signer=key,
                require_signatures=require_signatures,
                anchors=[a for a in anchors if a.task == task_id],
            )

    def export_anchor(
        self, task_id: str, *, signer: SignerArg = CONFIGURED_KEY
    ) -> tuple[VerifyResult, Anchor | None]:
        """Verify the task, then return its head as an :class:`Anchor` to keep outside the
        database (signed when there is a key); no anchor when the chain does not verify."""
        key = self.signer if isinstance(signer, _Key) else signer
        result = self.verify(task_id, signer=key)
        if not result.ok or result.status is None:
            return result, None
        anchor = Anchor(task_id, result.count, result.head_hash, result.status, time.time())
        if key is not None and key.can_sign:
            anchor = anchor.signed_by(key)
        return result, anchor

    # -- workers ---------------------------------------------------------------------------

    def worker(self, settings: WorkerSettings | None = None) -> Worker:
        return Worker(self.store, self.registry, settings)

    def run_until_idle(self, settings: WorkerSettings | None = None) -> int:
        """Run one in-process worker until no task is ready (tests, the demo, scripts)."""
        s = settings or WorkerSettings(poll_s=0.05)
        if not s.exit_when_idle:
            s = WorkerSettings(**{**s.__dict__, "exit_when_idle": True})
        return self.worker(s).run()
