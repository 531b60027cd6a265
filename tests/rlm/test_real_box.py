"""End to end through the real box, and the real OpenAI client against the local fake server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from holdfast.errors import BudgetExceeded, InvalidInput
from holdfast.lm import get_lm
from holdfast.rlm import RLM, Budget
from holdfast.rlm.store import RLMTraceStore
from holdfast.sandbox import SandboxPolicy
from holdfast.testing import FakeOpenAIServer, ScriptedLM

from .helpers import code

pytestmark = pytest.mark.sandbox

POLICY = SandboxPolicy(cell_timeout_s=30)


def test_end_to_end_over_http(tmp_path: Path, store: RLMTraceStore) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"record {i}: value={i * 7}\n" for i in range(20_000)))

    def handler(body: dict[str, Any]) -> str:
        msgs = body["messages"]
        if body["model"] == "sub":
            chunk = msgs[-1]["content"]
            return str(sum(int(line.split("=")[1]) for line in chunk.splitlines() if "=" in line))
        turns = sum(1 for m in msgs if m["role"] == "assistant")
        script = [
            code("lines = context.splitlines()\nprint(len(lines), lines[0])"),
            code(
                "chunks = ['\\n'.join(lines[i:i+5000]) for i in range(0, len(lines), 5000)]\n"
                "parts = llm_batch(chunks)\nprint(parts)"
            ),
            code("SUBMIT(answer=str(sum(int(p) for p in parts)))"),
        ]
        return script[turns]

    with FakeOpenAIServer(handler) as server:
        root = get_lm("vllm:root", base_url=server.base_url)
        sub = get_lm("vllm:sub", base_url=server.base_url)
        rlm = RLM(root, sub, sandbox=POLICY, store=store)
        result = rlm.run("What is the sum of all values?", context=corpus)
        bodies = server.requests
    assert result.ok and result.answer == str(sum(i * 7 for i in range(20_000)))
    assert result.iterations == 3 and result.sub_calls == 4
    assert result.usage.sub.calls == 4 and result.usage.root.calls == 3
    root_bodies = [b for b in bodies if b["model"] == "root"]
    assert all("record 19999" not in json.dumps(b) for b in root_bodies)
    assert root_bodies[0]["stop"] == ["\n```\n"]
    kinds = [e.kind for e in store.events(result.trace_id)]
    assert kinds.count("iteration") == 3 and kinds.count("sub_call") == 4


def test_wall_time_kills_a_running_cell(store: RLMTraceStore) -> None:
    root = ScriptedLM([code("answer['content'] = 'before sleep'\nimport time\ntime.sleep(60)")])
    rlm = RLM(root, sandbox=POLICY, store=store, budget=Budget(max_wall_s=1.5), mode="rlm")
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded) as err:
        rlm.run("q", context="some text")
    assert err.value.limit == "wall_time"
    assert time.monotonic() - t0 < 6.0


def test_binary_and_non_utf8_files_load_as_bytes(tmp_path: Path, store: RLMTraceStore) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 400 + b"\xff\xfe tail")
    root = ScriptedLM(
        [code("SUBMIT(answer=f'{type(context).__name__}:{len(context)}:{context[-4:]!r}')")]
    )
    result = RLM(root, sandbox=POLICY, store=store).run("q", context=blob)
    assert result.answer == f"mmap:{256 * 400 + 7}:b'tail'"
    assert "not valid UTF-8" in root.calls[0].messages[1]["content"]


def test_directory_input_is_listed_and_read_on_demand(tmp_path: Path, store: RLMTraceStore) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("alpha " * 20_000)
    (docs / "sub" / "b.md").write_text("# beta\nsecret-token\n")
    (tmp_path / "outside.txt").write_text("do not read")
    root = ScriptedLM(
        [
            code(
                "print(sorted(docs))\ntext = docs.read('sub/b.md')\n"
                "try:\n    docs.read('../outside.txt')\nexcept Exception as e:\n    print('REFUSED', e)"
            ),
            code("SUBMIT(answer=text.splitlines()[1])"),
        ]
    )
    result = RLM(root, sandbox=POLICY, store=store).run("q", docs=docs)
    assert result.answer == "secret-token"
    first = root.calls[0].messages[1]["content"]
    assert "sub/b.md" in first and "secret-token" not in first
    fed = root.calls[1].messages[-1]["content"]
    assert "REFUSED" in fed and "do not read" not in fed


def test_huge_and_empty_files_are_refused_before_loading(
    tmp_path: Path, store: RLMTraceStore
) -> None:
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as fh:
        fh.truncate(2 * 1024**3)
    empty = tmp_path / "empty.txt"
    empty.touch()
    rlm = RLM(ScriptedLM([]), sandbox=POLICY, store=store)
    t0 = time.monotonic()
    with pytest.raises(InvalidInput, match="over the limit"):
        rlm.run("q", context=huge)
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(InvalidInput, match="empty"):
        rlm.run("q", context=empty)
    with pytest.raises(InvalidInput):
        rlm.run("q", context=tmp_path / "missing.txt")


def test_a_killed_cell_keeps_the_repl_usable(store: RLMTraceStore) -> None:
    root = ScriptedLM(
        [
            code("kept = 41"),
            code("import time\ntime.sleep(30)"),
            code("print(kept, type(data).__name__, len(data), callable(llm_batch))"),
            code("SUBMIT(answer=str(kept + 1))"),
        ]
    )
    rlm = RLM(root, sandbox=SandboxPolicy(cell_timeout_s=1.0), store=store, mode="rlm")
    data = [{"k": i, "text": "v" * 20} for i in range(60_000)]
    result = rlm.run("q", data=data, raw=b"\x00\x01binary")
    assert result.answer == "42"
    fed = root.calls[2].messages[-1]["content"]
    assert "time limit" in fed or "killed" in fed
    assert "41 list 60000 True" in root.calls[3].messages[-1]["content"]
