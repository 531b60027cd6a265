"""The control plane's tables, written once for both dialects (versioned, append-only).

``harness_tasks`` holds each task with its lease, checkpoint, usage and receipt-chain head;
``harness_receipts`` the chains (append-only: triggers refuse ``UPDATE`` and ``DELETE`` on both
backends; deliberate tampering is what the hash chain detects); ``harness_steps`` each named step's
state; ``harness_approvals`` and ``harness_steering`` what people asked for; ``harness_queues``
the running-task limits.
"""

from __future__ import annotations

from holdfast.store import Dialect, Migration

COMPONENT = "harness"


def _append_only(d: Dialect) -> str:
    if d.name == "sqlite":
        return """
    CREATE TRIGGER harness_receipts_no_update BEFORE UPDATE ON harness_receipts
    BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
    CREATE TRIGGER harness_receipts_no_delete BEFORE DELETE ON harness_receipts
    BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;"""
    return """
    CREATE FUNCTION harness_receipts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'receipts are append-only'; END $$;
    CREATE TRIGGER harness_receipts_no_change BEFORE UPDATE OR DELETE ON harness_receipts
    FOR EACH ROW EXECUTE FUNCTION harness_receipts_append_only();"""


def _v1(d: Dialect) -> str:
    return f"""
    CREATE TABLE harness_tasks (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        queue TEXT NOT NULL,
        status TEXT NOT NULL,
        spec TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 10,
        idempotency_key TEXT UNIQUE,
        lease_owner TEXT,
        lease_token TEXT,
        lease_expires {d.float},
        heartbeat_at {d.float},
        run_after {d.float} NOT NULL DEFAULT 0,
        checkpoint TEXT,
        result TEXT,
        error TEXT,
        usage TEXT NOT NULL DEFAULT '{{}}',
        waiting TEXT,
        head_seq {d.bigint} NOT NULL DEFAULT 0,
        head_hash TEXT NOT NULL DEFAULT '',
        head_sig TEXT,
        created_at {d.float} NOT NULL,
        updated_at {d.float} NOT NULL
    );
    CREATE INDEX harness_tasks_ready ON harness_tasks (status, queue, priority, created_at);
    CREATE INDEX harness_tasks_lease ON harness_tasks (status, lease_expires);
    CREATE TABLE harness_receipts (
        task_id TEXT NOT NULL,
        seq {d.bigint} NOT NULL,
        body TEXT NOT NULL,
        hash TEXT NOT NULL,
        sig TEXT,
        key_id TEXT,
        PRIMARY KEY (task_id, seq)
    );{_append_only(d)}
    CREATE TABLE harness_steps (
        task_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        tool TEXT NOT NULL,
        key TEXT NOT NULL,
        idempotent INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        updated_at {d.float} NOT NULL,
        PRIMARY KEY (task_id, name)
    );
    CREATE TABLE harness_approvals (
        id {d.serial_pk},
        task_id TEXT NOT NULL,
        step TEXT NOT NULL,
        purpose TEXT NOT NULL,
        request TEXT NOT NULL,
        decision TEXT,
        decided_by TEXT,
        expires_at {d.float},
        consumed_at {d.float},
        created_at {d.float} NOT NULL
    );
    CREATE INDEX harness_approvals_step ON harness_approvals (task_id, step);
    CREATE TABLE harness_steering (
        id {d.serial_pk},
        task_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at {d.float} NOT NULL,
        consumed_at {d.float}
    );
    CREATE INDEX harness_steering_pending ON harness_steering (consumed_at, task_id);
    CREATE TABLE harness_queues (
        name TEXT PRIMARY KEY,
        max_running INTEGER NOT NULL
    );
    """


def _v2(d: Dialect) -> str:
    """The next task to lease, in the lease's own order: without these the claim sorted every
    queued task on each lease (0.7 ms a lease with 1,000 waiting), with them it reads one entry.
    Only queued tasks are indexed, so finished ones cost the claim nothing. They make the old
    ``(status, queue, priority, created_at)`` index redundant (the lease index serves lookups by
    status), and every change of a task's status paid for it. On PostgreSQL task pages keep
    room, so the receipt-head updates that follow each change stay on their page (HOT updates,
    no index writes)."""
    room = "ALTER TABLE harness_tasks SET (fillfactor = 70);" if d.name == "postgres" else ""
    return f"""
    CREATE INDEX harness_tasks_next ON harness_tasks (priority DESC, created_at, id)
        WHERE status = 'queued';
    CREATE INDEX harness_tasks_next_in_queue
        ON harness_tasks (queue, priority DESC, created_at, id) WHERE status = 'queued';
    DROP INDEX harness_tasks_ready;
    {room}
    """


MIGRATIONS: list[Migration] = [_v1, _v2]
