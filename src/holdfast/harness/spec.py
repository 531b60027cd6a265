"""What a task is asked to do: its kind, goal, workspace, input, policy and budget.

:meth:`TaskSpec.from_dict` is the one place a task description from outside (a JSON file, the CLI,
the HTTP API) is checked; every problem becomes an :class:`InvalidInput` that names the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.harness.policy import Policy

_QUEUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SPEC_FIELDS = {
    "kind",
    "goal",
    "workspace",
    "input",
    "policy",
    "budget",
    "queue",
    "priority",
    "max_attempts",
    "idempotency_key",
}


@dataclass(frozen=True)
class Budget:
    """Limits on one task; None means unlimited. Running out fails the task with ``budget``."""

    wall_s: float | None = None
    tokens: int | None = None
    usd: float | None = None
    steps: int | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> Budget:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidInput("'budget' must be an object with wall_s, tokens, usd or steps")
        extra = set(raw) - {"wall_s", "tokens", "usd", "steps"}
        if extra:
            raise InvalidInput(f"unknown budget field(s): {', '.join(sorted(extra))}")
        values: dict[str, Any] = {}
        for name in ("wall_s", "tokens", "usd", "steps"):
            v = raw.get(name)
            if v is None:
                continue
            integral = name in ("tokens", "steps")
            ok = isinstance(v, int) if integral else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok or not math.isfinite(v) or v <= 0:
                kind = "a positive integer" if integral else "a positive number"
                raise InvalidInput(f"budget '{name}' must be {kind}, got {v!r}")
            values[name] = v
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("wall_s", self.wall_s),
                ("tokens", self.tokens),
                ("usd", self.usd),
                ("steps", self.steps),
            )
            if v is not None
        }


@dataclass(frozen=True)
class TaskSpec:
    """A task to submit. ``input`` is free-form JSON for the kind's runner."""

    kind: str
    goal: str = ""
    workspace: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    budget: Budget = field(default_factory=Budget)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 10
    idempotency_key: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> TaskSpec:
        """Check a task description given as JSON data."""
        if not isinstance(raw, Mapping):
            raise InvalidInput("a task spec must be a JSON object with at least a 'kind'")
        extra = set(raw) - _SPEC_FIELDS
        if extra:
            raise InvalidInput(
                f"unknown task spec field(s): {', '.join(sorted(extra))}; "
                f"known: {', '.join(sorted(_SPEC_FIELDS))}"
            )
        kind = raw.get("kind")
        if not isinstance(kind, str) or not kind:
            raise InvalidInput("a task spec needs a 'kind' (for example 'scripted' or 'agent')")
        goal = raw.get("goal", "")
        if not isinstance(goal, str):
            raise InvalidInput("'goal' must be a string")
        workspace = raw.get("workspace")
        if workspace is not None and (not isinstance(workspace, str) or not workspace):
            raise InvalidInput("'workspace' must be a directory path")
        inp = raw.get("input", {})
        if not isinstance(inp, Mapping):
            raise InvalidInput("'input' must be a JSON object")
        queue = raw.get("queue", "default")
        if not isinstance(queue, str) or not _QUEUE.match(queue) or queue == "*":
            raise InvalidInput(f"'queue' must match {_QUEUE.pattern}, got {queue!r}")
        priority = raw.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidInput("'priority' must be an integer")
        attempts = raw.get("max_attempts", 10)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise InvalidInput("'max_attempts' must be an integer of at least 1")
        key = raw.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
            raise InvalidInput("'idempotency_key' must be a non-empty string of at most 200 chars")
        return cls(
            kind=kind,
            goal=goal,
            workspace=workspace,
            input=dict(inp),
            policy=Policy.parse(raw.get("policy")),
            budget=Budget.from_dict(raw.get("budget")),
            queue=queue,
            priority=priority,
            max_attempts=attempts,
            idempotency_key=key,
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form (what :meth:`from_dict` reads back)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "goal": self.goal,
            "input": self.input,
            "policy": self.policy.to_dict(),
            "budget": self.budget.to_dict(),
            "queue": self.queue,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
        }
        if self.workspace is not None:
            out["workspace"] = self.workspace
        if self.idempotency_key is not None:
            out["idempotency_key"] = self.idempotency_key
        return out
