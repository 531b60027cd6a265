"""Traces: compact events in the store, JSONL export, constant bytes per iteration, replay."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from holdfast.errors import InvalidInput
from holdfast.rlm import RLM
from holdfast.rlm.replay import ReplayDiverged, replay
from holdfast.rlm.store import RLMTraceStore
from holdfast.sandbox import SandboxPolicy
from holdfast.testing import FunctionLM, ScriptedLM

from .helpers import code

SCRIPT = [
    code("print(len(context))\nprint(context[:200])"),
    code(
        "chunks = [context[i * 2000:(i + 1) * 2000] for i in range(4)]\nparts = llm_batch(chunks)\nprint(parts)"
    ),
    code("lines = context.count('\\n')\nprint('lines', lines > 0)"),
    code("SUBMIT(answer=' '.join(parts))"),
]


def sub_fn(messages: list[dict[str, Any]], **_: Any) -> str:
    return f"chunk of {len(messages[-1]['content'])} chars"


def write_corpus(path: Path, size: int) -> Path:
    line = "The quick brown fox jumps over the lazy dog; record payload text.\n"
    with path.open("w") as fh:
        reps = size // len(line)
        block = line * 10_000
        for _ in range(reps // 10_000):
            fh.write(block)
        fh.write(line * (reps % 10_000))
    return path


@pytest.mark.sandbox
def test_bytes_per_iteration_do_not_grow_with_the_input(
    tmp_path: Path, store: RLMTraceStore
) -> None:
    per_iteration = []
    for size in (1_000_000, 100_000_000):
        corpus = write_corpus(tmp_path / f"c{size}.txt", size)
        rlm = RLM(
            ScriptedLM(SCRIPT),
            FunctionLM(sub_fn, model="fake:sub"),
            sandbox=SandboxPolicy(),
            store=store,
        )
        result = rlm.run("summarise", context=corpus)
        assert result.ok and result.iterations == 4
        per_iteration.append(store.event_bytes(result.trace_id) / result.iterations)
        corpus.unlink()
    small, big = per_iteration
    assert abs(big - small) / small < 0.10, per_iteration
    assert big < 20_000


def test_events_export_as_jsonl_tree(fake_box: Any, store: RLMTraceStore) -> None:
    def root_fn(messages: list[dict[str, Any]], **_: Any) -> str:
        child = messages[1]["content"].startswith("Query: child")
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if turns == 0:
            return (
                code("print(llm_query('hi'))")
                if child
                else code("r = rlm_query('child', part='x')")
            )
        return code("SUBMIT('c')") if child else code("SUBMIT(r + '!')")

    rlm = RLM(FunctionLM(root_fn, model="fake:root"), sandbox=fake_box, store=store)
    result = rlm.run("q", context="x" * 60_000)
    assert result.answer == "c!"
    out = io.StringIO()
    lines = store.export_jsonl(result.trace_id, out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == lines
    runs = [r for r in rows if r["type"] == "run"]
    assert [r["depth"] for r in runs] == [0, 1] and runs[1]["parent_id"] == result.trace_id
    kinds = {r["kind"] for r in rows if r["type"] == "event"}
    assert {"run_start", "root_call", "iteration", "sub_call", "submit", "run_end"} <= kinds
    root_calls = [
        r
        for r in rows
        if r["type"] == "event" and r["kind"] == "root_call" and r["trace_id"] == result.trace_id
    ]
    assert root_calls[0]["data"]["messages"][0]["role"] == "system"
    assert all(m["role"] == "user" for rc in root_calls[1:] for m in rc["data"]["messages"])
    assert "x" * 1000 not in out.getvalue()


def test_replay_reexecutes_from_recorded_outputs(
    tmp_path: Path, fake_box: Any, store: RLMTraceStore
) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 200_000)
    rlm = RLM(
        ScriptedLM(SCRIPT), FunctionLM(sub_fn, model="fake:sub"), sandbox=fake_box, store=store
    )
    original = rlm.run("summarise", context=corpus)
    again = replay(original.trace_id, store, sandbox=fake_box)
    assert again.same_answer and again.result.answer == original.answer
    assert again.replies_used == again.replies_recorded == 4 + 4
    assert again.result.usage.root.input_tokens == original.usage.root.input_tokens
    assert again.result.trace_id != original.trace_id
    corpus.write_text("different content entirely\n" * 10_000)
    with pytest.raises(ReplayDiverged):
        replay(original.trace_id, store, sandbox=fake_box)


def test_replay_of_a_direct_answer(fake_box: Any, store: RLMTraceStore) -> None:
    rlm = RLM(ScriptedLM(['{"answer": "short"}']), sandbox=fake_box, store=store)
    original = rlm.run("q", context="a small input")
    assert original.mode == "direct"
    again = replay(original.trace_id, store, inputs={"context": "a small input"}, sandbox=fake_box)
    assert again.same_answer and again.result.mode == "direct" and again.replies_used == 1
    with pytest.raises(InvalidInput):
        replay(original.trace_id, store, sandbox=fake_box)


def test_full_sub_prompts_on_request(fake_box: Any, store: RLMTraceStore) -> None:
    prompt = "p" * 1000
    for full in (False, True):
        root = ScriptedLM([code(f"llm_query({prompt!r})"), code("SUBMIT('ok')")])
        sub = ScriptedLM([], then="fine", model="fake:sub")
        rlm = RLM(root, sub, sandbox=fake_box, store=store, mode="rlm", trace_sub_prompts=full)
        result = rlm.run("q", context="x")
        event = next(e for e in store.events(result.trace_id) if e.kind == "sub_call").data
        if full:
            assert event["messages"] == [{"role": "user", "content": prompt}]
        else:
            assert event["prompt_preview"] == prompt[:400] and "messages" not in event
