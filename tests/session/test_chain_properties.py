"""Property tests of the whole chain: turns, working-set changes, pruning and roll-overs."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.lm.types import Usage
from holdfast.session import (
    RolloverPolicy,
    SQLSessionStore,
    VirtualSession,
    dumps_prompt,
    open_session_store,
)

action = st.one_of(
    st.tuples(st.just("turn"), st.integers(10, 3000)),
    st.tuples(st.just("constraint"), st.integers(0, 10**6)),
    st.tuples(st.just("decision"), st.booleans()),
    st.tuples(st.just("progress"), st.integers(0, 10**6)),
    st.tuples(st.just("prune"), st.integers(0, 50)),
    st.tuples(st.just("reopen"), st.just(0)),
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def url_for(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], str]]:
    """Where an example's sessions live: a SQLite file in its directory, or one PostgreSQL
    database shared by every example (each example's session has its own id)."""
    if request.param == "sqlite":
        yield lambda tmp: str(tmp / "h.db")
        return
    url = request.getfixturevalue("pg_cluster").create_database("chain")
    yield lambda tmp: url


def _turn(vs: VirtualSession, size: int) -> None:
    plan = vs.begin_turn()
    n = vs.turn + 1
    call = {"id": f"c{n}", "type": "function", "function": {"name": "read", "arguments": "{}"}}
    vs.record_assistant(
        {"role": "assistant", "content": f"turn {n}", "tool_calls": [call]},
        estimate=plan.estimate,
        usage=Usage(input_tokens=plan.estimate),
    )
    vs.record_tool_result(f"c{n}", "read", f"out {n} " + "w" * size)


@settings(max_examples=30, deadline=None)
@given(st.lists(action, min_size=1, max_size=60), st.integers(0, 3))
def test_nothing_is_lost_and_prompts_stay_bounded(
    url_for: Callable[[Path], str], actions: list[tuple[str, Any]], keep: int
) -> None:
    opened: list[SQLSessionStore] = []

    def store() -> SQLSessionStore:
        opened.append(open_session_store(url_for(Path(tmp))))
        return opened[-1]

    with tempfile.TemporaryDirectory() as tmp:
        try:
            _check_chain(store, Path(tmp), actions, keep)
        finally:
            for s in opened:
                s.close()


def _check_chain(
    store: Callable[[], SQLSessionStore], tmp: Path, actions: list[tuple[str, Any]], keep: int
) -> None:
    policy = RolloverPolicy(context_window=4000, keep_last_turns=keep)
    vs = VirtualSession.create(
        store(),
        request="task",
        system_prompt="sys",
        policy=policy,
        state_dir=tmp / "state",
    )
    vid = vs.id
    last_cont = 0
    for kind, arg in actions:
        ws = vs.working_set
        if kind == "turn":
            _turn(vs, arg)
        elif kind == "constraint":
            ws.add_constraint(f"K{arg}")
        elif kind == "decision":
            live = [d.id for d in ws.live_decisions()]
            ws.record_decision(
                f"D{len(ws.decisions)}", "why", supersedes=live[:1] if arg and live else None
            )
        elif kind == "progress":
            ws.record_progress(f"P{arg}")
        elif kind == "prune":
            rid = f"r{arg}"
            if vs.store.result(vid, rid) is not None:
                vs.prune([rid], "gone")
        else:
            before = dumps_prompt(vs.build_prompt())
            vs = VirtualSession(store(), vid)
            assert dumps_prompt(vs.build_prompt()) == before
        plan = vs.begin_turn()
        text = dumps_prompt(plan.messages)
        assert vs.id == vid and vs.continuation >= last_cont
        last_cont = vs.continuation
        assert plan.estimate <= policy.context_window
        for c in vs.working_set.constraints.values():
            assert f"[{c.id}] {c.text}" in text
        for d in vs.working_set.live_decisions():
            assert f"[{d.id}] {d.text}" in text
        overflow = vs.overflow_path.read_text() if vs.overflow_path.exists() else ""
        for p in vs.working_set.progress.values():
            assert f"[{p.id}] {p.text}" in text or f"[{p.id}] {p.text}" in overflow
