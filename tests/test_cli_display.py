"""Every command prints model-, box- and user-written text as data: Rich markup is never
interpreted (``[/i]`` cannot crash a command, ``[red]E202[/red]`` and ``[code]`` stay visible) and
terminal control sequences (screen clears, window titles, OSC 52 clipboard writes, C1 CSI,
bidirectional overrides) are escaped, never sent to the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from holdfast.cli.main import cli
from holdfast.testing import FakeOpenAIServer, reply, tool_call

CLEAR, TITLE, CLIPBOARD = "\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x1b]52;c;ZXZpbA==\x07"
HOSTILE = f"ans [/i] [red]E202[/red] [bold]{CLEAR}{TITLE}{CLIPBOARD}\x9b31m\u202eend\r\x08"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\x08")


def assert_safe(text: str, *, literal: bool = True) -> None:
    for ch in RAW:
        assert ch not in text, f"raw {ch!r} reached the terminal"
    if literal:
        assert "[/i] [red]E202[/red] [bold]" in text  # markup printed as the characters it is
        for seq in ("[2J", "]52;c;"):  # escaped, so visible (as \x1b, or \u001b inside JSON)
            assert f"\\x1b{seq}" in text or f"\\u001b{seq}" in text


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the strings checked
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")


def invoke(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    return result


def root_reply(body: dict[str, Any]) -> str:
    """A root model that writes hostile text in its code, prints it from the box and submits it."""
    turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
    if turns == 0:
        return f"Look.\n```python\n# {HOSTILE}\ns = {HOSTILE!r}\nprint(s)\n```\n"
    return f"Done.\n```python\nSUBMIT(answer={HOSTILE!r})\n```\n"


def test_rlm_ask_and_trace_print_hostile_text_as_data(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes " + HOSTILE)
    with FakeOpenAIServer(root_reply) as server:
        base = ["rlm", "ask", "what?", "-i", str(notes), "--model", "vllm:root"]
        base += ["--base-url", server.base_url, "--mode", "rlm", "--isolation", "process"]
        asked = invoke(*base)
        assert asked.exit_code == 0, asked.output
        assert_safe(asked.stdout)
        as_json = invoke(*base, "--json")
    assert_safe(as_json.stdout, literal=False)
    data = json.loads(as_json.stdout)
    assert data["answer"] == HOSTILE  # the JSON still carries the exact text
    shown = invoke("rlm", "ask", HOSTILE, "-i", str(notes), "--model", "vllm:r", "--show-prompt")
    assert_safe(shown.stdout)
    tid = data["trace_id"]
    for extra in ([], ["--full"]):
        tree = invoke("rlm", "trace", tid, *extra)
        assert tree.exit_code == 0, tree.output
        assert_safe(tree.stdout)
        assert "answer" in tree.stdout
    listed = invoke("rlm", "trace")
    assert_safe(listed.stdout, literal=False)
    lines = invoke("rlm", "trace", tid, "--json").stdout
    assert_safe(lines, literal=False)


def test_run_and_task_views_print_the_agent_s_words_as_data(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    script = [
        reply("", tool_call(f"no_such_tool{CLEAR}[bold]", {})),
        reply("", tool_call("add_constraint", {"text": HOSTILE})),
        reply("", tool_call("write_file", {"path": "out.txt", "content": HOSTILE})),
        reply("", tool_call("finish", {"result": HOSTILE})),
    ]
    with FakeOpenAIServer(script) as server:
        args = ["run", f"goal {HOSTILE}", "--workspace", str(ws), "--model", "openai:fake"]
        ran = invoke(*args, "--base-url", server.base_url, "--no-memory")
    assert ran.exit_code == 0, ran.output
    assert_safe(ran.stdout + ran.stderr)
    assert "succeeded" in ran.stderr
    task_id = next(w for w in ran.stderr.split() if w.startswith("task-")).rstrip(":")
    for command in (
        ["task", "show", task_id],
        ["task", "logs", task_id],
        ["task", "list"],
        ["receipts", "show", task_id],
        ["task", "working-set", task_id],
    ):
        shown = invoke(*command)
        assert shown.exit_code == 0, (command, shown.output)
        # receipts show lists kinds only; task list cuts the goal at 50 characters
        assert_safe(shown.stdout, literal=command[0] == "task" and command[1] != "list")
    for command in (
        ["task", "show", task_id, "--json"],
        ["task", "logs", task_id, "--json"],
        ["task", "working-set", task_id, "--prompt"],
        ["task", "working-set", task_id, "--json"],
    ):
        shown = invoke(*command)
        assert_safe(shown.stdout, literal=False)
        for line in shown.stdout.splitlines() if command[1] == "logs" else [shown.stdout]:
            json.loads(line)  # still valid JSON holding the same text
    data = json.loads(invoke("task", "show", task_id, "--json").stdout)
    assert data["result"]["result"] == HOSTILE


def test_an_error_code_in_brackets_stays_visible_in_run(tmp_path: Path) -> None:
    script = [reply("", tool_call("finish", {"result": "[budget_exceeded] and [E202]"}))]
    with FakeOpenAIServer(script) as server:
        ran = invoke("run", "x", "--model", "openai:fake", "--base-url", server.base_url,
                     "--no-memory")  # fmt: skip
    assert "[budget_exceeded] and [E202]" in ran.stderr


def test_lm_call_and_log_print_replies_as_data() -> None:
    with FakeOpenAIServer(default_reply=HOSTILE) as server:
        called = invoke("lm", "call", HOSTILE, "--model", "openai:m", "--base-url", server.base_url)
        assert called.exit_code == 0, called.output
        assert_safe(called.stdout)
        ping = invoke("lm", "ping", "--model", "openai:m", "--base-url", server.base_url)
        assert_safe(ping.stdout, literal=False)
    for args in (["lm", "log"], ["lm", "log", "--show-prompt"], ["lm", "log", "--json"]):
        logged = invoke(*args)
        assert_safe(logged.stdout, literal=args[-1] != "--json")


def test_sandbox_run_escapes_what_the_box_prints() -> None:
    code = f"import sys\nprint({HOSTILE!r})\nsys.stderr.write({HOSTILE!r})\n{HOSTILE!r}\n"
    ran = CliRunner().invoke(cli, ["sandbox", "run", "-", "--isolation", "process"], input=code)
    assert ran.exit_code == 0, ran.output
    assert_safe(ran.stdout)
    assert_safe(ran.stderr)
    failed = CliRunner().invoke(
        cli, ["sandbox", "run", "-", "--isolation", "process"],
        input=f"raise ValueError({HOSTILE!r})\n",
    )  # fmt: skip
    assert failed.exit_code == 1
    assert_safe(failed.stderr)


def test_memory_views_print_items_as_data() -> None:
    base = ["memory", "--embedder", "none"]
    added = json.loads(invoke(*base, "add", HOSTILE, "--json").stdout)
    item = added["item"]["id"]
    for args in (["search", "E202"], ["show", item], ["stats"], ["export"]):
        shown = invoke(*base, *args)
        assert shown.exit_code == 0, shown.output
        assert_safe(shown.stdout, literal=args[0] in ("search", "show"))
    found = invoke(*base, "search", "E202", "--json")
    assert_safe(found.stdout, literal=False)
    # memory keeps "\n" as its only line break (a stored "\r" would end a Markdown line)
    from holdfast.memory.items import LINE_BREAKS

    assert json.loads(found.stdout)[0]["text"] == LINE_BREAKS.sub("\n", HOSTILE)


def test_errors_quote_user_text_as_data(holdfast_cli: Any) -> None:
    missing = holdfast_cli("task", "show", f"task-{CLEAR}{TITLE}[red]x[/red]")
    assert missing.code == 2
    assert_safe(missing.err, literal=False)
    assert "[red]x[/red]" in missing.err and "\\x1b[2J" in missing.err
    bad = holdfast_cli("approve", "t", "s", "--ttl", f"{CLEAR}9")
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1
    assert_safe(bad.err, literal=False)
