"""Reading one code block out of a model reply, and cutting long output down to size.

The loop runs exactly one block per turn: the first fenced block. Everything after it is ignored,
so a model that goes on to invent the execution output (or a final answer) never fools the loop.
The stop sequence :data:`STOP` makes the provider end the reply at the closing fence; a reply cut
there has an unclosed fence, which is read as a complete block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The closing fence on its own line. Opening fences carry a language tag ("```python"), so this
# never matches an opening fence written as the prompt asks.
STOP = ["\n```\n"]

_OPEN = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+-]*)[ \t]*(.*)$")
_CODE_LANGS = {"", "python", "py", "python3", "repl", "ipython"}


@dataclass(frozen=True)
class CodeBlock:
    """The outcome of reading a reply: the code to run (or None) and what to tell the model."""

    code: str | None
    ignored_blocks: int = 0
    unclosed: bool = False
    note: str | None = None


def extract_code(reply: str) -> CodeBlock:
    """The first Python code block of ``reply``; later blocks are counted and ignored."""
    lines = reply.replace("\r\n", "\n").split("\n")
    i = 0
    first: tuple[str, bool] | None = None
    extra = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, lang, rest = m.group(1), m.group(2).lower(), m.group(3)
        if rest.rstrip().endswith(fence[0] * 3) and rest.strip(fence[0]).strip():
            # a one-line block: ```python print(1)```
            body = rest.rstrip().rstrip(fence[0]).strip()
            if lang not in _CODE_LANGS:
                body = f"{lang} {body}".strip() if lang else body
                lang = ""
            block: tuple[str, bool] = (body, False)
            i += 1
        else:
            # text after the language tag: "```python x = 1" has code on its first line
            body_lines = [rest] if rest.strip() else []
            j = i + 1
            closed = False
            while j < len(lines):
                stripped = lines[j].strip()
                if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                    closed = True
                    break
                body_lines.append(lines[j])
                j += 1
            block = ("\n".join(body_lines), not closed)
            i = j + 1
        if lang not in _CODE_LANGS:
            continue
        if first is None:
            first = block
        elif block[0].strip():
            extra += 1
    if first is None:
        return CodeBlock(
            code=None,
            note="No code block found. Reply with exactly one ```python block of code to run.",
        )
    code, unclosed = first
    code = _dedent_if_uniform(code)
    if not code.strip():
        return CodeBlock(code=None, ignored_blocks=extra, note="The code block was empty.")
    note = None
    if extra:
        note = (
            f"Only your first code block ran; {extra} later block(s) were ignored. "
            "Write one block per turn."
        )
    return CodeBlock(code=code, ignored_blocks=extra, unclosed=unclosed, note=note)


def _dedent_if_uniform(code: str) -> str:
    import textwrap

    return textwrap.dedent(code).strip("\n")


def truncate_middle(text: str, cap: int) -> tuple[str, int]:
    """Keep the head and tail of ``text`` within ``cap`` characters; returns (text, dropped)."""
    if cap <= 0 or len(text) <= cap:
        return text, 0
    keep_head = cap * 2 // 3
    keep_tail = cap - keep_head
    dropped = len(text) - keep_head - keep_tail
    marker = f"\n... [{dropped:,} characters omitted] ...\n"
    return text[:keep_head] + marker + text[len(text) - keep_tail :], dropped
