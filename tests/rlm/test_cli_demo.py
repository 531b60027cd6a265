"""The `holdfast rlm` commands against the local fake server, and the offline demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.cli.rlm import rlm
from holdfast.rlm.demo import generate_corpus, run_rlm_demo
from holdfast.testing import FakeOpenAIServer

from .helpers import code

pytestmark = pytest.mark.sandbox


def handler(body: dict[str, Any]) -> str:
    msgs = body["messages"]
    if body["model"] == "sub":
        return "sub says " + str(len(msgs[-1]["content"]))
    turns = sum(1 for m in msgs if m["role"] == "assistant")
    script = [
        code("print(len(context), len(notes))\nr = llm_query(context[:1000])\nprint(r)"),
        code("SUBMIT(answer=r)"),
    ]
    return script[min(turns, 1)]


def test_ask_trace_replay(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("some words here\n" * 5000)
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    runner = CliRunner()
    with FakeOpenAIServer(handler) as server:
        shown = runner.invoke(
            rlm, ["ask", "q", "-i", str(big), "--model", "vllm:root", "--show-prompt"]
        )
        assert (
            shown.exit_code == 0
            and "--- system ---" in shown.output
            and "some words" in shown.output
        )
        res = runner.invoke(
            rlm,
            [
                "ask",
                "what?",
                "-i",
                str(big),
                "-i",
                f"notes={notes}",
                "--model",
                "vllm:root",
                "--sub-model",
                "vllm:sub",
                "--base-url",
                server.base_url,
                "--direct-http",
                "--json",
                "--mode",
                "rlm",
            ],
        )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["answer"] == "sub says 1000" and data["status"] == "ok" and data["iterations"] == 2
    trace_id = data["trace_id"]
    tree = runner.invoke(rlm, ["trace", trace_id[:12]])
    assert tree.exit_code == 0 and "turn 2" in tree.output and "sub-call vllm:sub" in tree.output
    jsonl = runner.invoke(rlm, ["trace", trace_id, "--json"])
    assert all(json.loads(line)["trace_id"] == trace_id for line in jsonl.output.splitlines())
    listed = runner.invoke(rlm, ["trace"])
    assert trace_id[:10] in listed.output
    replayed = runner.invoke(rlm, ["replay", trace_id, "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.output)["same_answer"] is True


def test_ask_reports_budget_exhaustion_with_exit_code_3(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("x\n" * 40_000)
    with FakeOpenAIServer(lambda body: code("print(1)")) as server:
        res = CliRunner().invoke(
            rlm,
            [
                "ask",
                "q",
                "-i",
                str(big),
                "--model",
                "vllm:root",
                "--base-url",
                server.base_url,
                "--max-iterations",
                "2",
                "--json",
            ],
        )
    assert res.exit_code == 3
    assert json.loads(res.output)["status"] == "budget_exceeded"


def test_ask_needs_a_model(tmp_path: Path) -> None:
    from holdfast.errors import UserError

    res = CliRunner().invoke(rlm, ["ask", "q", "-i", str(tmp_path)])
    assert isinstance(res.exception, UserError) and "--model" in str(res.exception)


def test_demo_runs_offline_and_is_correct(tmp_path: Path) -> None:
    from rich.console import Console

    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    result = run_rlm_demo(console=console, workdir=tmp_path)
    console.file.close()
    truth = generate_corpus(tmp_path / "again.txt")
    assert result.ok and all(result.outputs[k] == v for k, v in truth.items())
    assert (tmp_path / "service-logs.txt").stat().st_size > 5_000_000
    text = (tmp_path / "out.txt").read_text()
    assert "SCRIPTED" in text and f"holdfast rlm trace {result.trace_id}" in text


def test_ask_reads_stdin_and_directories(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("hello")
    res = CliRunner().invoke(
        rlm,
        [
            "ask",
            "q",
            "-i",
            "-",
            "-i",
            f"docs={tmp_path / 'd'}",
            "--model",
            "vllm:x",
            "--show-prompt",
            "--json",
        ],
        input="piped text " * 10,
    )
    assert res.exit_code == 0, res.output
    messages = json.loads(res.output)
    first = messages[1]["content"]
    assert (
        "`context`: str, 110 chars" in first and "`docs`: directory" in first and "a.txt" in first
    )
