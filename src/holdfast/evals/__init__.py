"""Evaluation suites and training exports.

Deterministic, seeded task generators with exact scorers (needle-in-a-haystack up to 1 GB,
OOLONG-style aggregation, multi-hop questions over a folder, agent tasks for continuity,
knowledge memory and gated side effects, and a LoCoMo runner), run through the real engine and
harness by :func:`run_eval` (``holdfast eval run``), stored per task, reported side by side, and
exported as trajectories for trainers (:mod:`holdfast.evals.export`).
"""

from holdfast.evals.runner import SCRIPTED, EvalConfig, run_eval
from holdfast.evals.scorers import Score
from holdfast.evals.store import EvalStore, RunRow, TaskResult
from holdfast.evals.suites import SUITES, Suite, get_suite, rlm_task
from holdfast.evals.tasks import EvalTask

__all__ = [
    "SCRIPTED",
    "SUITES",
    "EvalConfig",
    "EvalStore",
    "EvalTask",
    "RunRow",
    "Score",
    "Suite",
    "TaskResult",
    "get_suite",
    "rlm_task",
    "run_eval",
]
