"""The scorers: exact answers score 1, anything perturbed scores below 1, nothing raises."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.evals.scorers import (
    Score,
    exact,
    mapping,
    normalize_answer,
    numeric,
    set_f1,
    token_f1,
)

labels = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-", min_size=1, max_size=16)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(deadline=None)
@given(labels)
def test_exact_gold_scores_one(gold: str) -> None:
    assert exact(gold, gold).value == 1.0
    assert exact(gold, f"  {gold.lower()} ").value == 1.0


@settings(deadline=None)
@given(labels, labels)
def test_exact_other_label_scores_zero(gold: str, other: str) -> None:
    if other.casefold() != gold.casefold():
        assert exact(gold, other).value == 0.0


@settings(deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 500))
def test_numeric_only_the_exact_count_scores_one(gold: int, delta: int) -> None:
    assert numeric(gold, gold).value == 1.0
    assert numeric(gold, str(gold)).value == 1.0
    off = numeric(gold, gold + delta).value
    assert off < 1.0
    assert math.isclose(off, min(0.75, 0.75**delta), rel_tol=1e-9)
    assert numeric(gold, gold + delta + 1).value < off or off == 0.0


def test_numeric_rejects_non_numbers() -> None:
    for bad in (None, True, "many", [3], {"n": 3}, float("nan"), float("inf")):
        assert numeric(3, bad).value == 0.0
    assert numeric(2.5, 2.504, tolerance=0.01).value == 1.0
    assert numeric(2.5, 2.52, tolerance=0.01).value == 0.0


pairs = st.lists(
    st.tuples(labels, labels).map(list),
    min_size=1,
    max_size=12,
    unique_by=lambda p: tuple(sorted(p)),
)


@settings(deadline=None)
@given(pairs, st.data())
def test_set_f1_gold_one_perturbed_less(gold: list[list[str]], data: st.DataObject) -> None:
    if len({"|".join(sorted(x.casefold() for x in p)) for p in gold}) != len(gold):
        return
    assert set_f1(gold, gold).value == 1.0
    assert set_f1(gold, [list(reversed(p)) for p in reversed(gold)]).value == 1.0
    drop = data.draw(st.integers(0, len(gold) - 1))
    assert set_f1(gold, gold[:drop] + gold[drop + 1 :]).value < 1.0
    assert set_f1(gold, [*gold, ["ZZZ-EXTRA", "YYY-EXTRA"]]).value < 1.0
    assert set_f1(gold, "not a list").value == 0.0


groups = st.dictionaries(
    labels, st.integers(0, 10**6).map(lambda c: c / 100), min_size=1, max_size=8
)


@settings(deadline=None)
@given(groups, st.data())
def test_mapping_gold_one_perturbed_less(gold: dict[str, float], data: st.DataObject) -> None:
    keys = {k.casefold() for k in gold}
    if len(keys) != len(gold):
        return
    assert mapping(gold, gold, tolerance=0.011).value == 1.0
    key = data.draw(st.sampled_from(sorted(gold)))
    assert mapping(gold, {**gold, key: gold[key] + 1.0}, tolerance=0.011).value < 1.0
    assert mapping(gold, {k: v for k, v in gold.items() if k != key}).value < 1.0
    assert mapping(gold, {**gold, "QQQ-EXTRA-GROUP": 1.0}).value < 1.0
    assert mapping(gold, [1, 2]).value == 0.0


@settings(deadline=None)
@given(
    st.lists(
        st.sampled_from(["seven", "may", "2023", "berlin", "necklace", "two"]),
        min_size=1,
        max_size=6,
    )
)
def test_token_f1_gold_one_perturbed_less(words: list[str]) -> None:
    gold = " ".join(words)
    assert token_f1(gold, gold).value == 1.0
    assert token_f1(gold, gold.upper() + ".").value == 1.0
    assert token_f1(gold, gold + " extra").value < 1.0
    assert token_f1(gold, "unrelated").value == 0.0


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_scorers_are_total(answer: Any) -> None:
    for score in (
        exact("AB-1", answer),
        numeric(4, answer),
        set_f1([["u1", "u2"]], answer),
        mapping({"Oslo": 1.5}, answer),
        token_f1("two", answer),
    ):
        assert isinstance(score, Score)
        assert 0.0 <= score.value <= 1.0


def test_normalize_answer_drops_articles_and_punctuation() -> None:
    assert normalize_answer("The  Necklace, a gift!") == "necklace gift"


def test_score_range_is_enforced() -> None:
    with pytest.raises(ValueError):
        Score(1.5, "x")
