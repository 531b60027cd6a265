"""The shared body of every LM: validation, timing, pricing, the call log and the sync wrapper.

A concrete model implements :meth:`BaseLM._acall` (one call, retries included) and returns a
:class:`Completion` plus the number of attempts; :meth:`BaseLM.acomplete` wraps it so that every
implementation, fakes included, validates input the same way, prices usage from the price table,
and records the exact messages, parameters and outcome with the attached call recorder.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from holdfast.errors import Cancelled, HoldfastError, InvalidInput
from holdfast.lm._portal import LoopThread
from holdfast.lm.prices import Price
from holdfast.lm.record import CallRecord, CallRecorder
from holdfast.lm.stream import (
    Delta,
    LMStream,
    StreamDone,
    StreamEvent,
    SyncLMStream,
    TextDelta,
    ToolCallDelta,
)
from holdfast.lm.types import Completion, Message, Usage

log = logging.getLogger("holdfast.lm")

T = TypeVar("T")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True)
class CallParams:
    """The per-call parameters of :meth:`LM.acomplete`, other than the messages."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    stop: list[str] | None = None
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The parameters that were set, as sent (for the call log and fakes' records)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is not None:
                out[name] = copy.deepcopy(value)
        return out


def validate_messages(messages: Any) -> list[Message]:
    """Check that ``messages`` is a non-empty list of chat messages; raise InvalidInput if not."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(
            "messages must be a non-empty list of chat messages like "
            '[{"role": "user", "content": "..."}]',
            got=type(messages).__name__,
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidInput(f"message {i} is a {type(msg).__name__}, not a dict", index=i)
        role = msg.get("role")
        if role not in ROLES:
            raise InvalidInput(
                f"message {i} has role {role!r}; expected one of {sorted(ROLES)}", index=i
            )
        if "content" not in msg and not msg.get("tool_calls"):
            raise InvalidInput(f"message {i} ({role}) has no content", index=i)
    return messages


def apply_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut ``text`` at the earliest occurrence of any stop string, as a server does."""
    if not stop:
        return text, False
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


_PIECES = re.compile(r"\S+\s*|\s+")


def replay_as_deltas(completion: Completion) -> list[Delta]:
    """The deltas a server would have streamed for ``completion`` (word by word, then calls)."""
    deltas: list[Delta] = [TextDelta(piece) for piece in _PIECES.findall(completion.text)]
    deltas += [
        ToolCallDelta(index=i, id=tc.id, name=tc.name, arguments=tc.arguments)
        for i, tc in enumerate(completion.tool_calls)
    ]
    return deltas


def new_call_id() -> str:
    return "call-" + uuid.uuid4().hex[:20]


def _params(
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    tool_choice: Any,
    stop: list[str] | str | None,
    response_format: dict[str, Any] | None,
    temperature: float | None,
    max_tokens: int | None,
    timeout: float | None,
) -> CallParams:
    validate_messages(messages)
    if isinstance(stop, str):
        stop = [stop]
    return CallParams(
        tools=tools,
        tool_choice=tool_choice,
        stop=stop,
        response_format=response_format,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
    )


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="holdfast-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def error_dict(exc: BaseException) -> dict[str, Any]:
    """A JSON-safe description of an exception, for the call log."""
    if isinstance(exc, HoldfastError):
        return exc.to_dict()
    if isinstance(exc, asyncio.CancelledError):
        return Cancelled("the call was cancelled").to_dict()
    return {"code": "exception", "type": type(exc).__name__, "message": str(exc)[:2000]}


class BaseLM(ABC):
    """Common behaviour of every :class:`~holdfast.lm.types.LM` implementation."""

    model: str

    def __init__(
        self,
        model: str,
        *,
        price: Price | None = None,
        call_log: CallRecorder | None = None,
        base_url: str | None = None,
    ) -> None:
        self.model = model
        self.price = price
        self.call_log = call_log
        self.base_url = base_url

    @abstractmethod
    async def _acall(self, messages: list[Message], params: CallParams) -> tuple[Completion, int]:
        """Make one call (with any retries); return the completion and the attempts it took."""

    async def _astream(
        self, messages: list[Message], params: CallParams
    ) -> AsyncGenerator[Delta | tuple[Completion, int], None]:
        """Stream one call: deltas, then ``(completion, attempts)`` last.

        The default, for models without a streaming wire (the in-process fakes), makes the whole
        call and replays it as deltas; network clients override it with a real stream.
        """
        completion, attempts = await self._acall(messages, params)
        for delta in replay_as_deltas(completion):
            yield delta
        yield completion, attempts

    def _prepare(self) -> None:
        """Set up per-loop resources (clients, pools) outside the timed part of a call."""
        return None

    def price_usage(self, usage: Usage) -> Usage:
        """``usage`` with its cost computed from the price table (flagged when unknown)."""
        if self.price is None:
            return replace(usage, cost_usd=0.0, priced=False)
        cost = self.price.cost(usage.input_tokens, usage.output_tokens, usage.cached_tokens)
        return replace(usage, cost_usd=cost, priced=True)

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
    ) -> Completion:
        """Call the model with OpenAI-format ``messages``; see :class:`~holdfast.lm.types.LM`."""
        params = _params(
            messages, tools, tool_choice, stop, response_format, temperature, max_tokens, timeout
        )
        self._prepare()
        call_id = new_call_id()
        started_at = time.time()
        t0 = time.perf_counter()
        try:
            completion, attempts = await self._acall(messages, params)
        except BaseException as exc:
            if self.call_log is not None:
                self._record(call_id, messages, params, None, exc, started_at, t0, 1, metadata)
            raise
        completion = self._stamp(completion, call_id, t0)
        if self.call_log is not None:
            self._record(
                call_id, messages, params, completion, None, started_at, t0, attempts, metadata
            )
        return completion

    def _stamp(self, completion: Completion, call_id: str, t0: float) -> Completion:
        latency = time.perf_counter() - t0
        usage = self.price_usage(replace(completion.usage, latency_s=latency, calls=1))
        return replace(
            completion, usage=usage, call_id=call_id, model=completion.model or self.model
        )

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
    ) -> LMStream:
        """Stream the reply: text and tool-call deltas as they arrive, then one StreamDone.

        Takes the arguments of :meth:`acomplete`; ``timeout`` here bounds the wait for the first
        event and for each one after it. Use ``async with lm.astream(...) as events:`` so that
        leaving the block early closes the request. The call log records the assembled reply (or
        the error, with the text received before it).
        """
        params = _params(
            messages, tools, tool_choice, stop, response_format, temperature, max_tokens, timeout
        )
        return LMStream(self._stream_events(messages, params, metadata))

    async def _stream_events(
        self, messages: list[Message], params: CallParams, metadata: dict[str, Any] | None
    ) -> AsyncIterator[StreamEvent]:
        self._prepare()
        call_id = new_call_id()
        started_at = time.time()
        t0 = time.perf_counter()
        received: list[str] = []
        attempts = 1
        finished = False
        try:
            async with aclosing(self._astream(messages, params)) as items:
                async for item in items:
                    if isinstance(item, tuple):
                        completion, attempts = item
                        completion = self._stamp(completion, call_id, t0)
                        if self.call_log is not None:
                            self._record(
                                call_id, messages, params, completion, None, started_at, t0,
                                attempts, metadata,
                            )  # fmt: skip
                        finished = True
                        yield StreamDone(completion)
                        return
                    if isinstance(item, TextDelta):
                        received.append(item.text)
                    yield item
        except BaseException as exc:
            if self.call_log is not None and not finished:
                if isinstance(exc, GeneratorExit):
                    exc = Cancelled("the stream was closed by its reader before it ended")
                self._record(
                    call_id, messages, params, None, exc, started_at, t0, attempts, metadata,
                    partial_text="".join(received),
                )  # fmt: skip
            raise

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
    ) -> SyncLMStream:
        """The blocking form of :meth:`astream`: ``with lm.stream(...) as events: for ev in events``."""
        events = self.astream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            stop=stop,
            response_format=response_format,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            metadata=metadata,
        )
        portal, owned = self._stream_portal()
        return SyncLMStream(events, portal, on_close=portal.stop if owned else None)

    def _stream_portal(self) -> tuple[LoopThread, bool]:
        """The loop thread a sync stream runs on, and whether the stream owns (and stops) it."""
        return LoopThread("holdfast-lm-stream"), True

    def _record(
        self,
        call_id: str,
        messages: list[Message],
        params: CallParams,
        completion: Completion | None,
        exc: BaseException | None,
        started_at: float,
        t0: float,
        attempts: int,
        metadata: dict[str, Any] | None,
        *,
        partial_text: str | None = None,
    ) -> None:
        assert self.call_log is not None
        error = None if exc is None else error_dict(exc)
        if error is not None and partial_text:
            error["partial_text"] = partial_text
        record = CallRecord(
            call_id=call_id,
            model=self.model,
            messages=copy.deepcopy(messages),
            params=params.to_dict(),
            completion=completion,
            error=error,
            started_at=started_at,
            latency_s=time.perf_counter() - t0,
            attempts=getattr(exc, "attempts", attempts) if exc is not None else attempts,
            base_url=self.base_url,
            metadata=dict(metadata or {}),
        )
        try:
            self.call_log.record(record)
        except Exception:
            # The call log is an observer: a failure to write it must not fail the call.
            log.exception("could not record model call %s in the call log", call_id)

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
    ) -> Completion:
        """The blocking form of :meth:`acomplete`; safe to call from any thread."""
        return self._run_sync(
            self.acomplete(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                stop=stop,
                response_format=response_format,
                temperature=temperature,
                max_tokens=max_tokens,
                timeout=timeout,
                metadata=metadata,
            )
        )

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return run_sync(coro)

    async def aclose(self) -> None:
        """Release connections held by this LM (nothing for in-process models)."""
        return None

    def close(self) -> None:
        """The blocking form of :meth:`aclose`."""
        self._run_sync(self.aclose())

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
