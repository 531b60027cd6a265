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
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from holdfast.lm.types import Completion, Message, Usage
from holdfast.rlm.store import RLMTraceStore, dumps

log = logging.getLogger("holdfast.rlm")

Observer = Callable[[str, str, dict[str, Any]], None]


_STATUS_PREFIX = "\n\n[turn "


def _strip_status(content: str) -> str:
    """Remove the budget status line the loop appends to a feedback turn (the last one)."""
    start = content.rfind(_STATUS_PREFIX)
    if start < 0:
        return content
    end = content.find("]", start)
    if end < 0 or "\n" in content[start + 2 : end] or " · " not in content[start:end]:
        return content
    return content[:start] + content[end + 1 :]


def call_key(
    model: str, messages: list[Message], params: dict[str, Any], *, feedback: bool = False
) -> str:
    """A content address of one model call: the same call always hashes to the same key.

    With ``feedback`` (a root model's turns) the budget status line of feedback turns (elapsed
    time, running totals) is left out, so a replay that reproduces every output also reproduces
    every key.
    """
    h = hashlib.sha256(model.encode())
    for m in messages:
        content = m.get("content")
        if feedback and m.get("role") == "user" and isinstance(content, str):
            content = _strip_status(content)
        if not isinstance(content, str):
            content = json.dumps(content, sort_keys=True, default=repr)
        h.update(b"\x00" + str(m.get("role")).encode() + b"\x00" + content.encode())
        if len(m) > 2:
            rest = {k: v for k, v in m.items() if k not in ("role", "content")}
            h.update(json.dumps(rest, sort_keys=True, default=repr).encode())
    live = {k: v for k, v in params.items() if v is not None}
    if live:
        h.update(b"\x01" + json.dumps(live, sort_keys=True, default=repr).encode())
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
    """Writes events of every run in one job tree; counts the bytes written per run.

    Events are buffered and written in batches (one transaction per batch, at least every
    :attr:`flush_s` seconds), so a fan-out of a thousand calls or a burst of quick turns costs a
    few writes, not one each; a run's start, end and submissions flush at once. A crash loses at
    most the last :attr:`flush_s` seconds of events.
    """

    flush_s = 0.2
    flush_rows = 500
    flush_kinds = frozenset({"run_start", "run_end", "submit"})

    def __init__(self, store: RLMTraceStore | None, observer: Observer | None = None) -> None:
        self.store = store
        self.observer = observer
        self.bytes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._buffer: list[tuple[str, str, int | None, str, float]] = []
        self._last_flush = time.monotonic()

    def event(
        self, trace_id: str, kind: str, data: dict[str, Any], *, iteration: int | None = None
    ) -> None:
        payload = dumps(data)
        size = len(payload.encode("utf-8"))
        with self._lock:
            self.bytes[trace_id] = self.bytes.get(trace_id, 0) + size
            if self.store is not None:
                self._buffer.append((trace_id, kind, iteration, payload, time.time()))
                if (
                    kind in self.flush_kinds
                    or len(self._buffer) >= self.flush_rows
                    or time.monotonic() - self._last_flush > self.flush_s
                ):
                    self._flush_locked()
        if self.observer is not None:
            try:
                self.observer(trace_id, kind, data)
            except Exception:
                log.exception("the RLM progress observer failed on a %s event", kind)

    def flush(self) -> None:
        """Write buffered events now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        rows, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        if rows and self.store is not None:
            self.store.add_events(rows)
