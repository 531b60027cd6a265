"""Helpers shared by the MCP tests: the scripted model's replies and result decoding."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOLDFAST = str(Path(sys.executable).with_name("holdfast"))
ERRORS_PER_FILE = {"a.log": 3, "b.log": 5, "sub/c.log": 7}


def count_code() -> str:
    return (
        "I count the ERROR lines in every file of the folder.\n```python\n"
        "n = sum(logs.read(p).count('ERROR') for p, _ in logs.files)\n"
        "print(n)\nSUBMIT(answer=str(n))\n```\n"
    )


def slow_code() -> str:
    return (
        "This takes a while.\n```python\nimport time\n"
        "for _ in range(1200):\n    time.sleep(0.05)\nSUBMIT(answer='too late')\n```\n"
    )


class ModelScript:
    """What the scripted root model answers: a function of the request body, switchable per test."""

    def __init__(self) -> None:
        self.reply: Callable[[dict[str, Any]], str] = lambda body: count_code()
        self.calls = 0

    def __call__(self, body: dict[str, Any]) -> str:
        self.calls += 1
        return self.reply(body)


def stdio_params(env: dict[str, str], *args: str) -> Any:
    from mcp import StdioServerParameters

    return StdioServerParameters(
        command=HOLDFAST, args=["mcp", "serve", "--model", "openai:scripted-root", *args], env=env
    )


def structured(result: Any) -> dict[str, Any]:
    """A tool result's JSON payload (structured content, else the text content parsed)."""
    if result.structured_content is not None:
        data: dict[str, Any] = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    parsed: dict[str, Any] = json.loads(result.content[0].text)
    return parsed


def error_text(result: Any) -> str:
    assert result.is_error, result
    return " ".join(getattr(c, "text", "") for c in result.content)


def resource_text(result: Any) -> str:
    """The text of a resource read's first content (a resource of text, never a blob)."""
    from mcp.types import TextResourceContents

    first = result.contents[0]
    assert isinstance(first, TextResourceContents), first
    return first.text
