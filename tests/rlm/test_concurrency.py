"""How many sub-calls a job has in flight by default, and what bounds them.

The broker's default (256) lets a local server take the 256 calls at once its endpoint limiter
allows; a hosted provider's endpoint stays at its own 64; a server that answers 429 brings the
number down without failing the job.
"""

from __future__ import annotations

import asyncio
from typing import Any

from holdfast.lm import RetryPolicy, get_lm
from holdfast.lm.openai_compat import OpenAICompatLM
from holdfast.rlm import RLM, BrokerLimits, Budget
from holdfast.rlm.store import RLMTraceStore
from holdfast.testing import FakeOpenAIServer, Fault, FunctionLM, ScriptedLM

from .helpers import code

BIG = "word " * 20_000


def fan_out_root(n: int) -> ScriptedLM:
    return ScriptedLM(
        [
            code(f"r = llm_batch(['p'] * {n})\nprint(sum(1 for x in r if x == 'ok'))"),
            code("SUBMIT('done')"),
        ]
    )


def test_the_default_broker_limit_is_256_and_holds(fake_box: Any, store: RLMTraceStore) -> None:
    live = peak = 0

    async def sub(messages: list[dict[str, Any]], **_: Any) -> str:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.05)
        live -= 1
        return "ok"

    rlm = RLM(
        fan_out_root(300),
        FunctionLM(sub, model="fake:sub"),
        sandbox=fake_box,
        store=store,
        budget=Budget(max_sub_calls=400),
    )
    assert BrokerLimits().concurrency == 256
    assert rlm.run("q", context=BIG).answer == "done"
    assert peak == 256  # above the old 64, and never above the limit


def test_an_endpoint_limit_bounds_the_broker_default(fake_box: Any, store: RLMTraceStore) -> None:
    with FakeOpenAIServer(latency=0.05, default_reply="ok") as srv:
        # 64 is a hosted provider's default; the broker lets 256 in, the endpoint 64
        sub = get_lm("vllm:sub", base_url=srv.base_url, env={}, max_concurrency=64)
        rlm = RLM(
            fan_out_root(150),
            sub,
            sandbox=fake_box,
            store=store,
            budget=Budget(max_sub_calls=200),
        )
        try:
            assert rlm.run("q", context=BIG).answer == "done"
        finally:
            sub.close()
        assert srv.max_in_flight == 64


def test_a_server_that_answers_429_slows_the_job_without_failing_it(
    fake_box: Any, store: RLMTraceStore
) -> None:
    capacity = 8
    box: dict[str, FakeOpenAIServer] = {}

    async def handler(body: dict[str, Any]) -> Any:
        if box["srv"].in_flight > capacity:
            return Fault.rate_limit(retry_after=None)
        await asyncio.sleep(0.05)
        return "ok"

    with FakeOpenAIServer(handler) as srv:
        box["srv"] = srv
        sub = get_lm(
            "vllm:sub",
            base_url=srv.base_url,
            env={},
            retry=RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, jitter=0.0),
        )
        assert isinstance(sub, OpenAICompatLM) and sub.limiter.limit == 256
        rlm = RLM(
            fan_out_root(120),
            sub,
            sandbox=fake_box,
            store=store,
            budget=Budget(max_sub_calls=200),
        )
        try:
            result = rlm.run("q", context=BIG)
        finally:
            sub.close()
    assert result.answer == "done"
    first = next(e.data for e in store.events(result.trace_id) if e.kind == "iteration")
    assert first["output"].strip() == "120"  # every sub-call answered, none failed
    assert sub.limiter.epoch >= 4  # 256 -> 128 -> 64 -> 32 -> 16 -> 8
