"""Framing and the schema check on what a box may send: property-based, since it parses
untrusted bytes."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.sandbox.hostcalls import validate
from holdfast.sandbox.protocol import (
    HEADER,
    FrameReader,
    ProtocolViolation,
    check_box_message,
    decode_frame,
    decoded_cost,
    encode_frame,
    nesting_depth_exceeds,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
messages = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@given(st.lists(messages, min_size=1, max_size=5), st.data())
@settings(max_examples=150, deadline=None)
def test_frames_survive_any_chunking(msgs: list[dict[str, Any]], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(m, 1 << 20) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = FrameReader(1 << 20)
    out: list[Any] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += reader.feed(stream[prev:cut])
        prev = cut
    assert out == msgs and reader.pending == 0


@given(st.integers(101, 2**32 - 1))
def test_oversized_length_is_refused_before_buffering(size: int) -> None:
    reader = FrameReader(100)
    with pytest.raises(ProtocolViolation, match="exceeds"):
        reader.feed(HEADER.pack(size) + b"{")


@given(st.binary(min_size=1, max_size=64))
def test_garbage_bodies_raise_protocol_violation_only(body: bytes) -> None:
    reader = FrameReader(1000)
    try:
        for msg in reader.feed(HEADER.pack(len(body)) + body):
            check_box_message(msg)
    except ProtocolViolation:
        pass


@given(json_values)
def test_check_box_message_never_crashes_on_any_json(value: Any) -> None:
    try:
        out = check_box_message(value)
    except ProtocolViolation:
        return
    assert out["op"] in {"call", "result", "ready"}


def test_encode_refuses_over_cap_and_non_json() -> None:
    with pytest.raises(ValueError):
        encode_frame({"x": "a" * 100}, 50)
    with pytest.raises(ValueError):
        encode_frame({"x": float("nan")}, 1000)


@pytest.mark.parametrize(
    "msg",
    [
        {"op": "call", "call": 1, "name": "f", "args": [], "kwargs": {}, "extra": 1},
        {"op": "call", "call": -1, "name": "f", "args": [], "kwargs": {}},
        {"op": "call", "call": True, "name": "f", "args": [], "kwargs": {}},
        {"op": "call", "call": 1, "name": 3, "args": [], "kwargs": {}},
        {"op": "result", "id": 1, "ok": True, "stdout": 5},
        {"op": "result", "id": 1, "ok": "yes"},
        {"op": "result", "id": 1, "ok": False, "error": {"type": "X"}},
        {"op": "result", "id": 1, "ok": True, "exec": "os.system('x')"},
        {"op": "spawn"},
        ["op", "call"],
    ],
)
def test_malformed_messages_are_rejected(msg: Any) -> None:
    with pytest.raises(ProtocolViolation):
        check_box_message(msg)


def test_schema_subset() -> None:
    schema = {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "maxLength": 5},
            "n": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
        },
        "required": ["prompt"],
        "additionalProperties": False,
    }
    assert validate(schema, {"prompt": "hi", "n": 2, "tags": ["a"]}) == []
    assert validate(schema, {"prompt": "hi", "n": 2.0}) == []
    problems = validate(schema, {"n": True, "tags": ["c"], "zz": 1})
    text = " ".join(problems)
    assert "missing required 'prompt'" in text and "expected integer" in text
    assert "not one of" in text and "unexpected 'zz'" in text
    assert validate(schema, {"prompt": "toolong"}) != []


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


deep_values = st.recursive(
    st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=40,
)


@given(deep_values, st.integers(0, 12))
@settings(max_examples=200, deadline=None)
def test_nesting_depth_matches_the_decoded_value(value: Any, limit: int) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert nesting_depth_exceeds(body, limit) == (_depth(value) > limit)


@given(deep_values)
@settings(max_examples=60, deadline=None)
def test_decoded_cost_bounds_what_decoding_allocates(value: Any) -> None:
    body = json.dumps({"op": "call", "args": [value] * 50}, ensure_ascii=False).encode()
    tracemalloc.start()
    try:
        decode_frame(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded_cost(body) >= peak - 4096  # tracemalloc's own bookkeeping aside


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_protocol_violations(constant: str) -> None:
    with pytest.raises(ProtocolViolation, match="strict JSON"):
        decode_frame(f'{{"usd": {constant}}}'.encode())


def test_decoder_failures_of_every_kind_are_protocol_violations() -> None:
    for body in (b"[" * 100_000, b"\xff\xfe", b'{"a": 1' + b"9" * 5000 + b"}", b"{}{}"):
        with pytest.raises(ProtocolViolation):
            decode_frame(body, max_depth=10**6)


# The worker's JSON codec (the interpreter's C codec, without importing json) ------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_the_workers_codec_writes_and_reads_what_json_does(value: Any) -> None:
    from holdfast.sandbox._worker import _dumps, _loads

    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert _dumps(value) == expected.encode("utf-8", "surrogatepass")
    assert _loads(expected.encode("utf-8", "surrogatepass")) == json.loads(expected)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_the_hosts_codec_and_the_workers_replies_write_what_json_does(value: Any) -> None:
    from holdfast.sandbox._worker import _dumps_reply

    message = {"op": "result", "value": value}
    expected = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    data = expected.encode("utf-8", "surrogatepass")
    assert encode_frame(message, 1 << 20) == HEADER.pack(len(data)) + data
    assert _dumps_reply(message) == data
    assert decode_frame(data) == json.loads(expected)


def test_the_hosts_decoder_refuses_anything_around_the_one_value() -> None:
    for bad in (b"[1] ", b" [1]", b"[1][2]", b"{} x", b"\n{}"):
        with pytest.raises(ProtocolViolation):
            decode_frame(bad)


def test_the_workers_codec_is_strict() -> None:
    from holdfast.sandbox._worker import _dumps, _loads

    for bad in (b"NaN", b'{"usd": Infinity}', b"[1] [2]", b"[1,", b"", b" 1"):
        with pytest.raises(ValueError):
            _loads(bad)
    with pytest.raises(ValueError):
        _dumps(float("nan"))
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        _dumps({"a": {1, 2}})
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular"):
        _dumps(looped)
    assert _dumps({1: "x", "é": "\ud800"}) == '{"1":"x","é":"\ud800"}'.encode(
        "utf-8", "surrogatepass"
    )
