"""Trace events of an RLM job, written to the store as they happen.

:class:`Tracer` is what the engine and the broker write through: it appends compact events
(never an input, never the history: each root call logs only the messages added since the last
one) and forwards every event to an optional observer, which is how the command line draws live
progress. Call keys are content hashes of a model call, used by the cache and by replay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, Protocol

from holdfast.lm.types import Completion, Message, Usage
from holdfast.store.rlm_traces import RLMTraceStore

log = logging.getLogger("holdfast.rlm")

Observer = Callable[[str, str, dict[str, Any]], None]


_STATUS_LINE = re.compile(r"\n*\[turn \d+ of \d+ ·[^\]\n]*\]")


def call_key(model: str, messages: list[Message], params: dict[str, Any]) -> str:
    """A content address of one model call: the same call always hashes to the same key.

    The budget status line of feedback turns (elapsed time, running totals) is left out, so a
    replay that reproduces every output also reproduces every key.
    """
    messages = [
        {**m, "content": _STATUS_LINE.sub("", m["content"])}
        if m.get("role") == "user" and isinstance(m.get("content"), str)
        else m
        for m in messages
    ]
    h = hashlib.sha256()
    h.update(model.encode())
    h.update(json.dumps(messages, sort_keys=True, ensure_ascii=False, default=repr).encode())
    h.update(json.dumps(params, sort_keys=True, default=repr).encode())
    return h.hexdigest()


def completion_to_reply(c: Completion) -> dict[str, Any]:
    return {
        "text": c.text,
        "finish_reason": c.finish_reason,
        "usage": c.usage.to_dict(),
        "model": c.model,
    }


def reply_to_completion(reply: dict[str, Any]) -> Completion:
    u = reply.get("usage") or {}
    usage = Usage(
        input_tokens=int(u.get("input_tokens", 0)),
        output_tokens=int(u.get("output_tokens", 0)),
        cached_tokens=int(u.get("cached_tokens", 0)),
        latency_s=0.0,
        cost_usd=float(u.get("cost_usd", 0.0)),
        calls=1,
    )
    return Completion(
        text=str(reply.get("text", "")),
        finish_reason=reply.get("finish_reason"),
        usage=usage,
        model=str(reply.get("model", "")),
    )


class CallCache(Protocol):
    """A content-addressed store of model replies (see :func:`call_key`)."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, model: str, reply: dict[str, Any]) -> None: ...


class MemoryCache:
    """A call cache held in memory (for one process)."""

    def __init__(self, entries: dict[str, dict[str, Any]] | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = dict(entries or {})
        self.hits = 0

    def get(self, key: str) -> dict[str, Any] | None:
        hit = self.entries.get(key)
        if hit is not None:
            self.hits += 1
        return hit

    def put(self, key: str, model: str, reply: dict[str, Any]) -> None:
        self.entries[key] = reply


class StoreCache:
    """A call cache kept in the store, shared by every run that uses the same database."""

    def __init__(self, store: RLMTraceStore) -> None:
        self.store = store

    def get(self, key: str) -> dict[str, Any] | None:
        return self.store.cache_get(key)

    def put(self, key: str, model: str, reply: dict[str, Any]) -> None:
        self.store.cache_put(key, model, reply)


class Tracer:
    """Writes events of every run in one job tree; counts the bytes written per run."""

    def __init__(self, store: RLMTraceStore | None, observer: Observer | None = None) -> None:
        self.store = store
        self.observer = observer
        self.bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    def event(
        self, trace_id: str, kind: str, data: dict[str, Any], *, iteration: int | None = None
    ) -> None:
        size = 0
        if self.store is not None:
            with self._lock:
                size = self.store.add_event(trace_id, kind, data, iteration=iteration)
        else:
            size = len(json.dumps(data, default=repr))
        self.bytes[trace_id] = self.bytes.get(trace_id, 0) + size
        if self.observer is not None:
            try:
                self.observer(trace_id, kind, data)
            except Exception:
                log.exception("the RLM progress observer failed on a %s event", kind)
