"""With a PostgreSQL control plane, an agent task's RLM traces and model calls land in that
database, not in the worker's own Holdfast home, so another machine can show and replay them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.agent import AgentSettings, RLMAnalyzer, agent_kind
from holdfast.agent.follow import FOLLOWS_TASK
from holdfast.cli.main import cli
from holdfast.config import default_db_path
from holdfast.harness import Harness
from holdfast.lm import CallLog
from holdfast.lm.types import LM
from holdfast.rlm.store import RLMTraceStore
from holdfast.sandbox.types import SandboxPolicy
from holdfast.store import SQLiteDB, open_url
from holdfast.testing import ScriptedLM, reply, tool_call
from holdfast.testing.fake_sandbox import FakeSandbox
from holdfast.testing.postgres import PostgresCluster


def _box(policy: SandboxPolicy) -> Any:
    return FakeSandbox(SandboxPolicy(isolation="process", cell_timeout_s=policy.cell_timeout_s))


@pytest.mark.postgres
def test_traces_and_calls_of_an_agent_task_live_in_the_control_plane(
    pg_cluster: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_cluster.create_database("follows")
    home_a = tmp_path / "home-a"
    home_a.mkdir()
    monkeypatch.setenv("HOLDFAST_HOME", str(home_a))
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.log").write_text("ok\nERROR disk full\n" * 20)

    # the services as the defaults make them: writing to the worker's home until the task runs
    log = CallLog(default_db_path())
    setattr(log, FOLLOWS_TASK, True)
    agent_lm = ScriptedLM(
        [
            reply("", tool_call("analyze", {"question": "How many ERROR?", "paths": ["app.log"]})),
            reply("", tool_call("finish", {"result": "20 errors"})),
        ],
        call_log=log,
    )
    root = ScriptedLM(["```python\nSUBMIT(answer=str(source.count('ERROR')))\n```"])

    def analyzer(settings: AgentSettings, lm: LM) -> RLMAnalyzer:
        a = RLMAnalyzer(root, sandbox=_box, db=SQLiteDB(default_db_path()), mode="rlm")
        setattr(a, FOLLOWS_TASK, True)
        return a

    h = Harness.open(url)
    h.registry.register(
        agent_kind(lm_factory=lambda s: agent_lm, memory_factory=None, analyzer_factory=analyzer)
    )
    try:
        task = h.submit(
            {
                "kind": "agent",
                "goal": "Count the errors",
                "workspace": str(ws),
                "input": {"model": "fake:scripted", "memory_namespace": None},
                "policy": {"rules": [{"tool": "*", "action": "allow"}]},
            }
        )
        h.run_until_idle()
        assert h.get(task.id).status == "succeeded", h.get(task.id).error
    finally:
        h.close()
    traces = RLMTraceStore(open_url(url))
    runs = traces.recent_runs(5)
    traces.close()
    assert len(runs) == 1, "the analyze job's trace is in the shared database"
    trace_id = runs[0].trace_id

    # nothing in the worker's own home
    local = RLMTraceStore(SQLiteDB(default_db_path()))
    assert local.find_run(trace_id) is None
    local.close()
    home_log = CallLog(default_db_path())
    assert home_log.recent(10, task_id=task.id) == []
    home_log.close()

    # everything in the shared database
    shared = CallLog(open_url(url))
    assert len(shared.recent(10, task_id=task.id)) == 2
    shared.close()

    # another machine (another empty home) shows and replays the trace from the database
    home_b = tmp_path / "home-b"
    home_b.mkdir()
    monkeypatch.setenv("HOLDFAST_HOME", str(home_b))
    monkeypatch.setenv("HOLDFAST_DATABASE_URL", url)
    runner = CliRunner()
    shown = runner.invoke(cli, ["rlm", "trace", trace_id, "--json"])
    assert shown.exit_code == 0, shown.output
    events = [json.loads(line) for line in shown.output.splitlines() if line.strip()]
    assert any(e.get("trace_id") == trace_id for e in events)
    replayed = runner.invoke(cli, ["rlm", "replay", trace_id, "--isolation", "process", "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert "20" in replayed.output
