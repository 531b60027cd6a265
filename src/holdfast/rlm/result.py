"""What an RLM job returns: the typed answer, its status, usage split root/sub, and the trace id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from holdfast.lm.types import ZERO_USAGE, Usage

Status = Literal["ok", "budget_exceeded", "cancelled", "error"]


@dataclass(frozen=True)
class RLMUsage:
    """Usage of a job: the root model's own turns and every sub-call (children included)."""

    root: Usage = ZERO_USAGE
    sub: Usage = ZERO_USAGE

    @property
    def total(self) -> Usage:
        return self.root + self.sub

    @property
    def usd(self) -> float:
        return self.root.cost_usd + self.sub.cost_usd

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root.to_dict(), "sub": self.sub.to_dict(), "usd": round(self.usd, 6)}


@dataclass(frozen=True)
class RLMResult:
    """The outcome of a job.

    ``answer`` is the single output's value when the signature has one output (``answer: str`` by
    default), else the validated pydantic object; ``outputs`` is the same as plain JSON data.
    """

    answer: Any
    outputs: dict[str, Any]
    status: Status
    usage: RLMUsage
    iterations: int
    trace_id: str
    mode: Literal["rlm", "direct"] = "rlm"
    elapsed_s: float = 0.0
    sub_calls: int = 0
    error: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.outputs if len(self.outputs) != 1 else next(iter(self.outputs.values())),
            "outputs": self.outputs,
            "status": self.status,
            "usage": self.usage.to_dict(),
            "iterations": self.iterations,
            "sub_calls": self.sub_calls,
            "trace_id": self.trace_id,
            "mode": self.mode,
            "elapsed_s": round(self.elapsed_s, 3),
            "error": self.error,
        }
