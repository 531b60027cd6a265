"""Token estimates made before a model call.

Providers report the true prompt size only after a call (``Usage.input_tokens``); roll-over must
be decided before it. These estimates are deliberately simple and deterministic (about four
characters per token, plus a small per-message overhead) and are calibrated against the
provider's figures by :class:`TokenMeter`, so a systematic under-estimate cannot push a prompt
past the context window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from holdfast.lm.types import Message

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4


def estimate_text_tokens(text: str) -> int:
    """Tokens in ``text``: ceil(chars / 4); zero for the empty string."""
    if not text:
        return 0
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_message_tokens(message: Message) -> int:
    """Tokens in one chat message: content, tool calls and a fixed overhead."""
    total = MESSAGE_OVERHEAD
    content = message.get("content")
    if isinstance(content, str):
        total += estimate_text_tokens(content)
    elif content is not None:
        total += estimate_text_tokens(json.dumps(content, sort_keys=True))
    for call in message.get("tool_calls") or ():
        fn = call.get("function", {})
        total += MESSAGE_OVERHEAD + estimate_text_tokens(str(fn.get("name", "")))
        total += estimate_text_tokens(str(fn.get("arguments", "")))
    if message.get("tool_call_id"):
        total += 2
    return total


def estimate_messages_tokens(
    messages: Iterable[Message], tools: list[dict[str, Any]] | None = None
) -> int:
    """Tokens in a whole request: every message plus the tool schemas."""
    total = sum(estimate_message_tokens(m) for m in messages)
    if tools:
        total += estimate_text_tokens(json.dumps(tools, sort_keys=True))
    return total


class TokenMeter:
    """Calibrates estimates against what the provider reported for earlier calls.

    After each call, :meth:`observe` records the estimate made before it and the provider's
    ``input_tokens``; :meth:`calibrated` scales a new estimate by the largest ratio seen recently
    (never below 1.0), so the roll-over check errs on the side of rolling over early.
    """

    def __init__(self, window: int = 8) -> None:
        self._ratios: list[float] = []
        self._window = window

    def observe(self, estimate: int, reported_input_tokens: int) -> None:
        if estimate > 0 and reported_input_tokens > 0:
            self._ratios.append(reported_input_tokens / estimate)
            del self._ratios[: -self._window]

    @property
    def ratio(self) -> float:
        return max([1.0, *self._ratios])

    def calibrated(self, estimate: int) -> int:
        return int(estimate * self.ratio + 0.999)
