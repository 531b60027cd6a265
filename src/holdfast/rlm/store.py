"""Storage of RLM traces: runs, their events, and the content-addressed sub-call cache.

A run is one RLM (the root or a child); children point to their parent, so a job is a tree. Events
are small JSON rows appended in order; none of them holds an input or the conversation history,
so the bytes written per iteration do not grow with the input. The cache maps a hash of a model
call (model, messages, parameters) to its recorded reply, which is what replay reads. The tables
live in any :class:`~holdfast.store.Backend`: with a PostgreSQL control plane, in its database, so
a trace id can be shown and replayed from any machine.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from holdfast.store import Backend, Clock, Dialect, Migration, SQLiteDB, as_backend, migrate, upsert

COMPONENT = "rlm_traces"


def _v1(d: Dialect) -> str:
    return f"""
    CREATE TABLE rlm_runs (
        trace_id TEXT PRIMARY KEY,
        parent_id TEXT,
        root_id TEXT NOT NULL,
        depth INTEGER NOT NULL,
        query TEXT NOT NULL,
        model TEXT NOT NULL,
        sub_model TEXT,
        mode TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at {d.float} NOT NULL,
        ended_at {d.float},
        meta TEXT NOT NULL,
        result TEXT
    );
    CREATE INDEX rlm_runs_root ON rlm_runs (root_id, started_at);
    CREATE INDEX rlm_runs_started ON rlm_runs (started_at);
    CREATE TABLE rlm_events (
        trace_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts {d.float} NOT NULL,
        kind TEXT NOT NULL,
        iteration INTEGER,
        data TEXT NOT NULL,
        PRIMARY KEY (trace_id, seq)
    );
    CREATE TABLE rlm_call_cache (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        reply TEXT NOT NULL,
        created_at {d.float} NOT NULL
    );
    """


MIGRATIONS: list[Migration] = [_v1]
_CACHE_PUT = upsert("rlm_call_cache", ("key", "model", "reply", "created_at"), ("key",))


@dataclass(frozen=True)
class RunRow:
    """One stored run."""

    trace_id: str
    parent_id: str | None
    root_id: str
    depth: int
    query: str
    model: str
    sub_model: str | None
    mode: str
    status: str
    started_at: float
    ended_at: float | None
    meta: dict[str, Any]
    result: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EventRow:
    """One stored event of a run."""

    trace_id: str
    seq: int
    ts: float
    kind: str
    iteration: int | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def dumps(value: Any) -> str:
    """Compact JSON as stored in event rows."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)


def _line(value: Any) -> str:
    # ASCII-only, so that no character inside a value (U+0085, U+2028...) can split the line.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=repr) + "\n"


class RLMTraceStore:
    """Runs, events and the call cache in a store backend (a :class:`~holdfast.store.Backend`,
    a :class:`~holdfast.store.SQLiteDB`, a SQLite path or a database URL)."""

    def __init__(
        self, db: Backend | SQLiteDB | str | os.PathLike[str], *, clock: Clock | None = None
    ) -> None:
        self.backend = as_backend(db, clock=clock)
        migrate(self.backend, COMPONENT, MIGRATIONS)
        self._seq: dict[str, int] = {}
        self._seq_lock = threading.Lock()

    @property
    def db(self) -> Any:
        """The backend's connections (a :class:`SQLiteDB` or a ``PostgresDB``)."""
        return getattr(self.backend, "db", None)

    def close(self) -> None:
        """Close the connections of the store's backend."""
        self.backend.close()

    def start_run(
        self,
        trace_id: str,
        *,
        parent_id: str | None,
        root_id: str,
        depth: int,
        query: str,
        model: str,
        sub_model: str | None,
        mode: str,
        meta: dict[str, Any],
    ) -> None:
        db = self.backend
        with db.transaction() as tx:
            db.run(
                tx,
                "INSERT INTO rlm_runs (trace_id, parent_id, root_id, depth, query, model, sub_model,"
                " mode, status, started_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    trace_id,
                    parent_id,
                    root_id,
                    depth,
                    query,
                    model,
                    sub_model,
                    mode,
                    db.local_now(),
                    dumps(meta),
                ),
            )
        self._seq[trace_id] = 0

    def add_event(
        self, trace_id: str, kind: str, data: dict[str, Any], *, iteration: int | None = None
    ) -> int:
        """Append one event; returns the number of bytes of its JSON payload."""
        payload = dumps(data)
        self.add_events([(trace_id, kind, iteration, payload, self.backend.local_now())])
        return len(payload.encode("utf-8"))

    def add_events(self, rows: list[tuple[str, str, int | None, str, float]]) -> None:
        """Append pre-serialised events ``(trace_id, kind, iteration, json, ts)`` in one write."""
        if not rows:
            return
        values = []
        db = self.backend
        with self._seq_lock:
            for trace_id, kind, iteration, payload, ts in rows:
                seq = self._seq.get(trace_id)
                if seq is None:
                    row = db.query_one(
                        "SELECT COALESCE(MAX(seq), 0) AS n FROM rlm_events WHERE trace_id = ?",
                        (trace_id,),
                    )
                    seq = int(row["n"]) if row else 0
                seq += 1
                self._seq[trace_id] = seq
                values.append((trace_id, seq, ts, kind, iteration, payload))
        with db.transaction() as tx:
            db.executemany(
                tx,
                "INSERT INTO rlm_events (trace_id, seq, ts, kind, iteration, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

    def finish_run(self, trace_id: str, status: str, result: dict[str, Any]) -> None:
        db = self.backend
        with db.transaction() as tx:
            db.run(
                tx,
                "UPDATE rlm_runs SET status = ?, ended_at = ?, result = ? WHERE trace_id = ?",
                (status, db.local_now(), dumps(result), trace_id),
            )
        with self._seq_lock:
            self._seq.pop(trace_id, None)

    # ----- reading ----------------------------------------------------------------------------

    def get_run(self, trace_id: str) -> RunRow | None:
        row = self.backend.query_one("SELECT * FROM rlm_runs WHERE trace_id = ?", (trace_id,))
        return None if row is None else _run(row)

    def find_run(self, prefix: str) -> RunRow | None:
        """A run by its id or a unique prefix of it."""
        exact = self.get_run(prefix)
        if exact is not None:
            return exact
        pattern = prefix.replace("\\", "").replace("%", "").replace("_", r"\_") + "%"
        rows = self.backend.query(
            "SELECT * FROM rlm_runs WHERE trace_id LIKE ? ESCAPE '\\' LIMIT 2", (pattern,)
        )
        return _run(rows[0]) if len(rows) == 1 else None

    def children(self, trace_id: str) -> list[RunRow]:
        rows = self.backend.query(
            "SELECT * FROM rlm_runs WHERE parent_id = ? ORDER BY started_at, trace_id", (trace_id,)
        )
        return [_run(r) for r in rows]

    def tree(self, trace_id: str) -> list[RunRow]:
        """The run and all its descendants, parents before children."""
        root = self.get_run(trace_id)
        if root is None:
            return []
        out = [root]
        i = 0
        while i < len(out):
            out.extend(self.children(out[i].trace_id))
            i += 1
        return out

    def events(self, trace_id: str) -> list[EventRow]:
        rows = self.backend.query(
            "SELECT * FROM rlm_events WHERE trace_id = ? ORDER BY seq", (trace_id,)
        )
        return [
            EventRow(
                r["trace_id"], r["seq"], r["ts"], r["kind"], r["iteration"], json.loads(r["data"])
            )
            for r in rows
        ]

    def event_bytes(self, trace_id: str) -> int:
        length = self.backend.dialect.octet_length("data")
        row = self.backend.query_one(
            f"SELECT COALESCE(SUM({length}), 0) AS n FROM rlm_events WHERE trace_id = ?",
            (trace_id,),
        )
        return int(row["n"]) if row else 0

    def recent_runs(self, limit: int = 20) -> list[RunRow]:
        rows = self.backend.query(
            "SELECT * FROM rlm_runs WHERE parent_id IS NULL ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        return [_run(r) for r in rows]

    def export_jsonl(self, trace_id: str, out: TextIO) -> int:
        """Write the run tree as JSON lines (a ``run`` line then its events); returns lines."""
        n = 0
        for run in self.tree(trace_id):
            out.write(_line({"type": "run", **run.to_dict()}))
            n += 1
            for ev in self.events(run.trace_id):
                out.write(_line({"type": "event", **ev.to_dict()}))
                n += 1
        return n

    def iter_replies(self, trace_id: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(call key, model, reply) of every recorded model call in the run tree."""
        for run in self.tree(trace_id):
            for ev in self.events(run.trace_id):
                key = ev.data.get("key")
                if (
                    ev.kind in ("root_call", "sub_call", "direct_call")
                    and key
                    and "reply" in ev.data
                ):
                    yield key, str(ev.data.get("model", "")), ev.data["reply"]

    # ----- call cache -------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, Any] | None:
        row = self.backend.query_one("SELECT reply FROM rlm_call_cache WHERE key = ?", (key,))
        return None if row is None else dict(json.loads(row["reply"]))

    def cache_put(self, key: str, model: str, reply: dict[str, Any]) -> None:
        db = self.backend
        with db.transaction() as tx:
            db.run(tx, _CACHE_PUT, (key, model, dumps(reply), db.local_now()))


def _run(row: Any) -> RunRow:
    return RunRow(
        trace_id=row["trace_id"],
        parent_id=row["parent_id"],
        root_id=row["root_id"],
        depth=row["depth"],
        query=row["query"],
        model=row["model"],
        sub_model=row["sub_model"],
        mode=row["mode"],
        status=row["status"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        meta=json.loads(row["meta"]),
        result=json.loads(row["result"]) if row["result"] else None,
    )
