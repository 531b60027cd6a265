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
from typing import Any

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

    async def aclose(self) -> None:
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()

    def close(self) -> None:
        closer = getattr(self.inner, "close", None)
        if callable(closer):
            closer()
