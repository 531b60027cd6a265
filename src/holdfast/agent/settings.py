"""The settings of one agent task, read from the task's ``input`` and checked in one place."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.session import RolloverPolicy


@dataclass(frozen=True)
class AgentSettings:
    """How an agent task runs.

    ``model``/``base_url``: the model (``provider:model``) and an optional OpenAI-compatible
    endpoint. ``context_window``, ``threshold``, ``max_turns_per_session``, ``keep_last_turns``:
    the roll-over policy. ``max_turns``: total turns before the task fails with a budget error
    (a model that never calls finish). ``max_idle_replies``: replies in a row without a tool call
    tolerated. ``memory_namespace`` (None: no knowledge memory) and ``embedder``: knowledge
    memory. ``analyze_model``: the model of ``analyze`` jobs (default: ``model``);
    ``analyze_sandbox``: ``namespace`` or ``process``. ``pre_rollover_turn``: give the model
    one turn, with a notice, to update the working set before its physical session ends (the
    optional compaction step; it writes structured state, never a summary).

    Model calls: ``max_output_tokens`` is every turn's (and every ``analyze`` call's)
    ``max_tokens``; ``call_timeout_s`` is how long one attempt may take (a CPU-bound local server
    can need minutes for a long prompt; the task's wall budget bounds all attempts together);
    ``cell_timeout_s`` is how long an ``analyze`` job's code cell may run on its own time.
    ``prices`` gives models the price table does not know, as ``{"provider:model": [input,
    output]}`` (or ``[input, output, cached_input]``) in USD per million tokens; with a dollar
    budget an unpriced model fails the task at start unless ``unpriced`` is ``"estimate"``
    (counted at the table's highest price).
    """

    model: str | None = None
    base_url: str | None = None
    context_window: int = 128_000
    threshold: float = 0.7
    max_turns_per_session: int | None = None
    keep_last_turns: int = 3
    working_set_share: float = 0.2
    pre_rollover_turn: bool = False
    max_turns: int = 500
    max_idle_replies: int = 3
    system_prompt: str | None = None
    memory_namespace: str | None = "default"
    embedder: str = "local"
    analyze: bool = True
    analyze_model: str | None = None
    analyze_sandbox: str = "namespace"
    max_output_tokens: int = 4_096
    call_timeout_s: float = 600.0
    cell_timeout_s: float = 60.0
    prices: dict[str, list[float]] = field(default_factory=dict)
    unpriced: str = "fail"

    @classmethod
    def from_input(cls, raw: Mapping[str, Any]) -> AgentSettings:
        known = {f.name: f for f in fields(cls)}
        extra = set(raw) - set(known)
        if extra:
            raise InvalidInput(
                f"unknown agent input field(s): {', '.join(sorted(extra))}; "
                f"known: {', '.join(sorted(known))}"
            )
        settings = cls(**dict(raw))
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("context_window", "max_turns", "max_idle_replies", "keep_last_turns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"agent input {name} must be a non-negative integer")
        if self.max_turns < 1:
            raise InvalidInput("agent input max_turns must be at least 1")
        if (
            isinstance(self.max_output_tokens, bool)
            or not isinstance(self.max_output_tokens, int)
            or self.max_output_tokens < 1
        ):
            raise InvalidInput("agent input max_output_tokens must be a positive integer")
        for name in ("call_timeout_s", "cell_timeout_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < math.inf
            ):
                raise InvalidInput(f"agent input {name} must be a positive number of seconds")
        if self.unpriced not in ("fail", "estimate"):
            raise InvalidInput("agent input unpriced must be 'fail' or 'estimate'")
        if not isinstance(self.prices, dict):
            raise InvalidInput("agent input prices must map model names to [input, output]")
        for name, price in self.prices.items():
            if not (
                isinstance(price, (list, tuple))
                and len(price) in (2, 3)
                and all(
                    isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < math.inf
                    for p in price
                )
            ):
                raise InvalidInput(
                    f"agent input prices[{name!r}] must be [input, output] or [input, output, "
                    "cached_input] in USD per million tokens"
                )
        if self.analyze_sandbox not in ("namespace", "process"):
            raise InvalidInput("agent input analyze_sandbox must be 'namespace' or 'process'")
        self.rollover_policy()

    def rollover_policy(self) -> RolloverPolicy:
        return RolloverPolicy(
            context_window=self.context_window,
            threshold=self.threshold,
            max_turns=self.max_turns_per_session,
            keep_last_turns=self.keep_last_turns,
            working_set_share=self.working_set_share,
        )

    def to_input(self) -> dict[str, Any]:
        """The non-default fields, as a task's ``input``."""
        default = AgentSettings()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }
