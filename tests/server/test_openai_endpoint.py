"""The OpenAI-compatible endpoint, driven by the official ``openai`` SDK against a live server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from tests.server.rlm_helpers import SlowSub, code, looping_root

from holdfast.lm.prices import Price
from holdfast.lm.types import Message
from holdfast.server import ModelSpec, RLMCaps, ServerSettings, Services, create_app
from holdfast.server.run import ServerThread
from holdfast.testing import FunctionLM

PRICE = Price(1.0, 2.0)
MARKER = "NEEDLE-7f3a-not-for-the-root"


def big_log(mb: float = 5.0) -> str:
    line = "2026-11-30T10:00:00Z INFO payment ok order=12345678 amount=100.00 latency_ms=20\n"
    err = "2026-11-30T10:00:01Z ERROR payment failed code=E42 service=billing\n"
    n = int(mb * 1024 * 1024 / len(line))
    lines = [err if i % 997 == 0 else line for i in range(n)]
    lines[n // 2] = f"2026-11-30T10:00:02Z INFO {MARKER}\n"
    return "".join(lines)


class Root:
    """A scripted root that counts ERROR lines in its REPL input and records what it was shown."""

    def __init__(self, typed: bool = False, wrong_first: bool = False) -> None:
        self.seen: list[list[Message]] = []
        self.typed = typed
        self.wrong_first = wrong_first

    def lm(self, model: str = "scripted:root") -> FunctionLM:
        def reply(messages: list[Message], **_: Any) -> str:
            self.seen.append(messages)
            turn = sum(1 for m in messages if m.get("role") == "assistant")
            if turn == 0:
                return code(
                    "n = context.count('ERROR')\nlabel = llm_query('label ' + str(n))\nprint(n)"
                )
            if self.typed:
                if self.wrong_first and turn == 1:
                    return code("SUBMIT(service='billing', errors='many', codes=['E42'])")
                return code("SUBMIT(service='billing', errors=n, codes=['E42'])")
            return code("SUBMIT(answer=f'{n} ERROR lines')")

        return FunctionLM(reply, model=model, price=PRICE)


@pytest.fixture
def slow() -> SlowSub:
    return SlowSub(60.0)


@pytest.fixture
def roots() -> dict[str, Root]:
    return {"plain": Root(), "typed": Root(typed=True, wrong_first=True)}


@pytest.fixture
def server(services: Services, slow: SlowSub, roots: dict[str, Root]) -> Iterator[ServerThread]:
    sub = FunctionLM(lambda messages, **_: "a label", model="scripted:sub", price=PRICE)
    settings = ServerSettings(
        port=0,
        isolation="process",
        caps=RLMCaps(max_usd=1.0, max_iterations=8),
        models={
            "rlm-counter": ModelSpec(
                root=roots["plain"].lm(), sub=sub, mode="rlm", description="counts errors"
            ),
            "rlm-typed": ModelSpec(root=roots["typed"].lm("scripted:typed"), sub=sub, mode="rlm"),
            "rlm-slow": ModelSpec(root=looping_root(), sub=slow.lm(), mode="rlm"),
        },
    )
    app = create_app(settings, services=services)
    with ServerThread(app, settings) as s:
        yield s


@pytest.fixture
def client(server: ServerThread, token: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=60) as c:
        yield c


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["rlm-counter", "rlm-slow", "rlm-typed"]


def test_a_5_mb_prompt_is_navigated_not_read(client: openai.OpenAI, roots: dict[str, Root]) -> None:
    log = big_log(5.0)
    expected = log.count("ERROR")
    reply = client.chat.completions.create(
        model="rlm-counter",
        messages=[
            {"role": "user", "content": log},
            {"role": "user", "content": "How many ERROR lines?"},
        ],
    )
    assert reply.choices[0].message.content == f"{expected} ERROR lines"
    assert reply.choices[0].finish_reason == "stop"
    shown = json.dumps(roots["plain"].seen)
    assert MARKER not in shown and len(shown) < 60_000  # metadata and the question, never the bulk
    assert "How many ERROR lines?" in shown
    usage = reply.usage
    assert usage is not None
    extra = usage.model_extra or {}
    root, sub = extra["holdfast"]["root"], extra["holdfast"]["sub"]
    assert usage.prompt_tokens == root["input_tokens"] + sub["input_tokens"]
    assert usage.completion_tokens == root["output_tokens"] + sub["output_tokens"]
    assert sub["calls"] == 1 and root["calls"] == 2
    assert (
        extra["cost_usd"] == pytest.approx(root["cost_usd"] + sub["cost_usd"])
        and extra["cost_usd"] > 0
    )
    meta = (reply.model_extra or {})["holdfast"]
    assert meta["status"] == "ok" and meta["trace_id"].startswith("rlm-")


def test_a_typed_answer_from_a_json_schema(client: openai.OpenAI, roots: dict[str, Root]) -> None:
    schema = {
        "type": "object",
        "properties": {
            "service": {"type": "string"},
            "errors": {"type": "integer", "minimum": 0},
            "codes": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["service", "errors", "codes"],
        "additionalProperties": False,
    }
    log = big_log(0.2)
    reply = client.chat.completions.create(
        model="rlm-typed",
        messages=[
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": log + "\nWhich service fails, how often?"},
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "failures", "schema": schema, "strict": True},
        },
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert data == {"service": "billing", "errors": log.count("ERROR"), "codes": ["E42"]}
    # the wrong type was sent back to the root model as a turn, then fixed
    fed_back = json.dumps(roots["typed"].seen[-1])
    assert "errors" in fed_back and "valid integer" in fed_back
    assert "Be exact." in json.dumps(roots["typed"].seen[0])


def test_streaming_progress_then_the_answer(client: openai.OpenAI) -> None:
    log = big_log(0.5)
    stream = client.chat.completions.create(
        model="rlm-counter",
        messages=[
            {"role": "user", "content": log},
            {"role": "user", "content": "Count the ERROR lines."},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    progress, content, finish, usage = [], [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                progress.append(extra["reasoning_content"])
            if choice.delta.content:
                content.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert any(p.startswith("turn 1") for p in progress) and "answer submitted\n" in progress
    assert "".join(content) == f"{log.count('ERROR')} ERROR lines"
    assert finish == ["stop"]
    assert usage is not None and usage.total_tokens > 0


def test_out_of_budget_answers_with_the_partial_result(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="rlm-counter",
        messages=[{"role": "user", "content": big_log(0.1)}, {"role": "user", "content": "Count."}],
        extra_body={"holdfast": {"budget": {"max_iterations": 1}}},
    )
    assert reply.choices[0].finish_reason == "length"
    meta = (reply.model_extra or {})["holdfast"]
    assert meta["status"] == "budget_exceeded" and meta["limit"] == "iterations"
    assert meta["partial"]["iterations"] == 1


def test_budget_above_the_cap_and_bad_requests_are_refused(client: openai.OpenAI) -> None:
    msgs: Any = [{"role": "user", "content": "x" * 100}, {"role": "user", "content": "q"}]
    with pytest.raises(openai.BadRequestError, match=r"cap of 1\.0"):
        client.chat.completions.create(
            model="rlm-counter", messages=msgs, extra_body={"holdfast": {"budget": {"max_usd": 50}}}
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-unknown", messages=msgs)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model="rlm-counter",
            messages=msgs,
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ],
        )
    with pytest.raises(openai.BadRequestError, match="allOf"):
        client.chat.completions.create(
            model="rlm-counter",
            messages=msgs,
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {
                        "type": "object",
                        "properties": {"a": {"allOf": [{"type": "string"}]}},
                    },
                },
            },
        )


def _wait(cond: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def test_a_client_disconnect_cancels_the_job_and_its_sub_calls(
    server: ServerThread, token: str, slow: SlowSub, services: Services
) -> None:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=2.0)
    with c, pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(
            model="rlm-slow",
            messages=[
                {"role": "user", "content": "data " * 100},
                {"role": "user", "content": "go"},
            ],
        )
    assert slow.started == 4
    assert _wait(lambda: slow.cancelled == 4), (slow.started, slow.cancelled)
    assert slow.finished == 0
    job = next(iter(services.jobs.jobs.values()))
    assert _wait(lambda: job.status == "cancelled")
    run = services.traces.get_run(job.trace_id)
    # the engine records a cancellation as the trip of its "cancelled" limit
    assert run is not None and (run.result or {}).get("limit") == "cancelled"


def test_closing_a_stream_cancels_the_job(server: ServerThread, token: str, slow: SlowSub) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=30) as c:
        stream = c.chat.completions.create(
            model="rlm-slow",
            messages=[
                {"role": "user", "content": "data " * 100},
                {"role": "user", "content": "go"},
            ],
            stream=True,
        )
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        assert _wait(lambda: slow.started == 4)
        stream.close()
    assert _wait(lambda: slow.cancelled == 4), (slow.started, slow.cancelled)


def test_the_endpoint_needs_the_rlm_scope(server: ServerThread, services: Services) -> None:
    _, reader = services.tokens.create("reader", scopes=["read"])  # type: ignore[union-attr]
    r = httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {reader}"},
        json={"model": "rlm-counter", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 403
