"""Eval runs and their per-task results, in the Holdfast store (component ``evals``).

``eval_runs`` holds one row per ``holdfast eval run`` (suite, models, seed, size, whether the
models were scripted); ``eval_results`` one row per task (score, tokens, USD, wall time,
iterations, the RLM trace id or the agent task id, the answer, the gold answer and the scorer's
details); ``eval_calls`` every model call the task made (the exact messages, tools and reply,
with token ids and log-probabilities where the provider returned them), which is what the
trajectory export reads. Tables are created through the store's versioned migrations.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.store import Backend, Dialect, SQLiteDB, as_backend, migrate

COMPONENT = "evals"


def _schema(d: Dialect) -> str:
    return f"""
    CREATE TABLE eval_runs (
        run_id TEXT PRIMARY KEY,
        suite TEXT NOT NULL,
        mode TEXT NOT NULL,
        model TEXT NOT NULL,
        sub_model TEXT,
        scripted INTEGER NOT NULL,
        seed {d.bigint} NOT NULL,
        n INTEGER NOT NULL,
        params TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at {d.float} NOT NULL,
        ended_at {d.float},
        summary TEXT
    );
    CREATE INDEX eval_runs_started ON eval_runs (started_at);
    CREATE TABLE eval_results (
        run_id TEXT NOT NULL REFERENCES eval_runs (run_id),
        seq INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        status TEXT NOT NULL,
        score {d.float},
        input_tokens {d.bigint} NOT NULL,
        output_tokens {d.bigint} NOT NULL,
        usd {d.float} NOT NULL,
        wall_s {d.float} NOT NULL,
        iterations INTEGER NOT NULL,
        trace_id TEXT,
        harness_task TEXT,
        record TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE eval_calls (
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        call TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id, seq)
    );
    """


MIGRATIONS = [_schema]


@dataclass
class TaskResult:
    """One task's outcome. ``status``: ``ok`` (answered and scored), ``error`` (the engine or
    the model failed; scored 0), ``budget_exceeded`` (scored 0), ``does_not_fit`` (the plain
    baseline's input is larger than the model's window: not scored)."""

    task_id: str
    status: str
    score: float | None
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    wall_s: float = 0.0
    iterations: int = 0
    trace_id: str | None = None
    harness_task: str | None = None
    answer: Any = None
    gold: Any = None
    scorer: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    question: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RunRow:
    run_id: str
    suite: str
    mode: str
    model: str
    sub_model: str | None
    scripted: bool
    seed: int
    n: int
    params: dict[str, Any]
    status: str
    started_at: float
    ended_at: float | None
    summary: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)


class EvalStore:
    """Eval runs, results and recorded calls in a store backend (a
    :class:`~holdfast.store.Backend`, a :class:`~holdfast.store.SQLiteDB`, a SQLite path or a
    ``postgresql://`` URL): the same database as the control plane the tasks ran on."""

    def __init__(self, db: Backend | SQLiteDB | str | os.PathLike[str]) -> None:
        self.backend = as_backend(db)
        migrate(self.backend, COMPONENT, MIGRATIONS)

    def close(self) -> None:
        self.backend.close()

    def create_run(
        self,
        *,
        suite: str,
        mode: str,
        model: str,
        sub_model: str | None,
        scripted: bool,
        seed: int,
        n: int,
        params: dict[str, Any],
    ) -> str:
        run_id = f"eval-{uuid.uuid4().hex[:12]}"
        b = self.backend
        with b.transaction() as h:
            b.run(
                h,
                "INSERT INTO eval_runs (run_id, suite, mode, model, sub_model, scripted, seed, n, "
                "params, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
                (
                    run_id,
                    suite,
                    mode,
                    model,
                    sub_model,
                    int(scripted),
                    seed,
                    n,
                    _dumps(params),
                    b.local_now(),
                ),
            )
        return run_id

    def add_result(self, run_id: str, result: TaskResult, calls: list[dict[str, Any]]) -> int:
        """Store one task's result and its calls in one transaction; returns its position."""
        b = self.backend
        with b.transaction() as h:
            row = b.one(
                h,
                "SELECT COALESCE(MAX(seq), 0) AS n FROM eval_results WHERE run_id = ?",
                (run_id,),
            )
            seq = int(row["n"] if row else 0) + 1
            b.run(
                h,
                "INSERT INTO eval_results (run_id, seq, task_id, status, score, input_tokens, "
                "output_tokens, usd, wall_s, iterations, trace_id, harness_task, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    seq,
                    result.task_id,
                    result.status,
                    result.score,
                    result.input_tokens,
                    result.output_tokens,
                    result.usd,
                    result.wall_s,
                    result.iterations,
                    result.trace_id,
                    result.harness_task,
                    _dumps(result.to_dict()),
                ),
            )
            b.run(
                h,
                "DELETE FROM eval_calls WHERE run_id = ? AND task_id = ?",
                (run_id, result.task_id),
            )
            b.executemany(
                h,
                "INSERT INTO eval_calls (run_id, task_id, seq, role, call) VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, result.task_id, i, str(c.get("role", "")), _dumps(c))
                    for i, c in enumerate(calls)
                ],
            )
        return seq

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        b = self.backend
        with b.transaction() as h:
            b.run(
                h,
                "UPDATE eval_runs SET status = ?, ended_at = ?, summary = ? WHERE run_id = ?",
                (status, b.local_now(), _dumps(summary), run_id),
            )

    def get_run(self, run_id: str) -> RunRow:
        b = self.backend
        row = b.query_one("SELECT * FROM eval_runs WHERE run_id = ?", (run_id,))
        if row is None:
            prefix = run_id.replace("%", "").replace("_", "")
            rows = b.query("SELECT * FROM eval_runs WHERE run_id LIKE ? LIMIT 2", (prefix + "%",))
            if len(rows) != 1 or not prefix:
                raise InvalidInput(f"no eval run {run_id!r} (see `holdfast eval list`)")
            row = rows[0]
        return _run(row)

    def runs(self, limit: int = 50) -> list[RunRow]:
        rows = self.backend.query(
            "SELECT * FROM eval_runs ORDER BY started_at DESC LIMIT ?", (limit,)
        )
        return [_run(r) for r in rows]

    def results(self, run_id: str) -> list[TaskResult]:
        rows = self.backend.query(
            "SELECT record FROM eval_results WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [TaskResult.from_dict(json.loads(r["record"])) for r in rows]

    def calls(self, run_id: str, task_id: str) -> list[dict[str, Any]]:
        rows = self.backend.query(
            "SELECT call FROM eval_calls WHERE run_id = ? AND task_id = ? ORDER BY seq",
            (run_id, task_id),
        )
        return [json.loads(r["call"]) for r in rows]

    def iter_results(self, run_id: str) -> Iterator[tuple[TaskResult, list[dict[str, Any]]]]:
        for result in self.results(run_id):
            yield result, self.calls(run_id, result.task_id)


def _run(row: Any) -> RunRow:
    return RunRow(
        run_id=row["run_id"],
        suite=row["suite"],
        mode=row["mode"],
        model=row["model"],
        sub_model=row["sub_model"],
        scripted=bool(row["scripted"]),
        seed=int(row["seed"]),
        n=int(row["n"]),
        params=json.loads(row["params"]),
        status=row["status"],
        started_at=float(row["started_at"]),
        ended_at=row["ended_at"],
        summary=json.loads(row["summary"]) if row["summary"] else None,
    )
