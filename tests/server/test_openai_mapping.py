"""How a chat request becomes an RLM job: the question, the bulk, and the typed signature."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from holdfast.errors import InvalidInput
from holdfast.rlm import parse_signature
from holdfast.server.openai_api import GENERIC_QUERY, signature_for, split_request
from holdfast.server.schema import model_from_schema


def test_short_last_question_over_earlier_material() -> None:
    q, ctx = split_request(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "BULK" * 10},
            {"role": "user", "content": "what is in it?"},
        ],
        None,
    )
    assert q.startswith("what is in it?") and "Be brief." in q
    assert ctx == "BULK" * 10


def test_one_long_message_gets_the_generic_question() -> None:
    text = "x" * 10_000 + "\nQuestion: how many x?"
    q, ctx = split_request([{"role": "user", "content": text}], None)
    assert q == GENERIC_QUERY and ctx == text


def test_a_conversation_stays_a_list_and_an_explicit_query_wins() -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
    ]
    q, ctx = split_request(msgs, "summarise")
    assert q == "summarise"
    assert ctx == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "cd"},
    ]


@pytest.mark.parametrize(
    "msgs",
    [
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [{"role": "wizard", "content": "x"}],
        [{"role": "system", "content": "only instructions"}],
        [{"role": "user", "content": ""}],
    ],
)
def test_bad_conversations_are_refused(msgs: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidInput):
        split_request(msgs, None)


def test_schema_becomes_a_validating_model() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "Code": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "pattern": "^E[0-9]+$"},
                    "n": {"type": "integer", "minimum": 0},
                },
                "required": ["code", "n"],
            }
        },
        "properties": {
            "service": {"type": "string", "enum": ["billing", "auth"]},
            "codes": {"type": "array", "items": {"$ref": "#/$defs/Code"}, "maxItems": 3},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "extra": {"type": "object"},
        },
        "required": ["service", "codes"],
        "additionalProperties": False,
    }
    model = model_from_schema(schema, "failures")
    ok = model.model_validate({"service": "billing", "codes": [{"code": "E42", "n": 3}]})
    assert ok.model_dump()["codes"][0] == {"code": "E42", "n": 3}
    bad: dict[str, Any]
    for bad in (
        {"service": "mail", "codes": []},
        {"service": "auth", "codes": [{"code": "X1", "n": 1}]},
        {"service": "auth", "codes": [{"code": "E1", "n": -1}]},
        {"service": "auth", "codes": [{"code": "E1", "n": 1}] * 4},
        {"service": "auth", "codes": [], "surprise": 1},
        {"codes": []},
    ):
        with pytest.raises(ValidationError):
            model.model_validate(bad)
    sig = parse_signature(model)
    assert [f.name for f in sig.outputs] == ["service", "codes", "note", "extra"]


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"type": "array", "items": {"type": "string"}}, "object with properties"),
        ({"type": "object", "properties": {}}, "no properties"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "'not'"),
        ({"type": "object", "properties": {"a": {"$ref": "http://x/y"}}}, "local $ref"),
        (
            {
                "type": "object",
                "$defs": {"N": {"type": "object", "properties": {"k": {"$ref": "#/$defs/N"}}}},
                "properties": {"a": {"$ref": "#/$defs/N"}},
            },
            "recursively",
        ),
        (
            {"type": "object", "properties": {"class": {"type": "string"}}},
            "cannot be a submitted field",
        ),
    ],
)
def test_unenforceable_schemas_are_refused(schema: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words.replace("$", r"\$")):
        model_from_schema(schema)


def test_response_format_kinds() -> None:
    assert signature_for(None) == (None, "text")
    assert signature_for({"type": "text"}) == (None, "text")
    assert signature_for({"type": "json_object"}) == ("-> answer: dict", "json_answer")
    sig, render = signature_for(
        {
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}},
                    "required": ["a"],
                },
            },
        }
    )
    assert render == "json" and issubclass(sig, BaseModel)
    with pytest.raises(InvalidInput):
        signature_for({"type": "grammar"})


_leaf = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "boolean"},
        {"enum": ["a", "b"]},
    ]
)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in ("and", "as", "if", "in", "is", "or", "for", "def", "del", "not", "try")
)


@given(st.dictionaries(_names, _leaf, min_size=1, max_size=6))
def test_any_flat_schema_accepts_its_own_sample(props: dict[str, dict[str, Any]]) -> None:
    samples = {"string": "s", "integer": 3, "number": 1.5, "boolean": True}
    model = model_from_schema({"type": "object", "properties": props, "required": list(props)})
    value = {k: samples[v["type"]] if "type" in v else "a" for k, v in props.items()}
    assert model.model_validate(value).model_dump() == value
