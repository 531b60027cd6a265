"""``analyze``: the agent dispatches a bounded reasoning job (an RLM run) over files or text.

The job runs in its own sandbox with a budget derived from what the task has left (wall time,
dollars, tokens), under the task's cancellation signal, and is charged to the task as it spends:
a stop, a pause or an exhausted task budget ends it within a fraction of a second, and the task's
budget bounds it. It reasons, it never acts. Its answer and trace id come back to the agent, which
keeps them in the working set as a finding; the trace is stored in the Holdfast store
(``holdfast rlm trace <id>``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from holdfast.agent.env import AnalysisResult, JobAllowance
from holdfast.errors import BudgetExceeded
from holdfast.lm.types import LM, Usage

if TYPE_CHECKING:
    from holdfast.lm.prices import Price
    from holdfast.rlm import Budget
    from holdfast.sandbox.types import Sandbox, SandboxPolicy
    from holdfast.store import Backend, SQLiteDB


class RLMAnalyzer:
    """Runs ``holdfast.rlm.RLM`` jobs for the agent's ``analyze`` tool."""

    def __init__(
        self,
        model: LM | str,
        *,
        sub_model: LM | str | None = None,
        sandbox: SandboxPolicy | Callable[[SandboxPolicy], Sandbox] | None = None,
        budget: Budget | None = None,
        db: SQLiteDB | Backend | None = None,
        mode: str = "auto",
        max_output_tokens: int | None = 4_096,
        call_timeout_s: float | None = 600.0,
        cell_timeout_s: float | None = None,
        prices: Mapping[str, Price | Sequence[float]] | None = None,
        unpriced: str = "fail",
    ) -> None:
        self.model = model
        self.sub_model = sub_model
        self.sandbox = sandbox
        self.budget = budget
        self.db = db
        self.mode = mode
        self.max_output_tokens = max_output_tokens
        self.call_timeout_s = call_timeout_s
        self.cell_timeout_s = cell_timeout_s
        self.prices = dict(prices or {})
        self.unpriced = unpriced

    def models(self) -> list[LM]:
        """The model objects a job may call (names are resolved once, here)."""
        from holdfast.rlm.engine import resolve_lm

        if isinstance(self.model, str):
            self.model = resolve_lm(self.model, "analyze")
        if isinstance(self.sub_model, str):
            self.sub_model = resolve_lm(self.sub_model, "analyze sub")
        return [m for m in (self.model, self.sub_model) if isinstance(m, LM)]

    def analyze(
        self,
        question: str,
        inputs: dict[str, Any],
        signature: str | None,
        *,
        allowance: JobAllowance | None = None,
    ) -> AnalysisResult:
        from holdfast.rlm import RLM, BrokerLimits, Budget
        from holdfast.rlm.store import RLMTraceStore

        budget = job_budget(self.budget or Budget(unpriced=self.unpriced), allowance)  # type: ignore[arg-type]
        spend = allowance.spend if allowance is not None else None

        def on_usage(usage: Usage) -> None:
            if spend is not None:
                spend(usage.total_tokens, usage.cost_usd)

        self.models()
        store = RLMTraceStore(self.db) if self.db is not None else None
        rlm = RLM(
            self.model,
            self.sub_model,
            sandbox=self.sandbox,
            budget=budget,
            signature=signature,
            store=store,
            mode=self.mode,  # type: ignore[arg-type]
            on_budget="return",
            root_max_tokens=self.max_output_tokens,
            sub_max_tokens=self.max_output_tokens,
            cell_timeout_s=self.cell_timeout_s,
            limits=BrokerLimits(call_timeout_s=self.call_timeout_s),
            prices=self.prices,
            on_usage=on_usage,
        )
        cancel = allowance.cancel if allowance is not None else None
        result = rlm.run(question, cancel=cancel, **inputs)
        total = result.usage.total
        return AnalysisResult(
            answer=result.answer,
            trace_id=result.trace_id,
            status=result.status,
            tokens=total.input_tokens + total.output_tokens,
            cost_usd=result.usage.usd,
            charged=spend is not None,
        )


def job_budget(base: Budget, allowance: JobAllowance | None) -> Budget:
    """``base`` cut down to what the task has left; refuses a job when nothing is left."""
    if allowance is None:
        return base
    limits: dict[str, Any] = {}
    for name, left, what in (
        ("max_wall_s", allowance.wall_s, "wall time"),
        ("max_usd", allowance.usd, "dollars"),
        ("max_tokens", allowance.tokens, "tokens"),
    ):
        if left is None:
            continue
        if left <= 0:
            raise BudgetExceeded(
                f"the task has no {what} left in its budget for an analyze job",
                limit={"max_wall_s": "wall_s", "max_usd": "usd", "max_tokens": "tokens"}[name],
            )
        current = getattr(base, name)
        limits[name] = left if current is None else min(current, left)
    return replace(base, **limits)
