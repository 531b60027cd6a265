from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from holdfast.errors import InvalidInput
from holdfast.rlm.signature import SubmitError, parse_signature, parse_type


def test_parses_inputs_and_typed_outputs() -> None:
    sig = parse_signature("question, passage -> answer: str, confidence: float")
    assert [f.name for f in sig.inputs] == ["question", "passage"]
    assert sig.output_names == ["answer", "confidence"]
    out = sig.validate({"answer": "yes", "confidence": 0.5})
    assert out.confidence == 0.5  # type: ignore[attr-defined]
    assert sig.validate({"answer": "yes", "confidence": 1}).confidence == 1.0  # type: ignore[attr-defined]
    with pytest.raises(SubmitError):
        sig.validate({"answer": "yes", "confidence": "0.5"})
    lenient = parse_signature("question, passage -> answer: str, confidence: float", strict=False)
    assert lenient.validate({"answer": "yes", "confidence": "0.5"}).confidence == 0.5  # type: ignore[attr-defined]


def test_nested_types_validate() -> None:
    sig = parse_signature(
        "-> names: list[str], counts: dict[str, int], kind: literal['a', 'b'], note: str | None"
    )
    ok = sig.validate({"names": ["x"], "counts": {"x": 1}, "kind": "a", "note": None})
    assert ok.counts == {"x": 1}  # type: ignore[attr-defined]
    with pytest.raises(SubmitError) as err:
        sig.validate({"names": "x", "counts": {"x": "many"}, "kind": "c", "note": None})
    text = str(err.value)
    assert "names" in text and "counts.x" in text and "kind" in text


def test_extra_and_missing_fields_are_refused() -> None:
    sig = parse_signature("-> answer: int")
    with pytest.raises(SubmitError):
        sig.validate({"answer": 1, "other": 2})
    with pytest.raises(SubmitError):
        sig.validate({})


def test_positional_submission_maps_to_the_single_output() -> None:
    sig = parse_signature("-> answer: int")
    assert sig.coerce_submission([3], {}) == {"answer": 3}
    two = parse_signature("-> a: int, b: int")
    with pytest.raises(SubmitError):
        two.coerce_submission([3], {})


@pytest.mark.parametrize(
    "bad",
    [
        "no arrow here",
        "a -> b -> c",
        "a ->",
        "a -> 1x: str",
        "a -> b: strng",
        "a -> b: list[str",
        "a -> b: str, b: int",
        "a -> a: str",
        "a -> class: str",
        "a -> b: dict[str]",
        "a -> b: int[str]",
    ],
)
def test_invalid_signatures_raise_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_signature(bad)


def test_pydantic_model_as_outputs() -> None:
    class Out(BaseModel):
        total: int

    sig = parse_signature(Out)
    assert sig.validate({"total": 2}).total == 2  # type: ignore[attr-defined]


_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in {"if", "in", "is", "or", "and", "as", "def", "for", "not", "del", "try"}
)
_types = st.recursive(
    st.sampled_from(["str", "int", "float", "bool", "any", "list", "dict"]),
    lambda inner: st.one_of(
        inner.map(lambda t: f"list[{t}]"),
        inner.map(lambda t: f"dict[str, {t}]"),
        inner.map(lambda t: f"{t} | None"),
    ),
    max_leaves=4,
)


@given(st.lists(st.tuples(_names, _types), min_size=1, max_size=5, unique_by=lambda p: p[0]))
def test_any_well_formed_signature_parses_and_roundtrips(fields: list[tuple[str, str]]) -> None:
    text = "q -> " + ", ".join(f"{n}: {t}" for n, t in fields if n != "q")
    if text.endswith("-> "):
        return
    sig = parse_signature(text)
    again = parse_signature(str(sig))
    assert [(f.name, f.type_text) for f in again.outputs] == [
        (f.name, f.type_text) for f in sig.outputs
    ]


@given(st.text(max_size=40))
def test_parse_type_never_crashes_unexpectedly(text: str) -> None:
    try:
        parse_type(text)
    except InvalidInput:
        pass
