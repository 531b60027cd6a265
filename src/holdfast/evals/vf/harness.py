"""Holdfast's RLM loop and agent loop as a ``verifiers`` harness (id ``holdfast-harness``).

The rollout's program is ``holdfast.evals.vf.program``, run with Holdfast's own Python
(``--env.agent.harness.python``, else ``$HOLDFAST_PYTHON``, else the interpreter running
verifiers): it gets the endpoint and secret verifiers forwards (its interception proxy, which
records every model call for the trace), runs the task on a harness task (an RLM suite through
the engine in Holdfast's sandbox; an agent suite through the agent loop, with the evaluator's
approvals), and writes the outcome where the taskset's reward reads it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

try:
    import verifiers.v1 as vf
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "the verifiers harness needs the 'verifiers' package in the environment that runs "
        "vf-eval (see docs/evals.md)"
    ) from exc

from holdfast.evals.vf.taskset import ANSWER_FILE


class HoldfastHarnessConfig(vf.HarnessConfig):
    python: str | None = None
    """Holdfast's Python (default ``$HOLDFAST_PYTHON``, else this interpreter)."""
    sub_model: str | None = None
    """The RLM's sub-model (default: the rollout's model)."""
    isolation: str = "namespace"
    """Holdfast's box: ``namespace`` or ``process``."""
    max_iterations: int = 20


class HoldfastHarness(vf.Harness[HoldfastHarnessConfig]):
    APPENDS_SYSTEM_PROMPT = True
    EXECUTES_CODE = True
    NEEDS_CONTAINER = False

    async def launch(
        self,
        ctx: Any,
        trace: Any,
        runtime: Any,
        endpoint: str,
        secret: str,
        mcp_urls: dict[str, str],
        data: Any,
        tool_interception_url: str | None = None,
    ) -> Any:
        task = getattr(data, "holdfast", None)
        if not isinstance(task, dict):
            raise vf.HarnessError("the Holdfast harness runs tasks of the Holdfast taskset")
        # the program never gets the gold answer or where the generator hid it: the reward
        # scores the answer on this side
        # (an agent case is regenerated from its suite, seed and index by the program)
        blind = task if task.get("kind") == "agent" else {**task, "gold": None, "meta": {}}
        task_file = f".holdfast-task-{trace.id}.json"
        await runtime.write(task_file, json.dumps(blind).encode())
        python = self.config.python or os.environ.get("HOLDFAST_PYTHON") or sys.executable
        argv = [
            python,
            "-m",
            "holdfast.evals.vf.program",
            f"--base-url={endpoint}",
            f"--api-key={secret}",
            f"--model={ctx.model}",
            f"--task-file={task_file}",
            f"--out={ANSWER_FILE.format(trace=trace.id)}",
            f"--isolation={self.config.isolation}",
            f"--max-iterations={self.config.max_iterations}",
        ]
        if self.config.sub_model:
            argv.append(f"--sub-model={self.config.sub_model}")
        return await runtime.run_program(argv, dict(self.config.resolved_env))


__all__ = ["HoldfastHarness"]
