"""The call log round trip and the ``holdfast lm`` command group."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from holdfast.cli.main import cli, main
from holdfast.config import default_db_path
from holdfast.errors import RuntimeFailure, UserError
from holdfast.lm import Usage, get_lm
from holdfast.lm.calllog import CallLog
from holdfast.store.sqlite import SQLiteDB
from holdfast.testing import FakeOpenAIServer, Fault, FunctionLM, ScriptedLM, reply, tool_call

MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France? ünïcödé"},
]


def test_call_log_round_trip(tmp_path: Path) -> None:
    log = CallLog(SQLiteDB(tmp_path / "h.db"))
    lm = ScriptedLM(["Paris.", reply("", tool_call("lookup", {"q": "x"}))], call_log=log)
    first = lm.complete(MSGS, stop=["\n"], metadata={"task_id": "t-1", "trace_id": "tr-9"})
    lm.complete(MSGS, temperature=0.5)
    with pytest.raises(RuntimeFailure):
        lm.complete(MSGS, metadata={"task_id": "t-1"})  # script exhausted: recorded as an error

    assert log.count() == 3
    newest, middle, oldest = log.recent(10)
    assert oldest.call_id == first.call_id
    assert oldest.messages == MSGS and oldest.params == {"stop": ["\n"]}
    assert oldest.completion is not None and oldest.completion.text == "Paris."
    assert oldest.completion.usage.to_dict() == first.usage.to_dict()
    assert oldest.metadata == {"task_id": "t-1", "trace_id": "tr-9"}
    assert middle.completion is not None and middle.completion.tool_calls[0].name == "lookup"
    assert not newest.ok and newest.error is not None and newest.error["code"] == "script_exhausted"
    assert [r.call_id for r in log.recent(10, task_id="t-1")] == [newest.call_id, first.call_id]
    assert [r.ok for r in log.recent(10, errors_only=True)] == [False]
    assert log.get(first.call_id or "") == oldest
    assert log.get((first.call_id or "")[:12]) == oldest
    totals = log.totals(task_id="t-1")
    assert totals.calls == 2 and totals.input_tokens == first.usage.input_tokens

    # Survives reopening the file (what a crashed process leaves behind is what was committed).
    reopened = CallLog(tmp_path / "h.db")
    assert [r.call_id for r in reopened.recent(3)] == [r.call_id for r in (newest, middle, oldest)]


def test_a_failing_call_log_does_not_fail_the_call(tmp_path: Path) -> None:
    class Broken:
        def record(self, call: object) -> None:
            raise OSError("disk full")

    assert FunctionLM(lambda m, **k: "fine", call_log=Broken()).complete(MSGS).text == "fine"


def test_http_calls_are_logged_with_attempts(tmp_path: Path) -> None:
    log = CallLog(tmp_path / "h.db")
    with FakeOpenAIServer() as srv:
        srv.inject(Fault.status(500), "ok")
        with get_lm("vllm:m", base_url=srv.base_url, call_log=log) as lm:
            out = lm.complete(MSGS)
    rec = log.get(out.call_id or "")
    assert rec is not None and rec.attempts == 2 and rec.base_url == srv.base_url
    assert rec.completion is not None and rec.completion.usage.calls == 1


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def test_cli_call_json_show_prompt_and_log(fake: FakeOpenAIServer, holdfast_home: Path) -> None:
    runner = CliRunner()
    fake.inject("Paris.")
    args = ["lm", "call", "--model", "vllm:tiny", "--base-url", fake.base_url]
    result = runner.invoke(
        cli, [*args, "--system", "Be brief.", "--json", "--show-prompt", "Capital?"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == "Paris." and data["model"] == "vllm:tiny"
    assert data["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital?"},
    ]
    assert fake.requests[-1]["messages"] == data["messages"]

    plain = runner.invoke(cli, [*args, "--show-prompt", "second"])
    assert plain.exit_code == 0
    assert plain.stdout.strip() == "echo: second"
    assert '"content": "second"' in plain.stderr

    piped = runner.invoke(cli, [*args, "--direct-http", "-"], input="from stdin\n")
    assert piped.stdout.strip() == "echo: from stdin"

    assert default_db_path().parent == holdfast_home
    logged = runner.invoke(cli, ["lm", "log", "--json", "--limit", "2"])
    lines = [json.loads(line) for line in logged.stdout.splitlines()]
    assert [line["completion"]["text"] for line in lines] == ["echo: from stdin\n", "echo: second"]
    assert "messages" not in lines[0]
    full = runner.invoke(cli, ["lm", "log", "--json", "--show-prompt", "--limit", "3"])
    assert json.loads(full.stdout.splitlines()[-1])["messages"][0]["content"] == "Be brief."

    table = runner.invoke(cli, ["lm", "log", "--show-prompt", "--limit", "1"])
    assert "vllm:tiny" in table.stdout and "[user] from stdin" in table.stdout
    one = runner.invoke(cli, ["lm", "log", lines[1]["call_id"]])
    assert "[user] second" in one.stdout


def test_cli_model_from_env_and_ping(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLDFAST_MODEL", "openai:gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    fake.inject("pong")
    result = CliRunner().invoke(cli, ["lm", "ping", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reply"] == "pong"
    assert fake.request_log[-1].headers["authorization"] == "Bearer sk-from-env"
    assert fake.requests[-1]["model"] == "gpt-4o-mini"


def test_cli_errors_have_exit_codes(
    fake: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["lm", "call", "hi"])
    assert info.value.code == 2 and "HOLDFAST_MODEL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["lm", "call", "--model", "openai:gpt-4o-mini", "hi"])
    assert info.value.code == 2 and "OPENAI_API_KEY" in capsys.readouterr().err
    fake.inject(*[Fault.status(503)] * 2)
    with pytest.raises(SystemExit) as info:
        main(["lm", "call", "-m", "vllm:x", "--base-url", fake.base_url, "--retries", "2", "hi"])
    assert info.value.code == 1 and "HTTP 503" in capsys.readouterr().err
    failed = CliRunner().invoke(cli, ["lm", "log", "--errors", "--json"])
    assert json.loads(failed.stdout)["error"]["code"] == "provider_unavailable"


def test_cli_providers_lists_the_registry() -> None:
    result = CliRunner().invoke(cli, ["lm", "providers", "--json"])
    names = {row["provider"] for row in json.loads(result.stdout)}
    assert {"openai", "anthropic", "ollama", "vllm", "groq", "deepseek"} <= names


def test_usage_totals_type() -> None:
    assert isinstance(CallLog(SQLiteDB(":memory:")).totals(), Usage)


@pytest.mark.anyio
async def test_cancelled_calls_are_logged(tmp_path: Path) -> None:
    import asyncio

    log = CallLog(tmp_path / "h.db")
    lm = ScriptedLM(["never seen"], latency=5.0, call_log=log)
    task = asyncio.create_task(lm.acomplete(MSGS, metadata={"task_id": "t-9"}))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = log.recent(5, task_id="t-9")
    assert record.error is not None and record.error["code"] == "cancelled"
    assert record.messages == MSGS and record.completion is None


def test_cli_call_streams_the_reply(fake: FakeOpenAIServer) -> None:
    runner = CliRunner()
    args = ["lm", "call", "--model", "vllm:tiny", "--base-url", fake.base_url, "--stream"]
    fake.inject("one two three")
    plain = runner.invoke(cli, [*args, "hi"])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == "one two three\n"
    assert "finish: stop" in plain.stderr and fake.requests[-1]["stream"] is True
    fake.inject("four five")
    lines = runner.invoke(cli, [*args, "--json", "hi"]).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["text", "text", "done"]
    assert "".join(e["text"] for e in events[:-1]) == "four five"
    assert events[-1]["completion"]["text"] == "four five"
    logged = json.loads(runner.invoke(cli, ["lm", "log", "--json", "-n", "1"]).stdout)
    assert logged["completion"]["text"] == "four five", "the log holds the assembled reply"


def test_cli_call_escapes_control_characters_in_replies(fake: FakeOpenAIServer) -> None:
    args = ["lm", "call", "--model", "vllm:tiny", "--base-url", fake.base_url]
    for extra in ([], ["--stream"]):
        fake.inject("red \x1b[31mtext\x1b]52;c;cGF3bmVk\x07")
        out = CliRunner().invoke(cli, [*args, *extra, "hi"]).stdout
        assert "\x1b" not in out and "\x07" not in out and "\\x1b[31mtext" in out


def test_cli_call_schema_and_tools(fake: FakeOpenAIServer, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["lm", "call", "--model", "vllm:tiny", "--base-url", fake.base_url]
    schema = {"title": "City", "type": "object", "properties": {"name": {"type": "string"}}}
    fake.inject('{"name": "Paris"}')
    out = runner.invoke(cli, [*args, "--schema", json.dumps(schema), "--json", "capital?"])
    assert out.exit_code == 0, out.output
    fmt = fake.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
    assert fmt["json_schema"]["name"] == "City"
    tool_file = tmp_path / "tools.json"
    tool_file.write_text(json.dumps([{"name": "add", "parameters": {"type": "object"}}]))
    fake.inject(reply("", tool_call("add", {"a": 1})))
    out = runner.invoke(
        cli, [*args, "--tool", f"@{tool_file}", "--tool-choice", "add", "--json", "1+1?"]
    )
    assert out.exit_code == 0, out.output
    body = fake.requests[-1]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert json.loads(out.stdout)["tool_calls"][0]["name"] == "add"
    bad = runner.invoke(cli, [*args, "--tool", f"@{tool_file}", "--tool-choice", "mul", "x"])
    assert isinstance(bad.exception, UserError) and "names no --tool" in str(bad.exception)
