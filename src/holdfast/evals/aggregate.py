"""OOLONG-style aggregation over many records: counts, per-group statistics, pairwise questions.

Each record is one line ``[2026-03-14] user=u017 city=Lisbon amount=42.10 :: <message>``. The
message's topic (billing, shipping, account, product, praise) is never written as a field: it
must be read from the text, which is what OOLONG asks of a model (a sub-model per chunk, in an
RLM), while the fields make the aggregation itself exact. Messages are built from per-topic
phrase sets that do not share content words, so each has exactly one topic and the gold answer
is computed from the generator's own labels.

Questions (the task index picks the kind): how many records are about a topic (scored with
OOLONG's ``0.75 ** |error|``); the total amount per city of one topic's records (per-group, to
the cent); and which pairs of users both wrote about two given topics (set F1 over pairs).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

from holdfast.errors import InvalidInput
from holdfast.evals.tasks import EvalTask, cached_json, write_atomically, write_json

TOPICS: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my invoice",
        "the refund never reached my card",
        "why does my statement show an extra fee",
        "please correct the amount on my bill",
        "my payment was debited but the invoice is unpaid",
    ],
    "shipping": [
        "the parcel is still stuck at the depot",
        "my delivery arrived a week late",
        "the courier left the box at the wrong address",
        "tracking says dispatched but nothing came",
        "the package was damaged in transit",
    ],
    "account": [
        "I cannot log in after resetting my password",
        "please change the email on my profile",
        "my username was locked after two attempts",
        "how do I enable two factor sign in",
        "delete my profile and personal data",
    ],
    "product": [
        "the blender stopped working after one use",
        "the jacket zipper broke on day two",
        "the screen flickers when the battery is low",
        "the lamp is dimmer than the manual claims",
        "the kettle leaks from its base",
    ],
    "praise": [
        "thanks, your team was wonderful",
        "great service, I will recommend you",
        "lovely experience, keep it up",
        "the support agent was kind and quick",
        "really happy with how this went",
    ],
}
FILLERS = ["", " today", " again", " honestly", " this week", " as mentioned before"]
CITIES = ["Lisbon", "Oslo", "Porto", "Quito", "Dakar", "Hanoi", "Lima", "Perth"]
KINDS = ("count", "group", "pairs")
MIN_RECORDS, MAX_RECORDS = 20, 2_000_000


Record = tuple[str, str, str, float, str, str]
"""(date, user, city, amount, message, topic): the topic is the generator's label, never written."""


def topic_of(message: str) -> str | None:
    """The topic a message was generated from (the generator's own labelling rule)."""
    for topic, phrases in TOPICS.items():
        if any(message.startswith(p) for p in phrases):
            return topic
    return None


def records_for(seed: int, records: int, users: int) -> list[Record]:
    """The records of one task, with their topic labels."""
    rng = random.Random(f"records-{seed}-{records}-{users}")
    # draws in bulk (one call per field for all records): the per-record work is indexing
    topics = rng.choices(list(TOPICS), weights=[5, 4, 3, 3, 1], k=records)
    days = rng.choices(range(7), k=records)
    user_ids = [f"u{u:03d}" for u in range(users)]
    who = rng.choices(user_ids, k=records)
    where = rng.choices(CITIES, k=records)
    cents = rng.choices(range(100, 50_000), k=records)
    phrase = rng.choices(range(5), k=records)
    tail = rng.choices(FILLERS, k=records)
    return [
        (
            f"2026-{1 + i * 12 // records:02d}-{1 + (i * 7 + days[i]) % 28:02d}",
            who[i],
            where[i],
            cents[i] / 100,
            TOPICS[topics[i]][phrase[i]] + tail[i],
            topics[i],
        )
        for i in range(records)
    ]


def record_line(rec: Record) -> str:
    date, user, city, amount, message, _ = rec
    return f"[{date}] user={user} city={city} amount={amount:.2f} :: {message}\n"


def _gold(kind: str, recs: list[Record], rng: random.Random) -> tuple[str, Any, str, str]:
    topics = list(TOPICS)
    if kind == "count":
        topic = rng.choice(topics)
        n = sum(1 for r in recs if r[5] == topic)
        q = (
            f"How many records are about {topic}? Each line is one record; its topic is what "
            f"the message after '::' is about (billing, shipping, account, product or praise)."
        )
        return q, n, "numeric", "records -> count: int"
    if kind == "group":
        topic = rng.choice(topics[:4])
        totals: dict[str, float] = defaultdict(float)
        for r in recs:
            if r[5] == topic:
                totals[r[2]] += r[3]
        gold = {c: round(v, 2) for c, v in sorted(totals.items())}
        q = (
            f"For each city, what is the total amount of the records about {topic}? The topic "
            f"is what the message after '::' is about (billing, shipping, account, product or "
            f"praise). Answer an object mapping city to total, rounded to cents; leave out "
            f"cities with no such record."
        )
        return q, gold, "mapping", "records -> totals: dict[str, float]"
    a, b = rng.sample(topics[:4], 2)
    by_user: dict[str, set[str]] = defaultdict(set)
    for r in recs:
        by_user[r[1]].add(r[5])
    both = sorted(u for u, ts in by_user.items() if a in ts and b in ts)
    pairs = [[x, y] for i, x in enumerate(both) for y in both[i + 1 :]]
    q = (
        f"List every pair of distinct users who both have at least one record about {a} and at "
        f"least one record about {b}. The topic is what the message after '::' is about. Answer "
        f"a list of [user, user] pairs, each pair once."
    )
    return q, pairs, "set_f1", "records -> pairs: list[list[str]]"


def aggregate_task(
    data_dir: Path, *, seed: int, index: int, records: int, users: int = 0
) -> EvalTask:
    """One aggregation task over ``records`` records; the kind cycles count, group, pairs."""
    if not MIN_RECORDS <= records <= MAX_RECORDS:
        raise InvalidInput(f"records must be {MIN_RECORDS} to {MAX_RECORDS}, not {records}")
    kind = KINDS[index % len(KINDS)]
    # few users for pair questions keeps the gold list readable (tens of pairs, not thousands)
    users = users or (12 if kind == "pairs" else max(10, min(500, records // 20)))
    data_seed = seed * 7919 + index
    recs = records_for(data_seed, records, users)
    params = {"v": 2, "seed": data_seed, "records": records, "users": users}
    name = f"oolong-s{seed}-i{index}-{records}"
    path = data_dir / f"{name}.txt"
    sidecar = data_dir / f"{name}.json"
    meta = cached_json(sidecar, params)
    if meta is None or not path.exists():

        def write(fh: TextIO) -> None:
            for start in range(0, len(recs), 10_000):
                fh.write("".join(record_line(r) for r in recs[start : start + 10_000]))

        write_atomically(path, write, mode="w")
        write_json(sidecar, {"params": params, "bytes": path.stat().st_size})
    question, gold, scorer, signature = _gold(kind, recs, random.Random(f"q-{seed}-{index}"))
    return EvalTask(
        suite="oolong",
        task_id=name,
        question=question,
        gold=gold,
        scorer=scorer,
        inputs={"records": str(path)},
        signature=signature,
        meta={
            "kind": kind,
            "records": records,
            "users": users,
            "bytes": path.stat().st_size,
            "tolerance": 0.011 if kind == "group" else None,
        },
    )
