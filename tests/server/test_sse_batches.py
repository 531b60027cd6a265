"""The fan-out's cost per watcher: one poll's events reach a watcher as one batch (one write),
and each event is encoded once for all its watchers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from holdfast.server.deps import sse_frame
from holdfast.server.hub import Event, Hub


@pytest.mark.anyio
async def test_one_polls_events_are_one_batch_and_encoded_once() -> None:
    calls = {"n": 0}
    go = threading.Event()

    def poll(position: int) -> tuple[list[Event], int, bool]:
        if not go.is_set():
            return [], position, False  # until every watcher has joined
        calls["n"] += 1
        if position == 0:
            return [Event(i, "receipt", {"n": i}) for i in range(1, 41)], 40, False
        return [], position, True

    async def history(after: int) -> list[Event]:
        return []

    hub = Hub(poll_s=0.01, queue_size=100)
    streams = [hub.watch_batches("t", poll, lambda: 0, history, 0) for _ in range(3)]

    async def first(stream: Any) -> list[Event]:
        batch: list[Event] = await stream.__anext__()
        return batch

    pending = [asyncio.create_task(first(s)) for s in streams]
    while hub.watcher_count() < 3:
        await asyncio.sleep(0.005)
    go.set()
    firsts = [await p for p in pending]
    for batch in firsts:
        assert [e.pos for e in batch] == list(range(1, 41))  # all forty in one batch
    # the watchers share the very same event objects, so one encoding serves all of them
    assert all(a is b for a, b in zip(firsts[0], firsts[1], strict=True))
    frame = sse_frame(firsts[0][0])
    assert sse_frame(firsts[2][0]) is frame
    assert frame.startswith(b"id: 1\nevent: receipt\ndata: {")
    rests = [[e for b in [x async for x in s] for e in b] for s in streams]
    assert all([e.type for e in r] == ["end"] for r in rests)
    assert hub.topics == {} and calls["n"] == 2  # one poll per interval for every watcher
