"""Time expressions: resolved at write time against the item's mention time, and read from queries.

"last year" said on 8 May 2023 is the range 2022-01-01 .. 2022-12-31; "yesterday" is a day;
"in March 2024" a month. Relative expressions are found with a few patterns (so a write costs
microseconds, not a full-text date search) and absolute dates are parsed with ``dateparser``
relative to the mention time. Queries such as "before March 2024", "after 2022", "in May 2023" or
"between 2021 and 2022" become a time range filter.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from typing import Any

Range = tuple[datetime | None, datetime | None]

_NUM = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "couple of": 2, "few": 3,
}  # fmt: skip
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_RELATIVE = re.compile(
    r"\b(?P<rel>yesterday|today|tonight|tomorrow|last night|"
    r"(?P<dir>last|next|this) (?P<unit>year|month|week|weekend|summer|winter|spring|fall|autumn)|"
    r"(?P<n>\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|a couple of|a few) "
    r"(?P<unit2>day|week|month|year)s? ago)\b",
    re.IGNORECASE,
)
_ABSOLUTE = re.compile(
    rf"\b(?P<abs>(?:\d{{1,2}}(?:st|nd|rd|th)? (?:of )?(?:{_MONTHS}),? \d{{4}})|"
    rf"(?:(?:{_MONTHS}) \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}})|"
    rf"(?:(?:{_MONTHS}),? \d{{4}})|"
    r"(?:\d{4}-\d{2}-\d{2})|"
    r"(?:(?<![\d.])(?:19|20)\d{2}(?![\d.])))\b",
    re.IGNORECASE,
)
_SEASON = {
    "spring": (3, 5),
    "summer": (6, 8),
    "fall": (9, 11),
    "autumn": (9, 11),
    "winter": (12, 14),
}


def _day(d: datetime) -> Range:
    start = d.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1) - timedelta(microseconds=1)


def _month(year: int, month: int) -> Range:
    while month > 12:
        year, month = year + 1, month - 12
    while month < 1:
        year, month = year - 1, month + 12
    last = calendar.monthrange(year, month)[1]
    return datetime(year, month, 1, tzinfo=UTC), datetime(year, month, last, 23, 59, 59, tzinfo=UTC)


def _year(year: int) -> Range:
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC)


def _relative(m: re.Match[str], base: datetime) -> Range:
    rel = m.group("rel").lower()
    if rel in ("today", "tonight"):
        return _day(base)
    if rel in ("yesterday", "last night"):
        return _day(base - timedelta(days=1))
    if rel == "tomorrow":
        return _day(base + timedelta(days=1))
    if m.group("dir"):
        step = {"last": -1, "next": 1, "this": 0}[m.group("dir").lower()]
        unit = m.group("unit").lower()
        if unit == "year":
            return _year(base.year + step)
        if unit == "month":
            return _month(base.year, base.month + step)
        if unit in _SEASON:
            first, last = _SEASON[unit]
            year = base.year + step if step else base.year
            if step == -1 and base.month > last:
                year = base.year
            a, _ = _month(year, first)
            _, b = _month(year, last)
            return a, b
        monday = base - timedelta(days=base.weekday()) + timedelta(weeks=step)
        if unit == "weekend":
            sat = monday + timedelta(days=5)
            return _day(sat)[0], _day(sat + timedelta(days=1))[1]
        return _day(monday)[0], _day(monday + timedelta(days=6))[1]
    raw_n = m.group("n").lower().replace("a couple of", "couple of").replace("a few", "few")
    n = int(raw_n) if raw_n.isdigit() else _NUM.get(raw_n, 1)
    unit = m.group("unit2").lower()
    if unit == "day":
        return _day(base - timedelta(days=n))
    if unit == "week":
        d = base - timedelta(weeks=n)
        monday = d - timedelta(days=d.weekday())
        return _day(monday)[0], _day(monday + timedelta(days=6))[1]
    if unit == "month":
        return _month(base.year, base.month - n)
    return _year(base.year - n)


def _absolute(text: str, base: datetime) -> Range | None:
    t = text.strip()
    if re.fullmatch(r"(?:19|20)\d{2}", t):
        return _year(int(t))
    parsed = _dateparser_parse(t, base)
    if parsed is None:
        return None
    if re.fullmatch(rf"(?:{_MONTHS}),? \d{{4}}", t, re.IGNORECASE):
        return _month(parsed.year, parsed.month)
    return _day(parsed)


def _dateparser_parse(text: str, base: datetime) -> datetime | None:
    import dateparser

    settings: Any = {
        "RELATIVE_BASE": base.replace(tzinfo=None),
        "PREFER_DAY_OF_MONTH": "first",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    parsed = dateparser.parse(text, languages=["en"], settings=settings)
    return parsed.replace(tzinfo=UTC) if parsed else None


def resolve_event_time(text: str, mention: datetime) -> Range | None:
    """The event time range the text refers to, resolved against ``mention`` (None if none)."""
    rel = _RELATIVE.search(text)
    if rel:
        return _relative(rel, mention)
    ab = _ABSOLUTE.search(text)
    if ab:
        return _absolute(ab.group("abs"), mention)
    return None


_QUERY_RANGE = re.compile(
    r"\b(?P<op>before|after|since|until|in|during|between|on|from)\s+(?P<rest>.+)$", re.IGNORECASE
)


def query_range(query: str, now: datetime | None = None) -> Range | None:
    """A time filter read from a query ("before March 2024", "in 2023", "between 2021 and 2022")."""
    now = now or datetime.now(UTC)
    for m in _QUERY_RANGE.finditer(query):
        op = m.group("op").lower()
        rest = m.group("rest")
        if op in ("between", "from"):
            parts = re.split(r"\s+(?:and|to|until)\s+", rest, maxsplit=1)
            if len(parts) == 2:
                a, b = _expr_range(parts[0], now), _expr_range(parts[1], now)
                if a and b:
                    return a[0], b[1]
            continue
        r = _expr_range(rest, now)
        if r is None:
            continue
        if op == "before" or op == "until":
            return None, r[0] if op == "before" else r[1]
        if op == "after":
            return r[1], None
        if op == "since":
            return r[0], None
        return r
    return None


def _expr_range(text: str, now: datetime) -> Range | None:
    t = text.strip()
    rel = _RELATIVE.match(t)
    if rel:
        # "last weekend before April 10, 2023", "last week, as mentioned on 6 November, 2023":
        # a relative expression anchored to a date in the same phrase counts from that date
        # (not from today), and runs up to the end of it, when the words were said.
        anchor = _ABSOLUTE.search(t, rel.end())
        day = _absolute(anchor.group("abs"), now) if anchor else None
        if day is not None and day[0] is not None and day[1] is not None:
            start, end = _relative(rel, day[0])
            if start is not None and end is not None:
                return min(start, day[0]), max(end, day[1])
        return _relative(rel, now)
    ab = _ABSOLUTE.match(text.strip())
    if ab:
        return _absolute(ab.group("abs"), now)
    return None
