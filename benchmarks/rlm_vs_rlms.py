"""Holdfast's RLM side by side with the official library (PyPI ``rlms`` 0.1.3) on one fake server.

Both engines talk HTTP to the same local fake OpenAI-compatible server (a separate process): root
replies are scripted per engine dialect (``python`` blocks and ``SUBMIT`` for Holdfast, ``repl``
blocks and ``answer["ready"]`` for ``rlms``) with no latency; sub-calls sleep a set time. ``rlms``
is installed by this script into its own throwaway virtualenv under /tmp (never a dependency of
Holdfast). Scenarios: 64 sub-calls of 0.5 s and 1,000 of 0.2 s in one batch, each run with
Holdfast's default HTTP path, the SDK forced (``direct_http=False``) and the direct client forced
(``direct_http=True``), all at Holdfast's default concurrency; a 100 MB input (time of a whole job with
one trivial turn, and a 1 KB baseline); log bytes per iteration at 1 MB and 10 MB inputs.

Run: ``.venv/bin/python benchmarks/rlm_vs_rlms.py [--fanout-only] [--json]`` (about two minutes;
needs PyPI on first run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RLMS_VENV = Path("/tmp/holdfast-bench-rlms-venv")
RLMS_VERSION = "0.1.3"
SUB_LATENCY = 0.5

SERVER = r"""
import asyncio, re, sys
from holdfast.testing import FakeOpenAIServer
F = "`" * 3
SCRIPTS = {
    ("holdfast", "fanout"): [F + "python\nout = llm_batch([f'q{i}' for i in range(64)])\nprint(len(out))\n" + F,
                             F + "python\nSUBMIT('done')\n" + F],
    ("rlms", "fanout"): [F + "repl\nout = llm_query_batched([f'q{i}' for i in range(64)])\nprint(len(out))\n" + F,
                         F + "repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n" + F],
    ("holdfast", "wide"): [F + "python\nout = llm_batch([f'q{i}@0.2' for i in range(1000)])\nprint(len(out))\n" + F,
                           F + "python\nSUBMIT('done')\n" + F],
    ("rlms", "wide"): [F + "repl\nout = llm_query_batched([f'q{i}@0.2' for i in range(1000)])\nprint(len(out))\n" + F,
                       F + "repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n" + F],
    ("holdfast", "load"): [F + "python\nSUBMIT(str(len(context)))\n" + F],
    ("rlms", "load"): [F + "repl\nanswer['content'] = str(len(context))\nanswer['ready'] = True\n" + F],
    ("holdfast", "log"): [F + "python\nprint(len(context))\n" + F, F + "python\nn = context[:1000].count('x')\nprint(n)\n" + F,
                          F + "python\nprint(n * 2)\n" + F, F + "python\nSUBMIT(str(n))\n" + F],
    ("rlms", "log"): [F + "repl\nprint(len(context))\n" + F, F + "repl\nn = context[:1000].count('x')\nprint(n)\n" + F,
                      F + "repl\nprint(n * 2)\n" + F, F + "repl\nanswer['content'] = str(n)\nanswer['ready'] = True\n" + F],
}
async def handler(body):
    msgs = body["messages"]
    if msgs[0]["role"] != "system":
        own = re.search(r"@([0-9.]+)$", str(msgs[-1].get("content") or ""))
        await asyncio.sleep(float(own.group(1)) if own else float(sys.argv[1]))
        return "sub reply"
    text = " ".join(str(m.get("content") or "")[:5000] for m in msgs)
    scenario = re.search(r"SCENARIO:(\w+)", text).group(1)
    dialect = "rlms" if F + "repl" in msgs[0]["content"] else "holdfast"
    turns = sum(1 for m in msgs if m["role"] == "assistant")
    script = SCRIPTS[(dialect, scenario)]
    return script[min(turns, len(script) - 1)]
with FakeOpenAIServer(handler) as s:
    print(s.base_url, flush=True)
    sys.stdin.read()
"""

RLMS_DRIVER = r"""
import json, os, sys, time
from rlm import RLM
from rlm.logger import RLMLogger
url, scenario, size, logdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
os.makedirs(logdir, exist_ok=True)
rlm = RLM(backend="openai", backend_kwargs={"model_name": "m", "base_url": url, "api_key": "x"},
          environment="local", max_iterations=6, logger=RLMLogger(log_dir=logdir))
context = ("x" * 99 + "\n") * (size // 100)
t0 = time.perf_counter()
out = rlm.completion(context, root_prompt=f"SCENARIO:{scenario} answer the question")
took = time.perf_counter() - t0
log_bytes = sum(os.path.getsize(os.path.join(logdir, f)) for f in os.listdir(logdir))
print(json.dumps({"took": took, "answer": str(out.response)[:50], "log_bytes": log_bytes}))
"""


def ensure_rlms() -> Path:
    py = RLMS_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RLMS_VENV)], check=True)
    probe = subprocess.run([str(py), "-c", "import rlm"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"rlms=={RLMS_VERSION}",
            ],
            check=True,
        )
    return py


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(SUB_LATENCY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def run_rlms(py: Path, url: str, scenario: str, size: int) -> dict[str, Any]:
    logdir = tempfile.mkdtemp(prefix="rlms-logs-")
    out = subprocess.run(
        [str(py), "-c", RLMS_DRIVER, url, scenario, str(size), logdir],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"rlms failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["iterations"] = 2 if scenario in ("fanout", "wide") else (1 if scenario == "load" else 4)
    subprocess.run(["rm", "-rf", logdir], check=False)
    return result


PATHS: dict[str, bool | None] = {"default": None, "sdk": False, "direct": True}


def run_holdfast(url: str, scenario: str, size: int, path: str = "default") -> dict[str, Any]:
    from holdfast.lm import get_lm
    from holdfast.rlm import RLM, Budget
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.sandbox import SandboxPolicy
    from holdfast.store.sqlite import SQLiteDB

    store = RLMTraceStore(SQLiteDB(Path(tempfile.mkdtemp()) / "traces.db"))
    options: dict[str, Any] = {} if PATHS[path] is None else {"direct_http": PATHS[path]}
    lm = get_lm("vllm:m", base_url=url, env={}, **options)
    rlm = RLM(
        lm,
        sandbox=SandboxPolicy(memory_mb=4096),
        budget=Budget(max_sub_calls=1_100),
        store=store,
        mode="rlm",
    )
    context = ("x" * 99 + "\n") * (size // 100)
    t0 = time.perf_counter()
    try:
        result = rlm.run(f"SCENARIO:{scenario} answer the question", context=context)
        took = time.perf_counter() - t0
    finally:
        lm.close()
    cells = [
        e.data.get("cell_s") or 0.0 for e in store.events(result.trace_id) if e.kind == "iteration"
    ]
    return {
        "took": took,
        "first_cell": cells[0] if cells else 0.0,
        "answer": str(result.answer)[:50],
        "log_bytes": store.event_bytes(result.trace_id),
        "iterations": result.iterations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout-only", action="store_true", help="only the two fan-outs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    py = ensure_rlms()
    proc, url = start_server()
    import openai  # noqa: F401  (imported before timing, as the rlms driver does)

    run_holdfast(url, "load", 1_000)  # warm-up: the first box start pays for page-cache misses
    rows: list[tuple[str, str, str, str]] = []
    figures: dict[str, Any] = {"sub_latency_s": SUB_LATENCY, "rlms_version": RLMS_VERSION}
    try:
        for scenario, label in (("fanout", "64 sub-calls of 0.5 s"), ("wide", "1,000 of 0.2 s")):
            rl = run_rlms(py, url, scenario, 1000)
            figures[f"{scenario}_rlms_s"] = rl["took"]
            for path in PATHS:
                hf = run_holdfast(url, scenario, 1000, path)
                figures[f"{scenario}_{path}_s"] = hf["took"]
                figures[f"{scenario}_{path}_cell_s"] = hf["first_cell"]
                rows.append(
                    (
                        f"{label}, holdfast {path} (s)",
                        f"{hf['took']:.2f}",
                        f"{rl['took']:.2f}",
                        f"{rl['took'] / hf['took']:.2f}x",
                    )
                )
            for path in PATHS:
                cell = figures[f"{scenario}_{path}_cell_s"]
                rows.append(
                    (f"  the batch cell alone, holdfast {path} (s)", f"{cell:.2f}", "-", "-")
                )
        for size, label in () if args.fanout_only else ((1_000, "1 KB"), (100_000_000, "100 MB")):
            hf = run_holdfast(url, "load", size)
            rl = run_rlms(py, url, "load", size)
            figures[f"load_{label}_holdfast_s"], figures[f"load_{label}_rlms_s"] = (
                hf["took"],
                rl["took"],
            )
            rows.append(
                (
                    f"job with one trivial turn, {label} input (s)",
                    f"{hf['took']:.2f}",
                    f"{rl['took']:.2f}",
                    f"{rl['took'] / hf['took']:.2f}x",
                )
            )
        for size, label in () if args.fanout_only else ((1_000_000, "1 MB"), (10_000_000, "10 MB")):
            hf = run_holdfast(url, "log", size)
            rl = run_rlms(py, url, "log", size)
            hb = hf["log_bytes"] / hf["iterations"]
            rb = rl["log_bytes"] / rl["iterations"]
            figures[f"log_{label}_holdfast_bytes"], figures[f"log_{label}_rlms_bytes"] = hb, rb
            rows.append(
                (
                    f"log bytes per iteration, {label} input",
                    f"{hb:,.0f}",
                    f"{rb:,.0f}",
                    f"{rb / hb:,.0f}x",
                )
            )
    finally:
        proc.terminate()
        proc.wait(10)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"Holdfast RLM vs rlms {RLMS_VERSION}, same fake server, each engine at its defaults")
    print(f"{'measure':<50} {'holdfast':>10} {'rlms':>10} {'rlms/holdfast':>14}")
    for name, a, b, ratio in rows:
        print(f"{name:<50} {a:>10} {b:>10} {ratio:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
