"""Scoring an RLM suite's answer: the scorer named by the task, over the signature's output."""

from __future__ import annotations

from typing import Any

from holdfast.evals.scorers import Score, exact, mapping, numeric, set_f1, token_f1
from holdfast.evals.tasks import EvalTask
from holdfast.rlm.signature import parse_signature


def output_field(task: EvalTask) -> str:
    return parse_signature(task.signature).outputs[0].name


def answer_of(task: EvalTask, outputs: Any) -> Any:
    """The value to score from an engine's outputs (the signature's first output)."""
    if isinstance(outputs, dict):
        return outputs.get(output_field(task))
    return outputs


def score_answer(task: EvalTask, answer: Any) -> Score:
    """Score ``answer`` against the task's gold with the task's scorer."""
    tol = task.meta.get("tolerance")
    if task.scorer == "exact":
        return exact(task.gold, answer)
    if task.scorer == "numeric":
        return numeric(task.gold, answer, tolerance=tol)
    if task.scorer == "set_f1":
        return set_f1(task.gold, answer)
    if task.scorer == "mapping":
        return mapping(task.gold, answer, tolerance=float(tol or 0.0))
    if task.scorer == "token_f1":
        return token_f1(task.gold, answer)
    raise ValueError(f"unknown scorer {task.scorer!r}")
