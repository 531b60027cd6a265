"""The worker's bounded output capture, run on the host (the worker is stdlib-only)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.sandbox._worker import _Capture


@given(st.integers(2, 64), st.lists(st.binary(max_size=40), max_size=30))
@settings(max_examples=300)
def test_capture_keeps_head_and_tail_exactly(limit: int, writes: list[bytes]) -> None:
    cap = _Capture(limit)
    for chunk in writes:
        cap.add(chunk)
    data = b"".join(writes)
    text, cut = cap.result()
    half = max(limit // 2, 1)
    if len(data) <= 2 * half:
        assert not cut and text == data.decode("utf-8", "replace")
        return
    assert cut
    match = re.search(r"\n\.\.\.\[(\d+) bytes of output omitted\]\.\.\.\n", text)
    assert match is not None
    assert int(match.group(1)) == len(data) - 2 * half
    assert text[: match.start()] == data[:half].decode("utf-8", "replace")
    assert text[match.end() :] == data[-half:].decode("utf-8", "replace")
