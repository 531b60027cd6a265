from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.session import ContextWindowTooSmall, WorkingSet, render_working_set, write_overflow
from holdfast.session.tokens import estimate_text_tokens


def _big_ws(progress: int = 60) -> WorkingSet:
    ws = WorkingSet()
    ws.set_goal("migrate the billing service", criteria=["all tests green"])
    ws.add_constraint("never touch the production database")
    d1 = ws.record_decision("keep the v1 API", "clients depend on it")
    ws.record_decision("add a v2 API beside it", "new fields", supersedes=[d1])
    ws.add_blocker("staging is down")
    for i in range(progress):
        ws.record_progress(f"step {i}: ported module number {i} and ran its tests")
    for i in range(10):
        ws.track_file(f"src/mod{i}.py", "write")
    ws.add_finding("latency is dominated by the ledger query", trace_id="rlm-7")
    ws.set_next_step("port the invoice module")
    return ws


def test_everything_fits_when_budget_is_large() -> None:
    ws = _big_ws(5)
    out = render_working_set(ws, 10_000)
    assert out.overflow_ids == ()
    assert "[c1] never touch the production database" in out.text
    assert "[d2] add a v2 API beside it; why: new fields (supersedes d1)" in out.text
    assert "Superseded decisions:\n- [d1] keep the v1 API (superseded by d2)" in out.text
    assert "trace rlm-7" in out.text
    assert out.tokens == estimate_text_tokens(out.text)


def test_overflow_keeps_core_and_points_to_every_moved_item(tmp_path: Path) -> None:
    ws = _big_ws(60)
    path = tmp_path / "overflow.md"
    out = render_working_set(ws, 400, overflow_path=path)
    assert out.tokens <= 400
    assert "never touch the production database" in out.text
    assert "staging is down" in out.text
    assert "p60" in out.text  # newest progress shown first
    assert "p1" in out.overflow_ids
    assert str(path) in out.text and "ids: " in out.text
    assert write_overflow(path, out, "vsession-x")
    body = path.read_text()
    assert "step 0: ported module number 0" in body
    assert not write_overflow(path, out, "vsession-x")  # unchanged content is not rewritten


def test_context_too_small_names_the_budget() -> None:
    ws = _big_ws(0)
    with pytest.raises(ContextWindowTooSmall, match="budget is 20 tokens") as info:
        render_working_set(ws, 20)
    assert info.value.to_dict()["details"]["budget_tokens"] == 20


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 80),
    st.integers(0, 12),
    st.integers(0, 6),
    st.integers(150, 3000),
)
def test_nothing_is_dropped_silently(progress: int, files: int, findings: int, budget: int) -> None:
    ws = WorkingSet()
    ws.set_goal("g")
    ws.add_constraint("c")
    for i in range(progress):
        ws.record_progress(f"progress entry {i} " + "x" * (i % 7))
    for i in range(files):
        ws.track_file(f"f{i}.txt", "read")
    for i in range(findings):
        ws.add_finding(f"finding {i}", trace_id=f"t{i}")
    out = render_working_set(ws, budget)
    assert out.tokens <= budget
    moved = set(out.overflow_ids)
    every = [*ws.progress, *(f"file:{p}" for p in ws.files), *ws.findings]
    for item_id in every:
        if item_id in moved:
            continue
        needle = f"- {item_id[5:]} [" if item_id.startswith("file:") else f"[{item_id}]"
        assert needle in out.text, item_id
    if moved:
        assert f"Overflow: {len(moved)} older items" in out.text
