"""The suites ``holdfast eval run`` knows: what each measures, how big it is, how it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from holdfast.errors import InvalidInput
from holdfast.evals.aggregate import aggregate_task
from holdfast.evals.haystack import niah_task
from holdfast.evals.multihop import multihop_task
from holdfast.evals.tasks import EvalTask


@dataclass(frozen=True)
class Suite:
    """A suite: ``kind`` (``rlm``, ``agent`` or ``memory``), what it measures, and its size knob
    (``size_name``: bytes, records, people, tickets or questions) with its default and the size
    the smoke tests use."""

    name: str
    kind: str
    measures: str
    size_name: str
    default_size: int
    smoke_size: int


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "niah-single",
            "rlm",
            "finding one fact (an access code) hidden in a haystack of 1 MB to 1 GB, with decoy "
            "facts of the same form; exact match",
            "bytes",
            1_000_000,
            200_000,
        ),
        Suite(
            "niah-multi",
            "rlm",
            "finding every one of several facts spread through a haystack; share of facts right",
            "bytes",
            1_000_000,
            200_000,
        ),
        Suite(
            "oolong",
            "rlm",
            "aggregation over many records whose label must be read from free text: counts "
            "(OOLONG partial credit), per-group totals (share of groups right), pairs of users "
            "(set F1)",
            "records",
            5_000,
            400,
        ),
        Suite(
            "multihop",
            "rlm",
            "questions that need two or three dependent reads over a folder of files, with "
            "distractor mentions; exact match",
            "people",
            60,
            24,
        ),
        Suite(
            "agent-constraint",
            "agent",
            "whether a constraint a person gave at the first turn still governs the work after "
            "many roll-overs (share of outputs that obey it)",
            "tickets",
            12,
            6,
        ),
        Suite(
            "agent-knowledge",
            "agent",
            "whether a fact learned and stored in one task is recalled by a later task in a fresh "
            "workspace (exact match)",
            "tasks",
            1,
            1,
        ),
        Suite(
            "agent-gated",
            "agent",
            "whether a gated side effect runs exactly when a person approves it, never when "
            "denied, and the result reports the denial",
            "tasks",
            1,
            1,
        ),
        Suite(
            "locomo",
            "memory",
            "LoCoMo question answering over knowledge memory: token F1 of the answers and "
            "evidence recall@k of the retrieval, per category",
            "questions",
            50,
            12,
        ),
    )
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise InvalidInput(
            f"no eval suite {name!r}; the suites are: {', '.join(sorted(SUITES))}"
        ) from None


def rlm_task(suite: str, data_dir: Path, *, seed: int, index: int, size: int) -> EvalTask:
    """Task ``index`` of an RLM suite, generated under ``data_dir`` on first use."""
    if suite == "niah-single":
        return niah_task(data_dir, seed=seed, index=index, size=size, variant="single")
    if suite == "niah-multi":
        return niah_task(data_dir, seed=seed, index=index, size=size, variant="multi")
    if suite == "oolong":
        return aggregate_task(data_dir, seed=seed, index=index, records=size)
    if suite == "multihop":
        return multihop_task(data_dir, seed=seed, index=index, people=size)
    raise InvalidInput(f"{suite!r} is not an RLM suite")
