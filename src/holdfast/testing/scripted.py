"""In-process fake models: :class:`ScriptedLM` and :class:`FunctionLM`.

Both implement the :class:`~holdfast.lm.LM` protocol through the same base as the real clients, so
pricing, the call log and input validation behave exactly as in production. They record every
call (``lm.calls``: the messages and keyword arguments), estimate realistic token usage, cut the
reply at the first stop string as a server would, truncate at ``max_tokens`` (finish reason
``length``), and can return tool calls. Use them above the provider adapter; below it, use
:class:`~holdfast.testing.FakeOpenAIServer` with the real SDK.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from holdfast.errors import RuntimeFailure
from holdfast.lm.base import BaseLM, CallParams, apply_stop, attempt_estimate
from holdfast.lm.errors import ProviderTimeout
from holdfast.lm.prices import FREE, Price
from holdfast.lm.record import CallRecorder
from holdfast.lm.tokens import estimate_tokens, estimate_tools_tokens
from holdfast.lm.types import Completion, Message, ToolCall, Usage, attach_usage

Reply = str | Completion
_ids = itertools.count(1)


class ScriptExhausted(RuntimeFailure):
    """A :class:`ScriptedLM` was called more times than it had replies."""

    code = "script_exhausted"


@dataclass(frozen=True)
class RecordedCall:
    """One call made to a fake model: a deep copy of the messages and the keyword arguments set."""

    messages: list[Message]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The text of the last message (handy in assertions)."""
        content = self.messages[-1].get("content") if self.messages else None
        return content if isinstance(content, str) else json.dumps(content)


def tool_call(
    name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None
) -> ToolCall:
    """A :class:`ToolCall` for scripted replies; ``arguments`` may be a dict or raw JSON text."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCall(id=id or f"call_fake_{next(_ids)}", name=name, arguments=args)


def reply(text: str = "", *tool_calls: ToolCall, finish_reason: str | None = None) -> Completion:
    """A scripted :class:`Completion` with text and/or tool calls."""
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    return Completion(text=text, tool_calls=tuple(tool_calls), finish_reason=reason)


class _FakeLM(BaseLM):
    """Shared call recording, latency and usage estimation of the in-process fakes."""

    def __init__(
        self,
        model: str,
        *,
        latency: float = 0.0,
        price: Price | None = FREE,
        call_log: CallRecorder | None = None,
    ) -> None:
        super().__init__(model, price=price, call_log=call_log)
        self.latency = latency
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()

    @property
    def last_call(self) -> RecordedCall:
        if not self.calls:
            raise AssertionError(f"{self!r} was never called")
        return self.calls[-1]

    async def _produce(self, messages: list[Message], kwargs: dict[str, Any]) -> Reply:
        raise NotImplementedError

    async def _acall(self, messages: list[Message], params: CallParams) -> tuple[Completion, int]:
        kwargs = params.to_dict()
        with self._lock:
            self.calls.append(RecordedCall(copy.deepcopy(messages), kwargs))
        try:
            # A per-call ``timeout`` is honoured as a real client does: the call ends with
            # ProviderTimeout, its attempt's estimated tokens attached (one attempt, no retry).
            async with asyncio.timeout(params.timeout):
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                produced = await self._produce(messages, copy.deepcopy(kwargs))
        except TimeoutError:
            err = ProviderTimeout(
                f"{self.model} did not answer within {params.timeout:g} s (timed out), 1 attempt",
                attempts=1,
                timeout=params.timeout,
            )
            attach_usage(err, attempt_estimate(messages, params))
            raise err from None
        except asyncio.CancelledError as exc:
            attach_usage(exc, attempt_estimate(messages, params))
            raise
        return self._finish(produced, messages, params), 1

    def _finish(self, produced: Reply, messages: list[Message], params: CallParams) -> Completion:
        if isinstance(produced, str):
            completion = Completion(text=produced, finish_reason="stop")
        elif isinstance(produced, Completion):
            completion = produced
        else:
            raise TypeError(
                f"{type(self).__name__} replies must be str or Completion, got {type(produced).__name__}"
            )
        text, stopped = apply_stop(completion.text, params.stop)
        reason = completion.finish_reason or ("tool_calls" if completion.tool_calls else "stop")
        if stopped:
            reason = "stop"
        if params.max_tokens is not None and estimate_tokens(text) > params.max_tokens:
            text = _truncate_to_tokens(text, params.max_tokens)
            reason = "length"
        out_tokens = estimate_tokens(text) + sum(
            estimate_tokens(tc.name) + estimate_tokens(tc.arguments) for tc in completion.tool_calls
        )
        given = completion.usage
        usage = Usage(
            input_tokens=estimate_tokens(messages) + estimate_tools_tokens(params.tools),
            output_tokens=out_tokens,
            cached_tokens=given.cached_tokens,
        )
        return replace(completion, text=text, finish_reason=reason, usage=usage)


def _truncate_to_tokens(text: str, max_tokens: int) -> str:
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_tokens(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


class ScriptedLM(_FakeLM):
    """A fake model that replies from a script.

    ``replies`` is a sequence of str/Completion returned in order (then ``then`` for every
    further call, or :class:`ScriptExhausted` if ``then`` is None), or a callable of the messages
    returning one (sync or async).
    """

    def __init__(
        self,
        replies: Sequence[Reply] | Iterable[Reply] | Callable[[list[Message]], Any],
        *,
        model: str = "fake:scripted",
        then: Reply | None = None,
        latency: float = 0.0,
        price: Price | None = FREE,
        call_log: CallRecorder | None = None,
    ) -> None:
        super().__init__(model, latency=latency, price=price, call_log=call_log)
        self._fn: Callable[[list[Message]], Any] | None = None
        self._replies: list[Reply] = []
        if callable(replies):
            self._fn = replies
        else:
            self._replies = list(replies)
        self.then = then
        self._next = 0

    @property
    def remaining(self) -> int:
        """Scripted replies not used yet."""
        return len(self._replies) - self._next

    async def _produce(self, messages: list[Message], kwargs: dict[str, Any]) -> Reply:
        if self._fn is not None:
            out = self._fn(copy.deepcopy(messages))
            produced: Reply = await out if inspect.isawaitable(out) else out
            return produced
        with self._lock:
            index = self._next
            self._next += 1
        if index < len(self._replies):
            return self._replies[index]
        if self.then is not None:
            return self.then
        raise ScriptExhausted(
            f"ScriptedLM ran out of replies: call {index + 1} but only {len(self._replies)} "
            "were scripted (pass then=... for a default reply)",
            calls=index + 1,
        )


class FunctionLM(_FakeLM):
    """A fake model driven by a function of ``(messages, **kwargs) -> str | Completion``.

    The function may be sync or async; it receives the keyword arguments that were set on the call
    (``tools``, ``stop``, ``response_format``, ``max_tokens`` ...). An exception it raises
    propagates to the caller, which is how tests inject provider failures.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        model: str = "fake:function",
        latency: float = 0.0,
        price: Price | None = FREE,
        call_log: CallRecorder | None = None,
    ) -> None:
        super().__init__(model, latency=latency, price=price, call_log=call_log)
        self.fn = fn

    async def _produce(self, messages: list[Message], kwargs: dict[str, Any]) -> Reply:
        out = self.fn(copy.deepcopy(messages), **kwargs)
        produced: Reply = await out if inspect.isawaitable(out) else out
        return produced
