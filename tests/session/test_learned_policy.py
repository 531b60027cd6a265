"""The learned memory policy against a real OpenAI-compatible HTTP server (the local fake)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from holdfast.errors import InvalidInput
from holdfast.lm import get_lm
from holdfast.session import HeuristicMemoryPolicy, MemoryPolicy, PruneCandidate, WorkingSet
from holdfast.session.learned_policy import ModelMemoryPolicy, memory_policy_from_config
from holdfast.testing import FakeOpenAIServer, Fault


def working_set() -> WorkingSet:
    ws = WorkingSet.replay([])
    ws.set_goal("port the billing module")
    ws.add_constraint("never touch logs/")
    ws.record_decision("use the new ledger API", "the old one is deprecated")
    ws.record_progress("read billing.py")
    return ws


def policy(server: FakeOpenAIServer, **kwargs: Any) -> tuple[MemoryPolicy, list[Any]]:
    lm = get_lm("vllm:policy-model", base_url=server.base_url)
    return memory_policy_from_config(
        {"kind": "model", "model": "vllm:policy-model", **kwargs}, lm=lm
    )


def test_good_answers_are_used_and_the_schema_is_strict() -> None:
    replies = [
        json.dumps(
            {
                "write": [
                    {"key": "constraint:c1", "text": "Never touch logs/.", "kind": "constraint"}
                ]
            }
        ),
        json.dumps({"prune": ["r2"]}),
        json.dumps({"queries": ["billing ledger API"]}),
    ]
    with FakeOpenAIServer(replies) as server:
        p, fallbacks = policy(server)
        assert isinstance(p, MemoryPolicy) and isinstance(p, ModelMemoryPolicy)
        flushed = p.select_flush(working_set(), frozenset())
        cands = [
            PruneCandidate("r1", 1, 500, "read_file"),
            PruneCandidate("r2", 9, 5000, "read_file"),
        ]
        pruned = p.select_prune(cands, prompt_tokens=9000, limit=10000)
        queries = p.recall_queries(working_set())
        bodies = [b for b in server.requests if "messages" in b]
        p.close()
    assert [(i.key, i.text, i.kind) for i in flushed] == [
        ("constraint:c1", "Never touch logs/.", "constraint")
    ]
    assert pruned == ["r2"]
    assert queries == ["billing ledger API"]
    assert fallbacks == []
    fmt = bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    shown = json.loads(bodies[0]["messages"][1]["content"])
    assert {c["key"] for c in shown["candidates"]} >= {"constraint:c1", "progress:p1"}
    assert p.last_prompt[1]["content"] == bodies[-1]["messages"][1]["content"]


@pytest.mark.parametrize(
    "bad",
    [
        "not json at all",
        json.dumps({"write": [{"key": "decision:d99", "text": "invented", "kind": "decision"}]}),
        json.dumps({"write": [{"key": "constraint:c1", "text": "", "kind": "constraint"}]}),
        json.dumps({"write": [{"key": "constraint:c1", "text": "x", "kind": "gossip"}]}),
        json.dumps({"write": [], "also": 1}),
        json.dumps(["write"]),
        Fault.status(500, "policy model down"),
        Fault.malformed(),
    ],
)
def test_bad_answers_fall_back_to_the_heuristic_and_are_recorded(bad: Any) -> None:
    with FakeOpenAIServer([bad, bad, bad, bad, bad]) as server:
        p, fallbacks = policy(server)
        items = p.select_flush(working_set(), frozenset({"decision:d1"}))
        p.close()  # type: ignore[attr-defined]
    expected = HeuristicMemoryPolicy().select_flush(working_set(), frozenset({"decision:d1"}))
    assert items == expected
    assert len(fallbacks) == 1 and fallbacks[0].decision == "flush" and fallbacks[0].reason


def test_unknown_prune_ids_fall_back_and_no_call_below_the_threshold() -> None:
    with FakeOpenAIServer([json.dumps({"prune": ["r1", "r404"]})]) as server:
        p, fallbacks = policy(server, prune_at=0.5)
        cands = [PruneCandidate("r1", 9, 5000, "read_file")]
        assert p.select_prune(cands, prompt_tokens=100, limit=10000) == []
        assert len(server.requests) == 0  # below prune_at: no model call
        assert p.select_prune(cands, prompt_tokens=9000, limit=10000) == []  # heuristic: off
        p.close()  # type: ignore[attr-defined]
    assert [f.decision for f in fallbacks] == ["prune"] and "r404" in fallbacks[0].reason


def test_a_hanging_policy_model_times_out_into_the_heuristic() -> None:
    with FakeOpenAIServer([Fault.hang()]) as server:
        lm = get_lm("vllm:policy-model", base_url=server.base_url, timeout=0.5)
        p = ModelMemoryPolicy(lm, timeout_s=0.5)
        queries = p.recall_queries(working_set())
        p.close()
    assert queries == HeuristicMemoryPolicy().recall_queries(working_set())
    assert len(p.fallbacks) == 1


def test_a_dead_policy_model_is_left_alone_for_a_while() -> None:
    with FakeOpenAIServer(lambda body: Fault.status(400, "bad model")) as server:
        lm = get_lm("vllm:policy-model", base_url=server.base_url)
        p = ModelMemoryPolicy(lm, trip_after=2, cooldown=3)
        for _ in range(6):
            p.recall_queries(working_set())
        calls = len(server.requests)
        p.close()
    assert calls == 3  # two failures, three decisions skipped, then one more try
    assert len(p.fallbacks) == 6
    assert sum("cooling down" in f.reason for f in p.fallbacks) == 3


def test_configuration_selects_the_policy() -> None:
    p, _ = memory_policy_from_config(None)
    assert isinstance(p, HeuristicMemoryPolicy)
    p, _ = memory_policy_from_config("heuristic")
    assert isinstance(p, HeuristicMemoryPolicy)
    p, _ = memory_policy_from_config("model:vllm:tiny@http://127.0.0.1:9/v1")
    assert isinstance(p, ModelMemoryPolicy) and p.lm.model == "vllm:tiny"
    p.close()
    for bad in (
        "learned",
        {"kind": "model"},
        {"kind": "magic", "model": "x"},
        {"kind": "model", "model": "vllm:x", "colour": 1},
    ):
        with pytest.raises(InvalidInput):
            memory_policy_from_config(bad)


def test_the_agent_runs_with_the_learned_policy_and_survives_its_failure(tmp_path: Path) -> None:
    """An agent eval whose policy model always fails: every decision falls back, the task works."""
    from holdfast.config import default_db_path
    from holdfast.evals import EvalConfig, EvalStore, run_eval

    with FakeOpenAIServer(lambda body: Fault.status(500, "down")) as server:
        (run_id,) = run_eval(
            EvalConfig(
                suite="agent-constraint",
                n=1,
                size=4,
                memory_policy=f"model:vllm:tiny@{server.base_url}",
            )
        )
    store = EvalStore(default_db_path())
    try:
        (result,) = store.results(run_id)
    finally:
        store.close()
    assert result.score == 1.0
    assert result.details["memory_policy_fallbacks"] >= 1
