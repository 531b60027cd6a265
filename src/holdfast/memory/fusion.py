"""Feature fusion: the keyword, dense, entity and time lists combined by a linear score over a
few features of each candidate, instead of reciprocal rank alone.

Reciprocal rank fusion throws the scores away: a turn that BM25 puts far ahead of the rest gets
the same credit as a narrow first place, so adding the dense arm bought recall@10 at the cost of
recall@1 and MRR (33.4 and 53.8 against keyword-only 39.2 and 56.7 on the LoCoMo development
split). This fusion keeps the scores and adds what a reader of the candidates would look at:

========== ==========================================================================
feature    meaning
========== ==========================================================================
kw         BM25 score over the best BM25 score of the query (0 when not matched)
kwrr       keyword reciprocal rank, ``1 / (11 + rank)``
dn         cosine with the query (the depth-th cosine when not in the dense list)
dnrr       dense reciprocal rank
en         named an entity the query names
tm         its event time meets the range read from the query
haskw      matched any keyword at all
sess       the best ``kw + dn`` among the candidates of the same session (evidence clusters)
len        ``log(1 + words)``: BM25 normalises length away, but longer turns say more
hastime    its text carries a time expression (resolved at write time)
spk        its speaker is named in the query
num        its text holds a digit
========== ==========================================================================

The weights were fitted once, by logistic regression on candidates of the LoCoMo development
split only (conversations 0 to 4), and are fixed constants here; cross-validated by
conversation they gave the figures in docs/benchmarks.md. Nothing at query time calls a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FEATURES = (
    "kw", "kwrr", "dn", "dnrr", "en", "tm", "haskw", "sess", "len", "hastime", "spk", "num",
)  # fmt: skip
# Fitted on the LoCoMo development split (see the module doc).
WEIGHTS: Mapping[str, float] = {
    "kw": 5.252,
    "kwrr": 0.768,
    "dn": 5.288,
    "dnrr": 1.372,
    "en": -0.828,
    "tm": 2.132,
    "haskw": -1.077,
    "sess": 2.078,
    "len": 1.404,
    "hastime": 0.86,
    "spk": 1.449,
    "num": 0.495,
}
POOL = 100  # candidates taken from the top of the keyword and the dense list each
MISSING_RANK = 400


@dataclass(frozen=True)
class CandidateInfo:
    """What the fusion needs to know about a candidate besides its ranks."""

    text: str
    speaker: str | None
    session: str | None
    has_time: bool


_DECIMAL = re.compile(r"\d")


def has_digit(text: str) -> bool:
    """Whether any character of ``text`` is a digit (``str.isdigit``): a regular expression
    for the decimal digits, the character loop only for non-ASCII text without one."""
    if _DECIMAL.search(text):
        return True
    return not text.isascii() and any(ch.isdigit() for ch in text)


def features(
    query: str,
    keyword: Sequence[tuple[int, float]],
    dense: Sequence[tuple[int, float]],
    entity: Sequence[int],
    time: Sequence[int],
    info: Mapping[int, CandidateInfo],
) -> tuple[list[int], list[dict[str, float]]]:
    """The candidates (the top :data:`POOL` of the keyword and the dense list, in that order)
    and each one's feature values."""
    cands = list(dict.fromkeys([r for r, _ in keyword[:POOL]] + [r for r, _ in dense[:POOL]]))
    kw = {rid: (score, n) for n, (rid, score) in enumerate(keyword)}
    dn = {rid: (score, n) for n, (rid, score) in enumerate(dense)}
    ent, tim = set(entity), set(time)
    kmax = keyword[0][1] if keyword else 1.0
    dfloor = dense[-1][1] if dense else 0.0
    q = query.lower()
    rows: list[dict[str, float]] = []
    for rid in cands:
        ks, ki = kw.get(rid, (0.0, MISSING_RANK))
        ds, di = dn.get(rid, (dfloor, MISSING_RANK))
        meta = info.get(rid)
        text = meta.text if meta else ""
        speaker = (meta.speaker or "") if meta else ""
        rows.append(
            {
                "kw": ks / kmax if kmax > 0 else 0.0,
                "kwrr": 1.0 / (11 + ki),
                "dn": float(ds),
                "dnrr": 1.0 / (11 + di),
                "en": 1.0 if rid in ent else 0.0,
                "tm": 1.0 if rid in tim else 0.0,
                "haskw": 1.0 if rid in kw else 0.0,
                "len": math.log(1 + len(text.split())),
                "hastime": 1.0 if meta and meta.has_time else 0.0,
                "spk": 1.0 if speaker and speaker.lower() in q else 0.0,
                "num": 1.0 if has_digit(text) else 0.0,
            }
        )
    best: dict[object, float] = {}
    keys: list[object] = []
    for rid, row in zip(cands, rows, strict=True):
        meta = info.get(rid)
        key: object = ("s", meta.session) if meta and meta.session else ("r", rid)
        keys.append(key)
        best[key] = max(best.get(key, 0.0), row["kw"] + row["dn"])
    for key, row in zip(keys, rows, strict=True):
        row["sess"] = best[key]
    return cands, rows


def fuse(
    query: str,
    keyword: Sequence[tuple[int, float]],
    dense: Sequence[tuple[int, float]],
    entity: Sequence[int],
    time: Sequence[int],
    info: Mapping[int, CandidateInfo],
    weights: Mapping[str, float] = WEIGHTS,
) -> list[tuple[int, float, dict[str, int]]]:
    """(rid, score, ranks per arm) best first: the linear score of :func:`features`; candidates
    only the entity or time arm found follow, in that arm's order."""
    cands, rows = features(query, keyword, dense, entity, time, info)
    ranks: dict[int, dict[str, int]] = {}
    for arm, rids in (
        ("keyword", [r for r, _ in keyword]),
        ("dense", [r for r, _ in dense]),
        ("entity", list(entity)),
        ("time", list(time)),
    ):
        for n, rid in enumerate(rids):
            ranks.setdefault(rid, {})[arm] = n + 1
    scored = [
        (rid, sum(weights.get(f, 0.0) * row[f] for f in FEATURES), ranks.get(rid, {}))
        for rid, row in zip(cands, rows, strict=True)
    ]
    scored.sort(key=lambda x: (-x[1], x[0]))
    seen = set(cands)
    floor = scored[-1][1] - 1.0 if scored else 0.0
    tail: list[tuple[int, float, dict[str, int]]] = []
    for arm_list in (entity, time):
        for rid in arm_list:
            if rid not in seen:
                seen.add(rid)
                tail.append((rid, floor - len(tail) * 1e-6, ranks.get(rid, {})))
    return scored + tail
