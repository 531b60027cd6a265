"""Which HTTP path a call takes by default, where it falls back to the SDK, and how 429s slow it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.cli.main import cli
from holdfast.errors import ConfigError
from holdfast.lm import EndpointLimiter, RetryPolicy, get_lm
from holdfast.lm.openai_compat import OpenAICompatLM, choose_http_path
from holdfast.testing import FakeOpenAIServer, Fault

USER = [{"role": "user", "content": "Say hello."}]
pytestmark = pytest.mark.anyio


def sent_by(server: FakeOpenAIServer) -> str:
    """Which client sent the last request: the direct client names itself, the SDK does not."""
    agent = server.request_log[-1].headers.get("user-agent", "")
    return "direct" if agent == "holdfast" else "sdk"


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


# ----- the choice ------------------------------------------------------------------------------


def test_plain_http_defaults_to_direct_and_https_to_the_sdk() -> None:
    assert choose_http_path("http://127.0.0.1:8000/v1", direct_http=None) == "direct"
    assert choose_http_path("https://api.openai.com/v1", direct_http=None) == "sdk"
    # the standard httpx pool was asked for: the SDK serves it
    assert choose_http_path("http://10.0.0.5:8000/v1", direct_http=None, lean_http=False) == "sdk"
    assert choose_http_path("http://127.0.0.1:8000/v1", direct_http=False) == "sdk"
    assert choose_http_path("http://127.0.0.1:8000/v1", direct_http=True) == "direct"
    with pytest.raises(ConfigError, match="plain http://"):
        choose_http_path("https://api.openai.com/v1", direct_http=True)


def test_get_lm_picks_the_documented_path() -> None:
    local = get_lm("vllm:m", env={})
    hosted = get_lm("openai:gpt-4o-mini", api_key="sk-test", env={})
    assert isinstance(local, OpenAICompatLM) and isinstance(hosted, OpenAICompatLM)
    assert local.http_path == "direct" and local.direct_http
    assert hosted.http_path == "sdk" and not hosted.direct_http
    forced = get_lm("vllm:m", env={}, direct_http=False)
    assert isinstance(forced, OpenAICompatLM) and forced.http_path == "sdk"


def test_sdk_only_headers_in_the_environment_keep_the_sdk() -> None:
    # the SDK sends OPENAI_ORG_ID / OPENAI_PROJECT_ID as headers; the direct client would not
    lm = get_lm("vllm:m", env={"OPENAI_ORG_ID": "org-1"})
    assert isinstance(lm, OpenAICompatLM) and lm.http_path == "sdk"
    forced = get_lm("vllm:m", env={"OPENAI_PROJECT_ID": "p"}, direct_http=True)
    assert isinstance(forced, OpenAICompatLM) and forced.http_path == "direct"


def test_anthropic_always_uses_its_sdk() -> None:
    pytest.importorskip("anthropic")
    lm = get_lm("anthropic:claude-haiku-4-5", base_url="http://127.0.0.1:9", api_key="k", env={})
    assert isinstance(lm, OpenAICompatLM) and lm.http_path == "sdk"


async def test_the_default_call_goes_over_the_direct_client(fake: FakeOpenAIServer) -> None:
    async with get_lm("vllm:m", base_url=fake.base_url, env={}) as lm:
        out = await lm.acomplete(USER)
    assert out.text == "echo: Say hello." and sent_by(fake) == "direct"
    async with get_lm("vllm:m", base_url=fake.base_url, env={}, direct_http=False) as lm:
        await lm.acomplete(USER)
    assert sent_by(fake) == "sdk"
    async with get_lm("vllm:m", base_url=fake.base_url, env={}, lean_http=False) as lm:
        await lm.acomplete(USER)
    assert sent_by(fake) == "sdk"


async def test_the_default_stream_goes_over_the_direct_client(fake: FakeOpenAIServer) -> None:
    async with get_lm("vllm:m", base_url=fake.base_url, env={}) as lm:
        reply = await lm.astream(USER).collect()
    assert reply.text == "echo: Say hello." and sent_by(fake) == "direct"


def test_cli_defaults_to_direct_and_sdk_http_forces_the_sdk(fake: FakeOpenAIServer) -> None:
    runner = CliRunner()
    args = ["lm", "call", "--model", "vllm:tiny", "--base-url", fake.base_url, "--no-log"]
    assert runner.invoke(cli, [*args, "hi"]).exit_code == 0
    assert sent_by(fake) == "direct"
    assert runner.invoke(cli, [*args, "--sdk-http", "hi"]).exit_code == 0
    assert sent_by(fake) == "sdk"
    assert runner.invoke(cli, [*args, "--direct-http", "hi"]).exit_code == 0
    assert sent_by(fake) == "direct"


# ----- 429 slows the endpoint down ---------------------------------------------------------------


def test_a_429_halves_the_limit_once_per_epoch_and_successes_grow_it_back() -> None:
    limiter = EndpointLimiter(16)
    epoch = limiter.epoch
    assert limiter.throttle(epoch) and limiter.current == 8 and limiter.limit == 16
    # the rest of the same burst was let in under the old limit: no further halving
    assert not limiter.throttle(epoch) and limiter.current == 8
    assert limiter.throttle(limiter.epoch) and limiter.current == 4
    for _ in range(5):
        limiter.throttle(limiter.epoch)
    assert limiter.current == 1  # never below one
    for _ in range(1 + 2 + 3):
        limiter.succeeded()
    assert limiter.current == 4  # one more after each window's worth of successes
    limiter.set_limit(32)
    assert limiter.current == 32


async def test_a_throttled_limiter_lets_fewer_in_and_wakes_them_as_it_recovers() -> None:
    limiter = EndpointLimiter(4)
    limiter.throttle(limiter.epoch)
    limiter.throttle(limiter.epoch)
    assert limiter.current == 1
    live = peak = 0
    gate = asyncio.Event()

    async def job() -> None:
        nonlocal live, peak
        async with limiter.slot():
            live += 1
            peak = max(peak, live)
            await gate.wait()
            live -= 1

    tasks = [asyncio.create_task(job()) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert live == 1
    limiter.succeeded()  # a window of one success: the limit is 2 and a waiter is let in
    await asyncio.sleep(0.01)
    assert live == 2 and limiter.current == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 2


@pytest.mark.parametrize("direct", [True, False])
async def test_a_fan_out_into_a_rate_limited_server_slows_down_instead_of_failing(
    direct: bool,
) -> None:
    capacity = 6
    box: dict[str, FakeOpenAIServer] = {}
    rejected = 0

    async def handler(body: dict[str, Any]) -> Any:
        nonlocal rejected
        if box["srv"].in_flight > capacity:
            rejected += 1
            return Fault.rate_limit(retry_after=None)
        await asyncio.sleep(0.05)
        return "ok"

    with FakeOpenAIServer(handler) as srv:
        box["srv"] = srv
        retry = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, jitter=0.0)
        async with get_lm(
            "vllm:m",
            base_url=srv.base_url,
            env={},
            max_concurrency=48,
            retry=retry,
            direct_http=direct,
        ) as lm:
            assert isinstance(lm, OpenAICompatLM)
            outs = await asyncio.gather(*(lm.acomplete(USER) for _ in range(48)))
            epochs = lm.limiter.epoch
    assert [o.text for o in outs] == ["ok"] * 48
    # the limit came down from 48 to what the server takes (48 -> 24 -> 12 -> 6)
    assert rejected > 0 and epochs >= 3
