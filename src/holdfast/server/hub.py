"""Fan-out of live events to server-sent-event watchers, without slowing what they watch.

One :class:`Topic` per watched thing (a task's receipts, an RLM trace, the approvals queue)
polls the store once per interval, however many watchers it has, and hands each new event to
every watcher's bounded queue. A watcher whose queue is full (a slow or stalled client) is
dropped: it gets an ``overflow`` event naming where it stopped and its stream ends, so it can
reconnect with ``Last-Event-ID`` and resume from the store. The task being watched never waits
for a watcher: the only work done on its behalf is one read per interval.

A topic stops polling when its last watcher leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio

log = logging.getLogger("holdfast.server.hub")

Poll = Callable[[int], tuple[list["Event"], int, bool]]
"""Given the last position seen, return (new events, new position, finished)."""


@dataclass(frozen=True)
class Event:
    """One event for a stream: its position (the SSE id), its type and its JSON data."""

    pos: int
    type: str
    data: dict[str, Any]


@dataclass
class Watcher:
    queue: asyncio.Queue[Event | None]
    dropped: bool = False


@dataclass
class Topic:
    """A polled source and its watchers."""

    key: Hashable
    poll: Poll
    position: int
    watchers: list[Watcher] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    finished: bool = False


class Hub:
    """Topics by key; each polls in a worker thread while it has watchers."""

    def __init__(
        self, *, poll_s: float = 0.25, queue_size: int = 1_000, keepalive_s: float = 15.0
    ) -> None:
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self.topics: dict[Hashable, Topic] = {}
        #: the most events one poll may return: half a queue, so a watcher that keeps up is
        #: never dropped by one burst
        self.batch_limit = max(1, queue_size // 2)
        self.state: dict[str, Any] = {}
        self.dropped = 0

    async def watch(
        self,
        key: Hashable,
        poll: Poll,
        head: Callable[[], int],
        history: Callable[[int], Awaitable[list[Event]]],
        after: int,
    ) -> AsyncIterator[Event]:
        """Events after position ``after``: the stored ones first, then live ones, each once.

        The watcher joins the topic *before* reading history, and a new topic reads its head
        before that, so no event can fall between the history read and the live feed."""
        async for batch in self.watch_batches(key, poll, head, history, after):
            for event in batch:
                yield event

    async def watch_batches(
        self,
        key: Hashable,
        poll: Poll,
        head: Callable[[], int],
        history: Callable[[int], Awaitable[list[Event]]],
        after: int,
    ) -> AsyncIterator[list[Event]]:
        """:meth:`watch`, with the events that are ready together handed over together (one
        write to the client for one poll's events, however many there were)."""
        topic = self.topics.get(key)
        if topic is None or topic.finished:
            position = await anyio.to_thread.run_sync(head)
            topic = self.topics.get(key)  # another watcher may have created it meanwhile
            if topic is None or topic.finished:
                topic = Topic(key, poll, position)
                self.topics[key] = topic
        watcher = Watcher(asyncio.Queue(self.queue_size))
        topic.watchers.append(watcher)
        if topic.task is None:
            topic.task = asyncio.create_task(self._run(topic))
        last = after
        try:
            stored = [e for e in await history(after) if e.pos > after]
            for start in range(0, len(stored), self.batch_limit):
                batch = stored[start : start + self.batch_limit]
                last = max(last, batch[-1].pos)
                yield batch
            while True:
                try:
                    first = await asyncio.wait_for(watcher.queue.get(), self.keepalive_s)
                except TimeoutError:
                    yield [Event(last, "ping", {})]
                    continue
                items: list[Event | None] = [first]
                with contextlib.suppress(asyncio.QueueEmpty):
                    while items[-1] is not None and items[-1].type != "end":
                        items.append(watcher.queue.get_nowait())
                out: list[Event] = []
                stop = False
                for item in items:
                    if item is None:
                        if watcher.dropped:
                            out.append(Event(last, "overflow", {"resume_after": last}))
                        stop = True
                        break
                    if item.pos > last or item.type == "end":
                        last = max(last, item.pos)
                        out.append(item)
                        if item.type == "end":
                            stop = True
                            break
                if out:
                    yield out
                if stop:
                    return
        finally:
            with contextlib.suppress(ValueError):
                topic.watchers.remove(watcher)
            if not topic.watchers and topic.task is not None:
                topic.task.cancel()
                topic.task = None
                if self.topics.get(key) is topic:
                    del self.topics[key]

    async def _run(self, topic: Topic) -> None:
        while topic.watchers:
            try:
                events, position, finished = await anyio.to_thread.run_sync(
                    topic.poll, topic.position
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store hiccup: keep the watchers, try again
                log.warning("polling %s failed: %s", topic.key, exc)
                events, position, finished = [], topic.position, False
            topic.position = position
            if finished:
                events = [*events, Event(position, "end", {"position": position})]
            for event in events:
                self._publish(topic, event)
            if finished:
                topic.finished = True
                if self.topics.get(topic.key) is topic:
                    del self.topics[topic.key]
                for w in list(topic.watchers):
                    self._put(w, None)
                return
            await asyncio.sleep(self.poll_s)

    def _publish(self, topic: Topic, event: Event) -> None:
        for w in list(topic.watchers):
            if not w.dropped:
                self._put(w, event)

    def _put(self, watcher: Watcher, item: Event | None) -> None:
        try:
            watcher.queue.put_nowait(item)
        except asyncio.QueueFull:
            watcher.dropped = True
            self.dropped += 1
            # make room for the end marker: the stream stops, the client resumes from the store
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    watcher.queue.get_nowait()
            watcher.queue.put_nowait(None)

    def watcher_count(self) -> int:
        return sum(len(t.watchers) for t in self.topics.values())
