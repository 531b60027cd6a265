"""Embeddings, `holdfast memory`, `holdfast rlm ask` and `holdfast run` on llama-server with
SmolLM2-135M-Instruct; Gemma 3 270M (a base model) only for how a model that cannot follow the
chat format is reported. Asserted: clean ends within the budgets, clear statuses, honest
reports; never whether the tiny model's answers are right."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

import pytest

from holdfast.config import default_db_path
from holdfast.lm.calllog import CallLog
from holdfast.memory import MemoryConfig, MemoryStore, make_embedder

from .llama_server import LlamaServer


def _long_item() -> str:
    return " ".join(
        f"Deploy {i} of the billing service finished in {i % 7} minutes on host h{i}."
        for i in range(50)
    )


def test_embedder_and_memory_on_llamacpp(
    smol_embed: LlamaServer, tmp_path: Path, holdfast_cli: Any
) -> None:
    text = _long_item()
    assert len(text.split()) > 500  # past the 400 words that overflowed llama.cpp's batch
    embedder = make_embedder(f"openai:smol@{smol_embed.base_url}")
    vecs = embedder.embed(["one short text", "another"])
    assert vecs.shape[0] == 2 and vecs.shape[1] == embedder.dim > 0
    store = MemoryStore(MemoryConfig(root=tmp_path / "mem"), embedder=embedder)
    try:
        added = store.add(text, namespace="ops")
        assert added.status == "added"
        hits = store.search("billing deploy on host h42", namespace="ops")
        assert hits and hits[0].item.id == added.item.id
    finally:
        store.close()
    spec = f"openai:smol@{smol_embed.base_url}"
    add = holdfast_cli("memory", "--embedder", spec, "add", text, "--namespace", "cli")
    assert add.code == 0, add
    found = holdfast_cli(
        "memory", "--embedder", spec, "search", "billing deploy", "--namespace", "cli", "--json"
    )
    assert found.code == 0 and "billing" in found.out, found


def _rlm_ask(cli: Any, server: LlamaServer, data: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    res = cli(
        "rlm", "ask", "How many lines mention ERROR?", "-i", str(data), "--model",
        "llamacpp:smol", "--base-url", server.base_url, "--mode", "rlm", "--max-iterations", "3",
        "--max-wall", "150", "--max-output-tokens", "96", "--call-timeout", "60",
        "--cell-timeout", "10", "--json", *extra,
    )  # fmt: skip
    return res.code, json.loads(res.out)


def test_rlm_ask_over_a_small_file_ends_within_its_budget(
    smol: LlamaServer, tmp_path: Path, holdfast_cli: Any
) -> None:
    data = tmp_path / "log.txt"
    data.write_text("".join(f"{'ERROR' if i % 3 == 0 else 'INFO'} line {i}\n" for i in range(40)))
    t0 = time.monotonic()
    code, out = _rlm_ask(holdfast_cli, smol, data)
    took = time.monotonic() - t0
    assert took < 150 + 60  # the wall budget plus one call timeout of slack
    assert out["status"] in ("ok", "budget_exceeded", "error"), out
    if out["status"] == "ok":
        assert code == 0 and out["answer"] is not None
    else:  # an honest stop: a non-zero exit and a reason
        assert code != 0 and out["error"] and out["error"].get("message")
    assert out["iterations"] <= 3
    log = CallLog(default_db_path())
    try:
        calls = log.recent(limit=50, trace_id=out["trace_id"])
    finally:
        log.close()
    assert calls and all(c.params.get("max_tokens") == 96 for c in calls)
    tree = holdfast_cli("rlm", "trace", out["trace_id"], "--full")
    assert tree.code == 0 and "turn 1" in tree.out


# Found by this test, left to the agent loop's owners: when the wall budget ends a task during a
# model call, agent/calls.py's _unless_draining coroutine is left on a loop that then closes
# ("Event loop is closed" when it is collected). Collected here so that it is reported here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_run_with_small_budgets_ends_cleanly(smol: LlamaServer, holdfast_cli: Any) -> None:
    t0 = time.monotonic()
    try:
        res = holdfast_cli(
            "run", "Write hello into hello.txt, then call finish.", "--model", "llamacpp:smol",
            "--base-url", smol.base_url, "--max-turns", "3", "--no-memory",
            "--max-output-tokens", "64", "--call-timeout", "60", "--budget",
            json.dumps({"wall_s": 120}), "--json",
        )  # fmt: skip
    finally:
        gc.collect()
    took = time.monotonic() - t0
    assert took < 120 + 60 + 30, took
    out = json.loads(res.out)
    assert out["status"] in ("succeeded", "failed"), out
    message = json.dumps(out.get("error"))
    if out["status"] == "failed":
        assert res.code != 0 and out.get("error"), out
        # SmolLM2's template has no tools: the error says so, not just "no tool call"
        if "without calling a tool" in message:
            assert "does not support tools" in message
    log = CallLog(default_db_path())
    try:
        calls = log.recent(limit=20, task_id=out["task"])
    finally:
        log.close()
    assert all(c.params.get("max_tokens") == 64 for c in calls)
    if "wall_s" not in message:  # a call cut off by the wall budget is not logged (see above)
        assert calls


def test_a_base_model_that_cannot_follow_the_chat_format_is_reported(
    gemma: LlamaServer, tmp_path: Path, holdfast_cli: Any
) -> None:
    ping = holdfast_cli("lm", "ping", "--model", "llamacpp:gemma", "--base-url", gemma.base_url)
    assert ping.code == 0, ping  # the protocol works; the model's words are its own
    data = tmp_path / "log.txt"
    data.write_text("ERROR a\nINFO b\nERROR c\n")
    code, out = _rlm_ask(holdfast_cli, gemma, data)
    assert out["status"] in ("ok", "budget_exceeded", "error"), out
    if out["status"] != "ok":
        assert code != 0 and out["error"]["message"]
    else:  # a SUBMIT that validated against the signature is an earned (if wrong) answer
        assert code == 0 and out["answer"] is not None
