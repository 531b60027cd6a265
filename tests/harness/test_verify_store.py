"""Receipts end to end on real stores: every writer signs, verify reads one snapshot, and direct
database tampering (by someone with write access but not the key) is named, never raised."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness_util import LOAD_KINDS, open_harness, scripted

from holdfast.harness import (
    Anchor,
    Ed25519Signer,
    Harness,
    StepContext,
    WorkerSettings,
    generate_key,
    load_signer,
)
from holdfast.harness.receipts import receipt_hash
from holdfast.harness.rows import Draft

FAST = WorkerSettings(poll_s=0.05, steer_poll_s=0.05, lease_ttl_s=5)
ALLOW_THEN_ASK = [
    {"tool": "counter.add", "action": "allow"},
    {"tool": "counter.add_unkeyed", "action": "ask"},
]
TWO_STEPS = [
    {"tool": "counter.add", "args": {"counter": "c"}},
    {"tool": "counter.add_unkeyed", "args": {"counter": "c"}},
]


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A signing key configured the documented way, for every writer in this process."""
    path = tmp_path / "keys" / "receipt.key"
    generate_key(path, "ed25519")
    monkeypatch.setenv("HOLDFAST_RECEIPT_KEY", str(path))
    return path


def tamper(url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Write to the database directly, past the append-only triggers, as an attacker would."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")  # triggers off
            conn.execute(sql.replace("?", "%s"), params)
        return
    lite = sqlite3.connect(url)
    try:
        lite.execute("DROP TRIGGER IF EXISTS harness_receipts_no_update")
        lite.execute("DROP TRIGGER IF EXISTS harness_receipts_no_delete")
        lite.execute(sql, params)
        lite.commit()
    finally:
        lite.close()


def run_signed_lifecycle(h: Harness, workspace: Path) -> list[str]:
    """Drive tasks through every writer: submit, steer, stop, pause, resume, approve, deny,
    worker steps, the reaper and reconciliation. Returns the task ids."""
    ids = []
    a = h.submit(scripted(workspace, TWO_STEPS, rules=ALLOW_THEN_ASK), by="cli")
    h.steer(a.id, "message", "mind the [red]budget[/red]", by="cli")
    h.run_until_idle(FAST)
    assert h.get(a.id).status == "waiting_approval"
    h.approve(a.id, "002-counter.add_unkeyed", by="ann")
    h.run_until_idle(FAST)
    assert h.get(a.id).status == "succeeded"
    ids.append(a.id)

    b = h.submit(scripted(workspace, TWO_STEPS, rules=ALLOW_THEN_ASK))
    h.run_until_idle(FAST)
    h.deny(b.id, "002-counter.add_unkeyed", by="bob")
    h.run_until_idle(FAST)
    assert h.get(b.id).status == "failed"
    ids.append(b.id)

    c = h.submit({"kind": "noop"})
    h.pause(c.id)
    h.resume(c.id)
    h.stop(c.id)
    assert h.get(c.id).status == "cancelled"
    ids.append(c.id)

    d = h.submit(scripted(workspace, [{"tool": "counter.add", "args": {"counter": "d"}}]))
    got = h.store.lease("doomed", None, ttl_s=-1.0)  # a lease that has already run out
    assert got is not None and got[0].id == d.id
    ctx = StepContext(
        store=h.store, task=got[0], token=got[1], kind=h.registry.get("scripted"), worker_id="x"
    )

    def crash(key: str) -> Any:
        raise KeyboardInterrupt  # the worker dies inside the effect: no result receipt

    with pytest.raises(KeyboardInterrupt):
        ctx.step("001-counter.add", "counter.add", {"counter": "d"}, crash)
    assert h.store.reap() == [d.id]
    h.run_until_idle(FAST)
    assert h.get(d.id).status == "succeeded"
    ids.append(d.id)
    return ids


def test_every_writer_signs_with_the_configured_key(
    store_url: str, workspace: Path, key: Path
) -> None:
    with open_harness(store_url) as h:
        assert h.signer is not None and h.signer.can_sign
        ids = run_signed_lifecycle(h, workspace)
        kinds: set[str] = set()
        for tid in ids:
            rows = h.receipts(tid)
            assert all(r.sig and r.key_id == h.signer.key_id for r in rows)
            kinds |= {r.data()["kind"] for r in rows}
            result = h.verify(tid, require_signatures=True)
            assert result.ok, result.reason
            assert result.signed == result.count == len(rows)
        assert kinds >= {
            "submitted", "steer", "leased", "intent", "gate", "result", "checkpoint",
            "approval_requested", "approval", "approval_used", "steering_delivered",
            "lease_expired", "reconcile", "succeeded", "failed",
        }  # fmt: skip
    # an auditor holding only the public key verifies the same chains
    public = load_signer(key).public_only()  # type: ignore[attr-defined]
    with open_harness(store_url, signer=public) as auditor:
        assert all(auditor.verify(tid, require_signatures=True).ok for tid in ids)
        with pytest.raises(Exception, match="public key"):
            auditor.submit({"kind": "noop"})


def test_an_unsigned_writer_is_caught_when_a_key_is_used(
    store_url: str, workspace: Path, key: Path
) -> None:
    with open_harness(store_url) as h:
        t = h.submit({"kind": "noop"})
        with open_harness(store_url, signer=None) as rogue:  # a process without the key
            rogue.steer(t.id, "message", "hello")
        result = h.verify(t.id)
        assert not result.ok and result.bad_seq == 2 and "not signed" in result.reason
        assert h.verify(t.id, signer=None).ok  # the hashes alone still hold


def finished_task(h: Harness, workspace: Path) -> str:
    t = h.submit(scripted(workspace, TWO_STEPS))
    h.run_until_idle(FAST)
    assert h.get(t.id).status == "succeeded"
    assert h.verify(t.id).ok
    return t.id


ROW_TAMPERING = {
    "status": ("UPDATE harness_tasks SET status = 'failed' WHERE id = ?", "status"),
    "result": ("UPDATE harness_tasks SET result = '{\"steps\": 99}' WHERE id = ?", "result"),
    "error": (
        'UPDATE harness_tasks SET error = \'{"code": "x"}\' WHERE id = ?',
        "error",
    ),
    "checkpoint": (
        "UPDATE harness_tasks SET checkpoint = '{\"next\": 0}' WHERE id = ?",
        "checkpoint",
    ),
    "policy": (
        "UPDATE harness_tasks SET spec = replace(spec, '\"allow\"', '\"ask\"') WHERE id = ?",
        "spec",
    ),
    "step_deleted": (
        "DELETE FROM harness_steps WHERE task_id = ? AND name = '001-counter.add'",
        "gone",
    ),
    "step_result": (
        "UPDATE harness_steps SET result = '7' WHERE task_id = ? AND name = '001-counter.add'",
        "stored result of step",
    ),
    "step_status": (
        "UPDATE harness_steps SET status = 'failed' WHERE task_id = ? AND name = '001-counter.add'",
        "stored as",
    ),
    "step_forged": (
        "INSERT INTO harness_steps (task_id, name, status, tool, key, idempotent, result, "
        "updated_at) VALUES (?, '003-counter.add', 'done', 'counter.add', 'k', 1, '1', 0)",
        "no receipt records it",
    ),
    "head_moved": ("UPDATE harness_tasks SET head_seq = head_seq - 1 WHERE id = ?", "head"),
    "receipt_deleted": (
        "DELETE FROM harness_receipts WHERE task_id = ? AND seq = 3",
        "missing",
    ),
}


@pytest.mark.parametrize("what", sorted(ROW_TAMPERING))
def test_tampering_with_the_row_steps_or_chain_is_named(
    store_url: str, workspace: Path, what: str
) -> None:
    sql, why = ROW_TAMPERING[what]
    with open_harness(store_url) as h:
        tid = finished_task(h, workspace)
        tamper(store_url, sql, (tid,))
        result = h.verify(tid)
        assert not result.ok, what
        assert why is None or why in result.reason, result.reason


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        '{"kind": "result"}',
        "[" * 50_000,
        '{"actor":"harness","kind":"result","payload":{},"prev":"","seq":3,"step":null,'
        '"task":"TASK","ts":1.0}',
    ],
)
def test_a_receipt_that_is_not_a_receipt_is_the_first_bad_one_in_the_cli(
    store_url: str, workspace: Path, body: str
) -> None:
    from click.testing import CliRunner

    from holdfast.cli.main import cli

    with open_harness(store_url) as h:
        tid = finished_task(h, workspace)
        body = body.replace("TASK", tid)
        tamper(
            store_url,
            "UPDATE harness_receipts SET body = ?, hash = ? WHERE task_id = ? AND seq = 3",
            (body, receipt_hash(body), tid),
        )
    runner = CliRunner()
    out = runner.invoke(cli, ["receipts", "verify", tid, "--database-url", store_url])
    assert out.exit_code == 3, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
    assert "BROKEN at receipt 3" in out.output
    for command in (["task", "logs", tid], ["receipts", "show", tid], ["task", "show", tid]):
        shown = runner.invoke(cli, [*command, "--database-url", store_url])
        assert shown.exit_code == 0, (command, shown.output)


def test_bytes_that_are_not_utf8_are_named_on_sqlite(tmp_path: Path, workspace: Path) -> None:
    url = str(tmp_path / "h.db")
    with open_harness(url) as h:
        tid = finished_task(h, workspace)
        conn = sqlite3.connect(url)
        conn.execute("DROP TRIGGER harness_receipts_no_update")
        conn.execute(
            "UPDATE harness_receipts SET body = CAST(x'7b22ff22' AS TEXT) "
            "WHERE task_id = ? AND seq = 2",
            (tid,),
        )
        conn.execute(
            "UPDATE harness_receipts SET sig = x'00ff' WHERE task_id = ? AND seq = 3", (tid,)
        )
        conn.commit()
        conn.close()
        result = h.verify(tid)
        assert not result.ok and result.bad_seq == 2 and "UTF-8" in result.reason


def test_a_truncated_chain_with_the_head_moved_is_caught_by_the_key_or_an_anchor(
    store_url: str, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_harness(store_url, signer=None) as h:
        tid = finished_task(h, workspace)
        _, anchor = h.export_anchor(tid)
        assert anchor is not None and anchor.sig is None and anchor.status == "succeeded"
        n = anchor.seq
        cut = h.receipts(tid)[n - 2]
        # drop the terminal receipt and move the head (and the row) back to the state the task
        # really was in one receipt earlier: a consistent rollback
        tamper(
            store_url, "DELETE FROM harness_receipts WHERE task_id = ? AND seq > ?", (tid, cut.seq)
        )
        tamper(
            store_url,
            "UPDATE harness_tasks SET head_seq = ?, head_hash = ?, status = 'running', "
            "result = NULL WHERE id = ?",
            (cut.seq, cut.hash, tid),
        )
        # what the database alone can say without a key: nothing is wrong (documented)
        assert h.verify(tid).ok
        caught = h.verify(tid, anchors=[anchor])
        assert not caught.ok and caught.bad_seq == cut.seq + 1 and "anchor" in caught.reason


def test_with_a_key_truncation_fails_even_without_an_anchor(
    store_url: str, workspace: Path, key: Path
) -> None:
    with open_harness(store_url) as h:
        tid = finished_task(h, workspace)
        rows = h.receipts(tid)
        cut = rows[-2]
        tamper(
            store_url, "DELETE FROM harness_receipts WHERE task_id = ? AND seq > ?", (tid, cut.seq)
        )
        tamper(
            store_url,
            "UPDATE harness_tasks SET head_seq = ?, head_hash = ?, head_sig = ?, "
            "status = 'running', result = NULL WHERE id = ?",
            (cut.seq, cut.hash, cut.sig, tid),  # the best signature the attacker can find
        )
        result = h.verify(tid)
        assert not result.ok and "head" in result.reason


@pytest.fixture
def appending(store_url: str) -> Iterator[tuple[Harness, str, threading.Event]]:
    """A task whose chain grows all the time, from another connection."""
    h = open_harness(store_url)
    t = h.submit({"kind": "noop"})
    stop = threading.Event()
    writer = open_harness(store_url)

    def append() -> None:
        n = 0
        while not stop.is_set():
            writer.store.append_receipt(t.id, None, Draft("note", {"n": n}, actor="runner"))
            n += 1

    th = threading.Thread(target=append, daemon=True)
    th.start()
    try:
        yield h, t.id, stop
    finally:
        stop.set()
        th.join(10)
        writer.close()
        h.close()


def test_verify_reads_one_snapshot_while_receipts_are_appended(
    appending: tuple[Harness, str, threading.Event],
) -> None:
    h, tid, _ = appending
    # on a loaded machine the writer thread can be starved for a while: keep verifying (at least
    # 30 times, at most 60 s) until the chain has grown under the verifier several times over
    counts: list[int] = []
    deadline = time.monotonic() + 60
    while len(counts) < 30 or (counts[-1] - counts[0] < 3 and time.monotonic() < deadline):
        result = h.verify(tid)
        assert result.ok, result.reason
        counts.append(result.count)
    assert counts[-1] - counts[0] >= 3  # the chain really grew while it was verified


def test_export_and_verify_against_anchors_in_the_cli(
    store_url: str, workspace: Path, key: Path, tmp_path: Path, holdfast_cli: Any
) -> None:
    from click.testing import CliRunner

    from holdfast.cli.main import cli

    runner = CliRunner()
    db = ["--database-url", store_url]
    with open_harness(store_url) as h:
        tid = finished_task(h, workspace)
        other = h.submit({"kind": "noop"}).id
    anchors = tmp_path / "anchors.jsonl"
    out = runner.invoke(cli, ["receipts", "export", tid, other, "-o", str(anchors), *db])
    assert out.exit_code == 0, out.output
    lines = anchors.read_text().splitlines()
    assert len(lines) == 2
    first = Anchor.from_dict(json.loads(lines[0]))
    assert first.task == tid and first.sig and first.key_id
    ok = runner.invoke(cli, ["receipts", "verify", "--anchor", str(anchors), "--json", *db])
    assert ok.exit_code == 0, ok.output
    assert [r["anchors"] for r in json.loads(ok.output)] == [1, 1]
    # a forged anchor (no key) is refused
    forged = Anchor(tid, first.seq, "0" * 64, "succeeded", 1.0).to_dict()
    (tmp_path / "forged.jsonl").write_text(json.dumps(forged) + "\n")
    bad = runner.invoke(
        cli, ["receipts", "verify", tid, "--anchor", str(tmp_path / "forged.jsonl"), *db]
    )
    assert bad.exit_code == 3 and "not signed" in bad.output
    # a task deleted from the store is broken when its anchor is checked
    tamper(store_url, "DELETE FROM harness_tasks WHERE id = ?", (other,))
    gone = runner.invoke(cli, ["receipts", "verify", "--anchor", str(anchors), *db])
    assert gone.exit_code == 3 and "gone from the store" in gone.output
    # signatures required but no key at hand: a usage error, not a pass
    nokey = holdfast_cli("receipts", "verify", tid, "--no-key", "--require-signatures", *db)
    assert nokey.code == 2 and "needs the key" in nokey.err
    assert len(nokey.err.strip().splitlines()) == 1


def test_keygen_writes_the_key_every_writer_then_uses(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from holdfast.cli.main import cli

    runner = CliRunner()
    made = runner.invoke(cli, ["receipts", "keygen"])
    assert made.exit_code == 0 and "receipt.key" in made.output
    again = runner.invoke(cli, ["receipts", "keygen"])
    assert again.exit_code != 0
    url = str(tmp_path / "h.db")
    submitted = runner.invoke(cli, ["task", "submit", "noop", *LOAD_KINDS, "--database-url", url])
    tid = submitted.output.strip()
    with open_harness(url) as h:
        assert isinstance(h.signer, Ed25519Signer)
        rows = h.receipts(tid)
        assert rows[0].sig and h.verify(tid, require_signatures=True).ok
