"""Approvals and steering reach the agent at turn boundaries; parked work resumes exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.agent import tool
from holdfast.errors import ModelFacingError
from holdfast.testing import ScriptedLM, reply, tool_call

from .helpers import harness, session_of, submit


def test_a_gated_write_waits_for_approval_then_runs_once(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    lm = ScriptedLM(
        [
            reply("", tool_call("write_file", {"path": "deploy.txt", "content": "v2\n"})),
            reply("", tool_call("record_progress", {"text": "deploy file written"})),
            reply("", tool_call("finish", {"result": "deployed"})),
        ]
    )
    h = harness(tmp_path, lm)
    policy = {"rules": [{"tool": "file.write", "action": "ask"}]}
    task = submit(h, "Write deploy.txt", ws, policy=policy)
    h.run_until_idle()
    assert h.get(task.id).status == "waiting_approval"
    assert not (ws / "deploy.txt").exists()
    h.steer(task.id, "message", "mention the version in the report")
    h.approve(task.id, "t00001.0.write_file", by="alice")
    h.run_until_idle()
    row = h.get(task.id)
    assert row.status == "succeeded", row.error
    assert (ws / "deploy.txt").read_text() == "v2\n"
    assert len(lm.calls) == 3, "the parked call was completed without asking the model again"
    second = json.dumps(lm.calls[1].messages)
    assert "mention the version in the report" in second
    vs = session_of(tmp_path, task.id)
    assert vs.working_set.files["deploy.txt"].action == "write"
    assert h.verify(task.id).ok


@tool(effect=False)
def _typed(name: str, count: int = 1, tags: list[str] | None = None) -> str:
    """A tool with a few typed parameters."""
    return name * count


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["name", "count", "tags", "x"]), inner, max_size=4
                )
            ),
            max_leaves=8,
        ).map(json.dumps),
    )
)
def test_tool_arguments_parse_or_fail_for_the_model(raw: str) -> None:
    try:
        args: dict[str, Any] = _typed.parse(raw)
    except ModelFacingError as exc:
        assert "_typed" in exc.message
        return
    assert set(args) == {"name", "count", "tags"}
    assert isinstance(args["name"], str) and isinstance(args["count"], int)
