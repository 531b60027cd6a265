"""The model call log: every recorded call's exact messages, parameters, reply, usage and error.

Attach a :class:`CallLog` to an LM (``get_lm(..., call_log=CallLog(db))``) and every call through
it is written to the ``lm_calls`` table of the Holdfast store before the call returns, so the exact
prompt of any call can be inspected later (``holdfast lm log --show-prompt``). Searchable columns
(time, model, tokens, cost, task and trace ids) sit beside the full JSON record. The log lives in
any :class:`~holdfast.store.Backend`: the SQLite file of the Holdfast home, or the PostgreSQL
database of the control plane, so a task's calls can be read from any machine.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from holdfast.lm.record import CallRecord
from holdfast.lm.types import ZERO_USAGE, Usage
from holdfast.store import Backend, Dialect, Migration, SQLiteDB, as_backend, migrate, upsert

COMPONENT = "calllog"


def _v1(d: Dialect) -> str:
    return f"""
    CREATE TABLE lm_calls (
        call_id TEXT PRIMARY KEY,
        started_at {d.float} NOT NULL,
        model TEXT NOT NULL,
        base_url TEXT,
        ok INTEGER NOT NULL,
        error_code TEXT,
        latency_s {d.float} NOT NULL,
        attempts INTEGER NOT NULL,
        input_tokens {d.bigint} NOT NULL,
        output_tokens {d.bigint} NOT NULL,
        cached_tokens {d.bigint} NOT NULL,
        cost_usd {d.float} NOT NULL,
        task_id TEXT,
        trace_id TEXT,
        record TEXT NOT NULL
    );
    CREATE INDEX lm_calls_started ON lm_calls (started_at);
    CREATE INDEX lm_calls_task ON lm_calls (task_id, started_at);
    CREATE INDEX lm_calls_trace ON lm_calls (trace_id);
    """


MIGRATIONS: list[Migration] = [_v1]

_COLUMNS = (
    "call_id",
    "started_at",
    "model",
    "base_url",
    "ok",
    "error_code",
    "latency_s",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "task_id",
    "trace_id",
    "record",
)
_INSERT = upsert("lm_calls", _COLUMNS, ("call_id",))


class CallLog:
    """A persistent :class:`~holdfast.lm.CallRecorder` over a store backend (a
    :class:`~holdfast.store.Backend`, a :class:`~holdfast.store.SQLiteDB`, a path or a URL)."""

    def __init__(self, db: Backend | SQLiteDB | str | Path) -> None:
        self.backend = as_backend(db)
        self._migrated = False
        self._lock = threading.Lock()

    @property
    def db(self) -> Any:
        """The backend's connections (a :class:`SQLiteDB` or a ``PostgresDB``)."""
        return getattr(self.backend, "db", None)

    def _ready(self) -> Backend:
        if not self._migrated:
            with self._lock:
                if not self._migrated:
                    migrate(self.backend, COMPONENT, MIGRATIONS)
                    self._migrated = True
        return self.backend

    def record(self, call: CallRecord) -> None:
        """Write one call (committed before this returns)."""
        db = self._ready()
        usage = call.usage
        meta = call.metadata
        with db.transaction() as tx:
            db.run(
                tx,
                _INSERT,
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
        db = self._ready()
        row = db.query_one("SELECT record FROM lm_calls WHERE call_id = ?", (call_id,))
        if row is None and len(call_id) >= 8:
            pattern = call_id.replace("\\", "").replace("%", "").replace("_", r"\_") + "%"
            rows = db.query(
                "SELECT record FROM lm_calls WHERE call_id LIKE ? ESCAPE '\\' LIMIT 2", (pattern,)
            )
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
        rows = self._ready().query(
            f"SELECT record FROM lm_calls{where} ORDER BY started_at DESC, call_id DESC LIMIT ?",
            (*args, max(0, int(limit))),
        )
        return [CallRecord.from_dict(json.loads(r["record"])) for r in rows]

    def totals(
        self, *, model: str | None = None, task_id: str | None = None, trace_id: str | None = None
    ) -> Usage:
        """Summed usage of the matching calls."""
        where, args = self._filters(model, task_id, trace_id, False)
        row = self._ready().query_one(
            "SELECT COUNT(*) AS n, COALESCE(SUM(input_tokens), 0) AS i, "
            "COALESCE(SUM(output_tokens), 0) AS o, COALESCE(SUM(cached_tokens), 0) AS c, "
            "COALESCE(SUM(latency_s), 0) AS l, COALESCE(SUM(cost_usd), 0) AS usd "
            f"FROM lm_calls{where}",
            args,
        )
        if row is None or not row["n"]:
            return ZERO_USAGE
        return Usage(
            input_tokens=int(row["i"]),
            output_tokens=int(row["o"]),
            cached_tokens=int(row["c"]),
            latency_s=float(row["l"]),
            cost_usd=float(row["usd"]),
            calls=int(row["n"]),
        )

    def count(self) -> int:
        row = self._ready().query_one("SELECT COUNT(*) AS n FROM lm_calls")
        return int(row["n"]) if row else 0

    def close(self) -> None:
        """Close the connections of the log's backend."""
        self.backend.close()

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
