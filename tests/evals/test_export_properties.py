"""Properties of the conversation builder and the eval store's round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.evals.export import conversations
from holdfast.evals.store import EvalStore, TaskResult

texts = st.text(min_size=1, max_size=30)


def _call(messages: list[dict[str, Any]], reply: str) -> dict[str, Any]:
    return {"role": "root", "messages": messages, "reply": {"text": reply, "tool_calls": []}}


@settings(deadline=None)
@given(texts, st.lists(st.tuples(texts, texts), min_size=1, max_size=8))
def test_calls_that_extend_each_other_merge_into_one_conversation(
    system: str, turns: list[tuple[str, str]]
) -> None:
    history: list[dict[str, Any]] = [{"role": "system", "content": system}]
    calls = []
    for user, reply in turns:
        history.append({"role": "user", "content": user})
        calls.append(_call(list(history), reply))
        history.append({"role": "assistant", "content": reply})
    (conv,) = conversations(calls)
    assert conv["messages"] == history
    assert len(conv["token_data"]) == len(turns)


@settings(deadline=None)
@given(st.lists(st.tuples(texts, texts, texts), min_size=1, max_size=8))
def test_rebuilt_prompts_are_rows_of_their_own_and_nothing_is_lost(
    turns: list[tuple[str, str, str]],
) -> None:
    """An agent's prompts end with a fresh working-set block: every call is its own row."""
    calls = []
    for i, (user, block, reply) in enumerate(turns):
        msgs = [
            {"role": "system", "content": "s"},
            {"role": "user", "content": f"{i}:{user}"},
            {"role": "user", "content": f"## Working set {i} {block}"},
        ]
        calls.append(_call(msgs, reply))
    convs = conversations(calls)
    assert len(convs) == len(turns)
    for conv, (_, _, reply) in zip(convs, turns, strict=True):
        assert conv["messages"][-1] == {"role": "assistant", "content": reply}


results = st.builds(
    TaskResult,
    task_id=texts,
    status=st.sampled_from(["ok", "error", "does_not_fit", "budget_exceeded"]),
    score=st.one_of(st.none(), st.floats(0, 1)),
    input_tokens=st.integers(0, 10**9),
    output_tokens=st.integers(0, 10**9),
    usd=st.floats(0, 1000),
    wall_s=st.floats(0, 10**5),
    iterations=st.integers(0, 1000),
    trace_id=st.one_of(st.none(), texts),
    answer=st.one_of(st.none(), texts, st.dictionaries(texts, st.integers(), max_size=3)),
    gold=st.one_of(texts, st.lists(st.lists(texts, min_size=2, max_size=2), max_size=3)),
    scorer=texts,
    details=st.dictionaries(texts, st.one_of(st.integers(), texts), max_size=3),
)


@settings(
    deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(results, min_size=1, max_size=5))
def test_results_and_calls_round_trip_through_the_store(
    tmp_path: Path, rs: list[TaskResult]
) -> None:
    store = EvalStore(tmp_path / "evals.db")
    try:
        run_id = store.create_run(
            suite="niah-single",
            mode="rlm",
            model="m",
            sub_model=None,
            scripted=True,
            seed=1,
            n=len(rs),
            params={},
        )
        for r in rs:
            store.add_result(
                run_id, r, [{"role": "root", "messages": [{"role": "user", "content": r.task_id}]}]
            )
        back = store.results(run_id)
        assert [b.to_dict() for b in back] == [r.to_dict() for r in rs]
        assert store.calls(run_id, rs[-1].task_id)[0]["messages"][0]["content"] == rs[-1].task_id
        assert store.get_run(run_id).summary is None and store.get_run(run_id).status == "running"
    finally:
        store.close()
