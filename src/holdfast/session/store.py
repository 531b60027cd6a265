"""The session store: every query of continuity memory, written once for SQLite and PostgreSQL.

:class:`SQLSessionStore` runs over one :class:`~holdfast.store.Backend`, which supplies the
plumbing and two dialect words: the row lock (``FOR UPDATE`` on PostgreSQL, nothing on SQLite,
whose ``BEGIN IMMEDIATE`` already serialises writers) and the two-argument maximum
(``MAX`` / ``GREATEST``). The schema is :mod:`holdfast.session.schema`.

Every write that changes what a prompt would contain is committed before the turn goes on, so a
worker that dies at any instant leaves a state from which the exact next prompt can be rebuilt:
working-set operations, transcript messages, tool results (with their pruned notes), the seed of
each physical session, and the token accounting of each turn. A roll-over (ending one physical
session, starting the next with its seed) is one transaction. Messages are stored as JSON text,
never re-encoded by the database, so their key order survives: a resumed worker must send
byte-identical prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from holdfast.errors import InvalidInput, RetryableFailure
from holdfast.session.schema import COMPONENT, MIGRATIONS
from holdfast.store import Backend, Clock, SQLiteDB, UniqueViolation, as_backend, migrate

Entry = tuple[dict[str, Any], str | None]
Row = dict[str, Any]


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


class SQLSessionStore:
    """Persistence of virtual sessions; see the module docstring. Open one with
    :func:`holdfast.session.open_session_store`, or give it a backend, a :class:`SQLiteDB`, a
    SQLite path or a database URL."""

    def __init__(
        self,
        backend: Backend | SQLiteDB | str | os.PathLike[str],
        *,
        clock: Clock | None = None,
    ) -> None:
        backend = as_backend(backend, clock=clock)
        self.backend = backend
        #: where the store is, for messages (a file path, or a URL without its password)
        self.where = backend.url
        migrate(backend, COMPONENT, MIGRATIONS)

    @property
    def for_update(self) -> str:
        return self.backend.dialect.for_update

    @property
    def greatest(self) -> str:
        return self.backend.dialect.greatest

    @property
    def db(self) -> Any:
        """The backend's connections (a :class:`SQLiteDB` or a ``PostgresDB``)."""
        return getattr(self.backend, "db", None)

    # -- backend plumbing -------------------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[Any]:
        """A write transaction: committed on success, rolled back on error."""
        return self.backend.transaction()

    def _reader(self) -> AbstractContextManager[Any]:
        """A handle for reads outside a transaction."""
        return self.backend.reader()

    def _rows(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run ``sql`` (``?`` placeholders) and return its rows."""
        return self.backend.rows(handle, sql, params)

    def _run(self, handle: Any, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement (``?`` placeholders) and return the number of rows it changed."""
        return self.backend.run(handle, sql, params)

    def _time(self) -> float:
        return self.backend.local_now()

    def close(self) -> None:
        """Close every connection the store opened."""
        self.backend.close()

    def _one(self, sql: str, params: Sequence[Any]) -> Row | None:
        with self._reader() as h:
            rows = self._rows(h, sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self._reader() as h:
            return self._rows(h, sql, params)

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
        now = self._time()
        with self._tx() as h:
            self._run(
                h,
                "INSERT INTO session_virtual (id, task_id, created_at, system_prompt, config_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (vsession_id, task_id, now, system_prompt, json.dumps(config, sort_keys=True)),
            )
            self._run(
                h,
                "INSERT INTO session_physical (vsession_id, cont, started_at, start_turn, seed_json) "
                "VALUES (?, 0, ?, 0, ?)",
                (vsession_id, now, _dump_entries(seed)),
            )

    def load_virtual(self, vsession_id: str) -> VirtualRow:
        row = self._one("SELECT * FROM session_virtual WHERE id = ?", (vsession_id,))
        if row is None:
            raise InvalidInput(f"no virtual session {vsession_id!r} in {self.where}")
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
        row = self._one(
            "SELECT id FROM session_virtual WHERE task_id = ? ORDER BY created_at LIMIT 1",
            (task_id,),
        )
        return None if row is None else str(row["id"])

    def set_status(self, vsession_id: str, status: str) -> None:
        with self._tx() as h:
            self._run(
                h, "UPDATE session_virtual SET status = ? WHERE id = ?", (status, vsession_id)
            )

    def add_flushed(self, vsession_id: str, keys: list[str]) -> frozenset[str]:
        with self._tx() as h:
            row = self._rows(
                h,
                "SELECT flushed_json FROM session_virtual WHERE id = ?" + self.for_update,
                (vsession_id,),
            )[0]
            flushed = set(json.loads(row["flushed_json"])) | set(keys)
            self._run(
                h,
                "UPDATE session_virtual SET flushed_json = ? WHERE id = ?",
                (json.dumps(sorted(flushed)), vsession_id),
            )
        return frozenset(flushed)

    # -- working set ------------------------------------------------------------------------------

    def append_op(self, vsession_id: str, op: dict[str, Any]) -> None:
        try:
            with self._tx() as h:
                self._run(
                    h,
                    "INSERT INTO session_ws_ops (vsession_id, version, op_json, at, op_key) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        vsession_id,
                        int(op["v"]),
                        json.dumps(op, sort_keys=True),
                        self._time(),
                        op.get("key"),
                    ),
                )
        except UniqueViolation as exc:
            raise StaleSessionWrite(
                f"working-set version {op['v']} of {vsession_id} was already written by another "
                "writer; reload the session",
                vsession_id=vsession_id,
            ) from exc

    def op_by_key(self, vsession_id: str, key: str) -> dict[str, Any] | None:
        """The working-set operation written under idempotency ``key``, if any."""
        row = self._one(
            "SELECT op_json FROM session_ws_ops WHERE vsession_id = ? AND op_key = ?",
            (vsession_id, key),
        )
        return None if row is None else dict(json.loads(row["op_json"]))

    def load_ops(self, vsession_id: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT op_json FROM session_ws_ops WHERE vsession_id = ? ORDER BY version",
            (vsession_id,),
        )
        return [json.loads(r["op_json"]) for r in rows]

    # -- physical sessions and transcript ---------------------------------------------------------

    def roll_over(
        self, vsession_id: str, *, from_cont: int, reason: str, seed: list[Entry], start_turn: int
    ) -> int:
        """End physical session ``from_cont`` and start the next with ``seed``, atomically."""
        now = self._time()
        with self._tx() as h:
            rows = self._rows(
                h,
                "SELECT continuation FROM session_virtual WHERE id = ?" + self.for_update,
                (vsession_id,),
            )
            if not rows or int(rows[0]["continuation"]) != from_cont:
                raise StaleSessionWrite(
                    f"{vsession_id} is no longer at continuation {from_cont}; reload the session",
                    vsession_id=vsession_id,
                )
            self._run(
                h,
                "UPDATE session_physical SET ended_at = ?, end_reason = ? "
                "WHERE vsession_id = ? AND cont = ?",
                (now, reason, vsession_id, from_cont),
            )
            self._run(
                h,
                "INSERT INTO session_physical (vsession_id, cont, started_at, start_turn, seed_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (vsession_id, from_cont + 1, now, start_turn, _dump_entries(seed)),
            )
            self._run(
                h,
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
        return [
            PhysicalRow(
                cont=r["cont"],
                started_at=r["started_at"],
                start_turn=r["start_turn"],
                ended_at=r["ended_at"],
                end_reason=r["end_reason"],
                seed=_load_entries(r["seed_json"]),
            )
            for r in self._all(sql + " ORDER BY cont", args)
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
        with self._tx() as h:
            # the session row's lock orders concurrent appenders, so no two take the same seq
            self._rows(
                h, "SELECT id FROM session_virtual WHERE id = ?" + self.for_update, (vsession_id,)
            )
            seq = self._rows(
                h,
                "SELECT COALESCE(MAX(seq), -1) + 1 AS seq FROM session_messages "
                "WHERE vsession_id = ? AND cont = ?",
                (vsession_id, cont),
            )[0]["seq"]
            self._run(
                h,
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
                self._run(
                    h,
                    "INSERT INTO session_results (vsession_id, result_id, tool, turn, content) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (vsession_id, result[0], result[1], turn, result[2]),
                )
                self._run(
                    h,
                    "UPDATE session_virtual SET next_result = next_result + 1 WHERE id = ?",
                    (vsession_id,),
                )

    def messages(self, vsession_id: str, cont: int) -> list[tuple[int, dict[str, Any], str | None]]:
        """(turn, message, result id) of one physical session's transcript, in order."""
        rows = self._all(
            "SELECT turn, message_json, result_id FROM session_messages "
            "WHERE vsession_id = ? AND cont = ? ORDER BY seq",
            (vsession_id, cont),
        )
        return [(r["turn"], json.loads(r["message_json"]), r["result_id"]) for r in rows]

    def prune(self, vsession_id: str, result_ids: list[str], note: str) -> list[str]:
        """Mark results pruned with ``note``; returns the ids that exist."""
        found: list[str] = []
        with self._tx() as h:
            for rid in result_ids:
                changed = self._run(
                    h,
                    "UPDATE session_results SET pruned_note = ? "
                    "WHERE vsession_id = ? AND result_id = ?",
                    (note, vsession_id, rid),
                )
                if changed:
                    found.append(rid)
        return found

    def pruned_notes(self, vsession_id: str) -> dict[str, str]:
        rows = self._all(
            "SELECT result_id, pruned_note FROM session_results "
            "WHERE vsession_id = ? AND pruned_note IS NOT NULL",
            (vsession_id,),
        )
        return {r["result_id"]: r["pruned_note"] for r in rows}

    def result(self, vsession_id: str, result_id: str) -> tuple[str, str, int] | None:
        """(tool, full content, turn) of one tool result, pruned or not."""
        row = self._one(
            "SELECT tool, content, turn FROM session_results WHERE vsession_id = ? AND result_id = ?",
            (vsession_id, result_id),
        )
        return None if row is None else (row["tool"], row["content"], row["turn"])

    def result_meta(
        self, vsession_id: str, result_ids: list[str]
    ) -> dict[str, tuple[str, int, int]]:
        """result id -> (tool, turn, characters) for the given ids."""
        out: dict[str, tuple[str, int, int]] = {}
        for start in range(0, len(result_ids), 500):
            chunk = result_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._all(
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
        with self._tx() as h:
            self._run(
                h,
                "INSERT INTO session_turns (vsession_id, turn, cont, estimate_tokens, "
                "input_tokens, output_tokens, cached_tokens, cost_usd, latency_s, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (vsession_id, turn) DO UPDATE SET cont = excluded.cont, "
                "estimate_tokens = excluded.estimate_tokens, input_tokens = excluded.input_tokens, "
                "output_tokens = excluded.output_tokens, cached_tokens = excluded.cached_tokens, "
                "cost_usd = excluded.cost_usd, latency_s = excluded.latency_s, at = excluded.at",
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
                    self._time(),
                ),
            )
            self._run(
                h,
                f"UPDATE session_virtual SET turn = {self.greatest}(turn, ?) WHERE id = ?",
                (turn, vsession_id),
            )

    def turns(self, vsession_id: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT * FROM session_turns WHERE vsession_id = ? ORDER BY turn", (vsession_id,)
        )
        return [dict(r) for r in rows]


def _dump_entries(entries: list[Entry]) -> str:
    # key order is kept as given: a resumed worker must send byte-identical messages
    return json.dumps([{"message": m, "result_id": rid} for m, rid in entries], ensure_ascii=False)


def _load_entries(raw: str) -> list[Entry]:
    return [(e["message"], e["result_id"]) for e in json.loads(raw)]


SessionStore = SQLSessionStore
"""The name the SQLite session store had: the same class (``SessionStore(SQLiteDB(path))``)."""
