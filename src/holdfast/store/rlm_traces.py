"""Storage of RLM traces: runs, their events, and the content-addressed sub-call cache.

A run is one RLM (the root or a child); children point to their parent, so a job is a tree. Events
are small JSON rows appended in order; none of them holds an input or the conversation history,
so the bytes written per iteration do not grow with the input. The cache maps a hash of a model
call (model, messages, parameters) to its recorded reply, which is what replay reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, TextIO

from holdfast.store.liveness import ProcessId, process_alive, this_process
from holdfast.store.sqlite import SQLiteDB, migrate

COMPONENT = "rlm_traces"

MIGRATIONS = [
    """
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
        started_at REAL NOT NULL,
        ended_at REAL,
        meta TEXT NOT NULL,
        result TEXT
    );
    CREATE INDEX rlm_runs_root ON rlm_runs (root_id, started_at);
    CREATE INDEX rlm_runs_started ON rlm_runs (started_at);
    CREATE TABLE rlm_events (
        trace_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        iteration INTEGER,
        data TEXT NOT NULL,
        PRIMARY KEY (trace_id, seq)
    );
    CREATE TABLE rlm_call_cache (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        reply TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # Who runs a run: a row left 'running' by a process that is gone is marked 'interrupted'.
    """
    ALTER TABLE rlm_runs ADD COLUMN host TEXT;
    ALTER TABLE rlm_runs ADD COLUMN pid INTEGER;
    ALTER TABLE rlm_runs ADD COLUMN proc_start TEXT;
    ALTER TABLE rlm_runs ADD COLUMN heartbeat_at REAL;
    """,
]

HEARTBEAT_S = 10.0
"""How often a job refreshes the heartbeat of its running runs."""
STALE_S = 60.0
"""A running run of another host whose heartbeat is older than this is taken as interrupted."""


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
    """Runs, events and the call cache in the Holdfast SQLite store."""

    def __init__(self, db: SQLiteDB) -> None:
        self.db = db
        migrate(db, COMPONENT, MIGRATIONS)
        self._seq: dict[str, int] = {}

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
        me = this_process()
        now = time.time()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO rlm_runs (trace_id, parent_id, root_id, depth, query, model, sub_model,"
                " mode, status, started_at, meta, host, pid, proc_start, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (
                    trace_id,
                    parent_id,
                    root_id,
                    depth,
                    query,
                    model,
                    sub_model,
                    mode,
                    now,
                    dumps(meta),
                    me.host,
                    me.pid,
                    me.start,
                    now,
                ),
            )
        self._seq[trace_id] = 0

    def heartbeat(self, trace_ids: list[str]) -> None:
        """Say that these runs' process is still alive (see :data:`STALE_S`)."""
        if not trace_ids:
            return
        marks = ", ".join("?" for _ in trace_ids)
        self.db.connection().execute(
            f"UPDATE rlm_runs SET heartbeat_at = ? WHERE status = 'running' "
            f"AND trace_id IN ({marks})",
            (time.time(), *trace_ids),
        )

    def add_event(
        self, trace_id: str, kind: str, data: dict[str, Any], *, iteration: int | None = None
    ) -> int:
        """Append one event; returns the number of bytes of its JSON payload."""
        payload = dumps(data)
        self.add_events([(trace_id, kind, iteration, payload, time.time())])
        return len(payload.encode("utf-8"))

    def add_events(self, rows: list[tuple[str, str, int | None, str, float]]) -> None:
        """Append pre-serialised events ``(trace_id, kind, iteration, json, ts)`` in one write."""
        if not rows:
            return
        values = []
        for trace_id, kind, iteration, payload, ts in rows:
            seq = self._seq.get(trace_id)
            if seq is None:
                row = (
                    self.db.connection()
                    .execute(
                        "SELECT COALESCE(MAX(seq), 0) FROM rlm_events WHERE trace_id = ?",
                        (trace_id,),
                    )
                    .fetchone()
                )
                seq = int(row[0])
            seq += 1
            self._seq[trace_id] = seq
            values.append((trace_id, seq, ts, kind, iteration, payload))
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO rlm_events (trace_id, seq, ts, kind, iteration, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

    def finish_run(self, trace_id: str, status: str, result: dict[str, Any]) -> None:
        self.db.connection().execute(
            "UPDATE rlm_runs SET status = ?, ended_at = ?, result = ? WHERE trace_id = ?",
            (status, time.time(), dumps(result), trace_id),
        )
        self._seq.pop(trace_id, None)

    # ----- reading ----------------------------------------------------------------------------

    def get_run(self, trace_id: str) -> RunRow | None:
        row = (
            self.db.connection()
            .execute("SELECT * FROM rlm_runs WHERE trace_id = ?", (trace_id,))
            .fetchone()
        )
        return None if row is None else self._observed(row)

    def _observed(self, row: Any) -> RunRow:
        """The run, marked ``interrupted`` (here and in the store) if its process is gone."""
        run = _run(row)
        if run.status != "running":
            return run
        why = _gone(row)
        if why is None:
            return run
        result = {"error": f"interrupted: {why}", "interrupted": True}
        ended = time.time()
        self.db.connection().execute(
            "UPDATE rlm_runs SET status = 'interrupted', ended_at = ?, result = ? "
            "WHERE trace_id = ? AND status = 'running'",
            (ended, dumps(result), run.trace_id),
        )
        return replace(run, status="interrupted", ended_at=ended, result=result)

    def find_run(self, prefix: str) -> RunRow | None:
        """A run by its id or a unique prefix of it."""
        exact = self.get_run(prefix)
        if exact is not None:
            return exact
        rows = (
            self.db.connection()
            .execute(
                "SELECT * FROM rlm_runs WHERE trace_id LIKE ? LIMIT 2",
                (prefix.replace("%", "") + "%",),
            )
            .fetchall()
        )
        return self._observed(rows[0]) if len(rows) == 1 else None

    def children(self, trace_id: str) -> list[RunRow]:
        rows = (
            self.db.connection()
            .execute("SELECT * FROM rlm_runs WHERE parent_id = ? ORDER BY started_at", (trace_id,))
            .fetchall()
        )
        return [self._observed(r) for r in rows]

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
        rows = (
            self.db.connection()
            .execute("SELECT * FROM rlm_events WHERE trace_id = ? ORDER BY seq", (trace_id,))
            .fetchall()
        )
        return [
            EventRow(
                r["trace_id"], r["seq"], r["ts"], r["kind"], r["iteration"], json.loads(r["data"])
            )
            for r in rows
        ]

    def event_bytes(self, trace_id: str) -> int:
        row = (
            self.db.connection()
            .execute(
                "SELECT COALESCE(SUM(LENGTH(CAST(data AS BLOB))), 0) FROM rlm_events WHERE trace_id = ?",
                (trace_id,),
            )
            .fetchone()
        )
        return int(row[0])

    def recent_runs(self, limit: int = 20) -> list[RunRow]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT * FROM rlm_runs WHERE parent_id IS NULL ORDER BY started_at DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [self._observed(r) for r in rows]

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
        row = (
            self.db.connection()
            .execute("SELECT reply FROM rlm_call_cache WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else dict(json.loads(row[0]))

    def cache_put(self, key: str, model: str, reply: dict[str, Any]) -> None:
        self.db.connection().execute(
            "INSERT OR REPLACE INTO rlm_call_cache (key, model, reply, created_at) VALUES (?, ?, ?, ?)",
            (key, model, dumps(reply), time.time()),
        )


def _gone(row: Any) -> str | None:
    """Why a row marked running cannot be running any more, or None if it may be."""
    host, pid = row["host"], row["pid"]
    if host is None or pid is None:
        return None  # written before runs recorded their process: cannot tell
    alive = process_alive(ProcessId(host=host, pid=int(pid), start=row["proc_start"] or ""))
    if alive is False:
        return f"its process (pid {pid} on {host}) is gone"
    beat = row["heartbeat_at"]
    if alive is None and beat is not None and time.time() - float(beat) > STALE_S:
        return f"no heartbeat from {host} (pid {pid}) for {time.time() - float(beat):.0f} s"
    return None


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
