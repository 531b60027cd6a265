"""Stop, pause and budgets reach work in flight: the agent's model call and its analyze job.

The model is the real client over real HTTP to the fake OpenAI server, so "the request closes" is
observed from the server side (its ``disconnects``). Times are measured from the steering command
to the server seeing the connection go, with the worker's default polling.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from holdfast.agent import DEFAULT_POLICY, AgentSettings, RLMAnalyzer, agent_kind
from holdfast.harness import Harness, WorkerSettings
from holdfast.lm import get_lm
from holdfast.lm.types import LM
from holdfast.rlm.store import RLMTraceStore
from holdfast.sandbox.types import SandboxPolicy
from holdfast.store import SQLiteDB
from holdfast.testing import FakeOpenAIServer, FunctionLM, ScriptedLM, reply, tool_call
from holdfast.testing.fake_sandbox import FakeSandbox
from holdfast.testing.fake_wire import Fault

FINISH = reply("", tool_call("finish", {"result": "done"}))


def _harness(
    tmp_path: Path,
    lm_factory: Callable[[AgentSettings], LM],
    *,
    analyzer_factory: Any = None,
    clock: Callable[[], float] | None = None,
) -> Harness:
    h = Harness.open(tmp_path / "holdfast.db", clock=clock)
    h.registry.register(
        agent_kind(lm_factory=lm_factory, memory_factory=None, analyzer_factory=analyzer_factory)
    )
    return h


def _submit(h: Harness, workspace: Path | None = None, **spec: Any) -> str:
    body: dict[str, Any] = {
        "kind": "agent",
        "goal": "do the thing",
        "input": {"model": "vllm:agent", "memory_namespace": None, **spec.pop("input", {})},
        "policy": DEFAULT_POLICY,
        **spec,
    }
    if workspace is not None:
        body["workspace"] = str(workspace)
    return h.submit(body).id


def _worker(h: Harness, **settings: Any) -> threading.Thread:
    t = threading.Thread(target=h.run_until_idle, args=(WorkerSettings(**settings),), daemon=True)
    t.start()
    return t


def _wait(pred: Callable[[], Any], timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)
    return time.monotonic() - start


def _receipts(h: Harness, task: str) -> list[dict[str, Any]]:
    return [r.data() for r in h.receipts(task)]


def _http_lm(server: FakeOpenAIServer) -> Callable[[AgentSettings], LM]:
    return lambda settings: get_lm("vllm:agent", base_url=server.base_url)


def test_a_stop_during_a_model_call_closes_the_request_within_a_second(tmp_path: Path) -> None:
    with FakeOpenAIServer([Fault.hang()]) as server:
        h = _harness(tmp_path, _http_lm(server))
        task = _submit(h)
        worker = _worker(h, poll_s=0.05)
        _wait(lambda: server.requests)
        h.stop(task)
        took = _wait(lambda: server.disconnects)
        worker.join(20)
    assert took < 1.0, f"the request closed {took:.2f} s after the stop"
    row = h.get(task)
    assert row.status == "cancelled"
    assert row.usage["tokens"] > 0, "the cut-off call was charged"
    cut = [r for r in _receipts(h, task) if r["kind"] == "model_call_cut_off"]
    assert cut and cut[0]["payload"]["estimated_tokens"] > 0
    assert h.verify(task).ok
    h.close()


def test_a_pause_during_a_model_call_cancels_it_and_the_task_resumes(tmp_path: Path) -> None:
    with FakeOpenAIServer([Fault.hang(), FINISH]) as server:
        h = _harness(tmp_path, _http_lm(server))
        task = _submit(h)
        worker = _worker(h, poll_s=0.05)
        _wait(lambda: server.requests)
        h.pause(task)
        took = _wait(lambda: server.disconnects)
        worker.join(20)
        assert took < 1.0, took
        assert h.get(task).status == "paused"
        h.resume(task)
        h.run_until_idle()
    row = h.get(task)
    assert row.status == "succeeded", row.error
    assert len(server.requests) == 2, "the turn was asked again after the resume"
    h.close()


def test_an_exhausted_wall_budget_cancels_the_call_in_flight(tmp_path: Path) -> None:
    now = [1_000_000.0]
    with FakeOpenAIServer([Fault.hang()]) as server:
        h = _harness(tmp_path, _http_lm(server), clock=lambda: now[0])
        task = _submit(h, budget={"wall_s": 300})
        worker = _worker(h, poll_s=0.05, lease_ttl_s=36_000)
        _wait(lambda: server.requests)
        now[0] += 301  # the injected clock passes the wall budget while the call hangs
        took = _wait(lambda: server.disconnects)
        worker.join(20)
    assert took < 1.0, took
    row = h.get(task)
    assert row.status == "failed" and row.error is not None
    assert row.error["code"] == "budget_exceeded" and row.error["details"]["limit"] == "wall_s"
    h.close()


def test_turns_send_max_tokens_and_the_per_attempt_timeout(tmp_path: Path) -> None:
    lm = ScriptedLM([FINISH])
    h = _harness(tmp_path, lambda settings: lm)
    task = _submit(h, input={"max_output_tokens": 777, "call_timeout_s": 42})
    h.run_until_idle()
    assert h.get(task).status == "succeeded"
    assert lm.calls[0].kwargs["max_tokens"] == 777 and lm.calls[0].kwargs["timeout"] == 42
    h.close()


def test_a_usd_budget_over_an_unpriced_model_fails_the_task_at_start(tmp_path: Path) -> None:
    with FakeOpenAIServer([FINISH]) as server:
        h = _harness(
            tmp_path, lambda s: get_lm("openai:house-model", base_url=server.base_url, api_key="k")
        )
        task = _submit(h, budget={"usd": 1.0}, input={"model": "openai:house-model"})
        h.run_until_idle()
        assert server.requests == [], "no call was made"
    row = h.get(task)
    assert row.status == "failed" and row.error is not None
    assert row.error["code"] == "unpriced_model"
    assert "openai:house-model" in row.error["message"] and "--price" in row.error["message"]
    h.close()


def test_a_priced_or_estimated_unknown_model_runs_and_is_charged(tmp_path: Path) -> None:
    from holdfast.agent.kind import model_from_settings

    for extra in ({"prices": {"openai:house-model": [3.0, 9.0]}}, {"unpriced": "estimate"}):
        with FakeOpenAIServer([FINISH]) as server:
            h = _harness(
                tmp_path / str(len(extra)),
                lambda s: model_from_settings("openai:house-model", s),
            )
            task = _submit(
                h,
                budget={"usd": 1.0},
                input={"model": "openai:house-model", "base_url": server.base_url, **extra},
            )
            import os

            os.environ["OPENAI_API_KEY"] = "sk-test"
            try:
                h.run_until_idle()
            finally:
                del os.environ["OPENAI_API_KEY"]
        row = h.get(task)
        assert row.status == "succeeded", row.error
        assert row.usage["usd"] > 0
        h.close()


def _empty(tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-e",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": tokens, "total_tokens": 100 + tokens},
    }


def test_an_empty_reply_is_fed_back_and_charged(tmp_path: Path) -> None:
    with FakeOpenAIServer([_empty(4096), FINISH]) as server:
        h = _harness(tmp_path, _http_lm(server))
        task = _submit(h)
        h.run_until_idle()
        second = json.dumps(server.requests[1]["messages"])
    row = h.get(task)
    assert row.status == "succeeded", row.error
    assert "Your reply was empty (finish_reason=length" in second
    assert row.usage["tokens"] >= 4196, "the empty reply's tokens count"
    h.close()


def test_a_timed_out_attempt_is_charged(tmp_path: Path) -> None:
    with FakeOpenAIServer([Fault.hang(), FINISH]) as server:
        h = _harness(tmp_path, _http_lm(server))
        task = _submit(h, input={"call_timeout_s": 0.3, "max_output_tokens": 500})
        h.run_until_idle()
    row = h.get(task)
    assert row.status == "succeeded", row.error
    turns = [r for r in _receipts(h, task) if r["kind"] == "agent_turn"]
    assert turns[0]["payload"]["estimated_tokens"] >= 500, "the lost attempt rides on the turn"
    assert row.usage["tokens"] >= 500
    h.close()


# ----- analyze: the RLM job a task starts ------------------------------------------------------


def _box(policy: SandboxPolicy) -> Any:
    return FakeSandbox(SandboxPolicy(isolation="process", cell_timeout_s=policy.cell_timeout_s))


ANALYZE = reply("", tool_call("analyze", {"question": "How many lines?", "paths": ["app.log"]}))


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.log").write_text("ok\nERROR disk full\n" * 2000)
    return ws


def test_a_stop_during_an_analyze_job_cancels_its_sub_calls_within_a_second(
    tmp_path: Path,
) -> None:
    ws = _workspace(tmp_path)
    db = SQLiteDB(tmp_path / "holdfast.db")
    with FakeOpenAIServer([Fault.hang()]) as sub_server:
        root = ScriptedLM(["```python\nprint(llm_query(source[:100]))\n```"], then=FINISH)

        def analyzer(settings: AgentSettings, lm: LM) -> RLMAnalyzer:
            return RLMAnalyzer(
                root,
                sub_model=get_lm("vllm:sub", base_url=sub_server.base_url),
                sandbox=_box,
                db=db,
                mode="rlm",
            )

        agent_lm = ScriptedLM([ANALYZE], then=FINISH)
        h = _harness(tmp_path, lambda s: agent_lm, analyzer_factory=analyzer)
        task = _submit(h, ws)
        worker = _worker(h, poll_s=0.05)
        _wait(lambda: sub_server.requests)
        h.stop(task)
        took = _wait(lambda: sub_server.disconnects)
        worker.join(20)
    assert took < 1.0, took
    assert h.get(task).status == "cancelled"
    step = next(s for s in h.steps(task) if s.tool == "rlm.analyze")
    assert step.status == "started", "cut off, not failed: a resumed task reconciles it"
    (run,) = RLMTraceStore(db).recent_runs()
    assert run.status == "cancelled"
    h.close()


def test_an_analyze_job_is_bounded_by_and_charged_to_the_task_budget(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    db = SQLiteDB(tmp_path / "holdfast.db")
    seen_usage: list[int] = []
    h_ref: list[Harness] = []
    task_ref: list[str] = []

    async def sub(messages: list[dict[str, Any]], **_: Any) -> str:
        if h_ref and task_ref:
            seen_usage.append(int(h_ref[0].get(task_ref[0]).usage.get("tokens", 0)))
        await asyncio.sleep(0.03)
        return "word " * 200

    root = ScriptedLM(
        ["```python\nfor i in range(200):\n    llm_query(source[:2000])\n```"],
        then="```python\nx = 1\n```",
    )
    budgets: list[Any] = []

    class Recording(RLMAnalyzer):
        def analyze(self, *args: Any, **kwargs: Any) -> Any:
            from holdfast.agent.analyze import job_budget
            from holdfast.rlm import Budget

            budgets.append(job_budget(Budget(), kwargs.get("allowance")))
            return super().analyze(*args, **kwargs)

    def analyzer(settings: AgentSettings, lm: LM) -> RLMAnalyzer:
        return Recording(
            root, sub_model=FunctionLM(sub, model="fake:sub"), sandbox=_box, db=db, mode="rlm"
        )

    agent_lm = ScriptedLM([ANALYZE], then=FINISH)
    h = _harness(tmp_path, lambda s: agent_lm, analyzer_factory=analyzer)
    task = _submit(h, ws, budget={"tokens": 60_000, "wall_s": 3600, "usd": 5.0})
    h_ref.append(h)
    task_ref.append(task)
    h.run_until_idle()
    row = h.get(task)
    (budget,) = budgets
    assert budget.max_tokens is not None and budget.max_tokens <= 60_000
    assert budget.max_wall_s is not None and budget.max_wall_s <= 3600
    assert budget.max_usd is not None and budget.max_usd <= 5.0
    assert row.status == "failed" and row.error is not None
    assert row.error["details"]["limit"] == "tokens", row.error
    assert row.usage["tokens"] <= 60_000 + 5_000, "bounded by the task (plus one call)"
    first_turn = next(r for r in _receipts(h, task) if r["kind"] == "agent_turn")["payload"]
    before_job = first_turn["input_tokens"] + first_turn["output_tokens"]
    assert any(before_job < u < row.usage["tokens"] for u in seen_usage), "charged as it went"
    (run,) = RLMTraceStore(db).recent_runs()
    assert run.status == "budget_exceeded"
    h.close()


@pytest.mark.sandbox
def test_a_stop_during_an_analyze_cell_kills_the_cell_within_a_second(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    db = SQLiteDB(tmp_path / "holdfast.db")
    root = ScriptedLM(
        ["```python\nimport time\nprint('sleeping', flush=True)\ntime.sleep(120)\n```"],
        then=FINISH,
    )

    def analyzer(settings: AgentSettings, lm: LM) -> RLMAnalyzer:
        return RLMAnalyzer(root, sandbox=SandboxPolicy(isolation="process"), db=db, mode="rlm")

    agent_lm = ScriptedLM([ANALYZE], then=FINISH)
    h = _harness(tmp_path, lambda s: agent_lm, analyzer_factory=analyzer)
    task = _submit(h, ws)
    worker = _worker(h, poll_s=0.05)
    _wait(lambda: any(s.tool == "rlm.analyze" for s in h.steps(task)))
    _wait(lambda: RLMTraceStore(db).recent_runs() and len(root.calls) == 1)
    time.sleep(0.3)  # the cell is running
    sent = time.monotonic()
    h.stop(task)
    took = _wait(lambda: h.get(task).status == "cancelled")
    worker.join(20)
    assert took < 1.0, took
    (run,) = RLMTraceStore(db).recent_runs()
    assert run.status == "cancelled"
    assert time.monotonic() - sent < 5
    h.close()
