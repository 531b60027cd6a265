"""RLM jobs of the server, recorded in the store so that they outlive the process that ran them.

A job runs as a task of one server process (its inputs, possibly megabytes, live only there).
Its record is written here when it is submitted, when it starts and when it ends: id, model,
principal, status, trace id, progress, result or error, and the process that runs it (host,
pid, start time) with a heartbeat. After a restart, or from another server over the same home,
``GET /api/v1/rlm/jobs/{id}`` still answers: a finished job with its result, and a job whose
process is gone (killed, crashed, stopped) as ``interrupted``, with the trace of what it did up
to then. Jobs are not re-run on their own: a re-run costs model calls, so it is the caller's
decision (``POST /api/v1/rlm/traces/{id}/replay`` re-executes from the recorded outputs).
"""

from __future__ import annotations

import json
from typing import Any

from holdfast.store import Dialect, Migration, as_backend, migrate, upsert
from holdfast.store.liveness import ProcessId, process_alive, this_process

COMPONENT = "server_rlm_jobs"
HEARTBEAT_S = 10.0
"""How often a server refreshes the heartbeat of the jobs it runs."""
STALE_S = 60.0
"""A job of another host whose heartbeat is older than this is taken as interrupted."""
LIVE = ("queued", "running")


def _v1(d: Dialect) -> str:
    return f"""
    CREATE TABLE IF NOT EXISTS server_rlm_jobs (
        job_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        model TEXT NOT NULL,
        query TEXT NOT NULL,
        principal TEXT NOT NULL,
        via TEXT NOT NULL,
        trace_id TEXT,
        created_at {d.float} NOT NULL,
        started_at {d.float},
        ended_at {d.float},
        progress TEXT,
        result TEXT,
        error TEXT,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        proc_start TEXT,
        heartbeat_at {d.float}
    );
    CREATE INDEX IF NOT EXISTS server_rlm_jobs_created ON server_rlm_jobs (created_at);
    """


MIGRATIONS: list[Migration] = [_v1]
_COLUMNS = (
    "job_id", "status", "model", "query", "principal", "via", "trace_id", "created_at",
    "started_at", "ended_at", "progress", "result", "error", "host", "pid", "proc_start",
    "heartbeat_at",
)  # fmt: skip
_SAVE = upsert("server_rlm_jobs", _COLUMNS, ("job_id",))


class JobStore:
    """Job records in a store backend (the server's Holdfast database)."""

    def __init__(self, db: Any) -> None:
        self.backend = as_backend(db)
        migrate(self.backend, COMPONENT, MIGRATIONS)
        self.me = this_process()

    def save(self, job: dict[str, Any], *, via: str) -> None:
        """Write a job's record (``job`` is :meth:`Job.to_dict`) as run by this process."""
        db = self.backend
        row = (
            job["id"],
            job["status"],
            job["model"],
            job["query"],
            job["principal"],
            via,
            job["trace_id"],
            job["created_at"],
            job["started_at"],
            job["ended_at"],
            json.dumps(job["progress"]),
            None if job["result"] is None else json.dumps(job["result"], default=str),
            None if job["error"] is None else json.dumps(job["error"], default=str),
            self.me.host,
            self.me.pid,
            self.me.start,
            db.local_now(),
        )
        with db.transaction() as tx:
            db.run(tx, _SAVE, row)

    def heartbeat(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        db = self.backend
        marks = ", ".join("?" for _ in job_ids)
        with db.transaction() as tx:
            db.run(
                tx,
                f"UPDATE server_rlm_jobs SET heartbeat_at = ? WHERE status IN ('queued', 'running')"
                f" AND job_id IN ({marks})",
                (db.local_now(), *job_ids),
            )

    def interrupt_mine(self, job_ids: list[str], why: str) -> None:
        """Mark this process's unfinished jobs interrupted (a server that is stopping)."""
        for job_id in job_ids:
            self._interrupt(job_id, why)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job's record (the :meth:`Job.to_dict` shape), ``interrupted`` if its process is
        gone; None if there is no such job."""
        row = self.backend.query_one("SELECT * FROM server_rlm_jobs WHERE job_id = ?", (job_id,))
        return None if row is None else self._observed(row)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.backend.query(
            "SELECT * FROM server_rlm_jobs ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [self._observed(r) for r in rows]

    def _observed(self, row: Any) -> dict[str, Any]:
        job = _job(row)
        if job["status"] in LIVE:
            why = self._gone(row)
            if why is not None:
                self._interrupt(job["id"], why)
                fresh = self.backend.query_one(
                    "SELECT * FROM server_rlm_jobs WHERE job_id = ?", (job["id"],)
                )
                job = _job(fresh if fresh is not None else row)
        return job

    def _gone(self, row: Any) -> str | None:
        proc = ProcessId(host=row["host"], pid=int(row["pid"]), start=row["proc_start"] or "")
        if proc == self.me:
            return None  # this process: the manager knows its own jobs
        alive = process_alive(proc)
        if alive is False:
            return f"its server process (pid {proc.pid} on {proc.host}) is gone"
        beat = row["heartbeat_at"]
        now = self.backend.local_now()
        if alive is None and beat is not None and now - float(beat) > STALE_S:
            return f"no heartbeat from its server on {proc.host} for {now - float(beat):.0f} s"
        return None

    def _interrupt(self, job_id: str, why: str) -> None:
        db = self.backend
        error = {
            "code": "interrupted",
            "message": f"the RLM job was interrupted: {why}; it was not finished and will not "
            "be resumed (its trace, if it started, shows what it did; submit it again to re-run)",
        }
        with db.transaction() as tx:
            db.run(
                tx,
                "UPDATE server_rlm_jobs SET status = 'interrupted', ended_at = ?, error = ? "
                "WHERE job_id = ? AND status IN ('queued', 'running')",
                (db.local_now(), json.dumps(error), job_id),
            )


def _job(row: Any) -> dict[str, Any]:
    return {
        "id": row["job_id"],
        "status": row["status"],
        "model": row["model"],
        "query": row["query"],
        "trace_id": row["trace_id"],
        "principal": row["principal"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "progress": json.loads(row["progress"]) if row["progress"] else {},
        "result": json.loads(row["result"]) if row["result"] else None,
        "error": json.loads(row["error"]) if row["error"] else None,
        "server": {"host": row["host"], "pid": row["pid"]},
    }
