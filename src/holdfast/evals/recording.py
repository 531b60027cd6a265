"""A transparent wrapper that records every call a model makes during one eval task.

:class:`RecordingLM` forwards ``acomplete``/``complete`` to the wrapped :class:`~holdfast.lm.LM`
and appends the exact messages, tools and parameters sent and the reply received (text, tool
calls, usage, and the token ids and log-probabilities when the provider returned them) to the
current sink. The eval runner points the sink at a fresh list before each task and stores it
with the task's result; the trajectory export reads it back.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from holdfast.lm.stream import LMStream, StreamDone, StreamEvent, SyncLMStream
from holdfast.lm.types import LM, Completion, Message


def completion_record(completion: Completion) -> dict[str, Any]:
    """The reply as recorded: text, tool calls, finish reason, usage and any token data."""
    out: dict[str, Any] = {
        "text": completion.text,
        "tool_calls": [tc.to_message_dict() for tc in completion.tool_calls],
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.to_dict(),
    }
    logprobs = getattr(completion, "logprobs", None)
    if logprobs:
        out["logprobs"] = [
            {
                "token": t.token,
                "logprob": t.logprob,
                **({"token_id": t.token_id} if t.token_id is not None else {}),
            }
            for t in logprobs
        ]
    token_ids = getattr(completion, "token_ids", None)
    if token_ids:
        out["token_ids"] = list(token_ids)
    prompt_ids = getattr(completion, "prompt_token_ids", None)
    if prompt_ids:
        out["prompt_token_ids"] = list(prompt_ids)
    return out


class RecordingLM:
    """Records calls to ``inner`` under ``role`` (``root``, ``sub``, ``agent``, ``plain``...)."""

    def __init__(self, inner: LM, role: str) -> None:
        self.inner = inner
        self.role = role
        self.model = inner.model
        self._lock = threading.Lock()
        self.sink: list[dict[str, Any]] = []

    def _record(
        self, messages: list[Message], kwargs: dict[str, Any], reply: Completion | None, err: Any
    ) -> None:
        entry: dict[str, Any] = {
            "role": self.role,
            "model": self.model,
            "at": time.time(),
            "messages": copy.deepcopy(messages),
            "params": {k: v for k, v in kwargs.items() if v is not None and k != "tools"},
        }
        if kwargs.get("tools"):
            entry["tools"] = copy.deepcopy(kwargs["tools"])
        if reply is not None:
            entry["reply"] = completion_record(reply)
        if err is not None:
            entry["error"] = {"type": type(err).__name__, "message": str(err)[:2000]}
        with self._lock:
            self.sink.append(entry)

    async def acomplete(self, messages: list[Message], **kwargs: Any) -> Completion:
        try:
            reply = await self.inner.acomplete(messages, **kwargs)
        except Exception as exc:
            self._record(messages, kwargs, None, exc)
            raise
        self._record(messages, kwargs, reply, None)
        return reply

    def complete(self, messages: list[Message], **kwargs: Any) -> Completion:
        try:
            reply = self.inner.complete(messages, **kwargs)
        except Exception as exc:
            self._record(messages, kwargs, None, exc)
            raise
        self._record(messages, kwargs, reply, None)
        return reply

    def astream(self, messages: list[Message], **kwargs: Any) -> LMStream:
        """The inner model's stream, recorded once it ends (with the assembled reply)."""
        inner = self.inner.astream(messages, **kwargs)

        async def events() -> AsyncIterator[StreamEvent]:
            try:
                async for event in inner:
                    if isinstance(event, StreamDone):
                        self._record(messages, kwargs, event.completion, None)
                    yield event
            except Exception as exc:
                self._record(messages, kwargs, None, exc)
                raise
            finally:
                await inner.aclose()

        return LMStream(events())

    def stream(self, messages: list[Message], **kwargs: Any) -> _RecordingSyncStream:
        """The blocking form of :meth:`astream`, recorded the same way."""
        return _RecordingSyncStream(self.inner.stream(messages, **kwargs), self, messages, kwargs)

    async def aclose(self) -> None:
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()

    def close(self) -> None:
        closer = getattr(self.inner, "close", None)
        if callable(closer):
            closer()


class _RecordingSyncStream(SyncLMStream):
    """The inner model's :class:`SyncLMStream`, recording its reply when it ends.

    Every method is delegated to the inner stream (which runs on the inner model's own loop), so
    the base initialiser is not called.
    """

    def __init__(
        self,
        inner: SyncLMStream,
        owner: RecordingLM,
        messages: list[Message],
        kwargs: dict[str, Any],
    ) -> None:
        self._inner = inner
        self._owner = owner
        self._messages = messages
        self._kwargs = kwargs

    @property
    def completion(self) -> Completion | None:
        return self._inner.completion

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        try:
            event = next(self._inner)
        except StopIteration:
            raise
        except Exception as exc:
            self._owner._record(self._messages, self._kwargs, None, exc)
            raise
        if isinstance(event, StreamDone):
            self._owner._record(self._messages, self._kwargs, event.completion, None)
        return event

    def collect(self) -> Completion:
        for _ in self:
            pass
        completion = self._inner.completion
        if completion is None:
            raise RuntimeError("the stream ended without a completion")
        return completion

    def __enter__(self) -> _RecordingSyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._inner.close()
