"""What a memory item is: its text plus the metadata that says when, about whom, from where, and
how far to trust it.

Items are frozen: every change (an edit, a superseding fact, a tombstone) produces a new value, so
the Markdown file, the index and the caller never disagree about an item they hold.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from holdfast.errors import InvalidInput

MAX_ITEM_CHARS = 200_000


class Kind(StrEnum):
    """What sort of memory an item is."""

    EPISODE = "episode"
    FACT = "fact"
    OBSERVATION = "observation"
    BELIEF = "belief"
    SUMMARY = "summary"


class Trust(StrEnum):
    """Who vouches for an item, from most to least trusted."""

    OWNER = "owner"
    AGENT = "agent"
    TOOL = "tool"
    UNTRUSTED = "untrusted"

    @property
    def rank(self) -> int:
        return [Trust.OWNER, Trust.AGENT, Trust.TOOL, Trust.UNTRUSTED].index(self)


class Status(StrEnum):
    ACTIVE = "active"
    DELETED = "deleted"


@dataclass(frozen=True)
class Source:
    """Where an item came from: a task step, a conversation turn, a file line or a URL."""

    task: str | None = None
    session: str | None = None
    turn: int | None = None
    speaker: str | None = None
    path: str | None = None
    line: int | None = None
    url: str | None = None
    tool: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Source:
        if not data:
            return cls()
        known: dict[str, Any] = {}
        for k in cls.__dataclass_fields__:
            v = data.get(k)
            if v is not None:
                known[k] = int(v) if k in ("turn", "line") else str(v)
        return cls(**known)

    def cite(self) -> str:
        """A short human citation such as ``session=s1 turn=4`` or a URL."""
        return " ".join(f"{k}={v}" for k, v in self.to_dict().items())


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence for or against a belief: another item, or a free note."""

    ref: str
    supports: bool = True

    def render(self) -> str:
        return ("+" if self.supports else "-") + self.ref


@dataclass(frozen=True)
class MemoryItem:
    """One memory: prose plus metadata. ``trust`` is held apart from the prose (see markdown)."""

    id: str
    text: str
    kind: Kind = Kind.FACT
    namespace: str = "default"
    mention_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_start: datetime | None = None
    event_end: datetime | None = None
    valid_to: datetime | None = None
    entities: tuple[str, ...] = ()
    source: Source = field(default_factory=Source)
    trust: Trust = Trust.AGENT
    confidence: float | None = None
    evidence: tuple[Evidence, ...] = ()
    supersedes: tuple[str, ...] = ()
    superseded_by: str | None = None
    status: Status = Status.ACTIVE
    tags: tuple[str, ...] = ()

    @property
    def content_hash(self) -> str:
        """A hash of everything the index derives from the item (text and metadata)."""
        h = hashlib.sha256()
        for part in (
            self.text,
            self.kind.value,
            self.namespace,
            _iso(self.mention_time),
            _iso(self.event_start),
            _iso(self.event_end),
            _iso(self.valid_to),
            "\x1f".join(self.entities),
            repr(sorted(self.source.to_dict().items())),
            self.trust.value,
            repr(self.confidence),
            "\x1f".join(e.render() for e in self.evidence),
            "\x1f".join(self.supersedes),
            self.superseded_by or "",
            self.status.value,
            "\x1f".join(self.tags),
        ):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()[:32]

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE and self.valid_to is None

    def evolve(self, **changes: Any) -> MemoryItem:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "kind": self.kind.value,
            "namespace": self.namespace,
            "mention_time": _iso(self.mention_time),
            "event_start": _iso(self.event_start) or None,
            "event_end": _iso(self.event_end) or None,
            "valid_to": _iso(self.valid_to) or None,
            "entities": list(self.entities),
            "source": self.source.to_dict(),
            "trust": self.trust.value,
            "confidence": self.confidence,
            "evidence": [e.render() for e in self.evidence],
            "supersedes": list(self.supersedes),
            "superseded_by": self.superseded_by,
            "status": self.status.value,
            "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryItem:
        """Rebuild an item from :meth:`to_dict` output; raises InvalidInput on bad fields."""
        try:
            return cls(
                id=str(data["id"]),
                text=str(data["text"]),
                kind=Kind(data.get("kind", "fact")),
                namespace=str(data.get("namespace", "default")),
                mention_time=parse_time(data.get("mention_time")) or datetime.now(UTC),
                event_start=parse_time(data.get("event_start")),
                event_end=parse_time(data.get("event_end")),
                valid_to=parse_time(data.get("valid_to")),
                entities=tuple(data.get("entities") or ()),
                source=Source.from_dict(data.get("source")),
                trust=Trust(data.get("trust", "agent")),
                confidence=None if data.get("confidence") is None else float(data["confidence"]),
                evidence=tuple(parse_evidence(e) for e in data.get("evidence") or ()),
                supersedes=tuple(data.get("supersedes") or ()),
                superseded_by=data.get("superseded_by"),
                status=Status(data.get("status", "active")),
                tags=tuple(data.get("tags") or ()),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput(f"not a valid memory item: {exc}") from exc


def new_id() -> str:
    """A fresh item id: time-ordered hex plus randomness, e.g. ``m-18c2f0a1b2c-9f3e1a``."""
    return f"m-{int(time.time() * 1000):x}-{secrets.token_hex(4)}"


def parse_evidence(raw: str) -> Evidence:
    raw = raw.strip()
    if raw[:1] in "+-":
        return Evidence(raw[1:].strip(), raw[0] == "+")
    return Evidence(raw, True)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 string, epoch seconds or datetime as an aware UTC datetime (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return to_utc(datetime.fromisoformat(text))
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 time: {value!r}") from exc


def check_text(text: str) -> str:
    """Reject empty or oversized item text with a clear message."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("a memory item needs non-empty text")
    if len(text) > MAX_ITEM_CHARS:
        raise InvalidInput(
            f"a memory item is limited to {MAX_ITEM_CHARS} characters (got {len(text)}); "
            "split it or store the document as a file and remember a summary"
        )
    return text.strip("\n")
