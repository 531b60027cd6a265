"""Tables of continuity memory: virtual sessions, their physical sessions and everything in them.

Every write that changes what a prompt would contain is committed before the turn goes on, so a
worker that dies at any instant leaves a state from which the exact next prompt can be rebuilt:
working-set operations, transcript messages, tool results (with their pruned notes), the seed of
each physical session, and the token accounting of each turn. A roll-over (ending one physical
session, starting the next with its seed) is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from holdfast.errors import InvalidInput, RetryableFailure
from holdfast.store.sqlite import SQLiteDB, migrate

COMPONENT = "session"

MIGRATIONS = [
    """
CREATE TABLE session_virtual (
    id TEXT PRIMARY KEY,
    task_id TEXT,
    created_at REAL NOT NULL,
    system_prompt TEXT NOT NULL,
    config_json TEXT NOT NULL,
    continuation INTEGER NOT NULL DEFAULT 0,
    turn INTEGER NOT NULL DEFAULT 0,
    next_result INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'open',
    flushed_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX session_virtual_task ON session_virtual (task_id);
CREATE TABLE session_physical (
    vsession_id TEXT NOT NULL REFERENCES session_virtual (id),
    cont INTEGER NOT NULL,
    started_at REAL NOT NULL,
    start_turn INTEGER NOT NULL,
    ended_at REAL,
    end_reason TEXT,
    seed_json TEXT NOT NULL,
    PRIMARY KEY (vsession_id, cont)
);
CREATE TABLE session_messages (
    vsession_id TEXT NOT NULL,
    cont INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    turn INTEGER NOT NULL,
    message_json TEXT NOT NULL,
    result_id TEXT,
    PRIMARY KEY (vsession_id, cont, seq)
);
CREATE TABLE session_results (
    vsession_id TEXT NOT NULL,
    result_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    turn INTEGER NOT NULL,
    content TEXT NOT NULL,
    pruned_note TEXT,
    PRIMARY KEY (vsession_id, result_id)
);
CREATE TABLE session_ws_ops (
    vsession_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    op_json TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (vsession_id, version)
);
CREATE TABLE session_turns (
    vsession_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    cont INTEGER NOT NULL,
    estimate_tokens INTEGER NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cached_tokens INTEGER,
    cost_usd REAL,
    latency_s REAL,
    at REAL NOT NULL,
    PRIMARY KEY (vsession_id, turn)
);
""",
    """
ALTER TABLE session_ws_ops ADD COLUMN op_key TEXT;
CREATE UNIQUE INDEX session_ws_ops_key ON session_ws_ops (vsession_id, op_key)
    WHERE op_key IS NOT NULL;
""",
]

Entry = tuple[dict[str, Any], str | None]


class StaleSessionWrite(RetryableFailure):
    """Another writer changed this virtual session first (a lost lease, or two workers)."""

    code = "stale_session_write"


@dataclass(frozen=True)
class VirtualRow:
    id: str
    task_id: str | None
    created_at: float
    system_prompt: str
    config: dict[str, Any]
    continuation: int
    turn: int
    next_result: int
    status: str
    flushed: frozenset[str]


@dataclass(frozen=True)
class PhysicalRow:
    cont: int
    started_at: float
    start_turn: int
    ended_at: float | None
    end_reason: str | None
    seed: list[Entry]


class SessionStore:
    """Persistence of virtual sessions in the embedded SQLite store."""

    def __init__(self, db: SQLiteDB) -> None:
        self.db = db
        migrate(db, COMPONENT, MIGRATIONS)

    # -- virtual sessions -------------------------------------------------------------------------

    def create_virtual(
        self,
        vsession_id: str,
        *,
        task_id: str | None,
        system_prompt: str,
        config: dict[str, Any],
        seed: list[Entry],
    ) -> None:
        now = time.time()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO session_virtual (id, task_id, created_at, system_prompt, config_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (vsession_id, task_id, now, system_prompt, json.dumps(config, sort_keys=True)),
            )
            tx.execute(
                "INSERT INTO session_physical (vsession_id, cont, started_at, start_turn, seed_json) "
                "VALUES (?, 0, ?, 0, ?)",
                (vsession_id, now, _dump_entries(seed)),
            )

    def load_virtual(self, vsession_id: str) -> VirtualRow:
        row = (
            self.db.connection()
            .execute("SELECT * FROM session_virtual WHERE id = ?", (vsession_id,))
            .fetchone()
        )
        if row is None:
            raise InvalidInput(f"no virtual session {vsession_id!r} in {self.db.path}")
        return VirtualRow(
            id=row["id"],
            task_id=row["task_id"],
            created_at=row["created_at"],
            system_prompt=row["system_prompt"],
            config=json.loads(row["config_json"]),
            continuation=row["continuation"],
            turn=row["turn"],
            next_result=row["next_result"],
            status=row["status"],
            flushed=frozenset(json.loads(row["flushed_json"])),
        )

    def find_by_task(self, task_id: str) -> str | None:
        row = (
            self.db.connection()
            .execute(
                "SELECT id FROM session_virtual WHERE task_id = ? ORDER BY created_at LIMIT 1",
                (task_id,),
            )
            .fetchone()
        )
        return None if row is None else str(row["id"])

    def set_status(self, vsession_id: str, status: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE session_virtual SET status = ? WHERE id = ?", (status, vsession_id))

    def add_flushed(self, vsession_id: str, keys: list[str]) -> frozenset[str]:
        with self.db.transaction() as tx:
            row = tx.execute(
                "SELECT flushed_json FROM session_virtual WHERE id = ?", (vsession_id,)
            ).fetchone()
            flushed = set(json.loads(row["flushed_json"])) | set(keys)
            tx.execute(
                "UPDATE session_virtual SET flushed_json = ? WHERE id = ?",
                (json.dumps(sorted(flushed)), vsession_id),
            )
        return frozenset(flushed)

    # -- working set ------------------------------------------------------------------------------

    def append_op(self, vsession_id: str, op: dict[str, Any]) -> None:
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO session_ws_ops (vsession_id, version, op_json, at, op_key) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        vsession_id,
                        int(op["v"]),
                        json.dumps(op, sort_keys=True),
                        time.time(),
                        op.get("key"),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise StaleSessionWrite(
                f"working-set version {op['v']} of {vsession_id} was already written by another "
                "writer; reload the session",
                vsession_id=vsession_id,
            ) from exc

    def op_by_key(self, vsession_id: str, key: str) -> dict[str, Any] | None:
        """The working-set operation written under idempotency ``key``, if any."""
        row = (
            self.db.connection()
            .execute(
                "SELECT op_json FROM session_ws_ops WHERE vsession_id = ? AND op_key = ?",
                (vsession_id, key),
            )
            .fetchone()
        )
        return None if row is None else dict(json.loads(row["op_json"]))

    def load_ops(self, vsession_id: str) -> list[dict[str, Any]]:
        rows = self.db.connection().execute(
            "SELECT op_json FROM session_ws_ops WHERE vsession_id = ? ORDER BY version",
            (vsession_id,),
        )
        return [json.loads(r["op_json"]) for r in rows]

    # -- physical sessions and transcript ---------------------------------------------------------

    def roll_over(
        self, vsession_id: str, *, from_cont: int, reason: str, seed: list[Entry], start_turn: int
    ) -> int:
        """End physical session ``from_cont`` and start the next with ``seed``, atomically."""
        now = time.time()
        with self.db.transaction() as tx:
            row = tx.execute(
                "SELECT continuation FROM session_virtual WHERE id = ?", (vsession_id,)
            ).fetchone()
            if row is None or int(row["continuation"]) != from_cont:
                raise StaleSessionWrite(
                    f"{vsession_id} is no longer at continuation {from_cont}; reload the session",
                    vsession_id=vsession_id,
                )
            tx.execute(
                "UPDATE session_physical SET ended_at = ?, end_reason = ? "
                "WHERE vsession_id = ? AND cont = ?",
                (now, reason, vsession_id, from_cont),
            )
            tx.execute(
                "INSERT INTO session_physical (vsession_id, cont, started_at, start_turn, seed_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (vsession_id, from_cont + 1, now, start_turn, _dump_entries(seed)),
            )
            tx.execute(
                "UPDATE session_virtual SET continuation = ? WHERE id = ?",
                (from_cont + 1, vsession_id),
            )
        return from_cont + 1

    def physical(self, vsession_id: str, cont: int | None = None) -> list[PhysicalRow]:
        sql = "SELECT * FROM session_physical WHERE vsession_id = ?"
        args: tuple[Any, ...] = (vsession_id,)
        if cont is not None:
            sql += " AND cont = ?"
            args += (cont,)
        rows = self.db.connection().execute(sql + " ORDER BY cont", args)
        return [
            PhysicalRow(
                cont=r["cont"],
                started_at=r["started_at"],
                start_turn=r["start_turn"],
                ended_at=r["ended_at"],
                end_reason=r["end_reason"],
                seed=_load_entries(r["seed_json"]),
            )
            for r in rows
        ]

    def append_message(
        self,
        vsession_id: str,
        cont: int,
        turn: int,
        message: dict[str, Any],
        *,
        result: tuple[str, str, str] | None = None,
    ) -> None:
        """Append one transcript message; ``result`` = (result_id, tool, full content)."""
        with self.db.transaction() as tx:
            seq = tx.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM session_messages "
                "WHERE vsession_id = ? AND cont = ?",
                (vsession_id, cont),
            ).fetchone()[0]
            tx.execute(
                "INSERT INTO session_messages (vsession_id, cont, seq, turn, message_json, result_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    vsession_id,
                    cont,
                    seq,
                    turn,
                    json.dumps(message, ensure_ascii=False),
                    result[0] if result else None,
                ),
            )
            if result is not None:
                tx.execute(
                    "INSERT INTO session_results (vsession_id, result_id, tool, turn, content) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (vsession_id, result[0], result[1], turn, result[2]),
                )
                tx.execute(
                    "UPDATE session_virtual SET next_result = next_result + 1 WHERE id = ?",
                    (vsession_id,),
                )

    def messages(self, vsession_id: str, cont: int) -> list[tuple[int, dict[str, Any], str | None]]:
        """(turn, message, result id) of one physical session's transcript, in order."""
        rows = self.db.connection().execute(
            "SELECT turn, message_json, result_id FROM session_messages "
            "WHERE vsession_id = ? AND cont = ? ORDER BY seq",
            (vsession_id, cont),
        )
        return [(r["turn"], json.loads(r["message_json"]), r["result_id"]) for r in rows]

    def prune(self, vsession_id: str, result_ids: list[str], note: str) -> list[str]:
        """Mark results pruned with ``note``; returns the ids that exist."""
        found: list[str] = []
        with self.db.transaction() as tx:
            for rid in result_ids:
                cur = tx.execute(
                    "UPDATE session_results SET pruned_note = ? WHERE vsession_id = ? AND result_id = ?",
                    (note, vsession_id, rid),
                )
                if cur.rowcount:
                    found.append(rid)
        return found

    def pruned_notes(self, vsession_id: str) -> dict[str, str]:
        rows = self.db.connection().execute(
            "SELECT result_id, pruned_note FROM session_results "
            "WHERE vsession_id = ? AND pruned_note IS NOT NULL",
            (vsession_id,),
        )
        return {r["result_id"]: r["pruned_note"] for r in rows}

    def result(self, vsession_id: str, result_id: str) -> tuple[str, str, int] | None:
        """(tool, full content, turn) of one tool result, pruned or not."""
        row = (
            self.db.connection()
            .execute(
                "SELECT tool, content, turn FROM session_results WHERE vsession_id = ? AND result_id = ?",
                (vsession_id, result_id),
            )
            .fetchone()
        )
        return None if row is None else (row["tool"], row["content"], row["turn"])

    def result_meta(
        self, vsession_id: str, result_ids: list[str]
    ) -> dict[str, tuple[str, int, int]]:
        """result id -> (tool, turn, characters) for the given ids."""
        if not result_ids:
            return {}
        out: dict[str, tuple[str, int, int]] = {}
        conn = self.db.connection()
        for start in range(0, len(result_ids), 500):
            chunk = result_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT result_id, tool, turn, LENGTH(content) AS n FROM session_results "
                f"WHERE vsession_id = ? AND result_id IN ({marks})",
                (vsession_id, *chunk),
            )
            for r in rows:
                out[r["result_id"]] = (r["tool"], r["turn"], r["n"])
        return out

    # -- token accounting -------------------------------------------------------------------------

    def record_turn(
        self,
        vsession_id: str,
        turn: int,
        cont: int,
        estimate: int,
        usage: dict[str, Any] | None,
    ) -> None:
        u = usage or {}
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO session_turns (vsession_id, turn, cont, estimate_tokens, "
                "input_tokens, output_tokens, cached_tokens, cost_usd, latency_s, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    vsession_id,
                    turn,
                    cont,
                    estimate,
                    u.get("input_tokens"),
                    u.get("output_tokens"),
                    u.get("cached_tokens"),
                    u.get("cost_usd"),
                    u.get("latency_s"),
                    time.time(),
                ),
            )
            tx.execute(
                "UPDATE session_virtual SET turn = MAX(turn, ?) WHERE id = ?", (turn, vsession_id)
            )

    def turns(self, vsession_id: str) -> list[dict[str, Any]]:
        rows = self.db.connection().execute(
            "SELECT * FROM session_turns WHERE vsession_id = ? ORDER BY turn", (vsession_id,)
        )
        return [dict(r) for r in rows]


def _dump_entries(entries: list[Entry]) -> str:
    # key order is kept as given: a resumed worker must send byte-identical messages
    return json.dumps([{"message": m, "result_id": rid} for m, rid in entries], ensure_ascii=False)


def _load_entries(raw: str) -> list[Entry]:
    return [(e["message"], e["result_id"]) for e in json.loads(raw)]
