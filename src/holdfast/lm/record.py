"""What one model call looked like, for the call log: the exact prompt, parameters and outcome.

:class:`CallRecord` is plain data (JSON round trip with :meth:`CallRecord.to_dict` /
:meth:`CallRecord.from_dict`). Any object with a ``record(CallRecord)`` method is a
:class:`CallRecorder`; ``holdfast.lm.CallLog`` is the persistent one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from holdfast.lm.types import Completion, Message, ToolCall, Usage


def usage_from_dict(data: dict[str, Any]) -> Usage:
    """The inverse of :meth:`Usage.to_dict`."""
    return Usage(
        input_tokens=int(data.get("input_tokens", 0)),
        output_tokens=int(data.get("output_tokens", 0)),
        cached_tokens=int(data.get("cached_tokens", 0)),
        latency_s=float(data.get("latency_s", 0.0)),
        cost_usd=float(data.get("cost_usd", 0.0)),
        calls=int(data.get("calls", 1)),
        priced=bool(data.get("priced", True)),
    )


def completion_to_dict(completion: Completion) -> dict[str, Any]:
    """A JSON-safe dict of a :class:`Completion`."""
    return {
        "text": completion.text,
        "tool_calls": [
            {"id": tc.id, "name": tc.name, "arguments": tc.arguments}
            for tc in completion.tool_calls
        ],
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.to_dict(),
        "model": completion.model,
        "call_id": completion.call_id,
    }


def completion_from_dict(data: dict[str, Any]) -> Completion:
    """The inverse of :func:`completion_to_dict`."""
    return Completion(
        text=str(data.get("text", "")),
        tool_calls=tuple(
            ToolCall(id=str(t["id"]), name=str(t["name"]), arguments=str(t["arguments"]))
            for t in data.get("tool_calls") or ()
        ),
        finish_reason=data.get("finish_reason"),
        usage=usage_from_dict(data.get("usage") or {}),
        model=str(data.get("model", "")),
        call_id=data.get("call_id"),
    )


@dataclass(frozen=True)
class CallRecord:
    """One model call: the exact messages and parameters sent, the reply or the error, timing."""

    call_id: str
    model: str
    messages: list[Message]
    params: dict[str, Any] = field(default_factory=dict)
    completion: Completion | None = None
    error: dict[str, Any] | None = None
    started_at: float = 0.0
    latency_s: float = 0.0
    attempts: int = 1
    base_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def usage(self) -> Usage:
        return (
            self.completion.usage
            if self.completion is not None
            else Usage(latency_s=self.latency_s)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "model": self.model,
            "base_url": self.base_url,
            "messages": copy.deepcopy(self.messages),
            "params": copy.deepcopy(self.params),
            "completion": None if self.completion is None else completion_to_dict(self.completion),
            "error": self.error,
            "started_at": self.started_at,
            "latency_s": self.latency_s,
            "attempts": self.attempts,
            "metadata": copy.deepcopy(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        comp = data.get("completion")
        return cls(
            call_id=str(data["call_id"]),
            model=str(data["model"]),
            messages=list(data.get("messages") or []),
            params=dict(data.get("params") or {}),
            completion=None if comp is None else completion_from_dict(comp),
            error=data.get("error"),
            started_at=float(data.get("started_at", 0.0)),
            latency_s=float(data.get("latency_s", 0.0)),
            attempts=int(data.get("attempts", 1)),
            base_url=data.get("base_url"),
            metadata=dict(data.get("metadata") or {}),
        )


@runtime_checkable
class CallRecorder(Protocol):
    """Receives every call an LM makes (successful or not). Must be thread-safe."""

    def record(self, call: CallRecord) -> None: ...
