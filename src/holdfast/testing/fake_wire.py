"""The OpenAI wire format as :class:`FakeOpenAIServer` speaks it: replies, faults, embeddings.

Kept apart from the HTTP machinery so the shapes of chat-completion bodies, stream chunks and
embedding vectors can be read (and tested) on their own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from holdfast.lm.base import apply_stop
from holdfast.lm.tokens import estimate_tokens, estimate_tools_tokens
from holdfast.lm.types import Completion


@dataclass(frozen=True)
class Fault:
    """A failure the fake server injects instead of a normal reply.

    Build them with the class methods: :meth:`rate_limit`, :meth:`status`, :meth:`hang`,
    :meth:`malformed`, :meth:`sse`, :meth:`drop`.
    """

    kind: str
    http_status: int = 200
    body: str = ""
    retry_after: float | None = None
    seconds: float | None = None
    events: tuple[str, ...] = ()
    done: bool = True

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1.0) -> Fault:
        """HTTP 429 with a ``Retry-After`` header (seconds; None to leave it out)."""
        return cls(
            "status", 429, error_body("rate limit reached", "rate_limit_exceeded"), retry_after
        )

    @classmethod
    def status(
        cls, status: int, message: str = "injected error", *, body: str | None = None
    ) -> Fault:
        """Any HTTP status with an OpenAI-style JSON error body (or ``body`` verbatim)."""
        return cls(
            "status", status, body if body is not None else error_body(message, f"http_{status}")
        )

    @classmethod
    def hang(cls, seconds: float | None = None) -> Fault:
        """Send nothing: until the client gives up (None), or ``seconds`` then drop the connection."""
        return cls("hang", seconds=seconds)

    @classmethod
    def malformed(cls, body: str = '{"id": "chatcmpl-broken", "choices": [{"mess') -> Fault:
        """HTTP 200 whose body is not valid JSON."""
        return cls("malformed", 200, body)

    @classmethod
    def sse(cls, events: list[str | dict[str, Any]], *, done: bool = True) -> Fault:
        """HTTP 200 ``text/event-stream`` carrying exactly these events' data (then ``[DONE]``).

        Builds the odd streams real servers send: an ``{"error": ...}`` event in the middle, a
        stream cut short (``done=False`` and no finish reason), unusual chunk shapes.
        """
        data = tuple(e if isinstance(e, str) else json.dumps(e) for e in events)
        return cls("sse", 200, events=data, done=done)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending a response."""
        return cls("drop")


def error_body(message: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": "fake_server_error", "code": code}})


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def shape_reply(reply: str | Completion, request: dict[str, Any]) -> Completion:
    """Apply the request's stop sequences and max_tokens to a reply, as a real server would."""
    completion = reply if isinstance(reply, Completion) else Completion(text=reply)
    stop = request.get("stop") or request.get("stop_sequences")
    stop_list = [stop] if isinstance(stop, str) else list(stop or [])
    text, stopped = apply_stop(completion.text, stop_list)
    reason = completion.finish_reason or ("tool_calls" if completion.tool_calls else "stop")
    if stopped:
        reason = "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(limit, int) and estimate_tokens(text) > limit:
        while text and estimate_tokens(text) > limit:
            text = text[: max(0, min(len(text) - 1, limit * 4))]
        reason = "length"
    return Completion(
        text=text,
        tool_calls=completion.tool_calls,
        finish_reason=reason,
        usage=completion.usage,
        model=completion.model,
    )


def token_counts(completion: Completion, request: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens: the reply's own usage if it set any, else estimates."""
    given = completion.usage
    if given.input_tokens or given.output_tokens:
        return given.input_tokens, given.output_tokens, given.cached_tokens
    prompt = estimate_tokens(request.get("messages") or []) + estimate_tools_tokens(
        request.get("tools")
    )
    out = estimate_tokens(completion.text) + sum(
        estimate_tokens(t.name) + estimate_tokens(t.arguments) for t in completion.tool_calls
    )
    return prompt, out, given.cached_tokens


def completion_body(completion: Completion, request: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` response body."""
    prompt, out, cached = token_counts(completion, request)
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    if completion.tool_calls:
        message["tool_calls"] = [tc.to_message_dict() for tc in completion.tool_calls]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model or request.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
        "usage": _usage(prompt, out, cached),
    }


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def anthropic_body(completion: Completion, request: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages API response body (for ``POST /v1/messages``)."""
    prompt, out, cached = token_counts(completion, request)
    blocks: list[dict[str, Any]] = []
    if completion.text:
        blocks.append({"type": "text", "text": completion.text})
    for tc in completion.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": tc.id,
                "name": tc.name,
                "input": json.loads(tc.arguments or "{}"),
            }
        )
    reason = _ANTHROPIC_STOP.get(completion.finish_reason or "stop", "end_turn")
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "fake"),
        "content": blocks,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt - cached,
            "output_tokens": out,
            "cache_read_input_tokens": cached,
        },
    }


_PIECES = re.compile(r"\S+\s*|\s+")


def stream_chunks(completion: Completion, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` events of a streamed reply, word by word."""
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    model = completion.model or request.get("model", "fake")
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    for piece in _PIECES.findall(completion.text):
        yield chunk({"content": piece})
    for i, tc in enumerate(completion.tool_calls):
        # as real servers do: the id and name first, then the arguments in pieces
        head = {"index": i, "id": tc.id, "type": "function"}
        yield chunk({"tool_calls": [{**head, "function": {"name": tc.name, "arguments": ""}}]})
        for piece in _split(tc.arguments, 8):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield chunk({}, completion.finish_reason)
    if (request.get("stream_options") or {}).get("include_usage"):
        prompt, out, cached = token_counts(completion, request)
        yield {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": _usage(prompt, out, cached),
        }


def _split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def anthropic_stream_events(
    completion: Completion, request: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The server-sent events of a streamed Messages reply (``"type"`` names each event)."""
    body = anthropic_body(completion, request)
    usage = body["usage"]
    start = {**body, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield {"type": "message_start", "message": start}
    yield {"type": "ping"}
    for index, block in enumerate(body["content"]):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            for piece in _PIECES.findall(block["text"]):
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "input": {}},
            }
            for piece in _split(json.dumps(block["input"]), 8):
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield {"type": "message_stop"}


_WORDS = re.compile(r"\w+")


def embed_text(text: str, dim: int) -> list[float]:
    """A deterministic unit vector: a signed, hashed bag of lower-cased words.

    Texts sharing words get a positive cosine similarity; the same text always gets the same vector.
    """
    vec = [0.0] * dim
    for word in _WORDS.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        n = int.from_bytes(digest, "little")
        vec[n % dim] += 1.0 if (n >> 63) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0:
        vec[0] = 1.0
        return vec
    return [v / norm for v in vec]


def embeddings_body(request: dict[str, Any], default_dim: int) -> dict[str, Any]:
    """An ``/v1/embeddings`` response body (float lists, or base64 float32 when asked)."""
    raw = request.get("input", "")
    inputs = [raw] if isinstance(raw, str) else list(raw)
    texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs]
    dim = int(request.get("dimensions") or default_dim)
    as_b64 = request.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vec = embed_text(text, dim)
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii") if as_b64 else vec
        )
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = sum(estimate_tokens(t) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": request.get("model", "fake-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def llamacpp_error(status: int, message: str, kind: str, **extra: Any) -> str:
    """An error body as llama.cpp's server words it (``format_error_response``)."""
    return json.dumps({"error": {"code": status, "message": message, "type": kind, **extra}})


def llamacpp_chat_refusal(
    request: dict[str, Any], n_ctx: int | None, tools: str
) -> tuple[int, str] | None:
    """What llama.cpp answers instead of a reply: tools without ``--jinja`` (HTTP 500) or a
    prompt of ``n_ctx`` tokens or more (HTTP 400, ``exceed_context_size_error``); else None."""
    if tools == "refused" and request.get("tools"):
        return 500, llamacpp_error(500, "tools param requires --jinja flag", "server_error")
    if n_ctx is not None:
        prompt = estimate_tokens(request.get("messages") or []) + estimate_tools_tokens(
            request.get("tools")
        )
        if prompt >= n_ctx:
            message = (
                f"request ({prompt} tokens) exceeds the available context size ({n_ctx} tokens), "
                "try increasing it"
            )
            return 400, llamacpp_error(
                400, message, "exceed_context_size_error", n_prompt_tokens=prompt, n_ctx=n_ctx
            )
    return None


def llamacpp_embedding_refusal(request: dict[str, Any], batch: int | None) -> str | None:
    """llama.cpp's HTTP 500 body for an embeddings input longer than the physical batch."""
    if batch is None:
        return None
    raw = request.get("input", "")
    for item in [raw] if isinstance(raw, str) else list(raw):
        tokens = estimate_tokens(item if isinstance(item, str) else " ".join(map(str, item)))
        if tokens > batch:
            return llamacpp_error(
                500,
                f"input ({tokens} tokens) is too large to process. increase the physical batch "
                f"size (current batch size: {batch})",
                "server_error",
            )
    return None
