"""What a tool sees while it runs: the session, the workspace, the harness step, and services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from holdfast.agent.workspace import Workspace
from holdfast.session import RecallHit, VirtualSession

if TYPE_CHECKING:
    from holdfast.harness import StepContext


class MemoryAccess(Protocol):
    """Knowledge memory as the agent uses it (an adapter over ``holdfast.memory``)."""

    def remember(self, text: str, *, kind: str = "fact", key: str | None = None) -> dict[str, Any]:
        """Store one durable fact; returns its id and citation."""
        ...

    def search(self, query: str, *, limit: int = 5) -> list[RecallHit]:
        """Cited hits for ``query``."""
        ...

    def dispatch(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one of the memory package's agent tools (``memory_add``, ``memory_search``...)."""
        ...


@dataclass(frozen=True)
class AnalysisResult:
    """What an ``analyze`` job returns to the agent: the answer and where its trace lives."""

    answer: Any
    trace_id: str
    status: str
    tokens: int = 0
    cost_usd: float = 0.0
    charged: bool = False
    """True when the job already charged the task as it went (through ``JobAllowance.spend``)."""


@dataclass(frozen=True)
class JobAllowance:
    """What the task that starts a reasoning job lets it use, and where the job reports back.

    ``cancel`` is the task's cancellation signal (anything with ``is_set()``); ``wall_s``,
    ``usd`` and ``tokens`` are what the task's budget has left (None: no limit); ``spend`` is
    called with ``(tokens, usd)`` for every charge as the job makes it, so the task is charged as
    it goes, not only when the job ends.
    """

    cancel: Any = None
    wall_s: float | None = None
    usd: float | None = None
    tokens: int | None = None
    spend: Callable[[int, float], None] | None = None


class Analyzer(Protocol):
    """Runs a bounded reasoning job (an RLM run) over named inputs, within ``allowance``."""

    def analyze(
        self,
        question: str,
        inputs: dict[str, Any],
        signature: str | None,
        *,
        allowance: JobAllowance | None = None,
    ) -> AnalysisResult: ...


@dataclass
class ToolEnv:
    """Passed to tools that ask for it (first parameter annotated ``ToolEnv``)."""

    session: VirtualSession
    workspace: Workspace | None
    ctx: StepContext | None
    key: str
    turn: int
    memory: MemoryAccess | None = None
    analyzer: Analyzer | None = None

    def keyed(self) -> VirtualSession:
        """The session, with the next working-set operation tagged by this call's key."""
        self.session.working_set.op_key = self.key
        return self.session
