"""When a physical session ends, and the memory decisions around it.

:class:`RolloverPolicy` is the mechanical part: a fraction of the model's context window (default
0.7) or a turn count ends a physical session, and fixed shares of the window go to the seed of the
next one. :class:`MemoryPolicy` is the judgement part, kept behind one small interface so that a
learned policy can replace :class:`HeuristicMemoryPolicy` without touching the agent loop: what to
flush to knowledge memory before a session ends, what to recall into a fresh one, and which tool
results to prune from the live context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from holdfast.errors import InvalidInput
from holdfast.session.working_set import WorkingSet


@dataclass(frozen=True)
class RolloverPolicy:
    """How big a physical session may grow and how the next one is seeded.

    ``context_window``: the model's window in tokens. ``threshold``: roll over when the next
    prompt would exceed this fraction of it. ``max_turns``: also roll over after this many turns
    in one physical session (None: no turn limit). ``keep_last_turns``: turns carried verbatim into
    the next session. ``working_set_share`` and ``recall_share``: fractions of the window given to
    the working-set block and to recalled knowledge.
    """

    context_window: int = 128_000
    threshold: float = 0.7
    max_turns: int | None = None
    keep_last_turns: int = 3
    working_set_share: float = 0.2
    recall_share: float = 0.05

    def __post_init__(self) -> None:
        if self.context_window < 256:
            raise InvalidInput(
                f"context_window must be at least 256 tokens, not {self.context_window}"
            )
        if not 0.1 <= self.threshold <= 0.95:
            raise InvalidInput(f"threshold must be between 0.1 and 0.95, not {self.threshold}")
        if self.max_turns is not None and self.max_turns < 1:
            raise InvalidInput(f"max_turns must be at least 1, not {self.max_turns}")
        if self.keep_last_turns < 0:
            raise InvalidInput("keep_last_turns cannot be negative")
        if not 0 < self.working_set_share < self.threshold:
            raise InvalidInput("working_set_share must be above 0 and below threshold")
        if not 0 <= self.recall_share < self.threshold - self.working_set_share:
            raise InvalidInput("recall_share leaves no room for the conversation")

    @property
    def limit_tokens(self) -> int:
        """The prompt size that triggers a roll-over."""
        return int(self.context_window * self.threshold)

    @property
    def working_set_budget(self) -> int:
        return int(self.context_window * self.working_set_share)

    @property
    def recall_budget(self) -> int:
        return int(self.context_window * self.recall_share)


@dataclass(frozen=True)
class FlushItem:
    """One durable fact to write to knowledge memory before a physical session ends."""

    key: str
    text: str
    kind: str


@dataclass(frozen=True)
class PruneCandidate:
    """A tool result in the live context: its id, age in turns and size in tokens."""

    result_id: str
    age_turns: int
    tokens: int
    tool: str


@runtime_checkable
class MemoryPolicy(Protocol):
    """The memory decisions of the agent loop, in one replaceable place."""

    def should_flush(self, *, reason: str, turns_in_session: int) -> bool:
        """Whether to flush to knowledge memory now (``reason``: "rollover", "finish", "turn")."""
        ...

    def select_flush(self, ws: WorkingSet, already_flushed: frozenset[str]) -> list[FlushItem]:
        """The facts to write; ``already_flushed`` holds keys written before (flushes are idempotent)."""
        ...

    def recall_queries(self, ws: WorkingSet) -> list[str]:
        """Queries whose cited results seed a fresh physical session."""
        ...

    def select_prune(
        self, candidates: list[PruneCandidate], *, prompt_tokens: int, limit: int
    ) -> list[str]:
        """Result ids to prune from the live context before the next call."""
        ...


@dataclass(frozen=True)
class HeuristicMemoryPolicy:
    """Today's default: flush at roll-over and finish; recall by goal, blockers and next step.

    Automatic pruning is off by default (``prune_at=None``): pruning rewrites the middle of the
    prompt, which defeats provider prompt caching, and the agent can prune for itself with
    ``context_prune``. With ``prune_at`` set, large tool results older than ``prune_min_age`` turns
    are pruned once the prompt passes that fraction of the roll-over limit.
    """

    prune_at: float | None = None
    prune_min_tokens: int = 400
    prune_min_age: int = 4

    def should_flush(self, *, reason: str, turns_in_session: int) -> bool:
        return reason in ("rollover", "finish")

    def select_flush(self, ws: WorkingSet, already_flushed: frozenset[str]) -> list[FlushItem]:
        items: list[FlushItem] = []
        for d in ws.live_decisions():
            items.append(
                FlushItem(
                    f"decision:{d.id}", f"Decision: {d.text} (why: {d.rationale})", "decision"
                )
            )
        for c in ws.constraints.values():
            items.append(FlushItem(f"constraint:{c.id}", f"Constraint: {c.text}", "constraint"))
        for f in ws.findings.values():
            trace = f" [trace {f.trace_id}]" if f.trace_id else ""
            items.append(FlushItem(f"finding:{f.id}", f"Finding: {f.text}{trace}", "finding"))
        for b in ws.blockers.values():
            if b.resolved:
                items.append(
                    FlushItem(f"blocker:{b.id}", f"Resolved: {b.text} -> {b.resolution}", "lesson")
                )
        return [i for i in items if i.key not in already_flushed]

    def recall_queries(self, ws: WorkingSet) -> list[str]:
        queries = [ws.goal] if ws.goal else []
        queries.extend(b.text for b in ws.open_blockers())
        if ws.next_step:
            queries.append(ws.next_step)
        return queries[:4]

    def select_prune(
        self, candidates: list[PruneCandidate], *, prompt_tokens: int, limit: int
    ) -> list[str]:
        if self.prune_at is None or prompt_tokens < self.prune_at * limit:
            return []
        old = [
            c
            for c in candidates
            if c.age_turns >= self.prune_min_age
            and c.tokens >= self.prune_min_tokens
            and c.tool not in ("context_recall",)
        ]
        old.sort(key=lambda c: (-c.age_turns, c.result_id))
        return [c.result_id for c in old]
