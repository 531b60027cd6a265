from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.errors import InvalidInput
from holdfast.session import WorkingSet

text = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=30).filter(lambda s: s.strip())


def test_decision_leaves_only_through_supersede() -> None:
    ws = WorkingSet()
    d1 = ws.record_decision("use SQLite", "embedded default")
    d2 = ws.record_decision("use WAL", "concurrent readers")
    assert [d.id for d in ws.live_decisions()] == [d1, d2]
    d3 = ws.record_decision("use Postgres", "many workers", supersedes=[d1])
    assert [d.id for d in ws.live_decisions()] == [d2, d3]
    assert ws.decisions[d1].superseded_by == d3
    with pytest.raises(InvalidInput, match="already superseded by d3"):
        ws.record_decision("again", "x", supersedes=[d1])
    with pytest.raises(InvalidInput, match="no such decision"):
        ws.record_decision("x", "y", supersedes=["d99"])
    assert not hasattr(ws, "remove_decision")


def test_bad_input_is_rejected_without_changing_state() -> None:
    ws = WorkingSet()
    with pytest.raises(InvalidInput):
        ws.add_constraint("   ")
    with pytest.raises(InvalidInput):
        ws.set_status("finished")
    with pytest.raises(InvalidInput):
        ws.resolve_blocker("b1", "nope")
    assert ws.version == 0


def test_sink_sees_every_op_before_apply_and_replay_matches() -> None:
    ops: list[dict[str, Any]] = []
    ws = WorkingSet(sink=ops.append)
    ws.set_goal("ship it", criteria=["tests pass", "docs"])
    ws.add_constraint("no network")
    b = ws.add_blocker("flaky test")
    ws.resolve_blocker(b, "fixed the seed")
    ws.track_file("src/a.py", "write", "new module")
    ws.track_file("src/a.py", "patch")
    ws.add_finding("p95 is 40 ms", trace_id="rlm-1", source="bench")
    ws.set_next_step("write docs")
    assert [o["v"] for o in ops] == list(range(1, len(ops) + 1))
    assert WorkingSet.replay(ops) == ws
    assert ws.files["src/a.py"].action == "patch"
    assert ws.open_blockers() == []
    json.dumps(ws.to_dict())


def _ops_strategy() -> st.SearchStrategy[list[tuple[str, Any]]]:
    action = st.one_of(
        st.tuples(st.just("goal"), text),
        st.tuples(st.just("status"), st.sampled_from(["active", "done", "blocked"])),
        st.tuples(st.just("next"), text),
        st.tuples(st.just("constraint"), text),
        st.tuples(st.just("decision"), st.tuples(text, text, st.booleans())),
        st.tuples(st.just("blocker"), text),
        st.tuples(st.just("resolve"), text),
        st.tuples(st.just("progress"), text),
        st.tuples(st.just("file"), st.tuples(st.sampled_from(["a", "b", "c"]), text)),
        st.tuples(st.just("finding"), text),
    )
    return st.lists(action, max_size=40)


def _run(actions: list[tuple[str, Any]]) -> tuple[WorkingSet, list[dict[str, Any]]]:
    ops: list[dict[str, Any]] = []
    ws = WorkingSet(sink=ops.append)
    for kind, arg in actions:
        if kind == "goal":
            ws.set_goal(arg)
        elif kind == "status":
            ws.set_status(arg)
        elif kind == "next":
            ws.set_next_step(arg)
        elif kind == "constraint":
            ws.add_constraint(arg)
        elif kind == "decision":
            live = [d.id for d in ws.live_decisions()]
            sup = [live[0]] if arg[2] and live else []
            ws.record_decision(arg[0], arg[1], supersedes=sup)
        elif kind == "blocker":
            ws.add_blocker(arg)
        elif kind == "resolve" and ws.blockers:
            ws.resolve_blocker(sorted(ws.blockers)[0], arg)
        elif kind == "progress":
            ws.record_progress(arg)
        elif kind == "file":
            ws.track_file(arg[0], "write", arg[1])
        elif kind == "finding":
            ws.add_finding(arg, trace_id="t")
    return ws, ops


@settings(max_examples=60, deadline=None)
@given(_ops_strategy())
def test_replay_and_serialisation_round_trip(actions: list[tuple[str, Any]]) -> None:
    ws, ops = _run(actions)
    assert WorkingSet.replay(ops) == ws
    assert WorkingSet.from_dict(json.loads(json.dumps(ws.to_dict()))) == ws
    assert ws.version == len(ops)
    superseded = {d.id for d in ws.decisions.values() if not d.live}
    named = {s for d in ws.decisions.values() for s in d.supersedes}
    assert superseded == named


@settings(max_examples=60, deadline=None)
@given(_ops_strategy(), st.randoms(use_true_random=False))
def test_replay_is_idempotent_and_order_free(
    actions: list[tuple[str, Any]], rnd: random.Random
) -> None:
    ws, ops = _run(actions)
    shuffled = list(ops)
    rnd.shuffle(shuffled)
    again = WorkingSet()
    for op in shuffled + ops:  # any order, applied twice
        again.apply(op)
    assert again == ws
