"""Running the agent suites: each case is a harness task of kind ``agent``, scored afterwards."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from holdfast.evals.agent_suites import (
    AgentCase,
    constraint_case,
    gated_case,
    knowledge_cases,
    score_constraint,
    score_gated,
    score_knowledge,
)
from holdfast.evals.recording import RecordingLM
from holdfast.evals.scorers import Score
from holdfast.evals.store import EvalStore, TaskResult
from holdfast.evals.suites import Suite
from holdfast.lm.types import LM


class _Ledger:
    """Where the gated suite's ``deploy`` tool records what it really did."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        assert self.path is not None
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        return [
            json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line
        ]


def _deploy_tool(ledger: _Ledger) -> Any:
    from holdfast.agent import make_tool

    def deploy(service: str, environment: str) -> str:
        """Deploy a service to an environment (staging or production)."""
        if environment not in ("staging", "production"):
            return f"error: unknown environment {environment!r}; use staging or production"
        ledger.append({"service": service, "environment": environment, "at": time.time()})
        return f"deployed {service} to {environment}"

    return make_tool(deploy, effect=True, idempotent=True)


def agent_lm(config: Any) -> LM:
    if config.scripted:
        from holdfast.evals.agent_suites import scripted_agent
        from holdfast.testing import FunctionLM

        return FunctionLM(scripted_agent, model=f"scripted:{config.suite}-agent")
    from holdfast.evals.runner import make_lm

    return make_lm(config.model, config)


def _cases(suite: str, seed: int, index: int, size: int) -> list[AgentCase]:
    if suite == "agent-constraint":
        return [constraint_case(seed, index, size)]
    if suite == "agent-knowledge":
        return list(knowledge_cases(seed, index))
    return [gated_case(seed, index)]


class _KeepOpen(RecordingLM):
    """The agent loop closes its model after each task; the runner closes it once at the end."""

    def close(self) -> None:
        return None


def run_agent_suite(
    config: Any,
    suite: Suite,
    db_path: str | Path,
    progress: Any,
    *,
    lm_override: LM | None = None,
    start: int = 0,
) -> str:
    """Run tasks ``start .. start + n - 1`` of an agent suite; ``lm_override`` is the model
    (else the one named by the config)."""
    from holdfast.agent import agent_kind
    from holdfast.agent.memory import StoreMemory
    from holdfast.evals.runner import RunLog, _close, _new_run, _usage_of
    from holdfast.harness import Harness
    from holdfast.memory import MemoryConfig, MemoryStore
    from holdfast.session.learned_policy import memory_policy_from_config

    store = EvalStore(db_path)
    lm = _KeepOpen(lm_override or agent_lm(config), "agent")
    run_id = _new_run(store, config, suite, "agent", lm.model, None)
    work = Path(tempfile.mkdtemp(prefix=f"holdfast-{run_id}-"))
    ledger = _Ledger()
    memory_store = MemoryStore(MemoryConfig(root=work / "memory", embedder=config.embedder))
    policy, fallbacks = memory_policy_from_config(config.memory_policy)
    kind = agent_kind(
        lm_factory=lambda settings: lm,
        tools=[_deploy_tool(ledger)],
        memory_factory=lambda settings, task_id, vid: StoreMemory(
            memory_store,
            namespace=settings.memory_namespace or "eval",
            task_id=task_id,
            session_id=vid,
        ),
        analyzer_factory=None,
        memory_policy=policy,
    )
    harness = Harness.open(db_path)
    harness.registry.register(kind)
    log = RunLog(store, run_id, progress)
    try:
        for i in range(start, start + config.n):
            cases = _cases(suite.name, config.seed, i, config.size_for(suite))
            task = cases[0].task
            log.starting(task.task_id, i - start, config.n)
            lm.sink = []
            ledger.path = work / f"ledger-{i}.jsonl"
            started = time.monotonic()
            outcome: dict[str, Any] = {}
            task_ids: list[str] = []
            approvals: list[dict[str, Any]] = []
            for case in cases:
                outcome = _run_case(
                    harness, case, work / f"ws-{i}-{case.phase or 'main'}", config, run_id, i
                )
                task_ids.append(outcome["task"])
                approvals.extend(outcome["approvals"])
            wall = time.monotonic() - started
            ws = Path(outcome["workspace"])
            result_text = outcome.get("result")
            if suite.name == "agent-constraint":
                score: Score = score_constraint(task, ws, result_text)
            elif suite.name == "agent-knowledge":
                score = score_knowledge(task, ws, result_text)
            else:
                score = score_gated(task, ledger.read(), result_text)
            tin, tout, usd = _usage_of(lm.sink)
            ok = outcome["status"] == "succeeded"
            result = TaskResult(
                task.task_id,
                "ok" if ok else "error",
                score.value,
                input_tokens=tin,
                output_tokens=tout,
                usd=round(usd, 6),
                wall_s=round(wall, 6),
                iterations=int(outcome.get("turns") or 0),
                trace_id=outcome.get("vsession"),
                harness_task=outcome["task"],
                answer=result_text,
                gold=task.gold,
                scorer=task.scorer,
                details={
                    "score": score.details,
                    "rollovers": max(0, int(outcome.get("continuations") or 1) - 1),
                    "tasks": task_ids,
                    "approvals": approvals,
                    "memory_policy_fallbacks": len(fallbacks),
                },
                error=outcome.get("error"),
                question=task.question,
                meta=task.meta,
            )
            log.add(result, list(lm.sink), i - start, config.n)
    except BaseException:
        log.status = "interrupted"
        raise
    finally:
        log.finish()
        harness.close()
        memory_store.close()
        _close(lm.inner)
        close_policy = getattr(policy, "close", None)
        if callable(close_policy):
            close_policy()
        store.close()
        shutil.rmtree(work / "memory", ignore_errors=True)
    return run_id


def _run_case(
    harness: Any, case: AgentCase, workspace: Path, config: Any, run_id: str, index: int
) -> dict[str, Any]:
    from holdfast.agent import DEFAULT_POLICY

    workspace.mkdir(parents=True, exist_ok=True)
    for rel, text in case.files.items():
        target = workspace / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    rules = list(DEFAULT_POLICY["rules"])
    if case.task.suite == "agent-gated":
        rules.append({"tool": "user.deploy", "action": "ask"})
    knowledge = case.task.suite == "agent-knowledge"
    row = harness.submit(
        {
            "kind": "agent",
            "goal": case.goal,
            "workspace": str(workspace),
            "input": {
                "model": config.model if not config.scripted else f"scripted:{config.suite}-agent",
                "context_window": case.context_window,
                "memory_namespace": f"{run_id}-{index}" if knowledge else None,
                "embedder": config.embedder,
                "max_turns": case.max_turns,
                "analyze": False,
            },
            "policy": {"rules": rules},
            "max_attempts": 1,
        },
        by="eval",
    )
    if case.steer:
        harness.steer(row.id, "message", case.steer, by="eval")
    approvals: list[dict[str, Any]] = []
    harness.run_until_idle()
    row = harness.get(row.id)
    while row.status == "waiting_approval" and row.waiting:
        step = str(row.waiting.get("step"))
        args = str(row.waiting.get("args") or "")
        deny = '"production"' in args
        (harness.deny if deny else harness.approve)(row.id, step, by="eval-approver")
        approvals.append({"step": step, "decision": "deny" if deny else "approve"})
        harness.run_until_idle()
        row = harness.get(row.id)
    out = row.result if isinstance(row.result, dict) else {}
    return {
        "task": row.id,
        "status": row.status,
        "workspace": str(workspace),
        "result": out.get("result"),
        "turns": out.get("turns"),
        "continuations": out.get("continuations"),
        "vsession": out.get("vsession"),
        "error": row.error,
        "approvals": approvals,
    }
