"""Rows and errors of the control-plane store (the same on SQLite and PostgreSQL).

The store knows SQL and nothing about hashing or policy: every mutation that must leave a receipt
takes a :class:`Draft`, and the store asks its :class:`Sealer` (supplied by ``holdfast.harness``)
to turn the draft into a chained, optionally signed receipt inside the same transaction, so a
state change and its receipt are committed together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from holdfast.errors import RuntimeFailure, UserError
from holdfast.store.errors import StoreUnavailable

TASK_STATUSES = (
    "queued",
    "running",
    "paused",
    "waiting_approval",
    "succeeded",
    "failed",
    "cancelled",
)
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
STEP_STATUSES = ("intent", "started", "done", "failed", "denied")

__all__ = [
    "STEP_STATUSES",
    "TASK_STATUSES",
    "TERMINAL_STATUSES",
    "ApprovalRow",
    "Draft",
    "LeaseLost",
    "ReceiptRow",
    "SealedReceipt",
    "Sealer",
    "SteeringRow",
    "StepRow",
    "StoreUnavailable",
    "TaskNotFound",
    "TaskRow",
    "TaskStateError",
    "dumps",
    "loads",
]


class LeaseLost(RuntimeFailure):
    """This worker no longer holds the task's lease: another worker may have taken it over."""

    code = "lease_lost"


class TaskNotFound(UserError):
    """No task has the given id."""

    code = "task_not_found"


class TaskStateError(UserError):
    """The requested change does not apply to the task in its current state."""

    code = "task_state"


@dataclass(frozen=True)
class Draft:
    """A receipt before it is chained: what happened, to which step, on whose behalf."""

    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    step: str | None = None
    actor: str = "harness"


@dataclass(frozen=True)
class SealedReceipt:
    """A receipt ready to store: the canonical body that was hashed, its hash and signature, and
    the signature of the chain head it makes (stored on the task row)."""

    seq: int
    body: str
    hash: str
    sig: str | None = None
    key_id: str | None = None
    head_sig: str | None = None


class Sealer(Protocol):
    """Turns a draft into the next receipt of a task's chain (implemented by the harness)."""

    def seal(
        self, task_id: str, seq: int, prev_hash: str, ts: float, draft: Draft, status: str
    ) -> SealedReceipt:
        """Receipt ``seq`` after ``prev_hash``; ``status`` is the task's status once the event
        is applied, read in the same transaction."""
        ...


@dataclass(frozen=True)
class TaskRow:
    """One task as stored."""

    id: str
    kind: str
    queue: str
    status: str
    spec: dict[str, Any]
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 10
    idempotency_key: str | None = None
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires: float | None = None
    heartbeat_at: float | None = None
    run_after: float = 0.0
    checkpoint: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    usage: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, Any] | None = None
    head_seq: int = 0
    head_hash: str = ""
    head_sig: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class StepRow:
    """The durable state of one named step of a task."""

    task_id: str
    name: str
    status: str
    tool: str
    key: str
    idempotent: bool
    result: Any = None
    error: dict[str, Any] | None = None
    updated_at: float = 0.0


@dataclass(frozen=True)
class ReceiptRow:
    """A stored receipt. ``body`` is the canonical JSON that ``hash`` covers."""

    task_id: str
    seq: int
    body: str
    hash: str
    sig: str | None = None
    key_id: str | None = None

    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass(frozen=True)
class ApprovalRow:
    """A request for a person's decision on a step, and the decision once given."""

    id: int
    task_id: str
    step: str
    purpose: str
    request: dict[str, Any]
    decision: str | None = None
    decided_by: str | None = None
    expires_at: float | None = None
    consumed_at: float | None = None
    created_at: float = 0.0


@dataclass(frozen=True)
class SteeringRow:
    """A steering command (message, stop, pause) waiting to be applied by the task's worker."""

    id: int
    task_id: str
    kind: str
    message: str
    created_at: float = 0.0


def dumps(value: Any) -> str:
    """JSON for a stored column; raises ``TypeError`` on values JSON cannot hold."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
