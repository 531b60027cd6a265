"""What an RLM job promises about its budgets and its errors, tried as an unlucky operator would.

Dollar budgets fail closed over unpriced models and hold under hundreds of concurrent sub-calls;
an over-large ``llm_batch`` and an over-large ``rlm_query`` come back to the model as errors it can
act on; an empty root reply is a turn, not the end; every failure leaving the engine is typed and
carries the trace id and the partial answer; the store records what really happened.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from holdfast.errors import BudgetExceeded, Cancelled, HoldfastError
from holdfast.lm import get_lm
from holdfast.lm.prices import Price
from holdfast.lm.retry import RetryPolicy
from holdfast.lm.types import Completion
from holdfast.rlm import RLM, BrokerLimits, Budget
from holdfast.rlm.errors import PreludeFailed, RLMFailed
from holdfast.rlm.pricing import JobPricing, UnpricedModel
from holdfast.rlm.store import RLMTraceStore
from holdfast.sandbox.types import CellResult, SandboxPolicy
from holdfast.testing import FakeOpenAIServer, FunctionLM, ScriptedLM
from holdfast.testing.fake_sandbox import FakeSandbox
from holdfast.testing.fake_wire import Fault

from .helpers import code

BIG = "word " * 20_000


# ----- dollars --------------------------------------------------------------------------------


def test_a_usd_budget_over_an_unpriced_model_fails_closed_before_any_call(
    fake_box: Any, store: RLMTraceStore
) -> None:
    with FakeOpenAIServer(default_reply=code("SUBMIT('x')")) as server:
        lm = get_lm("openai:house-model-7b", base_url=server.base_url, api_key="k")
        rlm = RLM(lm, sandbox=fake_box, store=store, budget=Budget(max_usd=0.01))
        with pytest.raises(UnpricedModel) as err:
            rlm.run("q", context=BIG)
        assert server.requests == [], "nothing was sent"
    message = err.value.message
    assert "openai:house-model-7b" in message
    assert "prices=" in message and "--price" in message and "unpriced='estimate'" in message
    assert err.value.to_dict()["code"] == "unpriced_model"


def test_an_unpriced_model_runs_with_a_price_given_or_an_estimate_opted_in(
    fake_box: Any, store: RLMTraceStore
) -> None:
    def root() -> ScriptedLM:
        return ScriptedLM([code("SUBMIT('x')")], model="fake:house", price=None)

    priced = RLM(
        root(),
        sandbox=fake_box,
        store=store,
        budget=Budget(max_usd=5.0),
        prices={"fake:house": (2.0, 8.0)},
    ).run("q", context=BIG)
    assert priced.ok and priced.usage.usd > 0 and priced.usage.root.priced
    estimated = RLM(
        root(), sandbox=fake_box, store=store, budget=Budget(max_usd=5.0, unpriced="estimate")
    ).run("q", context=BIG)
    assert estimated.ok and not estimated.usage.root.priced
    assert estimated.usage.usd > priced.usage.usd, "estimated at the table's highest price"


def test_a_usd_budget_holds_under_hundreds_of_concurrent_sub_calls(
    fake_box: Any, store: RLMTraceStore
) -> None:
    async def sub(messages: list[dict[str, Any]], **_: Any) -> str:
        await asyncio.sleep(0.02)
        return "y " * 40

    sub_lm = FunctionLM(sub, model="fake:priced-sub", price=Price(input=50.0, output=50.0))
    root = ScriptedLM(
        [code("answer['content'] = 'partial'\nr = llm_batch(['tell me'] * 400)")], then=code("x=1")
    )
    budget = Budget(max_usd=0.004)
    rlm = RLM(
        root,
        sub_lm,
        sandbox=fake_box,
        store=store,
        budget=budget,
        sub_max_tokens=60,
        limits=BrokerLimits(concurrency=256),
    )
    with pytest.raises(BudgetExceeded) as err:
        rlm.run("q", context=BIG)
    exc = err.value
    assert exc.limit == "usd"
    one_call = JobPricing.for_budget(budget).reservation(
        sub_lm, [{"role": "user", "content": "tell me"}], 60
    )[1]
    final = exc.partial["usage"]["usd"]
    assert final <= 0.004 + one_call + 1e-9, (final, one_call)
    assert len(sub_lm.calls) < 400
    assert f"final cost ${final:.4f}" in exc.message, exc.message


def test_reservations_do_not_serialise_calls_when_the_budget_has_room(
    fake_box: Any, store: RLMTraceStore
) -> None:
    live = peak = 0

    async def sub(messages: list[dict[str, Any]], **_: Any) -> str:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.05)
        live -= 1
        return "ok"

    root = ScriptedLM([code("r = llm_batch(['p'] * 40)"), code("SUBMIT('done')")])
    rlm = RLM(
        root,
        FunctionLM(sub, model="fake:sub", price=Price(1.0, 1.0)),
        sandbox=fake_box,
        store=store,
        budget=Budget(max_usd=10.0),
        limits=BrokerLimits(concurrency=64),
    )
    assert rlm.run("q", context=BIG).answer == "done"
    assert peak == 40


# ----- sub-call counts and sizes --------------------------------------------------------------


def test_an_llm_batch_over_the_remaining_sub_calls_is_an_error_the_model_acts_on(
    fake_box: Any, store: RLMTraceStore
) -> None:
    sub = ScriptedLM([], then="ok", model="fake:sub")
    root = ScriptedLM(
        [
            code("r = llm_batch(['p'] * 50)"),
            code("r = llm_batch(['p'] * 10)\nprint(len(r))"),
            code("SUBMIT('ten')"),
        ]
    )
    rlm = RLM(root, sub, sandbox=fake_box, store=store, budget=Budget(max_sub_calls=10))
    assert rlm.run("q", context=BIG).answer == "ten"
    feedback = root.calls[1].messages[-1]["content"]
    assert "llm_batch got 50 prompts, but only 10 sub-calls are left" in feedback
    assert len(sub.calls) == 10


def test_rlm_query_goes_through_the_prompt_size_guard(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM(
        [
            code("r = rlm_query('summarise: ' + 'x' * 5_000_000)"),
            code("SUBMIT('no child')"),
        ]
    )
    result = RLM(root, sandbox=fake_box, store=store).run("q", context=BIG)
    assert result.answer == "no child"
    feedback = root.calls[1].messages[-1]["content"]
    assert "the rlm_query prompt is 5,000,011 characters" in feedback
    assert "pass the text as an input" in feedback
    assert store.children(result.trace_id) == [], "no child run was started or stored"
    assert store.event_bytes(result.trace_id) < 200_000, "the query was not stored"


def test_the_guard_uses_the_sub_models_context_window(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="ok", model="fake:small-window")
    root = ScriptedLM(
        [
            code("print(llm_query('word ' * 2000))\nprint(llm_query('word ' * 100))"),
            code("SUBMIT('done')"),
        ]
    )
    rlm = RLM(
        root,
        sub,
        sandbox=fake_box,
        store=store,
        sub_max_tokens=200,
        limits=BrokerLimits(context_windows={"fake:small-window": 1_000}),
    )
    assert rlm.run("q", context=BIG).answer == "done"
    feedback = root.calls[1].messages[-1]["content"]
    assert "fake:small-window's context window is 1,000 tokens" in feedback
    assert len(sub.calls) == 0, "the first call was refused and ended the cell"

    class Windowed(ScriptedLM):
        context_window = 1_000

    sub2 = Windowed([], then="ok", model="fake:own-window")
    root2 = ScriptedLM([code("llm_query('word ' * 2000)"), code("SUBMIT('done')")])
    RLM(root2, sub2, sandbox=fake_box, store=store, sub_max_tokens=200).run("q", context=BIG)
    assert "context window is 1,000 tokens" in root2.calls[1].messages[-1]["content"]


def test_sub_calls_send_a_max_tokens_and_the_per_attempt_timeout(
    fake_box: Any, store: RLMTraceStore
) -> None:
    sub = ScriptedLM([], then="ok", model="fake:sub")
    root = ScriptedLM([code("llm_query('p')"), code("SUBMIT('done')")])
    RLM(
        root,
        sub,
        sandbox=fake_box,
        store=store,
        root_max_tokens=777,
        sub_max_tokens=333,
        limits=BrokerLimits(call_timeout_s=45.0),
    ).run("q", context=BIG)
    assert sub.calls[0].kwargs["max_tokens"] == 333 and sub.calls[0].kwargs["timeout"] == 45.0
    assert root.calls[0].kwargs["max_tokens"] == 777


# ----- empty replies --------------------------------------------------------------------------


def _empty_body(finish: str = "length") -> dict[str, Any]:
    return {
        "id": "chatcmpl-empty",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": finish}
        ],
        "usage": {"prompt_tokens": 900, "completion_tokens": 4096, "total_tokens": 4996},
    }


def test_an_empty_root_reply_is_fed_back_as_a_turn(fake_box: Any, store: RLMTraceStore) -> None:
    with FakeOpenAIServer([_empty_body(), code("SUBMIT('after all')")]) as server:
        lm = get_lm("vllm:thinker", base_url=server.base_url)
        result = RLM(lm, sandbox=fake_box, store=store, mode="rlm").run("q", context=BIG)
        second = server.requests[1]["messages"][-1]["content"]
    assert result.answer == "after all"
    assert "Your last reply was empty (finish_reason=length" in second
    assert result.usage.root.output_tokens >= 4096, "the empty reply's tokens were charged"


def test_empty_root_replies_are_retried_a_bounded_number_of_times(
    fake_box: Any, store: RLMTraceStore
) -> None:
    root = ScriptedLM([], then=Completion(text="", finish_reason="length"))
    rlm = RLM(root, sandbox=fake_box, store=store, budget=Budget(max_empty_replies=2))
    with pytest.raises(BudgetExceeded) as err:
        rlm.run("q", context=BIG)
    assert err.value.limit == "empty_replies"
    assert len(root.calls) == 3
    assert err.value.trace_id and err.value.partial["iterations"] == 3


# ----- typed errors ---------------------------------------------------------------------------


def test_a_root_call_timeout_is_typed_with_trace_id_partial_and_charged(
    fake_box: Any, store: RLMTraceStore
) -> None:
    with FakeOpenAIServer([Fault.hang(), Fault.hang()]) as server:
        lm = get_lm(
            "vllm:slow", base_url=server.base_url, retry=RetryPolicy(max_attempts=2, base_delay=0)
        )
        rlm = RLM(
            lm, sandbox=fake_box, store=store, mode="rlm", limits=BrokerLimits(call_timeout_s=0.3)
        )
        with pytest.raises(HoldfastError) as err:
            rlm.run("q", context=BIG)
    exc = err.value
    assert not isinstance(exc, TimeoutError)
    assert exc.code == "provider_timeout"
    assert exc.trace_id and exc.details["trace_id"] == exc.trace_id
    usage = exc.partial["usage"]["root"]
    assert usage["estimated_tokens"] > 0, "the timed-out attempts were charged as estimates"
    assert store.get_run(exc.trace_id).status == "error"  # type: ignore[union-attr]


def test_the_wall_budget_ends_a_hung_root_call_as_a_budget_error(
    fake_box: Any, store: RLMTraceStore
) -> None:
    now = [0.0]

    async def hang(messages: list[dict[str, Any]], **_: Any) -> str:
        now[0] += 1_000.0  # the injected clock jumps past the deadline while the call hangs
        await asyncio.Event().wait()
        return "never"

    rlm = RLM(
        FunctionLM(hang, model="fake:hang"),
        sandbox=fake_box,
        store=store,
        mode="rlm",
        budget=Budget(max_wall_s=300),
        clock=lambda: now[0],
    )
    with pytest.raises(BudgetExceeded) as err:
        rlm.run("q", context=BIG)
    assert err.value.limit == "wall_time" and err.value.trace_id


def test_a_prelude_failure_is_typed(store: RLMTraceStore) -> None:
    class BrokenPrelude(FakeSandbox):
        async def execute(self, code: str, timeout: float | None = None) -> CellResult:
            if "class SubCallError" in code:
                return CellResult(timed_out=True)
            return await super().execute(code, timeout)

    rlm = RLM(
        ScriptedLM([code("SUBMIT('x')")]),
        sandbox=lambda policy: BrokenPrelude(SandboxPolicy(isolation="process")),
        store=store,
        mode="rlm",
    )
    with pytest.raises(PreludeFailed) as err:
        rlm.run("q", context=BIG)
    assert err.value.code == "rlm_prelude_failed" and err.value.trace_id
    assert err.value.partial is not None


def test_an_unexpected_exception_leaves_as_a_typed_error(
    fake_box: Any, store: RLMTraceStore
) -> None:
    def broken(messages: list[dict[str, Any]], **_: Any) -> str:
        raise KeyError("choices")

    with pytest.raises(RLMFailed) as err:
        RLM(FunctionLM(broken), sandbox=fake_box, store=store, mode="rlm").run("q", context=BIG)
    exc = err.value
    assert exc.code == "rlm_failed" and "KeyError" in exc.message and exc.trace_id
    assert json.loads(json.dumps(exc.to_dict()))["details"]["trace_id"] == exc.trace_id


# ----- the store records the real outcome -----------------------------------------------------


def test_a_cancelled_run_is_recorded_as_cancelled(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="late", model="fake:slow", latency=30.0)
    root = ScriptedLM([code("llm_batch(['a', 'b'])")])
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(Cancelled) as err:
        RLM(root, sub, sandbox=fake_box, store=store).run("q", cancel=stop, context=BIG)
    trace_id = err.value.trace_id
    assert trace_id and store.get_run(trace_id).status == "cancelled"  # type: ignore[union-attr]
    assert "final cost" in err.value.message
    sub_calls = [e for e in store.events(trace_id) if e.kind == "sub_call"]
    assert sub_calls and all(e.data.get("charged") for e in sub_calls), "cut-off calls are charged"


def test_a_budget_stop_is_recorded_as_budget_exceeded(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([], then=code("x = 1"))
    with pytest.raises(BudgetExceeded) as err:
        RLM(root, sandbox=fake_box, store=store, budget=Budget(max_iterations=2)).run(
            "q", context=BIG
        )
    row = store.get_run(err.value.trace_id or "")
    assert row is not None and row.status == "budget_exceeded"


# ----- SUBMIT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["'42'", "True", "3.0"])
def test_submit_validates_strictly_by_default(
    bad: str, fake_box: Any, store: RLMTraceStore
) -> None:
    root = ScriptedLM([code(f"SUBMIT({bad})"), code("SUBMIT(42)")])
    rlm = RLM(root, sandbox=fake_box, store=store, signature="-> count: int")
    assert rlm.run("q", context=BIG).answer == 42
    assert "SUBMIT was not accepted" in root.calls[1].messages[-1]["content"]


def test_lenient_coercion_only_when_asked(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([code("SUBMIT('42')")])
    rlm = RLM(root, sandbox=fake_box, store=store, signature="-> count: int", strict=False)
    assert rlm.run("q", context=BIG).answer == 42


# ----- time -----------------------------------------------------------------------------------


def test_the_cell_limit_does_not_count_time_waiting_for_sub_calls(
    fake_box: Any, store: RLMTraceStore
) -> None:
    sub = ScriptedLM([], then="slow answer", model="fake:slow", latency=0.8)
    root = ScriptedLM(
        [code("print(llm_query('a'))"), code("import time\ntime.sleep(1.0)"), code("SUBMIT('x')")]
    )
    result = RLM(root, sub, sandbox=fake_box, store=store, cell_timeout_s=0.4).run("q", context=BIG)
    assert result.answer == "x"
    assert "slow answer" in root.calls[1].messages[-1]["content"], "the waiting cell finished"
    assert "time limit" in root.calls[2].messages[-1]["content"], "the busy cell was stopped"


def test_a_timed_out_sub_call_is_charged_as_an_estimate(
    fake_box: Any, store: RLMTraceStore
) -> None:
    sub = ScriptedLM([], then="late", model="fake:slow", latency=5.0)
    root = ScriptedLM([code("print(llm_query('p'))"), code("SUBMIT('ok')")])
    result = RLM(
        root,
        sub,
        sandbox=fake_box,
        store=store,
        sub_max_tokens=500,
        limits=BrokerLimits(call_timeout_s=0.2),
    ).run("q", context=BIG)
    assert result.usage.sub.estimated_tokens >= 500
    assert result.usage.sub.output_tokens >= 500
