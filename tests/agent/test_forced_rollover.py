"""The forced-roll-over proof: a 200-turn task against a real local OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

from holdfast.lm import get_lm
from holdfast.testing import FakeOpenAIServer

from .helpers import harness, session_of, submit
from .long_task import CONSTRAINT, DECISION, SETTINGS, TURNS, header_of, make_workspace, reply_for


def check_the_proof(tmp_path: Path, server: FakeOpenAIServer, task_id: str, h: object) -> None:
    from holdfast.harness import Harness

    assert isinstance(h, Harness)
    row = h.get(task_id)
    assert row.status == "succeeded", row.error
    assert row.result["result"] == f"ported 20 modules in {TURNS} turns"
    bodies = server.requests
    headers = [header_of(b) for b in bodies]
    vids = {v for v, _, _ in headers}
    assert len(vids) == 1, "one stable virtual session id"
    conts = [c for _, _, c in headers]
    assert conts == sorted(conts), "the continuation index only grows"
    assert conts[-1] >= 5, f"only {conts[-1]} roll-overs"
    turn200 = [b for b in bodies if header_of(b)[1] == 200]
    assert turn200, "a request was sent at turn 200"
    sent = json.dumps(turn200[-1]["messages"])
    assert CONSTRAINT in sent and DECISION in sent
    assert header_of(turn200[-1])[2] >= 5
    assert h.verify(task_id).ok
    vs = session_of(tmp_path, task_id)
    ws = vs.working_set
    assert [c.text for c in ws.constraints.values()] == [CONSTRAINT]
    assert ws.decisions["d1"].text == DECISION and ws.decisions["d1"].live
    assert len(ws.decisions) == 1 + len([t for t in range(25, TURNS, 25)])
    progress = {p.text for p in ws.progress.values()}
    expected = {f"ported part {t} of module {t % 20}" for t in range(5, TURNS, 2) if t % 25}
    expected |= {f"milestone at turn {t}" for t in range(25, TURNS, 25)}
    assert progress == expected, "no progress entry lost"
    last = json.dumps(bodies[-1]["messages"])
    overflow = vs.overflow_path.read_text() if vs.overflow_path.exists() else ""
    for pid, p in ws.progress.items():
        assert f"[{pid}] {p.text}" in last or f"[{pid}] {p.text}" in overflow, pid


def test_forced_rollover_proof(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    with FakeOpenAIServer(reply_for) as server:
        lm = get_lm("openai:fake-model", base_url=server.base_url, api_key="test-key")
        h = harness(tmp_path, lm)
        task = submit(h, "Port the 20 modules of the ledger", ws, **SETTINGS)
        h.run_until_idle()
        check_the_proof(tmp_path, server, task.id, h)
        assert len(server.requests) == TURNS
