"""Server-sent events: task receipts as they happen, resume, slow watchers dropped."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.server.conftest import scripted_spec

from holdfast.harness import WorkerSettings
from holdfast.server import Services
from holdfast.server.hub import Event, Hub
from holdfast.server.run import ServerThread


def read_events(response: httpx.Response, stop: str = "end") -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in current:
                events.append(current)
                if current["event"] in (stop, "overflow"):
                    return events
            current = {}
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(": ")
            current[key] = json.loads(value) if key == "data" else value
    return events


def test_task_events_arrive_live_and_resume(
    live: ServerThread, services: Services, token: str, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live.url, headers=auth, timeout=30) as c:
        task = c.post("/api/v1/tasks", json=scripted_spec(tmp_path, wait_s=0.3)).json()
        worker = threading.Thread(
            target=services.harness.run_until_idle, args=(WorkerSettings(poll_s=0.01),)
        )
        with c.stream("GET", f"/api/v1/tasks/{task['id']}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            worker.start()
            events = read_events(r)
        worker.join(30)
        assert events[-1]["event"] == "end"
        receipts = [e for e in events if e["event"] != "end"]
        seqs = [int(e["id"]) for e in receipts]
        assert seqs == list(range(1, len(seqs) + 1))
        kinds = [e["data"]["kind"] for e in receipts]
        assert kinds[0] == "submitted" and kinds[-1] == "succeeded"
        assert {"intent", "gate", "result"} <= set(kinds)
        types = {e["data"]["kind"]: e["event"] for e in receipts}
        assert types["succeeded"] == "status" and types["intent"] == "receipt"

        with c.stream(
            "GET", f"/api/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": str(seqs[2])}
        ) as r:
            resumed = read_events(r)
        assert [int(e["id"]) for e in resumed if e["event"] != "end"] == seqs[3:]


def test_approval_requests_stream(
    live: ServerThread, services: Services, token: str, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live.url, headers=auth, timeout=30) as c:
        task = c.post("/api/v1/tasks", json=scripted_spec(tmp_path, ask=True)).json()
        with c.stream("GET", "/api/v1/approvals/events") as r:
            lines = r.iter_lines()
            first = _next_event(lines)
            assert first["data"]["pending"] == []
            services.harness.run_until_idle(WorkerSettings(poll_s=0.01))
            second = _next_event(lines)
        assert [p["task"] for p in second["data"]["pending"]] == [task["id"]]


def _next_event(lines: Any) -> dict[str, Any]:
    current: dict[str, Any] = {}
    for line in lines:
        if not line and "event" in current:
            return current
        if line and not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = json.loads(value) if key == "data" else value
    raise AssertionError("the stream ended")


@pytest.mark.anyio
async def test_a_slow_watcher_is_dropped_and_never_slows_the_others() -> None:
    produced: list[int] = []
    go = threading.Event()

    def poll(position: int) -> tuple[list[Event], int, bool]:
        if position >= 1:
            go.wait(10)
        if position >= 51:
            return [], position, True
        n = 1 if position == 0 else 10
        batch = [Event(position + i + 1, "receipt", {"n": position + i + 1}) for i in range(n)]
        produced.extend(e.pos for e in batch)
        return batch, position + n, False

    async def history(after: int) -> list[Event]:
        return []

    hub = Hub(poll_s=0.001, queue_size=25)
    assert hub.batch_limit >= 10
    fast_seen: list[int] = []
    slow = hub.watch("t", poll, lambda: 0, history, 0)
    first = await slow.__anext__()  # the slow watcher takes one event, then stalls
    assert first.pos == 1

    async def fast() -> None:
        async for e in hub.watch("t", poll, lambda: 0, history, 0):
            fast_seen.append(e.pos)
            if e.type == "end":
                return

    reader = asyncio.create_task(fast())
    while hub.watcher_count() < 2:
        await asyncio.sleep(0.001)
    go.set()
    await asyncio.wait_for(reader, 10)
    assert fast_seen == [*range(2, 52), 51] and produced == list(range(1, 52))
    assert hub.dropped == 1
    rest = [e async for e in slow]
    assert [e.type for e in rest] == ["overflow"] and rest[0].data["resume_after"] == 1
    assert hub.topics == {}
