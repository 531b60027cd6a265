"""The agent with real knowledge memory (no embedder) and an RLM analysis job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from holdfast.agent import AgentSettings, RLMAnalyzer, StoreMemory
from holdfast.lm.types import LM
from holdfast.memory import MemoryConfig, MemoryStore
from holdfast.rlm.store import RLMTraceStore
from holdfast.sandbox.types import SandboxPolicy
from holdfast.store import SQLiteDB
from holdfast.testing import ScriptedLM, reply, tool_call
from holdfast.testing.fake_sandbox import FakeSandbox

from .helpers import harness, session_of, submit


def _memory(settings: AgentSettings, task_id: str, vid: str) -> StoreMemory:
    store = MemoryStore(MemoryConfig(embedder="none"))
    return StoreMemory(store, namespace="proj", task_id=task_id, session_id=vid)


def test_memory_tools_flush_and_recall_into_a_fresh_session(tmp_path: Path) -> None:
    first = ScriptedLM(
        [
            reply(
                "", tool_call("memory_add", {"text": "The staging database is called ledger_stage"})
            ),
            reply(
                "",
                tool_call(
                    "record_decision",
                    {"text": "Use blue-green deploys for the ledger", "rationale": "zero downtime"},
                ),
            ),
            reply("", tool_call("finish", {"result": "noted"})),
        ]
    )
    h = harness(tmp_path, first, memory_factory=_memory)
    t1 = submit(h, "Learn about the ledger", None, memory_namespace="proj")
    h.run_until_idle()
    assert h.get(t1.id).status == "succeeded"
    texts = [i["text"] for i in MemoryStore(MemoryConfig(embedder="none")).export("proj")]
    assert "The staging database is called ledger_stage" in texts
    assert any("blue-green deploys" in t for t in texts), "the finish flush wrote the decision"
    kinds = [r.data()["kind"] for r in h.receipts(t1.id)]
    assert kinds.count("intent") >= 4

    second = ScriptedLM(
        [
            reply("", tool_call("set_goal", {"goal": "Deploy the ledger"})),
            reply("", tool_call("memory_search", {"query": "staging database ledger"})),
            reply("", tool_call("record_progress", {"text": "looked it up"})),
            reply("", tool_call("finish", {"result": "deployed"})),
        ]
    )
    h2 = harness(tmp_path, second, memory_factory=_memory)
    t2 = submit(h2, "Deploy the ledger", None, memory_namespace="proj", max_turns_per_session=2)
    h2.run_until_idle()
    assert h2.get(t2.id).status == "succeeded"
    after_rollover = json.dumps(second.calls[2].messages)
    assert "Recalled from knowledge memory" in after_rollover
    assert "ledger_stage" in after_rollover and "(source: " in after_rollover
    assert session_of(tmp_path, t2.id).continuation >= 1


def test_analyze_runs_an_rlm_job_and_keeps_a_finding(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.log").write_text("ok\nERROR disk full\nok\nERROR timeout\n" * 50)
    root = ScriptedLM(["```python\nSUBMIT(answer=str(source.count('ERROR')))\n```"])
    db = SQLiteDB(tmp_path / "holdfast.db")

    def box(policy: SandboxPolicy) -> Any:
        return FakeSandbox(SandboxPolicy(isolation="process", cell_timeout_s=policy.cell_timeout_s))

    def analyzer(settings: AgentSettings, lm: LM) -> RLMAnalyzer:
        return RLMAnalyzer(root, sandbox=box, db=db, mode="rlm")

    agent_lm = ScriptedLM(
        [
            reply(
                "",
                tool_call("analyze", {"question": "How many ERROR lines?", "paths": ["app.log"]}),
            ),
            reply("", tool_call("finish", {"result": "100 errors"})),
        ]
    )
    h = harness(tmp_path, agent_lm, analyzer_factory=analyzer)
    task = submit(h, "Count the errors in app.log", ws)
    h.run_until_idle()
    assert h.get(task.id).status == "succeeded", h.get(task.id).error
    finding = session_of(tmp_path, task.id).working_set.findings["f1"]
    assert finding.text == "How many ERROR lines? -> 100"
    assert finding.trace_id and finding.source == "app.log"
    assert RLMTraceStore(db).get_run(finding.trace_id) is not None
    sent = json.dumps(agent_lm.calls[-1].messages)
    assert f"trace {finding.trace_id}" in sent
