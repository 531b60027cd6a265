"""What an eval task is: a question over generated inputs, with its gold answer and scorer.

Generators build :class:`EvalTask` values deterministically from ``(seed, index, size)``: the
same arguments give the same bytes on disk and the same gold answer on any machine. A task never
carries its data in memory; ``inputs`` names files or directories under the suite's data
directory, so a 1 GB haystack costs nothing until the engine reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holdfast.evals.scorers import Score


@dataclass(frozen=True)
class EvalTask:
    """One task: ``question`` over ``inputs`` (name -> path), answered in ``signature``'s shape.

    ``gold`` is the exact expected answer (JSON), ``scorer`` the name of the scorer that compares
    an answer with it (see :mod:`holdfast.evals.scorers`), ``meta`` what the generator did
    (sizes, needle positions, hops) for reports.
    """

    suite: str
    task_id: str
    question: str
    gold: Any
    scorer: str
    inputs: dict[str, str] = field(default_factory=dict)
    signature: str = "-> answer: str"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "task_id": self.task_id,
            "question": self.question,
            "gold": self.gold,
            "scorer": self.scorer,
            "inputs": dict(self.inputs),
            "signature": self.signature,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalTask:
        return cls(
            suite=str(data["suite"]),
            task_id=str(data["task_id"]),
            question=str(data["question"]),
            gold=data["gold"],
            scorer=str(data["scorer"]),
            inputs={str(k): str(v) for k, v in (data.get("inputs") or {}).items()},
            signature=str(data.get("signature") or "-> answer: str"),
            meta=dict(data.get("meta") or {}),
        )

    def input_bytes(self) -> int:
        """Total size on disk of the task's inputs."""
        total = 0
        for path in self.inputs.values():
            p = Path(path)
            if p.is_dir():
                total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            elif p.exists():
                total += p.stat().st_size
        return total


ScoreFn = Callable[[EvalTask, Any], Score]


def write_atomically(path: Path, write: Callable[[Any], None], *, mode: str = "wb") -> None:
    """Write ``path`` through a temporary sibling renamed into place, so a crash or an
    interrupted generation never leaves a truncated file that a later run would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with tmp.open(mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def cached_json(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The generator's sidecar at ``path`` if it was written for exactly ``params``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("params") != params:
        return None
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1)
    write_atomically(path, lambda fh: fh.write(text), mode="w")
