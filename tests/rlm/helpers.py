"""Helpers shared by the RLM tests."""

from __future__ import annotations


def code(body: str, thought: str = "Next step.") -> str:
    """A root-model reply with one code block."""
    return f"{thought}\n```python\n{body}\n```\n"
