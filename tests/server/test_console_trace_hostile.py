"""The RLM trace page with hostile model and box output: code, a printed 10 MB output, script
tags, event handlers and terminal escapes are shown as bounded, escaped text."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.server.conftest import BASE
from tests.server.rlm_helpers import code
from tests.server.test_console import HOSTILE, login

from holdfast.lm.types import Message
from holdfast.rlm import RLM
from holdfast.sandbox.types import SandboxPolicy
from holdfast.server import Services
from holdfast.testing import FunctionLM


def test_a_hostile_trace_is_escaped_and_bounded(
    app: FastAPI, services: Services, token: str
) -> None:
    def root(messages: list[Message], **_: Any) -> str:
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if turn == 0:
            return HOSTILE + code(
                f"print({HOSTILE!r})\nprint('y' * (10 * 1024 * 1024))\nx = {HOSTILE!r}"
            )
        return code("SUBMIT(answer=x + 'z' * (10 * 1024 * 1024))")

    rlm = RLM(
        FunctionLM(root, model="scripted:hostile"),
        sandbox=SandboxPolicy(isolation="process"),
        store=services.traces,
        mode="rlm",
    )
    result = rlm.run("q", context="data")
    assert result.status == "ok"
    with TestClient(app, base_url=BASE) as c:
        login(c, token)
        pages = {"list": c.get("/console/rlm"), "trace": c.get(f"/console/rlm/{result.trace_id}")}
    for name, r in pages.items():
        assert r.status_code == 200, name
        html = r.text
        assert "<script>window" not in html and "<img src=x" not in html, name
        assert "\x1b" not in html and "\x07" not in html and "\u202e" not in html, name
        assert len(html) < 2_000_000, (name, len(html))
    trace = pages["trace"].text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in trace
    assert "\\x1b[31mred" in trace
