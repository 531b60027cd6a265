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
from holdfast.lm.types import Completion, Message, TokenLogprob, ToolCall, Usage


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
    if not text and not calls:
        raise EmptyResponse(
            f"the model returned an empty reply (finish_reason={finish!r}) from {url}",
            body=raw,
            url=url,
            finish_reason=finish,
        )
    usage = _usage(data.get("usage"), request, text, calls)
    logprobs, token_ids, prompt_ids = token_data(choice, data)
    return Completion(
        text=text,
        tool_calls=tuple(calls),
        finish_reason=finish,
        usage=usage,
        logprobs=logprobs,
        token_ids=token_ids,
        prompt_token_ids=prompt_ids,
    )


def _ints(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return tuple(raw)
    return ()


def token_data(
    choice: dict[str, Any], data: dict[str, Any]
) -> tuple[tuple[TokenLogprob, ...], tuple[int, ...], tuple[int, ...]]:
    """Token log-probabilities (``choices[0].logprobs.content``) and the token ids some servers
    add (vLLM: ``choices[0].token_ids`` and ``prompt_token_ids``); empty when absent or odd."""
    out: list[TokenLogprob] = []
    content = (
        (choice.get("logprobs") or {}).get("content")
        if isinstance(choice.get("logprobs"), dict)
        else None
    )
    if isinstance(content, list):
        for item in content:
            if not isinstance(item, dict):
                return (), (), ()
            token, lp = item.get("token"), item.get("logprob")
            if (
                not isinstance(token, str)
                or not isinstance(lp, (int, float))
                or isinstance(lp, bool)
            ):
                return (), (), ()
            tid = item.get("token_id")
            out.append(TokenLogprob(token, float(lp), tid if isinstance(tid, int) else None))
    prompt = choice.get("prompt_token_ids", data.get("prompt_token_ids"))
    return tuple(out), _ints(choice.get("token_ids")), _ints(prompt)


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
    return Usage(
        input_tokens=estimate_tokens(request.get("messages") or [])
        + estimate_tools_tokens(request.get("tools")),
        output_tokens=estimate_tokens(text)
        + sum(estimate_tokens(c.name) + estimate_tokens(c.arguments) for c in calls),
    )
