"""MCP tool-call overhead: the same memory search through the Python API, stdio and HTTP.

A namespace is filled with N short items (keyword-only embedder, so the figures isolate the
transport rather than the embedding model), then the same ``memory_search`` runs R times
in process (``MemoryTools.dispatch``, what the MCP tool calls), through ``holdfast mcp serve``
over stdio, and over streamable HTTP with a bearer token, each driven by the official SDK client.
Reports p50 / p95 per call in milliseconds and the overhead over the in-process call.

Usage::

    python benchmarks/mcp_overhead.py [--items 2000] [--repeat 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOLDFAST = str(Path(sys.executable).with_name("holdfast"))
QUERY = {"query": "which project did person 17 lead in the spring", "limit": 8}


def _quantiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "calls": len(ms),
    }


def fill(home: Path, namespace: str, items: int) -> None:
    from holdfast.memory import MemoryConfig, MemoryStore

    store = MemoryStore(MemoryConfig(root=home / "memory", embedder="none"))
    try:
        store.add_many(
            [
                (
                    f"Person {i % 97} led project {i % 31} in the {('spring', 'autumn')[i % 2]} "
                    f"of year {2000 + i % 25}.",
                    {"namespace": namespace},
                )
                for i in range(items)
            ],
            dedup=False,
        )
    finally:
        store.close()


def in_process(home: Path, namespace: str, repeat: int) -> list[float]:
    from holdfast.memory import MemoryConfig, MemoryStore, MemoryTools

    store = MemoryStore(MemoryConfig(root=home / "memory", embedder="none"))
    tools = MemoryTools(store, namespace=namespace)
    try:
        tools.dispatch("memory_search", QUERY)
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            tools.dispatch("memory_search", QUERY)
            out.append(time.perf_counter() - t0)
        return out
    finally:
        store.close()


async def _drive(client: Any, repeat: int) -> list[float]:
    await client.call_tool("memory_search", QUERY)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await client.call_tool("memory_search", QUERY)
        out.append(time.perf_counter() - t0)
        assert not result.is_error
    return out


def over_stdio(env: dict[str, str], root: Path, namespace: str, repeat: int) -> list[float]:
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=HOLDFAST, args=["mcp", "serve", "--root", str(root), "-n", namespace], env=env
    )

    async def go() -> list[float]:
        async with Client(params) as client:
            return await _drive(client, repeat)

    return anyio.run(go)


def over_http(env: dict[str, str], root: Path, namespace: str, repeat: int) -> list[float]:
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "bench-token-0123456789"
    proc = subprocess.Popen(
        [
            HOLDFAST,
            "mcp",
            "serve",
            "--transport",
            "http",
            "--port",
            str(port),
            "--root",
            str(root),
            "-n",
            namespace,
        ],
        env={**env, "HOLDFAST_MCP_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)

        async def go() -> list[float]:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
            async with Client(
                streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            ) as client:
                return await _drive(client, repeat)

        return anyio.run(go)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="holdfast-mcp-bench-") as tmp:
        home = Path(tmp) / "home"
        root = Path(tmp) / "project"
        root.mkdir()
        home.mkdir()
        os.environ["HOLDFAST_HOME"] = str(home)
        namespace = "project-bench"
        fill(home, namespace, args.items)
        env = {
            "HOLDFAST_HOME": str(home),
            "HOLDFAST_MEMORY_EMBEDDER": "none",
            "PATH": os.environ.get("PATH", ""),
        }
        rows = {
            "python API": _quantiles(in_process(home, namespace, args.repeat)),
            "MCP stdio": _quantiles(over_stdio(env, root, namespace, args.repeat)),
            "MCP HTTP": _quantiles(over_http(env, root, namespace, args.repeat)),
        }
    base = rows["python API"]["p50_ms"]
    for row in rows.values():
        row["overhead_p50_ms"] = round(row["p50_ms"] - base, 3)
    figures = {
        "items": args.items,
        "repeat": args.repeat,
        "load_average": os.getloadavg()[0],
        "rows": rows,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"memory_search over {args.items:,} items, {args.repeat} calls each "
        f"(load average {figures['load_average']:.1f})"
    )
    print("| path | p50 ms | p95 ms | overhead at p50 ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['p50_ms']} | {row['p95_ms']} | {row['overhead_p50_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
