"""``analyze``: the agent dispatches a bounded reasoning job (an RLM run) over files or text.

The job runs in its own sandbox with its own budget; it reasons, it never acts. Its answer and
trace id come back to the agent, which keeps them in the working set as a finding; the trace is
stored in the Holdfast store (``holdfast rlm trace <id>``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from holdfast.agent.env import AnalysisResult
from holdfast.lm.types import LM

if TYPE_CHECKING:
    from holdfast.rlm import Budget
    from holdfast.sandbox.types import Sandbox, SandboxPolicy
    from holdfast.store import SQLiteDB


class RLMAnalyzer:
    """Runs ``holdfast.rlm.RLM`` jobs for the agent's ``analyze`` tool."""

    def __init__(
        self,
        model: LM | str,
        *,
        sub_model: LM | str | None = None,
        sandbox: SandboxPolicy | Callable[[SandboxPolicy], Sandbox] | None = None,
        budget: Budget | None = None,
        db: SQLiteDB | None = None,
        mode: str = "auto",
    ) -> None:
        self.model = model
        self.sub_model = sub_model
        self.sandbox = sandbox
        self.budget = budget
        self.db = db
        self.mode = mode

    def analyze(
        self, question: str, inputs: dict[str, Any], signature: str | None
    ) -> AnalysisResult:
        from holdfast.rlm import RLM
        from holdfast.rlm.store import RLMTraceStore

        store = RLMTraceStore(self.db) if self.db is not None else None
        rlm = RLM(
            self.model,
            self.sub_model,
            sandbox=self.sandbox,
            budget=self.budget,
            signature=signature,
            store=store,
            mode=self.mode,  # type: ignore[arg-type]
            on_budget="return",
        )
        result = rlm.run(question, **inputs)
        total = result.usage.total
        return AnalysisResult(
            answer=result.answer,
            trace_id=result.trace_id,
            status=result.status,
            tokens=total.input_tokens + total.output_tokens,
            cost_usd=result.usage.usd,
        )
