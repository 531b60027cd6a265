"""The chat-completions wire format: request bodies out, :class:`Completion` in.

Replies are parsed from the raw JSON bytes (not through the SDK's models) so that a malformed or
unusual body becomes a :class:`MalformedResponse` carrying an excerpt of what the server sent, and
so that servers that add or omit fields (Ollama, llama.cpp, vLLM) parse the same way.
"""

from __future__ import annotations

import json
from typing import Any

from holdfast.lm.base import CallParams
from holdfast.lm.errors import EmptyResponse, MalformedResponse
from holdfast.lm.tokens import estimate_tokens, estimate_tools_tokens
from holdfast.lm.types import Completion, Message, ToolCall, Usage, attach_usage


def request_body(
    model_id: str,
    messages: list[Message],
    params: CallParams,
    *,
    max_tokens_param: str = "max_tokens",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions``."""
    body: dict[str, Any] = dict(extra or {})
    body["model"] = model_id
    body["messages"] = messages
    if params.tools:
        body["tools"] = params.tools
    if params.tool_choice is not None:
        body["tool_choice"] = params.tool_choice
    if params.stop:
        body["stop"] = params.stop
    if params.response_format is not None:
        body["response_format"] = params.response_format
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body[max_tokens_param] = params.max_tokens
    return body


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def parse_completion(raw: bytes, request: dict[str, Any], *, url: str) -> Completion:
    """Parse a chat-completion response body; raise MalformedResponse/EmptyResponse if unusable."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise MalformedResponse(
            f"{url} answered HTTP 200 with a body that is not JSON ({exc})", body=raw, url=url
        ) from None
    try:
        choice = data["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict):
            raise TypeError("message is not an object")
        text = _text_of(message.get("content"))
        calls = []
        for i, call in enumerate(message.get("tool_calls") or ()):
            fn = call["function"]
            args = fn.get("arguments", "")
            calls.append(
                ToolCall(
                    id=str(call.get("id") or f"call_{i}"),
                    name=str(fn["name"]),
                    arguments=args if isinstance(args, str) else json.dumps(args),
                )
            )
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise MalformedResponse(
            f"{url} answered with JSON that is not a chat completion (missing {exc})",
            body=raw,
            url=url,
        ) from None
    usage = _usage(data.get("usage"), request, text, calls)
    if not text and not calls:
        empty = EmptyResponse(
            f"the model returned an empty reply (finish_reason={finish!r}) from {url}",
            body=raw,
            url=url,
            finish_reason=finish,
        )
        attach_usage(empty, usage)  # an empty reply still used tokens (reasoning, say)
        raise empty
    return Completion(text=text, tool_calls=tuple(calls), finish_reason=finish, usage=usage)


def _usage(raw: Any, request: dict[str, Any], text: str, calls: list[ToolCall]) -> Usage:
    if isinstance(raw, dict) and ("prompt_tokens" in raw or "completion_tokens" in raw):
        details = raw.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if cached is None:
            cached = raw.get("prompt_cache_hit_tokens", 0)
        return Usage(
            input_tokens=int(raw.get("prompt_tokens") or 0),
            output_tokens=int(raw.get("completion_tokens") or 0),
            cached_tokens=int(cached or 0),
        )
    # No usage reported (some local servers): estimate, so budgets still move.
    input_tokens = estimate_tokens(request.get("messages") or []) + estimate_tools_tokens(
        request.get("tools")
    )
    output_tokens = estimate_tokens(text) + sum(
        estimate_tokens(c.name) + estimate_tokens(c.arguments) for c in calls
    )
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        estimated_tokens=input_tokens + output_tokens,
    )
