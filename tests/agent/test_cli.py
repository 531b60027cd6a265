from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from holdfast.cli.main import cli
from holdfast.cli.run import working_set
from holdfast.testing import FakeOpenAIServer, reply, tool_call


def test_run_then_inspect_the_working_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    ws = tmp_path / "ws"
    ws.mkdir()
    script = [
        reply("", tool_call("add_constraint", {"text": "keep answers short"})),
        reply("", tool_call("write_file", {"path": "hello.txt", "content": "hi\n"})),
        reply("", tool_call("finish", {"result": "wrote hello.txt"})),
    ]
    runner = CliRunner()
    with FakeOpenAIServer(script) as server:
        args = ["run", "Write hello.txt", "--workspace", str(ws), "--model", "openai:fake"]
        args += ["--base-url", server.base_url, "--no-memory", "--json"]
        result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "succeeded" and out["result"]["result"] == "wrote hello.txt"
    assert (ws / "hello.txt").read_text() == "hi\n"
    shown = runner.invoke(working_set, [out["task"]], catch_exceptions=False)
    assert shown.exit_code == 0
    assert "[c1] keep answers short" in shown.stdout and "hello.txt [write]" in shown.stdout
    assert "3 turns in 1 physical sessions" in shown.stdout
    data = json.loads(runner.invoke(working_set, [out["task"], "--json", "--turns"]).stdout)
    assert data["turns"] == 3 and len(data["turn_log"]) == 3
    assert data["working_set"]["constraints"][0]["text"] == "keep answers short"
    prompt = json.loads(runner.invoke(working_set, [out["task"], "--prompt"]).stdout)
    assert prompt[0]["role"] == "system" and "keep answers short" in prompt[-1]["content"]


def test_run_rejects_bad_input_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        cli, ["run", "x", "--workspace", str(tmp_path / "nope"), "--model", "openai:m"]
    )
    assert missing.exit_code != 0 and "does not exist" in str(missing.exception or missing.output)
    no_model = runner.invoke(cli, ["run", "x"])
    assert no_model.exit_code != 0 and "no model" in str(no_model.exception or no_model.output)
    tiny = runner.invoke(cli, ["run", "x", "--model", "openai:m", "--context-window", "100"])
    assert tiny.exit_code != 0 and "context_window" in str(tiny.exception or tiny.output)


def test_detach_only_enqueues(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["run", "later", "--model", "openai:m", "--detach", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "queued"


def test_a_detached_agent_task_runs_on_a_plain_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``holdfast worker`` finds the ``agent`` kind through its entry point, with no ``--load``;
    ``holdfast task working-set`` is mounted under ``task``."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    ws = tmp_path / "ws"
    ws.mkdir()
    script = [
        reply("", tool_call("record_progress", {"text": "looked around"})),
        reply("", tool_call("finish", {"result": "done on a worker"})),
    ]
    runner = CliRunner()
    with FakeOpenAIServer(script) as server:
        args = ["run", "Look around", "--workspace", str(ws), "--model", "openai:fake"]
        args += ["--base-url", server.base_url, "--no-memory", "--detach", "--json"]
        queued = json.loads(runner.invoke(cli, args, catch_exceptions=False).stdout)
        worked = runner.invoke(cli, ["worker", "--exit-when-idle", "--poll", "0.05"])
        assert worked.exit_code == 0, worked.output
    shown = json.loads(
        runner.invoke(
            cli, ["task", "show", queued["task"], "--json"], catch_exceptions=False
        ).stdout
    )
    assert shown["status"] == "succeeded", shown
    assert len(server.requests) == 2
    ws_out = runner.invoke(cli, ["task", "working-set", queued["task"]], catch_exceptions=False)
    assert ws_out.exit_code == 0 and "looked around" in ws_out.stdout


def test_run_runs_only_the_task_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's queued agent task must not run under this command's model keys."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    runner = CliRunner()
    other = runner.invoke(
        cli,
        ["run", "someone else's goal", "--model", "openai:m", "--detach", "--json"],
        catch_exceptions=False,
    )
    theirs = json.loads(other.stdout)["task"]
    script = [reply("", tool_call("finish", {"result": "mine"}))]
    with FakeOpenAIServer(script) as server:
        args = ["run", "my goal", "--model", "openai:fake", "--base-url", server.base_url]
        result = runner.invoke(cli, [*args, "--no-memory", "--json"], catch_exceptions=False)
        assert len(server.requests) == 1
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["result"] == "mine"
    shown = runner.invoke(cli, ["task", "show", theirs, "--json"], catch_exceptions=False)
    assert json.loads(shown.stdout)["status"] == "queued", shown.stdout
