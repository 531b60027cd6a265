"""Shared helpers of the agent tests: a harness with the agent kind and scripted turns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from holdfast.agent import DEFAULT_POLICY, Tool, agent_kind
from holdfast.harness import Harness, TaskRow
from holdfast.lm.types import LM
from holdfast.session import SessionStore, VirtualSession
from holdfast.store import SQLiteDB


def harness(
    tmp_path: Path,
    lm: LM,
    *,
    tools: Sequence[Tool] = (),
    memory_factory: Any = None,
    analyzer_factory: Any = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Harness:
    h = Harness.open(tmp_path / "holdfast.db")
    h.registry.register(
        agent_kind(
            lm_factory=lambda settings: lm,
            tools=tools,
            memory_factory=memory_factory,
            analyzer_factory=analyzer_factory,
            on_event=on_event,
        )
    )
    return h


def submit(
    h: Harness,
    goal: str,
    workspace: Path | None,
    *,
    policy: dict[str, Any] | None = None,
    **settings: Any,
) -> TaskRow:
    spec: dict[str, Any] = {
        "kind": "agent",
        "goal": goal,
        "input": {"model": "fake:scripted", "memory_namespace": None, **settings},
        "policy": policy if policy is not None else DEFAULT_POLICY,
        "max_attempts": 3,
    }
    if workspace is not None:
        spec["workspace"] = str(workspace)
    return h.submit(spec)


def session_of(tmp_path: Path, task_id: str) -> VirtualSession:
    store = SessionStore(SQLiteDB(tmp_path / "holdfast.db"))
    vid = store.find_by_task(task_id)
    assert vid is not None
    return VirtualSession(store, vid)
