"""Crash resume: a worker killed with SIGKILL mid-turn or mid-roll-over loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from holdfast.agent import default_memory
from holdfast.harness import WorkerSettings
from holdfast.lm import get_lm
from holdfast.lm.types import Completion
from holdfast.memory import MemoryConfig, MemoryStore
from holdfast.testing import FakeOpenAIServer

from .helpers import harness, session_of, submit
from .long_task import SETTINGS, header_of, make_workspace, reply_for
from .test_forced_rollover import check_the_proof

CHILD = Path(__file__).with_name("_child.py")


def _spawn(
    db: Path, server: FakeOpenAIServer, marker: Path, slow_at: int = 0
) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(CHILD), str(db), server.base_url, str(marker)]
    if slow_at:
        args.append(str(slow_at))
    return subprocess.Popen(
        args, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _kill(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.stderr is not None
    child.stderr.close()


def _resume(tmp_path: Path, server: FakeOpenAIServer) -> Any:
    time.sleep(2.2)  # the killed worker's 2 s lease runs out
    lm = get_lm("openai:fake-model", base_url=server.base_url, api_key="test-key")
    h = harness(tmp_path, lm, memory_factory=default_memory)
    h.run_until_idle(WorkerSettings(poll_s=0.05, lease_ttl_s=5.0))
    return h


def test_resume_after_sigkill_sends_the_same_prompt_byte_for_byte(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    crash_turn = 23  # a few roll-overs in, mid-session
    asked = threading.Event()
    killed = threading.Event()
    seen: dict[int, int] = {}

    async def handler(body: dict[str, Any]) -> Completion:
        turn = header_of(body)[1]
        seen[turn] = seen.get(turn, 0) + 1
        if turn == crash_turn and seen[turn] == 1:
            asked.set()
            while not killed.is_set():
                await asyncio.sleep(0.02)
        if turn >= 30:
            return reply_for(
                {"messages": [{"content": "Working set of vsession-0 at turn 205, session 0"}]}
            )
        return reply_for(body)

    with FakeOpenAIServer(handler) as server:
        h0 = harness(tmp_path, get_lm("openai:fake-model", base_url=server.base_url, api_key="k"))
        task = submit(h0, "Port the modules", ws, **{**SETTINGS, "memory_namespace": None})
        child = _spawn(tmp_path / "holdfast.db", server, tmp_path / "marker")
        assert asked.wait(60), "the worker never reached the crash turn"
        _kill(child)
        killed.set()
        h = _resume(tmp_path, server)
        row = h.get(task.id)
        assert row.status == "succeeded", row.error
        assert row.attempts == 2
        sent = [b for b in server.requests if header_of(b)[1] == crash_turn]
        assert len(sent) == 2
        before = json.dumps(sent[0]["messages"], ensure_ascii=False)
        after = json.dumps(sent[1]["messages"], ensure_ascii=False)
        assert after == before
        assert sent[0]["tools"] == sent[1]["tools"]
        assert h.verify(task.id).ok


def test_sigkill_in_the_middle_of_a_rollover_ends_the_same_way(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    marker = tmp_path / "marker"
    with FakeOpenAIServer(reply_for) as server:
        h0 = harness(tmp_path, get_lm("openai:fake-model", base_url=server.base_url, api_key="k"))
        task = submit(
            h0,
            "Port the 20 modules of the ledger",
            ws,
            # the knowledge-memory tools' schemas are part of every prompt when memory is on, so
            # this task gets a slightly larger window than the memory-less long task
            **{
                **SETTINGS,
                "context_window": 9000,
                "memory_namespace": "default",
                "embedder": "none",
            },
        )
        child = _spawn(tmp_path / "holdfast.db", server, marker, slow_at=2)
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the worker never reached the second flush"
            time.sleep(0.02)
        vs = session_of(tmp_path, task.id)
        cont_at_kill = vs.continuation
        _kill(child)
        assert session_of(tmp_path, task.id).continuation == cont_at_kill
        h = _resume(tmp_path, server)
        check_the_proof(tmp_path, server, task.id, h)
        assert h.get(task.id).attempts == 2
        items = MemoryStore(MemoryConfig(embedder="none")).export("default")
        texts = [i["text"] for i in items]
        assert len(texts) == len(set(texts)), "a flushed fact was stored twice"
        assert any("CONSTRAINT-ALPHA" in t for t in texts)
        kinds = [r.data()["kind"] for r in h.receipts(task.id)]
        assert "reconcile" in kinds, "the interrupted flush step was reconciled"
