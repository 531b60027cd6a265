"""Attempts that time out or are cancelled in flight are charged (as estimates), never free."""

from __future__ import annotations

import asyncio

import pytest

from holdfast.lm import ProviderTimeout, get_lm
from holdfast.lm.base import BaseLM, CallParams, attempt_estimate
from holdfast.lm.prices import Price
from holdfast.lm.retry import RetryPolicy
from holdfast.lm.types import failed_usage
from holdfast.testing import FakeOpenAIServer
from holdfast.testing.fake_wire import Fault

MESSAGES = [{"role": "user", "content": "a question " * 50}]


def _lm(server: FakeOpenAIServer, attempts: int) -> BaseLM:
    return get_lm(
        "openai:gpt-4o-mini",
        base_url=server.base_url,
        api_key="k",
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.0),
    )


@pytest.mark.anyio
async def test_a_timed_out_attempt_rides_on_the_replys_usage() -> None:
    async with FakeOpenAIServer([Fault.hang(), "fine"]) as server:
        lm = _lm(server, 2)
        try:
            done = await lm.acomplete(MESSAGES, max_tokens=300, timeout=0.3)
        finally:
            await lm.aclose()
    lost = attempt_estimate(MESSAGES, CallParams(max_tokens=300))
    assert done.text == "fine"
    assert done.usage.estimated_tokens == lost.total_tokens
    assert done.usage.output_tokens >= 300, "the lost attempt's reply limit is counted"
    price = Price(0.15, 0.60)
    assert done.usage.cost_usd >= price.cost(lost.input_tokens, lost.output_tokens)


@pytest.mark.anyio
async def test_a_call_whose_attempts_all_time_out_carries_their_usage() -> None:
    async with FakeOpenAIServer([Fault.hang(), Fault.hang()]) as server:
        lm = _lm(server, 2)
        try:
            with pytest.raises(ProviderTimeout) as err:
                await lm.acomplete(MESSAGES, max_tokens=100, timeout=0.2)
        finally:
            await lm.aclose()
    usage = failed_usage(err.value)
    assert usage is not None and usage.estimated_tokens == usage.total_tokens
    assert usage.output_tokens == 200 and usage.cost_usd > 0, "two attempts, priced"


@pytest.mark.anyio
async def test_a_cancelled_call_closes_its_request_and_carries_its_estimate() -> None:
    async with FakeOpenAIServer([Fault.hang()]) as server:
        lm = _lm(server, 1)
        task = asyncio.ensure_future(lm.acomplete(MESSAGES, max_tokens=50))
        for _ in range(200):
            if server.requests:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as err:
            await task
        for _ in range(200):
            if server.disconnects:
                break
            await asyncio.sleep(0.01)
        await lm.aclose()
        assert server.disconnects, "the server saw the request go"
    usage = failed_usage(err.value)
    assert usage is not None and usage.output_tokens == 50
