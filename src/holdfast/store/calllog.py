"""The model call log: every recorded call's exact messages, parameters, reply, usage and error.

Attach a :class:`CallLog` to an LM (``get_lm(..., call_log=CallLog(db))``) and every call through
it is written to the ``lm_calls`` table of the Holdfast store before the call returns, so the exact
prompt of any call can be inspected later (``holdfast lm log --show-prompt``). Searchable columns
(time, model, tokens, cost, task and trace ids) sit beside the full JSON record.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from holdfast.lm.record import CallRecord
from holdfast.lm.types import ZERO_USAGE, Usage
from holdfast.store.sqlite import SQLiteDB, migrate

MIGRATIONS = [
    """
    CREATE TABLE lm_calls (
        call_id TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        model TEXT NOT NULL,
        base_url TEXT,
        ok INTEGER NOT NULL,
        error_code TEXT,
        latency_s REAL NOT NULL,
        attempts INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        task_id TEXT,
        trace_id TEXT,
        record TEXT NOT NULL
    );
    CREATE INDEX lm_calls_started ON lm_calls (started_at);
    CREATE INDEX lm_calls_task ON lm_calls (task_id, started_at);
    CREATE INDEX lm_calls_trace ON lm_calls (trace_id);
    """,
]


class CallLog:
    """A persistent :class:`~holdfast.lm.CallRecorder` over the SQLite store."""

    def __init__(self, db: SQLiteDB | str | Path) -> None:
        self.db = db if isinstance(db, SQLiteDB) else SQLiteDB(db)
        self._migrated = False
        self._lock = threading.Lock()

    def _ready(self) -> SQLiteDB:
        if not self._migrated:
            with self._lock:
                if not self._migrated:
                    migrate(self.db, "calllog", MIGRATIONS)
                    self._migrated = True
        return self.db

    def record(self, call: CallRecord) -> None:
        """Write one call (committed before this returns)."""
        db = self._ready()
        usage = call.usage
        meta = call.metadata
        with db.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO lm_calls (call_id, started_at, model, base_url, ok, "
                "error_code, latency_s, attempts, input_tokens, output_tokens, cached_tokens, "
                "cost_usd, task_id, trace_id, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    call.call_id,
                    call.started_at,
                    call.model,
                    call.base_url,
                    int(call.ok),
                    None if call.error is None else str(call.error.get("code")),
                    call.latency_s,
                    call.attempts,
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cached_tokens,
                    usage.cost_usd,
                    _opt_str(meta.get("task_id")),
                    _opt_str(meta.get("trace_id")),
                    json.dumps(call.to_dict(), default=str, ensure_ascii=False),
                ),
            )

    def get(self, call_id: str) -> CallRecord | None:
        """One call by id (a unique prefix of at least 8 characters also works)."""
        conn = self._ready().connection()
        row = conn.execute("SELECT record FROM lm_calls WHERE call_id = ?", (call_id,)).fetchone()
        if row is None and len(call_id) >= 8:
            rows = conn.execute(
                "SELECT record FROM lm_calls WHERE call_id LIKE ? LIMIT 2",
                (call_id.replace("%", "").replace("_", r"\_") + "%",),
            ).fetchall()
            row = rows[0] if len(rows) == 1 else None
        return None if row is None else CallRecord.from_dict(json.loads(row["record"]))

    def recent(
        self,
        limit: int = 20,
        *,
        model: str | None = None,
        task_id: str | None = None,
        trace_id: str | None = None,
        errors_only: bool = False,
    ) -> list[CallRecord]:
        """The newest calls first, optionally filtered."""
        where, args = self._filters(model, task_id, trace_id, errors_only)
        rows = (
            self._ready()
            .connection()
            .execute(
                f"SELECT record FROM lm_calls{where} ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (*args, max(0, int(limit))),
            )
            .fetchall()
        )
        return [CallRecord.from_dict(json.loads(r["record"])) for r in rows]

    def totals(
        self, *, model: str | None = None, task_id: str | None = None, trace_id: str | None = None
    ) -> Usage:
        """Summed usage of the matching calls."""
        where, args = self._filters(model, task_id, trace_id, False)
        row = (
            self._ready()
            .connection()
            .execute(
                "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
                "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(latency_s), 0), "
                f"COALESCE(SUM(cost_usd), 0) FROM lm_calls{where}",
                args,
            )
            .fetchone()
        )
        if not row[0]:
            return ZERO_USAGE
        return Usage(
            input_tokens=int(row[1]),
            output_tokens=int(row[2]),
            cached_tokens=int(row[3]),
            latency_s=float(row[4]),
            cost_usd=float(row[5]),
            calls=int(row[0]),
        )

    def count(self) -> int:
        return int(
            self._ready().connection().execute("SELECT COUNT(*) FROM lm_calls").fetchone()[0]
        )

    @staticmethod
    def _filters(
        model: str | None, task_id: str | None, trace_id: str | None, errors_only: bool
    ) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("model", model), ("task_id", task_id), ("trace_id", trace_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if errors_only:
            clauses.append("ok = 0")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
