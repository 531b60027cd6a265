"""A tokenizer-free token estimate, for budgeting before a call.

Exact counts come from the provider's ``usage`` after a call; before it, Holdfast needs a cheap,
deterministic, dependency-free estimate that errs slightly high for English prose and code and
stays sane for other scripts. The rule: every run of word characters costs one token per four
characters (at least one), every other non-space character costs one token, and characters outside
ASCII cost one token each (CJK text is roughly one token per character). Chat messages add a few
tokens of framing each, as the chat templates of real servers do.

The estimate is additive over whitespace: ``estimate_tokens(a + " " + b) ==
estimate_tokens(a) + estimate_tokens(b)``, which makes budgets composable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

# A run of word characters counts one token per four characters (a match of up to four of them);
# any other non-space character counts one.
_TOKEN = re.compile(r"[A-Za-z0-9_]{1,4}|[^\sA-Za-z0-9_]")

MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3


def _text_tokens(text: str) -> int:
    return _TOKEN.subn("", text)[1]


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                else:
                    parts.append(json.dumps(part, sort_keys=True, default=str))
            else:
                parts.append(str(part))
        return "\n".join(parts)
    return json.dumps(content, sort_keys=True, default=str)


def estimate_message_tokens(message: Mapping[str, Any]) -> int:
    """The estimated prompt tokens of one chat message, framing included."""
    total = MESSAGE_OVERHEAD + _text_tokens(_content_text(message.get("content")))
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            total += _text_tokens(value)
    for call in message.get("tool_calls") or ():
        fn = call.get("function", {}) if isinstance(call, Mapping) else {}
        total += (
            3 + _text_tokens(str(fn.get("name", ""))) + _text_tokens(str(fn.get("arguments", "")))
        )
    return total


def estimate_tokens(value: str | Mapping[str, Any] | Iterable[Mapping[str, Any]] | None) -> int:
    """Estimate the tokens of a text, one chat message, or a list of chat messages.

    A list of messages includes the few tokens a server adds to prime the reply.
    """
    if value is None:
        return 0
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, Mapping):
        return estimate_message_tokens(value)
    messages = list(value)
    if not messages:
        return 0
    return sum(estimate_message_tokens(m) for m in messages) + REPLY_PRIMING


def estimate_tools_tokens(tools: Iterable[Mapping[str, Any]] | None) -> int:
    """Estimated prompt tokens taken by tool (function) definitions."""
    if not tools:
        return 0
    return sum(_text_tokens(json.dumps(t, sort_keys=True, default=str)) for t in tools)
