"""``holdfast serve`` figures: API overhead, the OpenAI endpoint's added latency, SSE watchers,
and the memory CLI against a warm server versus cold.

* ``api``: the same memory search (keyword-only, 2,000 items) and task read in process and over
  HTTP to a ``holdfast serve`` subprocess (kept-alive httpx client, bearer token); p50 / p95.
* ``openai``: one scripted RLM job (a root that counts ERROR lines in the REPL, one sub-call,
  then SUBMIT) run in process with ``RLM.run``, and through ``/v1/chat/completions`` with the
  official ``openai`` SDK; the difference is what the endpoint adds.
* ``sse``: a scripted task of N steps run by a ``holdfast worker`` subprocess while 0 or 100
  clients watch ``/api/v1/tasks/{id}/events`` of a ``holdfast serve`` subprocess; its step time
  (first to last step receipt) with and without watchers, alternating runs; every watcher must
  see the ``end`` event.
* ``memory-cli``: ``holdfast memory add`` then ``holdfast memory search`` as separate commands,
  against a warm server (``HOLDFAST_SERVER``) and cold (``--no-server``) with the embedder on
  ONNX Runtime and on sentence-transformers / PyTorch; plus the CLI's own import time.

Usage::

    python benchmarks/server_bench.py [--only api,openai,sse,memory-cli] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HOLDFAST = str(Path(sys.executable).with_name("holdfast"))
SCRIPTED = "holdfast.testing.kinds:SCRIPTED"
LOG = "INFO ok\n" * 2000 + "ERROR boom\n" * 7


def _q(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    rank = max(0, min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1))  # nearest rank
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[rank], 2),
        "n": len(ms),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, HOLDFAST_HOME=str(home), **extra)
    for var in ("HOLDFAST_SERVER", "HOLDFAST_TOKEN", "HOLDFAST_DATABASE_URL"):
        if var not in extra:
            env.pop(var, None)
    return env


def _token(home: Path) -> str:
    out = subprocess.run(
        [HOLDFAST, "token", "create", "bench", "--json"],
        env=_env(home), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return str(json.loads(out)["token"])


@contextmanager
def serve(home: Path, *args: str) -> Iterator[str]:
    """``holdfast serve`` on a free loopback port over ``home``; its URL once it answers."""
    port = _free_port()
    proc = subprocess.Popen(
        [HOLDFAST, "serve", "--port", str(port), "--log-level", "warning", *args],
        env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("holdfast serve did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- api ---------------------------------------------------------------------------------------


def bench_api(repeat: int) -> dict[str, Any]:
    import httpx

    from holdfast.harness import Harness, default_registry
    from holdfast.memory import MemoryConfig, MemoryStore

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["HOLDFAST_HOME"] = str(home)
        store = MemoryStore(MemoryConfig(root=home / "memory", embedder="none"))
        store.add_many(
            [
                (
                    f"Person {i % 97} led project {i % 31} in year {2000 + i % 25}.",
                    {"namespace": "bench"},
                )
                for i in range(2000)
            ],
            dedup=False,
        )
        noop = default_registry(("holdfast.testing.kinds:NOOP",))
        with Harness.open(home / "holdfast.db", registry=noop) as h:
            task_id = h.submit({"kind": "noop", "goal": "bench"}).id
        query = "which project did person 17 lead"
        local: dict[str, list[float]] = {"memory_search": [], "task_get": []}
        with Harness.open(home / "holdfast.db") as h:
            for _ in range(repeat):
                t = time.perf_counter()
                store.search(query, namespace="bench", limit=8)
                local["memory_search"].append(time.perf_counter() - t)
            for _ in range(repeat):  # what GET /tasks/{id} reads: the task, steps, approvals
                t = time.perf_counter()
                h.get(task_id), h.steps(task_id), h.approvals(task_id)
                local["task_get"].append(time.perf_counter() - t)
        store.close()
        token = _token(home)
        remote: dict[str, list[float]] = {"memory_search": [], "task_get": []}
        with serve(home, "--embedder", "none") as url:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                body = {"query": query, "namespace": "bench", "limit": 8}
                c.post("/api/v1/memory/search", json=body).raise_for_status()  # warm
                for _ in range(repeat):
                    t = time.perf_counter()
                    c.post("/api/v1/memory/search", json=body).raise_for_status()
                    remote["memory_search"].append(time.perf_counter() - t)
                c.get(f"/api/v1/tasks/{task_id}").raise_for_status()
                for _ in range(repeat):
                    t = time.perf_counter()
                    c.get(f"/api/v1/tasks/{task_id}").raise_for_status()
                    remote["task_get"].append(time.perf_counter() - t)
    out: dict[str, Any] = {}
    for name in local:
        a, b = _q(local[name]), _q(remote[name])
        out[name] = {
            "in_process": a,
            "http": b,
            "overhead_p50_ms": round(b["p50_ms"] - a["p50_ms"], 2),
            "overhead_p95_ms": round(b["p95_ms"] - a["p95_ms"], 2),
        }
    return out


# -- openai ------------------------------------------------------------------------------------


def _scripted_models() -> tuple[Any, Any]:
    from holdfast.testing import FunctionLM

    def root(messages: list[Any], **_: Any) -> str:
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        body = [
            "n = context.count('ERROR')\nprint('errors:', n)",
            "label = llm_query('name this count: ' + str(n))\nprint(label)",
            "SUBMIT(answer=f'{n} errors ({label})')",
        ][min(turn, 2)]
        return f"Next step.\n```python\n{body}\n```\n"

    def sub(messages: list[Any], **_: Any) -> str:
        return "a count of errors"

    return FunctionLM(root, model="scripted:root"), FunctionLM(sub, model="scripted:sub")


def bench_openai(repeat: int) -> dict[str, Any]:
    from openai import OpenAI

    from holdfast.rlm import RLM
    from holdfast.rlm.store import RLMTraceStore
    from holdfast.sandbox.types import SandboxPolicy
    from holdfast.server import ModelSpec, ServerSettings, Services, create_app
    from holdfast.server.run import ServerThread

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["HOLDFAST_HOME"] = str(home)
        traces = RLMTraceStore(home / "traces.db")
        direct: list[float] = []
        for _ in range(repeat):
            root, sub = _scripted_models()
            rlm = RLM(
                root, sub, sandbox=SandboxPolicy(isolation="process"), store=traces, mode="rlm"
            )
            t = time.perf_counter()
            result = rlm.run("How many errors?", context=LOG)
            direct.append(time.perf_counter() - t)
            assert result.answer == "7 errors (a count of errors)", result.answer
        traces.close()
        root, sub = _scripted_models()
        settings = ServerSettings(
            port=0, isolation="process", models={"counter": ModelSpec(root=root, sub=sub)}
        )
        svc = Services.open(settings)
        _, token = svc.tokens.create("bench")  # type: ignore[union-attr]
        endpoint: list[float] = []
        try:
            with ServerThread(create_app(settings, services=svc), settings) as server:
                client = OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0)
                for _ in range(repeat):
                    t = time.perf_counter()
                    reply = client.chat.completions.create(
                        model="counter",
                        messages=[
                            {"role": "user", "content": LOG},
                            {"role": "user", "content": "How many errors?"},
                        ],
                        extra_body={"holdfast": {"mode": "rlm"}},
                    )
                    endpoint.append(time.perf_counter() - t)
                    assert reply.choices[0].message.content == "7 errors (a count of errors)"
                client.close()
        finally:
            svc.close()
    a, b = _q(direct), _q(endpoint)
    return {
        "rlm_in_process": a,
        "chat_completions": b,
        "added_p50_ms": round(b["p50_ms"] - a["p50_ms"], 2),
        "added_p95_ms": round(b["p95_ms"] - a["p95_ms"], 2),
    }


# -- sse ---------------------------------------------------------------------------------------


async def _watch(url: str, token: str, task_id: str, n: int, ready: threading.Event) -> list[int]:
    """``n`` watchers of the task's event stream, as cheap as a client can be (raw sockets
    scanning for the ``end`` event), so the figure is the server's cost, not the watchers'."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    request = (
        f"GET /api/v1/tasks/{task_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    ended = [0] * n
    sizes = [0] * n

    async def one(i: int, opened: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(request)
            await writer.drain()
            opened.set()
            tail = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                sizes[i] += len(chunk)
                if b"event: end" in tail + chunk:
                    ended[i] = 1
                    return
                tail = chunk[-16:]
        finally:
            writer.close()

    flags = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(one(i, flags[i])) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 60)
    await asyncio.sleep(1.0)  # let the server take every stream into its topic
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    return [sum(ended), sum(sizes)]


def bench_sse(watchers: int, steps: int, rounds: int) -> dict[str, Any]:
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        work = home / "work"
        work.mkdir()
        token = _token(home)
        times: dict[int, list[float]] = {0: [], watchers: []}
        delivered: list[list[int]] = []
        with serve(home, "--embedder", "none", "--load", SCRIPTED) as url:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                for r in range(rounds * 2):
                    n = watchers if r % 2 else 0
                    spec = {
                        "kind": "scripted",
                        "goal": "sse bench",
                        "workspace": str(work),
                        "input": {
                            "ledger": str(work / "effects.db"),
                            "steps": [
                                {"tool": "wait", "args": {"seconds": 0.02}} for _ in range(steps)
                            ],
                        },
                        "policy": {"rules": [{"tool": "wait", "action": "allow"}]},
                    }
                    task_id = c.post("/api/v1/tasks", json=spec).json()["id"]
                    ready = threading.Event()
                    result: list[list[int]] = []
                    watcher = None
                    if n:
                        watcher = threading.Thread(
                            target=lambda tid=task_id, k=n, out=result, go=ready: out.append(
                                asyncio.run(_watch(url, token, tid, k, go))
                            ),
                        )
                        watcher.start()
                        if not ready.wait(120):
                            raise SystemExit("watchers did not connect")
                    # the worker starts once every watcher listens, and runs this one task
                    subprocess.run(
                        [HOLDFAST, "worker", "--load", SCRIPTED, "--poll", "0.05",
                         "--exit-when-idle", "--max-tasks", "1", "--log-level", "WARNING"],
                        env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        check=True, timeout=600,
                    )  # fmt: skip
                    if watcher is not None:
                        watcher.join(300)
                        delivered.append(result[0])
                    receipts = c.get(
                        f"/api/v1/tasks/{task_id}/receipts", params={"limit": 10000}
                    ).json()
                    ts = [float(x["ts"]) for x in receipts if x.get("step")]
                    times[n].append(max(ts) - min(ts))
    base = statistics.median(times[0])
    loaded = statistics.median(times[watchers])
    return {
        "steps": steps,
        "watchers": watchers,
        "rounds": rounds,
        "task_s_no_watchers": round(base, 3),
        "task_s_with_watchers": round(loaded, 3),
        "per_step_ms_no_watchers": round(base / steps * 1000, 2),
        "per_step_ms_with_watchers": round(loaded / steps * 1000, 2),
        "slowdown_pct": round((loaded / base - 1) * 100, 2),
        "watchers_that_saw_end": [d[0] for d in delivered],
        "bytes_delivered": [d[1] for d in delivered],
    }


# -- memory-cli --------------------------------------------------------------------------------


def _pair(env: dict[str, str], i: int, *pre: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run(
        [HOLDFAST, "memory", *pre, "add", f"Fact {i}: the deploy key {i} rotates on Fridays",
         "--no-dedup"],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    t1 = time.perf_counter()
    out = subprocess.run(
        [HOLDFAST, "memory", *pre, "search", f"when does key {i} rotate", "--json"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    t2 = time.perf_counter()
    assert f"key {i} rotates" in out
    return t1 - t0, t2 - t1


def _import_ms() -> dict[str, float]:
    def cumulative(code: str) -> float:
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
        ).stderr
        total = 0
        for line in err.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
            if m:  # top-level imports only (no leading spaces before the name)
                total += int(m.group(1))
        return total / 1000

    def wall(cmd: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True)
        return time.perf_counter() - t

    code = "import holdfast.cli.main, holdfast.cli.memory, holdfast.server.client"
    return {
        "cli_client_imports_ms": round(statistics.median(cumulative(code) for _ in range(5)), 1),
        "python_startup_ms": round(
            statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(5)) * 1000, 1
        ),
        "holdfast_version_ms": round(
            statistics.median(wall([HOLDFAST, "--version"]) for _ in range(5)) * 1000, 1
        ),
    }


def bench_memory_cli(warm_reps: int, cold_reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"imports": _import_ms()}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "warm"
        home.mkdir()
        token = _token(home)
        with serve(home) as url:
            env = _env(home, HOLDFAST_SERVER=url, HOLDFAST_TOKEN=token)
            _pair(env, -1)  # the first request waits for the server's embedder to load
            pairs = [_pair(env, i) for i in range(warm_reps)]
        out["warm_server"] = _pairs(pairs)
        for name, embedder in (("cold_onnx", "local:onnx"), ("cold_torch", "local:torch")):
            cold = Path(tmp) / name
            cold.mkdir()
            env = _env(cold, HOLDFAST_MEMORY_EMBEDDER=embedder)
            pairs = [_pair(env, i, "--no-server") for i in range(cold_reps)]
            out[name] = _pairs(pairs)
    return out


def _pairs(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "add": _q([a for a, _ in pairs]),
        "search": _q([s for _, s in pairs]),
        "add_plus_search": _q([a + s for a, s in pairs]),
    }


# -- main --------------------------------------------------------------------------------------


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} / {five:.1f} on {os.cpu_count()} cores"


def table(res: dict[str, Any]) -> str:
    rows = [("figure", "p50 ms", "p95 ms", "note")]
    if "api" in res:
        for name, r in res["api"].items():
            rows.append((f"api {name} in process", r["in_process"]["p50_ms"],
                         r["in_process"]["p95_ms"], ""))  # fmt: skip
            rows.append((f"api {name} over HTTP", r["http"]["p50_ms"], r["http"]["p95_ms"],
                         f"+{r['overhead_p50_ms']} / +{r['overhead_p95_ms']} ms"))  # fmt: skip
    if "openai" in res:
        r = res["openai"]
        rows.append(("RLM run in process", r["rlm_in_process"]["p50_ms"],
                     r["rlm_in_process"]["p95_ms"], ""))  # fmt: skip
        rows.append(("same via /v1/chat/completions", r["chat_completions"]["p50_ms"],
                     r["chat_completions"]["p95_ms"],
                     f"+{r['added_p50_ms']} / +{r['added_p95_ms']} ms"))  # fmt: skip
    if "sse" in res:
        r = res["sse"]
        rows.append(("task step, 0 watchers", r["per_step_ms_no_watchers"], "", ""))
        rows.append((f"task step, {r['watchers']} SSE watchers", r["per_step_ms_with_watchers"],
                     "", f"{r['slowdown_pct']:+.2f} % (all saw end: "
                     f"{r['watchers_that_saw_end']})"))  # fmt: skip
    if "memory_cli" in res:
        r = res["memory_cli"]
        for name in ("warm_server", "cold_onnx", "cold_torch"):
            for part in ("add", "search", "add_plus_search"):
                q = r[name][part]
                rows.append((f"memory {part.replace('_plus_', ' + ')}, {name}", q["p50_ms"],
                             q["p95_ms"], f"n={q['n']}"))  # fmt: skip
        imp = r["imports"]
        rows.append(("CLI client imports (importtime)", imp["cli_client_imports_ms"], "", ""))
        rows.append(("python -c pass", imp["python_startup_ms"], "", ""))
        rows.append(("holdfast --version", imp["holdfast_version_ms"], "", ""))
    width = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(c).ljust(width[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    return "\n".join(lines) + f"\nload average before/after: {res['load']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="api,openai,sse,memory-cli")
    ap.add_argument("--repeat", type=int, default=200, help="API calls per figure")
    ap.add_argument("--rlm-repeat", type=int, default=5)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warm-reps", type=int, default=10)
    ap.add_argument("--cold-reps", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    res: dict[str, Any] = {"load": _load()}
    if "api" in only:
        res["api"] = bench_api(args.repeat)
    if "openai" in only:
        res["openai"] = bench_openai(args.rlm_repeat)
    if "sse" in only:
        res["sse"] = bench_sse(args.watchers, args.steps, args.rounds)
    if "memory-cli" in only:
        res["memory_cli"] = bench_memory_cli(args.warm_reps, args.cold_reps)
    res["load"] += f" -> {_load()}"
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
