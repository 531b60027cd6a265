from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from holdfast.errors import InvalidInput, ModelFacingError
from holdfast.lm.types import Usage
from holdfast.session import (
    ContextWindowTooSmall,
    FlushItem,
    RecallHit,
    RolloverPolicy,
    SQLSessionStore,
    StaleSessionWrite,
    VirtualSession,
    dumps_prompt,
)

OpenStore = Callable[[], SQLSessionStore]  # the ``open_store`` fixture of conftest.py


def _turn(vs: VirtualSession, n: int, payload_chars: int = 2000) -> str:
    plan = vs.begin_turn()
    call = {"id": f"call{n}", "type": "function", "function": {"name": "read", "arguments": "{}"}}
    vs.record_assistant(
        {"role": "assistant", "content": None, "tool_calls": [call]},
        estimate=plan.estimate,
        usage=Usage(input_tokens=plan.estimate, output_tokens=10),
    )
    return vs.record_tool_result(f"call{n}", "read", f"output {n} " + "z" * payload_chars)


def _make(open_store: OpenStore, tmp_path: Path, **policy: object) -> VirtualSession:
    pol = RolloverPolicy(**{"context_window": 8000, "keep_last_turns": 2, **policy})  # type: ignore[arg-type]
    return VirtualSession.create(
        open_store(),
        request="Port the parser",
        system_prompt="You are a careful engineer.",
        policy=pol,
        state_dir=tmp_path / "state",
    )


def test_rolls_over_under_a_stable_id_and_keeps_the_working_set(
    open_store: OpenStore, tmp_path: Path
) -> None:
    vs = _make(open_store, tmp_path)
    vid = vs.id
    assert vid.startswith("vsession-") and vs.physical_key == f"{vid}:cont-0"
    vs.working_set.add_constraint("never edit generated files")
    vs.working_set.record_decision("use a recursive-descent parser", "error messages")
    for n in range(1, 40):
        _turn(vs, n)
    assert vs.id == vid
    assert vs.continuation >= 3
    phys = vs.store.physical(vid)
    assert [p.cont for p in phys] == list(range(vs.continuation + 1))
    assert all(p.end_reason and "limit" in p.end_reason for p in phys[:-1])
    prompt = dumps_prompt(vs.build_prompt())
    assert "never edit generated files" in prompt and "recursive-descent" in prompt
    assert "Port the parser" in prompt
    turns = vs.store.turns(vid)
    assert len(turns) == 39
    assert max(t["estimate_tokens"] for t in turns) <= vs.policy.context_window


def test_seed_carries_last_turns_verbatim(open_store: OpenStore, tmp_path: Path) -> None:
    vs = _make(open_store, tmp_path, max_turns=5)
    rids = [_turn(vs, n, 100) for n in range(1, 6)]
    plan = vs.begin_turn()
    assert plan.rolled_over and vs.continuation == 1
    text = dumps_prompt(plan.messages)
    assert f"[{rids[-1]}] output 5" in text and f"[{rids[-2]}] output 4" in text
    assert "output 3 " not in text
    assert "turn limit 5 reached" in text
    assert "3 earlier turns" in text


def test_prune_and_recall_keep_the_full_text(open_store: OpenStore, tmp_path: Path) -> None:
    vs = _make(open_store, tmp_path)
    rid = _turn(vs, 1, 300)
    vs.prune([rid], "old listing of src/")
    text = dumps_prompt(vs.build_prompt())
    assert "zzzz" not in text and f"[{rid} pruned] old listing of src/" in text
    assert vs.recall(rid).startswith("output 1 zzz")
    with pytest.raises(ModelFacingError, match="r99"):
        vs.prune(["r99"], "x")
    with pytest.raises(ModelFacingError):
        vs.recall("nope")
    c = vs.working_set.add_constraint("keep it short")
    assert "keep it short" in vs.recall(c)


def test_long_results_are_shown_in_part_with_a_pointer(
    open_store: OpenStore, tmp_path: Path
) -> None:
    vs = _make(open_store, tmp_path)
    rid = _turn(vs, 1, 20_000)
    text = dumps_prompt(vs.build_prompt())
    assert f'context_recall(\\"{rid}\\", offset=' in text
    page = vs.recall(rid, offset=3000, limit_chars=100)
    assert len(page.split("\n")[0]) == 100 and "more:" in page


def test_resume_rebuilds_the_exact_prompt(open_store: OpenStore, tmp_path: Path) -> None:
    vs = _make(open_store, tmp_path)
    vs.working_set.set_goal("port it", criteria=["green"])
    for n in range(1, 25):
        _turn(vs, n)
        if n == 10:
            vs.prune([f"r{3}"], "not needed")
            vs.working_set.add_blocker("grammar ambiguity")
    before = dumps_prompt(vs.begin_turn().messages)
    reopened = VirtualSession(open_store(), vs.id)
    after = dumps_prompt(reopened.begin_turn().messages)
    assert after == before
    assert reopened.continuation == vs.continuation and reopened.turn == vs.turn


def test_pending_tool_calls_after_a_crash(open_store: OpenStore, tmp_path: Path) -> None:
    vs = _make(open_store, tmp_path)
    plan = vs.begin_turn()
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "t", "arguments": "{}"}}
        for i in range(2)
    ]
    vs.record_assistant(
        {"role": "assistant", "content": None, "tool_calls": calls},
        estimate=plan.estimate,
        usage=None,
    )
    vs.record_tool_result("c0", "t", "done")
    reopened = VirtualSession(vs.store, vs.id)
    assert [c["id"] for c in reopened.pending_tool_calls()] == ["c1"]


def test_flush_is_idempotent_and_fail_open(open_store: OpenStore, tmp_path: Path) -> None:
    written: list[FlushItem] = []
    fail = {"on": True}

    def flush(items: list[FlushItem]) -> None:
        if fail["on"]:
            raise RuntimeError("memory offline")
        written.extend(items)

    vs = _make(open_store, tmp_path, max_turns=2)
    vs.flush_fn = flush
    vs.recall_fn = lambda qs: [RecallHit("parsers need fuzzing", "MEMORY.md#12")]
    vs.working_set.set_goal("port the parser")
    vs.working_set.record_decision("fuzz the parser", "past bugs")
    _turn(vs, 1, 10)
    _turn(vs, 2, 10)
    plan = vs.begin_turn()
    text = dumps_prompt(plan.messages)
    assert plan.rolled_over and "memory flush before this roll-over failed" in text
    assert "parsers need fuzzing (source: MEMORY.md#12)" in text
    fail["on"] = False
    _turn(vs, 3, 10)
    _turn(vs, 4, 10)
    vs.begin_turn()
    assert [i.key for i in written] == ["decision:d1"]
    _turn(vs, 5, 10)
    _turn(vs, 6, 10)
    vs.begin_turn()
    assert [i.key for i in written] == ["decision:d1"]  # nothing flushed twice


def test_two_writers_cannot_both_roll_over(open_store: OpenStore, tmp_path: Path) -> None:
    vs = _make(open_store, tmp_path, max_turns=1)
    _turn(vs, 1, 10)
    other = VirtualSession(vs.store, vs.id)
    vs.begin_turn()
    with pytest.raises(StaleSessionWrite):
        other.begin_turn()


def test_bad_input(open_store: OpenStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        RolloverPolicy(threshold=1.5)
    with pytest.raises(ContextWindowTooSmall, match="exceed the roll-over limit"):
        VirtualSession.create(
            open_store(),
            request="x" * 4000,
            system_prompt="s",
            policy=RolloverPolicy(context_window=1000),
        )
    with pytest.raises(InvalidInput):
        VirtualSession.create(open_store(), request=" ", system_prompt="s")
    with pytest.raises(InvalidInput, match="no virtual session"):
        VirtualSession(open_store(), "vsession-missing")


def test_token_accounting_uses_provider_usage(open_store: OpenStore, tmp_path: Path) -> None:
    vs = _make(open_store, tmp_path)
    plan = vs.begin_turn()
    vs.record_assistant(
        {"role": "assistant", "content": "hi"},
        estimate=plan.estimate,
        usage=Usage(input_tokens=plan.estimate * 2, output_tokens=3, cost_usd=0.01),
    )
    row = vs.store.turns(vs.id)[0]
    assert row["input_tokens"] == plan.estimate * 2 and row["cost_usd"] == 0.01
    assert vs.meter.ratio == 2.0
    assert vs.begin_turn().estimate >= 2 * plan.estimate
    json.dumps(row)


def test_auto_prune_policy_keeps_one_session_bounded(open_store: OpenStore, tmp_path: Path) -> None:
    from holdfast.session import HeuristicMemoryPolicy

    vs = _make(open_store, tmp_path)
    vs.memory_policy = HeuristicMemoryPolicy(prune_at=0.5, prune_min_tokens=100, prune_min_age=2)
    for n in range(1, 30):
        _turn(vs, n, 1500)
    assert vs.continuation == 0
    text = dumps_prompt(vs.build_prompt())
    assert "[r1 pruned] auto-pruned read output of turn 1" in text
    assert vs.recall("r1").startswith("output 1 ")


def test_a_notice_gives_one_last_turn_before_the_rollover(
    open_store: OpenStore, tmp_path: Path
) -> None:
    vs = _make(open_store, tmp_path, max_turns=3)
    for n in range(1, 4):
        _turn(vs, n, 10)
    plan = vs.begin_turn(notice="session ends after this turn")
    assert not plan.rolled_over and plan.last_in_session
    assert plan.messages[-2] == {"role": "user", "content": "session ends after this turn"}
    _turn_after = vs.begin_turn  # the same turn asked again: the notice is not added twice
    again = _turn_after(notice="session ends after this turn")
    assert again.last_in_session and dumps_prompt(again.messages).count("session ends") == 1
    vs.record_assistant(
        {"role": "assistant", "content": "noted"}, estimate=again.estimate, usage=None
    )
    final = vs.begin_turn(notice="session ends after this turn")
    assert final.rolled_over and vs.continuation == 1


def test_every_physical_session_gets_its_own_notice(open_store: OpenStore, tmp_path: Path) -> None:
    vs = _make(open_store, tmp_path, max_turns=2, keep_last_turns=3)
    notices = 0
    for n in range(1, 12):
        plan = vs.begin_turn(notice="ending soon")
        notices += plan.last_in_session
        call = {"id": f"k{n}", "type": "function", "function": {"name": "t", "arguments": "{}"}}
        vs.record_assistant(
            {"role": "assistant", "content": None, "tool_calls": [call]},
            estimate=plan.estimate,
            usage=None,
        )
        vs.record_tool_result(f"k{n}", "t", "ok")
    assert vs.continuation >= 3
    assert notices >= vs.continuation


def test_without_a_state_dir_the_overflow_file_follows_the_running_worker(
    open_store: OpenStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session resumed by a worker with another Holdfast home (another machine) writes its
    overflow file under that home, not under a path recorded by the first worker."""
    monkeypatch.setenv("HOLDFAST_HOME", str(tmp_path / "home-a"))
    vs = VirtualSession.create(
        open_store(), request="Port the parser", system_prompt="You are a careful engineer."
    )
    assert vs.overflow_path.is_relative_to(tmp_path / "home-a")
    monkeypatch.setenv("HOLDFAST_HOME", str(tmp_path / "home-b"))
    resumed = VirtualSession(open_store(), vs.id)
    assert resumed.overflow_path == tmp_path / "home-b" / "sessions" / vs.id / (
        "working-set-overflow.md"
    )
    pinned = _make(open_store, tmp_path)
    assert VirtualSession(open_store(), pinned.id).state_dir == tmp_path / "state"
