"""AnthropicLM: the real ``anthropic`` SDK against FakeOpenAIServer's /v1/messages, and the wire mapping."""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.errors import InvalidInput
from holdfast.lm import (
    CallParams,
    Completion,
    MissingExtra,
    ProviderRejected,
    RetryPolicy,
    Usage,
    get_lm,
    json_schema_format,
)
from holdfast.lm.anthropic_wire import request_body
from holdfast.testing import FakeOpenAIServer, Fault, reply, tool_call

FAST = RetryPolicy(max_attempts=3, base_delay=0.01)
pytestmark = pytest.mark.anyio


def test_messages_translate_to_the_messages_api() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "wx", "arguments": '{"c": "Paris"}'},
                },
                {
                    "id": "t2",
                    "type": "function",
                    "function": {"name": "wx", "arguments": '{"c": "Lyon"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": "rain"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]
    tools = [{"type": "function", "function": {"name": "wx", "parameters": {"type": "object"}}}]
    body, forced = request_body(
        "claude-x",
        messages,
        CallParams(tools=tools, tool_choice="required", stop=["END"], max_tokens=99),
    )
    assert forced is None
    assert body["system"] == "Be brief." and body["max_tokens"] == 99
    assert body["stop_sequences"] == ["END"] and body["tool_choice"] == {"type": "any"}
    assert body["tools"] == [{"name": "wx", "description": "", "input_schema": {"type": "object"}}]
    roles = [t["role"] for t in body["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "t2",
        "name": "wx",
        "input": {"c": "Lyon"},
    }
    results = body["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text", "image"]
    assert results[3]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}


def test_bad_tool_history_and_choice_are_invalid_input() -> None:
    bad = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{oops"}}],
        }
    ]
    with pytest.raises(InvalidInput, match="not JSON"):
        request_body("m", bad, CallParams())
    with pytest.raises(InvalidInput, match="no Anthropic equivalent"):
        request_body("m", [{"role": "user", "content": "x"}], CallParams(tool_choice=42))


@given(
    st.lists(
        st.tuples(st.sampled_from(["user", "assistant"]), st.text(min_size=1, max_size=30)),
        min_size=1,
        max_size=12,
    )
)
def test_turns_alternate_and_keep_every_text(pairs: list[tuple[str, str]]) -> None:
    body, _ = request_body("m", [{"role": r, "content": c} for r, c in pairs], CallParams())
    roles = [t["role"] for t in body["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    texts = [b["text"] for t in body["messages"] for b in t["content"]]
    assert texts == [c for _, c in pairs]


async def test_claude_through_the_real_sdk() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100, cached_tokens=400)
    with FakeOpenAIServer([Completion(text="Bonjour. END extra", usage=usage)]) as srv:
        async with get_lm(
            "anthropic:claude-sonnet-4-5",
            base_url=srv.base_url.removesuffix("/v1"),
            api_key="sk-ant",
        ) as lm:
            out = await lm.acomplete(
                [{"role": "system", "content": "French."}, {"role": "user", "content": "Hello"}],
                stop=["END"],
            )
    body = srv.requests[0]
    assert srv.request_log[0].path == "/v1/messages"
    assert body["system"] == "French." and body["model"] == "claude-sonnet-4-5"
    assert out.text == "Bonjour. " and out.finish_reason == "stop"
    assert (out.usage.input_tokens, out.usage.cached_tokens, out.usage.output_tokens) == (
        1000,
        400,
        100,
    )
    assert out.usage.cost_usd == pytest.approx((600 * 3.0 + 400 * 0.30 + 100 * 15.0) / 1e6)


async def test_claude_tools_structured_output_and_errors() -> None:
    def handler(body: dict[str, Any]) -> Any:
        if body.get("tool_choice", {}).get("type") == "tool":
            name = body["tool_choice"]["name"]
            return reply("", tool_call(name, {"answer": 42}))
        return reply("", tool_call("wx", {"c": "Paris"}, id="toolu_1"))

    with FakeOpenAIServer(handler) as srv:
        url = srv.base_url.removesuffix("/v1")
        async with get_lm(
            "anthropic:claude-haiku-4-5", base_url=url, api_key="k", retry=FAST
        ) as lm:
            tools = [
                {"type": "function", "function": {"name": "wx", "parameters": {"type": "object"}}}
            ]
            called = await lm.acomplete([{"role": "user", "content": "wx?"}], tools=tools)
            fmt = json_schema_format(
                {"type": "object", "properties": {"answer": {"type": "integer"}}}, name="Answer"
            )
            structured = await lm.acomplete(
                [{"role": "user", "content": "6*7"}], response_format=fmt
            )
            srv.inject(Fault.rate_limit(0.05))
            assert (await lm.acomplete([{"role": "user", "content": "again"}])).tool_calls
            srv.inject(Fault.status(400, "bad"))
            with pytest.raises(ProviderRejected, match="HTTP 400"):
                await lm.acomplete([{"role": "user", "content": "x"}])
    assert called.finish_reason == "tool_calls" and called.tool_calls[0].id == "toolu_1"
    assert json.loads(structured.text) == {"answer": 42} and not structured.tool_calls
    assert srv.requests[1]["tools"][-1]["name"] == "Answer"


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(MissingExtra, match=r"holdfast\[anthropic\]"):
        get_lm("anthropic:claude-sonnet-4-5", api_key="k")
