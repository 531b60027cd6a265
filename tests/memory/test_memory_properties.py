"""Property-based checks of the parsers: time expressions, redaction, and the Markdown reader on
arbitrary text."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.memory import parse_file, redact, resolve_event_time
from holdfast.memory.text import chunk_text

mentions = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2080, 12, 31), timezones=st.just(UTC)
)


@given(mentions, st.integers(1, 30))
def test_years_ago_is_a_whole_calendar_year(mention: datetime, n: int) -> None:
    r = resolve_event_time(f"we met {n} years ago", mention)
    assert r is not None and r[0] is not None and r[1] is not None
    assert r[0] == datetime(mention.year - n, 1, 1, tzinfo=UTC)
    assert r[1].year == mention.year - n and (r[1].month, r[1].day) == (12, 31)


@given(mentions)
def test_last_month_and_yesterday(mention: datetime) -> None:
    month = resolve_event_time("it happened last month", mention)
    assert month is not None and month[0] is not None and month[1] is not None
    prev = mention.replace(day=1) - timedelta(days=1)
    assert (month[0].year, month[0].month, month[0].day) == (prev.year, prev.month, 1)
    assert month[1].date() == prev.date()
    day = resolve_event_time("yesterday was long", mention)
    assert day is not None and day[0] is not None
    assert day[0].date() == (mention - timedelta(days=1)).date()


@given(
    st.text(alphabet=string.ascii_letters + string.digits, min_size=40, max_size=60),
    st.text(max_size=40),
)
def test_openai_style_keys_never_survive(body: str, around: str) -> None:
    secret = "sk-" + body
    cleaned, kinds = redact(f"{around} {secret} {around}")
    assert secret not in cleaned and "openai_key" in kinds


LINES = [
    "## m-a · fact",
    "## x",
    "- mention: 2024-01-01",
    "- tags: a",
    "- zz: 1",
    "body",
    "",
    "\\## m-b",
]


@settings(max_examples=200)
@given(st.lists(st.sampled_from(LINES) | st.text(max_size=20), max_size=30).map("\n".join))
def test_reader_never_raises_and_reports_lines_inside_the_file(text: str) -> None:
    sections, issues = parse_file(text, "f.md", "ns")
    n_lines = text.count("\n") + 1
    assert all(1 <= i.line <= n_lines for i in issues)
    assert all(1 <= s.start <= s.end <= n_lines for s in sections)


@given(
    st.lists(
        st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8), min_size=1, max_size=700
    )
)
def test_chunks_cover_every_word(words: list[str]) -> None:
    text = " ".join(words)
    chunks = chunk_text(text, max_words=50, overlap=10)
    assert all(len(c.split()) <= 50 for c in chunks)
    covered = set()
    for c in chunks:
        covered |= set(c.split())
    assert covered == set(words)
    assert chunks[0].split()[0] == words[0] and chunks[-1].split()[-1] == words[-1]
