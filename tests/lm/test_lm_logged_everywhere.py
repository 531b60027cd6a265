"""Every model call of `holdfast rlm ask` and `holdfast run` lands in `holdfast lm log`, filed
under its trace or task; `holdfast rlm trace` shows a reply that contained no code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.cli.lm import lm as lm_group
from holdfast.cli.rlm import rlm
from holdfast.config import default_db_path
from holdfast.lm.calllog import CallLog
from holdfast.testing import FakeOpenAIServer

pytestmark = pytest.mark.sandbox

NO_CODE = "I believe the answer is forty-two, but let me think in prose first."


def _root(body: dict[str, Any]) -> str:
    if body["model"] == "sub":
        return "a sub answer"
    turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
    if turns == 0:
        return NO_CODE
    if turns == 1:
        return "Now code.\n```python\nr = llm_query('say hi')\nprint(r)\n```\n"
    return "Done.\n```python\nSUBMIT(answer=r)\n```\n"


def test_rlm_ask_calls_are_in_the_call_log_and_trace_shows_prose(tmp_path: Path) -> None:
    data = tmp_path / "small.txt"
    data.write_text("alpha\nbeta\n")
    runner = CliRunner(env={"COLUMNS": "400"})  # trees unwrapped
    with FakeOpenAIServer(_root) as server:
        res = runner.invoke(
            rlm,
            ["ask", "what?", "-i", str(data), "--model", "vllm:root", "--sub-model", "vllm:sub",
             "--base-url", server.base_url, "--mode", "rlm", "--json"],
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    trace_id = out["trace_id"]
    log = CallLog(default_db_path())
    try:
        calls = log.recent(limit=50)
        assert {c.model for c in calls} == {"vllm:root", "vllm:sub"}
        assert len([c for c in calls if c.model == "vllm:root"]) == out["iterations"] == 3
        assert all(c.metadata.get("trace_id") for c in calls)
        assert any(c.metadata.get("trace_id") == trace_id for c in calls)
        assert {c.metadata.get("kind") for c in calls} == {"root_call", "sub_call"}
    finally:
        log.close()
    listed = CliRunner().invoke(lm_group, ["log"])
    assert listed.exit_code == 0 and "vllm:sub" in listed.output
    tree = runner.invoke(rlm, ["trace", trace_id])
    assert tree.exit_code == 0
    assert "reply without code" in tree.output and "forty-two" in tree.output
    full = runner.invoke(rlm, ["trace", trace_id, "--full"])
    assert "let me think in prose first" in full.output


def test_rlm_ask_no_log_records_nothing(tmp_path: Path) -> None:
    data = tmp_path / "small.txt"
    data.write_text("alpha\n")
    with FakeOpenAIServer(_root) as server:
        res = CliRunner().invoke(
            rlm,
            ["ask", "what?", "-i", str(data), "--model", "vllm:root", "--base-url",
             server.base_url, "--mode", "rlm", "--no-log", "--json"],
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    log = CallLog(default_db_path())
    try:
        assert log.count() == 0
    finally:
        log.close()


def test_holdfast_run_turns_are_in_the_call_log_by_task() -> None:
    from holdfast.cli.main import cli
    from holdfast.testing import reply, tool_call

    finish = reply("", tool_call("finish", {"result": "done"}))
    talk = "Let me think about it."  # one tool-less turn, then finish
    with FakeOpenAIServer([talk, finish]) as server:
        args = ["run", "do it", "--model", "vllm:house", "--base-url", server.base_url]
        res = CliRunner().invoke(cli, [*args, "--no-memory", "--json"])
    assert res.exit_code == 0, res.output
    task_id = json.loads(res.stdout)["task"]
    log = CallLog(default_db_path())
    try:
        calls = log.recent(limit=10, task_id=task_id)
    finally:
        log.close()
    assert len(calls) == 2 and all(c.model == "vllm:house" for c in calls)
    assert calls[0].completion is not None and calls[-1].completion is not None
    texts = {c.completion.text for c in calls if c.completion is not None}
    assert talk in texts
    shown = CliRunner().invoke(lm_group, ["log", "--task", task_id])
    assert shown.exit_code == 0 and "vllm:house" in shown.output, shown.output
