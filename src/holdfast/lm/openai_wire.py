"""The chat-completions wire format: request bodies out, :class:`Completion` in.

Replies are parsed from the raw JSON bytes (not through the SDK's models) so that a malformed or
unusual body becomes a :class:`MalformedResponse` carrying an excerpt of what the server sent, and
so that servers that add or omit fields (Ollama, llama.cpp, vLLM) parse the same way.
"""

from __future__ import annotations

import json
from typing import Any

from holdfast.lm.base import CallParams
from holdfast.lm.errors import EmptyResponse, MalformedResponse, StreamError
from holdfast.lm.stream import Delta, TextDelta, ToolCallDelta
from holdfast.lm.tokens import estimate_tokens, estimate_tools_tokens
from holdfast.lm.types import Completion, Message, TokenLogprob, ToolCall, Usage


def request_body(
    model_id: str,
    messages: list[Message],
    params: CallParams,
    *,
    max_tokens_param: str = "max_tokens",
    extra: dict[str, Any] | None = None,
    stream: bool = False,
) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` (asking for usage at the end of a stream)."""
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
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
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
        raise EmptyResponse(
            f"the model returned an empty reply (finish_reason={finish!r}) from {url}",
            body=raw,
            url=url,
            finish_reason=finish,
            usage=usage.to_dict(),
        )
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


class ChunkAssembler:
    """Turns the ``chat.completion.chunk`` events of a stream into deltas and one Completion.

    Tolerates what real servers send: usage in the last chunk (``stream_options``), in every chunk
    or not at all (then estimated); tool calls in pieces keyed by ``index`` or whole in one chunk;
    ``content`` as a string or a list of parts; an ``{"error": ...}`` event in the middle.
    """

    def __init__(self, request: dict[str, Any], *, url: str) -> None:
        self.request = request
        self.url = url
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage_raw: Any = None
        self.saw_done = False

    def feed(self, data: str) -> list[Delta]:
        """The deltas in one event's data (``[DONE]`` yields none)."""
        if data.strip() == "[DONE]":
            self.saw_done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise MalformedResponse(
                f"{self.url} sent a stream event that is not JSON ({exc})", body=data, url=self.url
            ) from None
        if not isinstance(chunk, dict):
            raise MalformedResponse(
                f"{self.url} sent a stream event that is not an object", body=data, url=self.url
            )
        if chunk.get("error") is not None:
            raise StreamError.from_event(chunk["error"], url=self.url)
        if isinstance(chunk.get("usage"), dict):
            self.usage_raw = chunk["usage"]
        out: list[Delta] = []
        choices = chunk.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise MalformedResponse(
                f"{self.url} sent a stream chunk whose choices are not a list",
                body=data,
                url=self.url,
            )
        for choice in choices:
            if not isinstance(choice, dict) or int(choice.get("index") or 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            if not isinstance(delta, dict):
                continue
            text = _text_of(delta.get("content"))
            if text:
                self.text.append(text)
                out.append(TextDelta(text))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.append(self._tool_piece(call))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def _tool_piece(self, call: dict[str, Any]) -> ToolCallDelta:
        index = call.get("index")
        if not isinstance(index, int):
            index = len(self.calls)
        entry = self.calls.setdefault(index, {"id": None, "name": "", "arguments": []})
        fn = call.get("function") or {}
        call_id = call.get("id")
        new_id = None
        if call_id and not entry["id"]:
            entry["id"] = new_id = str(call_id)
        name = fn.get("name") if isinstance(fn, dict) else None
        new_name = None
        if name and not entry["name"]:
            entry["name"] = new_name = str(name)
        args = fn.get("arguments", "") if isinstance(fn, dict) else ""
        if args is None:
            args = ""
        if not isinstance(args, str):
            args = json.dumps(args)
        entry["arguments"].append(args)
        return ToolCallDelta(index=index, id=new_id, name=new_name, arguments=args)

    def completion(self) -> Completion:
        """The assembled reply once the stream has ended."""
        text = "".join(self.text)
        calls = [
            ToolCall(
                id=entry["id"] or f"call_{index}",
                name=entry["name"],
                arguments="".join(entry["arguments"]),
            )
            for index, entry in sorted(self.calls.items())
        ]
        for call in calls:
            if not call.name:
                raise MalformedResponse(
                    f"{self.url} streamed a tool call without a name", url=self.url
                )
        usage = _usage(self.usage_raw, self.request, text, calls)
        if not text and not calls:
            raise EmptyResponse(
                f"the model streamed an empty reply (finish_reason={self.finish_reason!r}) "
                f"from {self.url}",
                url=self.url,
                finish_reason=self.finish_reason,
                usage=usage.to_dict(),
            )
        return Completion(
            text=text, tool_calls=tuple(calls), finish_reason=self.finish_reason, usage=usage
        )
