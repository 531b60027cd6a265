"""Property tests of the trace serialisation: call keys and stored events."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.rlm.store import RLMTraceStore
from holdfast.rlm.trace import call_key
from holdfast.store.sqlite import SQLiteDB

_text = st.text(max_size=200)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": _text}
    ),
    min_size=1,
    max_size=6,
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_messages, st.text(min_size=1, max_size=20))
def test_call_key_is_stable_and_sensitive(messages: list[dict[str, Any]], model: str) -> None:
    key = call_key(model, messages, {"stop": None})
    assert key == call_key(model, json.loads(json.dumps(messages)), {"stop": None})
    changed = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + "!"}]
    assert call_key(model, changed, {"stop": None}) != key
    assert call_key(model + "x", messages, {"stop": None}) != key
    assert call_key(model, messages, {"stop": ["x"]}) != key


@given(_text, st.integers(1, 99), st.integers(1, 99), st.floats(0, 1e4, allow_nan=False))
def test_root_keys_ignore_the_status_line(body: str, turn: int, total: int, elapsed: float) -> None:
    def feedback(elapsed_s: float) -> list[dict[str, Any]]:
        status = f"[turn {turn} of {total} · sub-calls 3 · tokens root 1 sub 2 · $0.0001 · {elapsed_s:.1f} s]"
        return [
            {"role": "system", "content": "s"},
            {"role": "user", "content": f"Output:\n{body}\n\n{status}"},
        ]

    assert call_key("m", feedback(elapsed), {}, feedback=True) == call_key(
        "m", feedback(elapsed + 7), {}, feedback=True
    )


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    max_examples=30,
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["iteration", "sub_call", "submit"]),
            st.dictionaries(st.text(max_size=8), _json, max_size=5),
        ),
        max_size=20,
    )
)
def test_events_roundtrip_through_store_and_jsonl(
    tmp_path: Path, events: list[tuple[str, dict[str, Any]]]
) -> None:
    store = RLMTraceStore(SQLiteDB(tmp_path / "p.db"))
    trace_id = f"rlm-{uuid.uuid4().hex}"
    store.start_run(
        trace_id,
        parent_id=None,
        root_id=trace_id,
        depth=0,
        query="q",
        model="m",
        sub_model=None,
        mode="rlm",
        meta={},
    )
    for i, (kind, data) in enumerate(events):
        store.add_event(trace_id, kind, data, iteration=i)
    stored = store.events(trace_id)
    assert [(e.kind, e.data, e.iteration) for e in stored] == [
        (k, d, i) for i, (k, d) in enumerate(events)
    ]
    assert [e.seq for e in stored] == list(range(1, len(events) + 1))
    out = io.StringIO()
    assert store.export_jsonl(trace_id, out) == len(events) + 1
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["data"] for r in rows[1:]] == [d for _, d in events]
