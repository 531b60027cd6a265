"""The ``verifiers`` taskset of one Holdfast suite (id ``holdfast.evals.vf.taskset``).

``--env.taskset.suite niah-single --env.taskset.size 1000000 --env.taskset.seed 3
--env.taskset.count 20`` chooses the tasks; each carries its :class:`~holdfast.evals.EvalTask`
(question, gold answer, scorer, the generated inputs' paths), and its reward is the suite's exact
scorer over the answer the harness program wrote.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import verifiers.v1 as vf
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "the verifiers environment needs the 'verifiers' package in the environment that runs "
        "vf-eval (see docs/evals.md: it pins openai<3, so it lives in its own environment)"
    ) from exc

from holdfast.evals.scoring import score_answer
from holdfast.evals.suites import SUITES, rlm_task
from holdfast.evals.tasks import EvalTask

ANSWER_FILE = ".holdfast-answer-{trace}.json"


class HoldfastTaskData(vf.TaskData):
    """A task row: the prompt is the question; ``holdfast`` is the whole eval task."""

    holdfast: dict[str, Any]


class HoldfastTaskConfig(vf.TaskConfig):
    pass


class HoldfastTask(vf.Task[HoldfastTaskData, vf.State, HoldfastTaskConfig]):
    """One eval task; rewarded by the suite's scorer over the harness's answer."""

    @property
    def key(self) -> str:
        return str(self.data.holdfast["task_id"])

    @vf.reward
    async def correct(self, task: HoldfastTaskData, trace: Any, runtime: Any) -> float:
        outcome = await read_answer(runtime, trace)
        if outcome is None or outcome.get("status") not in ("ok",):
            return 0.0
        if task.holdfast.get("kind") == "agent":
            # scored by the program from what the task left behind (workspace, ledger, result)
            score = outcome.get("score")
            return float(score) if isinstance(score, (int, float)) and 0 <= score <= 1 else 0.0
        return score_answer(EvalTask.from_dict(task.holdfast), outcome.get("answer")).value

    @vf.metric
    async def iterations(self, trace: Any, runtime: Any) -> float:
        outcome = await read_answer(runtime, trace)
        return float((outcome or {}).get("iterations") or 0)


async def read_answer(runtime: Any, trace: Any) -> dict[str, Any] | None:
    try:
        raw = await runtime.read(ANSWER_FILE.format(trace=trace.id), max_bytes=10_000_000)
    except Exception:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class HoldfastTasksetConfig(vf.TasksetConfig):
    suite: str = "niah-single"
    seed: int = 0
    count: int = 10
    size: int | None = None
    data_dir: str | None = None


class HoldfastTaskset(vf.Taskset[HoldfastTask, HoldfastTasksetConfig]):
    """``count`` tasks of an RLM suite, generated on first use (seeded, exact gold)."""

    def load(self) -> Any:
        from pathlib import Path

        from holdfast.config import holdfast_home

        cfg = self.config
        suite = SUITES.get(cfg.suite)
        if suite is None or suite.kind not in ("rlm", "agent"):
            ok = sorted(n for n, s in SUITES.items() if s.kind in ("rlm", "agent"))
            raise ValueError(f"suite {cfg.suite!r}: the verifiers taskset takes {ok}")
        data_dir = Path(cfg.data_dir) if cfg.data_dir else holdfast_home() / "evals" / "data"
        size = cfg.size or suite.default_size
        if suite.kind == "agent":
            yield from self._agent_tasks(suite.name, size)
            return
        for i in range(cfg.count):
            t = rlm_task(suite.name, data_dir, seed=cfg.seed, index=i, size=size)
            yield HoldfastTask(
                HoldfastTaskData(
                    id=t.task_id, name=t.task_id, prompt=t.question, holdfast=t.to_dict()
                ),
                cfg.task,
            )

    def _agent_tasks(self, suite: str, size: int) -> Any:
        from holdfast.evals.agent_runner import _cases

        cfg = self.config
        for i in range(cfg.count):
            case = _cases(suite, cfg.seed, i, size)[-1]
            ref = {
                "kind": "agent",
                "suite": suite,
                "seed": cfg.seed,
                "index": i,
                "size": size,
                "task_id": case.task.task_id,
            }
            yield HoldfastTask(
                HoldfastTaskData(
                    id=case.task.task_id, name=case.task.task_id, prompt=case.goal, holdfast=ref
                ),
                cfg.task,
            )


__all__ = ["HoldfastTaskset"]
