"""The Markdown format of memory files: one section per item, readable and editable by a person.

```
## m-18c2f0a1b2c-9f3e1a · fact
- mention: 2023-05-08T13:56:00+00:00
- event: 2022-01-01T00:00:00+00:00 .. 2022-12-31T23:59:59+00:00
- entities: Alice Chen; Berlin
- source: session=s2 turn=4

Alice Chen moved to Berlin last year.
```

A section starts at a ``## <id>`` heading, its metadata is the ``- key: value`` list right below
it, and its body runs to the next heading. No stored value can start a line, a section or a
heading: every line break in the body becomes ``\n`` and body lines that would read as a heading
are escaped with a backslash; a metadata value that holds a separator, a quote, a backslash or
any control, format or line-break character is written as a quoted string with escapes
(``"a\nb"``), so it always stays on its own metadata line. Trust is
not in the file at all: it lives in the namespace's trust ledger (see :mod:`.files`), so recalled
text cannot raise its own trust. A section that does not parse is reported with its file and line
and skipped; the rest of the file is still read.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from holdfast.memory.items import (
    LINE_BREAKS,
    Evidence,
    Kind,
    MemoryItem,
    Source,
    Status,
    parse_time,
)

HEADING = re.compile(r"^## (?P<id>m-[0-9A-Za-z_-]+)(?:\s+·\s+(?P<kind>[a-z]+))?\s*$")
META = re.compile(r"^- (?P<key>[a-z][a-z-]*):\s?(?P<value>.*)$")
_ESCAPED = re.compile(r"^(\\*)##")
KNOWN_KEYS = {
    "mention",
    "event",
    "valid-to",
    "entities",
    "source",
    "confidence",
    "evidence",
    "supersedes",
    "superseded-by",
    "status",
    "tags",
}


@dataclass(frozen=True)
class ParseIssue:
    """A problem found while reading a memory file, with where it is."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class Section:
    """An item as found in a file, with the 1-based lines its section spans."""

    item: MemoryItem
    start: int
    end: int
    body_line: int


def escape_body(text: str) -> str:
    return "\n".join(("\\" + line if _ESCAPED.match(line) else line) for line in text.split("\n"))


def unescape_body(text: str) -> str:
    out = []
    for line in text.split("\n"):
        m = _ESCAPED.match(line)
        out.append(line[1:] if m and m.group(1) else line)
    return "\n".join(out)


def render_item(item: MemoryItem) -> str:
    """The Markdown section for ``item`` (ending with one blank line).

    Whatever the item holds, the result is exactly one section: metadata values are quoted and
    escaped where needed (:func:`quote`) and body lines are escaped (:func:`escape_body`).
    """
    lines = [f"## {item.id} · {item.kind.value}", f"- mention: {item.mention_time.isoformat()}"]
    if item.event_start or item.event_end:
        start = item.event_start.isoformat() if item.event_start else ""
        end = item.event_end.isoformat() if item.event_end else ""
        lines.append(f"- event: {start} .. {end}")
    if item.valid_to:
        lines.append(f"- valid-to: {item.valid_to.isoformat()}")
    if item.entities:
        lines.append("- entities: " + "; ".join(quote(e, ";") for e in item.entities))
    src = item.source.to_dict()
    if src:
        lines.append("- source: " + " ".join(f"{k}={quote(str(v), ' ')}" for k, v in src.items()))
    if item.confidence is not None:
        lines.append(f"- confidence: {item.confidence:.3f}")
    if item.evidence:
        lines.append(
            "- evidence: "
            + ", ".join(("+" if e.supports else "-") + quote(e.ref, ",") for e in item.evidence)
        )
    if item.supersedes:
        lines.append("- supersedes: " + ", ".join(quote(i, ",") for i in item.supersedes))
    if item.superseded_by:
        lines.append(f"- superseded-by: {quote(item.superseded_by, ',')}")
    if item.status is not Status.ACTIVE:
        lines.append(f"- status: {item.status.value}")
    if item.tags:
        lines.append("- tags: " + ", ".join(quote(t, ",") for t in item.tags))
    lines.append("")
    lines.append(escape_body(LINE_BREAKS.sub("\n", item.text)))
    lines.append("")
    return "\n".join(lines) + "\n"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
# Categories written as \uXXXX inside quotes: controls, format characters (bidirectional
# overrides, zero-width joiners), line and paragraph separators, surrogates, private use and
# unassigned code points, and every space other than U+0020.
_ESCAPED_CATEGORIES = frozenset(["Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"])


def _unsafe(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat in _ESCAPED_CATEGORIES or (cat == "Zs" and ch != " ")


def quote(value: str, sep: str = "") -> str:
    """``value`` as a metadata token: bare when it is plain printable text without ``sep``,
    quotes, backslashes, ``=`` or surrounding spaces; otherwise a quoted string with escapes."""
    bare = (
        value
        and value == value.strip()
        and "  " not in value
        and not any(c in value for c in '"\\=,;' + sep)
        and not any(_unsafe(c) for c in value)
    )
    if bare:
        return value
    out = ['"']
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif _unsafe(ch):
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _read_quoted(value: str, pos: int) -> tuple[str, int]:
    """Read a quoted token starting at ``value[pos] == '"'``; returns (text, end position)."""
    out: list[str] = []
    i = pos + 1
    while i < len(value):
        ch = value[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            nxt = value[i + 1 : i + 2]
            if nxt in _UNESCAPES:
                out.append(_UNESCAPES[nxt])
                i += 2
                continue
            width = {"u": 4, "U": 8}.get(nxt)
            digits = value[i + 2 : i + 2 + width] if width else ""
            if (
                width
                and len(digits) == width
                and all(c in "0123456789abcdefABCDEF" for c in digits)
            ):
                code = int(digits, 16)
                if code > 0x10FFFF:
                    raise ValueError(f"escape \\{nxt}{digits} is not a character")
                out.append(chr(code))
                i += 2 + width
                continue
            raise ValueError(f"unknown escape {value[i : i + 2]!r}")
        out.append(ch)
        i += 1
    raise ValueError("a quoted value is not closed")


def split_tokens(value: str, sep: str) -> tuple[str, ...]:
    """Split a metadata list on ``sep``; elements may be bare or quoted (see :func:`quote`)."""
    out: list[str] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and value[pos] == " ":
            pos += 1
        if pos >= n:
            break
        if value[pos] == '"':
            token, pos = _read_quoted(value, pos)
            while pos < n and value[pos] == " ":
                pos += 1
            if pos < n and value[pos] != sep:
                raise ValueError(f"expected {sep!r} after a quoted value at column {pos + 1}")
        else:
            end = value.find(sep, pos)
            end = n if end < 0 else end
            token = value[pos:end].strip()
            if '"' in token:
                raise ValueError(f"unexpected quote in {token!r}")
            pos = end
            if not token:
                pos += 1
                continue
        out.append(token)
        pos += 1
    return tuple(out)


_KEY = re.compile(r"[a-z]+=")


def _parse_source(value: str) -> Source:
    data: dict[str, str] = {}
    pos = 0
    value = value.strip()
    while pos < len(value):
        m = _KEY.match(value, pos)
        if not m:
            raise ValueError(f"cannot read source {value!r}: expected key=value pairs")
        key = m.group()[:-1]
        pos = m.end()
        if value[pos : pos + 1] == '"':
            data[key], pos = _read_quoted(value, pos)
        else:
            end = value.find(" ", pos)
            end = len(value) if end < 0 else end
            raw = value[pos:end]
            if not raw or '"' in raw:
                raise ValueError(f"cannot read source {key}={raw!r}")
            data[key] = raw
            pos = end
        if pos < len(value) and value[pos] != " ":
            raise ValueError(f"expected a space after source {key}")
        while pos < len(value) and value[pos] == " ":
            pos += 1
    unknown = set(data) - set(Source.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown source field(s): {', '.join(sorted(unknown))}")
    return Source.from_dict(data)


def _parse_range(value: str) -> tuple[datetime | None, datetime | None]:
    if ".." in value:
        a, b = value.split("..", 1)
        return parse_time(a.strip()), parse_time(b.strip())
    t = parse_time(value.strip())
    return t, t


def parse_file(text: str, path: str, namespace: str) -> tuple[list[Section], list[ParseIssue]]:
    """Read every item section from a memory file's text; bad sections become issues.

    Lines are split on ``\n`` only (``\r\n`` counts as one), the one line break Holdfast
    writes, so line numbers match what an editor shows for the files it writes.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    sections: list[Section] = []
    issues: list[ParseIssue] = []
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        try:
            sections.append(_parse_section(lines, start, end, path, namespace))
        except _SectionError as exc:
            issues.append(ParseIssue(path, exc.line + 1, exc.message))
    return sections, issues


class _SectionError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _parse_section(lines: list[str], start: int, end: int, path: str, ns: str) -> Section:
    head = HEADING.match(lines[start])
    if not head:
        raise _SectionError(
            start, f"not an item heading (expected '## m-<id> · <kind>'): {lines[start][:80]!r}"
        )
    try:
        kind = Kind(head.group("kind") or "fact")
    except ValueError:
        raise _SectionError(
            start,
            f"unknown kind {head.group('kind')!r}; use one of {', '.join(k.value for k in Kind)}",
        ) from None
    fields: dict[str, object] = {"kind": kind}
    i = start + 1
    while i < end and lines[i].strip():
        m = META.match(lines[i])
        if not m:
            break
        key, value = m.group("key"), m.group("value").strip()
        if key not in KNOWN_KEYS:
            raise _SectionError(i, f"unknown metadata key {key!r}")
        try:
            _apply(fields, key, value)
        except ValueError as exc:
            raise _SectionError(i, f"bad {key}: {exc}") from None
        i += 1
    while i < end and not lines[i].strip():
        i += 1
    body_line = i
    body = "\n".join(lines[i:end]).strip("\n")
    if not body.strip():
        raise _SectionError(start, f"item {head.group('id')} has no text")
    if "mention_time" not in fields:
        raise _SectionError(start, f"item {head.group('id')} has no '- mention:' time")
    item = MemoryItem(id=head.group("id"), text=unescape_body(body), namespace=ns, **fields)  # type: ignore[arg-type]
    last = end
    while last > start + 1 and not lines[last - 1].strip():
        last -= 1
    return Section(item=item, start=start + 1, end=last, body_line=body_line + 1)


def _parse_evidence_list(value: str) -> tuple[Evidence, ...]:
    out: list[Evidence] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and value[pos] in " ,":
            pos += 1
        if pos >= n:
            break
        supports = True
        if value[pos] in "+-":
            supports = value[pos] == "+"
            pos += 1
        if value[pos : pos + 1] == '"':
            ref, pos = _read_quoted(value, pos)
        else:
            end = value.find(",", pos)
            end = n if end < 0 else end
            ref = value[pos:end].strip()
            pos = end
        if ref:
            out.append(Evidence(ref, supports))
    return tuple(out)


def _apply(fields: dict[str, object], key: str, value: str) -> None:
    if key == "mention":
        fields["mention_time"] = parse_time(value)
    elif key == "event":
        fields["event_start"], fields["event_end"] = _parse_range(value)
    elif key == "valid-to":
        fields["valid_to"] = parse_time(value)
    elif key == "entities":
        fields["entities"] = split_tokens(value, ";")
    elif key == "source":
        fields["source"] = _parse_source(value)
    elif key == "confidence":
        c = float(value)
        if not 0.0 <= c <= 1.0:
            raise ValueError("confidence must be between 0 and 1")
        fields["confidence"] = c
    elif key == "evidence":
        fields["evidence"] = _parse_evidence_list(value)
    elif key == "supersedes":
        fields["supersedes"] = split_tokens(value, ",")
    elif key == "superseded-by":
        fields["superseded_by"] = (split_tokens(value, ",") or (None,))[0]
    elif key == "status":
        fields["status"] = Status(value)
    elif key == "tags":
        fields["tags"] = split_tokens(value, ",")
