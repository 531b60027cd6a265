"""``holdfast eval run``: a suite's tasks through the real engine and harness, scored and stored.

Every task is a harness task (kind ``eval.rlm`` for the RLM suites and their plain-model
baseline, kind ``agent`` for the agent suites), so it gets receipts, a budget and a worker like
any other work; its models are wrapped in :class:`~holdfast.evals.recording.RecordingLM`, so
every call it made is stored beside its result for the trajectory export. One eval run is one
``(suite, mode, models, seed, n, size)``; ``--baseline`` adds a second run of the same tasks
with the plain model given the whole input, where it fits the model's window.

The model ``scripted`` runs each suite with its honest scripted policy (see
:mod:`holdfast.evals.policies`); the run is stored and reported as scripted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from holdfast.errors import BudgetExceeded, HoldfastError, InvalidInput
from holdfast.evals.recording import RecordingLM
from holdfast.evals.scoring import answer_of, score_answer
from holdfast.evals.store import EvalStore, TaskResult
from holdfast.evals.suites import Suite, get_suite, rlm_task
from holdfast.evals.tasks import EvalTask
from holdfast.lm.types import LM

SCRIPTED = "scripted"
Progress = Callable[[str, int, int, TaskResult | None], None]


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one ``holdfast eval run``.

    ``mode``: ``rlm`` (the engine), ``plain`` (the baseline only) or ``both``; agent and memory
    suites have one mode of their own. ``context_window``: the plain model's window in tokens,
    which decides whether the baseline fits. ``size``: the suite's size knob (see
    :class:`~holdfast.evals.suites.Suite`). ``isolation``: the box (``namespace`` or
    ``process``). ``logprobs``: ask OpenAI-compatible providers for token log-probabilities
    ``token_ids``: ask for token ids (vLLM's ``return_token_ids``).
    """

    suite: str
    model: str = SCRIPTED
    sub_model: str | None = None
    n: int = 3
    seed: int = 0
    size: int | None = None
    mode: str = "rlm"
    context_window: int = 128_000
    base_url: str | None = None
    isolation: str = "namespace"
    max_iterations: int = 20
    max_wall_s: float = 900.0
    max_usd: float | None = None
    embedder: str = "none"
    memory_policy: str | None = None
    logprobs: bool = False
    token_ids: bool = False
    data_dir: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def check(self) -> Suite:
        suite = get_suite(self.suite)
        if self.n < 1 or self.n > 100_000:
            raise InvalidInput("--n must be between 1 and 100000")
        if self.mode not in ("rlm", "plain", "both"):
            raise InvalidInput("--mode must be rlm, plain or both")
        if self.isolation not in ("namespace", "process"):
            raise InvalidInput("--isolation must be namespace or process")
        if self.context_window < 256:
            raise InvalidInput("--context-window must be at least 256 tokens")
        if self.size is not None and self.size < 1:
            raise InvalidInput("--size must be positive")
        return suite

    @property
    def scripted(self) -> bool:
        return self.model == SCRIPTED

    def size_for(self, suite: Suite) -> int:
        return self.size if self.size is not None else suite.default_size


def _db_path(db_path: str | Path | None) -> str | Path:
    """The store: a SQLite path, a ``postgresql://`` URL, else the Holdfast home's store."""
    from holdfast.config import default_db_path

    return db_path if db_path is not None else default_db_path()


def data_dir_for(config: EvalConfig) -> Path:
    if config.data_dir:
        return Path(config.data_dir).expanduser()
    from holdfast.config import holdfast_home

    return holdfast_home() / "evals" / "data"


def make_lm(name: str, config: EvalConfig) -> LM:
    from holdfast.lm import get_lm

    options: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if config.logprobs:
        extra["logprobs"] = True
    if config.token_ids:
        extra["return_token_ids"] = True  # vLLM's extension; other servers may refuse it
    if extra:
        options["extra_body"] = extra
    lm: LM = get_lm(name, base_url=config.base_url, **options)
    return lm


def rlm_models(config: EvalConfig) -> tuple[LM, LM]:
    """The root and sub-model of an RLM run (scripted policies for ``scripted``)."""
    if config.scripted:
        from holdfast.evals.policies import RLM_POLICIES
        from holdfast.testing import FunctionLM

        root_fn, sub_fn = RLM_POLICIES[config.suite]
        root = FunctionLM(root_fn, model=f"scripted:{config.suite}-root")
        sub = FunctionLM(sub_fn or root_fn, model=f"scripted:{config.suite}-sub")
        return root, sub
    root_lm = make_lm(config.model, config)
    sub_lm = make_lm(config.sub_model, config) if config.sub_model else root_lm
    return root_lm, sub_lm


def plain_model(config: EvalConfig) -> LM:
    if config.scripted:
        from holdfast.evals.policies import plain_answer
        from holdfast.testing import FunctionLM

        return FunctionLM(plain_answer, model=f"scripted:{config.suite}-plain")
    return make_lm(config.model, config)


def summarize(results: list[TaskResult]) -> dict[str, Any]:
    """Mean score over scored tasks, counts by status, totals and means of the costs."""
    scored = [r for r in results if r.score is not None]
    n = len(results)
    return {
        "tasks": n,
        "scored": len(scored),
        "mean_score": round(sum(r.score or 0.0 for r in scored) / len(scored), 4)
        if scored
        else None,
        "statuses": {
            s: sum(1 for r in results if r.status == s) for s in sorted({r.status for r in results})
        },
        "input_tokens": sum(r.input_tokens for r in results),
        "output_tokens": sum(r.output_tokens for r in results),
        "usd": round(sum(r.usd for r in results), 6),
        "mean_wall_s": round(sum(r.wall_s for r in results) / n, 4) if n else 0.0,
        "mean_iterations": round(sum(r.iterations for r in results) / n, 2) if n else 0.0,
    }


class RunLog:
    """One eval run's results as they come: each stored with its calls the moment it is scored,
    the progress callback told, and the run's summary written when it ends (``interrupted``
    when it ended by an exception or a signal)."""

    def __init__(self, store: EvalStore, run_id: str, progress: Progress | None) -> None:
        self.store = store
        self.run_id = run_id
        self.progress = progress
        self.results: list[TaskResult] = []
        self.status = "finished"
        self.extra: dict[str, Any] = {}

    def starting(self, task_id: str, index: int, total: int) -> None:
        if self.progress:
            self.progress(task_id, index, total, None)

    def add(self, result: TaskResult, calls: list[dict[str, Any]], index: int, total: int) -> None:
        self.store.add_result(self.run_id, result, calls)
        self.results.append(result)
        if self.progress:
            self.progress(result.task_id, index + 1, total, result)

    def finish(self) -> None:
        self.store.finish_run(self.run_id, self.status, {**summarize(self.results), **self.extra})


def _usage_of(calls: list[dict[str, Any]]) -> tuple[int, int, float]:
    tin = tout = 0
    usd = 0.0
    for c in calls:
        u = (c.get("reply") or {}).get("usage") or {}
        tin += int(u.get("input_tokens") or 0)
        tout += int(u.get("output_tokens") or 0)
        usd += float(u.get("cost_usd") or 0.0)
    return tin, tout, usd


def run_eval(
    config: EvalConfig, *, db_path: str | Path | None = None, progress: Progress | None = None
) -> list[str]:
    """Run ``config``; returns the eval run ids (two with ``mode="both"``: RLM, then plain)."""
    suite = config.check()
    path = _db_path(db_path)
    if suite.kind == "rlm":
        modes = ["rlm", "plain"] if config.mode == "both" else [config.mode]
        return [_run_rlm_suite(replace(config, mode=m), suite, path, progress) for m in modes]
    if config.mode != "rlm":
        raise InvalidInput(f"the {suite.name} suite has no plain-model baseline; leave out --mode")
    if suite.kind == "agent":
        from holdfast.evals.agent_runner import run_agent_suite

        return [run_agent_suite(config, suite, path, progress)]
    from holdfast.evals.locomo import run_locomo

    return [run_locomo(config, suite, path, progress)]


def _new_run(
    store: EvalStore, config: EvalConfig, suite: Suite, mode: str, model: str, sub: str | None
) -> str:
    params = {
        "size": config.size_for(suite),
        "size_name": suite.size_name,
        "context_window": config.context_window,
        "isolation": config.isolation,
        "max_iterations": config.max_iterations,
        "base_url": config.base_url,
        "embedder": config.embedder,
        "memory_policy": config.memory_policy,
        **config.params,
    }
    return store.create_run(
        suite=suite.name,
        mode=mode,
        model=model,
        sub_model=sub,
        scripted=config.scripted,
        seed=config.seed,
        n=config.n,
        params=params,
    )


def _run_rlm_suite(
    config: EvalConfig, suite: Suite, db_path: str | Path, progress: Progress | None
) -> str:
    from holdfast.harness import Harness, TaskKind

    store = EvalStore(db_path)
    db = store.backend
    plain = config.mode == "plain"
    if plain:
        lms: list[RecordingLM] = [RecordingLM(plain_model(config), "plain")]
        model_name, sub_name = lms[0].model, None
    else:
        root, sub = rlm_models(config)
        lms = [RecordingLM(root, "root")]
        lms.append(RecordingLM(sub, "sub") if sub is not root else lms[0])
        model_name, sub_name = root.model, sub.model
    run_id = _new_run(store, config, suite, config.mode, model_name, sub_name)
    data_dir = data_dir_for(config)
    harness = Harness.open(db_path)
    runner = _RLMRunner(config, lms, db)
    harness.registry.register(
        TaskKind("eval.rlm", runner, description="one eval task through the RLM engine")
    )
    log = RunLog(store, run_id, progress)
    try:
        for i in range(config.n):
            task = rlm_task(
                suite.name, data_dir, seed=config.seed, index=i, size=config.size_for(suite)
            )
            log.starting(task.task_id, i, config.n)
            result, calls = _one_task(harness, run_id, task, lms)
            log.add(result, calls, i, config.n)
    except BaseException:
        log.status = "interrupted"
        raise
    finally:
        log.finish()
        harness.close()
        for lm in {id(x): x for x in lms}.values():
            _close(lm.inner)
        store.close()
    return run_id


def _one_task(
    harness: Any, run_id: str, task: EvalTask, lms: list[RecordingLM]
) -> tuple[TaskResult, list[dict[str, Any]]]:
    """Submit one task of kind ``eval.rlm``, work it, and read back its result and calls."""
    for lm in lms:
        lm.sink = []
    started = time.monotonic()
    row = harness.submit(
        {
            "kind": "eval.rlm",
            "goal": task.question[:500],
            "input": {"run": run_id, "task": task.to_dict()},
            "max_attempts": 1,
        },
        by="eval",
    )
    harness.run_until_idle()
    row = harness.get(row.id)
    outer = time.monotonic() - started
    calls = sorted({id(c): c for lm in lms for c in lm.sink}.values(), key=lambda c: c["at"])
    if row.status == "succeeded" and isinstance(row.result, dict):
        result = TaskResult.from_dict(row.result)
    else:
        result = TaskResult(
            task.task_id,
            "error",
            0.0,
            error=row.error,
            gold=task.gold,
            scorer=task.scorer,
            question=task.question,
        )
    result.harness_task = row.id
    result.details["harness_wall_s"] = round(outer, 6)
    tin, tout, usd = _usage_of(calls)
    result.input_tokens, result.output_tokens, result.usd = tin, tout, round(usd, 6)
    return result, calls


def run_task_once(
    config: EvalConfig, task: EvalTask, root: LM, sub: LM, db_path: str | Path
) -> TaskResult:
    """One RLM task through the engine on a harness task in the store at ``db_path``, with
    the given models (the ``verifiers`` harness program's entry point); stored as a run of one."""
    from holdfast.harness import Harness, TaskKind

    suite = get_suite(task.suite)
    store = EvalStore(db_path)
    lms = [RecordingLM(root, "root")]
    lms.append(RecordingLM(sub, "sub") if sub is not root else lms[0])
    run_id = _new_run(store, replace(config, n=1), suite, "rlm", root.model, sub.model)
    harness = Harness.open(db_path)
    harness.registry.register(
        TaskKind("eval.rlm", _RLMRunner(config, lms, store.backend), description="one eval task")
    )
    log = RunLog(store, run_id, None)
    try:
        result, calls = _one_task(harness, run_id, task, lms)
        log.add(result, calls, 0, 1)
    except BaseException:
        log.status = "interrupted"
        raise
    finally:
        log.finish()
        harness.close()
        for lm in {id(x): x for x in lms}.values():
            _close(lm.inner)
        store.close()
    return result


def _close(lm: Any) -> None:
    from holdfast.lm.base import run_sync

    closer = getattr(lm, "aclose", None)
    if closer is not None:
        try:
            run_sync(closer())
        except Exception:
            pass


class _RLMRunner:
    """The ``eval.rlm`` task kind's runner: one task through the engine (or the plain model)."""

    def __init__(self, config: EvalConfig, lms: list[RecordingLM], db: Any) -> None:
        self.config = config
        self.lms = lms
        self.db = db

    def __call__(self, ctx: Any) -> dict[str, Any]:
        task = EvalTask.from_dict(ctx.input["task"])
        if self.config.mode == "plain":
            return self._plain(task).to_dict()
        return self._rlm(task).to_dict()

    def _engine(self, model: Any, sub: Any, task: EvalTask, mode: str) -> Any:
        from holdfast.rlm import RLM, Budget
        from holdfast.rlm.store import RLMTraceStore
        from holdfast.sandbox.types import SandboxPolicy

        rlm = RLM(
            model,
            sub,
            sandbox=SandboxPolicy(isolation=self.config.isolation),  # type: ignore[arg-type]
            budget=Budget(
                max_iterations=self.config.max_iterations,
                max_wall_s=self.config.max_wall_s,
                max_usd=self.config.max_usd,
            ),
            signature=task.signature,
            mode=mode,  # type: ignore[arg-type]
            store=RLMTraceStore(self.db),
            on_budget="return",
        )
        rlm.trace_meta = {"eval_task": task.task_id, "eval_suite": task.suite}
        return rlm

    def _outcome(self, task: EvalTask, go: Callable[[], Any]) -> TaskResult:
        base = {
            "gold": task.gold,
            "scorer": task.scorer,
            "question": task.question,
            "meta": task.meta,
        }
        started = time.monotonic()
        try:
            res = go()
        except BudgetExceeded as exc:
            return TaskResult(
                task.task_id,
                "budget_exceeded",
                0.0,
                wall_s=time.monotonic() - started,
                trace_id=exc.details.get("trace_id"),
                error=exc.to_dict(),
                **base,
            )
        except HoldfastError as exc:
            # an answer that does not fit the signature is the model's failure, not the run's
            return TaskResult(
                task.task_id,
                "invalid_answer" if exc.code == "direct_answer_invalid" else "error",
                0.0,
                wall_s=time.monotonic() - started,
                trace_id=exc.details.get("trace_id"),
                error=exc.to_dict(),
                **base,
            )
        wall = time.monotonic() - started
        if res.status != "ok":
            return TaskResult(
                task.task_id,
                "budget_exceeded",
                0.0,
                wall_s=wall,
                iterations=res.iterations,
                trace_id=res.trace_id,
                error=res.error,
                **base,
            )
        answer = answer_of(task, res.outputs)
        score = score_answer(task, answer)
        return TaskResult(
            task.task_id,
            "ok",
            score.value,
            wall_s=wall,
            iterations=res.iterations,
            trace_id=res.trace_id,
            answer=answer,
            details={"score": score.details, "sub_calls": res.sub_calls, "mode": res.mode},
            **base,
        )

    def _rlm(self, task: EvalTask) -> TaskResult:
        root, sub = self.lms[0], self.lms[1]
        inputs = {name: Path(p) for name, p in task.inputs.items()}
        rlm = self._engine(root, sub, task, "rlm")
        return self._outcome(task, lambda: rlm.run(task.question, **inputs))

    def _plain(self, task: EvalTask) -> TaskResult:
        needed = task.input_bytes() // 4 + len(task.question) // 4 + 600
        if needed > self.config.context_window:
            return TaskResult(
                task.task_id,
                "does_not_fit",
                None,
                gold=task.gold,
                scorer=task.scorer,
                question=task.question,
                meta=task.meta,
                details={"estimated_tokens": needed, "context_window": self.config.context_window},
            )
        inputs = {name: inline_text(Path(p)) for name, p in task.inputs.items()}
        rlm = self._engine(self.lms[0], self.lms[0], task, "direct")
        return self._outcome(task, lambda: rlm.run(task.question, **inputs))


def inline_text(path: Path) -> str:
    """An input as the plain model gets it: a file's text, or a folder's files one after another
    under their relative paths."""
    if path.is_dir():
        parts = []
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            parts.append(
                f"=== {f.relative_to(path)} ===\n{f.read_text(encoding='utf-8', errors='replace')}"
            )
        return "\n".join(parts)
    return path.read_text(encoding="utf-8", errors="replace")


def write_reports(store: EvalStore, run_id: str, out_dir: Path) -> tuple[Path, Path]:
    """``<run>.json`` (the run, its summary and every result) and ``<run>.csv`` (one row per task)."""
    from holdfast.evals.report import run_report, write_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    report = run_report(store, run_id)
    jpath = out_dir / f"{run_id}.json"
    jpath.write_text(
        json.dumps(report, ensure_ascii=False, indent=1, default=repr), encoding="utf-8"
    )
    cpath = out_dir / f"{run_id}.csv"
    write_csv(report, cpath)
    return jpath, cpath
