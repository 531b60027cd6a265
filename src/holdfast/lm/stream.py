"""Streaming replies: the events an :class:`~holdfast.lm.LM` yields, and the SSE decoder under them.

``lm.astream(messages, ...)`` yields :class:`TextDelta` and :class:`ToolCallDelta` events as the
server sends them, then exactly one :class:`StreamDone` carrying the assembled
:class:`~holdfast.lm.Completion` (text, tool calls, finish reason, usage priced from the price
table, call id). Every event is plain data with ``to_dict()``, so a server can forward it as
server-sent events unchanged.

:class:`LMStream` is what ``astream`` returns: an async iterator and an async context manager.
Leaving the ``async with`` block (or calling :meth:`LMStream.aclose`) before the end closes the
HTTP request, so the model server stops generating; the call log then records the call as
cancelled with the text received so far. :class:`SyncLMStream` is the blocking twin that
``lm.stream(...)`` returns.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from holdfast.lm._portal import LoopThread
from holdfast.lm.types import Completion


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply's text, in order."""

    text: str
    type: Literal["text"] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call number ``index``: its id and name arrive first, arguments in pieces.

    Concatenating the ``arguments`` of every delta with one ``index`` gives the call's JSON text.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: Literal["tool_call"] = "tool_call"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "index": self.index,
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
        }


@dataclass(frozen=True)
class StreamDone:
    """The last event of every stream that ended normally: the assembled, priced completion."""

    completion: Completion
    type: Literal["done"] = "done"

    def to_dict(self) -> dict[str, Any]:
        from holdfast.lm.record import completion_to_dict

        return {"type": self.type, "completion": completion_to_dict(self.completion)}


StreamEvent = TextDelta | ToolCallDelta | StreamDone
Delta = TextDelta | ToolCallDelta


class LMStream:
    """The events of one streamed call; ``async with`` it so that leaving early closes the request.

    Iterate it for :data:`StreamEvent` values. After the :class:`StreamDone` event,
    :attr:`completion` holds the assembled reply; :meth:`collect` consumes whatever is left and
    returns it.
    """

    def __init__(self, events: AsyncIterator[StreamEvent]) -> None:
        self._events = events
        self.completion: Completion | None = None
        self._closed = False

    def __aiter__(self) -> LMStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._closed:
            raise StopAsyncIteration
        event = await self._events.__anext__()
        if isinstance(event, StreamDone):
            self.completion = event.completion
        return event

    async def collect(self) -> Completion:
        """Read the stream to its end and return the completion."""
        async for _ in self:
            pass
        if self.completion is None:  # pragma: no cover - every normal end yields StreamDone
            raise RuntimeError("the stream ended without a completion")
        return self.completion

    async def aclose(self) -> None:
        """Stop reading: close the HTTP request if it is still open (the server sees it go)."""
        if self._closed:
            return
        self._closed = True
        closer = getattr(self._events, "aclose", None)
        if closer is not None:
            await closer()

    async def __aenter__(self) -> LMStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncLMStream:
    """The blocking form of :class:`LMStream`, driven on an event loop in another thread.

    Use it in a ``with`` block (or call :meth:`close`) so that stopping early closes the request.
    Ctrl-C while waiting for the next event cancels the request as well.
    """

    def __init__(
        self,
        stream: LMStream,
        portal: LoopThread,
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self._portal = portal
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False

    @property
    def completion(self) -> Completion | None:
        return self._stream.completion

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        if self._closed:
            raise StopIteration
        try:
            return self._portal.run(_next(self._stream))
        except StopAsyncIteration:
            self.close()
            raise StopIteration from None
        except (KeyboardInterrupt, concurrent.futures.CancelledError):
            self.close()
            raise

    def collect(self) -> Completion:
        """Read the stream to its end and return the completion."""
        for _ in self:
            pass
        if self.completion is None:  # pragma: no cover - every normal end yields StreamDone
            raise RuntimeError("the stream ended without a completion")
        return self.completion

    def close(self) -> None:
        """Stop reading and close the request if it is still open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._portal.run(self._stream.aclose())
        finally:
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> SyncLMStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _next(stream: LMStream) -> StreamEvent:
    return await stream.__anext__()


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event: its ``event`` field (``message`` when absent) and its data."""

    event: str
    data: str


class SSEDecoder:
    """An incremental decoder of ``text/event-stream`` bodies (the WHATWG rules).

    Feed it the body's bytes as they arrive, in pieces of any size (a UTF-8 character or a CRLF
    may be split between pieces); it returns the events completed so far. Lines end in CRLF, LF or
    CR; ``data`` lines of one event join with newlines; lines starting with ``:`` are comments; an
    event with no data is not dispatched.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._pending_cr = False
        self.bytes_seen = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self.bytes_seen += len(chunk)
        return self._lines(self._utf8.decode(chunk))

    def close(self) -> list[SSEEvent]:
        """Flush the end of the body: a last event without its blank line is still dispatched."""
        events = self._lines(self._utf8.decode(b"", final=True))
        if self._buffer:
            events += self._line(self._buffer)
            self._buffer = ""
        events += self._line("")
        return events

    def _lines(self, text: str) -> list[SSEEvent]:
        if not text:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        events: list[SSEEvent] = []
        buf = self._buffer + text
        start = 0
        i = 0
        n = len(buf)
        while i < n:
            ch = buf[i]
            if ch == "\n" or ch == "\r":
                events += self._line(buf[start:i])
                if ch == "\r":
                    if i + 1 < n:
                        if buf[i + 1] == "\n":
                            i += 1
                    else:
                        self._pending_cr = True
                start = i + 1
            i += 1
        self._buffer = buf[start:]
        return events

    def _line(self, line: str) -> list[SSEEvent]:
        if not line:
            if not self._data:
                self._event = ""
                return []
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._data, self._event = [], ""
            return [event]
        if line.startswith(":"):
            return []
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return []


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """The events of a body arriving as ``chunks``."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event
