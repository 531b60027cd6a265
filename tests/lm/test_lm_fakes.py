from __future__ import annotations

import asyncio
import json
import time

import pytest

from holdfast.errors import InvalidInput
from holdfast.lm import LM, Completion, Price
from holdfast.testing import FunctionLM, ScriptedLM, ScriptExhausted, reply, tool_call

USER = [{"role": "user", "content": "What is the capital of France?"}]


def test_scripted_replies_in_order_and_records_calls() -> None:
    lm = ScriptedLM(["Paris.", "Lyon."])
    assert isinstance(lm, LM)
    first = lm.complete(USER, temperature=0.2, metadata={"task": "t1"})
    second = lm.complete([*USER, first.to_message(), {"role": "user", "content": "Again?"}])
    assert (first.text, second.text) == ("Paris.", "Lyon.")
    assert first.finish_reason == "stop" and first.call_id and first.call_id != second.call_id
    assert lm.calls[0].messages == USER
    assert lm.calls[0].kwargs == {"temperature": 0.2}
    assert lm.calls[1].prompt == "Again?"
    with pytest.raises(ScriptExhausted, match="ran out of replies"):
        lm.complete(USER)


def test_scripted_then_default_and_callable() -> None:
    lm = ScriptedLM(["one"], then="fallback")
    assert [lm.complete(USER).text for _ in range(3)] == ["one", "fallback", "fallback"]
    echo = ScriptedLM(lambda msgs: msgs[-1]["content"].upper())
    assert echo.complete(USER).text == USER[0]["content"].upper()


def test_recorded_messages_are_copies() -> None:
    lm = ScriptedLM(["ok"])
    msgs = [{"role": "user", "content": "a"}]
    lm.complete(msgs)
    msgs[0]["content"] = "changed"
    assert lm.calls[0].messages[0]["content"] == "a"


def test_stop_sequences_cut_at_first_stop() -> None:
    lm = ScriptedLM(["alpha END beta STOP gamma"] * 2)
    assert lm.complete(USER, stop=["STOP", "END"]).text == "alpha "
    assert lm.complete(USER, stop=["nope"]).text == "alpha END beta STOP gamma"


def test_max_tokens_truncates_with_length_reason() -> None:
    lm = ScriptedLM(["word " * 100])
    out = lm.complete(USER, max_tokens=10)
    assert out.finish_reason == "length"
    assert out.usage.output_tokens <= 10 < 100


def test_usage_estimates_and_price() -> None:
    lm = ScriptedLM(["Paris is the capital."], price=Price(input=1.0, output=2.0))
    out = lm.complete(USER)
    assert out.usage.input_tokens > 5 and out.usage.output_tokens > 3
    expected = (out.usage.input_tokens * 1.0 + out.usage.output_tokens * 2.0) / 1e6
    assert out.usage.cost_usd == pytest.approx(expected)
    assert ScriptedLM(["x"]).complete(USER).usage.cost_usd == 0.0


def test_tool_calls() -> None:
    lm = ScriptedLM([reply("", tool_call("get_weather", {"city": "Paris"}))])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    out = lm.complete(USER, tools=tools)
    assert out.finish_reason == "tool_calls"
    assert out.tool_calls[0].parsed_arguments() == {"city": "Paris"}
    assert out.to_message()["tool_calls"][0]["function"]["name"] == "get_weather"
    assert lm.calls[0].kwargs["tools"] == tools


def test_function_lm_sync_and_async_functions_see_kwargs() -> None:
    seen: list[dict[str, object]] = []

    def fn(messages: list[dict[str, object]], **kwargs: object) -> str:
        seen.append(kwargs)
        return json.dumps({"n": len(messages)})

    lm = FunctionLM(fn)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert json.loads(lm.complete(USER, response_format=fmt).text) == {"n": 1}
    assert seen == [{"response_format": fmt}]

    async def afn(messages: list[dict[str, object]], **kwargs: object) -> Completion:
        await asyncio.sleep(0)
        return reply("async", finish_reason="stop")

    assert FunctionLM(afn).complete(USER).text == "async"


def test_function_lm_errors_propagate() -> None:
    def boom(messages: list[dict[str, object]], **kwargs: object) -> str:
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError, match="provider down"):
        FunctionLM(boom).complete(USER)


@pytest.mark.parametrize(
    "bad",
    [[], "hi", [{"content": "no role"}], [{"role": "wizard", "content": "x"}], [{"role": "user"}]],
)
def test_bad_messages_are_invalid_input(bad: object) -> None:
    with pytest.raises(InvalidInput):
        ScriptedLM(["x"]).complete(bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_latency_runs_concurrently() -> None:
    lm = ScriptedLM(lambda m: "ok", latency=0.2)
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(lm.acomplete(USER) for _ in range(20)))
    elapsed = time.perf_counter() - t0
    assert all(o.text == "ok" for o in outs)
    assert elapsed < 1.0  # 20 sequential calls would take 4 s


@pytest.mark.anyio
async def test_sync_complete_works_inside_a_running_loop() -> None:
    lm = ScriptedLM(["from a loop"])
    assert lm.complete(USER).text == "from a loop"
