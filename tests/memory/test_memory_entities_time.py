"""Entities (canonical names, aliases, merge/split, scoped recall) and time (write-time
resolution, query ranges, as-of recall)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.memory import (
    EntityResolver,
    MemoryStore,
    extract_names,
    query_range,
    resolve_event_time,
)

NAMES = [
    "Alice Chen",
    "Alice",
    "Alice C.",
    "Chen",
    "Alice Smith",
    "Bob",
    "Bob Marley",
    "Carol Ann Lee",
    "Carol",
]


def test_aliases_resolve_to_the_full_name() -> None:
    r = EntityResolver(["Alice Chen", "Alice", "Alice C.", "Bob"])
    assert r.canonical("alice") == "Alice Chen"
    assert r.canonical("Alice C.") == "Alice Chen"
    assert r.canonical("Bob") == "Bob"
    assert r.aliases("Alice") == ["Alice Chen", "Alice", "Alice C."]


def test_ambiguous_short_names_stay_apart_and_merge_split_override() -> None:
    r = EntityResolver(["Alice Chen", "Alice Smith", "Alice"])
    assert r.canonical("Alice") == "Alice"
    merged = EntityResolver(
        ["Alice Chen", "Alice Smith", "Alice", "Al"], merges=[["Alice Chen", "Al", "Alice"]]
    )
    assert merged.canonical("Al") == "Alice Chen" and merged.canonical("alice") == "Alice Chen"
    split = EntityResolver(["Alice Chen", "Alice"], splits=[["Alice", "Alice Chen"]])
    assert split.canonical("Alice") == "Alice"


@settings(deadline=None)  # a pure function; a loaded machine must not make it flaky
@given(st.permutations(NAMES))
def test_canonical_names_do_not_depend_on_arrival_order(order: list[str]) -> None:
    assert EntityResolver(order).entities() == EntityResolver(NAMES).entities()


def test_extract_names_skips_sentence_words() -> None:
    names = extract_names("Hey! Yesterday Alice Chen met Bob in Berlin. I think it went well.")
    assert names == ["Yesterday Alice Chen", "Bob", "Berlin"] or "Alice Chen" in " ".join(names)
    assert "I" not in names and "Hey" not in names


def test_entity_scoped_recall_follows_aliases(store: MemoryStore) -> None:
    a = store.add("Alice Chen leads the payments team.", namespace="p")
    b = store.add("Alice C. prefers written design reviews.", namespace="p")
    c = store.add("Bob prefers design reviews on calls.", namespace="p")
    store.add("Alice Smith joined marketing.", namespace="p")
    ents = store.entities("p")
    assert "Alice C." in ents["Alice Chen"]
    scoped = store.search("design reviews", namespace="p", entity="Alice Chen")
    assert [h.item.id for h in scoped] == [b.item.id]
    assert c.item.id in [h.item.id for h in store.search("design reviews", namespace="p")]
    store.split_entity("Alice C.", "Alice Chen", namespace="p")
    assert store.search("design reviews", namespace="p", entity="Alice Chen") == []
    store.merge_entities(["Alice Chen", "Alice C."], namespace="p")
    assert {
        h.item.id for h in store.search("payments reviews", namespace="p", entity="Alice C.")
    } == {
        a.item.id,
        b.item.id,
    }


MAY_8 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def test_relative_expressions_resolve_against_the_mention_time() -> None:
    def span(text: str) -> tuple[str, str]:
        r = resolve_event_time(text, MAY_8)
        assert r is not None and r[0] is not None and r[1] is not None
        return r[0].date().isoformat(), r[1].date().isoformat()

    assert span("I ran a charity race last year") == ("2022-01-01", "2022-12-31")
    assert span("went to a support group yesterday") == ("2023-05-07", "2023-05-07")
    assert span("painted it two weeks ago") == ("2023-04-24", "2023-04-30")
    assert span("we moved 4 years ago") == ("2019-01-01", "2019-12-31")
    assert span("camping next month") == ("2023-06-01", "2023-06-30")
    assert span("the trip on 3 March 2021") == ("2021-03-03", "2021-03-03")
    assert span("back in June 2020") == ("2020-06-01", "2020-06-30")
    assert resolve_event_time("no time here", MAY_8) is None


def test_query_ranges() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    lo, hi = query_range("what did we decide before March 2024", now) or (None, None)
    assert lo is None and hi == datetime(2024, 3, 1, tzinfo=UTC)
    lo, hi = query_range("incidents in 2023", now) or (None, None)
    assert lo == datetime(2023, 1, 1, tzinfo=UTC) and hi is not None and hi.year == 2023
    lo, hi = query_range("after 2022", now) or (None, None)
    assert lo is not None and lo.year == 2022 and hi is None
    lo, hi = query_range("between 2020 and 2021", now) or (None, None)
    assert lo is not None and hi is not None and (lo.year, hi.year) == (2020, 2021)
    assert query_range("what is in the box", now) is None


def test_a_relative_range_anchored_to_a_date_counts_from_that_date() -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    # counted from 10 April 2023 (a Monday), up to the end of that day: not the weekend before today
    lo, hi = query_range("What did Maria do in last weekend before April 10, 2023?", now) or (
        None,
        None,
    )
    assert lo == datetime(2023, 4, 8, tzinfo=UTC)
    assert hi is not None and (hi.year, hi.month, hi.day) == (2023, 4, 10)
    lo, hi = query_range("what did I do in last weekend", now) or (None, None)
    assert lo == datetime(2026, 11, 28, tzinfo=UTC)  # without an anchor: from today, as before


def test_time_filters_in_recall(store: MemoryStore) -> None:
    old = store.add(
        "We chose Postgres for billing.", namespace="p", mention_time="2023-02-01T00:00:00Z"
    )
    new = store.add(
        "We chose SQLite for billing tests.", namespace="p", mention_time="2024-06-01T00:00:00Z"
    )
    said = store.add(
        "Last year we chose Kafka for billing events.",
        namespace="p",
        mention_time="2024-06-02T00:00:00Z",
    )
    assert said.item.event_start is not None and said.item.event_start.year == 2023
    before = store.search("what did we choose for billing before March 2024", namespace="p")
    assert {h.item.id for h in before} == {old.item.id, said.item.id}
    in_2024 = store.search("billing", namespace="p", time_range=("2024-01-01", "2024-12-31"))
    assert [h.item.id for h in in_2024] == [new.item.id]
    as_of = store.search("billing", namespace="p", as_of="2023-12-31T00:00:00Z")
    assert [h.item.id for h in as_of] == [old.item.id]


def test_a_range_read_from_the_query_also_keeps_what_was_said_in_it(store: MemoryStore) -> None:
    """A question like "what did Maria share on 16 June?" names the day she told it; her turn
    says "last week", so its event time is the week before. A range read from the query's words
    keeps an item whose event time or mention time meets it; an explicit ``time_range`` filters
    on event time alone."""
    told = store.add(
        "Great news: I joined a gym last week!", namespace="t", mention_time="2023-06-16T10:00:00Z"
    )
    assert told.item.event_start == datetime(2023, 6, 5, tzinfo=UTC)
    choir = store.add("I joined a choir.", namespace="t", mention_time="2023-05-02T10:00:00Z")
    found = store.search("what did Maria say she joined on 16 June, 2023", namespace="t")
    assert [h.item.id for h in found] == [told.item.id]
    strict = store.search("joined", namespace="t", time_range=("2023-06-16", "2023-06-16T23:59:59"))
    assert strict == []
    # neither the gym's week (5 to 11 June) nor the day it was told is before June
    before = store.search("what did she join before June 2023", namespace="t")
    assert [h.item.id for h in before] == [choir.item.id]


def test_every_candidate_in_a_wide_range_gets_the_time_credit(dense_store: MemoryStore) -> None:
    """The time arm lists only the newest ``depth`` items of a range; the fusion's time
    feature is read from each candidate's own times, so a range that holds every item ranks
    exactly as no range does, every score raised by the same time weight."""
    from holdfast.memory.fusion import WEIGHTS
    from holdfast.memory.recall import RecallSettings

    for n in range(80):
        dense_store.add(
            f"Billing note {n}: invoice batch {n * 7} was {'late' if n % 3 else 'on time'}.",
            namespace="w",
            mention_time=f"2023-{1 + n % 12:02d}-{1 + n % 28:02d}T00:00:00Z",
        )
    shallow = RecallSettings(depth=30)
    plain = dense_store.search("billing invoice late", namespace="w", limit=10, settings=shallow)
    ranged = dense_store.search(
        "billing invoice late",
        namespace="w",
        limit=10,
        settings=shallow,
        time_range=("2022-01-01", "2024-12-31"),
    )
    assert [h.item.id for h in ranged] == [h.item.id for h in plain]
    for a, b in zip(plain, ranged, strict=True):
        assert b.score - a.score == pytest.approx(WEIGHTS["tm"])
