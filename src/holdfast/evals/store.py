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
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.store.sqlite import SQLiteDB, migrate

COMPONENT = "evals"

MIGRATIONS = [
    """
    CREATE TABLE eval_runs (
        run_id TEXT PRIMARY KEY,
        suite TEXT NOT NULL,
        mode TEXT NOT NULL,
        model TEXT NOT NULL,
        sub_model TEXT,
        scripted INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        n INTEGER NOT NULL,
        params TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        summary TEXT
    );
    CREATE INDEX eval_runs_started ON eval_runs (started_at);
    CREATE TABLE eval_results (
        run_id TEXT NOT NULL REFERENCES eval_runs (run_id),
        seq INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        status TEXT NOT NULL,
        score REAL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        usd REAL NOT NULL,
        wall_s REAL NOT NULL,
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
]


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
    """Eval runs, results and recorded calls over the Holdfast SQLite store."""

    def __init__(self, db: SQLiteDB) -> None:
        self.db = db
        migrate(db, COMPONENT, MIGRATIONS)

    def close(self) -> None:
        self.db.close()

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
        with self.db.transaction() as tx:
            tx.execute(
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
                    time.time(),
                ),
            )
        return run_id

    def add_result(self, run_id: str, result: TaskResult, calls: list[dict[str, Any]]) -> int:
        """Store one task's result and its calls in one transaction; returns its position."""
        with self.db.transaction() as tx:
            row = tx.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM eval_results WHERE run_id = ?", (run_id,)
            ).fetchone()
            seq = int(row[0]) + 1
            tx.execute(
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
            tx.executemany(
                "INSERT OR REPLACE INTO eval_calls (run_id, task_id, seq, role, call) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, result.task_id, i, str(c.get("role", "")), _dumps(c))
                    for i, c in enumerate(calls)
                ],
            )
        return seq

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE eval_runs SET status = ?, ended_at = ?, summary = ? WHERE run_id = ?",
                (status, time.time(), _dumps(summary), run_id),
            )

    def get_run(self, run_id: str) -> RunRow:
        conn = self.db.connection()
        row = conn.execute("SELECT * FROM eval_runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            rows = conn.execute(
                "SELECT * FROM eval_runs WHERE run_id LIKE ? LIMIT 2",
                (run_id.replace("%", "").replace("_", "") + "%",),
            ).fetchall()
            if len(rows) != 1:
                raise InvalidInput(f"no eval run {run_id!r} (see `holdfast eval list`)")
            row = rows[0]
        return _run(row)

    def runs(self, limit: int = 50) -> list[RunRow]:
        rows = (
            self.db.connection()
            .execute("SELECT * FROM eval_runs ORDER BY started_at DESC LIMIT ?", (limit,))
            .fetchall()
        )
        return [_run(r) for r in rows]

    def results(self, run_id: str) -> list[TaskResult]:
        rows = (
            self.db.connection()
            .execute("SELECT record FROM eval_results WHERE run_id = ? ORDER BY seq", (run_id,))
            .fetchall()
        )
        return [TaskResult.from_dict(json.loads(r[0])) for r in rows]

    def calls(self, run_id: str, task_id: str) -> list[dict[str, Any]]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT call FROM eval_calls WHERE run_id = ? AND task_id = ? ORDER BY seq",
                (run_id, task_id),
            )
            .fetchall()
        )
        return [json.loads(r[0]) for r in rows]

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
