"""The program a ``verifiers`` rollout runs: one eval task through Holdfast, against the
endpoint verifiers forwards.

``python -m holdfast.evals.vf.program --base-url URL --api-key KEY --model M --task-file F
--out ANSWER.json [--loop rlm|agent]`` reads the task (an :class:`~holdfast.evals.EvalTask` as
JSON), runs it through the RLM engine on a harness task (the same runner as ``holdfast eval
run``) with every model call going to ``URL`` (so verifiers' interception records it), and
writes ``{"answer", "status", "iterations", "trace_id", ...}`` to ``ANSWER.json``. The task it
gets carries no gold answer (the harness strips it); the taskset's reward reads the answer and
scores it with the suite's scorer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--model", required=True)
    parser.add_argument("--sub-model", default=None)
    parser.add_argument("--task-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--isolation", default="namespace", choices=["namespace", "process"])
    parser.add_argument("--max-iterations", type=int, default=20)
    parser.add_argument(
        "--store", default=None, help="the Holdfast store (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    from holdfast.evals.tasks import EvalTask

    raw = json.loads(Path(args.task_file).read_text(encoding="utf-8"))
    if raw.get("kind") == "agent":
        out = run_agent(raw, args)
    else:
        out = run_task(EvalTask.from_dict(raw), args)
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, default=repr), encoding="utf-8")
    return 0 if out.get("status") in ("ok", "budget_exceeded", "invalid_answer", "error") else 1


def run_task(task: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One task through :func:`holdfast.evals.runner.run_task_once` against the endpoint."""
    from holdfast.evals.runner import EvalConfig, run_task_once
    from holdfast.lm import get_lm

    def lm(name: str) -> Any:
        return get_lm(f"vllm:{name}", base_url=args.base_url, api_key=args.api_key or None)

    config = EvalConfig(
        suite=task.suite,
        model=f"vllm:{args.model}",
        sub_model=f"vllm:{args.sub_model}" if args.sub_model else None,
        isolation=args.isolation,
        max_iterations=args.max_iterations,
        base_url=args.base_url,
    )
    store = args.store or str(Path(tempfile.mkdtemp(prefix="holdfast-vf-")) / "holdfast.db")
    root = lm(args.model)
    sub = lm(args.sub_model) if args.sub_model else root
    result = run_task_once(config, task, root, sub, store)
    out = result.to_dict()
    for blind in ("score", "gold", "details"):  # scored without a gold answer: meaningless
        out.pop(blind, None)
    return out


def run_agent(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One agent case (regenerated from its suite, seed and index) on a harness task, the
    evaluator approving and denying as in ``holdfast eval run``; scored here, from what the
    task left behind (its workspace, the side-effect ledger, its result)."""
    from holdfast.evals.agent_runner import run_agent_suite
    from holdfast.evals.runner import EvalConfig
    from holdfast.evals.store import EvalStore
    from holdfast.evals.suites import get_suite
    from holdfast.lm import get_lm

    suite = get_suite(str(raw["suite"]))
    config = EvalConfig(
        suite=suite.name,
        model=f"vllm:{args.model}",
        n=1,
        seed=int(raw["seed"]),
        size=raw.get("size"),
        base_url=args.base_url,
    )
    store_path = args.store or str(Path(tempfile.mkdtemp(prefix="holdfast-vf-")) / "holdfast.db")
    lm = get_lm(f"vllm:{args.model}", base_url=args.base_url, api_key=args.api_key or None)
    run_id = run_agent_suite(
        config, suite, store_path, None, lm_override=lm, start=int(raw["index"])
    )
    store = EvalStore(store_path)
    try:
        (result,) = store.results(run_id)
    finally:
        store.close()
    return result.to_dict()


if __name__ == "__main__":
    sys.exit(main())
