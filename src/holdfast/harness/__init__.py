"""The durable control plane: tasks, leases and workers, the step contract, receipts, budgets,
permission gates and steering, on SQLite or PostgreSQL.

A runner does its work through a :class:`StepContext`::

    def run(ctx: StepContext) -> dict:
        n = ctx.step("charge-card", "payments.charge", {"amount": 5}, lambda key: charge(5, key),
                     idempotent=True)
        ctx.checkpoint({"charged": n})
        return {"charged": n}

    h = Harness.open()                       # <holdfast home>/holdfast.db, or a postgresql:// URL
    h.registry.register(TaskKind("pay", run, tools={"payments.charge": ToolSpec(idempotent=True)}))
    task = h.submit({"kind": "pay", "policy": {"rules": [{"tool": "payments.*", "action": "ask"}]}})
"""

from holdfast.harness.api import CONFIGURED_KEY, STEER_KINDS, Harness, open_store
from holdfast.harness.budget import BudgetMeter
from holdfast.harness.cancel import CancelToken
from holdfast.harness.context import PermissionDenied, StepContext, StepFailed, TaskInterrupt
from holdfast.harness.policy import Decision, Policy, Rule
from holdfast.harness.receipts import ReceiptSealer, canonical_json
from holdfast.harness.registry import Registry, Runner, TaskKind, ToolSpec, default_registry
from holdfast.harness.rows import (
    TASK_STATUSES,
    TERMINAL_STATUSES,
    ApprovalRow,
    LeaseLost,
    ReceiptRow,
    StepRow,
    StoreUnavailable,
    TaskNotFound,
    TaskRow,
    TaskStateError,
)
from holdfast.harness.signing import (
    Ed25519Signer,
    HMACSigner,
    Signer,
    configured_signer,
    generate_key,
    load_signer,
)
from holdfast.harness.spec import Budget, TaskSpec
from holdfast.harness.store import SQLHarnessStore
from holdfast.harness.verify import Anchor, VerifyResult, read_anchors, verify_chain, verify_task
from holdfast.harness.worker import Worker, WorkerSettings

__all__ = [
    "CONFIGURED_KEY",
    "STEER_KINDS",
    "TASK_STATUSES",
    "TERMINAL_STATUSES",
    "Anchor",
    "ApprovalRow",
    "Budget",
    "BudgetMeter",
    "CancelToken",
    "Decision",
    "Ed25519Signer",
    "HMACSigner",
    "Harness",
    "LeaseLost",
    "PermissionDenied",
    "Policy",
    "ReceiptRow",
    "ReceiptSealer",
    "Registry",
    "Rule",
    "Runner",
    "SQLHarnessStore",
    "Signer",
    "StepContext",
    "StepFailed",
    "StepRow",
    "StoreUnavailable",
    "TaskInterrupt",
    "TaskKind",
    "TaskNotFound",
    "TaskRow",
    "TaskSpec",
    "TaskStateError",
    "ToolSpec",
    "VerifyResult",
    "Worker",
    "WorkerSettings",
    "canonical_json",
    "configured_signer",
    "default_registry",
    "generate_key",
    "load_signer",
    "open_store",
    "read_anchors",
    "verify_chain",
    "verify_task",
]
