from __future__ import annotations

import json
from pathlib import Path

from holdfast.agent import tool
from holdfast.testing import ScriptedLM, reply, tool_call

from .helpers import harness, session_of, submit


def test_agent_works_through_tools_and_finishes(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("alpha\nbeta\ngamma\n")
    lm = ScriptedLM(
        [
            reply("", tool_call("set_goal", {"goal": "copy notes", "criteria": ["copy exists"]})),
            reply(
                "",
                tool_call("add_constraint", {"text": "never delete notes.txt"}),
                tool_call("read_file", {"path": "notes.txt"}),
            ),
            reply("", tool_call("write_file", {"path": "out/copy.txt", "content": "alpha\n"})),
            reply("", tool_call("record_progress", {"text": "copied the first line"})),
            reply("", tool_call("finish", {"result": "copied"})),
        ]
    )
    events: list[dict[str, object]] = []
    h = harness(tmp_path, lm, on_event=events.append)
    task = submit(h, "Copy the first line of notes.txt to out/copy.txt", ws)
    h.run_until_idle()
    row = h.get(task.id)
    assert row.status == "succeeded", row.error
    assert row.result["result"] == "copied"
    assert (ws / "out/copy.txt").read_text() == "alpha\n"
    vs = session_of(tmp_path, task.id)
    assert vs.working_set.status == "done"
    assert set(vs.working_set.files) == {"notes.txt", "out/copy.txt"}
    assert vs.working_set.files["out/copy.txt"].action == "write"
    last = lm.calls[-1].messages
    assert "never delete notes.txt" in last[-1]["content"]
    assert any("[r3]" in str(m.get("content")) and "beta" in str(m.get("content")) for m in last)
    assert h.verify(task.id).ok
    kinds = [r.data()["kind"] for r in h.receipts(task.id)]
    assert kinds.count("agent_turn") == 5 and "session_started" in kinds
    assert [e["turn"] for e in events if e["type"] == "turn"] == [1, 2, 3, 4, 5]


def test_bad_calls_are_fed_back_and_the_task_goes_on(tmp_path: Path) -> None:
    lm = ScriptedLM(
        [
            reply("", tool_call("launch_rockets", {})),
            reply("", tool_call("add_constraint", "{not json")),
            reply("", tool_call("add_constraint", {"txt": "x"})),
            reply("thinking out loud"),
            reply("", tool_call("read_file", {"path": "../../etc/passwd"})),
            reply("", tool_call("finish", {"result": "done anyway"})),
        ]
    )
    ws = tmp_path / "ws"
    ws.mkdir()
    h = harness(tmp_path, lm)
    task = submit(h, "Do something", ws)
    h.run_until_idle()
    row = h.get(task.id)
    assert row.status == "succeeded", row.error
    tool_results = [m["content"] for m in lm.calls[-1].messages if m["role"] == "tool"]
    assert "there is no tool 'launch_rockets'" in tool_results[0]
    assert "not valid JSON" in tool_results[1]
    assert "bad arguments for add_constraint" in tool_results[2] and "text" in tool_results[2]
    assert "leaves the workspace" in tool_results[3]
    users = [m["content"] for m in lm.calls[-1].messages if m["role"] == "user"]
    assert any("called no tool" in u for u in users)


def test_a_model_that_never_finishes_fails_with_its_working_set(tmp_path: Path) -> None:
    lm = ScriptedLM([], then=reply("", tool_call("record_progress", {"text": "still going"})))
    h = harness(tmp_path, lm)
    task = submit(h, "Loop forever", None, max_turns=6)
    h.run_until_idle()
    row = h.get(task.id)
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["code"] == "budget_exceeded"
    assert "6 turns without calling finish" in row.error["message"]
    vs = session_of(tmp_path, task.id)
    assert len(vs.working_set.progress) == 6


def test_writes_are_gated_and_denials_reach_the_model(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    lm = ScriptedLM(
        [
            reply("", tool_call("write_file", {"path": "a.txt", "content": "x"})),
            reply("", tool_call("finish", {"result": "could not write"})),
        ]
    )
    h = harness(tmp_path, lm)
    task = submit(h, "Write a.txt", ws, policy={"rules": []})
    h.run_until_idle()
    assert h.get(task.id).status == "succeeded"
    assert not (ws / "a.txt").exists()
    denied = next(m["content"] for m in lm.calls[-1].messages if m["role"] == "tool")
    assert denied.startswith("[r1] denied:") and "file.write" in denied


def test_user_tool_with_schema_from_type_hints(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    @tool(effect=False, idempotent=True)
    def lookup_price(sku: str, quantity: int = 1) -> dict[str, object]:
        """Price of an item."""
        seen.append((sku, quantity))
        return {"sku": sku, "total": 2.5 * quantity}

    assert lookup_price.parameters["required"] == ["sku"]
    assert lookup_price.parameters["properties"]["quantity"] == {"default": 1, "type": "integer"}
    lm = ScriptedLM(
        [
            reply("", tool_call("lookup_price", {"sku": "A1", "quantity": 4})),
            reply("", tool_call("lookup_price", {"sku": "A1", "quantity": "many"})),
            reply("", tool_call("finish", {"result": "10.0"})),
        ]
    )
    h = harness(tmp_path, lm, tools=[lookup_price])
    task = submit(h, "Price 4 of A1", None)
    h.run_until_idle()
    assert h.get(task.id).status == "succeeded"
    assert seen == [("A1", 4)]
    results = [m["content"] for m in lm.calls[-1].messages if m["role"] == "tool"]
    assert json.loads(results[0].split(" ", 1)[1]) == {"sku": "A1", "total": 10.0}
    assert "quantity" in results[1]
    sent = lm.calls[0].kwargs["tools"]
    assert any(t["function"]["name"] == "lookup_price" for t in sent)


def test_read_only_workspace_is_reported_and_writes_fail_cleanly(tmp_path: Path) -> None:
    import os

    ws = tmp_path / "ro"
    ws.mkdir()
    (ws / "a.txt").write_text("data\n")
    os.chmod(ws, 0o555)
    try:
        lm = ScriptedLM(
            [
                reply("", tool_call("write_file", {"path": "b.txt", "content": "x"})),
                reply("", tool_call("read_file", {"path": "a.txt"})),
                reply("", tool_call("finish", {"result": "read only"})),
            ]
        )
        h = harness(tmp_path, lm)
        task = submit(h, "Try to write", ws)
        h.run_until_idle()
        assert h.get(task.id).status == "succeeded"
        first = lm.calls[0].messages[0]["content"]
        results = [m["content"] for m in lm.calls[-1].messages if m["role"] == "tool"]
        if os.geteuid() != 0:  # root ignores directory permissions
            assert "read-only" in first
            assert "read-only; nothing was written" in results[0]
        assert "data" in results[1]
    finally:
        os.chmod(ws, 0o755)


def test_a_context_window_too_small_for_the_working_set_names_the_budget(tmp_path: Path) -> None:
    lm = ScriptedLM([], then=reply("", tool_call("add_constraint", {"text": "c " * 200})))
    h = harness(tmp_path, lm)
    task = submit(h, "Grow the constraints", None, context_window=8000, working_set_share=0.05)
    h.run_until_idle()
    row = h.get(task.id)
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["code"] == "context_window_too_small"
    assert "budget is 400 tokens" in row.error["message"]
    vs = session_of(tmp_path, task.id)
    assert len(vs.working_set.constraints) >= 2, "the working set was kept"


def test_an_empty_goal_fails_the_task_clearly(tmp_path: Path) -> None:
    lm = ScriptedLM([])
    h = harness(tmp_path, lm)
    task = submit(h, "   ", None)
    h.run_until_idle()
    row = h.get(task.id)
    assert row.error is not None
    assert row.status == "failed" and row.error["code"] == "invalid_input"
    assert "needs a goal" in row.error["message"]
    assert lm.calls == []


def test_a_provider_that_rejects_a_long_prompt_gets_a_fresh_session(tmp_path: Path) -> None:
    from holdfast.lm.errors import ProviderRejected
    from holdfast.lm.types import Completion, Message
    from holdfast.testing import FunctionLM

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "big.txt").write_text("\n".join("y" * 99 for _ in range(30)))
    sizes: list[int] = []

    def model(messages: list[Message], **_: object) -> Completion:
        size = len(json.dumps(messages))
        sizes.append(size)
        if size > 30_000:  # the real window is smaller than the configured one
            raise ProviderRejected("This model's maximum context length is 7500 tokens")
        if len(sizes) >= 16:
            return reply("", tool_call("finish", {"result": "ok"}))
        return reply("", tool_call("read_file", {"path": "big.txt"}))

    h = harness(tmp_path, FunctionLM(model))
    task = submit(h, "Keep going", ws, context_window=32_000, keep_last_turns=1)
    h.run_until_idle()
    row = h.get(task.id)
    assert row.status == "succeeded", row.error
    assert max(sizes) > 30_000, "the provider did reject a prompt"
    assert session_of(tmp_path, task.id).continuation >= 1
    kinds = [r.data() for r in h.receipts(task.id)]
    assert any(k["kind"] == "session_rollover" and "too long" in json.dumps(k) for k in kinds)


def test_the_optional_pre_rollover_turn_lets_the_model_save_state(tmp_path: Path) -> None:
    from holdfast.lm.types import Completion, Message
    from holdfast.testing import FunctionLM

    calls: list[str] = []

    def model(messages: list[Message], **_: object) -> Completion:
        calls.append("x")
        if len(calls) >= 9:
            return reply("", tool_call("finish", {"result": "ok"}))
        if "context is nearly full" in str(messages[-2].get("content")):
            return reply("", tool_call("set_next_step", {"text": f"resume at call {len(calls)}"}))
        return reply("", tool_call("record_progress", {"text": f"call {len(calls)}"}))

    h = harness(tmp_path, FunctionLM(model))
    task = submit(h, "Work", None, max_turns_per_session=3, pre_rollover_turn=True)
    h.run_until_idle()
    assert h.get(task.id).status == "succeeded"
    vs = session_of(tmp_path, task.id)
    assert vs.continuation >= 2
    assert vs.working_set.next_step.startswith("resume at call")
