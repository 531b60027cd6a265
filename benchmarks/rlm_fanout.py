"""RLM sub-call fan-out: 1,000 sub-calls of 200 ms from one ``llm_batch``, as a ratio to the ideal.

The sub-model is the real OpenAI-compatible client talking HTTP to the local fake server, run in a
separate process with 200 ms per reply; the root model is scripted in-process (its time is not
counted: the figure is the duration of the one cell that calls ``llm_batch``). Ideal time is
``latency x ceil(N / concurrency)``. Run: ``.venv/bin/python benchmarks/rlm_fanout.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVER = r"""
import asyncio, sys
from holdfast.testing import FakeOpenAIServer
latency = float(sys.argv[1])
async def handler(body):
    await asyncio.sleep(latency)
    return "ok"
with FakeOpenAIServer(handler) as s:
    print(s.base_url, flush=True)
    sys.stdin.read()
"""


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def make_sub(kind: str, concurrency: int, latency: float, base_url: str) -> Any:
    from holdfast.lm import get_lm
    from holdfast.testing import FunctionLM

    if kind == "default":
        return get_lm("vllm:sub", base_url=base_url, env={}, max_concurrency=concurrency)
    if kind == "http":
        return get_lm(
            "vllm:sub", base_url=base_url, env={}, max_concurrency=concurrency, direct_http=False
        )
    if kind == "direct":
        return get_lm("vllm:sub", base_url=base_url, max_concurrency=concurrency, direct_http=True)

    async def sleepy(messages: Any, **_: Any) -> str:
        await asyncio.sleep(latency)
        return "ok"

    return FunctionLM(sleepy, model="fake:sub")


def client_alone(n: int, concurrency: int, latency: float, base_url: str, kind: str) -> float:
    """The same N calls straight from the client under a semaphore: the floor for this machine."""
    sub = make_sub(kind, concurrency, latency, base_url)

    async def go() -> float:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await sub.acomplete([{"role": "user", "content": f"item {i}"}])

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        took = time.perf_counter() - t0
        await sub.aclose()
        return took

    return asyncio.run(go())


def run_once(
    n: int, concurrency: int, latency: float, base_url: str, kind: str
) -> dict[str, float]:
    from holdfast.rlm import RLM, BrokerLimits, Budget
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.sandbox import SandboxPolicy
    from holdfast.store.sqlite import SQLiteDB
    from holdfast.testing import ScriptedLM

    fence = "```"
    root = ScriptedLM(
        [
            f"{fence}python\nout = llm_batch([f'item {{i}}' for i in range({n})])\n"
            f"print(sum(1 for o in out if o == 'ok'))\n{fence}\n",
            f"{fence}python\nSUBMIT('done')\n{fence}\n",
        ]
    )
    store = RLMTraceStore(SQLiteDB(Path(tempfile.mkdtemp()) / "t.db"))
    rlm = RLM(
        root,
        make_sub(kind, concurrency, latency, base_url),
        sandbox=SandboxPolicy(cell_timeout_s=600),
        budget=Budget(max_sub_calls=n + 10, max_wall_s=900),
        limits=BrokerLimits(concurrency=concurrency),
        store=store,
        mode="rlm",
    )
    result = rlm.run("fan out", context="x" * 60_000)
    first = next(e.data for e in store.events(result.trace_id) if e.kind == "iteration")
    ideal = latency * math.ceil(n / concurrency)
    return {"cell": first["cell_s"], "ideal": ideal, "ok": float(first["output"].strip() == str(n))}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures: list[dict[str, Any]] = []
    proc, base_url = start_server(args.latency)
    try:
        if not args.json:
            print(
                f"{args.n} sub-calls of {args.latency * 1000:.0f} ms in one llm_batch "
                "(real box, real HTTP client)"
            )
            print(
                f"{'sub-model':<30} {'concurrency':>11} {'ideal s':>8} {'took s':>8} "
                f"{'ratio':>6} {'all ok':>6}"
            )
        for c in args.concurrency:
            for kind, label in (
                ("fake", "in-process fake (engine)"),
                ("default", "default client, via RLM"),
                ("http", "SDK client (forced), via RLM"),
                ("direct", "direct_http client, via RLM"),
            ):
                r = run_once(args.n, c, args.latency, base_url, kind)
                figures.append({"sub_model": kind, "via": "rlm", "concurrency": c, **r})
                if args.json:
                    continue
                print(
                    f"{label:<30} {c:>11} {r['ideal']:>8.2f} {r['cell']:>8.2f} "
                    f"{r['cell'] / r['ideal']:>6.3f} {'yes' if r['ok'] else 'NO':>6}"
                )
            ideal = args.latency * math.ceil(args.n / c)
            for kind, label in (
                ("default", "default client alone"),
                ("http", "SDK client (forced) alone"),
                ("direct", "direct_http client alone"),
            ):
                alone = client_alone(args.n, c, args.latency, base_url, kind)
                figures.append({"sub_model": kind, "via": "alone", "concurrency": c, "took": alone})
                if args.json:
                    continue
                print(
                    f"{label:<30} {c:>11} {ideal:>8.2f} {alone:>8.2f} {alone / ideal:>6.3f} {'-':>6}"
                )
    finally:
        proc.terminate()
        proc.wait(10)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
