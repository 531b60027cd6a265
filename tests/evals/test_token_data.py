"""Token ids and log-probabilities from OpenAI-compatible replies, kept through the call record."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.lm.openai_wire import parse_completion
from holdfast.lm.record import completion_from_dict, completion_to_dict

tokens = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=8),
        st.floats(-50, 0),
        st.one_of(st.none(), st.integers(0, 10**6)),
    ),
    max_size=20,
)


def body(choice_extra: dict[str, Any], top: dict[str, Any] | None = None) -> bytes:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "hi"},
        "finish_reason": "stop",
        **choice_extra,
    }
    return json.dumps(
        {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1}, **(top or {})}
    ).encode()


@settings(deadline=None)
@given(tokens, st.lists(st.integers(0, 10**6), max_size=10))
def test_logprobs_and_token_ids_parse_and_round_trip(
    items: list[tuple[str, float, int | None]], ids: list[int]
) -> None:
    content = [
        {"token": t, "logprob": lp, **({"token_id": i} if i is not None else {})}
        for t, lp, i in items
    ]
    c = parse_completion(
        body({"logprobs": {"content": content}, "token_ids": ids}, {"prompt_token_ids": [7, 8]}),
        {},
        url="u",
    )
    assert [(t.token, t.logprob, t.token_id) for t in c.logprobs] == [
        (t, lp, i) for t, lp, i in items
    ]
    assert list(c.token_ids) == ids and list(c.prompt_token_ids) == [7, 8]
    again = completion_from_dict(json.loads(json.dumps(completion_to_dict(c))))
    assert again.logprobs == c.logprobs and again.token_ids == c.token_ids
    assert again.prompt_token_ids == c.prompt_token_ids


@settings(deadline=None)
@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.lists(st.integers()),
        st.dictionaries(st.text(), st.integers()),
    )
)
def test_odd_token_data_is_ignored_never_fatal(junk: Any) -> None:
    c = parse_completion(body({"logprobs": {"content": [junk]}, "token_ids": junk}), {}, url="u")
    assert c.text == "hi"
    assert c.logprobs == () or all(isinstance(t.logprob, float) for t in c.logprobs)
    assert all(isinstance(i, int) for i in c.token_ids)


def test_replies_without_token_data_are_unchanged() -> None:
    c = parse_completion(body({}), {}, url="u")
    assert c.logprobs == () and c.token_ids == () and c.prompt_token_ids == ()
    assert "logprobs" not in completion_to_dict(c)
