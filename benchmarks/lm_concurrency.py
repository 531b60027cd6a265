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
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from holdfast.lm import get_lm
from holdfast.testing import FakeOpenAIServer

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the paragraph in one sentence: " + "lorem ipsum " * 40},
]


class Server:
    """A running fake server: its base URL and (in process mode) its CPU seconds so far."""

    def __init__(self, url: str, pid: int | None) -> None:
        self.url = url
        self.pid = pid

    def cpu(self) -> float:
        if self.pid is None:
            return 0.0
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serve(latency: float, mode: str) -> Iterator[Server]:
    """A fake server, in this process (thread) or a child process."""
    if mode == "thread":
        with FakeOpenAIServer(latency=latency, default_reply="A one-sentence summary.") as srv:
            yield Server(srv.base_url, None)
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
        yield Server(proc.stdout.readline().strip(), proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Timing:
    """Wall time and this process's CPU time over a block."""

    def __enter__(self) -> Timing:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


PATHS: dict[str, dict[str, Any]] = {
    "sdk": {"lean_http": True},
    "direct": {"direct_http": True},
    "sdk-std": {"lean_http": False},
}


async def fan_out(base_url: str, calls: int, concurrency: int, path: str = "sdk") -> Timing:
    async with get_lm(
        "vllm:bench", base_url=base_url, max_concurrency=concurrency, **PATHS[path]
    ) as lm:
        await asyncio.gather(*(lm.acomplete(MESSAGES) for _ in range(concurrency)))
        with Timing() as t:
            outs = await asyncio.gather(*(lm.acomplete(MESSAGES) for _ in range(calls)))
    assert len(outs) == calls and all(o.text for o in outs)
    return t


async def sequential(base_url: str, calls: int, path: str = "sdk") -> Timing:
    async with get_lm("vllm:bench", base_url=base_url, **PATHS[path]) as lm:
        for _ in range(20):
            await lm.acomplete(MESSAGES)
        with Timing() as t:
            for _ in range(calls):
                await lm.acomplete(MESSAGES)
    return t


async def raw_sdk(base_url: str, calls: int, concurrency: int) -> Timing:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await client.chat.completions.create(model="bench", messages=MESSAGES)  # type: ignore[arg-type]

    try:
        for _ in range(20):
            await one()
        with Timing() as t:
            if concurrency == 1:
                for _ in range(calls):
                    await one()
            else:
                await asyncio.gather(*(one() for _ in range(calls)))
        return t
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--overhead-calls", type=int, default=1000)
    parser.add_argument("--server", choices=["process", "thread"], default="process")
    parser.add_argument(
        "--repeat", type=int, default=1, help="fan-out runs per row; the fastest is shown"
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=sorted(PATHS),
        default=["sdk", "direct"],
        help="sdk: openai SDK + lean transport (default); direct: direct_http=True; "
        "sdk-std: openai SDK + the standard httpx pool",
    )
    args = parser.parse_args()

    print(
        f"fan-out: {args.calls} calls, {args.latency * 1000:.0f} ms each, server in a "
        f"{args.server}, best of {max(1, args.repeat)}"
    )
    print(
        f"{'path':>8} {'conc.':>5} {'ideal s':>8} {'wall s':>7} {'over':>7} "
        f"{'calls/s':>8} {'client CPU ms/call':>19} {'server CPU ms/call':>19}"
    )
    with serve(args.latency, args.server) as srv:
        for path in args.paths:
            for c in args.concurrency:
                ideal = args.latency * math.ceil(args.calls / c)
                runs = []
                for _ in range(max(1, args.repeat)):
                    before = srv.cpu()
                    run = asyncio.run(fan_out(srv.url, args.calls, c, path))
                    runs.append((run, srv.cpu() - before))
                t, server_cpu = min(runs, key=lambda r: r[0].wall)
                server_ms = 1000 * server_cpu / (args.calls + c)
                print(
                    f"{path:>8} {c:>5} {ideal:>8.2f} {t.wall:>7.2f} "
                    f"{100 * (t.wall / ideal - 1):>6.1f}% {args.calls / t.wall:>8.0f} "
                    f"{1000 * t.cpu / args.calls:>19.3f} {server_ms:>19.3f}"
                )

    n = args.overhead_calls
    print(f"\nclient overhead at zero latency ({n} calls, server in a {args.server})")
    print(f"{'mode':<34} {'wall ms/call':>12} {'CPU ms/call':>12}")
    rows: list[tuple[str, Timing]] = []
    with serve(0.0, args.server) as srv:
        url = srv.url
        for path in args.paths:
            rows.append((f"holdfast {path}, sequential", asyncio.run(sequential(url, n, path))))
            rows.append((f"holdfast {path}, concurrent 64", asyncio.run(fan_out(url, n, 64, path))))
        rows.append(("raw openai SDK, sequential", asyncio.run(raw_sdk(url, n, 1))))
        rows.append(("raw openai SDK, concurrent 64", asyncio.run(raw_sdk(url, n, 64))))
    for name, t in rows:
        print(f"{name:<34} {1000 * t.wall / n:>12.3f} {1000 * t.cpu / n:>12.3f}")


if __name__ == "__main__":
    main()
