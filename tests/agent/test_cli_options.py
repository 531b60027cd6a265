"""`holdfast run` passes the model-call options through to every turn, and prices models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from holdfast.cli.main import cli
from holdfast.errors import UserError
from holdfast.harness import Harness
from holdfast.testing import FakeOpenAIServer, reply, tool_call

FINISH = reply("", tool_call("finish", {"result": "done"}))


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")


def _run(server: FakeOpenAIServer, *extra: str) -> dict[str, object]:
    args = ["run", "do it", "--model", "openai:house-model", "--base-url", server.base_url]
    result = CliRunner().invoke(cli, [*args, "--no-memory", "--json", *extra])
    out: dict[str, object] = json.loads(result.stdout)
    out["exit_code"] = result.exit_code
    return out


def test_run_sends_the_output_limit_and_keeps_the_timeouts(holdfast_home: Path) -> None:
    with FakeOpenAIServer([FINISH]) as server:
        out = _run(
            server, "--max-output-tokens", "321", "--call-timeout", "33", "--cell-timeout", "7"
        )
        body = server.requests[0]
    assert out["status"] == "succeeded", out
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 321
    with Harness.open(holdfast_home / "holdfast.db") as h:
        spec = h.get(str(out["task"])).spec
    assert spec["input"]["call_timeout_s"] == 33 and spec["input"]["cell_timeout_s"] == 7


def test_run_with_a_usd_budget_needs_a_price_for_an_unknown_model(holdfast_home: Path) -> None:
    with FakeOpenAIServer([FINISH]) as server:
        refused = _run(server, "--budget", '{"usd": 1}')
        assert server.requests == [], "nothing was sent"
        priced = _run(server, "--budget", '{"usd": 1}', "--price", "openai:house-model=2,6")
    assert refused["exit_code"] == 1 and refused["status"] == "failed"
    error = refused["error"]
    assert isinstance(error, dict) and error["code"] == "unpriced_model"
    assert "--price openai:house-model=" in error["message"]
    assert priced["status"] == "succeeded", priced
    usage = priced["usage"]
    assert isinstance(usage, dict) and usage["usd"] > 0


def test_run_refuses_bad_model_call_options(holdfast_home: Path) -> None:
    runner = CliRunner()
    for bad in (["--call-timeout", "nan"], ["--max-output-tokens", "0"], ["--cell-timeout", "-1"]):
        result = runner.invoke(cli, ["run", "x", "--model", "openai:m", "--detach", *bad])
        refused = result.exit_code == 2 or isinstance(result.exception, UserError)  # exit 2
        assert refused, (bad, result.output)


def test_sigterm_to_run_cuts_off_the_model_call_and_gives_the_task_back(
    holdfast_home: Path,
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from holdfast.testing.fake_wire import Fault

    with FakeOpenAIServer([Fault.hang()]) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "holdfast.cli.main", "run", "do it", "--model", "vllm:agent",
             "--base-url", server.base_url, "--no-memory", "--json"],
            env={**os.environ, "HOLDFAST_HOME": str(holdfast_home)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.requests, "the model call was sent"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
        assert server.disconnects, "the request was closed"
    assert took < 3.0, (took, err)
    assert proc.returncode == 3, (out, err)
    status = json.loads(out)
    assert status["status"] == "queued" and status["usage"]["tokens"] > 0
