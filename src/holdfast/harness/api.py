"""The control plane's Python API: submit, inspect, steer, approve and verify tasks.

``Harness.open()`` picks the backend from a URL or path: ``postgresql://...`` for PostgreSQL,
anything else (or nothing: ``<holdfast home>/holdfast.db``) for the embedded SQLite store. The
CLI and the HTTP server are thin layers over this class.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from holdfast.config import default_db_path
from holdfast.errors import InvalidInput
from holdfast.harness.policy import Policy
from holdfast.harness.receipts import (
    ReceiptSealer,
    Signer,
    VerifyResult,
    canonical_json,
    verify_chain,
)
from holdfast.harness.registry import Registry, default_registry
from holdfast.harness.rows import (
    ApprovalRow,
    Draft,
    ReceiptRow,
    StepRow,
    TaskRow,
)
from holdfast.harness.spec import TaskSpec
from holdfast.harness.store import SQLHarnessStore
from holdfast.harness.worker import Worker, WorkerSettings
from holdfast.store import Backend, Clock, open_url

STEER_KINDS = ("message", "stop", "pause", "resume")


def open_store(
    url: str | os.PathLike[str] | Backend | None = None,
    *,
    signer: Signer | None = None,
    clock: Clock | None = None,
) -> SQLHarnessStore:
    """The control-plane store at ``url``: PostgreSQL for ``postgres[ql]://``, a SQLite file for a
    path or ``sqlite:///path``, ``<holdfast home>/holdfast.db`` for nothing, or an open backend.

    ``clock`` replaces the store's clock (tests pass a :class:`holdfast.testing.FakeClock`).
    """
    sealer = ReceiptSealer(signer)
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
        self.signer = signer

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | Backend | None = None,
        *,
        signer: Signer | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> Harness:
        return cls(open_store(url, signer=signer, clock=clock), registry, signer=signer)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tasks -----------------------------------------------------------------------------

    def submit(self, spec: TaskSpec | dict[str, Any], *, by: str = "api") -> TaskRow:
        """Validate and queue a task; with an idempotency key, a repeat returns the first task."""
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
        row, _ = self.store.submit(
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
        return row

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
        if ttl_s <= 0:
            raise InvalidInput("an approval's lifetime must be positive")
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
        self, task_id: str, *, signer: Signer | None = None, require_signatures: bool = False
    ) -> VerifyResult:
        """Check the task's receipt chain against its checkpointed head (and signatures), and
        each finished step's stored result (what a resumed task replays) against its receipt."""
        task = self.store.get(task_id)
        results: dict[str, tuple[int, str]] = {}

        def collect() -> Iterator[ReceiptRow]:
            for r in self.store.iter_receipts(task_id):
                if '"kind":"result"' in r.body:
                    d = r.data()
                    if d.get("kind") == "result" and d["payload"].get("ok"):
                        results[str(d["step"])] = (r.seq, str(d["payload"]["result_sha256"]))
                yield r

        chain = verify_chain(
            task_id,
            collect(),
            head_seq=task.head_seq,
            head_hash=task.head_hash,
            head_sig=task.head_sig,
            signer=signer or self.signer,
            require_signatures=require_signatures,
        )
        if not chain.ok:
            return chain
        for step in self.store.list_steps(task_id):
            if step.status != "done" or step.name not in results:
                continue
            seq, digest = results[step.name]
            if hashlib.sha256(canonical_json(step.result).encode()).hexdigest() != digest:
                return replace(
                    chain,
                    ok=False,
                    bad_seq=seq,
                    reason=f"the stored result of step {step.name!r} does not match receipt {seq}",
                )
        return chain

    # -- workers ---------------------------------------------------------------------------

    def worker(self, settings: WorkerSettings | None = None) -> Worker:
        return Worker(self.store, self.registry, settings)

    def run_until_idle(self, settings: WorkerSettings | None = None) -> int:
        """Run one in-process worker until no task is ready (tests, the demo, scripts)."""
        s = settings or WorkerSettings(poll_s=0.05)
        if not s.exit_when_idle:
            s = WorkerSettings(**{**s.__dict__, "exit_when_idle": True})
        return self.worker(s).run()
