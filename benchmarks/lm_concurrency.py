"""Model-call fan-out: N calls of latency L at concurrency C against the fake server.

Prints a table: wall time against the ideal L x ceil(N / C) (target: within 10 %), and the
client's own overhead per call at zero latency, sequential and concurrent, with the raw ``openai``
SDK as a reference. The server runs in a separate process by default (``--server thread`` puts it
in this process, sharing the GIL with the client).

    .venv/bin/python benchmarks/lm_concurrency.py [--calls 1000] [--latency 0.2] [--server process]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from holdfast.lm import get_lm
from holdfast.testing import FakeOpenAIServer

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the paragraph in one sentence: " + "lorem ipsum " * 40},
]


@contextmanager
def serve(latency: float, mode: str) -> Iterator[str]:
    """A fake server base URL, in this process (thread) or a child process."""
    if mode == "thread":
        with FakeOpenAIServer(latency=latency, default_reply="A one-sentence summary.") as srv:
            yield srv.base_url
        return
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "holdfast.testing",
            "--latency",
            str(latency),
            "--reply",
            "A one-sentence summary.",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def fan_out(base_url: str, calls: int, concurrency: int, lean: bool = True) -> float:
    async with get_lm(
        "vllm:bench", base_url=base_url, max_concurrency=concurrency, lean_http=lean
    ) as lm:
        await asyncio.gather(*(lm.acomplete(MESSAGES) for _ in range(concurrency)))
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(lm.acomplete(MESSAGES) for _ in range(calls)))
        wall = time.perf_counter() - t0
    assert len(outs) == calls and all(o.text for o in outs)
    return wall


async def sequential(base_url: str, calls: int, lean: bool = True) -> float:
    async with get_lm("vllm:bench", base_url=base_url, lean_http=lean) as lm:
        for _ in range(20):
            await lm.acomplete(MESSAGES)
        t0 = time.perf_counter()
        for _ in range(calls):
            await lm.acomplete(MESSAGES)
        return (time.perf_counter() - t0) / calls


async def raw_sdk(base_url: str, calls: int, concurrency: int) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await client.chat.completions.create(model="bench", messages=MESSAGES)  # type: ignore[arg-type]

    try:
        for _ in range(20):
            await one()
        t0 = time.perf_counter()
        if concurrency == 1:
            for _ in range(calls):
                await one()
        else:
            await asyncio.gather(*(one() for _ in range(calls)))
        return (time.perf_counter() - t0) / calls
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--overhead-calls", type=int, default=1000)
    parser.add_argument("--server", choices=["process", "thread"], default="process")
    args = parser.parse_args()

    print(
        f"fan-out: {args.calls} calls, {args.latency * 1000:.0f} ms each, server in a {args.server}"
    )
    print(
        f"{'transport':>9} {'concurrency':>11} {'ideal s':>8} {'wall s':>8} {'over ideal':>10} "
        f"{'calls/s':>8}"
    )
    with serve(args.latency, args.server) as url:
        for lean in (True, False):
            for c in args.concurrency:
                ideal = args.latency * math.ceil(args.calls / c)
                wall = asyncio.run(fan_out(url, args.calls, c, lean))
                print(
                    f"{'lean' if lean else 'standard':>9} {c:>11} {ideal:>8.2f} {wall:>8.2f} "
                    f"{100 * (wall / ideal - 1):>9.1f}% {args.calls / wall:>8.0f}"
                )

    n = args.overhead_calls
    print(f"\nclient overhead at zero latency ({n} calls, server in a {args.server})")
    print(f"{'mode':<31} {'ms/call':>8}")
    with serve(0.0, args.server) as url:
        rows = [
            ("holdfast sequential", asyncio.run(sequential(url, n))),
            ("holdfast sequential, standard", asyncio.run(sequential(url, n, lean=False))),
            ("raw openai SDK sequential", asyncio.run(raw_sdk(url, n, 1))),
            ("holdfast concurrent (64)", asyncio.run(fan_out(url, n, 64)) / n),
            ("holdfast concurrent, standard", asyncio.run(fan_out(url, n, 64, lean=False)) / n),
            ("raw openai SDK concurrent (64)", asyncio.run(raw_sdk(url, n, 64))),
        ]
    for name, per_call in rows:
        print(f"{name:<31} {per_call * 1000:>8.3f}")


if __name__ == "__main__":
    main()
