"""Host functions: proxies in the box, concurrent serving, schema checks, long async calls."""

from __future__ import annotations

import asyncio
import time

import pytest

from holdfast.sandbox import HostFunctionSpec, SandboxPolicy, SyncSandbox, open_sandbox

pytestmark = pytest.mark.sandbox


def test_sync_and_async_host_functions_answer(shared_box: SyncSandbox) -> None:
    r = shared_box.execute("(echo({'a': [1, 'two']}), add(2, 3), add(a=4, b=5))")
    assert r.ok, r.error
    assert r.value_repr == "({'a': [1, 'two']}, 5, 9)"


def test_schema_violations_are_refused_in_the_box(shared_box: SyncSandbox) -> None:
    r = shared_box.execute("add('x', 1)")
    assert r.error is not None and r.error.type == "HostCallError"
    assert "expected integer" in r.error.message
    r = shared_box.execute("add(1, 2, 3)")
    assert r.error is not None and "positional" in r.error.message
    r = shared_box.execute("add(a=1, b=2, c=3)")
    assert r.error is not None and "unexpected 'c'" in r.error.message


def test_non_json_arguments_are_refused(shared_box: SyncSandbox) -> None:
    r = shared_box.execute("echo(object())")
    assert r.error is not None and r.error.type == "HostCallError"
    assert "JSON" in r.error.message


@pytest.mark.anyio
async def test_calls_from_many_threads_are_served_concurrently() -> None:
    active = 0
    peak = 0

    async def slow(i: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.2)
        active -= 1
        return i * i

    async with open_sandbox(functions=[HostFunctionSpec("slow", slow)]) as box:
        start = time.perf_counter()
        r = await box.execute(
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(16) as ex:\n"
            "    out = list(ex.map(slow, range(16)))\n"
            "out"
        )
        elapsed = time.perf_counter() - start
    assert r.ok, r.error
    assert r.value_repr == repr([i * i for i in range(16)])
    assert peak == 16
    assert elapsed < 2.0  # sixteen 0.2 s calls in sequence would take 3.2 s


@pytest.mark.anyio
async def test_failing_host_function_raises_in_the_box_without_host_traceback() -> None:
    def boom() -> None:
        raise RuntimeError("secret host path /root/x")

    async with open_sandbox(functions=[HostFunctionSpec("boom", boom)]) as box:
        r = await box.execute(
            "try:\n    boom()\nexcept HostCallError as e:\n    caught = str(e)\ncaught"
        )
    assert r.ok, r.error
    assert r.value_repr is not None and "boom() failed: RuntimeError" in r.value_repr
    assert "Traceback" not in r.value_repr


@pytest.mark.anyio
async def test_long_async_host_call_still_obeys_the_cell_deadline() -> None:
    async def forever() -> None:
        await asyncio.sleep(600)

    policy = SandboxPolicy(isolation="process")
    async with open_sandbox(policy, [HostFunctionSpec("llm_query", forever)]) as box:
        await box.execute("kept = 7")
        start = time.perf_counter()
        r = await box.execute("llm_query()", timeout=1.0)
        assert time.perf_counter() - start < 5
        assert r.timed_out and not r.fatal
        assert (await box.execute("kept")).value_repr == "7"


@pytest.mark.anyio
async def test_a_host_call_may_take_longer_than_other_cells() -> None:
    async def slow_model() -> str:
        await asyncio.sleep(1.5)
        return "answer"

    async with open_sandbox(functions=[HostFunctionSpec("llm_query", slow_model)]) as box:
        r = await box.execute("llm_query()", timeout=30)
    assert r.ok and r.value_repr == "'answer'"


@pytest.mark.anyio
async def test_register_after_start_defines_the_proxy() -> None:
    async with open_sandbox(SandboxPolicy(isolation="process")) as box:
        box.register(HostFunctionSpec("late", lambda: "here"))
        r = await box.execute("late()")
    assert r.value_repr == "'here'"
