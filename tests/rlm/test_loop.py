"""The loop against scripted models and the in-process fake box: turns, SUBMIT, REPL functions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from holdfast.errors import BudgetExceeded, InvalidInput, RuntimeFailure
from holdfast.rlm import RLM, BrokerLimits, Budget
from holdfast.rlm.store import RLMTraceStore
from holdfast.testing import FunctionLM, ScriptedLM

from .helpers import code

BIG = "line of text\n" * 5000  # 65,000 chars: above the direct threshold


def make(root: Any, sub: Any = None, fake_box: Any = None, store: Any = None, **kw: Any) -> RLM:
    return RLM(root, sub, sandbox=fake_box, store=store, **kw)


def test_loop_runs_code_and_submits(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([code("n = len(context)\nprint(n)"), code("SUBMIT(answer=str(n))")])
    result = make(root, fake_box=fake_box, store=store).run("how long?", context=BIG)
    assert result.ok and result.answer == str(len(BIG)) and result.iterations == 2
    first = root.calls[0].messages
    assert BIG not in first[1]["content"] and "65,000 chars" in first[1]["content"]
    feedback = root.calls[1].messages[-1]["content"]
    assert str(len(BIG)) in feedback and "[turn 2 of 30" in feedback
    assert root.calls[0].kwargs["stop"] == ["\n```\n"]


def test_text_after_the_block_is_ignored(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(
        [
            "```python\nx = 41\n```\nOutput: 99\n```python\nSUBMIT(answer='invented')\n```",
            code("SUBMIT(answer=str(x + 1))"),
        ]
    )
    result = make(root, fake_box=fake_box, store=store).run("q", context=BIG)
    assert result.answer == "42"
    assert "invented" not in root.calls[1].messages[-2]["content"]


def test_no_code_block_is_fed_back(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(["The answer is probably 4.", code("SUBMIT('4')")])
    assert make(root, fake_box=fake_box, store=store).run("q", context=BIG).answer == "4"
    assert "No code block" in root.calls[1].messages[-1]["content"]


def test_typed_submit_errors_are_fed_back(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(
        [
            code("SUBMIT(count='many', names='a')"),
            code("SUBMIT(count=3, names=['a', 'b'])"),
        ]
    )
    rlm = make(
        root, fake_box=fake_box, store=store, signature="context -> count: int, names: list[str]"
    )
    result = rlm.run("q", context=BIG)
    assert result.answer.count == 3 and result.outputs == {"count": 3, "names": ["a", "b"]}
    fed = root.calls[1].messages[-1]["content"]
    assert "not accepted" in fed and "count" in fed and "names" in fed


def test_answer_dict_compat_ends_the_run(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(
        [code("answer['content'] = 'draft'"), code("answer = {'content': 'final', 'ready': True}")]
    )
    result = make(root, fake_box=fake_box, store=store).run("q", context=BIG)
    assert result.answer == "final" and result.iterations == 2


def test_never_submitting_raises_budget_with_partial(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([], then=code("answer['content'] = 'half done'\nprint('working')"))
    rlm = make(root, fake_box=fake_box, store=store, budget=Budget(max_iterations=3))
    with pytest.raises(BudgetExceeded) as err:
        rlm.run("q", context=BIG)
    exc = err.value
    assert exc.limit == "iterations" and exc.trace_id and exc.partial["answer"] == "half done"
    assert len(root.calls) == 3
    assert "final turn" in root.calls[2].messages[-1]["content"]
    assert store.get_run(exc.trace_id).status == "budget_exceeded"  # type: ignore[union-attr]


def test_batch_is_parallel_ordered_and_isolates_failures(
    fake_box: Any, store: RLMTraceStore
) -> None:
    async def sub(messages: list[dict[str, Any]], **_: Any) -> str:
        prompt = messages[-1]["content"]
        n = int(prompt.split()[-1])
        await asyncio.sleep(0.2 - n * 0.01)
        if n == 3:
            raise RuntimeFailure("provider exploded")
        return f"r{n}"

    root = ScriptedLM(
        [
            code(
                "out = llm_batch([f'item {i}' for i in range(10)])\nprint([isinstance(o, SubCallError) for o in out])"
            ),
            code(
                "SUBMIT(answer=','.join(o if not isinstance(o, SubCallError) else 'ERR' for o in out))"
            ),
        ]
    )
    sub_lm = FunctionLM(sub, model="fake:sub")
    result = make(root, sub_lm, fake_box=fake_box, store=store).run("q", context=BIG)
    assert result.answer == "r0,r1,r2,ERR,r4,r5,r6,r7,r8,r9"
    assert result.elapsed_s < 1.5  # ten calls of ~0.2 s ran in parallel
    assert "provider exploded" in store.events(result.trace_id)[-5].data.get("error", "") or any(
        "provider exploded" in (e.data.get("error") or "") for e in store.events(result.trace_id)
    )


def test_prompt_size_guard_tells_the_model_the_limit(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(
        [
            code("try:\n    llm_query(context)\nexcept Exception as e:\n    print('ERR', e)"),
            code("SUBMIT('ok')"),
        ]
    )
    sub = ScriptedLM([], then="never", model="fake:sub")
    rlm = make(
        root, sub, fake_box=fake_box, store=store, limits=BrokerLimits(max_prompt_chars=10_000)
    )
    rlm.run("q", context=BIG)
    fed = root.calls[1].messages[-1]["content"]
    assert "ERR" in fed and "10,000" in fed and "65,000" in fed
    assert sub.calls == []


def test_llm_query_with_schema_returns_validated_dict(fake_box: Any, store: RLMTraceStore) -> None:
    sub = FunctionLM(lambda m, **kw: '{"n": "7", "tag": "x"}', model="fake:sub")
    root = ScriptedLM(
        [code("r = llm_query('count', schema='n: int, tag: str')\nSUBMIT(str(r['n'] + 1))")]
    )
    assert make(root, sub, fake_box=fake_box, store=store).run("q", context=BIG).answer == "8"
    assert sub.calls[0].kwargs["response_format"]["type"] == "json_schema"


def test_predict_is_typed_and_retries_once(fake_box: Any, store: RLMTraceStore) -> None:
    replies = iter(
        ['{"answer": "yes", "confidence": "high"}', '{"answer": "yes", "confidence": 0.9}']
    )
    sub = FunctionLM(lambda m, **kw: next(replies), model="fake:sub")
    root = ScriptedLM(
        [
            code(
                "p = predict('question, passage -> answer: str, confidence: float', "
                "question='q?', passage=context[:100])\nSUBMIT(f'{p.answer}:{p.confidence}')"
            )
        ]
    )
    assert make(root, sub, fake_box=fake_box, store=store).run("q", context=BIG).answer == "yes:0.9"
    assert "did not fit" in sub.calls[1].messages[-1]["content"]


def test_depth_limit_and_child_runs(fake_box: Any, store: RLMTraceStore) -> None:
    def root_fn(messages: list[dict[str, Any]]) -> str:
        first = messages[1]["content"]
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if first.startswith("Query: child task"):
            if turns == 0:
                return code(
                    "try:\n    rlm_query('grandchild', data=part)\nexcept Exception as e:\n    print('DEPTH', e)"
                )
            return code("SUBMIT(answer=part.upper())")
        if turns == 0:
            return code("r = rlm_query('child task', part=context[:4])\nprint(r)")
        return code("SUBMIT(answer=r)")

    root = ScriptedLM(root_fn)
    rlm = make(root, fake_box=fake_box, store=store, max_depth=1)
    result = rlm.run("q", context=BIG)
    assert result.answer == "LINE"
    child_prompts = [
        c.messages for c in root.calls if c.messages[1]["content"].startswith("Query: child")
    ]
    assert (
        "DEPTH" in child_prompts[-1][-1]["content"]
        and "depth limit" in child_prompts[-1][-1]["content"]
    )
    tree = store.tree(result.trace_id)
    assert [r.depth for r in tree] == [0, 1]


def test_user_tools_are_callable_from_code(fake_box: Any, store: RLMTraceStore) -> None:
    def lookup(key: str) -> str:
        """Look up a key in the host's table."""
        return {"a": "alpha"}[key]

    root = ScriptedLM([code("SUBMIT(lookup('a'))")])
    rlm = make(root, fake_box=fake_box, store=store, tools=[lookup])
    assert rlm.run("q", context=BIG).answer == "alpha"
    assert "lookup(key): Look up a key" in root.calls[0].messages[0]["content"]


def test_router_answers_small_inputs_directly(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(['{"answer": "small"}'])
    result = make(root, fake_box=fake_box, store=store).run("q", context="tiny text")
    assert result.mode == "direct" and result.answer == "small" and result.iterations == 1
    assert "tiny text" in root.calls[0].messages[-1]["content"]
    assert fake_box_unused(result)


def fake_box_unused(result: Any) -> bool:
    return bool(result.sub_calls == 0)


def test_completion_is_text_in_text_out(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(["hello back"])
    assert make(root, fake_box=fake_box, store=store).completion("hello") == "hello back"


def test_system_prompt_override_and_describe(fake_box: Any, store: RLMTraceStore) -> None:
    rlm = make(ScriptedLM([]), fake_box=fake_box, store=store, system_prompt="CUSTOM {output_cap}")
    msgs = rlm.describe_prompt("q", context=BIG)
    assert msgs[0]["content"] == "CUSTOM 8000" and "65,000 chars" in msgs[1]["content"]


@pytest.mark.parametrize(
    "inputs",
    [{"context": ""}, {"context": b""}, {"context": object()}, {"_hidden": "x"}],
)
def test_bad_inputs_are_typed_errors(
    fake_box: Any, store: RLMTraceStore, inputs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput):
        make(ScriptedLM([]), fake_box=fake_box, store=store).run("q", **inputs)


def test_invalid_signature_and_missing_signature_inputs(fake_box: Any) -> None:
    with pytest.raises(InvalidInput):
        RLM(ScriptedLM([]), signature="a -> ", sandbox=fake_box)
    rlm = RLM(
        ScriptedLM([]), signature="question, passage -> answer", sandbox=fake_box, trace=False
    )
    with pytest.raises(InvalidInput):
        rlm.run("q", question="x")


def test_long_output_is_cut_head_and_tail(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([code("print('HEAD' + 'x' * 50_000 + 'TAIL')"), code("SUBMIT('ok')")])
    make(root, fake_box=fake_box, store=store, output_cap=2_000).run("q", context=BIG)
    fed = root.calls[1].messages[-1]["content"]
    assert "HEAD" in fed and "TAIL" in fed and "characters omitted" in fed and len(fed) < 2_400


def test_show_vars_lists_user_variables(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([code("rows = [1, 2, 3]\nshow_vars()"), code("SUBMIT('ok')")])
    make(root, fake_box=fake_box, store=store).run("q", context=BIG)
    fed = root.calls[1].messages[-1]["content"]
    assert "rows: list, len 3" in fed and "context: str" in fed and "llm_query" not in fed


def test_sub_call_timeout_is_an_error_value(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="late", model="fake:slow", latency=5.0)
    root = ScriptedLM([code("print(llm_batch(['a'])[0])"), code("SUBMIT('ok')")])
    rlm = make(root, sub, fake_box=fake_box, store=store, limits=BrokerLimits(call_timeout_s=0.2))
    assert rlm.run("q", context=BIG).answer == "ok"
    assert "[sub-call error]" in root.calls[1].messages[-1]["content"]
    assert "timed out" in root.calls[1].messages[-1]["content"]


def test_per_model_limit_and_model_choice(fake_box: Any, store: RLMTraceStore) -> None:
    live = peak = 0

    async def slow(messages: list[dict[str, Any]], **_: Any) -> str:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.03)
        live -= 1
        return "big"

    big = FunctionLM(slow, model="fake:big")
    root = ScriptedLM(
        [
            code(
                "out = llm_batch(['p'] * 8, model='fake:big')\ntry:\n    llm_query('x', model='nope')\nexcept Exception as e:\n    print('ERR', e)"
            ),
            code("SUBMIT(out[0])"),
        ]
    )
    rlm = make(
        root,
        fake_box=fake_box,
        store=store,
        extra_models=[big],
        limits=BrokerLimits(per_model={"fake:big": 2}),
    )
    assert rlm.run("q", context=BIG).answer == "big"
    assert peak == 2
    assert "unknown model 'nope'" in root.calls[1].messages[-1]["content"]


def test_cache_serves_repeated_sub_calls(fake_box: Any, store: RLMTraceStore) -> None:
    sub = FunctionLM(lambda m, **kw: "answer", model="fake:sub")
    for _ in range(2):
        root = ScriptedLM([code("r = llm_query('same prompt')"), code("SUBMIT(r)")])
        assert (
            make(root, sub, fake_box=fake_box, store=store, cache=True).run("q", context=BIG).answer
            == "answer"
        )
    assert len(sub.calls) == 1


def test_direct_reply_that_does_not_fit_falls_back_to_the_loop(
    fake_box: Any, store: RLMTraceStore
) -> None:
    root = ScriptedLM(["I think about 3?", code("SUBMIT(n=3, unit='apples')")])
    rlm = make(root, fake_box=fake_box, store=store, signature="context -> n: int, unit: str")
    result = rlm.run("how many?", context="three apples")
    assert result.mode == "rlm" and result.outputs == {"n": 3, "unit": "apples"}
    strict = make(
        ScriptedLM(["no json"]),
        fake_box=fake_box,
        store=store,
        signature="-> n: int",
        mode="direct",
    )
    from holdfast.rlm.router import DirectAnswerInvalid

    with pytest.raises(DirectAnswerInvalid):
        strict.run("q", context="x")


def test_a_root_provider_failure_names_the_trace(fake_box: Any, store: RLMTraceStore) -> None:
    def root_fn(messages: list[dict[str, Any]], **_: Any) -> str:
        if len(messages) > 2:
            raise RuntimeFailure("provider down")
        return code("answer['content'] = 'draft'")

    with pytest.raises(RuntimeFailure) as err:
        make(FunctionLM(root_fn, model="fake:root"), fake_box=fake_box, store=store).run(
            "q", context=BIG
        )
    details = err.value.to_dict()["details"]
    assert details["trace_id"].startswith("rlm-") and details["partial"]["answer"] == "draft"
    assert store.get_run(details["trace_id"]).status == "error"  # type: ignore[union-attr]
