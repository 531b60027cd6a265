"""The real ``openai`` SDK path (OpenAICompatLM) against FakeOpenAIServer over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from holdfast.errors import ConfigError
from holdfast.lm import (
    BaseLM,
    Completion,
    EmptyResponse,
    MalformedResponse,
    MissingAPIKey,
    ProviderAuthError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RetryPolicy,
    UnknownProvider,
    Usage,
    get_lm,
    json_schema_format,
    parse_json_reply,
)
from holdfast.testing import FakeOpenAIServer, Fault, reply, tool_call

USER: list[Any] = [{"role": "user", "content": "Say hello."}]
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
pytestmark = pytest.mark.anyio


DIRECT = False


@pytest.fixture(params=["sdk", "direct"], autouse=True)
def http_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run every test over the SDK path and over the direct path."""
    global DIRECT
    DIRECT = request.param == "direct"
    yield request.param
    DIRECT = False


def make(server: FakeOpenAIServer, model: str = "vllm:test-model", **kw: Any) -> BaseLM:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("direct_http", DIRECT)
    return get_lm(model, base_url=server.base_url, **kw)


async def test_plain_call_sends_exact_messages(server: FakeOpenAIServer) -> None:
    server.inject("Hello, world.")
    async with make(server) as lm:
        out = await lm.acomplete(USER, temperature=0.0, max_tokens=50)
    assert out.text == "Hello, world." and out.finish_reason == "stop"
    assert out.model == "vllm:test-model" and out.call_id
    body = server.requests[-1]
    assert body["model"] == "test-model" and body["messages"] == USER
    assert body["temperature"] == 0.0 and body["max_tokens"] == 50
    assert out.usage.input_tokens > 0 and out.usage.output_tokens > 0
    assert out.usage.latency_s > 0


async def test_openai_provider_uses_max_completion_tokens(server: FakeOpenAIServer) -> None:
    async with make(server, "openai:gpt-4o-mini", api_key="sk-test") as lm:
        await lm.acomplete(USER, max_tokens=7)
    assert server.requests[-1]["max_completion_tokens"] == 7
    assert server.request_log[-1].headers["authorization"] == "Bearer sk-test"


async def test_streaming_at_the_server_level(server: FakeOpenAIServer) -> None:
    import openai

    server.inject("one two three")
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        pieces, usage, reasons = [], None, []
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                reasons.append(chunk.choices[0].finish_reason)
            else:
                usage = chunk.usage
    finally:
        await client.close()
    assert "".join(pieces) == "one two three"
    assert len(pieces) >= 4 and reasons[-1] == "stop"
    assert usage is not None and usage.completion_tokens > 0


async def test_tool_calls_round_trip(server: FakeOpenAIServer) -> None:
    server.inject(reply("", tool_call("get_weather", {"city": "Paris"}, id="call_1")))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with make(server) as lm:
        out = await lm.acomplete(USER, tools=tools, tool_choice="auto")
        follow = [
            *USER,
            out.to_message(),
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        final = await lm.acomplete(follow, tools=tools)
    assert out.finish_reason == "tool_calls"
    assert out.tool_calls[0].name == "get_weather"
    assert out.tool_calls[0].parsed_arguments() == {"city": "Paris"}
    assert server.requests[0]["tools"] == tools and server.requests[0]["tool_choice"] == "auto"
    assert server.requests[1]["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert final.text.startswith("echo:")


class City(BaseModel):
    name: str
    population: int


async def test_structured_output_sends_json_schema() -> None:
    def handler(body: dict[str, Any]) -> str:
        schema = body["response_format"]["json_schema"]["schema"]
        assert set(schema["required"]) == {"name", "population"}
        return json.dumps({"name": "Paris", "population": 2_100_000})

    with FakeOpenAIServer(handler) as srv:
        async with make(srv) as lm:
            out = await lm.acomplete(USER, response_format=json_schema_format(City))
    assert srv.requests[0]["response_format"]["type"] == "json_schema"
    assert City.model_validate(parse_json_reply(out)) == City(name="Paris", population=2_100_000)


async def test_stop_sequences_are_sent_and_applied(server: FakeOpenAIServer) -> None:
    server.inject("first part\n\nObservation: invented")
    async with make(server) as lm:
        out = await lm.acomplete(USER, stop=["Observation:"])
    assert server.requests[0]["stop"] == ["Observation:"]
    assert out.text == "first part\n\n"


async def test_usage_and_cost_from_the_price_table(server: FakeOpenAIServer) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_tokens=200_000)
    server.inject(Completion(text="ok", usage=usage), Completion(text="ok", usage=usage))
    async with make(server, "openai:gpt-4o-mini", api_key="k") as lm:
        out = await lm.acomplete(USER)
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.cached_tokens) == (
        1_000_000,
        500_000,
        200_000,
    )
    assert out.usage.cost_usd == pytest.approx(0.8 * 0.15 + 0.2 * 0.075 + 0.5 * 0.60)
    assert out.usage.priced
    async with make(server, "together:unknown-model-x", api_key="k") as lm:
        unknown = await lm.acomplete(USER)
    assert unknown.usage.cost_usd == 0.0 and not unknown.usage.priced


async def test_retry_after_is_honoured(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=0.6))
    async with make(server) as lm:
        t0 = time.perf_counter()
        out = await lm.acomplete(USER)
        elapsed = time.perf_counter() - t0
    assert out.text.startswith("echo:")
    assert len(server.requests) == 2
    gap = server.request_log[1].received_at - server.request_log[0].received_at
    assert 0.6 <= gap < 1.5 and elapsed >= 0.6


async def test_rate_limit_exhausts_retries(server: FakeOpenAIServer) -> None:
    server.inject(*[Fault.rate_limit(retry_after=0.01)] * 3)
    async with make(server) as lm:
        with pytest.raises(RateLimited, match="429") as info:
            await lm.acomplete(USER)
    assert info.value.attempts == 3 and info.value.retryable and len(server.requests) == 3


async def test_retry_after_longer_than_allowed_fails_at_once(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=3600))
    async with make(server) as lm:
        with pytest.raises(RateLimited, match="Retry-After"):
            await lm.acomplete(USER)
    assert len(server.requests) == 1


async def test_500_is_retried_then_reported(server: FakeOpenAIServer) -> None:
    server.inject(Fault.status(500), Fault.status(503))
    async with make(server) as lm:
        assert (await lm.acomplete(USER)).text.startswith("echo:")
        assert len(server.requests) == 3
        server.inject(*[Fault.status(502, "bad gateway")] * 3)
        with pytest.raises(ProviderUnavailable, match="HTTP 502") as info:
            await lm.acomplete(USER)
    assert info.value.details["status"] == 502


async def test_hang_times_out_and_is_retried(server: FakeOpenAIServer) -> None:
    server.inject(Fault.hang())
    async with make(server) as lm:
        t0 = time.perf_counter()
        out = await lm.acomplete(USER, timeout=0.3)
        assert out.text.startswith("echo:") and time.perf_counter() - t0 >= 0.3
        server.inject(*[Fault.hang()] * 3)
        with pytest.raises(ProviderTimeout, match=r"did not answer within 0\.3 s"):
            await lm.acomplete(USER, timeout=0.3)


async def test_dropped_connection_is_retried(server: FakeOpenAIServer) -> None:
    server.inject(Fault.drop())
    async with make(server) as lm:
        assert (await lm.acomplete(USER)).text.startswith("echo:")
        server.inject(*[Fault.drop()] * 3)
        with pytest.raises(ProviderUnavailable, match="after 3 attempts"):
            await lm.acomplete(USER)


async def test_malformed_json_carries_a_body_excerpt(server: FakeOpenAIServer) -> None:
    server.inject(Fault.malformed('{"choices": [{"message": trunc'))
    async with make(server) as lm:
        with pytest.raises(MalformedResponse) as info:
            await lm.acomplete(USER)
    assert '{"choices": [{"message": trunc' in info.value.body_excerpt
    assert "not JSON" in str(info.value) and len(server.requests) == 1
    server.inject({"id": "x", "object": "chat.completion", "choices": []})
    async with make(server) as lm:
        with pytest.raises(MalformedResponse, match="not a chat completion"):
            await lm.acomplete(USER)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ProviderRejected),
        (401, ProviderAuthError),
        (403, ProviderAuthError),
        (404, ProviderRejected),
    ],
)
async def test_client_errors_are_not_retried(
    server: FakeOpenAIServer, status: int, error: type[Exception]
) -> None:
    server.inject(Fault.status(status, "nope"))
    async with make(server) as lm:
        with pytest.raises(error, match=f"HTTP {status}"):
            await lm.acomplete(USER)
    assert len(server.requests) == 1


async def test_empty_reply_is_an_error(server: FakeOpenAIServer) -> None:
    server.inject("")
    async with make(server) as lm:
        with pytest.raises(EmptyResponse, match="empty reply"):
            await lm.acomplete(USER)


def test_missing_key_names_the_variable(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKey, match="OPENAI_API_KEY"):
        get_lm("openai:gpt-4o-mini")
    env = {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": server.base_url}
    with get_lm("openai:gpt-4o-mini", env=env, direct_http=DIRECT) as lm:
        assert lm.complete(USER).text.startswith("echo:")
    assert server.request_log[-1].headers["authorization"] == "Bearer sk-env"


def test_the_process_environment_is_read_by_default(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-process")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    with get_lm("openai:gpt-4o-mini", direct_http=DIRECT) as lm:
        assert lm.complete(USER).text.startswith("echo:")
    assert server.request_log[-1].headers["authorization"] == "Bearer sk-process"
    with pytest.raises(MissingAPIKey):
        get_lm("openai:gpt-4o-mini", env={})  # {} ignores the environment


def test_unknown_provider_lists_known_ones() -> None:
    with pytest.raises(UnknownProvider, match=r"known providers: .*ollama.*openai"):
        get_lm("nosuch:model")
    with pytest.raises(ConfigError, match="provider:model"):
        get_lm("gpt-4o")


async def test_unreachable_url_is_named_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    async with get_lm("vllm:m", base_url=url, retry=FAST_RETRY, direct_http=DIRECT) as lm:
        with pytest.raises(ProviderUnavailable) as info:
            await lm.acomplete(USER)
    assert url in str(info.value) and info.value.attempts == 3


async def test_cancellation_closes_the_http_request(server: FakeOpenAIServer) -> None:
    server.inject(Fault.hang())
    async with make(server) as lm:
        task = asyncio.create_task(lm.acomplete(USER))
        for _ in range(200):
            if server.in_flight:
                break
            await asyncio.sleep(0.01)
        assert server.in_flight == 1
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if server.disconnects:
                break
            await asyncio.sleep(0.01)
    assert server.disconnects and server.disconnects[0] - cancelled_at < 0.5
    assert lm.limiter.active == 0  # type: ignore[attr-defined]


async def test_limiter_bounds_calls_in_flight_across_lms() -> None:
    with FakeOpenAIServer(latency=0.05) as srv:
        async with make(srv, max_concurrency=4) as a, make(srv) as b:
            outs = await asyncio.gather(
                *(a.acomplete(USER) for _ in range(12)), *(b.acomplete(USER) for _ in range(12))
            )
        assert len(outs) == 24
        assert srv.max_in_flight == 4


async def test_server_sustains_256_concurrent_connections() -> None:
    # every reply waits until all 256 are in flight (or 10 s): the client's concurrency is
    # measured, not raced against a slow machine opening the last connections
    with FakeOpenAIServer(latency=0.05, gather=256) as srv:
        async with make(srv, max_concurrency=256) as lm:
            t0 = time.perf_counter()
            await asyncio.gather(*(lm.acomplete(USER) for _ in range(256)))
            elapsed = time.perf_counter() - t0
    assert srv.max_in_flight == 256
    assert elapsed < 9.0  # one wave (a loaded machine: seconds); fewer than 256 at once: 10 s


def test_sync_calls_reuse_one_loop_and_close(server: FakeOpenAIServer) -> None:
    lm = make(server)
    texts = [lm.complete([{"role": "user", "content": f"n{i}"}]).text for i in range(3)]
    lm.close()
    assert texts == ["echo: n0", "echo: n1", "echo: n2"]
    assert server.connections_opened == 1  # one kept-alive connection for all sync calls


def test_sync_calls_from_many_threads_share_the_lm(server: FakeOpenAIServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server.latency = 0.1
    lm = make(server)
    try:
        with ThreadPoolExecutor(8) as pool:
            t0 = time.perf_counter()
            texts = list(
                pool.map(
                    lambda i: lm.complete([{"role": "user", "content": f"t{i}"}]).text, range(16)
                )
            )
            elapsed = time.perf_counter() - t0
    finally:
        lm.close()
    assert texts == [f"echo: t{i}" for i in range(16)]
    assert server.max_in_flight >= 4 and elapsed < 1.5  # 16 x 0.1 s run concurrently


async def test_embeddings_are_deterministic(server: FakeOpenAIServer) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    try:
        a = await client.embeddings.create(model="e", input=["red apple pie", "red apple"])
        b = await client.embeddings.create(model="e", input="red apple pie", dimensions=16)
        c = await client.embeddings.create(
            model="e", input="red apple pie", encoding_format="float"
        )
    finally:
        await client.close()
    v0, v1 = a.data[0].embedding, a.data[1].embedding
    assert len(v0) == 64 and len(b.data[0].embedding) == 16
    assert c.data[0].embedding == pytest.approx(v0, abs=1e-6)
    assert sum(x * y for x, y in zip(v0, v1, strict=True)) > 0.5
    assert sum(x * x for x in v0) == pytest.approx(1.0, abs=1e-5)


def test_retry_policy_validation() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


async def test_standard_transport_path_behaves_the_same(server: FakeOpenAIServer) -> None:
    server.inject("plain", Fault.hang(), Fault.status(500))
    async with make(server, lean_http=False) as lm:
        assert (await lm.acomplete(USER)).text == "plain"
        assert (await lm.acomplete(USER, timeout=0.3)).text.startswith("echo:")
        server.inject(Fault.hang())
        task = asyncio.create_task(lm.acomplete(USER))
        while not server.in_flight:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if server.disconnects:
                break
            await asyncio.sleep(0.01)
    assert server.disconnects


async def test_lean_transport_streams_chunked_bodies_and_reuses_connections(
    server: FakeOpenAIServer,
) -> None:
    import httpx2
    import openai

    from holdfast.lm.transport import LeanHTTP1Transport

    transport = LeanHTTP1Transport()
    http = httpx2.AsyncClient(mounts={"http://": transport})
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", http_client=http)
    try:
        server.inject("alpha beta gamma")
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        for _ in range(3):
            await client.chat.completions.create(model="m", messages=USER)
    finally:
        await client.close()
    assert text == "alpha beta gamma"
    assert len(server.request_log) == 4 and server.connections_opened == 1


async def test_a_failing_reply_function_becomes_a_500() -> None:
    def handler(body: dict[str, Any]) -> str:
        raise KeyError("no such fixture")

    with FakeOpenAIServer(handler) as srv:
        async with make(srv, retry=RetryPolicy(max_attempts=1)) as lm:
            with pytest.raises(ProviderUnavailable, match="KeyError"):
                await lm.acomplete(USER)
    assert len(srv.handler_errors) == 1


def test_garbage_on_the_wire_closes_only_that_connection(server: FakeOpenAIServer) -> None:
    host, port = server.base_url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        assert s.recv(100) == b""
    with make(server) as lm:
        assert lm.complete(USER).text.startswith("echo:")


def test_a_loopback_base_url_needs_no_key(server: FakeOpenAIServer) -> None:
    # the README's line: OPENAI_BASE_URL=http://127.0.0.1:8000/v1 ... MODEL=openai:<model>
    env = {"OPENAI_BASE_URL": server.base_url}
    with get_lm("openai:qwen3-8b", env=env, direct_http=DIRECT) as lm:
        assert lm.complete(USER).text.startswith("echo:")
    assert server.request_log[-1].headers["authorization"] == "Bearer not-needed"
    localhost = server.base_url.replace("127.0.0.1", "localhost")
    with get_lm("openai:qwen3-8b", base_url=localhost, env={}, direct_http=DIRECT) as lm:
        assert lm.complete(USER).text.startswith("echo:")
    for remote in ("https://api.openai.com/v1", "http://10.0.0.5:8000/v1", "http://127x.io/v1"):
        with pytest.raises(MissingAPIKey, match="OPENAI_API_KEY"):
            get_lm("openai:qwen3-8b", base_url=remote, env={})
    with get_lm("vllm:qwen3-8b", base_url="http://10.0.0.5:8000/v1", env={}):
        pass  # a local-server provider needs no key wherever it is
