"""What a memory item is: its text plus the metadata that says when, about whom, from where, and
how far to trust it.

Items are frozen: every change (an edit, a superseding fact, a tombstone) produces a new value, so
the Markdown file, the index and the caller never disagree about an item they hold.
"""

from __future__ import annotations

import hashlib
import re
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


def least_trusted(*levels: Trust) -> Trust:
    """The least trusted of ``levels`` (a revision or a summary is only as trusted as its
    least trusted part)."""
    return max(levels, key=lambda t: t.rank)


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
                known[k] = _as_int(v, k) if k in ("turn", "line") else str(v)
        return cls(**known)

    def cite(self) -> str:
        """A short human citation such as ``session=s1 turn=4`` or a URL."""
        return " ".join(f"{k}={v}" for k, v in self.to_dict().items())


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"source {key} must be an integer, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(f"source {key} must be an integer, not {value!r}")


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
    def content_key(self) -> tuple[str, str, str]:
        """What makes two items the same memory whatever their ids: kind, normalised text and
        mention time (import skips a record whose key the namespace already holds)."""
        from holdfast.memory.text import norm_hash

        return (self.kind.value, norm_hash(self.text), _iso(self.mention_time))

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
                mention_time=parse_time(data.get("mention_time"), "mention_time")
                or datetime.now(UTC),
                event_start=parse_time(data.get("event_start"), "event_start"),
                event_end=parse_time(data.get("event_end"), "event_end"),
                valid_to=parse_time(data.get("valid_to"), "valid_to"),
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
        except InvalidInput:
            raise
        except KeyError as exc:
            raise InvalidInput(f"not a valid memory item: missing {exc}") from None
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"not a valid memory item: {exc}") from None


def new_id() -> str:
    """A fresh item id: time-ordered hex plus randomness, e.g. ``m-18c2f0a1b2c-9f3e1a``."""
    return f"m-{int(time.time() * 1000):x}-{secrets.token_hex(4)}"


ID_RE = re.compile(r"^m-[0-9A-Za-z_-]{1,80}$")


def check_id(value: Any, field: str = "id") -> str:
    """An item id (``m-`` then letters, digits, ``_`` or ``-``), or InvalidInput."""
    if not isinstance(value, str) or not ID_RE.match(value):
        raise InvalidInput(f"{field} {value!r} is not an item id (m- then letters, digits, _ or -)")
    return value


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


class BadTime(InvalidInput, ValueError):
    """A time value that is not an ISO-8601 date or time."""

    code = "invalid_time"


def parse_time(value: Any, field: str = "time") -> datetime | None:
    """An ISO-8601 string, epoch seconds or datetime as an aware UTC datetime (None stays None).

    Anything else raises :class:`BadTime` (an InvalidInput and a ValueError) with a one-line
    message naming the value.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, bool):
        raise BadTime(f"{field} {value!r} is not a time")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise BadTime(f"{field} {value!r} is not a usable epoch time: {exc}") from None
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return to_utc(datetime.fromisoformat(text))
    except ValueError:
        shown = str(value) if len(str(value)) <= 60 else str(value)[:57] + "..."
        raise BadTime(
            f"{field} {shown!r} is not an ISO-8601 time (use e.g. 2024-05-01 or "
            "2024-05-01T13:00:00Z)"
        ) from None


# Every character that some reader treats as a line break: str.splitlines() splits on all of
# them, and editors or terminals may too. Item text keeps only "\n" (see clean_text).
LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Characters no single-line field may hold: C0/C1 controls, DEL, line and paragraph separators,
# and the bidirectional controls that make text read differently from its bytes.
_FIELD_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def check_utf8(value: str, field: str) -> str:
    """Reject strings that cannot be written as UTF-8 (lone surrogates, including the ones
    Python uses to carry undecodable bytes from the command line) with a clear message."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        ch = ord(value[exc.start])
        what = (
            f"the byte 0x{ch - 0xDC00:02x}"
            if 0xDC80 <= ch <= 0xDCFF
            else f"a lone surrogate U+{ch:04X}"
        )
        raise InvalidInput(
            f"{field} is not valid UTF-8: {what} at character {exc.start + 1}; "
            "re-encode the input as UTF-8"
        ) from None
    return value


def clean_text(text: Any, field: str = "text") -> str:
    """Item text as stored: valid UTF-8, no NUL, every line break a ``\n``, surrounding blank
    lines and trailing whitespace removed; empty or oversized text is refused."""
    if not isinstance(text, str):
        raise InvalidInput(f"{field} must be a string, not {type(text).__name__}")
    check_utf8(text, field)
    if "\x00" in text:
        raise InvalidInput(f"{field} contains a NUL character")
    lines = LINE_BREAKS.sub("\n", text).split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    out = "\n".join(lines).rstrip()
    if not out:
        raise InvalidInput("a memory item needs non-empty text")
    if len(out) > MAX_ITEM_CHARS:
        raise InvalidInput(
            f"a memory item is limited to {MAX_ITEM_CHARS} characters (got {len(out)}); "
            "split it or store the document as a file and remember a summary"
        )
    return out


check_text = clean_text


def clean_field(value: Any, field: str, max_chars: int = 200) -> str:
    """A single-line metadata value (an entity, a tag, a source field): valid UTF-8, no control
    characters or line breaks of any kind, at most ``max_chars``; surrounding space removed."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, not {type(value).__name__}")
    check_utf8(value, field)
    bad = _FIELD_UNSAFE.search(value)
    if bad:
        raise InvalidInput(
            f"{field} {value[:60]!r} contains the control character U+{ord(bad.group()):04X}; "
            "metadata values are single lines of printable text"
        )
    out = " ".join(value.split())
    if not out:
        raise InvalidInput(f"{field} is empty")
    if len(out) > max_chars:
        raise InvalidInput(f"{field} is limited to {max_chars} characters (got {len(out)})")
    return out


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def clean_url(value: Any, field: str = "source url") -> str:
    """A URL: one line with a scheme and no spaces, at most 2,048 characters."""
    url = clean_field(value, field, max_chars=2048)
    if not _SCHEME.match(url):
        raise InvalidInput(f"{field} {url[:80]!r} is not a URL (scheme:... without spaces)")
    return url


def clean_source(source: Source) -> Source:
    """Validate every field of a source (see :func:`clean_field`, :func:`clean_url`)."""
    fields: dict[str, Any] = {}
    for key, value in source.to_dict().items():
        if key in ("turn", "line"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"source {key} must be a non-negative integer, not {value!r}")
            fields[key] = value
        elif key == "url":
            fields[key] = clean_url(value)
        else:
            fields[key] = clean_field(value, f"source {key}", max_chars=500)
    return Source(**fields)


MAX_NAMES = 100


def checked_item(item: MemoryItem) -> MemoryItem:
    """``item`` with every field validated as a write validates it (see :func:`clean_text`,
    :func:`clean_field`, :func:`clean_source`, :func:`check_id`); raises InvalidInput."""
    if len(item.entities) > MAX_NAMES or len(item.tags) > MAX_NAMES:
        raise InvalidInput(f"an item has at most {MAX_NAMES} entities and {MAX_NAMES} tags")
    return item.evolve(
        id=check_id(item.id),
        text=clean_text(item.text),
        entities=tuple(clean_field(e, "entity") for e in item.entities),
        tags=tuple(clean_field(t, "tag", 100) for t in item.tags),
        source=clean_source(item.source),
        evidence=tuple(
            Evidence(clean_field(e.ref, "evidence", 500), e.supports) for e in item.evidence
        ),
        supersedes=tuple(check_id(i, "supersedes") for i in item.supersedes),
        superseded_by=check_id(item.superseded_by, "superseded_by") if item.superseded_by else None,
    )
