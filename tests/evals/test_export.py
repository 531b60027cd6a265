"""Trajectory export: OpenAI fine-tuning rows, TRL rows with rewards and token data, memory ops.

The rows are checked against the published formats: every message and tool through the OpenAI
SDK's own chat types (generated from the API's schema) plus the fine-tuning format's rules, and
TRL's conversational rows rendered through a Hugging Face chat template with tools, as TRL's
trainers do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import TypeAdapter

from holdfast.cli.main import cli
from holdfast.config import default_db_path
from holdfast.evals import EvalConfig, EvalStore, run_eval
from holdfast.evals.export import export_run, export_trace
from holdfast.evals.policies import niah_root
from holdfast.testing import FakeOpenAIServer
from holdfast.testing.fake_wire import completion_body

MESSAGE = TypeAdapter(ChatCompletionMessageParam)
TOOL = TypeAdapter(ChatCompletionToolParam)
KEYS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
}


def check_openai_row(row: dict[str, Any]) -> None:
    """OpenAI's chat fine-tuning format: messages (and tools) of the chat API, at least one
    assistant message, every tool message answering a tool call made before it."""
    assert set(row) <= {"messages", "tools", "parallel_tool_calls"}
    assert any(m["role"] == "assistant" for m in row["messages"])
    calls: set[str] = set()
    for m in row["messages"]:
        MESSAGE.validate_python(m)
        assert set(m) <= KEYS[m["role"]], m
        if m["role"] == "assistant":
            assert m.get("content") is not None or m.get("tool_calls")
            calls.update(c["id"] for c in m.get("tool_calls") or [])
        if m["role"] == "tool":
            assert m["tool_call_id"] in calls
            assert isinstance(m["content"], str)
    for t in row.get("tools") or []:
        TOOL.validate_python(t)
        assert set(t) == {"type", "function"} and t["type"] == "function"


def render_trl(row: dict[str, Any]) -> str:
    """Render a TRL conversational row through a Hugging Face chat template with tools."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = (
        "{% for t in tools or [] %}<tool>{{ t.function.name }}</tool>{% endfor %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content or '' }}"
        "{% for c in m.tool_calls or [] %}[call {{ c.function.name }} {{ c.function.arguments }}]{% endfor %}"
        "</{{ m.role }}>{% endfor %}"
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")  # type: ignore[no-untyped-call]
    tokenizer.chat_template = template
    out = tokenizer.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=False)
    return str(out)


def check_trl_row(row: dict[str, Any]) -> None:
    assert isinstance(row["messages"], list) and row["messages"]
    for m in row["messages"]:
        assert m["role"] in KEYS
    assert isinstance(row["reward"], float) and 0.0 <= row["reward"] <= 1.0
    for key in ("task_id", "run_id", "suite", "scorer", "score_details"):
        assert key in row
    rendered = render_trl(row)
    assert "<assistant>" in rendered


def with_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """The scripted policy behind a real HTTP server, answering with token data as vLLM does."""
    text = niah_root(body["messages"])
    reply = completion_body(_completion(text), body)
    words = text.split(" ")
    reply["choices"][0]["logprobs"] = {
        "content": [
            {"token": w, "logprob": -0.01 * (i + 1), "bytes": list(w.encode())}
            for i, w in enumerate(words)
        ]
    }
    reply["choices"][0]["token_ids"] = list(range(len(words)))
    reply["prompt_token_ids"] = [1, 2, 3]
    return reply


def _completion(text: str) -> Any:
    from holdfast.lm.types import Completion

    return Completion(text=text, finish_reason="stop")


def test_rlm_run_over_http_exports_rewards_and_token_data(tmp_path: Path) -> None:
    with FakeOpenAIServer(with_logprobs) as server:
        (run_id,) = run_eval(
            EvalConfig(
                suite="niah-single",
                model="vllm:fake-model",
                base_url=server.base_url,
                n=1,
                size=100_000,
                isolation="process",
                logprobs=True,
                token_ids=True,
            )
        )
        bodies = [b for b in server.requests if "messages" in b]
    assert bodies and all(
        b.get("logprobs") is True and b.get("return_token_ids") is True for b in bodies
    )
    store = EvalStore(default_db_path())
    try:
        run = store.get_run(run_id)
        assert not run.scripted and run.summary and run.summary["mean_score"] == 1.0
        openai_rows = list(export_run(store, run_id, "openai"))
        trl_rows = list(export_run(store, run_id, "trl"))
    finally:
        store.close()
    assert len(openai_rows) == 1 == len(trl_rows)  # the RLM's turns merge into one conversation
    check_openai_row(openai_rows[0])
    row = trl_rows[0]
    check_trl_row(row)
    assistants = [m for m in row["messages"] if m["role"] == "assistant"]
    assert len(assistants) == 2 and row["reward"] == 1.0
    assert len(row["completion_logprobs"]) == 2
    first = row["completion_logprobs"][0]
    assert first[0]["logprob"] == -0.01 and assistants[0]["content"].startswith(first[0]["token"])
    assert row["completion_token_ids"][0][:3] == [0, 1, 2] and row["prompt_token_ids"][0] == [
        1,
        2,
        3,
    ]
    assert row["score_details"]["gold"] == row["gold"]


def test_agent_run_exports_tool_calls_and_memory_operations() -> None:
    (run_id,) = run_eval(EvalConfig(suite="agent-knowledge", n=1))
    store = EvalStore(default_db_path())
    try:
        rows = list(export_run(store, run_id, "openai"))
        trl = list(export_run(store, run_id, "trl"))
        ops = list(export_run(store, run_id, "memory-ops"))
        (result,) = store.results(run_id)
    finally:
        store.close()
    assert len(rows) >= 4
    for row in rows:
        check_openai_row(row)
        assert row["tools"]
    assert any(m.get("tool_calls") for r in rows for m in r["messages"])
    assert any(m["role"] == "tool" for r in rows for m in r["messages"])
    for row in trl:
        check_trl_row(row)
    # the memory-operation view of both tasks: the fact stored, then the search that found it
    mem = [o for o in ops if o["tool"] != "memory.flush"]
    assert [o["op"] for o in mem] == ["add", "search"]
    add, search = mem
    assert add["ok"] and "staging database" in add["args"]["text"] and add["outcome"]["id"]
    assert add["task"] != search["task"] and {add["task"], search["task"]} == set(
        result.details["tasks"]
    )
    assert search["ok"] and search["args"]["query"] == "staging database port"
    assert result.gold in json.dumps(search["outcome"])
    assert all(o["reward"] == 1.0 for o in ops)


def test_trace_export_command(tmp_path: Path) -> None:
    (run_id,) = run_eval(EvalConfig(suite="niah-multi", n=1, size=60_000, isolation="process"))
    (agent_run,) = run_eval(EvalConfig(suite="agent-gated", n=1))
    store = EvalStore(default_db_path())
    try:
        (rlm_result,) = store.results(run_id)
        (agent_result,) = store.results(agent_run)
    finally:
        store.close()
    out = tmp_path / "trace.jsonl"
    res = CliRunner().invoke(cli, ["trace", "export", rlm_result.trace_id or "", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1
    check_openai_row(rows[0])
    assert "SUBMIT(codes=" in rows[0]["messages"][-1]["content"]
    agent_rows = list(export_trace(None, agent_result.harness_task or "", "trl"))
    assert agent_rows and all(r["trace"] == agent_result.harness_task for r in agent_rows)
    for row in agent_rows:
        check_trl_row(
            {
                **row,
                "reward": 0.0,
                "task_id": "",
                "run_id": "",
                "suite": "",
                "scorer": "",
                "score_details": {},
            }
        )
    res = CliRunner().invoke(cli, ["eval", "export", agent_run, "--format", "openai"])
    assert res.exit_code == 0 and res.output.strip()
    bad = CliRunner().invoke(cli, ["trace", "export", "rlm-nope"])
    assert bad.exit_code != 0


@pytest.mark.parametrize("fmt", ["openai", "trl"])
def test_unscored_tasks_are_left_out_unless_asked(fmt: str) -> None:
    (run_id,) = run_eval(
        EvalConfig(suite="niah-single", n=1, size=100_000, mode="plain", context_window=1000)
    )
    store = EvalStore(default_db_path())
    try:
        assert list(export_run(store, run_id, fmt)) == []
        assert (
            list(export_run(store, run_id, fmt, include_unscored=True)) == []
        )  # no calls were made
    finally:
        store.close()
