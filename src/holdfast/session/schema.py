"""Continuity memory's tables, written once for both dialects (versioned, append-only).

``session_virtual`` is one row per virtual session; ``session_physical`` each physical session
with the seed it started from; ``session_messages`` the transcripts; ``session_results`` every
tool result in full (with its pruned note); ``session_ws_ops`` the working set's operations;
``session_turns`` the token accounting. Messages are ``TEXT`` (``jsonb`` would reorder their
keys) and timestamps double precision (``REAL`` is four bytes on PostgreSQL).
"""

from __future__ import annotations

from holdfast.store import Dialect, Migration

COMPONENT = "session"


def _v1(d: Dialect) -> str:
    return f"""
CREATE TABLE session_virtual (
    id TEXT PRIMARY KEY,
    task_id TEXT,
    created_at {d.float} NOT NULL,
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
    started_at {d.float} NOT NULL,
    start_turn INTEGER NOT NULL,
    ended_at {d.float},
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
    at {d.float} NOT NULL,
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
    cost_usd {d.float},
    latency_s {d.float},
    at {d.float} NOT NULL,
    PRIMARY KEY (vsession_id, turn)
);
"""


_V2 = """
ALTER TABLE session_ws_ops ADD COLUMN op_key TEXT;
CREATE UNIQUE INDEX session_ws_ops_key ON session_ws_ops (vsession_id, op_key)
    WHERE op_key IS NOT NULL;
"""

MIGRATIONS: list[Migration] = [_v1, _V2]
