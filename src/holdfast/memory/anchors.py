"""Time anchored to events: "before the reorg", "since the migration", "after Alice joined".

A query's time filter can name an event instead of a date. The event is looked up in the same
namespace: the best keyword match among active items whose words contain every content word of
the event phrase (lightly stemmed, so "joined" meets "joins"), and its event time (its mention
time when it has none) is the anchor. "before" and "prior to" end the range at the anchor's
start, "until" at its end, "after" starts it at the anchor's end, "since" at its start; the
range filters recall like a date would, and the query's words are searched as written (the
clause often says what is asked: "how did she feel after the race"). No anchor found means no
filter.

A bare relative expression ("last week", "yesterday", "last summer") is a range too, resolved
against ``as_of`` (now by default); it ranks the items of that range higher through the time arm
but does not filter: asked later, "what did she do last year" may mean the year she spoke of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from holdfast.memory.contradict import _stem
from holdfast.memory.items import MemoryItem
from holdfast.memory.text import claim_words, keyword_terms
from holdfast.memory.timeexpr import _RELATIVE, Range, _expr_range, _relative

if TYPE_CHECKING:
    from holdfast.memory.store import MemoryStore

_ANCHOR = re.compile(
    r"\b(?P<op>before|after|since|until|till|prior to|ahead of)\s+"
    r"(?P<event>[^?!.,;]+?)(?=[?!.,;]|\s+(?:and|but|when|while|or)\s|$)",
    re.IGNORECASE,
)
_BEFORE = ("before", "until", "till", "prior to", "ahead of")


@dataclass(frozen=True)
class Anchor:
    """An event a query's time filter names, resolved to a dated item."""

    op: str
    phrase: str
    item_id: str
    citation: str
    start: datetime
    end: datetime

    @property
    def range(self) -> Range:
        if self.op in _BEFORE:
            return None, self.start if self.op != "until" and self.op != "till" else self.end
        if self.op == "since":
            return self.start, None
        return self.end, None

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.range
        return {
            "op": self.op,
            "event": self.phrase,
            "anchor": self.item_id,
            "citation": self.citation,
            "after": lo.isoformat() if lo else None,
            "before": hi.isoformat() if hi else None,
        }


def _stems(text: str) -> set[str]:
    return {_stem(w) for w in claim_words(text)}


def resolve_anchor(
    store: MemoryStore, namespace: str, query: str, now: datetime | None = None
) -> Anchor | None:
    """The first event-anchored time clause of ``query`` that names an item of the namespace."""
    for m in _ANCHOR.finditer(query):
        phrase = m.group("event").strip()
        if _expr_range(phrase, now or datetime.now().astimezone()) is not None:
            continue  # a date or a relative time: timeexpr.query_range reads it
        terms = keyword_terms(phrase)
        if not terms:
            continue
        want = {_stem(t) for t in terms}
        found = store.index.keyword(namespace, terms, 50, (1.0, 0.0, 0.5))
        rows = store.index.get_many([rid for rid, _ in found])
        for rid, _ in found:
            row = rows.get(rid)
            if row is None:
                continue
            item = MemoryItem.from_dict(row.data)
            if not item.active or "derived" in item.tags or not want <= _stems(item.text):
                continue
            if now is not None and item.mention_time > now:
                continue
            start = item.event_start or item.mention_time
            end = item.event_end or start
            return Anchor(
                m.group("op").lower(), phrase, item.id, store.index.citation(row), start, end
            )
    return None


def bare_range(query: str, now: datetime) -> Range | None:
    """The range of a relative expression the query holds on its own ("last week")."""
    m = _RELATIVE.search(query)
    return _relative(m, now) if m else None
