"""The Anthropic Messages wire format, translated from and to Holdfast's OpenAI-format messages.

System (and developer) messages become ``system``; assistant tool calls become ``tool_use``
blocks and ``tool`` messages ``tool_result`` blocks in a user turn; consecutive turns of one role
merge, as the API requires. JSON-schema structured output is served the way Anthropic recommends
for it: a forced call of one tool whose input schema is the requested schema, whose input then
becomes the reply text.
"""

from __future__ import annotations

import json
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.lm.base import CallParams
from holdfast.lm.errors import EmptyResponse, MalformedResponse, StreamError
from holdfast.lm.stream import Delta, SSEEvent, TextDelta, ToolCallDelta
from holdfast.lm.types import Completion, Message, ToolCall, Usage

DEFAULT_MAX_TOKENS = 4096
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            blocks.append({"type": "text", "text": str(part)})
        elif part.get("type") == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                source = {"type": "base64", "media_type": media, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
        else:
            blocks.append(part)
    return blocks


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": choice["function"]["name"]}
    raise InvalidInput(f"tool_choice {choice!r} has no Anthropic equivalent")


def request_body(
    model_id: str,
    messages: list[Message],
    params: CallParams,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> tuple[dict[str, Any], str | None]:
    """The ``POST /v1/messages`` body, and the forced tool's name when structured output is asked."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for msg in messages:
        role = msg["role"]
        if role in ("system", "developer"):
            system.append(_text(msg.get("content")))
        elif role in ("tool", "function"):
            result = {
                "type": "tool_result",
                "tool_use_id": str(msg.get("tool_call_id", "")),
                "content": _text(msg.get("content")),
            }
            push("user", [result])
        elif role == "assistant":
            blocks = _blocks(msg.get("content"))
            for call in msg.get("tool_calls") or ():
                fn = call["function"]
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    raise InvalidInput(
                        f"tool call {fn.get('name')!r} in the history has arguments that are not JSON"
                    ) from None
                blocks.append(
                    {"type": "tool_use", "id": call["id"], "name": fn["name"], "input": args}
                )
            push("assistant", blocks)
        else:
            push("user", _blocks(msg.get("content")))

    body: dict[str, Any] = {
        "model": model_id,
        "messages": turns,
        "max_tokens": params.max_tokens or max_tokens,
    }
    tools = [
        {
            "name": t["function"]["name"],
            "description": t["function"].get("description", ""),
            "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
        }
        for t in params.tools or ()
        if t.get("type", "function") == "function"
    ]
    choice = _tool_choice(params.tool_choice)
    forced: str | None = None
    fmt = params.response_format or {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        forced = str(spec.get("name") or "structured_output")
        tools.append(
            {
                "name": forced,
                "description": "Give the final answer as this tool's input.",
                "input_schema": spec.get("schema") or {"type": "object"},
            }
        )
        choice = {"type": "tool", "name": forced}
    elif fmt.get("type") == "json_object":
        system.append("Reply with one JSON object and nothing else.")
    if system:
        body["system"] = "\n\n".join(s for s in system if s)
    if tools:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    if params.stop:
        body["stop_sequences"] = params.stop
    if params.temperature is not None:
        body["temperature"] = params.temperature
    return body, forced


def parse_response(raw: bytes, *, url: str, forced_tool: str | None = None) -> Completion:
    """A Messages API response body as a :class:`Completion`."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise MalformedResponse(
            f"{url} answered HTTP 200 with a body that is not JSON ({exc})", body=raw, url=url
        ) from None
    try:
        blocks = data["content"]
        text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        calls = [
            ToolCall(id=str(b["id"]), name=str(b["name"]), arguments=json.dumps(b.get("input", {})))
            for b in blocks
            if b.get("type") == "tool_use"
        ]
        reason = data.get("stop_reason")
        raw_usage = data.get("usage") or {}
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedResponse(
            f"{url} answered with JSON that is not a Messages reply (missing {exc})",
            body=raw,
            url=url,
        ) from None
    finish = _STOP_REASONS.get(str(reason), reason)
    if forced_tool is not None:
        chosen = [c for c in calls if c.name == forced_tool]
        if chosen:
            text, finish = chosen[0].arguments, "stop"
            calls = [c for c in calls if c.name != forced_tool]
    usage = _usage(raw_usage)
    if not text and not calls:
        raise EmptyResponse(
            f"the model returned an empty reply (stop_reason={reason!r}) from {url}",
            body=raw,
            url=url,
            usage=usage.to_dict(),
        )
    return Completion(text=text, tool_calls=tuple(calls), finish_reason=finish, usage=usage)


def _usage(raw: dict[str, Any]) -> Usage:
    cached = int(raw.get("cache_read_input_tokens") or 0)
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0)
        + cached
        + int(raw.get("cache_creation_input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=cached,
    )


class MessageEvents:
    """Turns the server-sent events of a streamed Messages call into deltas and one Completion.

    Text blocks become :class:`TextDelta`; ``tool_use`` blocks become :class:`ToolCallDelta`
    (numbered in order of appearance) whose arguments are the ``input_json_delta`` pieces; the
    forced tool of a structured-output call streams its JSON as text, as :func:`parse_response`
    returns it. Usage comes from ``message_start`` and the last ``message_delta``.
    """

    def __init__(self, *, url: str, forced_tool: str | None = None) -> None:
        self.url = url
        self.forced_tool = forced_tool
        self.text: list[str] = []
        self.blocks: dict[int, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.stopped = False

    def feed(self, event: SSEEvent) -> list[Delta]:
        try:
            data = json.loads(event.data)
        except ValueError as exc:
            raise MalformedResponse(
                f"{self.url} sent a stream event that is not JSON ({exc})",
                body=event.data,
                url=self.url,
            ) from None
        if not isinstance(data, dict):
            raise MalformedResponse(
                f"{self.url} sent a stream event that is not an object",
                body=event.data,
                url=self.url,
            )
        kind = data.get("type") or event.event
        try:
            return self._handle(kind, data)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedResponse(
                f"{self.url} sent a {kind!r} event that is not a Messages stream event ({exc})",
                body=event.data,
                url=self.url,
            ) from None

    def _handle(self, kind: str, data: dict[str, Any]) -> list[Delta]:
        if kind == "error":
            error = data.get("error") or {}
            status = 529 if error.get("type") == "overloaded_error" else 500
            if error.get("type") == "invalid_request_error":
                status = 400
            raise StreamError(status, json.dumps({"error": error}))
        if kind == "message_start":
            self.usage.update(data["message"].get("usage") or {})
            return []
        if kind == "message_delta":
            self.usage.update(data.get("usage") or {})
            self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
            return []
        if kind == "message_stop":
            self.stopped = True
            return []
        if kind == "content_block_start":
            block = data["content_block"]
            entry: dict[str, Any] = {"type": block.get("type")}
            self.blocks[int(data["index"])] = entry
            if block.get("type") == "text" and block.get("text"):
                self.text.append(block["text"])
                return [TextDelta(block["text"])]
            if block.get("type") == "tool_use":
                if block.get("name") == self.forced_tool:
                    entry["forced"] = True
                    return []
                entry["call"] = len(self.calls)
                call_id, name = str(block["id"]), str(block["name"])
                self.calls.append({"id": call_id, "name": name, "arguments": []})
                return [ToolCallDelta(index=entry["call"], id=call_id, name=name)]
            return []
        if kind == "content_block_delta":
            entry = self.blocks.get(int(data["index"]), {})
            delta = data["delta"]
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.text.append(delta["text"])
                return [TextDelta(delta["text"])]
            if delta.get("type") == "input_json_delta":
                piece = str(delta.get("partial_json") or "")
                if entry.get("forced"):
                    self.text.append(piece)
                    return [TextDelta(piece)] if piece else []
                if "call" in entry:
                    self.calls[entry["call"]]["arguments"].append(piece)
                    return [ToolCallDelta(index=entry["call"], arguments=piece)]
            return []
        return []  # ping, content_block_stop, thinking blocks: nothing to report

    def ended(self) -> bool:
        return self.stopped or self.stop_reason is not None

    def completion(self) -> Completion:
        text = "".join(self.text)
        calls = [
            ToolCall(id=c["id"], name=c["name"], arguments="".join(c["arguments"]) or "{}")
            for c in self.calls
        ]
        finish = _STOP_REASONS.get(str(self.stop_reason), self.stop_reason)
        if self.forced_tool is not None and any(b.get("forced") for b in self.blocks.values()):
            finish = "stop"
        usage = _usage(self.usage)
        if not text and not calls:
            raise EmptyResponse(
                f"the model streamed an empty reply (stop_reason={self.stop_reason!r}) "
                f"from {self.url}",
                url=self.url,
                usage=usage.to_dict(),
            )
        return Completion(text=text, tool_calls=tuple(calls), finish_reason=finish, usage=usage)
