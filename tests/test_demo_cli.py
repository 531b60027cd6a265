"""``holdfast demo``, the command behind ``make demo``: all three parts, and a failing exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from holdfast.cli.main import cli
from holdfast.config import default_db_path
from holdfast.lm.calllog import CallLog
from holdfast.store import SQLiteDB
from holdfast.testing import FakeOpenAIServer


@pytest.mark.sandbox
def test_make_demo_runs_every_part_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLDFAST_MEMORY_EMBEDDER", "none")
    monkeypatch.delenv("HOLDFAST_MODEL", raising=False)
    result = CliRunner().invoke(cli, ["demo", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "SCRIPTED" in out and "checked against the generator's ground truth: correct" in out
    summary = json.loads(out[out.rindex("\n{\n") :])
    assert summary["model"] == "scripted"
    assert summary["rlm"]["status"] == "ok"
    assert summary["agent"]["status"] == "succeeded" and summary["agent"]["receipts_ok"]
    assert summary["agent"]["rollovers"] >= 3
    record = CallLog(SQLiteDB(default_db_path())).get(summary["lm"]["call_id"])
    assert record is not None, "the HTTP call is in the call log"
    assert record.messages[-1]["content"].startswith("Say hello")


@pytest.mark.sandbox
def test_demo_exits_1_when_a_real_model_fails_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that never calls a tool fails the agent task; the demo says so and exits 1."""
    monkeypatch.setenv("HOLDFAST_MEMORY_EMBEDDER", "none")
    with FakeOpenAIServer(default_reply="I only talk.") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        args = ["demo", "--model", "openai:chatty", "--part", "agent", "--json"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "without calling a tool" in result.stdout


@pytest.mark.sandbox
def test_demo_goes_on_to_the_agent_when_the_rlm_part_fails(tmp_path: Path) -> None:
    """An RLM part that raises is reported; the agent part still runs; a summary is printed.

    Run as a process (what `make demo` does), against a server that refuses the RLM's calls."""
    script = tmp_path / "serve.py"
    script.write_text(SERVE_REFUSING_RLM)
    env = dict(os.environ, HOLDFAST_MEMORY_EMBEDDER="none", PYTHONWARNINGS="ignore")
    env.pop("OPENAI_API_KEY", None)  # a loopback base URL needs none
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    ) as server:
        try:
            assert server.stdout is not None
            env["OPENAI_BASE_URL"] = server.stdout.readline().strip()
            done = subprocess.run(
                [sys.executable, "-m", "holdfast.cli.main", "demo", "--model", "openai:chatty",
                 "--json"],
                capture_output=True, text=True, env=env, timeout=600,
            )  # fmt: skip
        finally:
            server.terminate()
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "the rlm part failed" in out
    summary = json.loads(out[out.rindex("\n{\n") :])
    assert summary["lm"]["status"] == "ok"
    assert summary["rlm"]["status"] == "error" and summary["rlm"]["code"] == "provider_auth"
    assert summary["agent"]["status"] == "failed" and summary["agent"]["task"]
    assert "summary" in out and "rlm: error" in out and "agent: failed" in out


SERVE_REFUSING_RLM = """
import json, threading
from holdfast.testing import FakeOpenAIServer, Fault

def reply(body):
    text = json.dumps(body.get("messages"))
    if "Say hello" in text:
        return "Hello."
    if "REPL" in text:
        return Fault.status(401, "this key may not run RLM jobs")
    return "I only talk."

with FakeOpenAIServer(reply) as server:
    print(server.base_url, flush=True)
    threading.Event().wait()
"""
