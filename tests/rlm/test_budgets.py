"""Every budget, enforced mid-flight, returns the partial answer and the trace id."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from holdfast.errors import BudgetExceeded, Cancelled, InvalidInput
from holdfast.lm.prices import Price
from holdfast.rlm import RLM, BrokerLimits, Budget
from holdfast.rlm.store import RLMTraceStore
from holdfast.testing import FunctionLM, ScriptedLM

from .helpers import code

BIG = "word " * 20_000


def run_expecting(limit: str, rlm: RLM) -> BudgetExceeded:
    with pytest.raises(BudgetExceeded) as err:
        rlm.run("q", context=BIG)
    assert err.value.limit == limit, err.value.message
    assert err.value.trace_id
    assert err.value.to_dict()["code"] == "budget_exceeded"
    return err.value


def test_budget_settings_are_checked() -> None:
    with pytest.raises(InvalidInput):
        Budget(max_iterations=0)
    with pytest.raises(InvalidInput):
        Budget(max_usd=-1)


def test_sub_call_count_stops_a_loop_mid_cell(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="ok", model="fake:sub")
    root = ScriptedLM(
        [code("answer['content'] = 'p'\nfor i in range(100):\n    llm_query(f'q{i}')")]
    )
    exc = run_expecting(
        "sub_calls", RLM(root, sub, sandbox=fake_box, store=store, budget=Budget(max_sub_calls=5))
    )
    assert len(sub.calls) == 5 and exc.partial["iterations"] == 1


def test_sub_tokens(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="x " * 500, model="fake:sub")
    root = ScriptedLM([], then=code("llm_batch(['a'] * 4)"))
    rlm = RLM(root, sub, sandbox=fake_box, store=store, budget=Budget(max_sub_tokens=1000))
    run_expecting("sub_tokens", rlm)
    assert len(sub.calls) <= 8


def test_root_tokens(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([], then=code("print('x' * 3000)"))
    run_expecting(
        "root_tokens", RLM(root, sandbox=fake_box, store=store, budget=Budget(max_root_tokens=3000))
    )
    assert len(root.calls) < 10


def test_usd_from_the_price_table(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM(
        [], then="y " * 200, model="fake:priced", price=Price(input=1000.0, output=1000.0)
    )
    root = ScriptedLM([], then=code("for _ in range(50):\n    llm_query('tell me')"))
    exc = run_expecting(
        "usd", RLM(root, sub, sandbox=fake_box, store=store, budget=Budget(max_usd=1.0))
    )
    assert exc.partial["usage"]["sub"]["cost_usd"] > 1.0
    assert len(sub.calls) < 50


def test_forced_final_turn_near_the_end(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="ok", model="fake:sub")
    root = ScriptedLM([code("for i in range(9):\n    llm_query('x')"), code("SUBMIT('done')")])
    rlm = RLM(root, sub, sandbox=fake_box, store=store, budget=Budget(max_sub_calls=10))
    assert rlm.run("q", context=BIG).answer == "done"
    assert "final turn" in root.calls[1].messages[-1]["content"]


def test_wall_time_cancels_a_slow_sub_call(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="late", model="fake:slow", latency=30.0)
    root = ScriptedLM([code("answer['content'] = 'partial'\nllm_query('slow')")])
    rlm = RLM(root, sub, sandbox=fake_box, store=store, budget=Budget(max_wall_s=0.8))
    t0 = time.monotonic()
    exc = run_expecting("wall_time", rlm)
    assert time.monotonic() - t0 < 5.0
    calls = [e for e in store.events(exc.trace_id or "") if e.kind == "sub_call"]
    assert calls and calls[0].data["error"].startswith(("cancelled", "timed out"))
    assert calls[0].data["latency_s"] < 2.0


def test_return_mode_gives_a_result_with_status(fake_box: Any, store: RLMTraceStore) -> None:
    root = ScriptedLM([], then=code("answer['content'] = 'so far'"))
    rlm = RLM(
        root, sandbox=fake_box, store=store, budget=Budget(max_iterations=2), on_budget="return"
    )
    result = rlm.run("q", context=BIG)
    assert result.status == "budget_exceeded" and result.answer == "so far"
    assert result.error and result.error["limit"] == "iterations"


def test_cancellation_with_a_threading_event(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="late", model="fake:slow", latency=30.0)
    root = ScriptedLM([code("llm_batch(['a', 'b', 'c'])")])
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled) as err:
        RLM(root, sub, sandbox=fake_box, store=store).run("q", cancel=stop, context=BIG)
    assert time.monotonic() - t0 < 3.0
    assert err.value.details.get("trace_id")


@pytest.mark.anyio
async def test_cancellation_with_an_asyncio_event(fake_box: Any, store: RLMTraceStore) -> None:
    root = FunctionLM(lambda m, **kw: code("x = 1"), model="fake:root", latency=0.05)
    stop = asyncio.Event()
    rlm = RLM(root, sandbox=fake_box, store=store, budget=Budget(max_iterations=1000))
    task = asyncio.create_task(rlm.arun("q", cancel=stop, context=BIG))
    await asyncio.sleep(0.3)
    stop.set()
    with pytest.raises(Cancelled):
        await asyncio.wait_for(task, 3.0)


def test_concurrency_limit_is_shared_across_depths(fake_box: Any, store: RLMTraceStore) -> None:
    peak = 0
    live = 0

    async def sub(messages: list[dict[str, Any]], **_: Any) -> str:
        nonlocal peak, live
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.05)
        live -= 1
        return "s"

    def root_fn(messages: list[dict[str, Any]], **_: Any) -> str:
        child = messages[1]["content"].startswith("Query: child")
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if turns == 0:
            body = (
                "llm_batch(['x'] * 12)"
                if child
                else "r = rlm_query('child', part='abc')\nllm_batch(['y'] * 12)"
            )
            return code(body)
        return code("SUBMIT('done')")

    rlm = RLM(
        FunctionLM(root_fn, model="fake:root"),
        FunctionLM(sub, model="fake:sub"),
        sandbox=fake_box,
        store=store,
        limits=BrokerLimits(concurrency=3),
    )
    assert rlm.run("q", context=BIG).answer == "done"
    assert peak <= 3


def test_ignored_final_turn_names_the_nearest_limit(fake_box: Any, store: RLMTraceStore) -> None:
    sub = ScriptedLM([], then="ok", model="fake:sub")
    root = ScriptedLM([], then=code("for i in range(5):\n    llm_query('x')"))
    rlm = RLM(
        root, sub, sandbox=fake_box, store=store, budget=Budget(max_sub_calls=10, final_turn_at=0.5)
    )
    exc = run_expecting("sub_calls", rlm)
    assert "final turn" in exc.message
    assert len(root.calls) == 2 and "final turn" in root.calls[1].messages[-1]["content"]
