from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.errors import ConfigError
from holdfast.lm import EndpointLimiter, RetryPolicy, endpoint_limiter
from holdfast.lm.retry import parse_retry_after, should_retry_status

pytestmark = pytest.mark.anyio


async def test_limiter_is_fifo_and_bounded() -> None:
    limiter = EndpointLimiter(2)
    active = 0
    peak = 0
    order: list[int] = []

    async def job(i: int) -> None:
        nonlocal active, peak
        async with limiter.slot():
            order.append(i)
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(job(i) for i in range(10)))
    assert peak == 2 and limiter.high_water == 2 and limiter.active == 0
    assert order == list(range(10))


async def test_cancelled_waiters_do_not_leak_slots() -> None:
    limiter = EndpointLimiter(1)
    await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(5)]
    await asyncio.sleep(0.01)
    for w in waiters[:3]:
        w.cancel()
    limiter.release()
    await asyncio.sleep(0.01)
    waiters[0:3] = []
    assert sum(w.done() for w in waiters) == 1 and limiter.active == 1
    limiter.release()
    await asyncio.gather(*waiters)
    limiter.release()
    assert limiter.active == 0


def test_limiter_is_shared_across_threads_and_loops() -> None:
    limiter = EndpointLimiter(3)
    lock = threading.Lock()
    state = {"active": 0, "peak": 0}

    async def worker() -> None:
        for _ in range(5):
            async with limiter.slot():
                with lock:
                    state["active"] += 1
                    state["peak"] = max(state["peak"], state["active"])
                await asyncio.sleep(0.005)
                with lock:
                    state["active"] -= 1

    async def many() -> None:
        await asyncio.gather(*(worker() for _ in range(4)))

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert state["peak"] == 3 and limiter.active == 0


def test_endpoint_limiter_registry() -> None:
    a = endpoint_limiter("http://127.0.0.1:1/v1/", default=7)
    assert endpoint_limiter("http://127.0.0.1:1/v1") is a and a.limit == 7
    assert endpoint_limiter("http://127.0.0.1:1/v1", 3).limit == 3
    with pytest.raises(ConfigError):
        EndpointLimiter(0)


@given(st.integers(1, 30), st.floats(0, 1))
def test_backoff_is_bounded_and_jittered(attempt: int, seed: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=20.0, jitter=0.25)
    delay = policy.backoff(attempt, random.Random(seed))
    ceiling = min(20.0, 0.5 * 2 ** (attempt - 1))
    assert 0.75 * ceiling <= delay <= ceiling


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"retry-after": when}) or 0) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    delay = RetryPolicy().delay(1, 3.0, random.Random(1))
    assert 3.0 <= delay <= 3.1


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (429, True),
        (500, True),
        (503, True),
        (408, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
def test_which_statuses_are_retried(status: int, retry: bool) -> None:
    assert should_retry_status(status) is retry
