from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from holdfast.rlm.parse import extract_code, truncate_middle


def test_first_block_runs_and_later_text_is_ignored() -> None:
    reply = "thinking\n```python\nx = 1\nprint(x)\n```\nOutput: 42\nSUBMIT('fake')\n```python\nprint(2)\n```"
    block = extract_code(reply)
    assert block.code == "x = 1\nprint(x)"
    assert block.ignored_blocks == 1
    assert block.note and "ignored" in block.note


def test_no_block() -> None:
    block = extract_code("I think the answer is 4.")
    assert block.code is None and block.note and "No code block" in block.note


def test_unclosed_fence_from_the_stop_sequence_is_a_block() -> None:
    block = extract_code("let me see\n```python\nprint(len(context))")
    assert block.code == "print(len(context))" and block.unclosed


def test_one_line_block_and_other_languages() -> None:
    assert extract_code("```python print(1)```").code == "print(1)"
    block = extract_code('```json\n{"a": 1}\n```\n```py\nprint(3)\n```')
    assert block.code == "print(3)"


def test_empty_block() -> None:
    block = extract_code("```python\n\n```")
    assert block.code is None and block.note


def test_indented_block_is_dedented() -> None:
    assert extract_code("  ```python\n    x = 1\n    y = 2\n  ```").code == "x = 1\ny = 2"


@given(st.text(max_size=300))
def test_extract_never_raises(text: str) -> None:
    block = extract_code(text)
    assert block.code is None or block.code.strip()


@given(
    st.text(alphabet=st.characters(blacklist_characters="`"), min_size=1, max_size=200),
    st.text(max_size=100),
)
def test_code_without_backticks_roundtrips(code: str, tail: str) -> None:
    code = code.strip("\n")
    if not code.strip() or "\r" in code:
        return
    block = extract_code(f"text\n```python\n{code}\n```\n{tail}")
    import textwrap

    assert block.code == textwrap.dedent(code).strip("\n")


@given(st.text(max_size=2000), st.integers(min_value=10, max_value=500))
def test_truncate_middle_keeps_head_and_tail(text: str, cap: int) -> None:
    out, dropped = truncate_middle(text, cap)
    if len(text) <= cap:
        assert out == text and dropped == 0
    else:
        head = cap * 2 // 3
        assert out.startswith(text[:head]) and out.endswith(text[len(text) - (cap - head) :])
        assert dropped == len(text) - cap
