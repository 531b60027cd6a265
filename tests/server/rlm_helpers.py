"""Scripted models for the server's RLM tests: a root that really navigates its input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from holdfast.lm.types import Message
from holdfast.testing import FunctionLM


def code(body: str) -> str:
    return f"Next step.\n```python\n{body}\n```\n"


def counting_root(model: str = "scripted:root") -> FunctionLM:
    """Counts the ERROR lines of its input in the REPL, asks one sub-call, submits."""

    def reply(messages: list[Message], **_: Any) -> str:
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if turn == 0:
            return code("n = context.count('ERROR')\nprint('errors:', n)")
        if turn == 1:
            return code("label = llm_query('name this count: ' + str(n))\nprint(label)")
        return code("SUBMIT(answer=f'{n} errors ({label})')")

    return FunctionLM(reply, model=model)


def typed_root(model: str = "scripted:typed") -> FunctionLM:
    """Submits the fields of the signature it is shown (service: str, errors: int)."""

    def reply(messages: list[Message], **_: Any) -> str:
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if turn == 0:
            return code(
                "n = context.count('ERROR')\nsvc = 'billing' if 'billing' in context else 'other'"
            )
        return code("SUBMIT(service=svc, errors=n, codes=['E42'])")

    return FunctionLM(reply, model=model)


def looping_root(model: str = "scripted:loop") -> FunctionLM:
    """Never submits: fans out sub-calls every turn (for budgets and cancellation)."""

    def reply(messages: list[Message], **_: Any) -> str:
        return code(
            "answer = {'content': 'partial so far', 'ready': False}\nr = llm_batch(['a', 'b', 'c', 'd'])\nprint(len(r))"
        )

    return FunctionLM(reply, model=model)


class SlowSub:
    """A sub-model whose calls take ``delay`` seconds and record whether they were cancelled."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = 0
        self.cancelled = 0
        self.finished = 0

    def lm(self) -> FunctionLM:
        async def reply(messages: list[Message], **_: Any) -> str:
            self.started += 1
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            self.finished += 1
            return json.dumps({"ok": True})

        return FunctionLM(reply, model="scripted:slow-sub")


def echo_sub(model: str = "scripted:sub") -> FunctionLM:
    return FunctionLM(lambda messages, **_: "a count of errors", model=model)
