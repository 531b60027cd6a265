"""The model-access contract every other layer codes against.

Messages are OpenAI chat-format dicts (``{"role": ..., "content": ..., "tool_calls": ...}``).
An :class:`LM` is async first (``acomplete``) with a sync wrapper (``complete``) and returns a
:class:`Completion` whose :class:`Usage` carries tokens, latency and a USD cost computed from the
price table (never only from what a provider reports).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from holdfast.lm.stream import LMStream, SyncLMStream

Message = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One tool call requested by the model; ``arguments`` is the raw JSON text it sent."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; raises ``ValueError`` with the raw text when they are not."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"tool call {self.name!r} sent arguments that are not JSON: {self.arguments[:200]!r}"
            ) from exc
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r} arguments are not a JSON object")
        return value

    def to_message_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Usage:
    """Tokens, latency and cost of one call (or a sum of calls)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    calls: int = 1
    priced: bool = True
    """False when a model in the sum had no entry in the price table (its cost counted as 0)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            latency_s=self.latency_s + other.latency_s,
            cost_usd=self.cost_usd + other.cost_usd,
            calls=self.calls + other.calls,
            priced=self.priced and other.priced,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "latency_s": round(self.latency_s, 6),
            "cost_usd": self.cost_usd,
            "calls": self.calls,
            "priced": self.priced,
        }


ZERO_USAGE = Usage(calls=0)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability (and its id, where the server sends it)."""

    token: str
    logprob: float
    token_id: int | None = None


@dataclass(frozen=True)
class Completion:
    """A model's reply: text, tool calls, why it stopped, and what it cost.

    ``logprobs``, ``token_ids`` and ``prompt_token_ids`` are filled only when the provider
    returned them (OpenAI-compatible ``logprobs``; vLLM's ``return_token_ids``): trainers read
    them from exported trajectories."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    call_id: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    token_ids: tuple[int, ...] = ()
    prompt_token_ids: tuple[int, ...] = ()

    def to_message(self) -> Message:
        """The assistant message to append to a conversation."""
        msg: Message = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            msg["tool_calls"] = [tc.to_message_dict() for tc in self.tool_calls]
        return msg


@runtime_checkable
class LM(Protocol):
    """A language model. ``model`` is its ``provider:model`` name.

    ``astream`` / ``stream`` take the same arguments and yield the reply as it is generated
    (see :mod:`holdfast.lm.stream`).
    """

    model: str

    async def acomplete(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Completion: ...

    def complete(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Completion: ...

    def astream(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LMStream: ...

    def stream(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SyncLMStream: ...
