"""Exact scorers: every suite's answer is checked by code, never by a model.

Each scorer returns a :class:`Score`: a value in [0, 1] and the details a trainer or a reader
needs to see why (what matched, what was missing, what was extra). Scorers are total: any JSON
value the model submits (wrong type, nested junk, ``None``) scores, it never raises.

- :func:`exact` for labels and codes (case and surrounding whitespace ignored);
- :func:`numeric` for counts, with OOLONG's partial credit ``0.75 ** |gold - answer|``
  (Bertsch et al., "Oolong: Evaluating Long Context Reasoning and Aggregation Capabilities",
  2025), and exact-within-tolerance for real numbers;
- :func:`set_f1` for lists whose order does not matter (multi-needle codes, user pairs);
- :func:`mapping` for per-group statistics: the share of groups answered right, extra groups
  counting as wrong;
- :func:`token_f1` for free-text answers (LoCoMo's QA metric: normalised token F1 with the
  articles and punctuation removed).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Score:
    """A score in [0, 1] with the scorer's name and its details (JSON-safe)."""

    value: float
    scorer: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (0.0 <= self.value <= 1.0) or math.isnan(self.value):
            raise ValueError(f"a score must be in [0, 1], not {self.value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "scorer": self.scorer, "details": self.details}


def norm_label(value: Any) -> str:
    """A label as compared: text, stripped, case-folded, inner whitespace collapsed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split()).casefold()


def exact(gold: Any, answer: Any) -> Score:
    """1 when the answer is the gold label (case and whitespace ignored), else 0."""
    ok = norm_label(gold) == norm_label(answer) and norm_label(gold) != ""
    return Score(1.0 if ok else 0.0, "exact", {"gold": gold, "answer": _safe(answer)})


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def numeric(gold: float, answer: Any, *, tolerance: float | None = None) -> Score:
    """Counts (``tolerance=None``): ``0.75 ** |gold - answer|`` (OOLONG's partial credit), so
    only the exact count scores 1. Real numbers: 1 within ``tolerance``, else 0."""
    got = _as_number(answer)
    if got is None:
        return Score(
            0.0, "numeric", {"gold": gold, "answer": _safe(answer), "error": "not a number"}
        )
    diff = abs(float(gold) - got)
    if tolerance is not None:
        value = 1.0 if diff <= tolerance else 0.0
    else:
        value = 0.75**diff if diff < 1e6 else 0.0
        if diff > 0:
            value = min(value, 0.75)
    return Score(value, "numeric", {"gold": gold, "answer": got, "abs_error": diff})


def _items(value: Any) -> list[Any] | None:
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return None


def _key(item: Any) -> str:
    if isinstance(item, (list, tuple)):
        return "|".join(sorted(norm_label(x) for x in item))
    return norm_label(item)


def set_f1(gold: Iterable[Any], answer: Any) -> Score:
    """F1 between the gold set and the answered set; pairs compare without order."""
    want = {_key(g) for g in gold}
    items = _items(answer)
    if items is None:
        return Score(0.0, "set_f1", {"gold": sorted(want), "error": "the answer is not a list"})
    got = {_key(a) for a in items}
    hit = len(want & got)
    if not want and not got:
        return Score(1.0, "set_f1", {"gold": [], "answer": []})
    precision = hit / len(got) if got else 0.0
    recall = hit / len(want) if want else 0.0
    f1 = 0.0 if hit == 0 else 2 * precision * recall / (precision + recall)
    return Score(
        f1,
        "set_f1",
        {
            "precision": precision,
            "recall": recall,
            "missing": sorted(want - got)[:50],
            "extra": sorted(got - want)[:50],
        },
    )


def mapping(gold: Mapping[str, Any], answer: Any, *, tolerance: float = 0.0) -> Score:
    """The share of groups answered right; numbers within ``tolerance``, labels exactly.

    Extra groups count against the answer: the score is right / (gold groups + extra groups).
    """
    if not isinstance(answer, Mapping):
        return Score(0.0, "mapping", {"error": "the answer is not an object", "gold": dict(gold)})
    got = {norm_label(k): v for k, v in answer.items()}
    right, wrong = 0, []
    for k, want in gold.items():
        have = got.get(norm_label(k))
        gold_num = _as_number(want)
        if gold_num is not None and not isinstance(want, str):
            have_num = _as_number(have)
            ok = have_num is not None and abs(have_num - gold_num) <= tolerance + 1e-9
        else:
            ok = norm_label(want) == norm_label(have)
        if ok:
            right += 1
        else:
            wrong.append(k)
    extra = sorted(set(got) - {norm_label(k) for k in gold})
    denom = len(gold) + len(extra)
    value = right / denom if denom else 1.0
    return Score(value, "mapping", {"right": right, "wrong": wrong[:50], "extra": extra[:50]})


_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: Any) -> str:
    """LoCoMo's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    s = str(text if text is not None else "").lower().replace(",", "")
    s = s.translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def token_f1(gold: Any, answer: Any) -> Score:
    """Token-level F1 between normalised gold and answer texts."""
    want = normalize_answer(gold).split()
    got = normalize_answer(answer).split()
    common = Counter(want) & Counter(got)
    same = sum(common.values())
    if not want or not got:
        value = 1.0 if want == got else 0.0
    elif same == 0:
        value = 0.0
    else:
        precision, recall = same / len(got), same / len(want)
        value = 2 * precision * recall / (precision + recall)
    return Score(value, "token_f1", {"gold": str(gold), "answer": _safe(answer)})


def mean(scores: Iterable[Score], scorer: str, **details: Any) -> Score:
    """The mean of several scores (a task with several questions), with each part kept."""
    parts = list(scores)
    value = sum(s.value for s in parts) / len(parts) if parts else 0.0
    return Score(value, scorer, {"parts": [s.to_dict() for s in parts], **details})


def _safe(value: Any, limit: int = 2000) -> Any:
    """The answer as recorded in details: JSON values as they are, long text cut."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... ({len(value)} chars)"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        import json

        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)[:limit]
    return value if len(text) <= limit else text[:limit] + "..."
