"""RecordingLM records streamed replies as it records completed ones."""

from __future__ import annotations

import pytest

from holdfast.evals.recording import RecordingLM
from holdfast.lm import StreamDone, TextDelta
from holdfast.testing import ScriptedLM

MESSAGES = [{"role": "user", "content": "hi"}]


def test_sync_stream_is_recorded_with_the_assembled_reply() -> None:
    lm = RecordingLM(ScriptedLM(["hello there"]), "agent")
    with lm.stream(MESSAGES) as events:
        seen = list(events)
    assert any(isinstance(e, TextDelta) for e in seen)
    assert isinstance(seen[-1], StreamDone)
    assert [entry["reply"]["text"] for entry in lm.sink] == ["hello there"]
    assert lm.sink[0]["messages"] == MESSAGES


@pytest.mark.anyio
async def test_async_stream_is_recorded() -> None:
    lm = RecordingLM(ScriptedLM(["streamed"]), "root")
    async with lm.astream(MESSAGES) as events:
        async for _ in events:
            pass
    assert [entry["reply"]["text"] for entry in lm.sink] == ["streamed"]
    assert lm.sink[0]["role"] == "root"
