"""Streaming (``astream`` / ``stream``) over real HTTP: SDK and direct paths, Anthropic, fakes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.errors import Cancelled, InvalidInput
from holdfast.lm import (
    BaseLM,
    EmptyResponse,
    MalformedResponse,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RetryPolicy,
    StreamDone,
    TextDelta,
    ToolCallDelta,
    get_lm,
    json_schema_format,
)
from holdfast.lm.calllog import CallLog
from holdfast.lm.stream import SSEDecoder, SSEEvent
from holdfast.testing import (
    FakeOpenAIServer,
    Fault,
    ScriptedLM,
    ScriptExhausted,
    reply,
    tool_call,
)

USER = [{"role": "user", "content": "Say hello."}]
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
pytestmark = pytest.mark.anyio

DIRECT = False


@pytest.fixture(params=["sdk", "direct"])
def http_path(request: pytest.FixtureRequest) -> Iterator[str]:
    global DIRECT
    DIRECT = request.param == "direct"
    yield request.param
    DIRECT = False


def make(server: FakeOpenAIServer, model: str = "vllm:test-model", **kw: Any) -> BaseLM:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("direct_http", DIRECT)
    return get_lm(model, base_url=server.base_url, **kw)


def texts(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# -- the SSE decoder ---------------------------------------------------------------------------

_field_text = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["", "message", "content_block_delta"]),
            st.lists(_field_text, min_size=1, max_size=3),
        ),
        max_size=6,
    ),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    comments=st.booleans(),
)
def test_sse_decoder_reassembles_events_split_anywhere(
    events: list[tuple[str, list[str]]], newline: str, cuts: list[int], comments: bool
) -> None:
    text = ""
    for name, lines in events:
        if comments:
            text += ": keep-alive" + newline
        if name:
            text += f"event: {name}{newline}"
        text += "".join(f"data: {line}{newline}" for line in lines) + newline
    raw = text.encode()
    pieces, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(raw)):
        pieces.append(raw[last:cut])
        last = cut
    pieces.append(raw[last:])
    decoder = SSEDecoder()
    got: list[SSEEvent] = []
    for piece in pieces:
        got += decoder.feed(piece)
    got += decoder.close()
    assert got == [SSEEvent(name or "message", "\n".join(lines)) for name, lines in events]


def test_sse_decoder_dispatches_a_last_event_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n\ndata: tail') == [SSEEvent("message", '{"a": 1}')]
    assert decoder.close() == [SSEEvent("message", "tail")]


# -- OpenAI-compatible streams, SDK and direct --------------------------------------------------


async def test_stream_yields_text_deltas_then_a_priced_completion(
    http_path: str, tmp_path: Path
) -> None:
    log = CallLog(tmp_path / "calls.db")
    with FakeOpenAIServer(["The quick brown fox jumps."]) as server:
        async with (
            make(server, call_log=log) as lm,
            lm.astream(USER, max_tokens=40, metadata={"task_id": "t1"}) as stream,
        ):
            events = [e async for e in stream]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 4, "the fake sends the reply word by word"
    assert isinstance(events[-1], StreamDone)
    done = events[-1].completion
    assert texts(events) == done.text == "The quick brown fox jumps."
    assert done.finish_reason == "stop" and done.call_id and done.model == "vllm:test-model"
    assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0 and done.usage.priced
    assert done.usage.latency_s > 0
    body = server.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 40
    (record,) = log.recent(5, task_id="t1")
    assert record.ok and record.completion is not None
    assert record.completion.text == done.text and record.call_id == done.call_id
    assert record.completion.usage.output_tokens == done.usage.output_tokens


async def test_stream_assembles_tool_calls_sent_in_pieces(http_path: str) -> None:
    call = tool_call("get_weather", {"city": "Paris", "unit": "celsius"}, id="call_w1")
    with FakeOpenAIServer([reply("Checking.", call)]) as server:
        async with make(server) as lm:
            tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
            events = [e async for e in lm.astream(USER, tools=tools)]
    pieces = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(pieces) > 2, "arguments arrive in several pieces"
    assert pieces[0].id == "call_w1" and pieces[0].name == "get_weather"
    assert all(p.index == 0 for p in pieces) and all(p.name is None for p in pieces[1:])
    assert json.loads("".join(p.arguments for p in pieces)) == {"city": "Paris", "unit": "celsius"}
    done = events[-1]
    assert isinstance(done, StreamDone)
    (tc,) = done.completion.tool_calls
    assert tc.parsed_arguments() == {"city": "Paris", "unit": "celsius"} and tc.id == "call_w1"
    assert done.completion.finish_reason == "tool_calls" and done.completion.text == "Checking."


async def test_sync_stream_runs_on_the_lm_loop(http_path: str) -> None:
    with FakeOpenAIServer(["one two three"]) as server:
        lm = make(server)
        try:
            with lm.stream(USER) as events:
                got = list(events)
            again = lm.stream(USER).collect()
        finally:
            lm.close()
    assert texts(got) == "one two three" and isinstance(got[-1], StreamDone)
    assert again.text == "echo: Say hello."


async def test_closing_a_stream_early_closes_the_request(http_path: str, tmp_path: Path) -> None:
    log = CallLog(tmp_path / "calls.db")
    words = " ".join(f"w{i}" for i in range(200))
    with FakeOpenAIServer([words], stream_interval=0.02) as server:
        async with make(server, call_log=log) as lm:
            async with lm.astream(USER) as stream:
                got = [await stream.__anext__() for _ in range(3)]
            await _until(lambda: bool(server.disconnects))
        sent = server.stream_parts_sent
    assert texts(got) == "w0 w1 w2 "
    assert server.disconnects, "the server saw the client go away"
    assert sent < 100, f"the server kept streaming after the reader left ({sent} parts)"
    (record,) = log.recent(5)
    assert not record.ok and record.error is not None
    assert record.error["code"] == "cancelled" and record.error["partial_text"] == "w0 w1 w2 "


async def test_cancelling_the_reading_task_mid_stream_closes_the_request(http_path: str) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    with FakeOpenAIServer([words], stream_interval=0.02) as server:
        async with make(server) as lm:
            seen: list[str] = []

            async def read() -> None:
                async with lm.astream(USER) as stream:
                    async for event in stream:
                        if isinstance(event, TextDelta):
                            seen.append(event.text)

            task = asyncio.create_task(read())
            await _until(lambda: len(seen) >= 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _until(lambda: bool(server.disconnects))
    assert 2 <= len(seen) < 200 and server.disconnects


async def test_a_failure_before_the_first_delta_is_retried(http_path: str) -> None:
    with FakeOpenAIServer(["fine"]) as server:
        server.inject(Fault.status(503), Fault.drop())
        async with make(server) as lm:
            done = await lm.astream(USER).collect()
    assert done.text == "fine" and len(server.requests) == 3


async def test_an_error_event_mid_stream_is_typed_and_not_retried(http_path: str) -> None:
    start = {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    error = {"error": {"code": 500, "message": "slot crashed", "type": "server_error"}}
    with FakeOpenAIServer() as server:
        server.inject(Fault.sse([start, error]))
        async with make(server) as lm:
            got: list[Any] = []
            with pytest.raises(ProviderUnavailable) as info:
                async for event in lm.astream(USER):
                    got.append(event)
    assert texts(got) == "Hel" and "slot crashed" in info.value.message
    assert len(server.requests) == 1, "a stream that had started is never sent again"


async def test_a_rejecting_error_event_becomes_provider_rejected(http_path: str) -> None:
    error = {"error": {"code": 400, "message": "bad grammar", "type": "invalid_request_error"}}
    with FakeOpenAIServer() as server:
        server.inject(Fault.sse([error]))
        async with make(server) as lm:
            with pytest.raises(ProviderRejected, match="bad grammar"):
                await lm.astream(USER).collect()
    assert len(server.requests) == 1


async def test_a_stream_cut_short_is_not_a_success(http_path: str) -> None:
    start = {"choices": [{"index": 0, "delta": {"content": "Half a rep"}}]}
    with FakeOpenAIServer() as server:
        server.inject(Fault.sse([start], done=False))
        async with make(server) as lm:
            with pytest.raises(ProviderUnavailable, match="ended the stream before"):
                await lm.astream(USER).collect()


async def test_a_stream_with_a_broken_event_is_malformed(http_path: str) -> None:
    with FakeOpenAIServer() as server:
        server.inject(Fault.sse(['{"choices": [{"index": 0, "delta": {"content": "a"']))
        async with make(server) as lm:
            with pytest.raises(MalformedResponse, match="not JSON"):
                await lm.astream(USER).collect()


async def test_an_empty_stream_is_an_empty_response_with_its_usage(http_path: str) -> None:
    chunks: list[str | dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 1}},
    ]
    with FakeOpenAIServer() as server:
        server.inject(Fault.sse(chunks))
        async with make(server) as lm:
            with pytest.raises(EmptyResponse) as info:
                await lm.astream(USER).collect()
    assert info.value.usage is not None
    assert (info.value.usage.input_tokens, info.value.usage.output_tokens) == (12, 1)


async def test_a_stream_that_stalls_times_out(http_path: str) -> None:
    with FakeOpenAIServer(["a b c d e f"], stream_interval=1.0) as server:
        async with make(server, retry=RetryPolicy(max_attempts=1)) as lm:
            t0 = time.monotonic()
            with pytest.raises(ProviderTimeout):
                await lm.astream(USER, timeout=0.3).collect()
    assert time.monotonic() - t0 < 3


async def test_usage_missing_from_a_stream_is_estimated(http_path: str) -> None:
    chunks: list[str | dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": "estimated reply"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    with FakeOpenAIServer() as server:
        server.inject(Fault.sse(chunks))
        async with make(server) as lm:
            done = await lm.astream(USER).collect()
    assert done.text == "estimated reply"
    assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0


async def test_stream_validates_messages_at_once() -> None:
    lm = ScriptedLM(["x"])
    with pytest.raises(InvalidInput):
        lm.astream([])


# -- fakes and Anthropic ----------------------------------------------------------------------


async def test_scripted_lm_streams_its_replies_as_deltas(tmp_path: Path) -> None:
    log = CallLog(tmp_path / "calls.db")
    lm = ScriptedLM([reply("two words", tool_call("f", {"x": 1}))], call_log=log)
    events = [e async for e in lm.astream(USER)]
    assert texts(events) == "two words"
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["f"]
    done = events[-1]
    assert isinstance(done, StreamDone) and done.completion.tool_calls[0].name == "f"
    assert log.recent(1)[0].completion is not None
    with lm.stream(USER) as sync_events, pytest.raises(ScriptExhausted):
        list(sync_events)  # the script ran out: its error reaches the reader
    assert log.recent(1)[0].error is not None


async def test_anthropic_stream_text_tool_calls_and_usage() -> None:
    pytest.importorskip("anthropic")
    call = tool_call("lookup", {"q": "holdfast"}, id="toolu_1")
    with FakeOpenAIServer([reply("Let me look.", call)]) as server:
        lm = get_lm(
            "anthropic:claude-haiku-4-5", base_url=server.base_url.removesuffix("/v1"),
            api_key="k", retry=FAST_RETRY,
        )  # fmt: skip
        async with lm:
            tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
            events = [e async for e in lm.astream(USER, tools=tools)]
    body = server.requests[-1]
    assert body["stream"] is True and body["tools"][0]["name"] == "lookup"
    assert texts(events) == "Let me look."
    pieces = [e for e in events if isinstance(e, ToolCallDelta)]
    assert pieces[0].id == "toolu_1" and pieces[0].name == "lookup"
    assert json.loads("".join(p.arguments for p in pieces)) == {"q": "holdfast"}
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.completion.finish_reason == "tool_calls"
    assert done.completion.tool_calls[0].parsed_arguments() == {"q": "holdfast"}
    assert done.completion.usage.input_tokens > 0 and done.completion.usage.output_tokens > 0
    assert done.completion.usage.cost_usd > 0


async def test_anthropic_stream_of_structured_output_is_the_json_text() -> None:
    pytest.importorskip("anthropic")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}

    def answer(body: dict[str, Any]) -> Any:
        name = body["tool_choice"]["name"]
        return reply("", tool_call(name, {"n": 3}))

    with FakeOpenAIServer(answer) as server:
        lm = get_lm(
            "anthropic:claude-haiku-4-5", base_url=server.base_url.removesuffix("/v1"),
            api_key="k", retry=FAST_RETRY,
        )  # fmt: skip
        async with lm:
            fmt = json_schema_format(schema, name="count")
            events = [e async for e in lm.astream(USER, response_format=fmt)]
    assert not [e for e in events if isinstance(e, ToolCallDelta)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert json.loads(texts(events)) == {"n": 3} == json.loads(done.completion.text)
    assert done.completion.finish_reason == "stop" and not done.completion.tool_calls


async def test_anthropic_stream_error_event_is_typed() -> None:
    pytest.importorskip("anthropic")
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with FakeOpenAIServer() as server:
        server.inject(Fault.sse([error], done=False))
        lm = get_lm(
            "anthropic:claude-haiku-4-5", base_url=server.base_url.removesuffix("/v1"),
            api_key="k", retry=RetryPolicy(max_attempts=1),
        )  # fmt: skip
        async with lm:
            with pytest.raises(ProviderUnavailable, match="Overloaded"):
                await lm.astream(USER).collect()


async def test_a_cancelled_stream_records_cancelled(tmp_path: Path) -> None:
    log = CallLog(tmp_path / "calls.db")
    lm = ScriptedLM(["a b c d"], call_log=log)
    async with lm.astream(USER) as stream:
        await stream.__anext__()
    (record,) = log.recent(1)
    assert record.error is not None and record.error["code"] == Cancelled.code
    assert record.error["partial_text"] == "a "


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
